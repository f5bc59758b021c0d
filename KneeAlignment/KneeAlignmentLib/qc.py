"""Quality control of a measurement: the flags every result carries.

Each check returns ``measurement.QCFlag`` objects (a short code and a message for
people); ``ordered`` sorts them most serious first, so a result's ``reason`` is its
first flag's message. Thresholds are module constants; confidences are the heatmap
codec's, in [0, 1]. The confidence thresholds are calibrated for the shipped models on
their validation phantoms (66 pre-op, 66 post-op) and on the wrong-view images of
``phantom.wrong_view``: there, mean landmark confidence was 0.51-0.80 (pre-op) and
0.61-0.70 (post-op) against 0.04-0.18 on wrong views; the weaker reference point 0.67-1.00
against 0.00-0.35; up to 23 % (pre-op) and 13 % (post-op) of landmarks below 0.3 (post-op:
always 18-24 of 181, the outline hidden by metal). Other models may need other values.
"""

from __future__ import annotations

import numpy as np

from .geometry import Alignment, mm_per_px, outside_image
from .measurement import Landmarks, QCFlag, reference_point_names
from .schema import LandmarkSchema

LANDMARK_CONFIDENCE_MIN = 0.3  # a landmark below this counts as weak
WEAK_LANDMARK_FRACTION_MAX = 0.2  # more weak landmarks than this fraction is flagged
MEAN_CONFIDENCE_MIN = 0.5  # mean landmark confidence below this is flagged
GLOBAL_CONFIDENCE_MIN = 0.5  # a reference point below this: wrong view suspected
WRONG_VIEW_MEAN_CONFIDENCE = 0.3  # mean landmark confidence below this: wrong view suspected
BORDER_MARGIN_FRACTION = 0.02  # reference points within this fraction of min(H, W) of the border
ATFA_RANGE_DEG = (-30.0, 35.0)  # plausible aTFA (valgus positive)
FTS_FNTS_MAX_DIFF_DEG = 5.0  # the two axis definitions should agree this well
AXIS_LENGTH_RANGE_MM = (20.0, 300.0)  # plausible length of each drawn axis (spacing known)
# Orientation test: the local network also looks at the knee turned by 180 degrees (and
# mirrored, where the side was given rather than detected). When one of those views has a
# mean landmark confidence above the measured view's by more than this, the image is
# flagged as upside down or mirrored. Shipped models, 14 phantoms (pre- and post-op) in
# all 8 flips/rotations: upright images beat every alternative by 0.04-0.24, rotated
# (180 deg), mirrored (side given) and vertically flipped ones lose by 0.02-0.31; 50 upright
# phantoms of the recalibrated phantom (side given and detected): none flagged, margin >= 0.015.
ORIENTATION_CONFIDENCE_MARGIN = 0.0
UPRIGHT_MAX_TILT_DEG = 45.0  # the tibia-to-femur direction may lean this far from the image's up

# Most serious first: a result's ``reason`` is its first flag's message.
FLAG_ORDER = (
    "invalid_network_output", "frame_failed", "geometry_failed", "wrong_view_suspected", "orientation_suspected",
    "side_conflict",
    "side_uncertain", "kind_uncertain", "implausible_atfa", "fts_fnts_disagree", "joint_surfaces_cross",
    "implausible_axis_length", "reference_near_border", "landmarks_outside_image", "low_mean_confidence",
    "low_landmark_confidence",
)


def confidence_flags(landmarks: Landmarks, ref_conf: np.ndarray) -> list[QCFlag]:
    flags = []
    conf = landmarks.confidence
    low = np.flatnonzero(conf < LANDMARK_CONFIDENCE_MIN)
    if low.size > WEAK_LANDMARK_FRACTION_MAX * len(conf):
        shown = ", ".join(landmarks.names[i] for i in low[:6]) + (" ..." if low.size > 6 else "")
        flags.append(QCFlag("low_landmark_confidence", f"{low.size} of {len(conf)} landmarks (more than "
                                                       f"{WEAK_LANDMARK_FRACTION_MAX:.0%}) have confidence below "
                                                       f"{LANDMARK_CONFIDENCE_MIN}: {shown}"))
    mean = float(conf.mean())
    if mean < MEAN_CONFIDENCE_MIN:
        flags.append(QCFlag("low_mean_confidence",
                            f"mean landmark confidence {mean:.2f} is below {MEAN_CONFIDENCE_MIN}"))
    doubts = []
    if float(ref_conf.min()) < GLOBAL_CONFIDENCE_MIN:
        doubts.append(f"reference point confidence {float(ref_conf.min()):.2f} < {GLOBAL_CONFIDENCE_MIN}")
    if mean < WRONG_VIEW_MEAN_CONFIDENCE:
        doubts.append(f"mean landmark confidence {mean:.2f} < {WRONG_VIEW_MEAN_CONFIDENCE}")
    if doubts:
        flags.append(QCFlag("wrong_view_suspected", "this may not be an AP knee radiograph: " + "; ".join(doubts)))
    return flags


def orientation_flags(measured_confidence: float, alternatives: dict[str, float]) -> list[QCFlag]:
    """Flag a result when the knee seen in another orientation convinces the network more.

    The predicted landmarks cannot tell an upside-down or mirrored knee from an upright
    one (the network fits an upright right knee to whatever the crop shows, femur on top),
    so this compares what the network makes of the image itself in other orientations.

    Args:
        measured_confidence: mean landmark confidence of the orientation measured.
        alternatives: mean landmark confidence of the same knee in other orientations,
            by a description of each ("turned by 180 degrees", "mirrored", ...).
    """
    if not alternatives:
        return []
    what, best = max(alternatives.items(), key=lambda item: item[1])
    if best - measured_confidence <= ORIENTATION_CONFIDENCE_MARGIN:
        return []
    return [QCFlag("orientation_suspected",
                   f"the image may be upside down or mirrored: the knee {what} gives a higher mean landmark "
                   f"confidence ({best:.2f}) than as measured ({measured_confidence:.2f}); display AP knee "
                   f"radiographs femur up, patient's right on the viewer's left, and check the laterality")]


