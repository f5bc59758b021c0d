"""Tests of KneeAlignmentLib.evaluation: metrics with known answers, the report files, and
`kneealign evaluate` end to end (dataset reading: test_datasets.py)."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from annotated_factory import knee_points, write_dataset
from KneeAlignmentLib import cli
from KneeAlignmentLib.bundle.format import save_bundle
from KneeAlignmentLib.evaluation import (
    CaseResult,
    agreement,
    bland_altman,
    error_summary,
    icc,
    point_errors,
    summarize,
    write_report,
)
from KneeAlignmentLib.frame import FrameSpec
from KneeAlignmentLib.heatmaps import HeatmapCodec
from KneeAlignmentLib.measurement import reference_point_names
from KneeAlignmentLib.networks import HourglassConfig, build_network
from KneeAlignmentLib.schema import load_schema

# Shrout & Fleiss (1979), Table 2: 6 targets rated by 4 judges; the paper reports
# ICC(2,1) = .29 and ICC(3,1) = .71.
SHROUT_FLEISS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]])
# Two raters (truth, prediction) on 10 cases. Reference values computed with
# pingouin 0.5.5, pingouin.intraclass_corr(...): ICC2 (= ICC(A,1)) and ICC3 (= ICC(C,1)).
TRUTH = np.array([4.1, -2.3, 6.8, 1.2, -5.6, 3.3, 8.9, 0.4, -1.7, 5.2])
PRED = np.array([4.9, -1.8, 6.1, 2.0, -4.9, 3.0, 9.8, 1.1, -1.2, 5.0])
PINGOUIN_ICC2 = 0.9891834059507048
PINGOUIN_ICC3 = 0.991886240548089


# --- metrics --------------------------------------------------------------------------------

def test_point_errors_px_and_anisotropic_mm():
    pred = np.array([[3.0, 4.0], [0.0, 0.0]])
    truth = np.zeros((2, 2))
    px, mm = point_errors(pred, truth, spacing_mm=(0.2, 0.1))  # rows 0.2 mm, columns 0.1 mm
    np.testing.assert_allclose(px, [5.0, 0.0])
    np.testing.assert_allclose(mm, [math.hypot(3 * 0.1, 4 * 0.2), 0.0])
    assert point_errors(pred, truth)[1] is None


def test_error_summary_known_values_ignores_nan():
    s = error_summary([1.0, 2.0, 3.0, 4.0, np.nan])
    assert s["n"] == 4 and s["mean"] == 2.5 and s["median"] == 2.5 and s["max"] == 4.0
    assert s["sd"] == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert s["p95"] == pytest.approx(3.85)
    assert error_summary([np.nan])["n"] == 0


def test_bland_altman_known_values():
    reference = np.array([10.0, 20.0, 30.0, 40.0])
    ba = bland_altman(reference + [1.0, -1.0, 2.0, 0.0], reference)
    sd = np.std([1.0, -1.0, 2.0, 0.0], ddof=1)
    assert ba["bias"] == pytest.approx(0.5) and ba["sd"] == pytest.approx(sd)
    assert ba["loa_low"] == pytest.approx(0.5 - 1.96 * sd) and ba["loa_high"] == pytest.approx(0.5 + 1.96 * sd)
    assert ba["mean_abs_diff"] == pytest.approx(1.0)


def test_icc_matches_shrout_fleiss_table():
    result = icc(SHROUT_FLEISS)
    assert round(result["icc_a1"], 2) == 0.29  # ICC(2,1) in the paper
    assert round(result["icc_c1"], 2) == 0.71  # ICC(3,1)


def test_icc_matches_pingouin_on_fixed_data():
    result = icc(np.stack([TRUTH, PRED], axis=1))
    assert result["icc_a1"] == pytest.approx(PINGOUIN_ICC2, abs=1e-12)
    assert result["icc_c1"] == pytest.approx(PINGOUIN_ICC3, abs=1e-12)


def test_icc_consistency_ignores_a_constant_offset_agreement_does_not():
    base = icc(np.stack([TRUTH, PRED], axis=1))
    shifted = icc(np.stack([TRUTH, PRED + 3.0], axis=1))
    assert shifted["icc_c1"] == pytest.approx(base["icc_c1"])
    assert shifted["icc_a1"] < base["icc_a1"] - 0.1
    assert icc(np.stack([TRUTH, TRUTH], axis=1))["icc_a1"] == pytest.approx(1.0)


def test_icc_rejects_bad_input():
    with pytest.raises(ValueError, match="subjects"):
        icc(np.ones((1, 2)))
    with pytest.raises(ValueError, match="finite"):
        icc([[1.0, np.nan], [2.0, 3.0]])


def test_agreement_counts_missing_and_large_errors_as_failures():
    truth = np.array([0.0, 5.0, -3.0, 2.0, 1.0])
    measured = np.array([0.5, 9.0, np.nan, 2.0, 1.2])  # one error of 4 deg, one not measured
    a = agreement(measured, truth, failure_deg=3.0)
    assert a["cases"] == 5 and a["measured"] == 4 and a["failures"] == 2
    assert a["failure_rate"] == pytest.approx(0.4)
    assert a["mean_abs_diff"] == pytest.approx(np.mean([0.5, 4.0, 0.0, 0.2]))
    assert a["bias"] == pytest.approx(np.mean([0.5, 4.0, 0.0, 0.2]))


# --- report ---------------------------------------------------------------------------------

def _result(case_id: str, offset_px: float, atfa_true: float, atfa_pred: float, spacing=(0.5, 0.5)) -> CaseResult:
    truth = knee_points("preop", "R", np.random.default_rng(0))
    pred = truth + np.array([offset_px, 0.0])
    return CaseResult(case_id, "preop", "R", "R", "preop", "ok", (), spacing, truth, pred,
                      {"fts": atfa_true, "fnts": atfa_true + 0.5},
                      {"fts": atfa_pred, "fnts": atfa_pred + 0.5 if math.isfinite(atfa_pred) else math.nan})


def test_report_files_and_numbers(tmp_path):
    results = [_result("a", 2.0, 5.0, 5.5), _result("b", 4.0, -2.0, -1.0), _result("c", 0.0, 3.0, 7.0),
               dataclasses.replace(_result("d", 0.0, 1.0, math.nan), pred_px=None, status="flagged",
                                   qc_flags=("geometry_failed",))]
    summary = write_report(results, tmp_path, failure_deg=3.0)
    for name in ("per_case.csv", "per_landmark.csv", "per_group.csv", "summary.json", "report.md",
                 "bland_altman.png", "scatter.png", "point_error_cdf.png"):
        assert (tmp_path / name).is_file(), name
    for name in ("bland_altman.png", "scatter.png", "point_error_cdf.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fts = summary["angles"]["fts"]
    assert (fts["measured"], fts["failures"]) == (3, 2)  # c: 4 deg off; d: not measured
    assert fts["mean_abs_diff"] == pytest.approx(np.mean([0.5, 1.0, 4.0]))
    points = summary["points"]["preop"]
    assert points["overall_px"]["mean"] == pytest.approx(2.0)  # (2 + 4 + 0) / 3, d has no points
    assert points["overall_mm"]["mean"] == pytest.approx(1.0)
    assert points["landmarks"]["FLC00"]["px"]["n"] == 3
    rows = list(csv.DictReader(open(tmp_path / "per_case.csv", encoding="utf-8")))
    assert [r["case_id"] for r in rows] == ["a", "b", "c", "d"]
    assert [r["failure_fts"] for r in rows] == ["0", "0", "1", "1"]
    assert float(rows[1]["mean_error_mm"]) == pytest.approx(2.0)
    assert json.loads((tmp_path / "summary.json").read_text())["angles"]["fts"]["failures"] == 2
    report = (tmp_path / "report.md").read_text()
    assert "| FTS | 3/4 | 1.83 |" in report and "ICC(A,1)" in report
    qc = summary["qc"]  # c (4 deg off, ok) and d (flagged, not measured) err by more than 3 deg
    assert (qc["ok"], qc["flagged"], qc["large_errors"], qc["large_errors_flagged"]) == (3, 1, 2, 1)
    assert qc["flags"] == {"geometry_failed": 1}
    assert qc["angles_ok"]["fts"]["failures"] == 1 and qc["angles_ok"]["fts"]["cases"] == 3
    assert "of the 2 cases with an aTFA error above 3 deg (or none measured), 1 were flagged" in report
    pr = qc["flag_precision_recall"]
    assert pr["any flag"] == {"fired": 1, "wrong": 1, "precision": 1.0, "caught": 1, "wrong_cases": 2, "recall": 0.5}
    assert pr["geometry_failed"]["precision"] == 1.0 and pr["geometry_failed"]["recall"] == 0.5
    assert "| geometry_failed | 1 | 1 (100%) | 1/2 (50%) |" in report


def test_flag_precision_and_recall_count_flagged_results_that_were_wrong_and_wrong_results_flagged(tmp_path):
    flagged = lambda r, *codes: dataclasses.replace(r, status="flagged", qc_flags=codes)  # noqa: E731
    results = [flagged(_result("a", 0.0, 5.0, 5.5), "side_uncertain"),  # flagged, right
               flagged(_result("b", 0.0, 2.0, 9.0), "side_uncertain", "fts_fnts_disagree"),  # flagged, wrong
               _result("c", 0.0, 3.0, 7.5),  # wrong, not flagged
               _result("d", 0.0, 1.0, 1.2)]  # right, not flagged
    pr = write_report(results, tmp_path, failure_deg=3.0)["qc"]["flag_precision_recall"]
    assert (pr["any flag"]["precision"], pr["any flag"]["recall"]) == (0.5, 0.5)
    assert (pr["side_uncertain"]["fired"], pr["side_uncertain"]["wrong"]) == (2, 1)
    assert (pr["fts_fnts_disagree"]["precision"], pr["fts_fnts_disagree"]["recall"]) == (1.0, 0.5)


def test_kind_accuracy_counts_the_pipelines_decisions(tmp_path):
    results = [_result("a", 1.0, 5.0, 5.5), dataclasses.replace(_result("b", 0.0, 2.0, 2.0), kind_pred=None),
               dataclasses.replace(_result("c", 0.0, 3.0, 3.5), kind_pred="postop", pred_px=None)]
    summary = write_report(results, tmp_path)
    assert summary["kind_accuracy"] == pytest.approx(1 / 3)
    assert summary["angles"]["fts"]["measured"] == 3  # a wrong kind still measures angles
    assert summary["points"]["preop"]["predicted"] == 2
    rows = list(csv.DictReader(open(tmp_path / "per_case.csv", encoding="utf-8")))
    assert [r["kind_pred"] for r in rows] == ["preop", "", "postop"]
    assert "kind right in 33.3%" in (tmp_path / "report.md").read_text()


def test_summarize_needs_results():
    with pytest.raises(ValueError):
        summarize([])


# --- kneealign evaluate ------------------------------------------------------------------------

def _random_models(root: Path) -> Path:
    """A models folder of random-initialisation bundles (64 px inputs)."""
    codec = HeatmapCodec((64, 64), (32, 32), 1.5)

    def net(k: int, seed: int):
        import torch

        torch.manual_seed(seed)
        return build_network(HourglassConfig(depth=1, width=4, stacks=1, in_channels=1, out_channels=k,
                                             input_size=(64, 64), heatmap_stride=2)).eval()

    common = dict(version="0.0.1", codec=dataclasses.asdict(codec), description="random weights for tests",
                  data_source="none")
    save_bundle(root / "global", net(2, 0), name="g", stage="global", schema=None,
                landmark_names=reference_point_names(), frame={}, **common)
    spec = FrameSpec((64, 64), ((31.5, 31.0), (31.5, 18.0)))
    schema = load_schema("preop")
    save_bundle(root / "local_preop", net(len(schema), 1), name="l", stage="local", schema="preop",
                landmark_names=schema.names, frame=dataclasses.asdict(spec), **common)
    return root


def test_kneealign_evaluate_writes_a_report(tmp_path, capsys):
    data = write_dataset(tmp_path / "data", 3, fmt="dcm")
    models = _random_models(tmp_path / "models")
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["case000"], "val": [], "test": ["case001", "case002"]}))
    status = cli.main(["evaluate", "--models", str(models), "--data", str(data), "--out", str(tmp_path / "r"),
                       "--split", str(split), "--device", "cpu"])
    assert status == 0
    assert "aTFA FTS" in capsys.readouterr().out
    rows = list(csv.DictReader(open(tmp_path / "r" / "per_case.csv", encoding="utf-8")))
    assert [r["case_id"] for r in rows] == ["case001", "case002"]
    assert all(r["atfa_fts_true"] for r in rows)
    assert (tmp_path / "r" / "report.md").is_file()


def test_kneealign_evaluate_with_the_kind_decided_per_image(tmp_path, capsys):
    data = write_dataset(tmp_path / "data", 2, fmt="dcm")
    models = _random_models(tmp_path / "models")
    status = cli.main(["evaluate", "--models", str(models), "--data", str(data), "--out", str(tmp_path / "r"),
                       "--model", "auto", "--device", "cpu"])
    assert status == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert f"pre-op/post-op decided right: {100 * summary['kind_accuracy']:.1f}%" in out
    rows = list(csv.DictReader(open(tmp_path / "r" / "per_case.csv", encoding="utf-8")))
    assert len(rows) == 2 and all("kind_pred" in r for r in rows)
