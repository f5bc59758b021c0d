"""What an attack on the command line found (issue 16, defect 5), and the whole bad-input corpus run
through ``kneealign`` as a user runs it: a one-line reason per input, never a traceback, a library
path or a library's warning on the terminal, nothing half-written, no identifiers.

The corpus is made here; the single cases that were already clean are tested one by one in
test_robustness.py (whose builders this file reuses), test_bundle_format.py (path traversal, pickles) and
test_batch.py (output folders).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicom_factory import FAKE_IDENTIFIERS, write_frames
from KneeAlignmentLib import cli
from KneeAlignmentLib.batch import SUMMARY_FILE, BatchOptions, discover_inputs, read_summary, run_batch
from KneeAlignmentLib.errors import ImageReadError, MarkupsError
from KneeAlignmentLib.imageio import read_radiograph
from KneeAlignmentLib.markups import MAX_CONTROL_POINTS, MAX_MARKUPS_BYTES, read_markups
from KneeAlignmentLib.bundle.modelset import ModelSet
from test_robustness import damaged_files, good_dicom, good_nrrd, png_chunk

KNEEALIGN = [sys.executable, "-m", "KneeAlignmentLib.cli"]
MARKUPS_HEAD = '{"@schema": "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/' \
               'Resources/Schema/markups-schema-v1.0.3.json#", "markups": [{"type": "Fiducial", "controlPoints": ['


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def too_many_rows_dicom(path: Path) -> Path:
    """The header says 50 rows, the pixel data holds 100 (pydicom reads it as 2 frames, with a warning)."""
    good_dicom(path, shape=(100, 80))
    ds = pydicom.dcmread(path)
    ds.Rows = 50
    ds.save_as(path)
    return path


def symlink_loops(folder: Path) -> None:
    (folder / "self.dcm").symlink_to("self.dcm")  # a link to itself
    (folder / "ping.dcm").symlink_to("pong.dcm")
    (folder / "pong.dcm").symlink_to("ping.dcm")
    (folder / "nowhere.dcm").symlink_to("missing.dcm")
    (folder / "again").symlink_to(".")  # a folder containing itself


def corpus(folder: Path) -> dict[str, str]:
    """Every bad input at once; name -> a phrase its summary reason must contain."""
    folder.mkdir(parents=True)
    expected = {name: phrase for name, (_, phrase) in damaged_files(folder).items() if name != "directory.dcm"}
    expected["source.dcm"] = expected["p.png"] = ""  # damaged_files' good sources: measured
    frames = write_frames(folder / "frames.dcm", np.zeros((3, 16, 16), np.uint16))
    expected[frames.name] = "3 frames"
    bomb = folder / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", bytes.fromhex("000186a0000186a00800000000"))
                     + png_chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + png_chunk(b"IEND", b""))
    expected[bomb.name] = "above the limit"
    nan = np.ones((12, 10), np.float32)
    nan[3, 4] = np.nan
    expected[good_nrrd(folder / "nan.nrrd", nan).name] = "NaN"
    expected[too_many_rows_dicom(folder / "rows.dcm").name] = "header does not describe the pixel data"
    symlink_loops(folder)
    expected |= {"self.dcm": "loops", "ping.dcm": "loops", "pong.dcm": "loops", "nowhere.dcm": "leads to nothing"}
    return expected


# --- single defects -------------------------------------------------------------------------------------------

def test_symlink_loops_in_an_input_folder_become_error_rows_not_a_traceback(tiny_models_dir, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    good_dicom(folder / "good.dcm")
    symlink_loops(folder)
    inputs = discover_inputs([folder])
    assert sorted(item.key for item in inputs) == ["good.dcm", "nowhere.dcm", "ping.dcm", "pong.dcm", "self.dcm"]
    summary = run_batch(inputs, ModelSet.load(tiny_models_dir, device="cpu"), tmp_path / "out",
                        BatchOptions(workers=0, progress=False))
    rows = {item.key: dict(zip(("status", "reason"), row[2:4])) for item, row in zip(inputs, summary.rows)}
    assert rows["good.dcm"]["status"] == "flagged"
    for name in ("self.dcm", "ping.dcm", "pong.dcm", "nowhere.dcm"):
        assert rows[name]["status"] == "error" and "symbolic link" in rows[name]["reason"], rows[name]
    with pytest.raises(ImageReadError, match="symbolic link that loops"):
        read_radiograph(folder / "self.dcm")


def test_a_deeply_nested_markups_file_is_a_markups_error(tmp_path, capsys):
    path = tmp_path / "deep.mrk.json"
    path.write_text(MARKUPS_HEAD[:-1] + "[" * 100_000 + "]" * 100_000 + "]}]}")
    with pytest.raises(MarkupsError, match="nested too deeply"):
        read_markups(path)
    assert cli.main(["angles", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "nested too deeply" in err


def test_huge_markups_files_are_refused_by_size_and_point_count_before_parsing(tmp_path):
    point = '{"label": "", "position": [0, 0, 0]},'
    huge = tmp_path / "huge.mrk.json"  # a million points: 38 MB
    huge.write_text(MARKUPS_HEAD + point * 1_000_000 + point[:-1] + "]}]}")
    assert huge.stat().st_size > MAX_MARKUPS_BYTES
    many = tmp_path / "many.mrk.json"  # small enough to read, too many points to parse
    many.write_text(MARKUPS_HEAD + point * MAX_CONTROL_POINTS + point[:-1] + "]}]}")
    for path, phrase in ((huge, "larger than"), (many, "control points, more than")):
        tracemalloc.start()
        start = time.perf_counter()
        try:
            with pytest.raises(MarkupsError, match=phrase):
                read_markups(path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert time.perf_counter() - start < 5.0, path.name
        assert peak < 3 * MAX_MARKUPS_BYTES, f"{path.name}: {peak} bytes"


def test_pixel_data_that_does_not_fit_the_header_is_explained(tmp_path):
    with pytest.raises(ImageReadError) as error:
        read_radiograph(too_many_rows_dicom(tmp_path / "rows.dcm"))
    message = str(error.value)
    assert "Rows 50 x Columns 80" in message and "header does not describe the pixel data" in message
    assert "(2, 50, 80)" not in message


def test_pydicom_warnings_do_not_escape_the_reader(tmp_path, recwarn):
    for path in (too_many_rows_dicom(tmp_path / "rows.dcm"),):
        with pytest.raises(ImageReadError):
            read_radiograph(path)
    assert not [w for w in recwarn if "pydicom" in w.filename]


# --- the whole corpus through the command line ---------------------------------------------------------------

def test_the_bad_input_corpus_through_kneealign_measure_and_info(tiny_models_dir, tmp_path):
    folder = tmp_path / "export"
    expected = corpus(folder)
    good_dicom(folder / "knee.dcm")  # with FAKE_IDENTIFIERS, like every file of dicom_factory
    expected["knee.dcm"] = ""
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*KNEEALIGN, "measure", str(folder), "--out", str(out), "--models-dir",
                           str(tiny_models_dir), "--device", "cpu", "--workers", "1", "--quiet"],
                          capture_output=True, text=True, env=env, timeout=300)
    terminal = done.stdout + done.stderr
    assert done.returncode == 1, terminal  # some inputs failed
    for leak in ("Traceback", "site-packages", "Warning", *FAKE_IDENTIFIERS.values()):
        assert leak not in terminal, leak

    rows = read_summary(out / SUMMARY_FILE)
    keys = [item.key for item in discover_inputs([folder])]
    assert sorted(keys) == sorted(expected) and len(rows) == len(keys)
    for key, row in zip(keys, rows):
        if expected[key]:
            assert row["status"] == "error" and expected[key] in row["reason"], (key, row["reason"])
            assert not list(out.glob(f"{row['case_id']}*"))  # nothing half-written
        else:
            assert row["status"] == "flagged", (key, row["reason"])  # tiny random models: never ok
    written = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    assert not any(value.encode() in written for value in FAKE_IDENTIFIERS.values())

    files = [str(folder / name) for name in ("rows.dcm", "self.dcm", "bomb.png", "empty.dcm", "knee.dcm")]
    info = subprocess.run([*KNEEALIGN, "info", *files], capture_output=True, text=True, env=env, timeout=120)
    assert info.returncode == 1
    for leak in ("Traceback", "site-packages", "Warning", *FAKE_IDENTIFIERS.values()):
        assert leak not in info.stdout + info.stderr, leak

    deep = tmp_path / "deep.mrk.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    angles = subprocess.run([*KNEEALIGN, "angles", str(deep)], capture_output=True, text=True, env=env, timeout=120)
    assert angles.returncode == 2 and "Traceback" not in angles.stderr
    assert len(angles.stderr.strip().splitlines()) == 1
