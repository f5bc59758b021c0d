"""Knee alignment geometry: landmarks -> axes -> angles and joint-space widths. Pure numpy.

Every angle is computed in physical space: pixels are scaled to millimetres first
(x * col_mm, y * row_mm), because an anisotropic pixel spacing changes angles. Without a
spacing, pixels are taken as square and lengths are reported in px only.

Conventions. Image pixels: x = column, y = row (downwards). Radiographs are displayed in
the radiological convention (patient's right on the viewer's left), so the lateral side
of a RIGHT knee is towards -x and of a LEFT knee towards +x. Laterality is taken from the
``side`` argument alone and expressed relative to the femoral axis, so every result is
invariant to rotating, translating or uniformly scaling the image, and mirroring an image
(x -> W - x) together with switching the side leaves every value unchanged. Landmark
names are only used to group points into lines: lateral/medial pairs are treated
symmetrically, and the joint-space compartments are assigned by where they lie.

Axes (derived points from the schema's ``definitions``):

- FTS ("femoral and tibial shafts"): a total-least-squares line through the femoral
  (tibial) shaft centres, the midpoints of paired cortex points along the diaphysis.
- FNTS ("femoral notch, tibial spines"): femoral shaft centre (mean of the shaft centres)
  -> femoral notch point; tibial spine centre -> tibial shaft centre.

Both axis pairs need only four "defining points": the femoral and tibial shaft centres,
the femoral notch and the tibial spine centre. :func:`compute_alignment` derives them
from a schema's landmarks; :func:`atfa_from_defining_points` takes them as placed by hand
(the Slicer module's manual mode). Both run the same code, so they give the same angles.

aTFA is the signed angle from the femoral to the tibial axis, both pointing distally:
positive (valgus, knock-knee) when the distal tibia deviates laterally.

Shape legend: K landmarks, M shaft centres; points are (x, y); ``*_px`` image pixels,
``*_mm`` millimetres. Axis endpoints are (2, 2) arrays [proximal, distal] in px.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from .errors import GeometryError
from .schema import LandmarkSchema

__all__ = [
    "NEUTRAL_TOLERANCE_DEG",
    "Alignment",
    "alignment_label",
    "atfa_angle_points_px",
    "atfa_from_defining_points",
    "compute_alignment",
    "infer_side",
    "mm_per_px",
    "outside_image",
    "readonly_array",
]

SIDES = ("L", "R")
# |aTFA| below this is labelled 'neutral': finer differences are below what landmark
# placement on a radiograph resolves.
NEUTRAL_TOLERANCE_DEG = 0.5
# Lengths below this fraction of the landmark extent count as zero (degenerate axes).
_RELATIVE_TOLERANCE = 1e-9
# Shaft centres whose minor spread exceeds half their major spread do not define a line.
_MAX_MINOR_TO_MAJOR_SPREAD = 0.5


@dataclass(frozen=True, eq=False)
class Alignment:
    """Alignment measured from one landmark set.

    Angles in degrees, lengths in px (image pixels) and mm (None without a spacing).
    Pre-op measures (aLDFA, MPTA, JLCA, joint space) are None for post-op landmarks,
    whose joint surfaces are implants; the component angles are None for pre-op ones.
    From defining points alone (:func:`atfa_from_defining_points`) only the aTFA fields,
    axes and shaft centres are set; every other measure is None.

    Attributes:
        side: 'L' or 'R'.
        spacing_known: whether a pixel spacing was given (else px were taken as square).
        atfa_fts_deg, atfa_fnts_deg: signed anatomical tibiofemoral angle, valgus positive,
            from the FTS and FNTS axes; label_fts, label_fnts: 'valgus', 'varus' or 'neutral'.
        femoral_axis_fts_px, tibial_axis_fts_px: (2, 2) [proximal, distal] ends of the
            fitted shaft lines over the span of their centre points.
        femoral_axis_fnts_px: (2, 2) [femoral shaft centre, femoral notch].
        tibial_axis_fnts_px: (2, 2) [tibial spine centre, tibial shaft centre].
        femoral_shaft_centres_px, tibial_shaft_centres_px: (M, 2) the points the FTS axes fit.
        aldfa_deg: anatomical lateral distal femoral angle: between the femoral FTS axis
            (proximal part) and the femoral condylar line, on the lateral side (normal ~81).
        mpta_deg: medial proximal tibial angle: between the tibial FTS axis (distal part)
            and the tibial plateau line, on the medial side (normal ~87).
        jlca_deg: joint line convergence angle between the condylar and plateau lines;
            positive when they converge medially (the joint opens laterally, as in varus
            knees with medial narrowing), negative when they converge laterally. With these
            signs atfa_fts_deg = mpta_deg - aldfa_deg - jlca_deg exactly.
        jsw_lateral_px, jsw_medial_px (and _mm): minimum distance between the condyle
            outline and the plateau outline of each compartment, as polylines (0 if they
            cross).
        femoral_component_alpha_deg, tibial_component_beta_deg: see compute_alignment.
    """

    side: str
    spacing_known: bool
    atfa_fts_deg: float
    label_fts: str
    atfa_fnts_deg: float
    label_fnts: str
    femoral_axis_fts_px: np.ndarray
    tibial_axis_fts_px: np.ndarray
    femoral_axis_fnts_px: np.ndarray
    tibial_axis_fnts_px: np.ndarray
    femoral_shaft_centres_px: np.ndarray
    tibial_shaft_centres_px: np.ndarray
    aldfa_deg: float | None
    mpta_deg: float | None
    jlca_deg: float | None
    jsw_lateral_px: float | None
    jsw_medial_px: float | None
    jsw_lateral_mm: float | None
    jsw_medial_mm: float | None
    femoral_component_alpha_deg: float | None
    tibial_component_beta_deg: float | None

    def to_dict(self) -> dict:
        """JSON-serialisable dict of every field (arrays as nested lists, full precision)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                value = value.tolist()
            elif isinstance(value, (float, np.floating)):
                value = float(value)
            out[f.name] = value
        return out


