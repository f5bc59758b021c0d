"""Tests of KneeAlignmentLib.datasets: reading annotated datasets (paired files, manifests) and
writing them (image + landmarks saved as a case of a training folder, 16-bit images).

Each saved case is read back the way training reads datasets (``find_cases`` and
``AnnotatedCase.load``), so the files must fit that format exactly.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from annotated_factory import knee_points, write_case, write_dataset
from KneeAlignmentLib import datasets
from KneeAlignmentLib.datasets import (
    AnnotatedCase,
    DatasetError,
    find_cases,
    next_case_stem,
    save_training_case,
    training_schema,
    write_image16,
)
from KneeAlignmentLib.errors import MarkupsError
from KneeAlignmentLib.imageio import radiograph_from_array, read_radiograph
from KneeAlignmentLib.schema import example_landmarks_px, load_schema

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

    monkeypatch.setattr(datasets, "write_landmarks", fail)
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


# --- reading ----------------------------------------------------------------------------------

def test_find_cases_pairs_images_and_annotations(tmp_path):
    write_dataset(tmp_path, 3, fmt="png")
    cases = find_cases(tmp_path)
    assert [c.case_id for c in cases] == ["case000", "case001", "case002"]
    loaded = cases[1].load("preop")
    assert (loaded.side, loaded.side_source) == ("L", "anatomy (fibula is lateral)")  # case001 is a left knee
    assert loaded.points_px.shape == (134, 2) and loaded.radiograph.spacing_mm is None


def test_dicom_cases_carry_spacing_and_laterality(tmp_path):
    write_dataset(tmp_path, 2, fmt="dcm")
    loaded = find_cases(tmp_path)[0].load()
    assert loaded.radiograph.spacing_mm == (3.0, 3.0)
    assert (loaded.side, loaded.side_source) == ("R", "DICOM ImageLaterality")
    assert loaded.schema.kind == "preop"


@pytest.mark.parametrize("problem, message", [
    ("no annotation", "case001.png has no .mrk.json annotation"),
    ("no image", "case001.mrk.json has no image"),
    ("two images", "several images"),
])
def test_find_cases_reports_unpaired_files(tmp_path, problem, message):
    write_dataset(tmp_path, 2, fmt="png")
    if problem == "no annotation":
        (tmp_path / "case001.mrk.json").unlink()
    elif problem == "no image":
        (tmp_path / "case001.png").unlink()
    else:
        (tmp_path / "case001.jpg").write_bytes((tmp_path / "case001.png").read_bytes())
    with pytest.raises(DatasetError, match=message):
        find_cases(tmp_path)


def test_load_reports_missing_points_wrong_schema_and_points_outside(tmp_path):
    rng = np.random.default_rng(1)
    points = knee_points("preop", "R", rng)
    missing = points.copy()
    missing[load_schema("preop").index("TSP01")] = np.nan  # written as an undefined point
    write_case(tmp_path / "a", "missing", "preop", missing)
    with pytest.raises(MarkupsError, match=r"missing\.mrk\.json.*missing landmarks 'TSP01'"):
        find_cases(tmp_path / "a")[0].load("preop")

    write_case(tmp_path / "b", "postop_file", "postop", knee_points("postop", "R", rng))
    with pytest.raises(MarkupsError, match=r"postop_file\.mrk\.json: .*postop schema \(181 points\), the preop"):
        find_cases(tmp_path / "b")[0].load("preop")

    outside = points.copy()
    outside[load_schema("preop").index("FLC00")] = (-5.0, 10.0)
    write_case(tmp_path / "c", "outside", "preop", outside)
    with pytest.raises(MarkupsError, match=r"outside\.mrk\.json: 1 landmarks lie outside the 80x96 image.*FLC00"):
        find_cases(tmp_path / "c")[0].load()


def test_manifest_decides_cases_kind_and_side(tmp_path):
    write_dataset(tmp_path, 2, fmt="png")
    (tmp_path / "manifest.csv").write_text("case_id,image,markups,kind,side\n"
                                           "knee-a,case000.png,case000.mrk.json,preop,R\n", encoding="utf-8")
    (case,) = find_cases(tmp_path)
    assert case == AnnotatedCase("knee-a", tmp_path / "case000.png", tmp_path / "case000.mrk.json", "preop", "R")
    assert case.load().side_source == "manifest"
    (tmp_path / "manifest.csv").write_text("case_id,image,markups\nx,nothing.png,case000.mrk.json\n")
    with pytest.raises(DatasetError, match="line 2: nothing.png not found"):
        find_cases(tmp_path)


def test_phantom_folder_reads_through_its_manifest(tmp_path):
    from KneeAlignmentLib.phantom import generate_dataset, render_case

    generate_dataset("postop", 2, seed=5, out_dir=tmp_path, size=(128, 104))
    cases = find_cases(tmp_path)
    assert [c.case_id for c in cases] == ["PHANTOM-000000", "PHANTOM-000001"]
    assert cases[0].image_path.suffix == ".dcm" and cases[0].kind == "postop"
    loaded = cases[1].load("postop")
    truth = render_case("postop", 5, 1, (128, 104))
    np.testing.assert_allclose(loaded.points_px, truth.landmarks_px, atol=1e-6)
    np.testing.assert_allclose(loaded.radiograph.pixels, truth.image, atol=1e-6)  # float32 rounding
    assert loaded.radiograph.spacing_mm == pytest.approx(truth.spacing_mm)
    assert (loaded.side, loaded.side_source) == (truth.side, "manifest")


def test_image16_is_one_writer_for_png_and_nrrd(tmp_path):
    pixels = np.array([[0.0, 0.25, 1.0], [1.5, -0.5, 0.5]], dtype=np.float32)  # outside [0, 1]: clipped
    png = read_radiograph(write_image16(tmp_path / "a.png", pixels))
    np.testing.assert_allclose(png.pixels, np.clip(pixels, 0.0, 1.0), atol=1 / 65535)
    assert png.spacing_mm is None and png.bits_stored == 16
    nrrd = read_radiograph(write_image16(tmp_path / "a.nrrd", pixels, spacing_mm=(0.2, 0.3)))
    assert nrrd.spacing_mm == pytest.approx((0.2, 0.3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nrrd", "a.png"]  # no temporaries left
