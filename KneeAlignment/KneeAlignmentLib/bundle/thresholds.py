"""Quality-control and decision thresholds: they travel with the models, in the bundle metadata.

Confidences are a model's own (the heatmap codec's, in [0, 1]), so the thresholds that
judge them belong to the model: a bundle's ``configs/metadata.json`` may carry them in
``kneealignment.qc`` (any subset of the fields below; :func:`QCThresholds.from_dict`),
and ``pipeline`` judges every result by the thresholds of the bundles that produced it
(reference points: the global bundle; everything else: the local bundle of the result's
kind; the pre-op/post-op decision: the post-op bundle). A bundle without a ``qc``
section gets :data:`DEFAULT`, the values calibrated for the models shipped before
thresholds moved into the metadata (66 pre-op and 66 post-op validation phantoms and the
wrong-view images of ``phantom.wrong_view``: mean landmark confidence 0.51-0.80 pre-op and
0.61-0.70 post-op against 0.04-0.18 on wrong views; the weaker reference point 0.67-1.00
against 0.00-0.35; implant landmark confidence 0.29-0.62 on pre-op knees, 0.65-0.74 on
post-op ones; metal-like area 3-46 % of the crop post-op).

``kneealign-train calibrate-qc`` (``Training/kneetrain/calibrate.py``) derives the
confidence thresholds of newly trained models from validation phantoms and writes them
into the bundles' metadata.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["DEFAULT", "QCThresholds"]


@dataclasses.dataclass(frozen=True)
class QCThresholds:
    """Every threshold of quality control and of the side and kind decisions.

    Attributes:
        landmark_confidence_min: a landmark below this counts as weak.
        weak_landmark_fraction_max: more weak landmarks than this fraction: flagged.
        mean_confidence_min: mean landmark confidence below this: flagged.
        global_confidence_min: a reference point below this: wrong view suspected.
        wrong_view_mean_confidence: mean landmark confidence below this: wrong view suspected.
        border_margin_fraction: reference points within this fraction of min(H, W) of the border.
        atfa_range_deg: plausible aTFA (valgus positive), (low, high).
        fts_fnts_max_diff_deg: FTS and FNTS should agree this well.
        axis_length_range_mm: plausible length of each drawn axis (spacing known).
        axis_evidence_max_diff_deg: the image-refined FTS and the landmark FTS should agree
            this well (``axis_check``).
        flag_weak_axis_evidence: flag results whose shaft edges could not confirm an axis
            (on held-out phantoms under real-film appearance changes, most results with weak
            evidence for a bone had an FTS error above 3 degrees: docs/axes-from-image.md).
        orientation_confidence_margin: another orientation of the knee (turned by 180 degrees,
            mirrored) more confident than the measured one by more than this: orientation
            suspected (shipped models, 14 phantoms in all 8 flips/rotations: upright images
            beat every alternative by 0.04-0.24, flipped ones lose by 0.02-0.31; 50 upright
            phantoms of the recalibrated phantom: none flagged, margin >= 0.015).
        upright_max_tilt_deg: the tibia-to-femur direction may lean this far from the image's up.
        side_confidence_margin: right vs left mean confidence closer than this: side uncertain.
        kind_implant_confidence: post-op when the implant landmarks' mean confidence reaches this.
        kind_confidence_margin: implant confidence within this of the threshold: kind uncertain.
        metal_level: crop pixels at or above this fraction of the image's 99.9th percentile
            look like metal (relative, because exports with a white level below the maximum,
            as 8-bit long-leg films have, never saturate; below 1 because JPEG and denoising
            leave the metal plateau a few grey levels under its brightest pixels).
        metal_area_fraction: post-op results with less metal-like area than this are flagged.
        metal_postop_fraction: kind "auto" decides post-op, whatever the implant landmarks
            say, where metal-like pixels cover at least this share of the knee crop (a 25 mm
            calibration ball covers about 2 %, knee implants 10 % and more), and flags it.
    """

    landmark_confidence_min: float = 0.3
    weak_landmark_fraction_max: float = 0.2
    mean_confidence_min: float = 0.5
    global_confidence_min: float = 0.5
    wrong_view_mean_confidence: float = 0.3
    border_margin_fraction: float = 0.02
    atfa_range_deg: tuple[float, float] = (-30.0, 35.0)
    fts_fnts_max_diff_deg: float = 5.0
    axis_length_range_mm: tuple[float, float] = (20.0, 300.0)
    axis_evidence_max_diff_deg: float = 2.0
    flag_weak_axis_evidence: bool = True
    side_confidence_margin: float = 0.05
    kind_implant_confidence: float = 0.635
    kind_confidence_margin: float = 0.03
    metal_level: float = 0.95
    metal_area_fraction: float = 0.01
    metal_postop_fraction: float = 0.06
    orientation_confidence_margin: float = 0.0
    upright_max_tilt_deg: float = 45.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "flag_weak_axis_evidence":
                if not isinstance(value, bool):
                    raise ValueError(f"{f.name} must be true or false, got {value!r}")
                continue
            if f.name.endswith("_range_deg") or f.name.endswith("_range_mm"):
                try:
                    low, high = (float(v) for v in value)
                except (TypeError, ValueError):
                    raise ValueError(f"{f.name} must be two numbers (low, high), got {value!r}") from None
                if not (math.isfinite(low) and math.isfinite(high) and low < high):
                    raise ValueError(f"{f.name} must be finite with low < high, got {value!r}")
                object.__setattr__(self, f.name, (low, high))
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0:
                raise ValueError(f"{f.name} must be a non-negative finite number, got {value!r}")
            object.__setattr__(self, f.name, float(value))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, base: QCThresholds | None = None) -> QCThresholds:
        """``base`` (default :data:`DEFAULT`) with the fields ``data`` sets.

        Raises:
            ValueError: an unknown field or a bad value (named).
        """
        base = DEFAULT if base is None else base
        if not data:
            return base
        if not isinstance(data, Mapping):
            raise ValueError(f"qc thresholds must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown qc thresholds {unknown}; known: {sorted(known)}")
        return dataclasses.replace(base, **dict(data))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (ranges as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


DEFAULT = QCThresholds()
