"""Acquisition of one radiograph: geometry on the detector, exposure, detector, processing.

Geometry. The knee frame (mm, right knee) maps to image pixels (x = column, y = row,
centre of the top-left pixel at (0, 0)) by p_px = A @ p_mm + centre with
A = R(rotation) @ diag(m, 1) / spacing_mm, m = -1 for a left knee: a left knee is the
mirror image of the posed right knee (its lateral side is at +x), and the schema's
names never swap. ``spacing_mm`` is the pixel spacing at the knee's plane (DICOM
PixelSpacing); the detector's pitch (ImagerPixelSpacing) is magnification times larger.

Field. The detector pitch is drawn from 0.1-0.2 mm where the image is large enough for
the landmarks (they span about three epicondylar plus three plateau widths, ~270 mm, so
a 2000-row image needs >= ~0.15 mm); smaller images get the smallest pitch that fits
them. Rotation, the knee's position, collimation, the lead side marker, the 25 mm
calibration ball and burned-in text are placed so that no landmark is hidden.

Shape legend: points (N, 2) as (x, y) px; boxes (x0, y0, x1, y1) px.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .annotate import glyphs

__all__ = ["ImagingParams", "sample_imaging", "knee_to_image", "field_coordinates", "BALL_DIAMETER_MM",
           "LONG_LEG_ASPECT"]

BALL_DIAMETER_MM = 25.0
# Images this much taller than wide are knees cut from a standing long-leg film (about
# 300 x 144 mm, no collimation, the other leg at an edge, a ruler, seams, 8-bit JPEG).
LONG_LEG_ASPECT = 1.6
DETECTOR_PITCH_MM = (0.1, 0.2)
MARGIN_FRACTION = 0.04  # landmarks stay this far (fraction of the image size) from the edges


@dataclass(frozen=True)
class ImagingParams:
    """Everything about the acquisition of one image (see the module docstring)."""

    size: tuple[int, int]           # (H, W) px
    side: str                       # 'R' or 'L'
    spacing_mm: float               # pixel spacing at the knee (PixelSpacing)
    magnification: float            # detector pitch / spacing_mm
    imager_spacing_mm: float        # detector pitch (ImagerPixelSpacing)
    sid_mm: float                   # source to detector distance
    rotation_deg: float             # in-plane rotation of the knee frame
    centre_px: tuple[float, float]  # image position of the knee frame's origin
    kvp: float
    dose_per_mm2: float             # detected quanta per mm^2 of unattenuated beam
    electronic_noise: float         # additive noise, quanta per pixel (std)
    heel: float                     # relative exposure change from top to bottom edge
    beam_centre: tuple[float, float]  # central ray on the detector (fractions of W, H)
    scatter_fraction: float         # scatter-to-primary ratio behind the knee
    beam_hardening: float
    equalisation: float             # large-scale dynamic range compression (0..1)
    equalisation_sigma_mm: float
    detail_gain: float              # unsharp-mask gain of the DR processing
    detail_sigma_mm: float
    gamma: float
    s_curve: float
    soft_level: float               # display level of the median soft tissue (0..1)
    bone_level: float               # display level of the bone's high percentile
    bone_pct: float                 # which percentile of the bone histogram
    photometric: str                # 'MONOCHROME1' or 'MONOCHROME2'
    bits_stored: int
    collimation: tuple | None       # (x0, y0, x1, y1, angle_deg) in px, or None
    shutter_black: bool             # processed image masks the collimated border to black
    marker: dict | None             # {'letter', 'centre' (x, y) px, 'height_px', 'angle_deg'}
    ball: dict | None               # {'centre' (x, y) px, 'diameter_px'}
    texts: tuple = field(default_factory=tuple)  # ({'text', 'origin' (x, y), 'height_px'}, ...)
    # a knee cut from a standing long-leg film (see ``LONG_LEG_ASPECT``)
    long_leg: bool = False
    other_leg_gap_mm: float | None = None  # skin-to-skin gap to the other leg (< 0: touching)
    ruler: dict | None = None       # {'x' px of the tick base, 'direction' +-1 (ticks point to +x / -x), 'offset_mm'}
    seam: dict | None = None        # {'row' px, 'gain', 'line' (display fraction added along the seam)}
    jpeg_quality: int | None = None  # 8-bit export compressed at this JPEG quality (None: not compressed)
    export: dict | None = None      # {'smooth_px' (denoising sigma), 'black', 'white' (8-bit levels of 0 and 1)}

    @property
    def matrix(self) -> np.ndarray:
        """(2, 2) A of p_px = A @ p_mm + centre."""
        return knee_to_image(self.side, self.rotation_deg, self.spacing_mm)


def knee_to_image(side: str, rotation_deg: float, spacing_mm: float) -> np.ndarray:
    t = np.radians(rotation_deg)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    mirror = np.diag([-1.0 if side == "L" else 1.0, 1.0])
    return rot @ mirror / spacing_mm


def _overlaps(box, other) -> bool:
    return not (box[2] < other[0] or other[2] < box[0] or box[3] < other[1] or other[3] < box[1])


def sample_imaging(rng: np.random.Generator, landmarks_mm: np.ndarray, tibial_axis: np.ndarray,
                   size: tuple[int, int], side: str, case_label: str) -> ImagingParams:
    """Draw an acquisition for a knee whose landmarks (K, 2) mm are given in the knee frame.

    ``tibial_axis``: (2,) the tibia's distal direction in the knee frame (the image is
    turned so the leg hangs near vertical, as on a standing film).
    """
    h, w = size
    mirror = np.diag([-1.0 if side == "L" else 1.0, 1.0])
    d = mirror @ tibial_axis
    tilt = np.degrees(np.arctan2(-d[0], d[1]))
    rotation = float(-rng.uniform(0.4, 1.0) * tilt + np.clip(rng.normal(0.0, 3.0), -9.0, 9.0))

    # pitch: 0.1-0.2 mm where the landmarks fit, else the smallest pitch that fits
    magnification = float(np.round(rng.uniform(1.03, 1.10), 4))
    sid = float(rng.uniform(1000.0, 1200.0))
    unit = knee_to_image(side, rotation, 1.0) @ landmarks_mm.T  # px per 1 mm spacing
    extent = np.ptp(unit, axis=1)  # (x, y) mm
    margin = MARGIN_FRACTION * np.array([w, h]) + 2.0
    room = np.array([w, h]) - 1.0 - 2.0 * margin - 1e-6
    need = float(np.max(extent / room)) * magnification
    lo, hi = max(DETECTOR_PITCH_MM[0], need), max(DETECTOR_PITCH_MM[1], need * 1.15)
    pitch = float(np.round(rng.uniform(lo, hi), 4))
    pitch = max(pitch, float(np.ceil(need * 1e4) / 1e4))
    spacing = float(np.round(pitch / magnification, 6))
    if spacing * magnification < need:  # rounding must not let the landmarks out
        spacing = float(np.ceil(need / magnification * 1e6) / 1e6)
    magnification = float(np.round(pitch / spacing, 6))

    a = knee_to_image(side, rotation, spacing)
    pts = landmarks_mm @ a.T
    cx = rng.uniform(margin[0] - pts[:, 0].min(), w - 1 - margin[0] - pts[:, 0].max())
    cy = rng.uniform(margin[1] - pts[:, 1].min(), h - 1 - margin[1] - pts[:, 1].max())
    centre = (float(cx), float(cy))
    px = pts + centre
    box = (px[:, 0].min(), px[:, 1].min(), px[:, 0].max(), px[:, 1].max())

    kvp = float(rng.uniform(55.0, 75.0))
    long_leg = h >= LONG_LEG_ASPECT * w
    collimation = None
    if rng.random() < (0.0 if long_leg else 0.55):
        pad = 4.0 / spacing  # keep 4 mm of field round the landmarks
        angle = float(np.clip(rng.normal(0.0, 1.0), -3.0, 3.0))
        edges = []
        for inner, outer in ((box[0] - pad, -0.05 * w), (box[1] - pad, -0.05 * h),
                             (box[2] + pad, 1.05 * w), (box[3] + pad, 1.05 * h)):
            t = rng.uniform(0.0, 1.0) ** 2 if rng.random() < 0.7 else 1.0  # often tight, sometimes open
            edges.append(float(inner + (outer - inner) * t))
        collimation = (*edges, angle)
        # a rotated field must still hold every landmark: shrink the angle until it does
        for _ in range(8):
            if _inside_field(px, collimation, pad * 0.5, w, h):
                break
            collimation = (*edges, collimation[4] * 0.5)
        else:
            collimation = (*edges, 0.0)

    def free(cand_box, taken):
        return all(not _overlaps(cand_box, t) for t in taken)

    reserved = [(box[0] - 3 / spacing, box[1] - 3 / spacing, box[2] + 3 / spacing, box[3] + 3 / spacing)]
    field_box = _field_box(collimation, w, h)
    marker = None
    height = float(rng.uniform(9.0, 14.0) / spacing)
    roomy = min(field_box[2] - field_box[0], field_box[3] - field_box[1]) > 3.0 * height
    if rng.random() < (0.2 if long_leg else 0.85) and roomy:
        for _ in range(12):
            cxm = rng.uniform(field_box[0] + height, field_box[2] - height)
            cym = rng.uniform(field_box[1] + height, field_box[3] - height)
            cand = (cxm - 0.8 * height, cym - 0.8 * height, cxm + 0.8 * height, cym + 0.8 * height)
            if free(cand, reserved):
                marker = {"letter": side, "centre": (float(cxm), float(cym)), "height_px": height,
                          "angle_deg": float(rng.normal(0.0, 6.0))}
                reserved.append(cand)
                break
    ball = None
    if rng.random() < 0.35:
        diameter = BALL_DIAMETER_MM / spacing
        joint = knee_to_image(side, rotation, spacing) @ np.zeros(2) + centre
        for _ in range(16):
            cxb = joint[0] + rng.choice([-1, 1]) * rng.uniform(0.7, 1.6) * (box[2] - box[0]) / 2
            cyb = joint[1] + rng.uniform(-0.6, 0.6) * (box[3] - box[1]) / 2
            r = 0.5 * diameter + 2.0
            cand = (cxb - r, cyb - r, cxb + r, cyb + r)
            inside = (field_box[0] <= cand[0] and cand[2] <= field_box[2]
                      and field_box[1] <= cand[1] and cand[3] <= field_box[3])
            near = np.min(np.hypot(px[:, 0] - cxb, px[:, 1] - cyb)) > r + 4.0 / spacing
            if inside and near and free(cand, reserved[1:]):
                ball = {"centre": (float(cxb), float(cyb)), "diameter_px": float(diameter)}
                reserved.append(cand)
                break
    texts = []
    if rng.random() < (0.2 if long_leg else 0.8):
        words = [case_label, {"R": "RIGHT", "L": "LEFT"}[side] if rng.random() < 0.5 else side,
                 str(rng.choice(["AP", "AP STANDING", "AP WB", "KNEE AP"])),
                 f"{kvp:.0f} kV  {rng.uniform(2, 12):.1f} mAs"]
        height = float(h * rng.uniform(0.012, 0.022))
        corners = rng.permutation(4)
        for text, corner in zip(words[:int(rng.integers(1, 5))], corners):
            th, tw = glyphs(text, height).shape
            x0 = 0.02 * w if corner in (0, 2) else w - 0.02 * w - tw
            y0 = 0.02 * h if corner in (0, 1) else h - 0.02 * h - th
            cand = (x0, y0, x0 + tw, y0 + th)
            if free(cand, reserved):
                texts.append({"text": text, "origin": (float(x0), float(y0)), "height_px": height})
                reserved.append(cand)

    if long_leg:
        film = _long_leg_film(rng, spacing, w, h, side)
        processing = dict(equalisation=rng.uniform(0.8, 0.98), equalisation_sigma_mm=rng.uniform(4.0, 10.0),
                          detail_gain=rng.uniform(0.4, 1.4), detail_sigma_mm=rng.uniform(1.0, 3.5))
    else:
        film = {}
        processing = dict(equalisation=rng.uniform(0.2, 0.95), equalisation_sigma_mm=rng.uniform(5.0, 22.0),
                          detail_gain=rng.uniform(0.0, 1.4), detail_sigma_mm=rng.uniform(0.8, 3.0))
    processing["dose_per_mm2"] = np.exp(rng.uniform(np.log(1e5), np.log(7e5)))  # quanta before detector blur
    processing = {k: float(v) for k, v in processing.items()}

    return ImagingParams(
        size=(int(h), int(w)), side=side, spacing_mm=spacing, magnification=magnification,
        imager_spacing_mm=pitch, sid_mm=sid, rotation_deg=rotation, centre_px=centre, kvp=kvp,
        electronic_noise=float(rng.uniform(1.0, 6.0)),
        heel=float(rng.choice([-1, 1]) * rng.uniform(0.05, 0.25)),
        beam_centre=(float(rng.uniform(0.35, 0.65)), float(rng.uniform(0.35, 0.65))),
        scatter_fraction=float(rng.uniform(0.08, 0.45)),  # with a grid (table bucky) or without
        beam_hardening=float(rng.uniform(0.02, 0.06)),
        gamma=float(rng.uniform(0.85, 1.15)),
        s_curve=float(rng.uniform(0.0, 0.35)),
        soft_level=float(rng.uniform(0.22, 0.45)),
        bone_level=float(rng.uniform(0.82, 0.98)),
        bone_pct=float(rng.uniform(97.0, 99.8)),
        photometric=str(rng.choice(["MONOCHROME2", "MONOCHROME1"], p=[0.7, 0.3])),
        bits_stored=int(rng.choice([12, 14, 16], p=[0.5, 0.3, 0.2])),
        collimation=collimation,
        shutter_black=bool(collimation is not None and rng.random() < 0.5),
        marker=marker, ball=ball, texts=tuple(texts), long_leg=long_leg, **processing, **film,
    )


def _long_leg_film(rng: np.random.Generator, spacing: float, w: int, h: int, side: str) -> dict:
    """What a knee cut from a standing long-leg film adds: the other leg beside the medial
    side (most crops), a ruler along the lateral edge, a stitching seam, 8-bit JPEG export."""
    lateral = -1.0 if side == "R" else 1.0  # lateral side's x direction (see the module docstring)
    ruler = None
    if rng.random() < 0.5:
        x = rng.uniform(2.0, 14.0) / spacing
        ruler = {"x": float(x if lateral < 0 else w - 1 - x), "direction": float(-lateral),
                 "offset_mm": float(rng.uniform(0.0, 5.0))}
    seam = None
    if rng.random() < 0.35:
        seam = {"row": float(rng.uniform(0.05, 0.95) * h), "gain": float(rng.uniform(0.92, 1.08)),
                "line": float(rng.uniform(-0.08, 0.08))}
    return {"other_leg_gap_mm": float(rng.uniform(-20.0, 45.0)) if rng.random() < 0.85 else None,
            "ruler": ruler, "seam": seam,
            "jpeg_quality": int(rng.integers(70, 96)) if rng.random() < 0.9 else None,
            # consoles denoise, and the export keeps the darkest and brightest values off 0 and 255
            "export": {"smooth_px": float(rng.uniform(0.8, 1.8)), "black": float(rng.uniform(0.0, 0.08)),
                       "white": float(rng.uniform(0.7, 0.92))}}


def _field_box(collimation, w, h) -> tuple[float, float, float, float]:
    """Axis-aligned box safely inside the exposed field (image bounds without collimation)."""
    if collimation is None:
        return (0.0, 0.0, w - 1.0, h - 1.0)
    x0, y0, x1, y1, angle = collimation
    slack = abs(np.sin(np.radians(angle))) * max(w, h)
    return (max(0.0, x0 + slack), max(0.0, y0 + slack), min(w - 1.0, x1 - slack), min(h - 1.0, y1 - slack))


def field_coordinates(collimation, x: np.ndarray, y: np.ndarray, w: int, h: int):
    """Signed distances (px) of points inside the four collimator edges (positive inside).

    The rectangle (x0, y0, x1, y1) is turned by angle about the image centre.
    """
    x0, y0, x1, y1, angle = collimation
    t = np.radians(angle)
    cx, cy = 0.5 * (w - 1), 0.5 * (h - 1)
    u = np.cos(t) * (x - cx) + np.sin(t) * (y - cy) + cx
    v = -np.sin(t) * (x - cx) + np.cos(t) * (y - cy) + cy
    return u - x0, x1 - u, v - y0, y1 - v


def _inside_field(px: np.ndarray, collimation, pad: float, w: int, h: int) -> bool:
    """Whether every point (N, 2) px lies at least ``pad`` px inside the collimated field."""
    return all(np.min(d) >= pad for d in field_coordinates(collimation, px[:, 0], px[:, 1], w, h))
