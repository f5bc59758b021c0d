"""Tests of KneeAlignmentLib.batch and `kneealign measure`: input discovery, per-case outputs and the
summary, resume after interruption, containment of failures, flat memory, and sharding under torchrun.

The models are tiny random-init bundles (``model_factory``): every result comes back flagged, which is
all these tests need; the measurement itself is tested in test_pipeline.py.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from dicom_factory import FAKE_IDENTIFIERS, write_dx
from golden_outputs import normalise_json
from KneeAlignmentLib import batch, cli, markups
from KneeAlignmentLib.batch import MARKER_DIR, SUMMARY_FILE, BatchOptions, discover_inputs, read_summary, run_batch
from KneeAlignmentLib.errors import BundleError
from KneeAlignmentLib.measurement import Measurement, csv_header
from KneeAlignmentLib.bundle.modelset import ModelSet
from KneeAlignmentLib.schema import load_schema
from KneeAlignmentLib.sharding import Shard


def case_id(key: str) -> str:
    return "case-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def dicom(path: Path, seed: int, shape=(96, 80), **tags) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = (np.random.default_rng(seed).random(shape) * 4095).astype(np.uint16)
    return write_dx(path, stored, bits_stored=12, spacing_mm=(0.5, 0.5), **tags)


def png(path: Path, seed: int, shape=(90, 70)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray((np.random.default_rng(seed).random(shape) * 255).astype(np.uint8)),
                    str(path))
    return path


def cohort(root: Path) -> Path:
    """A small export: DICOMs named after patients (one without preamble), a PNG, non-images, a damaged file."""
    dicom(root / "Testperson_Erika" / "knee_left.dcm", 1, image_laterality="L")
    dicom(root / "Testperson_Erika" / "IM0002", 2, image_laterality="R")  # no extension, as PACS exports have
    dicom(root / "Doe_John" / "bare", 3, preamble=False)
    png(root / "Doe_John" / "photo.png", 4)
    (root / "Doe_John" / "notes.txt").write_text("seen in clinic")
    (root / "Doe_John" / "broken.dcm").write_bytes(b"\0" * 40)
    return root


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def models(tiny_models_dir) -> ModelSet:
    return ModelSet.load(tiny_models_dir, device="cpu")


def options(**changes) -> BatchOptions:
    return BatchOptions(**{"workers": 0, "progress": False, "batch_size": 2, **changes})


def comparable(rows) -> list[list[str]]:
    """Summary rows without the timing column, which differs between runs."""
    timing = csv_header().index("total_ms")
    return [[value for i, value in enumerate(row) if i != timing] for row in rows]


def result_without_timings(path: Path) -> dict:
    data = json.loads(path.read_text())
    del data["timings_ms"]
    return data


# --- discovery -----------------------------------------------------------------------------

def test_discovery_walks_folders_skips_non_images_with_reasons_and_ids_are_path_hashes(tmp_path):
    root = cohort(tmp_path / "export")
    (root / "DICOMDIR").write_bytes(b"\0" * 200)
    (root / ".DS_Store").write_bytes(b"\0\1\2")
    dicom(root / ".cache" / "hidden.dcm", 5)  # hidden folders are not searched
    out = root / "results"
    dicom(out / "old.dcm", 6)  # the output folder is never searched
    extra = tmp_path / "single" / "notes.txt"
    extra.parent.mkdir()
    extra.write_text("named on the command line: measured (and failing), not skipped")

    inputs = discover_inputs([root, extra, root / "Doe_John" / "photo.png"], exclude=[out])
    keys = [i.key for i in inputs]
    assert keys == [".DS_Store", "DICOMDIR", "Doe_John/bare", "Doe_John/broken.dcm", "Doe_John/notes.txt",
                    "Doe_John/photo.png", "Testperson_Erika/IM0002", "Testperson_Erika/knee_left.dcm", "notes.txt"]
    reasons = {i.key: i.skip_reason for i in inputs}
    assert reasons["DICOMDIR"].startswith("DICOMDIR") and reasons[".DS_Store"] == "hidden file"
    assert reasons["Doe_John/notes.txt"] == "not an image file (unrecognised content)"
    assert reasons["notes.txt"] is None  # named explicitly
    assert all(reasons[k] is None for k in ("Doe_John/bare", "Doe_John/broken.dcm", "Doe_John/photo.png",
                                            "Testperson_Erika/IM0002", "Testperson_Erika/knee_left.dcm"))
    assert [i.case_id for i in inputs] == [case_id(k) for k in keys]
    assert not any("Erika" in i.case_id or "Doe" in i.case_id for i in inputs)

    # Ids do not move when files are added, and equal names under two roots get distinct keys.
    png(root / "Aaron" / "first.png", 7)
    again = {i.key: i.case_id for i in discover_inputs([root], exclude=[out])}
    assert all(again[i.key] == i.case_id for i in inputs if i.key in again)
    twins = discover_inputs([dicom(tmp_path / "a" / "x.dcm", 8), dicom(tmp_path / "b" / "x.dcm", 9)])
    assert [t.key for t in twins] == ["x.dcm", "x.dcm#2"] and twins[0].case_id != twins[1].case_id

    with pytest.raises(ValueError, match="output folder"):
        discover_inputs([out], exclude=[out])


def test_non_image_dicom_objects_in_folders_are_skipped(tmp_path):
    report = dicom(tmp_path / "in" / "sr.dcm", 1)
    import pydicom

    ds = pydicom.dcmread(report)
    ds.Modality = "SR"
    ds.save_as(report)
    [item] = discover_inputs([tmp_path / "in"])
    assert item.skip_reason == "DICOM SR object, not an image"


# --- outputs, summary, names ----------------------------------------------------------------------

def test_measure_writes_every_output_and_a_summary_without_names_or_identifiers(tiny_models_dir, tmp_path, capsys):
    root = cohort(tmp_path / "export")
    out = tmp_path / "out"
    argv = ["measure", str(root), "--models-dir", str(tiny_models_dir), "--device", "cpu", "--out", str(out),
            "--workers", "1", "--batch-size", "2"]
    assert cli.main(argv) == 1  # broken.dcm failed
    printed = capsys.readouterr()
    assert "6 inputs: 0 ok, 4 flagged, 1 errors, 1 skipped" in printed.out
    assert "image/s" in printed.err  # the progress bar with its rate

    rows = read_summary(out / SUMMARY_FILE)
    keys = ["Doe_John/bare", "Doe_John/broken.dcm", "Doe_John/notes.txt", "Doe_John/photo.png",
            "Testperson_Erika/IM0002", "Testperson_Erika/knee_left.dcm"]
    assert [r["case_id"] for r in rows] == [case_id(k) for k in keys]
    assert [r["status"] for r in rows] == ["flagged", "error", "skipped", "flagged", "flagged", "flagged"]
    assert "not a recognised image format" in rows[1]["reason"] and rows[2]["reason"].startswith("not an image")
    assert all(r["reason"] for r in rows) and not any(r["input_name"] for r in rows)
    assert rows[5]["side"] == "L" and rows[5]["side_source"] == "DICOM ImageLaterality"
    assert {r["global_model"] for r in rows if r["status"] == "flagged"} == {"tiny-global@0.0.1"}
    assert all(r["qc_flags"] and float(r["total_ms"]) > 0 for r in rows if r["status"] == "flagged")

    measured = [r["case_id"] for r in rows if r["status"] == "flagged"]
    with_landmarks = [c for c in measured if json.loads((out / f"{c}.json").read_text())["landmarks"] is not None]
    expected = {f"{c}{s}" for c in measured for s in (".json", ".png")} | {f"{c}.mrk.json" for c in with_landmarks}
    expected |= {SUMMARY_FILE, MARKER_DIR}
    assert {p.name for p in out.iterdir()} == expected  # no SR/SC without --dicom-sr, nothing for errors
    assert sorted(p.stem for p in (out / MARKER_DIR).iterdir()) == sorted(measured)
    result = Measurement.from_json((out / f"{with_landmarks[0]}.json").read_text())
    assert result.case_id == with_landmarks[0] and result.input_name is None
    assert markups.read_markups(out / f"{result.case_id}.mrk.json")[0].labels == load_schema(result.kind).names
    assert (out / f"{result.case_id}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    written = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    for secret in [*FAKE_IDENTIFIERS.values(), "Testperson", "Erika", "Doe_John", "knee_left", "photo"]:
        assert secret.encode() not in written and secret not in printed.out + printed.err

    assert cli.main([*argv, "--keep-names", "--quiet", "--json"]) == 1
    counts = json.loads(capsys.readouterr().out)["counts"]
    assert (counts["flagged"], counts["error"], counts["skipped"], counts["resumed"]) == (4, 1, 1, 0)
    named = read_summary(out / SUMMARY_FILE)
    assert [r["input_name"] for r in named] == ["bare", "broken.dcm", "notes.txt", "photo.png", "IM0002",
                                                "knee_left.dcm"]
    assert Measurement.from_json((out / f"{measured[0]}.json").read_text()).input_name == "bare"


def test_measure_without_out_prints_results_and_refuses_out_only_options(tiny_models_dir, tmp_path, capsys,
                                                                         monkeypatch):
    image = dicom(tmp_path / "Testperson_Erika.dcm", 1, image_laterality="L")
    bad = tmp_path / "scan.dcm"
    bad.write_bytes(b"not an image")
    base = ["measure", "--models-dir", str(tiny_models_dir), "--device", "cpu", "--workers", "0"]
    assert cli.main([*base, str(image), str(bad)]) == 1
    text = capsys.readouterr().out
    assert f"{case_id(image.name)}: left knee (L) (side: DICOM ImageLaterality)" in text
    assert f"{case_id(bad.name)}: error: not a recognised image format" in text and "Testperson" not in text

    assert cli.main([*base, str(image), "--json", "--keep-names"]) == 0
    [printed] = json.loads(capsys.readouterr().out)
    assert (printed["case_id"], printed["input_name"], printed["status"]) == (case_id(image.name), image.name,
                                                                              "flagged")
    for flag in ("--resume", "--dicom-sr"):
        assert cli.main([*base, str(image), flag]) == 2
        assert f"{flag} needs --out" in capsys.readouterr().err
    assert cli.main([*base, str(image), "--batch-size", "0"]) == 2
    assert "batch_size" in capsys.readouterr().err
    assert cli.main([*base, str(image), "--threads", "0"]) == 2
    assert "--threads must be at least 1" in capsys.readouterr().err
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen, real = [], batch.measure_batch
        with monkeypatch.context() as patch:  # the networks run on --threads; the caller's count comes back
            patch.setattr(batch, "measure_batch", lambda *a, **k: seen.append(torch.get_num_threads()) or real(*a, **k))
            assert cli.main([*base, str(image), "--threads", "1", "--quiet"]) == 0
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert cli.main(["measure", str(image), "--models-dir", str(tmp_path / "none")]) == 2
    assert "no models folder found" in capsys.readouterr().err


def test_options_are_checked_before_anything_runs(tiny_models_dir):
    with pytest.raises(ValueError, match="kind"):
        BatchOptions(kind="knee")
    with pytest.raises(ValueError, match="side"):
        BatchOptions(side="left")
    with pytest.raises(ValueError, match="workers"):
        BatchOptions(workers=-1)
    preop_only = ModelSet.load({"global": tiny_models_dir / "global", "preop": tiny_models_dir / "local_preop"},
                               device="cpu")
    with pytest.raises(BundleError, match="no local postop model"):
        run_batch([], preop_only, None, options(kind="postop"))


# --- resume, interruption -----------------------------------------------------------------------

def test_resume_skips_complete_cases_and_redoes_incomplete_or_changed_ones(models, tmp_path):
    root = tmp_path / "in"
    paths = [dicom(root / f"k{i}.dcm", i) for i in range(5)]
    out = tmp_path / "out"
    inputs = discover_inputs([root])
    first = run_batch(inputs, models, out, options())
    ids = [i.case_id for i in inputs]

    (out / f"{ids[0]}.png").unlink()  # an output lost
    (out / MARKER_DIR / f"{ids[1]}.json").write_text("{ truncated")  # a damaged marker
    dicom(paths[2], 2)  # the input replaced (new modification time and UIDs)
    os.utime(paths[2], ns=(1, 1))
    measured = []
    second = run_batch(inputs, models, out, options(resume=True), on_case=lambda r: measured.append(r.case_id)
                       if not r.resumed else None)
    assert measured == ids[:3]
    assert second.counts["resumed"] == 2 and second.measured == 3
    assert comparable(second.rows) == comparable(first.rows)
    assert (out / f"{ids[0]}.png").is_file()

    different = run_batch(inputs, models, out, options(resume=True, side="R"))  # other settings: all again
    assert different.counts["resumed"] == 0
    with pytest.raises(ValueError, match="resume needs an output folder"):
        run_batch(inputs, models, None, options(resume=True))


def test_an_interrupted_run_leaves_only_complete_cases_and_resumes_to_identical_results(models, tmp_path,
                                                                                      monkeypatch):
    inputs = discover_inputs([dicom(tmp_path / "in" / f"k{i}.dcm", i) for i in range(5)])
    reference = run_batch(inputs, models, tmp_path / "reference", options())

    from KneeAlignmentLib import overlay

    real_draw, calls = overlay.draw_measurement, []

    def draw_then_interrupt(*args, **kwargs):  # Ctrl-C while the third case is being written
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_draw(*args, **kwargs)

    out = tmp_path / "out"
    monkeypatch.setattr(overlay, "draw_measurement", draw_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_batch(inputs, models, out, options())
    monkeypatch.undo()
    done = [i.case_id for i in inputs[:2]]
    assert not (out / SUMMARY_FILE).exists()
    assert sorted(p.stem for p in (out / MARKER_DIR).iterdir()) == sorted(done)
    assert sorted({p.name.split(".")[0] for p in out.glob("case-*")}) == sorted(done)  # the third: nothing
    assert not [p for p in out.rglob(".*") if p.is_file()]  # no temporary left

    resumed = run_batch(inputs, models, out, options(resume=True))
    assert resumed.counts["resumed"] == 2
    assert comparable(read_summary_rows(out)) == comparable(read_summary_rows(tmp_path / "reference"))
    assert comparable(resumed.rows) == comparable(reference.rows)
    for item in inputs:
        assert result_without_timings(out / f"{item.case_id}.json") == \
            result_without_timings(tmp_path / "reference" / f"{item.case_id}.json")


def read_summary_rows(out: Path) -> list[list[str]]:
    return [list(row.values()) for row in read_summary(out / SUMMARY_FILE)]


# --- failures stay with their case -------------------------------------------------------------

def test_unexpected_failures_in_reading_or_measuring_stay_with_their_case(models, tmp_path, monkeypatch):
    inputs = discover_inputs([dicom(tmp_path / "in" / f"k{i}.dcm", i) for i in range(4)])
    real_read, real_measure = batch.read_radiograph, batch.measure_batch

    def read(path, **kwargs):
        if path.name == "k1.dcm":
            raise KeyError("a reader bug")
        return real_read(path, **kwargs)

    def measure(images, models, **kwargs):
        if any(image.shape == (96, 81) for image in images):
            raise RuntimeError("a network bug")
        return real_measure(images, models, **kwargs)

    dicom(inputs[2].path, 2, shape=(96, 81))
    monkeypatch.setattr(batch, "read_radiograph", read)
    monkeypatch.setattr(batch, "measure_batch", measure)
    summary = run_batch(inputs, models, tmp_path / "out", options(batch_size=4))
    statuses = [row[csv_header().index("status")] for row in summary.rows]
    reasons = [row[csv_header().index("reason")] for row in summary.rows]
    assert statuses == ["flagged", "error", "error", "flagged"] and summary.failed
    assert reasons[1] == "unexpected KeyError while reading (please report)"
    assert reasons[2] == "unexpected RuntimeError while measuring (please report)"


# --- memory --------------------------------------------------------------------------------------

def test_workers_measure_on_the_cpu_and_their_results_equal_the_main_process_ones(models, tmp_path):
    inputs = discover_inputs([dicom(tmp_path / "in" / f"k{i}.dcm", i, shape=(96, 80)) for i in range(5)])
    assert isinstance(batch._reader(inputs, options(workers=2), models).collate_fn, batch._Measuring)
    assert not isinstance(batch._reader(inputs, options(workers=2)).collate_fn, batch._Measuring)  # reading only
    results = {}
    for workers in (0, 2):
        out = tmp_path / f"out{workers}"
        run_batch(inputs, models, out, options(workers=workers))
        results[workers] = {p.name: normalise_json(p.read_text()) for p in sorted(out.glob("case-*.json"))}
    assert sum(not name.endswith(".mrk.json") for name in results[2]) == 5 and results[2] == results[0]


def test_memory_stays_flat_over_a_long_run(models, tmp_path):
    """Nothing per image survives its case: traced Python and numpy memory after 10 and after 40 images."""
    inputs = discover_inputs([dicom(tmp_path / "in" / f"k{i:02d}.dcm", i, shape=(64, 48)) for i in range(40)])
    traced: list[int] = []
    cases: list[str] = []

    def sample(record):
        cases.append(record.case_id)
        if len(cases) in (10, 40):
            gc.collect()
            traced.append(tracemalloc.get_traced_memory()[0])

    tracemalloc.start()
    try:
        run_batch(inputs, models, tmp_path / "out", options(), on_case=sample)
    finally:
        tracemalloc.stop()
    growth = traced[1] - traced[0]  # from after a warm-up (caches, fonts) to the end
    # One result (~7 kB) or image (12 kB) kept per case would add >= 200 kB; a summary row is ~0.2 kB.
    assert growth < 100_000, f"memory grew by {growth} bytes over 30 images"


# --- sharding ----------------------------------------------------------------------------------------

def test_shards_are_disjoint_and_cover_every_input(monkeypatch):
    items = list(range(11))
    shards = [Shard(rank, 3).select(items) for rank in range(3)]
    assert sorted(sum(shards, [])) == items and shards[1] == [1, 4, 7, 10]
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert Shard.from_env() == Shard(2, 4, 2)
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        Shard.from_env()
    with pytest.raises(ValueError, match="rank"):
        Shard(3, 3)


def test_torchrun_with_two_processes_merges_the_summary_of_one_process(tiny_models_dir, models, tmp_path):
    root = cohort(tmp_path / "export")
    out = tmp_path / "sharded"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "KneeAlignmentLib.cli", "measure", str(root), "--models-dir", str(tiny_models_dir),
               "--device", "cpu", "--out", str(out), "--workers", "0", "--batch-size", "1", "--quiet"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode != 0  # broken.dcm failed, so the batch reports failure
    assert "6 inputs: 0 ok, 4 flagged, 1 errors, 1 skipped" in done.stdout, done.stderr[-3000:]
    assert "Testperson" not in done.stdout + done.stderr

    assert torch.get_num_threads() == 1  # as in each torchrun process: identical arithmetic
    single = run_batch(discover_inputs([root]), models, tmp_path / "single", options(batch_size=1))
    assert comparable(read_summary_rows(out)) == comparable(single.rows)
    assert {p.name for p in out.iterdir()} == {p.name for p in (tmp_path / "single").iterdir()}


# --- one output folder, one input per case id (issue 16, defect 3) -------------------------------

def test_a_second_folder_with_the_same_relative_paths_is_refused_and_earlier_rows_are_kept(tiny_models_dir,
                                                                                           tmp_path, capsys):
    a, b = (dicom(tmp_path / name / "P.dcm", seed) for name, seed in (("a", 1), ("b", 2)))
    d = dicom(tmp_path / "d" / "Q.dcm", 4)
    out = tmp_path / "out"
    base = ["--models-dir", str(tiny_models_dir), "--device", "cpu", "--out", str(out), "--workers", "0",
            "--quiet"]
    assert cli.main(["measure", str(a.parent), *base]) == 0
    case = case_id("P.dcm")
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()

    for extra in ([], ["--resume"]):
        assert cli.main(["measure", str(b.parent), *base, *extra]) == 2
        err = capsys.readouterr().err
        assert "already holds results of other inputs" in err and case in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1
        after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
        assert after == before  # a's JSON, markups, overlay, marker and summary row untouched

    assert cli.main(["measure", str(d.parent), *base]) == 0  # another case id: measured beside a's
    rows = read_summary(out / SUMMARY_FILE)
    assert [r["case_id"] for r in rows] == [case, case_id("Q.dcm")]
    assert (out / f"{case}.json").read_bytes() == before[Path(f"{case}.json")]

    assert cli.main(["measure", str(a.parent), *base]) == 0  # the same input again: measured again, one row
    assert sorted(r["case_id"] for r in read_summary(out / SUMMARY_FILE)) == sorted([case, case_id("Q.dcm")])
