"""Hardening against bad input: damaged, hostile, odd and vanishing files, a full disk, and property-based
fuzzing of the image reader and the .mrk.json reader.

Contract under test: every input ends in a result or in the documented error type (``ImageReadError``,
``MarkupsError``) with a message naming the problem, within bounded time and memory; in a batch, every
input ends in a summary row ("flagged" or "error", never "ok" for these tiny random models) and no
failure stops the batch or leaves a half-written file.
"""

from __future__ import annotations

import errno
import json
import struct
import tracemalloc
import zlib
from pathlib import Path

import hypothesis.strategies as st
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch
from hypothesis import HealthCheck, given, settings
from pydicom.encaps import generate_frames

from dicom_factory import FAKE_IDENTIFIERS, write_dx, write_frames
from KneeAlignmentLib import atomicio
from KneeAlignmentLib.batch import MARKER_DIR, BatchOptions, discover_inputs, run_batch
from KneeAlignmentLib.errors import ImageReadError, MarkupsError
from KneeAlignmentLib.imageio import Radiograph, radiograph_from_array, read_radiograph
from KneeAlignmentLib.markups import read_landmarks, read_markups
from KneeAlignmentLib.measurement import csv_header
from KneeAlignmentLib.bundle.modelset import ModelSet
from KneeAlignmentLib.schema import load_schema

EXAMPLES = Path(__file__).resolve().parents[1] / "KneeAlignment" / "KneeAlignmentLib" / "data" / "examples"
FUZZ = settings(max_examples=60, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
STATUS, REASON = csv_header().index("status"), csv_header().index("reason")


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: faster, and no spinning thread pool on a busy machine
    yield
    torch.set_num_threads(threads)


def stored(shape, seed=0, high=4095) -> np.ndarray:
    return (np.random.default_rng(seed).random(shape) * high).astype(np.uint16)


def good_dicom(path: Path, shape=(96, 80), **tags) -> Path:
    return write_dx(path, stored(shape), bits_stored=12, spacing_mm=(0.5, 0.5), **tags)


def good_png(path: Path, shape=(40, 30), rgb=False) -> Path:
    pixels = np.random.default_rng(1).integers(0, 256, size=(*shape, 3) if rgb else shape, dtype=np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(pixels, isVector=rgb), str(path))
    return path


def good_nrrd(path: Path, array: np.ndarray) -> Path:
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    return path


def outcome(path: Path) -> Radiograph | ImageReadError:
    """read_radiograph's result or its documented error; anything else fails the test."""
    try:
        return read_radiograph(path)
    except ImageReadError as exc:
        return exc


# --- damaged and hostile files -------------------------------------------------------------------------

def damaged_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, a phrase the error must contain)."""
    data = good_dicom(folder / "source.dcm").read_bytes()
    cases = {}

    def put(name: str, content: bytes, phrase: str) -> None:
        path = folder / name
        path.write_bytes(content)
        cases[name] = (path, phrase)

    put("truncated_in_preamble.dcm", data[:100], "not a recognised image format")
    put("truncated_in_header.dcm", data[:300], "DICOM")
    put("truncated_in_pixels.dcm", data[:-1000], "DICOM pixel data cannot be decoded")
    put("random_bytes.dcm", np.random.default_rng(3).bytes(5000), "not a recognised image format")
    put("empty.dcm", b"", "empty")
    put("empty.png", b"", "empty")
    put("png_truncated.png", good_png(folder / "p.png").read_bytes()[:60], "PNG")
    cases["directory.dcm"] = ((folder / "directory.dcm"), "directory")
    (folder / "directory.dcm").mkdir()
    return cases


def test_damaged_and_hostile_files_raise_image_read_errors_naming_the_problem(tmp_path):
    for name, (path, phrase) in damaged_files(tmp_path).items():
        with pytest.raises(ImageReadError) as error:
            read_radiograph(path)
        assert phrase in str(error.value), name
        assert str(tmp_path) not in str(error.value) and name not in str(error.value)


def test_damaged_elements_and_decoder_panics_found_by_fuzzing_are_image_read_errors(tmp_path):
    """Regressions: pydicom parses values lazily (the error surfaces wherever an element is first read), and
    pylibjpeg-rle's Rust decoder panics with a BaseException on a bad run header."""
    data = good_dicom(tmp_path / "source.dcm").read_bytes()
    rle_path = write_dx(tmp_path / "rle.dcm", stored((24, 20)), transfer_syntax=pydicom.uid.RLELossless)
    rle = rle_path.read_bytes()
    frame = next(generate_frames(pydicom.dcmread(rle_path).PixelData, number_of_frames=1))
    first_segment = rle.find(frame) + 64  # after the 64-byte RLE header
    damaged = {
        "unknown VR": data.replace(b"(\x00\x11\x00US", b"(\x00\x11\x00UP", 1),
        "odd length": data.replace(b"(\x00\x11\x00US\x02\x00", b"(\x00\x11\x00US\x03\x00\x00", 1),
        "RLE run past the end": rle[:first_segment] + b"\x7f" + rle[first_segment + 1:],
    }
    for name, content in damaged.items():
        path = tmp_path / "damaged.dcm"
        path.write_bytes(content)
        with pytest.raises(ImageReadError, match="DICOM"):
            read_radiograph(path)


