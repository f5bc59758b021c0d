"""The kneealign command line: subcommands, output formats, errors and exit codes."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dicom_factory import FAKE_IDENTIFIERS, write_dx
from KneeAlignmentLib import DISCLAIMER, __version__
from KneeAlignmentLib.cli import EXAMPLES, main
from KneeAlignmentLib.markups import ImagePlane, write_landmarks
from KneeAlignmentLib.schema import example_landmarks_px, load_schema

PREOP_EXAMPLE = EXAMPLES / "example_preop.mrk.json"
POSTOP_EXAMPLE = EXAMPLES / "example_postop.mrk.json"


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"kneealign {__version__}"
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = capsys.readouterr().out
    for command in ("demo", "angles", "info", "schema"):
        assert command in help_text
    assert DISCLAIMER in " ".join(help_text.split())  # argparse wraps the description


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "kneealign"
    result = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and __version__ in result.stdout


def test_angles_of_the_annotated_examples(capsys):
    # the bundled annotated examples are posed with 6 deg (pre-op) and 4 deg (post-op) valgus
    for path, expected, extra in ((PREOP_EXAMPLE, "6.0°  valgus", "aLDFA"),
                                  (POSTOP_EXAMPLE, "4.0°  valgus", "Femoral component alpha")):
        code, out, _ = run(capsys, "angles", path)
        assert code == 0
        assert expected in out and extra in out and DISCLAIMER in out


def test_angles_json_auto_schema_and_side(capsys):
    code, out, _ = run(capsys, "angles", POSTOP_EXAMPLE, "--json")
    assert code == 0
    result = json.loads(out)
    assert result["schema"] == "postop" and result["side"] == "R"
    assert result["side_source"].startswith("anatomy")
    assert result["atfa_fts_deg"] == pytest.approx(4.0, abs=1e-9)
    assert result["label_fnts"] == "valgus"
    assert result["software"] == f"kneealignment {__version__}"


def test_angles_given_side_that_contradicts_the_anatomy_is_an_error(capsys):
    code, _, err = run(capsys, "angles", PREOP_EXAMPLE, "--side", "L")
    assert code == 2 and "kneealign: error:" in err and "fibula" in err


def test_angles_spacing_for_pixel_coordinates(tmp_path, capsys):
    # landmarks saved in pixel units (an image without spacing), stretched 2x in x
    schema = load_schema("preop")
    points = example_landmarks_px("preop", atfa_valgus_deg=10.0, spacing_mm=1.0, image_size=(300, 240))
    stretched = points * [2.0, 1.0]
    path = write_landmarks(tmp_path / "pixels.mrk.json", schema.names, stretched, ImagePlane.identity())
    _, out, _ = run(capsys, "angles", path, "--json")
    naive = json.loads(out)["atfa_fts_deg"]
    _, out, _ = run(capsys, "angles", path, "--json", "--spacing", "1.0", "0.5")
    corrected = json.loads(out)["atfa_fts_deg"]
    assert corrected == pytest.approx(10.0, abs=1e-6)
    assert naive == pytest.approx(np.degrees(np.arctan(2 * np.tan(np.radians(10.0)))), abs=1e-6)


def test_angles_missing_landmark_is_named(tmp_path, capsys):
    schema = load_schema("preop")
    points = example_landmarks_px("preop")
    path = write_landmarks(tmp_path / "partial.mrk.json", schema.names[1:], points[1:])
    code, _, err = run(capsys, "angles", path)
    assert code == 2 and "FLC00" in err and "partial.mrk.json" in err


def test_angles_bad_file(tmp_path, capsys):
    bad = tmp_path / "bad.mrk.json"
    bad.write_text("{ not json")
    code, _, err = run(capsys, "angles", bad)
    assert code == 2 and err.startswith("kneealign: error: bad.mrk.json")


def test_info_reports_spacing_and_side_without_identifiers(tmp_path, capsys):
    stored = (np.arange(64 * 48, dtype=np.uint16).reshape(64, 48) * 7) % 4096
    dx = write_dx(tmp_path / "knee.dcm", stored, photometric="MONOCHROME1", bits_stored=12,
                  imager_spacing_mm=(0.15, 0.15), magnification=1.2, image_laterality="L")
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\x00garbage" * 10)
    code, out, _ = run(capsys, "info", dx, junk, "--json")
    assert code == 1  # one input failed
    good, bad = json.loads(out)
    assert good["side"] == "L" and good["side_source"] == "ImageLaterality"
    assert good["spacing_mm"] == pytest.approx([0.125, 0.125])
    assert "Magnification" in good["spacing_source"]
    assert (good["rows"], good["columns"], good["photometric"]) == (64, 48, "MONOCHROME1")
    assert "error" in bad
    for value in FAKE_IDENTIFIERS.values():
        assert value not in out
    code, out, _ = run(capsys, "info", dx)
    assert code == 0 and "spacing_mm" in out


def test_schema_listing_json_and_figure(tmp_path, capsys):
    code, out, _ = run(capsys, "schema", "postop")
    assert code == 0 and out.startswith("postop schema v1.0: 181 landmarks")
    assert len(out.strip().splitlines()) == 182
    _, out, _ = run(capsys, "schema", "preop", "--json")
    rows = json.loads(out)
    assert len(rows) == 134 and rows[0]["name"] == "FLC00" and rows[0]["mirror"] == "FMC00"
    figure = tmp_path / "schema.png"
    run(capsys, "schema", "preop", "--figure", figure)
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 50_000


def test_angles_overlay_on_the_image_uses_its_spacing_and_laterality(tmp_path, capsys):
    from KneeAlignmentLib.phantom import generate_dataset

    manifest = generate_dataset("preop", 1, seed=3, out_dir=tmp_path, size=(400, 320))
    row = manifest.read_text().splitlines()[1].split(",")
    header = manifest.read_text().splitlines()[0].split(",")
    truth = dict(zip(header, row))
    overlay = tmp_path / "overlay.png"
    code, out, _ = run(capsys, "angles", tmp_path / truth["markups"], "--image", tmp_path / truth["dicom"],
                       "--overlay", overlay, "--json")
    result = json.loads(out)
    assert code == 0 and result["side"] == truth["side"] and result["side_source"] == "DICOM ImageLaterality"
    assert result["atfa_fts_deg"] == pytest.approx(float(truth["atfa_fts_deg"]), abs=1e-6)
    assert overlay.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, err = run(capsys, "angles", tmp_path / truth["markups"], "--overlay", overlay)
    assert code == 2 and "go together" in err


@pytest.mark.parametrize("given, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_kneealign_lets_idle_openmp_threads_sleep_unless_told_otherwise(given, expected):
    """Set before torch loads (a subprocess: this one has torch already); the user's setting wins."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | ({"OMP_WAIT_POLICY": given} if given else {})
    code = ("import sys, os; from KneeAlignmentLib import cli; cli.main(['schema', 'preop', '--json']) ; "
            "print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules, file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stderr.split()[-2:] == [expected, "False"]
