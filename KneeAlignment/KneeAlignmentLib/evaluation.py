"""Evaluation against annotated radiographs: agreement metrics and the report.

The annotated cases come from ``datasets`` (``find_cases``, ``AnnotatedCase.load``).

1. Metrics (pure numpy, unit-tested with known answers): point-to-point errors,
   Bland-Altman agreement, ICC(A,1) and ICC(C,1), failure rates.
2. :func:`evaluate` runs ``pipeline.measure_batch`` on every case and
   :func:`write_report` writes the per-case CSV, per-landmark and per-group tables,
   plots (Bland-Altman, scatter, point-error CDF) and a Markdown summary.

Shapes: K landmarks; points (K, 2) as (x, y); ``*_px`` image pixels, ``*_mm``
millimetres via ``spacing_mm`` = (row_mm, col_mm). Angles in degrees.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import DISCLAIMER
from .datasets import AnnotatedImage
from .measurement import measure_points
from .qc import ordered
from .schema import load_schema

__all__ = [
    "CaseResult",
    "point_errors",
    "error_summary",
    "bland_altman",
    "icc",
    "agreement",
    "evaluate",
    "summarize",
    "write_report",
]

FAILURE_DEG = 3.0  # an aTFA further than this from the truth counts as a failure
METHODS = ("fts", "fnts")


# --- 1. metrics (pure numpy) ----------------------------------------------------------------


def point_errors(pred_px, truth_px, spacing_mm: tuple[float, float] | None = None):
    """Point-to-point distances.

    Args:
        pred_px, truth_px: (..., K, 2) image px.
        spacing_mm: (row_mm, col_mm), or None.

    Returns:
        (error_px, error_mm): (..., K) float64 each; error_mm is None without a spacing.
    """
    diff = np.asarray(pred_px, dtype=np.float64) - np.asarray(truth_px, dtype=np.float64)
    if diff.shape[-1] != 2:
        raise ValueError(f"points must be (..., 2) as (x, y), got {diff.shape}")
    error_px = np.hypot(diff[..., 0], diff[..., 1])
    if spacing_mm is None:
        return error_px, None
    row_mm, col_mm = spacing_mm
    return error_px, np.hypot(diff[..., 0] * col_mm, diff[..., 1] * row_mm)


def error_summary(errors) -> dict[str, float]:
    """n, mean, sd (ddof 1), median, p95 and max of non-negative errors (NaN entries ignored)."""
    e = np.asarray(errors, dtype=np.float64).ravel()
    e = e[np.isfinite(e)]
    if e.size == 0:
        return {"n": 0, "mean": math.nan, "sd": math.nan, "median": math.nan, "p95": math.nan, "max": math.nan}
    return {"n": int(e.size), "mean": float(e.mean()), "sd": float(e.std(ddof=1)) if e.size > 1 else math.nan,
            "median": float(np.median(e)), "p95": float(np.percentile(e, 95)), "max": float(e.max())}


def bland_altman(measured, reference) -> dict[str, float]:
    """Bland-Altman agreement of paired values (n,).

    Returns n, bias = mean(measured - reference), sd of the differences (ddof 1), the
    95 % limits of agreement bias -/+ 1.96 sd, and the mean absolute difference.
    """
    m, r = _paired(measured, reference)
    d = m - r
    if d.size < 2:
        raise ValueError("Bland-Altman needs at least 2 pairs")
    bias, sd = float(d.mean()), float(d.std(ddof=1))
    return {"n": int(d.size), "bias": bias, "sd": sd, "loa_low": bias - 1.96 * sd, "loa_high": bias + 1.96 * sd,
            "mean_abs_diff": float(np.abs(d).mean())}


def icc(ratings) -> dict[str, float]:
    """Single-measure intraclass correlations of ratings (n subjects, k raters), two-way model.

    From the two-way ANOVA mean squares (rows MSR, columns MSC, residual MSE):

    - ``icc_a1``: absolute agreement, ICC(A,1) of McGraw & Wong (1996) = ICC(2,1) of
      Shrout & Fleiss (1979): (MSR - MSE) / (MSR + (k-1) MSE + k (MSC - MSE) / n).
    - ``icc_c1``: consistency, ICC(C,1) = ICC(3,1): (MSR - MSE) / (MSR + (k-1) MSE).

    Raises:
        ValueError: fewer than 2 subjects or raters, or non-finite ratings.
    """
    x = np.asarray(ratings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2:
        raise ValueError(f"ratings must be (n >= 2 subjects, k >= 2 raters), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("ratings must be finite")
    n, k = x.shape
    grand = x.mean()
    ss_rows = k * ((x.mean(axis=1) - grand) ** 2).sum()
    ss_cols = n * ((x.mean(axis=0) - grand) ** 2).sum()
    ss_err = ((x - grand) ** 2).sum() - ss_rows - ss_cols
    msr, msc, mse = ss_rows / (n - 1), ss_cols / (k - 1), ss_err / ((n - 1) * (k - 1))
    return {"icc_a1": float((msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n)),
            "icc_c1": float((msr - mse) / (msr + (k - 1) * mse))}


def agreement(measured, reference, failure_deg: float = FAILURE_DEG) -> dict[str, float]:
    """Angle agreement: Bland-Altman, ICC(A,1), ICC(C,1) and failure rate of paired angles (n,).

    NaN in ``measured`` marks a case without a measurement: it counts as a failure and
    is left out of the other statistics. ``failure_rate`` is the fraction of all cases
    that failed or erred by more than ``failure_deg``.
    """
    m, r = np.asarray(measured, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if m.shape != r.shape or m.ndim != 1:
        raise ValueError(f"measured and reference must be equal-length vectors, got {m.shape} and {r.shape}")
    if not np.isfinite(r).all():
        raise ValueError("reference values must be finite")
    ok = np.isfinite(m)
    failed = ~ok | (np.abs(np.where(ok, m - r, 0.0)) > failure_deg)
    out = {"cases": int(m.size), "measured": int(ok.sum()), "failures": int(failed.sum()),
           "failure_rate": float(failed.mean()) if m.size else math.nan}
    if ok.sum() >= 2:
        out |= bland_altman(m[ok], r[ok])
        out |= icc(np.stack([r[ok], m[ok]], axis=1))
    return out


def _paired(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values must be equal-length vectors, got {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired values must be finite")
    return a, b


# --- 2. running and reporting --------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class CaseResult:
    """Truth and prediction for one case.

    Attributes:
        case_id, kind, side_true, side_pred (None when undetermined), status, qc_flags.
        kind_pred: the pipeline's pre-op/post-op decision (None when undetermined); the
            truth's kind when the kind was given.
        spacing_mm: (row_mm, col_mm) or None.
        truth_px: (K, 2); pred_px: (K, 2), or None when no landmarks were predicted.
        atfa_true: {"fts": deg, "fnts": deg}; atfa_pred: the same or NaN when not measured.
    """

    case_id: str
    kind: str
    side_true: str
    side_pred: str | None
    kind_pred: str | None
    status: str
    qc_flags: tuple[str, ...]
    spacing_mm: tuple[float, float] | None
    truth_px: np.ndarray
    pred_px: np.ndarray | None
    atfa_true: Mapping[str, float]
    atfa_pred: Mapping[str, float]

    def errors(self):
        """(error_px, error_mm) (K,) each, NaN without a prediction; error_mm None without spacing."""
        pred = self.pred_px if self.pred_px is not None else np.full_like(self.truth_px, np.nan)
        return point_errors(pred, self.truth_px, self.spacing_mm)


def evaluate(cases: Iterable[AnnotatedImage], models, *, kind: str = "annotation", batch_size: int = 4,
             progress=None) -> list[CaseResult]:
    """Measure every case with ``models`` (a ``bundle.modelset.ModelSet``) and pair it with its truth.

    ``kind="annotation"`` gives the truth's schema kind to the pipeline; ``"auto"`` lets
    the pipeline decide pre-op or post-op, as ``measure --model auto`` does: a wrong
    decision then costs the case its landmark errors (the schemas differ) but its angles
    are still compared. The side is always the pipeline's own decision (the image's,
    else detected), so side errors count as they would in use. ``progress`` wraps the
    case iterator (e.g. tqdm).
    """
    if kind not in ("annotation", "auto"):
        raise ValueError(f"kind must be 'annotation' or 'auto', got {kind!r}")
    from .pipeline import measure_batch  # torch only when evaluating

    results, pending = [], []
    iterator = progress(cases) if progress is not None else cases

    def flush() -> None:
        by_kind: dict[str, list[AnnotatedImage]] = {}
        for case in pending:
            by_kind.setdefault(case.schema.kind if kind == "annotation" else "auto", []).append(case)
        for requested, group in by_kind.items():
            measured = measure_batch([c.radiograph for c in group], models, kind=requested, batch_size=batch_size)
            results.extend(_pair(c, m) for c, m in zip(group, measured, strict=True))
        pending.clear()

    for case in iterator:
        pending.append(case)
        if len(pending) >= batch_size:
            flush()
    flush()
    return sorted(results, key=lambda r: r.case_id)


def _pair(case: AnnotatedImage, m) -> CaseResult:
    truth = measure_points(case.points_px, case.schema, side=case.side,
                           spacing_mm=case.radiograph.spacing_mm).alignment  # the side decided in load
    a = m.alignment
    same_schema = m.landmarks is not None and m.kind == case.schema.kind
    # the annotation's own side flags (side_conflict) count like the measurement's: a result is not silent
    flags = ordered([*case.side_flags, *m.qc_flags])
    return CaseResult(
        case_id=case.case_id, kind=case.schema.kind, side_true=case.side, side_pred=m.side, kind_pred=m.kind,
        status="flagged" if flags else "ok", qc_flags=tuple(f.code for f in flags),
        spacing_mm=case.radiograph.spacing_mm, truth_px=case.points_px,
        pred_px=np.array(m.landmarks.points_px) if same_schema else None,
        atfa_true={"fts": truth.atfa_fts_deg, "fnts": truth.atfa_fnts_deg},
        atfa_pred={"fts": math.nan if a is None else a.atfa_fts_deg,
                   "fnts": math.nan if a is None else a.atfa_fnts_deg},
    )


def summarize(results: Sequence[CaseResult], failure_deg: float = FAILURE_DEG) -> dict:
    """Every number of the report, JSON-ready.

    Keys: "cases"; "angles": {method: agreement(...)}; "points": per kind
    {"overall_px", "overall_mm" (cases with a spacing), "groups": {group: {"px", "mm"}},
    "landmarks": {name: {"group", "px", "mm"}}}; "side_accuracy"; "kind_accuracy" (the
    pipeline's pre-op/post-op decisions; 1.0 when the kind was given).
    """
    if not results:
        raise ValueError("no results to summarize")
    out: dict = {"cases": len(results), "failure_deg": failure_deg, "angles": {}, "points": {}}
    for method in METHODS:
        out["angles"][method] = agreement([r.atfa_pred[method] for r in results],
                                          [r.atfa_true[method] for r in results], failure_deg)
    for kind in sorted({r.kind for r in results}):
        schema = load_schema(kind)
        group = [r for r in results if r.kind == kind]
        px = np.stack([r.errors()[0] for r in group])  # (n, K)
        mm = np.stack([r.errors()[1] if r.spacing_mm is not None else np.full(len(schema), np.nan) for r in group])
        groups = {g: {"px": error_summary(px[:, schema.group_indices(g)]),
                      "mm": error_summary(mm[:, schema.group_indices(g)])} for g in schema.groups}
        landmarks = {lm.name: {"group": lm.group, "px": error_summary(px[:, lm.index]),
                               "mm": error_summary(mm[:, lm.index])} for lm in schema.landmarks}
        out["points"][kind] = {"cases": len(group), "predicted": int(sum(r.pred_px is not None for r in group)),
                               "overall_px": error_summary(px), "overall_mm": error_summary(mm),
                               "groups": groups, "landmarks": landmarks}
    out["side_accuracy"] = float(np.mean([r.side_pred == r.side_true for r in results]))
    out["kind_accuracy"] = float(np.mean([r.kind_pred == r.kind for r in results]))
    out["qc"] = _qc_summary(results, failure_deg)
    return out


def _qc_summary(results: Sequence[CaseResult], failure_deg: float) -> dict:
    """How quality control sorted the cases: does it flag the large errors, and how good are the rest?"""
    passed = [r for r in results if r.status == "ok"]
    large = [r for r in results
             if any(not abs(r.atfa_pred[m] - r.atfa_true[m]) <= failure_deg for m in METHODS)]  # NaN counts
    flags = Counter(code for r in results for code in r.qc_flags)
    wrong = {r.case_id for r in large}
    flagged = [r for r in results if r.status != "ok"]
    by_flag = {"any flag": _precision_recall(flagged, wrong)}
    by_flag |= {code: _precision_recall([r for r in results if code in r.qc_flags], wrong) for code, _ in
                flags.most_common()}
    return {"ok": len(passed), "flagged": len(results) - len(passed), "flags": dict(flags.most_common()),
            "large_errors": len(large), "large_errors_flagged": sum(r.status != "ok" for r in large),
            "flag_precision_recall": by_flag,
            "angles_ok": {m: agreement([r.atfa_pred[m] for r in passed], [r.atfa_true[m] for r in passed],
                                       failure_deg) for m in METHODS} if passed else {}}


def _precision_recall(fired: Sequence[CaseResult], wrong: set[str]) -> dict:
    """How well a flag predicts a large error: ``fired`` cases, of them ``wrong`` (precision =
    wrong / fired: how many flagged results were wrong) and ``caught`` of all wrong cases
    (recall = caught / wrong cases: how many wrong results were flagged); NaN when undefined."""
    hit = sum(r.case_id in wrong for r in fired)
    return {"fired": len(fired), "wrong": hit, "precision": hit / len(fired) if fired else math.nan,
            "caught": hit, "wrong_cases": len(wrong), "recall": hit / len(wrong) if wrong else math.nan}


_CASE_COLUMNS = ("case_id", "kind", "kind_pred", "status", "qc_flags", "side_true", "side_pred", "spacing_row_mm",
                 "spacing_col_mm", "mean_error_px", "max_error_px", "mean_error_mm", "max_error_mm",
                 "atfa_fts_true", "atfa_fts_pred", "atfa_fts_diff", "atfa_fnts_true", "atfa_fnts_pred",
                 "atfa_fnts_diff", "failure_fts", "failure_fnts")


def _case_row(r: CaseResult, failure_deg: float) -> dict[str, str]:
    px, mm = r.errors()
    row = {"case_id": r.case_id, "kind": r.kind, "kind_pred": r.kind_pred or "", "status": r.status,
           "qc_flags": ";".join(r.qc_flags),
           "side_true": r.side_true, "side_pred": r.side_pred or "",
           "spacing_row_mm": _num(r.spacing_mm[0] if r.spacing_mm else math.nan),
           "spacing_col_mm": _num(r.spacing_mm[1] if r.spacing_mm else math.nan),
           "mean_error_px": _num(px.mean()), "max_error_px": _num(px.max()),
           "mean_error_mm": _num(mm.mean() if mm is not None else math.nan),
           "max_error_mm": _num(mm.max() if mm is not None else math.nan)}
    for method in METHODS:
        true, pred = r.atfa_true[method], r.atfa_pred[method]
        diff = pred - true
        row |= {f"atfa_{method}_true": _num(true), f"atfa_{method}_pred": _num(pred), f"atfa_{method}_diff": _num(diff),
                f"failure_{method}": str(int(not abs(diff) <= failure_deg))}  # NaN (not measured) fails
    return row


def _num(value: float) -> str:
    return "" if not math.isfinite(value) else f"{value:.4f}"


def write_report(results: Sequence[CaseResult], directory: str | Path, *, failure_deg: float = FAILURE_DEG,
                 title: str = "KneeAlignment evaluation", notes: Sequence[str] = ()) -> dict:
    """Write the evaluation report into ``directory``; returns :func:`summarize`'s numbers.

    Files: per_case.csv, per_landmark.csv, per_group.csv, summary.json, report.md,
    bland_altman.png, scatter.png, point_error_cdf.png.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(results, failure_deg)
    _write_csv(out / "per_case.csv", _CASE_COLUMNS, [_case_row(r, failure_deg) for r in results])
    stats = ("n", "mean", "sd", "median", "p95", "max")
    landmark_rows, group_rows = [], []
    for kind, points in summary["points"].items():
        for name, entry in points["landmarks"].items():
            landmark_rows.append({"kind": kind, "landmark": name, "group": entry["group"],
                                  **{f"{s}_px": _stat(entry["px"][s]) for s in stats},
                                  **{f"{s}_mm": _stat(entry["mm"][s]) for s in stats}})
        for group, entry in points["groups"].items():
            group_rows.append({"kind": kind, "group": group, **{f"{s}_px": _stat(entry["px"][s]) for s in stats},
                               **{f"{s}_mm": _stat(entry["mm"][s]) for s in stats}})
    columns = [f"{s}_{u}" for u in ("px", "mm") for s in stats]
    _write_csv(out / "per_landmark.csv", ["kind", "landmark", "group", *columns], landmark_rows)
    _write_csv(out / "per_group.csv", ["kind", "group", *columns], group_rows)
    (out / "summary.json").write_text(json.dumps(_json_safe(summary), indent=2), encoding="utf-8")
    _plot_bland_altman(results, out / "bland_altman.png")
    _plot_scatter(results, out / "scatter.png")
    _plot_error_cdf(results, out / "point_error_cdf.png")
    (out / "report.md").write_text(_markdown(summary, title, notes), encoding="utf-8")
    return summary


def _stat(value) -> str:
    return str(value) if isinstance(value, int) else _num(value)


def _write_csv(path: Path, columns: Sequence[str], rows: Sequence[Mapping[str, str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


def _json_safe(value):
    """NaN -> None recursively (strict JSON)."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _markdown(summary: dict, title: str, notes: Sequence[str]) -> str:
    def f(value, digits=2):
        missing = value is None or (isinstance(value, float) and not math.isfinite(value))
        return "n/a" if missing else f"{value:.{digits}f}"

    lines = [f"# {title}", "", f"{summary['cases']} cases. {DISCLAIMER}", ""]
    lines += [f"- {note}" for note in notes] + ([""] if notes else [])
    lines += ["## aTFA agreement with the ground truth", "",
              "| method | measured | MAD (deg) | bias (deg) | 95% limits of agreement (deg) | ICC(A,1) | ICC(C,1) "
              f"| failures (> {summary['failure_deg']:g} deg) |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for method, a in summary["angles"].items():
        lines.append(f"| {method.upper()} | {a['measured']}/{a['cases']} | {f(a.get('mean_abs_diff'))} | "
                     f"{f(a.get('bias'))} | {f(a.get('loa_low'))} to {f(a.get('loa_high'))} | "
                     f"{f(a.get('icc_a1'), 3)} | {f(a.get('icc_c1'), 3)} | {a['failures']} "
                     f"({100 * a['failure_rate']:.1f}%) |")
    lines += ["", "ICC: two-way model, single measure, ground truth and prediction as the two raters; "
                  "A = absolute agreement (Shrout-Fleiss ICC(2,1)), C = consistency (ICC(3,1)).",
              "", f"Side detected correctly in {100 * summary['side_accuracy']:.1f}% of cases; pre-op/post-op "
                  f"kind right in {100 * summary['kind_accuracy']:.1f}%.", "",
              "![Bland-Altman](bland_altman.png)", "", "![Scatter](scatter.png)", ""]
    for kind, p in summary["points"].items():
        o_px, o_mm = p["overall_px"], p["overall_mm"]
        lines += [f"## Landmark errors, {kind} ({p['predicted']}/{p['cases']} cases with landmarks)", "",
                  "| group | mean px | median px | p95 px | mean mm | median mm | p95 mm |",
                  "| --- | --- | --- | --- | --- | --- | --- |",
                  f"| **all** | {f(o_px['mean'])} | {f(o_px['median'])} | {f(o_px['p95'])} | {f(o_mm['mean'])} | "
                  f"{f(o_mm['median'])} | {f(o_mm['p95'])} |"]
        for group, g in p["groups"].items():
            lines.append(f"| {group} | {f(g['px']['mean'])} | {f(g['px']['median'])} | {f(g['px']['p95'])} | "
                         f"{f(g['mm']['mean'])} | {f(g['mm']['median'])} | {f(g['mm']['p95'])} |")
        lines.append("")
    qc = summary["qc"]
    lines += ["## Quality control", "",
              f"{qc['ok']} of {summary['cases']} cases passed quality control (status ok), {qc['flagged']} were "
              f"flagged; of the {qc['large_errors']} cases with an aTFA error above {summary['failure_deg']:g} deg "
              f"(or none measured), {qc['large_errors_flagged']} were flagged.", ""]
    if qc["flags"]:
        lines += ["Flags raised: " + ", ".join(f"{code} ({n})" for code, n in qc["flags"].items()) + ".", ""]
    lines += [f"Does a flag predict an error (aTFA by FTS or FNTS off by more than {summary['failure_deg']:g} deg, "
              f"or not measured)? Precision: of the results carrying the flag, how many were wrong; recall: of "
              f"the {qc['large_errors']} wrong results, how many carried it.", "",
              "| flag | fired | of them wrong (precision) | wrong results caught (recall) |",
              "| --- | --- | --- | --- |"]
    for code, pr in qc["flag_precision_recall"].items():
        lines.append(f"| {code} | {pr['fired']} | {pr['wrong']} ({f(100 * pr['precision'], 0)}%) | "
                     f"{pr['caught']}/{pr['wrong_cases']} ({f(100 * pr['recall'], 0)}%) |")
    lines.append("")
    for method, a in qc["angles_ok"].items():
        lines.append(f"- QC-passed cases, {method.upper()}: MAD {f(a.get('mean_abs_diff'))} deg, ICC(A,1) "
                     f"{f(a.get('icc_a1'), 3)}, {a['failures']} above {summary['failure_deg']:g} deg")
    lines += ["", "Per landmark: per_landmark.csv; per case: per_case.csv.", "",
              "![Point error CDF](point_error_cdf.png)", ""]
    return "\n".join(lines)


def _figure(ncols: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5 * ncols, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]


def _angle_pairs(results: Sequence[CaseResult], method: str) -> tuple[np.ndarray, np.ndarray]:
    truth = np.array([r.atfa_true[method] for r in results])
    pred = np.array([r.atfa_pred[method] for r in results])
    ok = np.isfinite(pred)
    return truth[ok], pred[ok]


def _plot_bland_altman(results: Sequence[CaseResult], path: Path) -> None:
    fig, axes = _figure(2)
    for ax, method in zip(axes, METHODS, strict=True):
        truth, pred = _angle_pairs(results, method)
        ax.set_title(f"aTFA {method.upper()}: Bland-Altman")
        ax.set_xlabel("mean of prediction and truth (deg)")
        ax.set_ylabel("prediction - truth (deg)")
        if truth.size >= 2:
            ba = bland_altman(pred, truth)
            ax.scatter((pred + truth) / 2, pred - truth, s=12, alpha=0.7)
            for value, style, label in ((ba["bias"], "-", f"bias {ba['bias']:.2f}"),
                                        (ba["loa_low"], "--", f"-1.96 sd {ba['loa_low']:.2f}"),
                                        (ba["loa_high"], "--", f"+1.96 sd {ba['loa_high']:.2f}")):
                ax.axhline(value, linestyle=style, color="tab:red", linewidth=1, label=label)
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def _plot_scatter(results: Sequence[CaseResult], path: Path) -> None:
    fig, axes = _figure(2)
    for ax, method in zip(axes, METHODS, strict=True):
        truth, pred = _angle_pairs(results, method)
        ax.scatter(truth, pred, s=12, alpha=0.7)
        if truth.size:
            lo, hi = float(min(truth.min(), pred.min())) - 1, float(max(truth.max(), pred.max())) + 1
            ax.plot([lo, hi], [lo, hi], color="grey", linewidth=1, label="identity")
            ax.legend(fontsize=7)
        ax.set_title(f"aTFA {method.upper()}: prediction vs truth")
        ax.set_xlabel("truth (deg, valgus +)")
        ax.set_ylabel("prediction (deg, valgus +)")
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def _plot_error_cdf(results: Sequence[CaseResult], path: Path) -> None:
    use_mm = all(r.spacing_mm is not None for r in results)
    unit = "mm" if use_mm else "px"
    fig, (ax,) = _figure(1)
    for kind in sorted({r.kind for r in results}):
        errors = np.concatenate([r.errors()[1 if use_mm else 0] for r in results if r.kind == kind])
        errors = np.sort(errors[np.isfinite(errors)])
        if errors.size:
            ax.step(errors, np.arange(1, errors.size + 1) / errors.size, where="post", label=kind)
    ax.set_xlabel(f"point-to-point error ({unit})")
    ax.set_ylabel("fraction of landmarks")
    ax.set_title("Landmark error CDF")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
