"""Tests of KneeAlignmentLib.case_record: what a Slicer case records, where its landmarks came from, the SR policy."""

from __future__ import annotations

import numpy as np
import pytest

from KneeAlignmentLib.case_record import (
    ATTRIBUTES,
    SOURCES,
    CaseRecord,
    dicom_sr_problem,
    edited_landmarks,
    is_case,
    sr_measurement,
)
from KneeAlignmentLib.case_view import landmark_node
from KneeAlignmentLib.errors import MarkupsError
from KneeAlignmentLib.geometry import compute_alignment
from KneeAlignmentLib.markups import ImagePlane
from KneeAlignmentLib.measurement import Landmarks, Measurement, ModelInfo
from KneeAlignmentLib.schema import example_landmarks_px, load_schema

SPACING = (0.5, 0.4)
PLANE = ImagePlane.from_ijk_to_ras([[-0.4, 0, 0, 20.0], [0, -0.5, 0, -35.0], [0, 0, 1, 0], [0, 0, 0, 1]])


def case(kind="preop"):
    """(schema, (K, 2) px, their alignment) of the schema's example knee."""
    schema = load_schema(kind)
    points = example_landmarks_px(kind, atfa_valgus_deg=4.0, spacing_mm=0.5, image_size=(700, 560))
    return schema, points, compute_alignment(points, schema, "R", SPACING)


def measurement(schema, points, alignment, flags=()):
    """A model's measurement that placed ``points``."""
    return Measurement(
        image_shape=(700, 560), spacing_mm=SPACING, spacing_source="volume geometry", side="R", side_source="detected",
        kind=schema.kind, kind_source="given", reference_points_px=schema.reference_points(points),
        reference_confidence=np.array([0.9, 0.8]),
        landmarks=Landmarks(schema.kind, schema.version, schema.names, points, np.full(len(schema), 0.7)),
        alignment=alignment, qc_flags=flags,
        evidence={}, models=(ModelInfo("global", "g", "1.0"), ModelInfo(f"local_{schema.kind}", "l", "2.1")),
        timings_ms={"total": 12.0}, device="cpu", precision="float32")


def model_record(schema, points, alignment, flags=()):
    """The record of a case the model measured."""
    return CaseRecord(schema.kind, "R", "detected", "model",
                      measurement(schema, points, alignment, flags).to_json(indent=None))


def test_record_round_trips_through_node_attributes():
    schema, points, alignment = case("postop")
    record = model_record(schema, points, alignment)
    attributes = record.to_attributes()
    assert tuple(attributes) == ATTRIBUTES == ("Kind", "Side", "SideSource", "Source", "Measurement")  # saved scenes
    assert "\n" not in attributes["Measurement"]
    assert is_case(attributes.get) and CaseRecord.from_attributes(attributes.get) == record
    assert record.measurement().landmarks.names == schema.names
    manual = CaseRecord("manual", "L", "given", "manual")
    assert manual.to_attributes()["Measurement"] == "" and manual.measurement() is None
    assert CaseRecord.from_attributes({**manual.to_attributes(), "Measurement": None}.get) == manual


def test_a_point_list_without_a_record_is_no_case():
    assert not is_case({}.get) and not is_case({"Kind": ""}.get)
    with pytest.raises(ValueError, match="not a Knee Alignment case"):
        CaseRecord.from_attributes({"Side": "R"}.get)


@pytest.mark.parametrize(("fields", "message"), [
    (("lateral", "R", "given", "landmarks"), "kind must be one of"),
    (("preop", "right", "given", "landmarks"), "side must be 'L' or 'R', got 'right'"),
    (("preop", "R", "given", "ai"), "source must be 'model', 'landmarks' or 'manual', got 'ai'"),
    (("preop", "R", "given", "model, corrected"), "source must be"),  # reported, never recorded
    (("preop", "R", "given", "model"), "if and only if its source is the model"),
    (("preop", "R", "given", "landmarks", "{}"), "if and only if its source is the model"),
])
def test_a_record_that_does_not_fit_is_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        CaseRecord(*fields)


def test_source_is_reported_corrected_when_landmarks_moved():
    schema, points, alignment = case("postop")
    record = model_record(schema, points, alignment)
    moved = points.copy()
    moved[[3, 40]] += 0.5
    edited = edited_landmarks(record.measurement(), schema.names, moved)
    assert edited == (schema.names[3], schema.names[40])
    assert record.reported_source(edited) == "model, corrected" and record.reported_source(()) == "model"
    assert CaseRecord("preop", "R", "given", "landmarks").reported_source(edited) == "landmarks"
    assert set(SOURCES) == {"model", "model, corrected", "landmarks", "manual"}


def test_edited_landmarks_needs_the_models_landmarks():
    schema, points, alignment = case("preop")
    m = measurement(schema, points, alignment)
    assert edited_landmarks(None, schema.names, points) == ()
    assert edited_landmarks(m, schema.names[::-1], points[::-1] + 5) == ()  # not the model's order: not comparable
    assert edited_landmarks(m, schema.names, points + 0.001) == ()  # RAS <-> px rounding is not an edit


def test_only_an_unedited_model_result_from_one_dicom_image_is_an_sr():
    schema, points, alignment = case("preop")
    record = model_record(schema, points, alignment)
    assert dicom_sr_problem(record, 1) == ""
    assert "needs a radiograph loaded from the DICOM database" in dicom_sr_problem(record, 0)
    assert "needs a radiograph loaded from the DICOM database" in dicom_sr_problem(record, 2)
    assert "this case has none" in dicom_sr_problem(CaseRecord("preop", "R", "given", "landmarks"), 1)
    assert "this case has none" in dicom_sr_problem(CaseRecord("manual", "R", "given", "manual"), 1)
    assert dicom_sr_problem(record, 1, ("FLC00", "FLC01")).startswith("landmarks FLC00, FLC01 were corrected")


def test_sr_carries_the_models_measurement_only_while_its_landmarks_are_unmoved():
    schema, points, alignment = case("preop")
    record = model_record(schema, points, alignment)
    node = landmark_node("Knee landmarks", schema, points, PLANE)
    carried = sr_measurement(record, 1, node, PLANE)
    assert carried.to_json() == record.measurement().to_json()
    with pytest.raises(ValueError, match="loaded from the DICOM database"):
        sr_measurement(record, 0, node, PLANE)
    with pytest.raises(ValueError, match="this case has none"):
        sr_measurement(CaseRecord("preop", "R", "given", "landmarks"), 1, node, PLANE)
    moved = points.copy()
    moved[schema.index("TLC06")] += (3.0, 0.0)
    with pytest.raises(ValueError, match="landmarks TLC06 were corrected; a DICOM SR must not present"):
        sr_measurement(record, 1, landmark_node("Knee landmarks", schema, moved, PLANE), PLANE)
    with pytest.raises(MarkupsError, match="unknown labels .CFL00."):  # no longer the model's landmark set
        sr_measurement(record, 1, landmark_node("Knee landmarks", load_schema("postop"), case("postop")[1], PLANE),
                       PLANE)
