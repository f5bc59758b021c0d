"""Tests of KneeAlignmentLib.training_case: image + landmarks saved as a case of a training folder.

Each saved case is read back the way training reads datasets (``evaluation.find_cases`` and
``AnnotatedCase.load``), so the files must fit that format exactly.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from KneeAlignmentLib import training_case
from KneeAlignmentLib.errors import MarkupsError
from KneeAlignmentLib.evaluation import find_cases
from KneeAlignmentLib.imageio import radiograph_from_array
from KneeAlignmentLib.schema import example_landmarks_px, load_schema
from KneeAlignmentLib.training_case import next_case_stem, save_training_case, training_schema

SHAPE = (160, 128)


def knee(kind="preop", spacing=(1.6, 2.0)):
    schema = load_schema(kind)
    points = example_landmarks_px(kind, atfa_valgus_deg=5.0, spacing_mm=2.0, image_size=SHAPE)
    pixels = np.random.default_rng(0).uniform(0.0, 1.0, size=SHAPE).astype(np.float32)
    return schema, points, radiograph_from_array(pixels, spacing_mm=spacing, value_range=(0.0, 1.0))


@pytest.mark.parametrize(("image_format", "suffix", "spacing"), [("auto", ".nrrd", (1.6, 2.0)), ("png", ".png", None)])
def test_saved_case_reads_back_as_training_data(tmp_path, image_format, suffix, spacing):
    schema, points, radiograph = knee("postop")
    saved = save_training_case(tmp_path, radiograph, schema, points, image_format=image_format)
    assert saved.stem == "case-0001"
    assert (saved.image.name, saved.markups.name) == (f"case-0001{suffix}", "case-0001.mrk.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([saved.image.name, saved.markups.name])
    [case] = find_cases(tmp_path)
    loaded = case.load("postop")
    np.testing.assert_allclose(loaded.points_px, points, atol=1e-9)
    assert loaded.radiograph.spacing_mm == spacing
    assert loaded.schema.kind == "postop" and loaded.side == "R"  # the fibula tells, as for any case without laterality
    # 16-bit storage: the pixels within one step (NRRD is read back min-max, so compare after rescaling).
    back = loaded.radiograph.pixels
    expected = radiograph.pixels if suffix == ".png" else (radiograph.pixels - radiograph.pixels.min()) / np.ptp(
        radiograph.pixels)
    np.testing.assert_allclose(back, expected, atol=2.0 / 65535)


def test_next_stem_counts_up_and_nothing_is_overwritten(tmp_path):
    schema, points, radiograph = knee()
    assert next_case_stem(tmp_path / "absent") == "case-0001"
    first = save_training_case(tmp_path, radiograph, schema, points)
    (tmp_path / "case-0007.png").write_bytes(b"x")  # a higher number already there
    assert next_case_stem(tmp_path) == "case-0008"
    before = first.markups.read_bytes()
    with pytest.raises(MarkupsError, match="'case-0001' exists already"):
        save_training_case(tmp_path, radiograph, schema, points + 1.0, stem="case-0001", image_format="png")
    assert first.markups.read_bytes() == before
    assert not (tmp_path / "case-0001.png").exists()


def test_files_hold_no_identifiers(tmp_path):
    schema, points, radiograph = knee()
    nrrd = save_training_case(tmp_path, radiograph, schema, points, image_format="nrrd")
    header = nrrd.image.read_bytes().split(b"\n\n", 1)[0].decode("ascii").splitlines()
    keys = {line.split(":", 1)[0] for line in header[1:] if ":" in line and not line.startswith("#")}
    assert keys <= {"type", "dimension", "space", "space dimension", "sizes", "space directions", "kinds", "endian",
                    "encoding", "space origin"}, keys  # geometry only
    png = save_training_case(tmp_path, radiograph, schema, points, image_format="png")
    data, chunks, at = png.image.read_bytes(), [], 8
    while at < len(png.image.read_bytes()):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        chunks.append(kind.decode())
        at += 12 + length
    assert chunks[0] == "IHDR" and chunks[-1] == "IEND"
    assert not set(chunks) & {"tEXt", "zTXt", "iTXt", "eXIf", "tIME"}, chunks  # no text, metadata or time


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: p[:-1], r"expected \(134, 2\) landmarks"),
        (lambda p: np.where(np.arange(len(p))[:, None] == 0, np.nan, p), "every landmark must be placed"),
        (lambda p: p + [SHAPE[1], 0], "landmarks lie outside the 128x160 image"),
    ],
)
def test_bad_landmarks_are_refused_before_writing(tmp_path, edit, message):
    schema, points, radiograph = knee()
    with pytest.raises(MarkupsError, match=message):
        save_training_case(tmp_path, radiograph, schema, edit(points))
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_leaves_no_files(tmp_path, monkeypatch):
    schema, points, radiograph = knee()

    def fail(*args, **kwargs):
        raise MarkupsError("disk full")

    monkeypatch.setattr(training_case, "write_landmarks", fail)
    with pytest.raises(MarkupsError, match="disk full"):
        save_training_case(tmp_path, radiograph, schema, points)
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments(tmp_path):
    schema, points, radiograph = knee()
    with pytest.raises(ValueError, match="image_format"):
        save_training_case(tmp_path, radiograph, schema, points, image_format="jpeg")
    with pytest.raises(ValueError, match="plain file name"):
        save_training_case(tmp_path, radiograph, schema, points, stem="../escape")


def test_only_a_full_landmark_set_is_a_training_case():
    assert training_schema("postop") == load_schema("postop")
    with pytest.raises(ValueError, match=r"full landmark set \(preop or postop\); manual points cannot be saved"):
        training_schema("manual")
