"""Image evidence for the FTS axes: shaft midlines from the cortical edges. Pure numpy.

The FTS axis of a bone is, by definition, the midline of its shaft's outer cortices.
The landmark-based axis (``geometry``) trusts the network's cortex points; this module
measures the same line in the image and returns it with a quality measure, so the
pipeline can report the image-refined axis and keep the landmark axis as a cross-check.

Method, per bone (femur and tibia):

1. The landmark axis: a total-least-squares line through the landmark shaft centres
   (the schema's ``femoral_shaft_centres`` / ``tibial_shaft_centres`` pairs), with unit
   distal direction ``d`` and normal ``n``; the joint line is where the knee-centre
   reference point projects onto it.
2. Scale (mm per px): from the pixel spacing when known; otherwise estimated from the
   predicted anatomy, the median width between the paired femoral cortex points taken as
   ``FEMUR_WIDTH_MM`` (30 mm: real femoral shafts 60-140 mm above the joint line are
   29.9 +/- 2.7 mm wide; the tibia is left out because its width varies more).
3. Levels every ``LEVEL_STEP_MM`` in the band ``BAND_MM`` (60-140 mm from the joint line,
   the truth definition of a shaft-method aTFA), clipped to the image and to the span of
   the predicted shaft landmarks extended by ``BAND_EXTENSION_MM``.
4. At each level, for the lateral and the medial cortex: an intensity profile along
   ``n`` (bilinear, 0.5 px steps, averaged over a strip of +/- ``STRIP_HALF_MM`` along the
   axis, lightly smoothed), searched only in a window around the predicted cortex
   position (``WINDOW_OUT`` of the predicted width outwards, ``WINDOW_IN`` inwards, so
   the fibula or the other leg cannot capture it). The outer cortical edge is the
   outermost soft tissue -> cortex rise going inwards: a local maximum of the gradient
   that is at least ``DOMINANCE`` of the largest within ``DOMINANCE_MM`` of it and whose
   step (mean over 1-3 mm inside minus 1-3 mm outside) reaches ``MIN_STEP`` of the
   image's p1-p99 range, so a stronger rise further in (a metal stem or cement in the
   canal) cannot take its place, and not counting a rise into metal (saturated areas at
   least ``METAL_WIDTH_MM`` wide, within ``METAL_CLEARANCE_MM``: a stem beside or through
   the cortex); located to sub-pixel by a parabola through the gradient peak. A level with both edges found and a width within
   ``WIDTH_TOLERANCE`` of the predicted width gives a midpoint.
5. A robust line through the midpoints (offset along ``n`` against position along
   ``d``): iteratively reweighted least squares with Tukey's biweight, scale from the
   median absolute deviation (at least ``MIN_SCALE_MM``); midpoints further than
   ``OUTLIER_SIGMAS`` robust sigmas are outliers.
6. Quality: the evidence is "good" when at least ``MIN_INLIERS`` midpoints and
   ``MIN_INLIER_FRACTION`` of the levels are inliers, they span at least ``MIN_SPAN_MM``
   along the shaft and their RMS residual is at most ``MAX_RMS_MM``; otherwise "weak",
   and the caller keeps the landmark axis (the reason is returned). The search is
   repeated (at most ``TRACKING_PASSES`` times, until the windows move less than 0.5 px)
   with its windows around robust lines through each side's edges found so far, so a
   tilted or shifted prediction of the shaft points is corrected when part of each
   cortex was found.

The refined axis is returned as its inlier midpoints (``centres_px``): the FTS line
through them (``geometry.compute_alignment(..., fts_centres_px=...)``) is the robust fit.

Conventions: images (H, W) float, bright = dense; points (x, y) image pixels, centre of
the top-left pixel at (0, 0). Shape legend: K landmarks, M levels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .schema import LandmarkSchema

__all__ = ["BONES", "ShaftEvidence", "ShaftFit", "estimate_scale_mm_per_px", "refine_shaft_axes"]

BONES = ("femur", "tibia")
_CENTRES = {"femur": "femoral_shaft_centres", "tibia": "tibial_shaft_centres"}

FEMUR_WIDTH_MM = 30.0  # assumed femoral shaft width when the spacing is unknown
BAND_MM = (60.0, 140.0)  # distance from the joint line along the shaft
BAND_EXTENSION_MM = 15.0  # how far beyond the predicted shaft landmarks levels may go
LEVEL_STEP_MM = 2.0
STRIP_HALF_MM = 1.0  # profiles are averaged over +/- this along the shaft
WINDOW_OUT = 0.22  # search window outwards of the predicted cortex, fraction of the predicted width
WINDOW_IN = 0.14  # ... and inwards (less: the canal and a stem lie inside)
DOMINANCE = 0.5  # an edge's gradient is at least this share of the largest within DOMINANCE_MM of it
DOMINANCE_MM = 2.0
METAL_SHARE = 0.02  # pixels within this share of the value range from the image's maximum are saturated
METAL_WIDTH_MM = 6.0  # saturated areas at least this wide look like metal
METAL_CLEARANCE_MM = 1.5  # an edge with metal-like pixels this close inside it is the metal's edge
MIN_STEP = 0.1  # cortex minus soft tissue, fraction of the image's p1-p99 range (real films: 0.32 +/- 0.07)
WIDTH_TOLERANCE = 0.3  # measured width within +/- this fraction of the predicted one
MIN_SCALE_MM = 0.25  # floor of the robust residual scale
OUTLIER_SIGMAS = 3.0
MIN_INLIERS = 8
MIN_INLIER_FRACTION = 0.7
MIN_SPAN_MM = 30.0
MAX_RMS_MM = 0.6
TRACKING_PASSES = 2  # searches again around the cortex lines found, at most this often


@dataclass(frozen=True, eq=False)
class ShaftFit:
    """The image evidence for one bone's shaft axis.

    Attributes:
        bone: "femur" or "tibia".
        good: whether the evidence is strong enough to replace the landmark axis.
        reason: why not ("" when good).
        centres_px: (M, 2) inlier midpoints of the outer cortices, px; empty when none.
        levels: how many levels were sampled; edges_found: levels with both edges;
        inliers: midpoints kept by the robust fit.
        span_mm: extent of the inliers along the shaft; rms_mm: their RMS residual.
        angle_to_landmarks_deg: signed angle from the landmark axis to the image axis
            (NaN when no line was fitted).
    """

    bone: str
    good: bool
    reason: str
    centres_px: np.ndarray
    levels: int
    edges_found: int
    inliers: int
    span_mm: float
    rms_mm: float
    angle_to_landmarks_deg: float

    def to_dict(self) -> dict:
        return {"good": self.good, "reason": self.reason, "levels": self.levels,
                "edges_found": self.edges_found, "inliers": self.inliers,
                "span_mm": _finite_or_none(self.span_mm), "rms_mm": _finite_or_none(self.rms_mm),
                "angle_to_landmarks_deg": _finite_or_none(self.angle_to_landmarks_deg)}


@dataclass(frozen=True, eq=False)
class ShaftEvidence:
    """Both bones' evidence and the scale it was measured at.

    ``scale_source``: "spacing" (the image's pixel spacing) or "anatomy" (estimated from
    the predicted femoral shaft width, see the module docstring).
    """

    femur: ShaftFit
    tibia: ShaftFit
    mm_per_px: float
    scale_source: str

    def fit(self, bone: str) -> ShaftFit:
        return {"femur": self.femur, "tibia": self.tibia}[bone]


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _pairs(schema: LandmarkSchema, bone: str) -> tuple[np.ndarray, np.ndarray]:
    """Indices (P,) of the lateral and the medial cortex points of a bone's shaft-centre pairs."""
    pairs = schema.definitions[_CENTRES[bone]]["pairs"]
    return schema.indices([a for a, _ in pairs]), schema.indices([b for _, b in pairs])


