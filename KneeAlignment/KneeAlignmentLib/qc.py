"""Quality control of a measurement: the flags every result carries.

Each check returns ``measurement.QCFlag`` objects (a short code and a message for
people); ``ordered`` sorts them most serious first, so a result's ``reason`` is its
first flag's message. Thresholds are a ``bundle.thresholds.QCThresholds`` (the model
bundles' ``qc`` metadata; its defaults are the values calibrated for the models shipped
before they moved there); confidences are the heatmap codec's, in [0, 1].
"""

from __future__ import annotations

import numpy as np

from .bundle.thresholds import DEFAULT, QCThresholds
from .geometry import Alignment, mm_per_px, outside_image
from .measurement import Landmarks, QCFlag, reference_point_names
from .schema import LandmarkSchema

# Most serious first: a result's ``reason`` is its first flag's message.
FLAG_ORDER = (
    "invalid_network_output", "frame_failed", "geometry_failed", "wrong_view_suspected", "orientation_suspected",
    "side_conflict",
    "side_uncertain", "kind_uncertain", "implausible_atfa", "fts_fnts_disagree", "axis_evidence_disagree",
    "joint_surfaces_cross",
    "implausible_axis_length", "reference_near_border", "landmarks_outside_image", "low_mean_confidence",
    "low_landmark_confidence", "weak_axis_evidence",
)


def confidence_flags(landmarks: Landmarks, ref_conf: np.ndarray, t: QCThresholds = DEFAULT) -> list[QCFlag]:
    flags = []
    conf = landmarks.confidence
    low = np.flatnonzero(conf < t.landmark_confidence_min)
    if low.size > t.weak_landmark_fraction_max * len(conf):
        shown = ", ".join(landmarks.names[i] for i in low[:6]) + (" ..." if low.size > 6 else "")
        flags.append(QCFlag("low_landmark_confidence", f"{low.size} of {len(conf)} landmarks (more than "
                                                       f"{t.weak_landmark_fraction_max:.0%}) have confidence below "
                                                       f"{t.landmark_confidence_min}: {shown}"))
    mean = float(conf.mean())
    if mean < t.mean_confidence_min:
        flags.append(QCFlag("low_mean_confidence",
                            f"mean landmark confidence {mean:.2f} is below {t.mean_confidence_min}"))
    doubts = []
    if float(ref_conf.min()) < t.global_confidence_min:
        doubts.append(f"reference point confidence {float(ref_conf.min()):.2f} < {t.global_confidence_min}")
    if mean < t.wrong_view_mean_confidence:
        doubts.append(f"mean landmark confidence {mean:.2f} < {t.wrong_view_mean_confidence}")
    if doubts:
        flags.append(QCFlag("wrong_view_suspected", "this may not be an AP knee radiograph: " + "; ".join(doubts)))
    return flags


def orientation_flags(measured_confidence: float, alternatives: dict[str, float],
                      t: QCThresholds = DEFAULT) -> list[QCFlag]:
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
    if best - measured_confidence <= t.orientation_confidence_margin:
        return []
    return [QCFlag("orientation_suspected",
                   f"the image may be upside down or mirrored: the knee {what} gives a higher mean landmark "
                   f"confidence ({best:.2f}) than as measured ({measured_confidence:.2f}); display AP knee "
                   f"radiographs femur up, patient's right on the viewer's left, and check the laterality")]


def border_flags(shape: tuple[int, int], ref_px: np.ndarray, landmarks: Landmarks,
                 t: QCThresholds = DEFAULT) -> list[QCFlag]:
    flags = []
    names = reference_point_names()
    # a reference point not found (NaN) is no better than one at the border
    near_mask = outside_image(ref_px, shape, t.border_margin_fraction * min(shape)) | np.isnan(ref_px).any(axis=1)
    near = [names[i] for i in np.flatnonzero(near_mask)]
    if near:
        flags.append(QCFlag("reference_near_border", f"reference point(s) {', '.join(near)} near or beyond the "
                                                     f"image border"))
    outside = np.flatnonzero(outside_image(landmarks.points_px, shape))
    if outside.size:
        flags.append(QCFlag("landmarks_outside_image", f"{outside.size} landmarks lie outside the image"))
    return flags


def anatomy_flags(a: Alignment, landmarks: Landmarks, schema: LandmarkSchema,
                  spacing_mm: tuple[float, float] | None, t: QCThresholds = DEFAULT) -> list[QCFlag]:
    flags = []
    lo, hi = t.atfa_range_deg
    outside = [f"{m} {v:.1f}°" for m, v in (("FTS", a.atfa_fts_deg), ("FNTS", a.atfa_fnts_deg)) if not lo <= v <= hi]
    if outside:
        flags.append(QCFlag("implausible_atfa", f"aTFA {', '.join(outside)} outside the plausible [{lo:g}, {hi:g}]°"))
    if abs(a.atfa_fts_deg - a.atfa_fnts_deg) > t.fts_fnts_max_diff_deg:
        flags.append(QCFlag("fts_fnts_disagree", f"aTFA by FTS ({a.atfa_fts_deg:.1f}°) and FNTS "
                                                 f"({a.atfa_fnts_deg:.1f}°) differ by more than "
                                                 f"{t.fts_fnts_max_diff_deg:g}°"))
    scale = np.ones(2) if spacing_mm is None else mm_per_px(spacing_mm)  # px -> mm
    flags += upright_flags(landmarks.points_px * scale, schema, t)
    if _joint_surfaces_cross(a, landmarks.points_px * scale, schema, scale):
        flags.append(QCFlag("joint_surfaces_cross", "the femoral and tibial joint surfaces cross"))
    if spacing_mm is not None:
        lo, hi = t.axis_length_range_mm
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


def upright_flags(points: np.ndarray, schema: LandmarkSchema, t: QCThresholds = DEFAULT) -> list[QCFlag]:
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
    if tilt <= t.upright_max_tilt_deg:
        return []
    return [QCFlag("orientation_suspected", f"the femur is not above the tibia in the image (the tibia-to-femur "
                                            f"direction is {tilt:.0f}° from the image's up, more than "
                                            f"{t.upright_max_tilt_deg:g}°): display the radiograph femur up")]


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