def alignment_label(atfa_deg: float) -> str:
    """'valgus' (positive), 'varus' (negative) or 'neutral' (|aTFA| < NEUTRAL_TOLERANCE_DEG)."""
    if abs(atfa_deg) < NEUTRAL_TOLERANCE_DEG:
        return "neutral"
    return "valgus" if atfa_deg > 0 else "varus"


def compute_alignment(points_px: np.ndarray, schema: LandmarkSchema, side: str,
                      spacing_mm: tuple[float, float] | None = None, *,
                      fts_centres_px: dict[str, np.ndarray] | None = None) -> Alignment:
    """Measure alignment from one landmark set.

    Args:
        points_px: (K, 2) landmarks of ``schema`` as (x, y) image pixels.
        schema: the pre-op or post-op landmark schema the points follow.
        side: 'R' or 'L', the knee's laterality (radiological display assumed).
        spacing_mm: (row_mm, col_mm) pixel spacing, or None if unknown.
        fts_centres_px: optional {"femur": (M, 2), "tibia": (N, 2)} px shaft midline points
            measured otherwise (``shaft_edges``: cortical edges in the image) that replace
            the landmark shaft centres for that bone's FTS axis (and the angles built on
            it: aTFA FTS, aLDFA, MPTA, JLCA, alpha, beta); FNTS keeps the landmark centres.

    Post-op landmarks also give the component angles of the Knee Society Total Knee
    Arthroplasty Roentgenographic Evaluation and Scoring System (Ewald FC, Clin Orthop
    Relat Res 1989;248:9-12), on the AP view, as summarised in the systematic review
    "Does malalignment affect revision rate in total knee replacements"
    (SpringerPlus 2015, doi:10.1186/s40064-015-1604-4, Fig. 3):

    - alpha (femoral component angle, coronal femoral angle): between the femoral
      anatomical axis (the FTS shaft line, proximal part) and the line across the most
      distal points of the component's condyles, measured on the medial side; ideal
      about 96 degrees (larger = femoral component in more valgus).
    - beta (tibial component angle, coronal tibial angle): between the tibial anatomical
      axis (the FTS shaft line, distal part) and the tibial tray (the line across its
      lower surface), measured on the medial side; ideal 90 degrees (less = varus).

    Returns:
        Alignment.

    Raises:
        GeometryError: points not (K, 2) or not finite, side not 'L'/'R', spacing not two
            positive finite numbers, degenerate axes or lines (coincident shaft centres,
            zero-length axes), or a fibula lying medially for the given side.
    """
    points_px = _check_points(points_px, schema)
    _check_side(side)
    scale_xy = _check_spacing(spacing_mm)
    points_mm = points_px * scale_xy
    tol = _tolerance(points_mm)
    postop = schema.kind == "postop"

    femur_mm = schema.derive(points_mm, "femoral_shaft_centres")
    tibia_mm = schema.derive(points_mm, "tibial_shaft_centres")
    knee_mm = _knee_centre(points_mm, schema)
    fts_mm = {"femur": femur_mm, "tibia": tibia_mm}
    for bone, centres in (fts_centres_px or {}).items():
        if bone not in fts_mm:
            raise GeometryError(f"fts_centres_px keys must be 'femur' or 'tibia', got {bone!r}")
        fts_mm[bone] = _point_array(centres, f"{bone} FTS shaft points", at_least=2) * scale_xy
    femoral, tibial = _fts_axes(fts_mm["femur"], fts_mm["tibia"], knee_mm, tol)
    d_f, d_t = femoral[1], tibial[1]
    lat_f, lat_t = _lateral(d_f, side), _lateral(d_t, side)

    fibula_side = _side_of_fibula(points_mm, schema, tibial, tol)
    if fibula_side != side:
        raise GeometryError(f"side {side!r} contradicts the landmarks: the fibula, which is lateral, lies "
                            f"where it would for side {fibula_side!r} in the radiological display")

    axes = _tibiofemoral_fields(femur_mm, tibia_mm, schema.derive(points_mm, "femoral_notch"),
                                schema.derive(points_mm, "tibial_spine_centre"), femoral, tibial, side,
                                scale_xy, tol, fts_mm["femur"], fts_mm["tibia"])

    aldfa = mpta = jlca = jsw_lat_px = jsw_med_px = jsw_lat_mm = jsw_med_mm = alpha = beta = None
    if postop:
        # medial rays of the component lines; angles inside the bone each belongs to
        component = _line_ray(schema.derive(points_mm, "femoral_component_line"), -lat_f,
                              "femoral component line", tol)
        tray = _line_ray(schema.derive(points_mm, "tibial_component_line"), -lat_t, "tibial component line", tol)
        alpha = _angle_deg(-d_f, component)
        beta = _angle_deg(d_t, tray)
    else:
        condyles_med = _line_ray(schema.derive(points_mm, "femoral_condylar_line"), -lat_f,
                                 "femoral condylar line", tol)
        plateau_med = _line_ray(schema.derive(points_mm, "tibial_plateau_line"), -lat_t,
                                "tibial plateau line", tol)
        aldfa = _angle_deg(-d_f, -condyles_med)
        mpta = _angle_deg(d_t, plateau_med)
        # positive when the plateau's medial ray turns proximally towards the condylar line
        proximal = _perpendicular_towards(condyles_med, -d_f)
        jlca = math.degrees(math.atan2(plateau_med @ proximal, plateau_med @ condyles_med))
        compartments = _compartments_lateral_first(points_mm, schema, lat_f, knee_mm)
        jsw_lat_px, jsw_med_px = _joint_space(points_px, schema, compartments)
        if spacing_mm is not None:
            jsw_lat_mm, jsw_med_mm = _joint_space(points_mm, schema, compartments)

    return Alignment(
        side=side,
        spacing_known=spacing_mm is not None,
        **axes,
        aldfa_deg=aldfa, mpta_deg=mpta, jlca_deg=jlca,
        jsw_lateral_px=jsw_lat_px, jsw_medial_px=jsw_med_px,
        jsw_lateral_mm=jsw_lat_mm, jsw_medial_mm=jsw_med_mm,
        femoral_component_alpha_deg=alpha, tibial_component_beta_deg=beta,
    )


