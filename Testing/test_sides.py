"""The one side rule (``measurement.decide_side``) through every entry point: measure, angles, evaluate.

A given side wins, else the image's laterality tag, else detection; a given side that
contradicts the tag is used and flagged ``side_conflict`` with both sides named. The
files: one phantom right knee whose DICOM laterality tag says L (a wrongly tagged film:
the user who gives --side R is right), its landmarks and a manifest; the models are the
golden test's tiny seeded bundles (their landmarks do not matter here, only the side).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from KneeAlignmentLib.cli import main
from KneeAlignmentLib.imageio import radiograph_from_array
from KneeAlignmentLib.markups import ImagePlane, read_landmarks, write_landmarks
from KneeAlignmentLib.measurement import SIDE_FROM_ANATOMY, SIDE_RULE, decide_side, measure_points
from KneeAlignmentLib.schema import example_landmarks_px, load_schema

MODELS = Path(__file__).resolve().parent / "data" / "golden_measure" / "models"
CONFLICT = "the given side R contradicts the image's side L (DICOM ImageLaterality); R was used"


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """A right-knee phantom folder (manifest side R); ``tagged_l``: the same case with its DICOM tag set to L."""
    from KneeAlignmentLib.phantom import generate_dataset

    folder = tmp_path_factory.mktemp("phantom")
    generate_dataset("preop", 1, seed=3, out_dir=folder, size=(256, 208))
    (row,) = csv.DictReader(open(folder / "manifest.csv", encoding="utf-8"))
    assert row["side"] == "R"
    ds = pydicom.dcmread(folder / row["dicom"])
    ds.ImageLaterality = "L"
    ds.save_as(folder / "tagged_l.dcm")
    return folder, row


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_rule_given_then_tag_then_detection():
    schema = load_schema("preop")
    right = example_landmarks_px("preop")
    tagged_l = radiograph_from_array(np.zeros((8, 8), np.float32), side="L", side_source="ImageLaterality")
    untagged = radiograph_from_array(np.zeros((8, 8), np.float32))

    given = decide_side("R", tagged_l, points_px=right, schema=schema)
    assert (given.side, given.source) == ("R", "given")
    assert [(f.code, f.message) for f in given.flags] == [
        ("side_conflict", "the given side R contradicts the image's side L (DICOM ImageLaterality); R was used")]
    assert decide_side("L", tagged_l).flags == ()  # agreeing: nothing to say
    assert decide_side("R", tagged_l, given_source="manifest").flags[0].message.startswith("the manifest side R")

    tag = decide_side(None, tagged_l, points_px=right, schema=schema)  # the tag beats the anatomy
    assert (tag.side, tag.source, tag.flags) == ("L", "DICOM ImageLaterality", ())
    assert decide_side(None, untagged, points_px=right, schema=schema) == decide_side(None, points_px=right,
                                                                                          schema=schema)
    detected = decide_side(None, untagged, points_px=right, schema=schema)
    assert (detected.side, detected.source) == ("R", SIDE_FROM_ANATOMY)
    assert (decide_side(None, untagged).side, decide_side(None).source) == (None, "detected")  # the pipeline's job
    with pytest.raises(ValueError, match="side must be"):
        decide_side("right")

    measured = measure_points(right, schema, side="R", radiograph=tagged_l)
    assert measured.alignment.side == "R" and measured.side == given


def test_help_of_every_side_option_states_the_rule(capsys):
    for command in ("angles", "measure"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert " ".join(SIDE_RULE.split()) in " ".join(capsys.readouterr().out.split())


def test_measure_given_side_wins_over_the_tag_and_is_flagged(phantom, tmp_path, capsys):
    folder, _row = phantom
    code, out, _ = run(capsys, "measure", folder / "tagged_l.dcm", "--side", "R", "--models-dir", MODELS,
                       "--device", "cpu", "--workers", "0", "--json")
    (result,) = json.loads(out)
    assert result["side"] == {"value": "R", "source": "given"}
    assert {"code": "side_conflict", "message": CONFLICT} in result["qc_flags"]

    code, out, _ = run(capsys, "measure", folder / "tagged_l.dcm", "--models-dir", MODELS, "--device", "cpu",
                       "--workers", "0", "--json")
    (result,) = json.loads(out)
    assert result["side"] == {"value": "L", "source": "DICOM ImageLaterality"}  # no given side: the tag
    assert "side_conflict" not in [f["code"] for f in result["qc_flags"]]


def test_angles_given_side_wins_over_the_tag_and_is_flagged(phantom, tmp_path, capsys):
    folder, row = phantom
    markups = folder / row["markups"]
    code, out, err = run(capsys, "angles", markups, "--image", folder / "tagged_l.dcm", "--overlay",
                         tmp_path / "o.png", "--side", "R", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert (result["side"], result["side_source"]) == ("R", "given")
    assert result["qc_flags"] == [{"code": "side_conflict", "message": CONFLICT}]
    code, out, _ = run(capsys, "angles", markups, "--image", folder / "tagged_l.dcm", "--overlay",
                       tmp_path / "o.png", "--side", "R")
    assert code == 0 and f"flagged side_conflict: {CONFLICT}" in out

    # no given side: the tag (here the phantom's own, R); no tag either: the anatomy
    code, out, _ = run(capsys, "angles", markups, "--image", folder / row["dicom"], "--overlay",
                       tmp_path / "o.png", "--json")
    result = json.loads(out)
    assert (result["side"], result["side_source"]) == ("R", "DICOM ImageLaterality") and "qc_flags" not in result
    code, out, _ = run(capsys, "angles", markups, "--json")
    result = json.loads(out)
    assert (result["side"], result["side_source"]) == ("R", SIDE_FROM_ANATOMY)

    # the tag L contradicts the landmarks' own anatomy (the fibula): no angles, a reason
    code, _, err = run(capsys, "angles", markups, "--image", folder / "tagged_l.dcm", "--overlay", tmp_path / "o.png")
    assert code == 2 and "side 'L' contradicts the landmarks" in err


def test_evaluate_manifest_side_wins_over_the_tag_and_is_flagged(phantom, tmp_path, capsys):
    from KneeAlignmentLib.datasets import find_cases

    folder, row = phantom
    data = tmp_path / "data"
    data.mkdir()
    for name in (row["markups"], "tagged_l.dcm"):
        (data / name).write_bytes((folder / name).read_bytes())
    (data / "manifest.csv").write_text(f"case_id,image,markups,kind,side\nknee,tagged_l.dcm,{row['markups']},preop,R\n",
                                       encoding="utf-8")
    (case,) = find_cases(data)
    loaded = case.load()
    assert (loaded.side, loaded.side_source) == ("R", "manifest")
    assert [(f.code, f.message) for f in loaded.side_flags] == [
        ("side_conflict", CONFLICT.replace("the given side", "the manifest side"))]

    code, _, err = run(capsys, "evaluate", "--data", data, "--out", tmp_path / "report", "--models-dir", MODELS,
                       "--device", "cpu", "--quiet")
    assert code == 0, err
    (per_case,) = csv.DictReader(open(tmp_path / "report" / "per_case.csv", encoding="utf-8"))
    assert per_case["side_true"] == "R" and per_case["status"] == "flagged"
    assert "side_conflict" in per_case["qc_flags"].split(";")

    # no manifest side: the tag; no tag: the anatomy
    (data / "manifest.csv").write_text(f"case_id,image,markups\nknee,tagged_l.dcm,{row['markups']}\n",
                                       encoding="utf-8")
    tagged = find_cases(data)[0].load()
    assert (tagged.side, tagged.side_source, tagged.side_flags) == ("L", "DICOM ImageLaterality", ())
    (data / "knee.png").write_bytes((folder / row["png"]).read_bytes())
    names = load_schema("preop").names  # a PNG has no spacing: its annotation is in pixels
    spacing = (float(row["spacing_row_mm"]), float(row["spacing_col_mm"]))
    write_landmarks(data / "knee.mrk.json", names, read_landmarks(data / row["markups"], names,
                                                                  ImagePlane.identity(spacing)))
    (data / "manifest.csv").write_text("case_id,image,markups\nknee,knee.png,knee.mrk.json\n", encoding="utf-8")
    detected = find_cases(data)[0].load()
    assert (detected.side, detected.side_source, detected.side_flags) == ("R", SIDE_FROM_ANATOMY, ())