def test_corrupted_dicom_bytes_end_in_a_radiograph_or_image_read_error(tmp_path):
    data = bytearray(good_dicom(tmp_path / "source.dcm").read_bytes())
    rng = np.random.default_rng(4)
    for trial in range(30):
        damaged = bytearray(data)
        where = rng.integers(128, 1200 if trial % 2 else len(damaged), size=8)  # header, or anywhere
        damaged[where[0]:where[0] + 4] = rng.bytes(4)
        for i in where[1:]:
            damaged[i] ^= 0xFF
        path = tmp_path / f"corrupt{trial}.dcm"
        path.write_bytes(bytes(damaged))
        assert isinstance(outcome(path), (Radiograph, ImageReadError))


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def test_huge_declared_dimensions_are_refused_before_any_allocation(tmp_path):
    dicom = good_dicom(tmp_path / "huge.dcm", shape=(8, 8))
    ds = pydicom.dcmread(dicom)
    ds.Rows, ds.Columns = 65535, 65535  # 4.3 billion pixels declared, 128 bytes stored
    ds.save_as(dicom)
    # A PNG declaring 100000 x 100000 pixels with a 20-byte compressed stream (a decompression bomb's header).
    png = tmp_path / "huge.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0))
                    + png_chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + png_chunk(b"IEND", b""))
    for path in (dicom, png):
        tracemalloc.start()
        try:
            with pytest.raises(ImageReadError, match="above the limit"):
                read_radiograph(path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 20_000_000, f"{path.name}: {peak} bytes allocated before refusing"


def test_three_dimensional_and_multi_frame_images_are_refused(tmp_path):
    volume = good_nrrd(tmp_path / "volume.nrrd", np.zeros((4, 16, 16), np.float32))
    frames = write_frames(tmp_path / "frames.dcm", stored((3, 16, 16)))
    with pytest.raises(ImageReadError, match="one 2D image"):
        read_radiograph(volume)
    with pytest.raises(ImageReadError, match="3 frames"):
        read_radiograph(frames)


def test_nan_and_infinite_pixels_are_refused(tmp_path):
    for value in (np.nan, np.inf, -np.inf):
        array = np.ones((12, 10), np.float32)
        array[3, 4] = value
        with pytest.raises(ImageReadError, match="NaN or infinite"):
            read_radiograph(good_nrrd(tmp_path / "bad.nrrd", array))
        with pytest.raises(ImageReadError, match="NaN or infinite"):
            radiograph_from_array(array)


def test_unreadable_files_are_image_read_errors(tmp_path, monkeypatch):
    path = good_dicom(tmp_path / "locked.dcm")
    real_open = Path.open

    def refuse(self, *args, **kwargs):  # what chmod 000 does for a non-root user
        if self == path:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(ImageReadError, match=r"cannot be opened \(PermissionError\)") as error:
        read_radiograph(path)
    assert "locked" not in str(error.value)


# --- a batch of bad, odd and vanishing inputs ----------------------------------------------------------------

def odd_images(folder: Path) -> None:
    """Readable images that are no AP knee radiograph: they must come back flagged, never measured as ok."""
    good_dicom(folder / "one_pixel.dcm", shape=(1, 1))
    good_dicom(folder / "tiny.dcm", shape=(2, 3))
    good_dicom(folder / "strip.dcm", shape=(3, 200))
    good_png(folder / "photo_rgb.png", shape=(60, 80), rgb=True)
    inverted = 4095 - stored((96, 80), seed=5)
    write_dx(folder / "inverted.dcm", inverted, bits_stored=12, photometric="MONOCHROME1")
    h, w = 120, 90
    yy, xx = np.mgrid[:h, :w]
    lateral = 1000 + 2500 * (((xx - 45) / 30) ** 2 + ((yy - 60) / 50) ** 2 < 1)  # one bone seen side-on
    write_dx(folder / "lateral_view.dcm", lateral.astype(np.uint16), bits_stored=12)
    chest = 800 + 3000 * ((np.abs(xx - 45) > 8) & (((xx - 45) / 40) ** 2 + ((yy - 60) / 55) ** 2 < 1))
    write_dx(folder / "chest.dcm", chest.astype(np.uint16), bits_stored=12)
    write_dx(folder / "blank.dcm", np.full((50, 40), 7, np.uint16), bits_stored=12)


def test_a_batch_of_bad_inputs_completes_with_every_input_flagged_or_failed(tiny_models_dir, tmp_path):
    inputs_dir = tmp_path / "in"
    inputs_dir.mkdir()
    damaged = damaged_files(inputs_dir)
    odd_images(inputs_dir)
    vanishing = good_dicom(inputs_dir / "vanishing.dcm")
    inputs = discover_inputs([inputs_dir])
    vanishing.unlink()  # deleted between discovery and reading

    models = ModelSet.load(tiny_models_dir, device="cpu")
    summary = run_batch(inputs, models, tmp_path / "out", BatchOptions(workers=1, batch_size=3, progress=False))
    rows = {item.key: row for item, row in zip(inputs, summary.rows)}
    assert summary.failed and len(rows) == len(inputs)
    for name in (*damaged, "vanishing.dcm"):
        if name != "directory.dcm":  # a folder is searched, not an input
            assert rows[name][STATUS] == "error", name
    assert rows["vanishing.dcm"][REASON] == "image file does not exist"
    odd = ["one_pixel.dcm", "tiny.dcm", "strip.dcm", "photo_rgb.png", "inverted.dcm", "lateral_view.dcm",
           "chest.dcm", "blank.dcm"]
    for name in odd:
        assert rows[name][STATUS] == "flagged" and rows[name][REASON], name
    assert not any("unexpected" in row[REASON] for row in summary.rows)
    assert not any(value in " ".join(sum(summary.rows, ())) for value in FAKE_IDENTIFIERS.values())


def test_a_full_disk_fails_that_case_only_and_leaves_no_half_written_file(tiny_models_dir, tmp_path, monkeypatch):
    (tmp_path / "in").mkdir()
    inputs = discover_inputs([good_dicom(tmp_path / "in" / f"k{i}.dcm") for i in range(3)])
    victim = inputs[1].case_id
    real_fsync, seen = atomicio.os.fsync, []

    def full_disk_on_the_victims_overlay(fd):
        name = Path(f"/proc/self/fd/{fd}").resolve().name
        if name.startswith(f".{victim}.") and name.endswith(".png"):
            seen.append(name)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(atomicio.os, "fsync", full_disk_on_the_victims_overlay)
    out = tmp_path / "out"
    models = ModelSet.load(tiny_models_dir, device="cpu")
    summary = run_batch(inputs, models, out, BatchOptions(workers=0, progress=False))
    assert seen, "the simulated full disk was never hit"
    statuses = [row[STATUS] for row in summary.rows]
    assert statuses == ["flagged", "error", "flagged"] and summary.failed
    assert summary.rows[1][REASON] == "cannot write the results (No space left on device)"
    assert not list(out.glob(f"*{victim}*")) and not (out / MARKER_DIR / f"{victim}.json").exists()
    assert not [p for p in out.rglob(".*") if p.is_file()]  # no temporary left behind
    for item in (inputs[0], inputs[2]):
        assert (out / f"{item.case_id}.json").is_file() and (out / MARKER_DIR / f"{item.case_id}.json").is_file()


# --- property-based fuzzing ---------------------------------------------------------------------------------

SUFFIXES = st.sampled_from([".dcm", ".png", ".jpg", ".tif", ".nrrd", ".nii", ""])


@FUZZ
@given(content=st.binary(max_size=4096), suffix=SUFFIXES)
def test_fuzz_reader_with_arbitrary_bytes(tmp_path, content, suffix):
    path = tmp_path / f"input{suffix}"
    path.write_bytes(content)
    assert isinstance(outcome(path), (Radiograph, ImageReadError))


class Seeds(dict):
    def __repr__(self) -> str:  # hypothesis prints a failing example's arguments: not the whole files
        return f"Seeds({sorted(self)})"


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> Seeds:
    """Valid files to mutate: DICOM (plain, no preamble, RLE), PNG, NRRD."""
    folder = tmp_path_factory.mktemp("seeds")
    files = {
        ".dcm": good_dicom(folder / "a.dcm", shape=(24, 20)),
        "": write_dx(folder / "bare", stored((24, 20)), preamble=False),
        ".rle.dcm": write_dx(folder / "rle.dcm", stored((24, 20)), transfer_syntax=pydicom.uid.RLELossless),
        ".png": good_png(folder / "a.png"),
        ".nrrd": good_nrrd(folder / "a.nrrd", np.arange(600, dtype=np.int16).reshape(30, 20)),
    }
    return Seeds({suffix: path.read_bytes() for suffix, path in files.items()})


@FUZZ
@given(data=st.data())
def test_fuzz_reader_with_mutated_valid_files(tmp_path, seeds, data):
    suffix = data.draw(st.sampled_from(sorted(seeds)))
    content = bytearray(seeds[suffix])
    for _ in range(data.draw(st.integers(1, 6))):
        where = data.draw(st.integers(0, len(content) - 1))
        action = data.draw(st.sampled_from(["flip", "overwrite", "truncate", "insert"]))
        if action == "flip":
            content[where] ^= data.draw(st.integers(1, 255))
        elif action == "overwrite":
            content[where:where + 4] = data.draw(st.binary(min_size=4, max_size=4))
        elif action == "truncate":
            del content[where:]
            if not content:
                break
        else:
            content[where:where] = data.draw(st.binary(min_size=1, max_size=16))
    path = tmp_path / f"mutant{suffix or ''}"
    path.write_bytes(bytes(content))
    assert isinstance(outcome(path), (Radiograph, ImageReadError))


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner,
                                                                                   max_size=5),
                    max_leaves=25)
