"""Tests of KneeAlignmentLib.measurement: JSON round trips and refusals, CSV rows, Slicer markups, text."""

from __future__ import annotations

import csv
import io
import json
import math
import pickle
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from KneeAlignmentLib import DISCLAIMER, __version__, markups
from KneeAlignmentLib.errors import MarkupsError, MeasurementError
from KneeAlignmentLib.geometry import compute_alignment
from KneeAlignmentLib.measurement import (
    FORMAT,
    FORMAT_VERSION,
    Landmarks,
    Measurement,
    ModelInfo,
    QCFlag,
    csv_header,
    format_measurement,
    write_markups,
)
from KneeAlignmentLib.schema import example_landmarks_px, load_schema

SLICER_SCHEMA = Path(__file__).parent / "data" / "markups-schema-v1.0.3.json"
SPACING = (0.16, 0.12)  # anisotropic (row_mm, col_mm): a swapped axis changes every angle
MODELS = (ModelInfo("global", "knee-global", "1.2.0", "release"), ModelInfo("local_preop", "knee-preop", "1.1.0",
                                                                          "release"),
          ModelInfo("local_postop", "knee-postop", "1.0.3", "release"))


def sample(schema_kind="preop", knee_side="L", spacing_mm=SPACING, flags=(), **changes) -> Measurement:
    """A measurement of the schema example (left knee: mirrored), without any network."""
    kind, side = schema_kind, knee_side
    schema = load_schema(kind)
    points = example_landmarks_px(kind, atfa_valgus_deg=-6.5, spacing_mm=0.15, image_size=(2000, 1600))
    if side == "L":
        points[:, 0] = 1599 - points[:, 0]
    confidence = np.linspace(0.55, 0.99, len(schema))
    fields = dict(
        image_shape=(2000, 1600), spacing_mm=spacing_mm, spacing_source="PixelSpacing" if spacing_mm else "none",
        side=side, side_source="DICOM ImageLaterality", kind=kind, kind_source="detected",
        reference_points_px=schema.reference_points(points), reference_confidence=[0.97, 0.93],
        landmarks=Landmarks(kind, schema.version, schema.names, points, confidence),
        alignment=compute_alignment(points, schema, side, spacing_mm),
        qc_flags=flags, evidence={"implant_confidence": 0.04, "metal_fraction": 0.0, "mean_confidence": 0.77},
        models=MODELS, timings_ms={"global": 12.5, "local": 80.25, "geometry": 1.5, "total": 94.25},
        device="cpu", precision="float32", case_id="image-0007",
    )
    fields.update(changes)
    return Measurement(**fields)


def test_json_round_trip_is_exact_and_versioned():
    m = sample(flags=(QCFlag("low_landmark_confidence", "2 of 134 landmarks below 0.3: FLC00, FLC01"),))
    text = m.to_json()
    data = json.loads(text)
    assert (data["format"], data["format_version"]) == (FORMAT, FORMAT_VERSION) == ("kneealignment-measurement", 1)
    assert data["intended_use"] == DISCLAIMER == "Research use only. Not for clinical use."
    assert data["software"] == {"name": "kneealignment", "version": __version__}
    assert (data["status"], data["reason"]) == ("flagged", "2 of 134 landmarks below 0.3: FLC00, FLC01")
    assert data["models"][1] == {"role": "local_preop", "name": "knee-preop", "version": "1.1.0",
                                 "model_id": "knee-preop@1.1.0", "provenance": "release"}
    back = Measurement.from_json(text)
    assert back.to_json() == text
    np.testing.assert_array_equal(back.landmarks.points_px, m.landmarks.points_px)
    assert back.alignment.atfa_fts_deg == m.alignment.atfa_fts_deg and back.qc_flags == m.qc_flags
    pickled = pickle.loads(pickle.dumps(m))  # as measuring workers hand results over
    assert pickled.to_json() == text and not pickled.reference_points_px.flags.writeable