def estimate_scale_mm_per_px(points_px: np.ndarray, schema: LandmarkSchema,
                             spacing_mm: tuple[float, float] | None) -> tuple[float, str]:
    """(mm per px, source): the spacing's geometric mean, else ``FEMUR_WIDTH_MM`` over the
    median predicted femoral shaft width (px)."""
    if spacing_mm is not None:
        return float(math.sqrt(spacing_mm[0] * spacing_mm[1])), "spacing"
    lat, med = _pairs(schema, "femur")
    width_px = float(np.median(np.hypot(*(points_px[lat] - points_px[med]).T)))
    if not (math.isfinite(width_px) and width_px > 0):
        raise ValueError("the predicted femoral cortex points coincide: no scale can be estimated")
    return FEMUR_WIDTH_MM / width_px, "anatomy"


def refine_shaft_axes(image: np.ndarray, points_px: np.ndarray, schema: LandmarkSchema,
                      spacing_mm: tuple[float, float] | None = None) -> ShaftEvidence:
    """Measure both shaft midlines in ``image`` around the predicted landmarks.

    Args:
        image: (H, W) float radiograph, bright = dense (any range).
        points_px: (K, 2) predicted landmarks of ``schema``, image px (x, y).
        schema: the landmark schema (pre-op or post-op).
        spacing_mm: (row_mm, col_mm) or None (scale estimated from the anatomy).

    Returns:
        ShaftEvidence; a bone whose evidence is weak says why (never raises for
        weak evidence).

    Raises:
        ValueError: an image that is not 2D, or points that are not (K, 2) finite.
    """
    image = np.asarray(image)
    points_px = np.asarray(points_px, dtype=np.float64)
    if image.ndim != 2 or min(image.shape) < 2:
        raise ValueError(f"image must be a 2D array, got shape {image.shape}")
    if points_px.shape != (len(schema), 2) or not np.isfinite(points_px).all():
        raise ValueError(f"points_px must be ({len(schema)}, 2) finite px, got shape {points_px.shape}")
    scale, source = estimate_scale_mm_per_px(points_px, schema, spacing_mm)
    lo, hi = _percentiles(image, (1.0, 99.0))
    if hi - lo <= 1e-12:
        weak = {bone: _weak(bone, "the image is flat") for bone in BONES}
        return ShaftEvidence(weak["femur"], weak["tibia"], scale, source)
    # only the few pixels the profiles read are normalised (the same float64 arithmetic
    # as normalising the whole image, a fraction of its time)
    norm = _Normalised(image, lo, hi)
    metal = _metal_cores(image, scale)
    knee = schema.reference_points(points_px)[[p["name"] for p in schema.definitions["reference_points"]["points"]]
                                              .index("knee_centre")]
    fits = {bone: _refine_bone(norm, metal, points_px, schema, bone, knee, scale) for bone in BONES}
    return ShaftEvidence(fits["femur"], fits["tibia"], scale, source)