def border_flags(shape: tuple[int, int], ref_px: np.ndarray, landmarks: Landmarks) -> list[QCFlag]:
    flags = []
    h, w = shape
    margin = BORDER_MARGIN_FRACTION * min(h, w)
    names = reference_point_names()
    near = [names[i] for i, (x, y) in enumerate(ref_px)
            if not (-0.5 + margin <= x <= w - 0.5 - margin and -0.5 + margin <= y <= h - 0.5 - margin)]
    if near:
        flags.append(QCFlag("reference_near_border", f"reference point(s) {', '.join(near)} near or beyond the "
                                                     f"image border"))
    outside = np.flatnonzero(outside_image(landmarks.points_px, shape))
    if outside.size:
        flags.append(QCFlag("landmarks_outside_image", f"{outside.size} landmarks lie outside the image"))
    return flags


def anatomy_flags(a: Alignment, landmarks: Landmarks, schema: LandmarkSchema,
                   spacing_mm: tuple[float, float] | None) -> list[QCFlag]:
    flags = []
    lo, hi = ATFA_RANGE_DEG
    outside = [f"{m} {v:.1f}°" for m, v in (("FTS", a.atfa_fts_deg), ("FNTS", a.atfa_fnts_deg)) if not lo <= v <= hi]
    if outside:
        flags.append(QCFlag("implausible_atfa", f"aTFA {', '.join(outside)} outside the plausible [{lo:g}, {hi:g}]°"))
    if abs(a.atfa_fts_deg - a.atfa_fnts_deg) > FTS_FNTS_MAX_DIFF_DEG:
        flags.append(QCFlag("fts_fnts_disagree", f"aTFA by FTS ({a.atfa_fts_deg:.1f}°) and FNTS "
                                                 f"({a.atfa_fnts_deg:.1f}°) differ by more than "
                                                 f"{FTS_FNTS_MAX_DIFF_DEG:g}°"))
    scale = np.ones(2) if spacing_mm is None else mm_per_px(spacing_mm)  # px -> mm
    flags += upright_flags(landmarks.points_px * scale, schema)
    if _joint_surfaces_cross(a, landmarks.points_px * scale, schema, scale):
        flags.append(QCFlag("joint_surfaces_cross", "the femoral and tibial joint surfaces cross"))
    if spacing_mm is not None:
        lo, hi = AXIS_LENGTH_RANGE_MM
        bad = []
        for name in ("femoral_axis_fts", "tibial_axis_fts", "femoral_axis_fnts", "tibial_axis_fnts"):
            ends = getattr(a, f"{name}_px") * scale
            length = float(np.hypot(*(ends[1] - ends[0])))
            if not lo <= length <= hi:
                bad.append(f"{name.replace('_', ' ')} {length:.0f} mm")
        if bad:
            flags.append(QCFlag("implausible_axis_length", f"{', '.join(bad)} outside the plausible "
                                                           f"[{lo:g}, {hi:g}] mm"))
    return flags


def upright_flags(points: np.ndarray, schema: LandmarkSchema) -> list[QCFlag]:
    """Flag landmarks whose femur is not above the tibia in the image.

    AP knee radiographs are displayed femur up; a knee measured on its side or upside down
    (however well) means the image is not displayed as the reader assumes.

    Args:
        points: (K, 2) landmarks of ``schema`` as (x, y), px or mm (isotropic units).
    """
    femur = schema.derive(points, "femoral_shaft_centres").mean(axis=0)
    tibia = schema.derive(points, "tibial_shaft_centres").mean(axis=0)
    up = femur - tibia
    if not np.isfinite(up).all() or not np.any(up):
        return []
    tilt = float(np.degrees(np.arctan2(abs(up[0]), -up[1])))  # 0: femur straight above the tibia
    if tilt <= UPRIGHT_MAX_TILT_DEG:
        return []
    return [QCFlag("orientation_suspected", f"the femur is not above the tibia in the image (the tibia-to-femur "
                                            f"direction is {tilt:.0f}° from the image's up, more than "
                                            f"{UPRIGHT_MAX_TILT_DEG:g}°): display the radiograph femur up")]


# The femoral and tibial joint lines of each schema, proximal first.
_JOINT_LINES = {"preop": ("femoral_condylar_line", "tibial_plateau_line"),
                "postop": ("femoral_component_line", "tibial_component_line")}


def _joint_surfaces_cross(a: Alignment, points_mm: np.ndarray, schema: LandmarkSchema, scale: np.ndarray) -> bool:
    """The femoral joint line (condyles / component) is not proximal to the tibial one
    (plateau / tray) along the tibial axis, or (pre-op) a condyle outline crosses its plateau."""
    if schema.kind == "preop" and (a.jsw_lateral_px == 0.0 or a.jsw_medial_px == 0.0):
        return True
    tibia = a.tibial_axis_fts_px * scale
    femoral, tibial = (schema.derive(points_mm, name).mean(axis=0) for name in _JOINT_LINES[schema.kind])
    return float((tibial - femoral) @ (tibia[1] - tibia[0])) <= 0.0


def ordered(flags: list[QCFlag]) -> tuple[QCFlag, ...]:
    return tuple(sorted(flags, key=lambda f: FLAG_ORDER.index(f.code)))