def atfa_from_defining_points(femoral_shaft_centres_px, tibial_shaft_centres_px, femoral_notch_px,
                              tibial_spine_centre_px, side: str,
                              spacing_mm: tuple[float, float] | None = None) -> Alignment:
    """aTFA by FTS and FNTS from the four defining points placed by hand (no schema landmarks).

    The same axes and angles as :func:`compute_alignment` gives for landmarks whose
    derived points these are. The knee centre, which only tells distal from proximal,
    is taken midway between the notch and the spine centre. There is no fibula to check
    the side against, so ``side`` is trusted.

    Args:
        femoral_shaft_centres_px: (M, 2) M >= 2 points on the femoral shaft's midline, px (x, y).
        tibial_shaft_centres_px: (N, 2) N >= 2 points on the tibial shaft's midline, px.
        femoral_notch_px: (2,) the apex of the intercondylar notch, px.
        tibial_spine_centre_px: (2,) midway between the tibial spine tips, px.
        side: 'R' or 'L'.
        spacing_mm: (row_mm, col_mm), or None (pixels taken as square).

    Returns:
        Alignment with the aTFA fields, axes and shaft centres set; other measures None.

    Raises:
        GeometryError: fewer than 2 shaft centres of a bone, non-finite or malformed
            points, bad side or spacing, coincident shaft centres, or zero-length axes.
    """
    femur_px = _point_array(femoral_shaft_centres_px, "femoral shaft centres", at_least=2)
    tibia_px = _point_array(tibial_shaft_centres_px, "tibial shaft centres", at_least=2)
    notch_px = _point_array([femoral_notch_px], "femoral notch", exactly=1)[0]
    spine_px = _point_array([tibial_spine_centre_px], "tibial spine centre", exactly=1)[0]
    _check_side(side)
    scale_xy = _check_spacing(spacing_mm)
    femur_mm, tibia_mm = femur_px * scale_xy, tibia_px * scale_xy
    notch_mm, spine_mm = notch_px * scale_xy, spine_px * scale_xy
    tol = _tolerance(np.vstack([femur_mm, tibia_mm, notch_mm, spine_mm]))
    femoral, tibial = _fts_axes(femur_mm, tibia_mm, 0.5 * (notch_mm + spine_mm), tol)
    axes = _tibiofemoral_fields(femur_mm, tibia_mm, notch_mm, spine_mm, femoral, tibial, side, scale_xy, tol)
    return Alignment(side=side, spacing_known=spacing_mm is not None, **axes,
                     aldfa_deg=None, mpta_deg=None, jlca_deg=None, jsw_lateral_px=None, jsw_medial_px=None,
                     jsw_lateral_mm=None, jsw_medial_mm=None, femoral_component_alpha_deg=None,
                     tibial_component_beta_deg=None)