def test_json_layout_is_pinned_and_carries_no_identifying_fields():
    data = sample().to_dict()
    assert list(data) == ["format", "format_version", "software", "intended_use", "case_id", "input_name", "status",
                          "reason", "qc_flags", "image", "side", "kind", "reference_points", "landmarks",
                          "alignment", "fts_axis", "evidence", "models", "device", "precision", "timings_ms"]
    assert data["input_name"] is None and data["case_id"] == "image-0007"
    assert data["image"] == {"rows": 2000, "columns": 1600, "spacing_mm": list(SPACING),
                             "spacing_source": "PixelSpacing"}
    assert data["side"] == {"value": "L", "source": "DICOM ImageLaterality"}
    assert data["reference_points"]["names"] == ["knee_centre", "femoral_shaft_centre"]


def test_landmarks_carry_millimetres_exactly_when_the_spacing_is_known():
    m = sample()
    lm = m.to_dict()["landmarks"]
    px = np.array(lm["points_px"])
    np.testing.assert_allclose(lm["points_mm"], px * [SPACING[1], SPACING[0]], rtol=0, atol=1e-12)
    assert lm["names"] == list(load_schema("preop").names) and len(lm["confidence"]) == 134
    unknown = sample(spacing_mm=None).to_dict()
    assert unknown["landmarks"]["points_mm"] is None and unknown["alignment"]["spacing_known"] is False


def test_a_failed_result_round_trips_without_landmarks_or_angles():
    m = sample(landmarks=None, alignment=None, reference_points_px=None, reference_confidence=None, kind=None,
               kind_source="undetermined", side=None, side_source="undetermined",
               flags=(QCFlag("frame_failed", "no knee frame from the reference points"),))
    back = Measurement.from_json(m.to_json())
    assert back.to_dict() == m.to_dict()
    assert (back.status, back.landmarks, back.alignment, back.local_model) == ("flagged", None, None, None)


@pytest.mark.parametrize("edit, match", [
    (lambda d: d.update(format="something-else"), "not a kneealignment-measurement"),
    (lambda d: d.update(format_version=2), "unsupported .* format_version 2"),
    (lambda d: d.pop("side"), "malformed"),
    (lambda d: d["landmarks"].update(points_px=[[1.0, 2.0]]), "malformed"),
    (lambda d: d.update(status="ok"), "contradicts its QC flags"),
])
def test_from_json_refuses_other_documents(edit, match):
    data = sample(flags=(QCFlag("implausible_atfa", "aTFA 41.0° outside"),)).to_dict()
    edit(data)
    with pytest.raises(MeasurementError, match=match):
        Measurement.from_json(json.dumps(data))
    with pytest.raises(MeasurementError, match="not valid JSON"):
        Measurement.from_json("{")


def test_csv_row_matches_the_header_and_reads_back():
    m = sample(flags=(QCFlag("side_uncertain", "close"), QCFlag("low_mean_confidence", "0.41")))
    stream = io.StringIO()
    writer = csv.writer(stream)
    writer.writerow(csv_header())
    writer.writerow(m.to_csv_row())
    header, row = list(csv.reader(io.StringIO(stream.getvalue())))
    values = dict(zip(header, row, strict=True))
    assert float(values["atfa_fts_deg"]) == pytest.approx(m.alignment.atfa_fts_deg, abs=5e-4)
    assert float(values["atfa_fnts_deg"]) == pytest.approx(m.alignment.atfa_fnts_deg, abs=5e-4)
    assert (values["label_fts"], values["status"], values["reason"]) == ("varus", "flagged", "close")
    assert (values["side"], values["kind"], values["qc_flags"]) == ("L", "preop", "side_uncertain;low_mean_confidence")
    assert (values["global_model"], values["local_model"]) == ("knee-global@1.2.0", "knee-preop@1.1.0")
    assert (values["case_id"], values["input_name"], values["total_ms"]) == ("image-0007", "", "94.2")
    empty = dict(zip(csv_header(), sample(alignment=None).to_csv_row(), strict=True))
    assert empty["atfa_fts_deg"] == "" and empty["label_fnts"] == ""