def _percentiles(image: np.ndarray, q: tuple[float, ...]) -> np.ndarray:
    """``np.percentile(image.astype(np.float64), q)`` bit for bit, a third of its time.

    The order statistics are found in the image's own dtype (the same values as in
    float64, which holds every float32 exactly) and interpolated in float64 with numpy's
    formula (linear method, its ``_lerp``); a test holds the equality.
    """
    flat = image.ravel().copy()
    virtual = (flat.size - 1) * (np.asarray(q, dtype=np.float64) / 100.0)
    below = np.floor(virtual).astype(np.intp)
    above = np.minimum(below + 1, flat.size - 1)
    flat.partition(np.unique(np.concatenate([below, above])))
    a, b, t = flat[below].astype(np.float64), flat[above].astype(np.float64), virtual - below
    step = b - a
    return np.where(t >= 0.5, b - step * (1.0 - t), a + step * t)


def _metal_cores(image: np.ndarray, scale: float) -> "_MetalCores":
    """Where metal-like areas are, shrunk by half of ``METAL_WIDTH_MM`` (1 inside, else 0).

    Metal-like: within ``METAL_SHARE`` of the value range from the image's maximum
    (saturated), over a square ``METAL_WIDTH_MM`` wide (at least 95 % of it): stems,
    cement and components are that wide, while saturated specks (text, clipped cortex
    after edge enhancement or windowing) are not.
    """
    top = float(image.max())
    saturated = image >= np.float64(top - METAL_SHARE * (top - float(image.min())))  # compared in float64
    return _MetalCores(saturated, max(3, int(round(METAL_WIDTH_MM / scale)) | 1))