def infer_side(points_px: np.ndarray, schema: LandmarkSchema) -> str:
    """The knee's side from its anatomy: the fibula is lateral to the tibia.

    Assumes the radiological display convention (patient's right on the viewer's left).
    For an upright image this returns 'R' when the fibula lies at smaller x than the
    tibial shaft axis and 'L' otherwise; the comparison is made across the tibial axis,
    so a rotated image gives the same answer (a mirrored one the other side).

    Args:
        points_px: (K, 2) landmarks of ``schema`` as (x, y) image pixels.

    Raises:
        GeometryError: invalid points, a degenerate tibial axis, or a fibula on the axis.
    """
    points_px = _check_points(points_px, schema)
    tol = _tolerance(points_px)
    tibial = _fit_axis(schema.derive(points_px, "tibial_shaft_centres"), _knee_centre(points_px, schema),
                       towards=False, what="tibial shaft centres", tol=tol)
    return _side_of_fibula(points_px, schema, tibial, tol)


# --- validation -----------------------------------------------------------------------

def _check_points(points_px, schema: LandmarkSchema) -> np.ndarray:
    try:
        points = np.array(points_px, dtype=np.float64)
    except (TypeError, ValueError):
        raise GeometryError("landmarks must be numbers (an array of (x, y) pixel coordinates)") from None
    if points.shape != (len(schema), 2):
        raise GeometryError(f"expected ({len(schema)}, 2) landmarks for the {schema.kind} schema, "
                            f"got shape {points.shape}")
    bad = ~np.isfinite(points).all(axis=1)
    if bad.any():
        names = [schema.names[i] for i in np.flatnonzero(bad)]
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise GeometryError(f"landmark coordinates must be finite; NaN or inf at {shown}")
    return points


