"""Tests of KneeAlignmentLib.case_results: the results-table row, CSV and JSON of a case."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from test_case_record import SPACING, case, model_record

from KneeAlignmentLib import __version__
from KneeAlignmentLib.case_record import CaseRecord
from KneeAlignmentLib.case_results import COLUMNS, FORMAT, case_document, results_row, write_case_json, write_results_csv
from KneeAlignmentLib.case_view import CaseUpdate
from KneeAlignmentLib.geometry import compute_alignment
from KneeAlignmentLib.measurement import Measurement, QCFlag

OWN = CaseRecord("preop", "R", "detected", "landmarks")  # a point list the user brought


def update(schema, points, alignment):
    """The CaseUpdate of a case measured from ``points`` (nothing to draw)."""
    return CaseUpdate(schema.kind, schema.names, points, alignment, ())


def test_row_has_every_column_in_order_with_numbers_and_text():
    schema, points, alignment = case("preop")
    row = results_row(OWN, update(schema, points, alignment), radiograph="Knee", landmarks="Knee landmarks")
    assert list(row) == [c.name for c in COLUMNS]
    for column in COLUMNS:
        assert isinstance(row[column.name], float if column.unit else str), column.name
    assert row["atfa_fts_deg"] == alignment.atfa_fts_deg and row["label_fts"] == alignment.label_fts
    assert row["mpta_deg"] == alignment.mpta_deg
    assert math.isnan(row["femoral_component_alpha_deg"])  # a post-op measure
    assert (row["source"], row["schema"], row["side_source"]) == ("landmarks", "preop", "detected")
    assert (row["status"], row["qc_flags"], row["models"], row["edited_landmarks"]) == ("", "", "", "")
    assert row["software_version"] == __version__


def test_row_of_a_corrected_model_result():
    schema, points, alignment = case("postop")
    record = model_record(schema, points, alignment, flags=(QCFlag("low_mean_confidence", "low"),))
    moved = points.copy()
    moved[[3, 40]] += 0.5
    row = results_row(record, update(schema, moved, alignment), radiograph="K", landmarks="L")
    assert row["source"] == "model, corrected"
    assert (row["status"], row["qc_flags"], row["models"]) == ("flagged", "low_mean_confidence",
                                                            "g@1.0 (user-supplied);l@2.1 (user-supplied)")
    assert row["edited_landmarks"] == f"{schema.names[3]};{schema.names[40]}"
    assert math.isnan(row["aldfa_deg"]) and row["tibial_component_beta_deg"] == alignment.tibial_component_beta_deg
    unedited = results_row(record, update(schema, points, alignment), radiograph="K", landmarks="L")
    assert unedited["source"] == "model" and unedited["edited_landmarks"] == ""


def test_csv_has_the_table_header_and_empty_cells_for_nan(tmp_path):
    schema, points, alignment = case("preop")
    rows = [results_row(OWN, update(schema, points, alignment), radiograph=f"R{i}", landmarks=f"L{i}")
            for i in range(2)]
    path = write_results_csv(tmp_path / "results.csv", rows)
    with path.open(newline="") as stream:
        read = list(csv.DictReader(stream))
    assert list(read[0]) == [c.name for c in COLUMNS]
    assert [r["landmarks"] for r in read] == ["L0", "L1"]
    assert float(read[0]["atfa_fts_deg"]) == pytest.approx(alignment.atfa_fts_deg, abs=5e-4)
    assert read[0]["femoral_component_alpha_deg"] == ""
    with pytest.raises(ValueError, match="a row must have the columns"):
        write_results_csv(tmp_path / "bad.csv", [{"landmarks": "x"}])


def test_json_keeps_the_current_result_beside_the_models_measurement(tmp_path):
    schema, points, alignment = case("preop")
    record = model_record(schema, points, alignment)
    moved = points.copy()
    moved[schema.index("TLC06")] += (6.0, 0.0)
    corrected = compute_alignment(moved, schema, "R", SPACING)
    document = case_document(record, update(schema, moved, corrected), radiograph="K", landmarks="L",
                             spacing_mm=SPACING)
    path = write_case_json(tmp_path / "case.json", document)
    data = json.loads(path.read_text())
    assert data["format"] == FORMAT and data["intended_use"] == "Research use only. Not for clinical use."
    assert data["result"]["source"] == "model, corrected" and data["result"]["edited_landmarks"] == "TLC06"
    assert data["result"]["femoral_component_alpha_deg"] is None
    assert data["alignment"]["atfa_fts_deg"] == corrected.atfa_fts_deg
    assert data["inference"]["alignment"]["atfa_fts_deg"] == alignment.atfa_fts_deg  # what the model said
    assert Measurement.from_dict(data["inference"]).landmarks.names == schema.names
    np.testing.assert_allclose(data["landmarks"]["points_mm"], moved * [SPACING[1], SPACING[0]])
    assert data["landmarks"]["schema"] == "preop" and data["landmarks"]["names"] == list(schema.names)
    manual = CaseRecord("manual", "R", "given", "manual")
    placed = CaseUpdate("manual", ("a", "b"), moved[:2], corrected, ())
    document = case_document(manual, placed, radiograph="K", landmarks="M", spacing_mm=None)
    assert document["inference"] is None and document["landmarks"]["points_mm"] is None
    assert document["landmarks"]["schema"] == "manual" and document["result"]["source"] == "manual"
    with pytest.raises(ValueError, match=r"shape \(2, 2\)"):
        case_document(manual, CaseUpdate("manual", ("a", "b"), moved[:3], corrected, ()), radiograph="K",
                      landmarks="M", spacing_mm=None)