class _MetalCores:
    """(H, W) uint8 metal cores, computed tile by tile where they are indexed.

    The profiles read a small part of the image; the box counts of a tile need only the
    saturated pixels within ``k // 2`` of it, so each tile is counted on its own.
    """

    TILE = 128

    def __init__(self, saturated: np.ndarray, k: int) -> None:
        r = k // 2
        self.shape, self.k = saturated.shape, k
        self.padded = np.pad(saturated, r)  # outside the image counts as not saturated
        self.cores = np.zeros(saturated.shape, dtype=np.uint8)
        self.done = np.zeros((-(-self.shape[0] // self.TILE), -(-self.shape[1] // self.TILE)), dtype=bool)

    def __getitem__(self, index) -> np.ndarray:
        y, x = index
        ty, tx = y // self.TILE, x // self.TILE
        missing = ~self.done[ty, tx]
        if missing.any():
            for tile in set(zip(ty[missing].tolist(), tx[missing].tolist())):
                self._count(*tile)
        return self.cores[y, x]

    def across(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """(S, U) profile points -> (U,) bool: a metal core under the profile's lines at that step.

        Without a saturated pixel near the profile (most profiles: bone, not metal) the
        cores there are all 0, so nothing is sampled.
        """
        h, w = self.shape
        x0, x1 = (int(np.clip(v, 0, w - 1)) for v in (np.floor(xs.min()), np.ceil(xs.max())))
        y0, y1 = (int(np.clip(v, 0, h - 1)) for v in (np.floor(ys.min()), np.ceil(ys.max())))
        if not self.padded[y0:y1 + self.k, x0:x1 + self.k].any():  # padded[i] is image row i - k // 2
            return np.zeros(xs.shape[1], dtype=bool)
        return _bilinear(self, xs, ys).max(axis=0) > 0.5

    def _count(self, ty: int, tx: int) -> None:
        k, t = self.k, self.TILE
        y0, x0 = ty * t, tx * t
        y1, x1 = min(y0 + t, self.shape[0]), min(x0 + t, self.shape[1])
        window = self.padded[y0:y1 + k - 1, x0:x1 + k - 1].astype(np.int32)  # padded[i] is image row i - k // 2
        integral = np.pad(window, ((1, 0), (1, 0))).cumsum(axis=0).cumsum(axis=1)
        box = integral[k:, k:] - integral[:-k, k:] - integral[k:, :-k] + integral[:-k, :-k]
        self.cores[y0:y1, x0:x1] = box >= 0.95 * k * k
        self.done[ty, tx] = True


def _weak(bone: str, reason: str, levels: int = 0, found: int = 0) -> ShaftFit:
    return ShaftFit(bone, False, reason, np.zeros((0, 2)), levels, found, 0, math.nan, math.nan, math.nan)


def _refine_bone(norm: _Normalised, metal: _MetalCores, points_px: np.ndarray, schema: LandmarkSchema, bone: str,
                 knee_px: np.ndarray, scale: float) -> ShaftFit:
    lat_i, med_i = _pairs(schema, bone)
    lat, med = points_px[lat_i], points_px[med_i]
    centres = 0.5 * (lat + med)
    centroid = centres.mean(axis=0)
    _, singular, vt = np.linalg.svd(centres - centroid, full_matrices=False)
    d = vt[0]
    t_centres = (centres - centroid) @ d
    if np.ptp(t_centres) <= 1e-6 or singular[1] > 0.5 * singular[0]:
        return _weak(bone, "the predicted shaft centres do not define a line")
    t_knee = float((knee_px - centroid) @ d)
    if bone == "femur":  # d points distally: towards the knee for the femur, away from it for the tibia
        d = d if t_knee > 0 else -d
    else:
        d = -d if t_knee > 0 else d
    n = np.array([-d[1], d[0]])
    t_knee = float((knee_px - centroid) @ d)
    t_lat, t_med = (lat - centroid) @ d, (med - centroid) @ d
    s_lat, s_med = (lat - centroid) @ n, (med - centroid) @ n
    t_pts = np.concatenate([t_lat, t_med])

    # levels: the truth band, clipped to the predicted shaft landmarks (extended)
    sign = -1.0 if bone == "femur" else 1.0  # shaft direction away from the joint, along d
    band = sorted((t_knee + sign * BAND_MM[0] / scale, t_knee + sign * BAND_MM[1] / scale))
    ext = BAND_EXTENSION_MM / scale
    t_lo, t_hi = max(band[0], t_pts.min() - ext), min(band[1], t_pts.max() + ext)
    if t_hi - t_lo < MIN_SPAN_MM / scale:
        return _weak(bone, f"the predicted shaft landmarks cover less than {MIN_SPAN_MM:g} mm of the "
                           f"{BAND_MM[0]:g}-{BAND_MM[1]:g} mm band")
    levels = np.arange(t_lo, t_hi + 1e-9, LEVEL_STEP_MM / scale)
    # predicted cortex offsets at each level (linear in t, least squares: robust to jitter)
    pred_lat = np.polyval(np.polyfit(t_lat, s_lat, 1), levels)
    pred_med = np.polyval(np.polyfit(t_med, s_med, 1), levels)
    if not (np.abs(pred_med - pred_lat) > 4.0).all():
        return _weak(bone, "the predicted shaft is too narrow to search for edges", len(levels))
    # Search around the predicted cortices, then again around the cortex lines the edges
    # found (the network's shaft points may be shifted or tilted), until they settle; a
    # later pass replaces an earlier one unless it is weak where the earlier one was good.
    fit = None
    for _ in range(TRACKING_PASSES + 1):
        ts, mids, lat_edges, med_edges = _search(norm, metal, centroid, d, n, levels, pred_lat, pred_med, scale)
        new = _fit_midpoints(bone, ts, mids, centroid, d, n, len(levels), scale)
        if fit is None or new.good or not fit.good:
            fit = new
        tracked = [_robust_edge_line(edges, levels, MIN_SCALE_MM / scale) for edges in (lat_edges, med_edges)]
        if tracked[0] is None or tracked[1] is None:
            break
        moved = max(np.abs(tracked[0] - pred_lat).max(), np.abs(tracked[1] - pred_med).max())
        if moved < 0.5 or not (np.abs(tracked[1] - tracked[0]) > 4.0).all():
            break
        pred_lat, pred_med = tracked
    return fit


def _search(norm, metal, centroid, d, n, levels, pred_lat, pred_med, scale):
    """Edges at every level: (ts, midpoints) of levels with both edges and a plausible width,
    and each side's edges alone as (t, offset) lists."""
    h, w = norm.shape
    mids, ts, lat_edges, med_edges = [], [], [], []
    for t, a, b in zip(levels, pred_lat, pred_med):
        wd = abs(b - a)
        centre = centroid + t * d
        if not (0 <= centre[0] <= w - 1 and 0 <= centre[1] <= h - 1):
            continue
        ea = _edge(norm, metal, centre, d, n, a, np.sign(b - a), wd, scale)
        eb = _edge(norm, metal, centre, d, n, b, np.sign(a - b), wd, scale)
        if ea is not None:
            lat_edges.append((t, ea))
        if eb is not None:
            med_edges.append((t, eb))
        if ea is None or eb is None or abs(abs(eb - ea) - wd) > WIDTH_TOLERANCE * wd:
            continue
        mids.append(0.5 * (ea + eb))
        ts.append(t)
    return np.array(ts), np.array(mids), lat_edges, med_edges


def _robust_edge_line(edges, levels, min_scale):
    """One side's cortex offsets at ``levels`` from a robust line through its edges, or None."""
    if len(edges) < MIN_INLIERS:
        return None
    t, s = np.array(edges).T
    coef, inlier, _ = _robust_line(t, s, min_scale)
    if inlier.sum() < MIN_INLIERS:
        return None
    return np.polyval(coef, levels)


def _fit_midpoints(bone, ts, mids, centroid, d, n, n_levels, scale) -> ShaftFit:
    found = len(mids)
    if found < MIN_INLIERS:
        return _weak(bone, f"cortical edges found at {found} of {n_levels} levels (need {MIN_INLIERS})",
                     n_levels, found)
    ts, mids = np.array(ts), np.array(mids)
    coef, inlier, rms_px = _robust_line(ts, mids, MIN_SCALE_MM / scale)
    count = int(inlier.sum())
    span_mm = float(np.ptp(ts[inlier]) * scale) if count else 0.0
    rms_mm = rms_px * scale
    angle = math.degrees(math.atan(coef[0]))  # slope of offset along n against t, in px/px
    centres_px = centroid + ts[inlier, None] * d + mids[inlier, None] * n
    reasons = []
    if count < MIN_INLIERS or count < MIN_INLIER_FRACTION * n_levels:
        reasons.append(f"{count} of {n_levels} levels are consistent midpoints")
    if span_mm < MIN_SPAN_MM:
        reasons.append(f"they span {span_mm:.0f} mm (< {MIN_SPAN_MM:g})")
    if rms_mm > MAX_RMS_MM:
        reasons.append(f"their RMS residual is {rms_mm:.2f} mm (> {MAX_RMS_MM:g})")
    return ShaftFit(bone, not reasons, "; ".join(reasons), centres_px, n_levels, found, count, span_mm,
                    rms_mm, angle)


class _Normalised:
    """``(image - lo) / (hi - lo)`` in float64, computed only where it is indexed."""

    def __init__(self, image: np.ndarray, lo: float, hi: float) -> None:
        self.image, self.lo, self.range, self.shape = image, lo, hi - lo, image.shape

    def __getitem__(self, index) -> np.ndarray:
        return (self.image[index].astype(np.float64) - self.lo) / self.range


def _bilinear(image, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``image`` (an array or ``_Normalised``) at (x, y) px; NaN outside it."""
    h, w = image.shape
    inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    xc, yc = np.clip(x, 0, w - 1), np.clip(y, 0, h - 1)
    x0, y0 = np.minimum(np.floor(xc).astype(int), w - 2), np.minimum(np.floor(yc).astype(int), h - 2)
    fx, fy = xc - x0, yc - y0
    v = (image[y0, x0] * (1 - fx) * (1 - fy) + image[y0, x0 + 1] * fx * (1 - fy)
         + image[y0 + 1, x0] * (1 - fx) * fy + image[y0 + 1, x0 + 1] * fx * fy)
    return np.where(inside, v, np.nan)


def _smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    radius = max(1, int(math.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    padded = np.pad(values, radius, mode="edge")
    return np.convolve(padded, k, mode="valid")


def _edge(norm: _Normalised, metal: _MetalCores, centre: np.ndarray, d: np.ndarray, n: np.ndarray, s_pred: float, inward: float,
          width: float, scale: float) -> float | None:
    """Sub-pixel offset along ``n`` of the outer cortical edge near ``s_pred``, or None.

    ``inward``: +1 if the bone's interior lies towards +n from this cortex, else -1.
    """
    step = 0.5
    out_px, in_px = WINDOW_OUT * width, WINDOW_IN * width
    margin = 3.5 / scale + 2.0  # room for the step test and the smoothing beyond the window
    # u: distance inwards from the predicted edge
    u = np.arange(-out_px - margin, in_px + margin + 1e-9, step)
    strip = np.arange(-STRIP_HALF_MM / scale, STRIP_HALF_MM / scale + 1e-9, max(0.5, STRIP_HALF_MM / scale / 3))
    s = s_pred + inward * u
    xs = centre[0] + s[None, :] * n[0] + strip[:, None] * d[0]
    ys = centre[1] + s[None, :] * n[1] + strip[:, None] * d[1]
    samples = _bilinear(norm, xs, ys)
    if np.isnan(samples).any():
        return None
    metal_like = metal.across(xs, ys)
    profile = _smooth(samples.mean(axis=0), sigma=max(1.0, 0.3 / scale / step))
    grad = np.gradient(profile, step)  # rise going inwards
    window = (u >= -out_px) & (u <= in_px)
    near_px = DOMINANCE_MM / scale
    # candidates: local gradient maxima in the window, outermost first; the first that
    # dominates its neighbourhood and is a real soft tissue -> cortex step is the edge
    # (a stronger rise further in is the canal's content: a metal stem, cement)
    peaks = np.flatnonzero(window[1:-1] & (grad[1:-1] > 0) & (grad[1:-1] >= grad[:-2]) & (grad[1:-1] > grad[2:])) + 1
    for k in peaks:
        if grad[k] < DOMINANCE * grad[np.abs(u - u[k]) <= near_px].max():
            continue
        g0, g1, g2 = grad[k - 1], grad[k], grad[k + 1]
        denom = g0 - 2 * g1 + g2
        offset = 0.5 * (g0 - g2) / denom if denom < 0 else 0.0
        u_edge = u[k] + float(np.clip(offset, -1.0, 1.0)) * step
        inside = (u >= u_edge + 1.0 / scale) & (u <= u_edge + 3.0 / scale)
        outside = (u <= u_edge - 1.0 / scale) & (u >= u_edge - 3.0 / scale)
        reach = METAL_CLEARANCE_MM + 0.5 * METAL_WIDTH_MM  # the cores are shrunk by half the width
        into_metal = metal_like[(u >= u_edge - 0.5 / scale) & (u <= u_edge + reach / scale)].any()
        if into_metal:  # the rise into metal (a stem beside or through the cortex) is no cortical edge
            continue
        if inside.any() and outside.any() and profile[inside].mean() - profile[outside].mean() >= MIN_STEP:
            return s_pred + inward * u_edge
    return None


def _robust_line(t: np.ndarray, c: np.ndarray, min_scale: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Fit c = a t + b robustly (IRLS, Tukey biweight); returns ((a, b), inlier mask, RMS of inliers)."""
    weights = np.ones_like(t)
    coef = np.zeros(2)
    x = np.stack([t, np.ones_like(t)], axis=1)
    for _ in range(30):
        sw = np.sqrt(weights)
        coef_new = np.linalg.lstsq(x * sw[:, None], c * sw, rcond=None)[0]
        r = c - x @ coef_new
        sigma = max(1.4826 * float(np.median(np.abs(r - np.median(r)))), min_scale)
        z = r / (4.685 * sigma)
        weights = np.where(np.abs(z) < 1, (1 - z ** 2) ** 2, 0.0)
        if weights.sum() < 2:
            break
        converged = np.allclose(coef_new, coef, atol=1e-9, rtol=0)
        coef = coef_new
        if converged:
            break
    r = c - x @ coef
    inlier = np.abs(r) <= OUTLIER_SIGMAS * sigma
    if inlier.sum() >= 2:  # final least squares on the inliers
        coef = np.linalg.lstsq(x[inlier], c[inlier], rcond=None)[0]
        r = c - x @ coef
        inlier = np.abs(r) <= OUTLIER_SIGMAS * sigma
    rms = float(np.sqrt(np.mean(r[inlier] ** 2))) if inlier.any() else math.inf
    return coef, inlier, rms