def _point_array(points, what: str, *, at_least: int | None = None, exactly: int | None = None) -> np.ndarray:
    """(M, 2) float64 finite points, or GeometryError naming ``what``."""
    try:
        array = np.array(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise GeometryError(f"the {what} must be numbers ((x, y) pixel coordinates)") from None
    if array.ndim != 2 or array.shape[1] != 2:
        raise GeometryError(f"the {what} must be (x, y) points, got shape {array.shape}")
    count = len(array)
    if (at_least is not None and count < at_least) or (exactly is not None and count != exactly):
        needed = f"at least {at_least}" if at_least is not None else f"exactly {exactly}"
        raise GeometryError(f"{needed} {what} needed, got {count}")
    if not np.isfinite(array).all():
        raise GeometryError(f"the {what} must be finite; got NaN or inf")
    return array


def _check_side(side) -> None:
    if not (isinstance(side, str) and side in SIDES):
        raise GeometryError(f"side must be 'L' or 'R', got {side!r}")


def _check_spacing(spacing_mm) -> np.ndarray:
    """(2,) factors (col_mm, row_mm) that turn (x, y) px into mm; ones when unknown."""
    if spacing_mm is None:
        return np.ones(2)
    try:
        spacing = np.array(spacing_mm, dtype=np.float64)
    except (TypeError, ValueError):
        spacing = None
    if spacing is None or spacing.shape != (2,) or not (np.isfinite(spacing).all() and (spacing > 0).all()):
        raise GeometryError(f"spacing_mm must be two positive finite numbers (row_mm, col_mm), got {spacing_mm!r}")
    return mm_per_px(spacing)


def _tolerance(points: np.ndarray) -> float:
    extent = float(np.ptp(points, axis=0).max())
    if extent == 0.0:
        raise GeometryError("all landmarks coincide")
    return _RELATIVE_TOLERANCE * extent


# --- axes and lines -------------------------------------------------------------------

def _knee_centre(points: np.ndarray, schema: LandmarkSchema) -> np.ndarray:
    """(2,) the schema's 'knee_centre' reference point."""
    names = [p["name"] for p in schema.definitions["reference_points"]["points"]]
    return schema.reference_points(points)[names.index("knee_centre")]


def _fts_axes(femur_mm: np.ndarray, tibia_mm: np.ndarray, knee_mm: np.ndarray, tol: float):
    """FTS femoral and tibial axes (see :func:`_fit_axis`), both pointing distally."""
    femoral = _fit_axis(femur_mm, knee_mm, towards=True, what="femoral shaft centres", tol=tol)
    tibial = _fit_axis(tibia_mm, knee_mm, towards=False, what="tibial shaft centres", tol=tol)
    return femoral, tibial


def _tibiofemoral_fields(femur_mm: np.ndarray, tibia_mm: np.ndarray, notch_mm: np.ndarray, spine_mm: np.ndarray,
                         femoral, tibial, side: str, scale_xy: np.ndarray, tol: float,
                         fts_femur_mm: np.ndarray | None = None, fts_tibia_mm: np.ndarray | None = None) -> dict:
    """The aTFA, axis and shaft-centre fields of an Alignment, from the defining points in mm.

    ``femoral``, ``tibial``: the FTS axes of :func:`_fts_axes`, fitted to ``fts_femur_mm``
    and ``fts_tibia_mm`` (default: the landmark shaft centres ``femur_mm``, ``tibia_mm``). The one home of the aTFA
    arithmetic, for landmarks and for points placed by hand alike.
    """
    d_f, d_t = femoral[1], tibial[1]
    # FNTS: femoral shaft centre -> notch; tibial spine centre -> tibial shaft centre.
    d_f_fnts = _unit(notch_mm - femur_mm.mean(axis=0), "FNTS femoral axis (shaft centre to notch)", tol)
    d_t_fnts = _unit(tibia_mm.mean(axis=0) - spine_mm, "FNTS tibial axis (spine centre to shaft centre)", tol)
    atfa_fts = _signed_deg(d_t, d_f, _lateral(d_f, side))
    atfa_fnts = _signed_deg(d_t_fnts, d_f_fnts, _lateral(d_f_fnts, side))
    return dict(
        atfa_fts_deg=atfa_fts,
        label_fts=alignment_label(atfa_fts),
        atfa_fnts_deg=atfa_fnts,
        label_fnts=alignment_label(atfa_fnts),
        femoral_axis_fts_px=readonly_array(_axis_ends(femoral) / scale_xy),
        tibial_axis_fts_px=readonly_array(_axis_ends(tibial) / scale_xy),
        femoral_axis_fnts_px=readonly_array(np.stack([femur_mm.mean(axis=0), notch_mm]) / scale_xy),
        tibial_axis_fnts_px=readonly_array(np.stack([spine_mm, tibia_mm.mean(axis=0)]) / scale_xy),
        femoral_shaft_centres_px=readonly_array((femur_mm if fts_femur_mm is None else fts_femur_mm) / scale_xy),
        tibial_shaft_centres_px=readonly_array((tibia_mm if fts_tibia_mm is None else fts_tibia_mm) / scale_xy),
    )


def _fit_axis(centres: np.ndarray, knee: np.ndarray, towards: bool, what: str, tol: float):
    """Total-least-squares line through centres (M, 2), pointing distally.

    The femur's distal direction points towards the knee centre (towards=True), the
    tibia's away from it. Returns (centroid (2,), unit direction (2,), t_min, t_max), t the
    signed position of the centres along the line.
    """
    centroid = centres.mean(axis=0)
    offsets = centres - centroid
    _, singular, vt = np.linalg.svd(offsets, full_matrices=False)
    direction = vt[0]
    t = offsets @ direction
    if np.ptp(t) <= tol:
        raise GeometryError(f"the {what} coincide: no axis can be fitted")
    if singular[1] > _MAX_MINOR_TO_MAJOR_SPREAD * singular[0]:
        raise GeometryError(f"the {what} do not lie along a line")
    along = (knee - centroid) @ direction
    if abs(along) <= tol:
        raise GeometryError(f"the knee centre lies level with the {what}: the axis has no distal end")
    sign = 1.0 if (along > 0) == towards else -1.0
    return centroid, sign * direction, float(np.min(sign * t)), float(np.max(sign * t))


def _axis_ends(axis) -> np.ndarray:
    centroid, direction, t_min, t_max = axis
    return np.stack([centroid + t_min * direction, centroid + t_max * direction])


def _unit(vector: np.ndarray, what: str, tol: float) -> np.ndarray:
    norm = float(np.hypot(*vector))
    if norm <= tol:
        raise GeometryError(f"the {what} has zero length")
    return vector / norm


def _lateral(distal: np.ndarray, side: str) -> np.ndarray:
    """Unit lateral direction for a distal direction (2,), in the radiological display.

    A right knee upright (distal = +y) has lateral = -x: the distal direction turned by
    +90 degrees in image coordinates; a left knee is its mirror image.
    """
    distal = distal / np.hypot(*distal)
    turned = np.array([-distal[1], distal[0]])
    return turned if side == "R" else -turned


def _line_ray(line: np.ndarray, towards: np.ndarray, what: str, tol: float) -> np.ndarray:
    """Unit direction of the line through two points (2, 2), oriented along ``towards``."""
    ray = _unit(line[1] - line[0], what, tol)
    return ray if ray @ towards >= 0 else -ray


def _perpendicular_towards(ray: np.ndarray, towards: np.ndarray) -> np.ndarray:
    normal = np.array([-ray[1], ray[0]])
    return normal if normal @ towards >= 0 else -normal


def _angle_deg(u: np.ndarray, v: np.ndarray) -> float:
    """Angle in [0, 180] between unit vectors u and v (atan2: accurate near 0 and 180)."""
    return math.degrees(math.atan2(abs(u[0] * v[1] - u[1] * v[0]), u @ v))


def _signed_deg(tibial: np.ndarray, femoral: np.ndarray, lateral: np.ndarray) -> float:
    """Signed angle from the femoral to the tibial distal direction, positive laterally."""
    return math.degrees(math.atan2(tibial @ lateral, tibial @ femoral))


def _side_of_fibula(points: np.ndarray, schema: LandmarkSchema, tibial, tol: float) -> str:
    centroid, distal, _, _ = tibial
    fibula = points[schema.group_indices("fibula")].mean(axis=0)
    offset = (fibula - centroid) @ _lateral(distal, "R")
    if abs(offset) <= tol:
        raise GeometryError("the fibula lies on the tibial axis: the knee's side cannot be told")
    return "R" if offset > 0 else "L"


# --- joint space ----------------------------------------------------------------------

def _compartments_lateral_first(points: np.ndarray, schema: LandmarkSchema, lateral: np.ndarray,
                                knee: np.ndarray) -> tuple[str, str]:
    """The schema's two 'joint_space' compartments ordered (lateral, medial) by where they lie.

    Telling them apart by position, not by name, keeps the result independent of how
    lateral/medial pairs are named. ``lateral``: unit lateral direction (2,), ``knee`` (2,).
    """
    spaces = schema.definitions["joint_space"]
    first, second = "lateral", "medial"
    at = {c: (points[schema.indices(spaces[c]["femur"])].mean(axis=0) - knee) @ lateral for c in (first, second)}
    if at[first] == at[second]:
        raise GeometryError("the joint-space compartments coincide: lateral and medial cannot be told apart")
    return (first, second) if at[first] > at[second] else (second, first)


def _joint_space(points: np.ndarray, schema: LandmarkSchema, compartments: tuple[str, str]) -> tuple[float, float]:
    """Minimum condyle-to-plateau polyline distance of each compartment, in the units of points (K, 2)."""
    spaces = schema.definitions["joint_space"]
    return tuple(_polyline_distance(points[schema.indices(spaces[c]["femur"])],
                                    points[schema.indices(spaces[c]["tibia"])]) for c in compartments)


def _polyline_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Minimum distance between polylines a (N, 2) and b (M, 2); 0 where they cross.

    Two segments that do not cross are closest at an endpoint of one of them, so the
    minimum over vertex-to-segment distances both ways is exact.
    """
    a0, a1, b0, b1 = a[:-1], a[1:], b[:-1], b[1:]
    nearest = min(_point_segment_distances(a, b0, b1).min(), _point_segment_distances(b, a0, a1).min())
    # proper crossings: each segment's ends lie strictly on opposite sides of the other
    side_b0 = _cross(a1 - a0, b0[None] - a0[:, None])
    side_b1 = _cross(a1 - a0, b1[None] - a0[:, None])
    side_a0 = _cross((b1 - b0)[None], a0[:, None] - b0[None])
    side_a1 = _cross((b1 - b0)[None], a1[:, None] - b0[None])
    crossing = (side_b0 * side_b1 < 0) & (side_a0 * side_a1 < 0)
    return 0.0 if crossing.any() else float(nearest)


def _point_segment_distances(p: np.ndarray, s0: np.ndarray, s1: np.ndarray) -> np.ndarray:
    """(P, S) distances from points p (P, 2) to segments s0 -> s1 (S, 2)."""
    seg = s1 - s0
    length2 = np.einsum("ij,ij->i", seg, seg)
    rel = p[:, None] - s0[None]
    t = np.einsum("psj,sj->ps", rel, seg) / np.where(length2 > 0, length2, 1.0)
    closest = s0[None] + np.clip(t, 0.0, 1.0)[..., None] * seg[None]
    return np.hypot(*np.moveaxis(p[:, None] - closest, -1, 0))


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    if u.ndim < v.ndim:
        u = u[:, None]
    return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]


# --- arrays, image bounds and the angle markup -----------------------------------------

def readonly_array(array) -> np.ndarray:
    """A private float64 copy that cannot be written: for arrays held by frozen dataclasses."""
    array = np.array(array, dtype=np.float64)
    array.setflags(write=False)
    return array


def mm_per_px(spacing_mm) -> np.ndarray:
    """(2,) millimetres per pixel along x and y from a (row_mm, col_mm) spacing."""
    return np.array([spacing_mm[1], spacing_mm[0]], dtype=np.float64)


def outside_image(points_px, shape: tuple[int, int], margin_px: float = 0.0) -> np.ndarray:
    """(K,) True where a point (K, 2) lies beyond an (H, W) image's area [-0.5, W - 0.5] x
    [-0.5, H - 0.5] (pixel centres at integers) shrunk by ``margin_px`` on every side;
    NaN points count as inside."""
    points = np.asarray(points_px, dtype=np.float64)
    h, w = shape
    x, y = points[:, 0], points[:, 1]
    return ((x < -0.5 + margin_px) | (x > w - 0.5 - margin_px)
            | (y < -0.5 + margin_px) | (y > h - 0.5 - margin_px))


def atfa_angle_points_px(femoral_axis_px: np.ndarray, tibial_axis_px: np.ndarray) -> np.ndarray:
    """(3, 2) px of an angle markup whose value is |aTFA|: [femoral axis continued, vertex, tibial arm].

    The vertex is the femoral axis' distal end; the first arm continues the femoral
    axis distally by its own length, the second runs parallel to the tibial axis with
    its length. A linear pixel-to-mm map keeps these directions, so Slicer's angle (in
    mm) equals the physical aTFA.
    """
    femoral, tibial = np.asarray(femoral_axis_px, float), np.asarray(tibial_axis_px, float)
    vertex = femoral[1]
    return np.stack([vertex + (femoral[1] - femoral[0]), vertex, vertex + (tibial[1] - tibial[0])])