EXAMPLE = json.loads((EXAMPLES / "example_preop.mrk.json").read_text())


def markups_outcome(path: Path):
    try:
        read_landmarks(path, load_schema("preop").names)
    except MarkupsError:
        pass
    try:
        return read_markups(path)
    except MarkupsError as exc:
        return exc


@FUZZ
@given(document=JSON)
def test_fuzz_markups_reader_with_arbitrary_json(tmp_path, document):
    path = tmp_path / "fuzz.mrk.json"
    path.write_text(json.dumps(document))
    assert isinstance(markups_outcome(path), (list, MarkupsError))


@FUZZ
@given(data=st.data())
def test_fuzz_markups_reader_with_mutated_slicer_files(tmp_path, data):
    document = json.loads(json.dumps(EXAMPLE))
    for _ in range(data.draw(st.integers(1, 4))):
        node = document
        while isinstance(node, (dict, list)) and node and data.draw(st.booleans()):  # walk down a random path
            key = data.draw(st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node))))
            if not isinstance(node[key], (dict, list)) or not node[key]:
                node[key] = data.draw(JSON)
                break
            node = node[key]
        else:
            if isinstance(node, dict) and node:
                node.pop(data.draw(st.sampled_from(sorted(node))))
            elif isinstance(node, list) and node:
                node.insert(data.draw(st.integers(0, len(node))), data.draw(JSON))
    path = tmp_path / "mutant.mrk.json"
    text = json.dumps(document)
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(text))))  # sometimes a truncated file
    path.write_text(text if cut is None else text[:cut])
    assert isinstance(markups_outcome(path), (list, MarkupsError))


@FUZZ
@given(content=st.binary(max_size=2048))
def test_fuzz_markups_reader_with_arbitrary_bytes(tmp_path, content):
    path = tmp_path / "bytes.mrk.json"
    path.write_bytes(content)
    assert isinstance(markups_outcome(path), (list, MarkupsError))
