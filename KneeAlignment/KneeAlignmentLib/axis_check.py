"""FTS axes from image evidence, with the landmark axes as a cross-check.

:func:`refine_fts` takes the landmark-based alignment of a result, measures each shaft's
midline from its cortical edges (``shaft_edges``) and, for every bone whose evidence is
good, replaces that bone's FTS axis by the image axis (``geometry.compute_alignment``
with ``fts_centres_px``). FNTS is unchanged. What it returns besides the alignment:

- a report for the result (``Measurement.fts_axis``)::

      {"source": "image" | "image (femur)" | "image (tibia)" | "landmarks",
       "atfa_fts_landmarks_deg": aTFA by FTS from the landmark shaft centres alone,
       "difference_deg": reported FTS minus the landmark FTS,
       "scale_mm_per_px", "scale_source": "spacing" | "anatomy",
       "femur": shaft_edges.ShaftFit.to_dict(), "tibia": ...}

- QC flags: ``axis_evidence_disagree`` when the reported (image) FTS and the landmark
  FTS differ by more than ``QCThresholds.axis_evidence_max_diff_deg`` (one of the two
  is wrong: the network's shaft points or the edges found); ``weak_axis_evidence`` when
  a bone's image evidence is weak and ``QCThresholds.flag_weak_axis_evidence`` is set
  (then the landmark axis is reported for that bone, and the report says why).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .bundle.thresholds import QCThresholds
from .errors import GeometryError
from .geometry import Alignment, compute_alignment
from .measurement import QCFlag
from .schema import LandmarkSchema
from .shaft_edges import BONES, refine_shaft_axes

__all__ = ["refine_fts"]


def refine_fts(image: np.ndarray, points_px: np.ndarray, schema: LandmarkSchema, side: str,
               spacing_mm: tuple[float, float] | None, landmark_alignment: Alignment,
               thresholds: QCThresholds) -> tuple[Alignment, dict[str, Any], list[QCFlag]]:
    """(alignment to report, report, flags); see the module docstring.

    Never raises for weak evidence or an image axis that geometry rejects: the landmark
    alignment is kept and the report says why.
    """
    evidence = refine_shaft_axes(image, points_px, schema, spacing_mm)
    good = {bone: evidence.fit(bone).centres_px for bone in BONES if evidence.fit(bone).good}
    report: dict[str, Any] = {
        "source": "landmarks",
        "atfa_fts_landmarks_deg": float(landmark_alignment.atfa_fts_deg),
        "difference_deg": 0.0,
        "scale_mm_per_px": float(evidence.mm_per_px),
        "scale_source": evidence.scale_source,
        **{bone: evidence.fit(bone).to_dict() for bone in BONES},
    }
    flags: list[QCFlag] = []
    alignment = landmark_alignment
    if good:
        try:
            alignment = compute_alignment(points_px, schema, side, spacing_mm, fts_centres_px=good)
        except GeometryError as exc:
            report["error"] = f"the image axes were not usable: {exc}"
            good = {}
    if good:
        report["source"] = "image" if len(good) == len(BONES) else f"image ({next(iter(good))})"
        diff = float(alignment.atfa_fts_deg - landmark_alignment.atfa_fts_deg)
        report["difference_deg"] = diff
        if abs(diff) > thresholds.axis_evidence_max_diff_deg:
            flags.append(QCFlag("axis_evidence_disagree",
                                f"aTFA by FTS from the cortical edges in the image ({alignment.atfa_fts_deg:.1f}°) "
                                f"and from the landmark shaft centres ({landmark_alignment.atfa_fts_deg:.1f}°) "
                                f"differ by more than {thresholds.axis_evidence_max_diff_deg:g}°"))
    weak = [bone for bone in BONES if bone not in good]
    if weak and thresholds.flag_weak_axis_evidence:
        reasons = "; ".join(f"{bone}: {evidence.fit(bone).reason or report.get('error', '')}" for bone in weak)
        flags.append(QCFlag("weak_axis_evidence", f"the shaft cortices could not confirm the FTS axis of the "
                                                  f"{' and '.join(weak)} (landmark axis used): {reasons}"))
    return alignment, report, flags
