"""Calibrate a models folder's quality-control thresholds on validation phantoms and wrong views.

    kneealign-train calibrate-qc --models-dir MODELS --data VALIDATION_DIR [--data DIR ...]
        [--wrong-views 2] [--write] [--report calibration.json]

The confidences QC judges are a model's own, so every retrained model needs its own
thresholds; they go into the bundles' metadata (``kneealignment.qc``, read by
``pipeline`` through ``bundle``), never into module constants. Inputs: annotated
validation folders (``kneealign synth`` output or any images + ``.mrk.json``; the kind of
each case from its annotation), never the test set; and the non-AP-knee images of
``phantom.wrong_view`` (``--wrong-views`` of each view, seeds 0..N-1, 1024 x 832).

Measured per result: the weaker reference point's confidence, the mean landmark
confidence, the share of landmarks below ``landmark_confidence_min``; with both local
models, the post-op model's implant-landmark confidence (``--model auto`` evidence); and
|image-refined FTS - landmark FTS| (``Measurement.fts_axis``) on cases whose landmark FTS
is within 1 degree of the truth.

Rules (``v`` = validation AP knees of both kinds, ``w`` = wrong views; values rounded
to 0.01, towards not flagging AP knees):

- ``global_confidence_min`` (global bundle) and ``wrong_view_mean_confidence`` (local
  bundles), the two ``wrong_view_suspected`` tests: the midpoint between max(w) and
  min(v) when the wrong views lie below every AP knee; otherwise min(v) - 0.01, at least 0 (an AP
  knee is never flagged as a wrong view on the validation set; the report says which
  wrong views then pass).
- ``mean_confidence_min`` (``low_mean_confidence``), per local bundle: the 1st
  percentile of that kind's validation mean confidence.
- ``weak_landmark_fraction_max`` (``low_landmark_confidence``), per local bundle: the
  99th percentile of that kind's share of weak landmarks, plus 0.02.
- ``kind_implant_confidence`` and ``kind_confidence_margin`` (post-op bundle, only with
  both local models): the midpoint between max(pre-op knees) and min(post-op knees)
  and half their gap (at least 0.02); when they overlap, the midpoint of the two
  medians with a margin of half the overlap (then ``kind_uncertain`` marks the overlap).
- ``axis_evidence_max_diff_deg``, per local bundle: the 99th percentile of that kind's
  |image FTS - landmark FTS| on cases whose landmark FTS is right to 1 degree, rounded up
  to 0.5 degrees, at least 3 (on long-leg phantom crops a 1.5 degree floor flagged 17 % of
  the results, none of them wrong: the landmark axis, not the reported image axis, was off).

Other thresholds (border margin, plausible ranges, metal) keep the bundle's values.
Without ``--write`` nothing is changed: the derived values and the statistics behind them
are printed (and written to ``--report``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from KneeAlignmentLib.bundle.format import write_qc_thresholds
from KneeAlignmentLib.bundle.modelset import ModelSet
from KneeAlignmentLib.bundle.resolve import ROLE_DIRS, resolve_models
from KneeAlignmentLib.datasets import find_cases
from KneeAlignmentLib.geometry import compute_alignment
from KneeAlignmentLib.imageio import radiograph_from_array
from KneeAlignmentLib.phantom.wrong_view import MM_PER_PX, WRONG_VIEWS, render_wrong_view
from KneeAlignmentLib.pipeline import measure_batch

__all__ = ["calibrate_qc"]


def _floor(value: float) -> float:
    return math.floor(value * 100.0 + 1e-9) / 100.0


def _ceil(value: float) -> float:
    return math.ceil(value * 100.0 - 1e-9) / 100.0


def _separating(valid: np.ndarray, wrong: np.ndarray) -> tuple[float, str]:
    low = float(valid.min())
    if wrong.size and float(wrong.max()) < low:
        return _floor(0.5 * (low + float(wrong.max()))), "separated: midpoint"
    passing = int((wrong >= low - 0.01).sum()) if wrong.size else 0
    return max(0.0, _floor(low - 0.01)), (f"not separated: min(AP knees) - 0.01 (at least 0); {passing} of "
                                          f"{wrong.size} wrong views pass")


def _stats(values: np.ndarray) -> dict:
    if values.size == 0:
        return {"n": 0}
    return {"n": int(values.size), "min": float(values.min()), "p1": float(np.percentile(values, 1)),
            "median": float(np.median(values)), "p99": float(np.percentile(values, 99)), "max": float(values.max())}


def calibrate_qc(models_dir: str | Path, data: Sequence[str | Path], *, wrong_views: int = 2, write: bool = False,
                 device: str = "cpu", batch_size: int = 4) -> dict:
    """Derive the thresholds (see the module docstring); with ``write``, store them in the bundles.

    Returns {"thresholds": {bundle folder: {field: value}}, "rules": {...}, "stats": {...}}.

    Raises:
        ValueError: no validation cases, or a kind with a local model but no cases.
    """
    paths = resolve_models(models_dir)
    models = ModelSet.load(paths, device=device)
    cases = [c.load() for folder in data for c in find_cases(folder)]
    if not cases:
        raise ValueError(f"no annotated validation cases in {', '.join(map(str, data))}")
    weak_min = {k: models.local(k).qc.landmark_confidence_min for k in models.kinds}
    per_kind: dict[str, dict[str, list]] = {k: {"ref": [], "mean": [], "weak": [], "axis": []} for k in models.kinds}
    implant: dict[str, list] = {"preop": [], "postop": []}
    for kind in models.kinds:
        group = [c for c in cases if c.schema.kind == kind]
        if not group:
            raise ValueError(f"the models have a local {kind} model but the validation data has no {kind} cases")
        results = measure_batch([c.radiograph for c in group], models, kind=kind, batch_size=batch_size)
        for case, m in zip(group, results):
            stats = per_kind[kind]
            stats["ref"].append(float(np.min(m.reference_confidence)))
            if m.landmarks is None:
                continue
            conf = np.asarray(m.landmarks.confidence)
            stats["mean"].append(float(conf.mean()))
            stats["weak"].append(float((conf < weak_min[kind]).mean()))
            if m.fts_axis is not None and m.fts_axis["source"] != "landmarks":
                truth = compute_alignment(case.points_px, case.schema, case.side, case.radiograph.spacing_mm)
                if abs(m.fts_axis["atfa_fts_landmarks_deg"] - truth.atfa_fts_deg) <= 1.0:
                    stats["axis"].append(abs(m.fts_axis["difference_deg"]))
    if len(models.kinds) == 2:
        results = measure_batch([c.radiograph for c in cases], models, kind="auto", batch_size=batch_size)
        for case, m in zip(cases, results):
            if "implant_confidence" in m.evidence:
                implant[case.schema.kind].append(m.evidence["implant_confidence"])
    wrong_ref, wrong_mean = [], []
    images = [radiograph_from_array(render_wrong_view(view, seed), spacing_mm=(MM_PER_PX, MM_PER_PX),
                                    value_range=(0.0, 1.0))
              for view in WRONG_VIEWS for seed in range(wrong_views)]
    for m in measure_batch(images, models, kind="auto" if len(models.kinds) == 2 else models.kinds[0],
                           batch_size=batch_size) if images else []:
        wrong_ref.append(float(np.min(m.reference_confidence)))
        if m.landmarks is not None:
            wrong_mean.append(float(np.mean(m.landmarks.confidence)))

    arr = lambda values: np.asarray(values, dtype=float)  # noqa: E731
    valid_ref = arr([v for k in models.kinds for v in per_kind[k]["ref"]])
    valid_mean = arr([v for k in models.kinds for v in per_kind[k]["mean"]])
    rules, thresholds = {}, {}
    value, rules["global_confidence_min"] = _separating(valid_ref, arr(wrong_ref))
    thresholds[ROLE_DIRS["global"]] = {"global_confidence_min": value}
    wrong_view_mean, rules["wrong_view_mean_confidence"] = _separating(valid_mean, arr(wrong_mean))
    for kind in models.kinds:
        s = per_kind[kind]
        mine = {"wrong_view_mean_confidence": wrong_view_mean,
                "mean_confidence_min": _floor(float(np.percentile(arr(s["mean"]), 1))),
                "weak_landmark_fraction_max": min(1.0, _ceil(float(np.percentile(arr(s["weak"]), 99)) + 0.02))}
        axis = arr(s["axis"])
        if axis.size:
            mine["axis_evidence_max_diff_deg"] = max(3.0, math.ceil(float(np.percentile(axis, 99)) * 2.0) / 2.0)
        thresholds[ROLE_DIRS[kind]] = mine
    if len(models.kinds) == 2 and implant["preop"] and implant["postop"]:
        pre, post = arr(implant["preop"]), arr(implant["postop"])
        if pre.max() < post.min():
            gap = float(post.min() - pre.max())
            kind_threshold, margin = 0.5 * float(pre.max() + post.min()), max(0.02, 0.5 * gap)
            rules["kind_implant_confidence"] = "separated: midpoint, margin half the gap (at least 0.02)"
        else:
            overlap = float(pre.max() - post.min())
            kind_threshold, margin = 0.5 * float(np.median(pre) + np.median(post)), max(0.02, 0.5 * overlap)
            rules["kind_implant_confidence"] = "overlapping: midpoint of the medians, margin half the overlap"
        thresholds[ROLE_DIRS["postop"]] |= {"kind_implant_confidence": round(kind_threshold, 3),
                                             "kind_confidence_margin": round(margin, 3)}
    stats = {"cases": {k: len(per_kind[k]["ref"]) for k in models.kinds}, "wrong_views": len(images),
             "reference_confidence": {"ap_knees": _stats(valid_ref), "wrong_views": _stats(arr(wrong_ref))},
             "mean_confidence": {"ap_knees": _stats(valid_mean), "wrong_views": _stats(arr(wrong_mean)),
                                 **{k: _stats(arr(per_kind[k]["mean"])) for k in models.kinds}},
             "weak_fraction": {k: _stats(arr(per_kind[k]["weak"])) for k in models.kinds},
             "implant_confidence": {k: _stats(arr(v)) for k, v in implant.items()},
             "axis_difference_deg": {k: _stats(arr(per_kind[k]["axis"])) for k in models.kinds}}
    report = {"thresholds": thresholds, "rules": rules, "stats": stats,
              "data": [str(d) for d in data], "written": write}
    if write:
        provenance = (f"kneealign-train calibrate-qc on {sum(stats['cases'].values())} validation cases "
                      f"({', '.join(str(d) for d in data)}) and {len(images)} wrong views; rules: "
                      f"Training/kneetrain/calibrate.py")
        for role, folder in ROLE_DIRS.items():
            if folder in thresholds:
                write_qc_thresholds(paths[role], thresholds[folder], provenance)
    return report


def main_report(report: dict, path: str | Path | None) -> str:
    """The report as indented JSON, also written to ``path`` when given."""
    text = json.dumps(report, indent=2, allow_nan=False)
    if path is not None:
        Path(path).write_text(text + "\n", encoding="utf-8")
    return text