def test_markups_hold_named_landmarks_four_axes_and_the_two_atfa_angles(tmp_path):
    m = sample()
    path = write_markups(m, tmp_path / "out", "image-0007")
    assert path == tmp_path / "out" / "image-0007.mrk.json"
    schema_doc = json.loads(SLICER_SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator(schema_doc).validate(json.loads(path.read_text(encoding="utf-8")))

    nodes = {node.name: node for node in markups.read_markups(path)}
    assert list(nodes) == ["Landmarks", "femoral axis FTS", "tibial axis FTS", "aTFA FTS", "femoral axis FNTS",
                           "tibial axis FNTS", "aTFA FNTS"]
    schema = load_schema("preop")
    assert nodes["Landmarks"].labels == schema.names
    assert nodes["Landmarks"].descriptions == tuple(lm.description for lm in schema.landmarks)
    plane = markups.ImagePlane.identity(SPACING)
    back = markups.read_landmarks(path, schema.names, plane)
    np.testing.assert_allclose(back, m.landmarks.points_px, rtol=0, atol=1e-9)
    np.testing.assert_allclose(plane.to_px(nodes["tibial axis FTS"].positions_lps), m.alignment.tibial_axis_fts_px,
                               atol=1e-9)
    for method, atfa in (("FTS", m.alignment.atfa_fts_deg), ("FNTS", m.alignment.atfa_fnts_deg)):
        angle = nodes[f"aTFA {method}"].measurement("angle").value
        assert angle == pytest.approx(abs(atfa), abs=1e-9)  # the markup shows |aTFA|, in mm: anisotropic spacing respected


def test_markups_follow_a_given_image_plane_and_need_landmarks(tmp_path):
    m = sample(alignment=None, spacing_mm=None)
    ijk_to_ras = [[-0.2, 0, 0, 10.0], [0, -0.25, 0, -5.0], [0, 0, 1, 3.0], [0, 0, 0, 1]]
    plane = markups.ImagePlane.from_ijk_to_ras(ijk_to_ras)
    path = write_markups(m, tmp_path, "case", plane)
    nodes = markups.read_markups(path)
    assert [n.name for n in nodes] == ["Landmarks"]  # no alignment: no axes
    np.testing.assert_allclose(nodes[0].positions_lps, plane.to_lps(m.landmarks.points_px), atol=1e-9)
    with pytest.raises(MarkupsError, match="no landmarks"):
        write_markups(sample(landmarks=None), tmp_path, "none")


def test_text_report_names_angles_side_status_and_models():
    m = sample(flags=(QCFlag("kind_uncertain", "implant landmark confidence 0.48 is close"),))
    text = format_measurement(m)
    fts = round(m.alignment.atfa_fts_deg, 1)
    assert f"aTFA FTS    {fts:5.1f}°  varus" in text
    assert "image-0007: left knee (L) (side: DICOM ImageLaterality); preop (kind: detected)" in text
    assert "status: flagged" in text and "kind_uncertain: implant landmark confidence 0.48" in text
    assert "knee-global@1.2.0, knee-preop@1.1.0" in text and "knee-postop" not in text
    assert "aTFA: not measured" in format_measurement(sample(alignment=None))


def test_invalid_fields_are_refused():
    schema = load_schema("preop")
    with pytest.raises(ValueError, match="134 names"):
        Landmarks("preop", schema.version, schema.names, np.zeros((133, 2)), np.zeros(134))
    with pytest.raises(ValueError, match="reference_points_px"):
        sample(reference_points_px=np.zeros((3, 2)))
    assert math.isclose(sample().timings_ms["total"], 94.25) and sample().status == "ok"
