"""Tests of KneeAlignmentLib.case_results: the results-table row, CSV and JSON of a case."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from KneeAlignmentLib import __version__
from KneeAlignmentLib.case_results import (
    COLUMNS,
    FORMAT,
    case_document,
    edited_landmarks,
    results_row,
    write_case_json,
    write_results_csv,
)
from KneeAlignmentLib.geometry import compute_alignment
from KneeAlignmentLib.measurement import Landmarks, Measurement, ModelInfo, QCFlag
from KneeAlignmentLib.schema import example_landmarks_px, load_schema

SPACING = (0.5, 0.4)


def case(kind="preop"):
    schema = load_schema(kind)
    points = example_landmarks_px(kind, atfa_valgus_deg=4.0, spacing_mm=0.5, image_size=(700, 560))
    return schema, points, compute_alignment(points, schema, "R", SPACING)


def measurement(schema, points, alignment, flags=()):
    return Measurement(
        image_shape=(700, 560), spacing_mm=SPACING, spacing_source="volume geometry", side="R", side_source="detected",
        kind=schema.kind, kind_source="given", reference_points_px=schema.reference_points(points),
        reference_confidence=np.array([0.9, 0.8]),
        landmarks=Landmarks(schema.kind, schema.version, schema.names, points, np.full(len(schema), 0.7)),
        alignment=alignment, qc_flags=flags,
        evidence={}, models=(ModelInfo("global", "g", "1.0"), ModelInfo(f"local_{schema.kind}", "l", "2.1")),
        timings_ms={"total": 12.0}, device="cpu", precision="float32")


def test_row_has_every_column_in_order_with_numbers_and_text():
    schema, points, alignment = case("preop")
    row = results_row(alignment, radiograph="Knee", landmarks="Knee landmarks", source="landmarks", schema="preop",
                      side_source="detected")
    assert list(row) == [c.name for c in COLUMNS]
    for column in COLUMNS:
        assert isinstance(row[column.name], float if column.unit else str), column.name
    assert row["atfa_fts_deg"] == alignment.atfa_fts_deg and row["label_fts"] == alignment.label_fts
    assert row["mpta_deg"] == alignment.mpta_deg
    assert math.isnan(row["femoral_component_alpha_deg"])  # a post-op measure
    assert (row["status"], row["qc_flags"], row["models"], row["edited_landmarks"]) == ("", "", "", "")
    assert row["software_version"] == __version__


def test_row_of_a_corrected_model_result():
    schema, points, alignment = case("postop")
    m = measurement(schema, points, alignment, flags=(QCFlag("low_mean_confidence", "low"),))
    moved = points.copy()
    moved[[3, 40]] += 0.5
    edited = edited_landmarks(m, schema.names, moved)
    assert edited == (schema.names[3], schema.names[40])
    row = results_row(alignment, radiograph="K", landmarks="L", source="model", schema="postop",
                      side_source="detected", measurement=m, edited=edited)
    assert row["source"] == "model, corrected"
    assert (row["status"], row["qc_flags"], row["models"]) == ("flagged", "low_mean_confidence",
                                                            "g@1.0 (user-supplied);l@2.1 (user-supplied)")
    assert row["edited_landmarks"] == f"{schema.names[3]};{schema.names[40]}"
    assert math.isnan(row["aldfa_deg"]) and row["tibial_component_beta_deg"] == alignment.tibial_component_beta_deg
    unedited = results_row(alignment, radiograph="K", landmarks="L", source="model", schema="postop",
                           side_source="detected", measurement=m, edited=edited_landmarks(m, schema.names, points))
    assert unedited["source"] == "model" and unedited["edited_landmarks"] == ""


def test_edited_landmarks_needs_the_models_landmarks():
    schema, points, alignment = case("preop")
    m = measurement(schema, points, alignment)
    assert edited_landmarks(None, schema.names, points) == ()
    assert edited_landmarks(m, schema.names[::-1], points[::-1] + 5) == ()  # not the model's order: not comparable
    assert edited_landmarks(m, schema.names, points + 0.001) == ()  # RAS <-> px rounding is not an edit


def test_unknown_source_is_refused():
    _, _, alignment = case()
    with pytest.raises(ValueError, match="source must be one of"):
        results_row(alignment, radiograph="", landmarks="", source="ai", schema="preop", side_source="")


def test_csv_has_the_table_header_and_empty_cells_for_nan(tmp_path):
    schema, points, alignment = case("preop")
    rows = [results_row(alignment, radiograph=f"R{i}", landmarks=f"L{i}", source="landmarks", schema="preop",
                        side_source="given") for i in range(2)]
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
    m = measurement(schema, points, alignment)
    moved = points.copy()
    moved[schema.index("TLC06")] += (6.0, 0.0)
    corrected = compute_alignment(moved, schema, "R", SPACING)
    row = results_row(corrected, radiograph="K", landmarks="L", source="model", schema="preop", side_source="detected",
                      measurement=m, edited=edited_landmarks(m, schema.names, moved))
    document = case_document(row, corrected, schema="preop", names=schema.names, points_px=moved, spacing_mm=SPACING,
                             measurement=m)
    path = write_case_json(tmp_path / "case.json", document)
    data = json.loads(path.read_text())
    assert data["format"] == FORMAT and data["intended_use"] == "Research use only. Not for clinical use."
    assert data["result"]["source"] == "model, corrected" and data["result"]["edited_landmarks"] == "TLC06"
    assert data["result"]["femoral_component_alpha_deg"] is None
    assert data["alignment"]["atfa_fts_deg"] == corrected.atfa_fts_deg
    assert data["inference"]["alignment"]["atfa_fts_deg"] == alignment.atfa_fts_deg  # what the model said
    assert Measurement.from_dict(data["inference"]).landmarks.names == schema.names
    np.testing.assert_allclose(data["landmarks"]["points_mm"], moved * [SPACING[1], SPACING[0]])
    manual = case_document(row, corrected, schema="manual", names=("a", "b"), points_px=moved[:2], spacing_mm=None)
    assert manual["inference"] is None and manual["landmarks"]["points_mm"] is None
    with pytest.raises(ValueError, match=r"shape \(2, 2\)"):
        case_document(row, corrected, schema="manual", names=("a", "b"), points_px=moved[:3], spacing_mm=None)
