"""The phantom: exact ground truth, determinism, physics sanity, files on disk.

Small images (400 x 320) keep the rendering fast; the geometry is the same at any size
(only the pixel spacing changes).
"""

from __future__ import annotations

import csv
import dataclasses
import filecmp
import shutil
import subprocess

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from KneeAlignmentLib.errors import SchemaError
from KneeAlignmentLib.geometry import compute_alignment, infer_side
from KneeAlignmentLib.imageio import read_radiograph
from KneeAlignmentLib.markups import ImagePlane, read_landmarks
from KneeAlignmentLib.phantom import MANIFEST_COLUMNS, generate_dataset, render_case
from KneeAlignmentLib.phantom.dataset import write_case
from KneeAlignmentLib.phantom.joint import build_knee
from KneeAlignmentLib.phantom.outline import Chain, arc_length
from KneeAlignmentLib.phantom.raster import edge_distance
from KneeAlignmentLib.phantom.xray import upsample
from KneeAlignmentLib.phantom.wrong_view import WRONG_VIEWS, render_wrong_view
from KneeAlignmentLib.schema import KINDS, load_schema

SIZE = (400, 320)
TOLERANCE_DEG = 0.01


@pytest.fixture(scope="module")
def cases():
    """Six small cases of each kind (both sides occur among them)."""
    return {kind: [render_case(kind, 2024, i, SIZE) for i in range(6)] for kind in KINDS}


# --------------------------------------------------------------------- ground truth


@pytest.mark.parametrize("kind", KINDS)
def test_truth_equals_geometry_on_the_true_landmarks(kind, cases):
    schema = load_schema(kind)
    for case in cases[kind]:
        measured = compute_alignment(case.landmarks_px, schema, case.side, case.spacing_mm)
        assert measured.atfa_fts_deg == pytest.approx(case.truth["atfa_fts_deg"], abs=TOLERANCE_DEG)
        assert measured.atfa_fnts_deg == pytest.approx(case.truth["atfa_fnts_deg"], abs=TOLERANCE_DEG)
        if kind == "postop":
            assert measured.femoral_component_alpha_deg == pytest.approx(case.truth["alpha_deg"], abs=TOLERANCE_DEG)
            assert measured.tibial_component_beta_deg == pytest.approx(case.truth["beta_deg"], abs=TOLERANCE_DEG)


@pytest.mark.parametrize("kind", KINDS)
def test_construction_truth_over_many_knees(kind):
    """The knee construction alone (no rendering), over the whole sampled range."""
    schema = load_schema(kind)
    atfa = []
    for seed in range(40):
        knee = build_knee(kind, np.random.default_rng(seed))
        measured = compute_alignment(knee.landmarks_mm, schema, "R", (1.0, 1.0))
        assert measured.atfa_fts_deg == pytest.approx(knee.truth["atfa_fts_deg"], abs=1e-9)
        assert measured.atfa_fnts_deg == pytest.approx(knee.truth["atfa_fnts_deg"], abs=1e-9)
        if kind == "postop":
            assert measured.femoral_component_alpha_deg == pytest.approx(knee.truth["alpha_deg"], abs=1e-9)
            assert measured.tibial_component_beta_deg == pytest.approx(knee.truth["beta_deg"], abs=1e-9)
        else:  # the bones were drawn to their target joint-line angles
            assert measured.aldfa_deg == pytest.approx(knee.anatomy.aldfa_deg, abs=0.05)
        atfa.append(knee.truth["atfa_fts_deg"])
    assert min(atfa) < -5.0 and max(atfa) > 10.0  # varus and valgus knees both occur


def test_preop_joint_space_follows_the_oa_grade():
    jsw = {}
    for seed in range(40):
        knee = build_knee("preop", np.random.default_rng(seed))
        m = compute_alignment(knee.landmarks_mm, load_schema("preop"), "R", (1.0, 1.0))
        jsw.setdefault(knee.joint["kl_grade"], []).append(min(m.jsw_lateral_mm, m.jsw_medial_mm))
    assert np.mean(jsw[0] + jsw[1]) > np.mean(jsw[3] + jsw[4]) + 1.5


@pytest.mark.parametrize("kind", KINDS)
def test_landmarks_follow_the_schema_and_lie_in_the_image(kind, cases):
    schema = load_schema(kind)
    for case in cases[kind]:
        h, w = case.image.shape
        assert (h, w) == SIZE
        assert case.landmarks_px.shape == (len(schema), 2)
        assert np.isfinite(case.landmarks_px).all()
        x, y = case.landmarks_px.T
        assert x.min() >= 0 and x.max() <= w - 1 and y.min() >= 0 and y.max() <= h - 1


def test_shaft_landmarks_are_equally_spaced_on_straight_cortices(cases):
    """The placement rule on a straight segment: collinear, equal steps (FLC00..FLC07)."""
    schema = load_schema("preop")
    pts = cases["preop"][0].landmarks_px[schema.indices([f"FLC{i:02d}" for i in range(8)])]
    steps = np.hypot(*np.diff(pts, axis=0).T)
    assert np.ptp(steps) < 1e-9 * steps.mean() + 1e-9
    direction = (pts[-1] - pts[0]) / np.hypot(*(pts[-1] - pts[0]))
    off_line = (pts - pts[0]) @ np.array([-direction[1], direction[0]])
    assert np.abs(off_line).max() < 1e-9


def test_left_knees_are_mirrored_with_the_fibula_lateral(cases):
    sides = set()
    for kind in KINDS:
        schema = load_schema(kind)
        for case in cases[kind]:
            sides.add(case.side)
            assert infer_side(case.landmarks_px, schema) == case.side
            tibia = schema.derive(case.landmarks_px, "tibial_shaft_centres").mean(axis=0)
            fibula = case.landmarks_px[schema.group_indices("fibula")].mean(axis=0)
            # radiological view: a right knee's lateral side is on the viewer's left (-x)
            assert (fibula[0] < tibia[0]) == (case.side == "R")
    assert sides == {"L", "R"}


# ------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_and_other_cases_differ():
    a = render_case("preop", 5, 3, SIZE)
    b = render_case("preop", 5, 3, SIZE)
    assert a.image.tobytes() == b.image.tobytes()
    assert a.landmarks_px.tobytes() == b.landmarks_px.tobytes()
    assert a.truth == b.truth and a.params == b.params
    c = render_case("preop", 5, 4, SIZE)
    d = render_case("preop", 6, 3, SIZE)
    for other in (c, d):
        assert not np.array_equal(a.landmarks_px, other.landmarks_px)
        assert a.image.tobytes() != other.image.tobytes()


def test_invalid_arguments_are_refused():
    with pytest.raises(SchemaError):
        render_case("intraop", 0, 0, SIZE)
    with pytest.raises(ValueError, match="size"):
        render_case("preop", 0, 0, (50, 400))
    with pytest.raises(ValueError, match="seed"):
        render_case("preop", -1, 0, SIZE)
    with pytest.raises(ValueError, match="n must"):
        generate_dataset("preop", 0, 1, "unused", size=SIZE)


# ----------------------------------------------------------------------- physics


def _shaft_profile(case, level: str):
    """Image values along the row through the femoral shaft at FLC/FMC ``level``, and the
    cortex positions on that row (px)."""
    schema = load_schema(case.kind)
    lat, med = case.landmarks_px[schema.indices([f"FLC{level}", f"FMC{level}"])]
    y = int(round(0.5 * (lat[1] + med[1])))
    # where the row crosses the two cortex lines
    xs = []
    for code in ("FLC", "FMC"):
        a, b = case.landmarks_px[schema.indices([f"{code}00", f"{code}07"])]
        xs.append(a[0] + (y - a[1]) * (b[0] - a[0]) / (b[1] - a[1]))
    return case.image[y], sorted(xs)


def test_cortex_is_brighter_than_the_medullary_canal():
    case = render_case("preop", 77, 0, (800, 640))
    row, (left, right) = _shaft_profile(case, "03")
    width = right - left
    centre = row[int(left + 0.4 * width):int(left + 0.6 * width) + 1].mean()
    cortex_left = row[int(left + 0.05 * width):int(left + 0.3 * width) + 1].max()
    cortex_right = row[int(right - 0.3 * width):int(right - 0.05 * width) + 1].max()
    soft = np.concatenate([row[int(left - 0.5 * width):int(left - 0.2 * width)],
                           row[int(right + 0.2 * width):int(right + 0.5 * width)]]).mean()
    assert min(cortex_left, cortex_right) > centre + 0.02
    assert centre > soft + 0.02  # bone, even at its thinnest, is denser than soft tissue


def test_metal_saturates_with_sharp_edges(cases):
    schema = load_schema("postop")
    for case in cases["postop"]:
        pts = case.landmarks_px
        inside = pts[schema.indices([f"CFL{i:02d}" for i in range(10)])].mean(axis=0)  # in the lateral condyle
        x, y = np.round(inside).astype(int)
        assert case.image[y - 1:y + 2, x - 1:x + 2].min() == 1.0  # saturated white
        # across the distal surface: metal above, radiolucent polyethylene gap below
        distal = pts[schema.index("CFL06")]
        tray = pts[schema.index("CTS01")]
        normal = (tray - distal) / np.hypot(*(tray - distal))
        above = case.image[tuple(np.round(distal[::-1] - 2.5 * normal[::-1]).astype(int))]
        gap = min(case.image[tuple(np.round(distal[::-1] + k * normal[::-1]).astype(int))] for k in (2.5, 3.5))
        assert above == 1.0 and gap < 0.9


def test_landmarks_sit_on_the_bone_edges():
    """Just outside a shaft cortex landmark the image is darker than just inside."""
    case = render_case("preop", 31, 1, (800, 640))
    schema = load_schema("preop")
    pts = case.landmarks_px
    for code, towards in (("FLC", "FMC"), ("TLC", "TMC")):
        for i in range(1, 6):
            p = pts[schema.index(f"{code}{i:02d}")]
            q = pts[schema.index(f"{towards}{i:02d}")]
            inward = (q - p) / np.hypot(*(q - p))
            inner = case.image[tuple(np.round(p[::-1] + 2.0 * inward[::-1]).astype(int))]
            outer = case.image[tuple(np.round(p[::-1] - 2.0 * inward[::-1]).astype(int))]
            assert inner > outer + 0.03, (code, i)


# ------------------------------------------------------------------- internals


@pytest.mark.parametrize("angle", [0.0, 17.0, 45.0, 71.0, 90.0, 133.0])
def test_edge_distance_is_exact_for_a_straight_edge(angle):
    """A half-plane (a huge square with one edge through the box): sub-pixel exact."""
    t = np.radians(angle)
    normal = np.array([np.cos(t), np.sin(t)])  # points into the polygon
    along = np.array([-normal[1], normal[0]])
    anchor = np.array([31.7, 29.2])
    big = 1e6
    square = np.array([anchor + s * big * along + k * big * normal for s, k in ((-1, 0), (1, 0), (1, 2), (-1, 2))])
    inside, d = edge_distance(square, (0, 0, 64, 64))
    ys, xs = np.mgrid[0:64, 0:64]
    signed = (xs - anchor[0]) * normal[0] + (ys - anchor[1]) * normal[1]
    assert np.array_equal(inside, signed > 0)
    assert np.allclose(d, np.abs(signed), atol=1e-6)


def test_edge_distance_inside_mask_of_a_turned_square():
    t = np.radians(23.0)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    square = np.array([[-20.0, -20.0], [20.0, -20.0], [20.0, 20.0], [-20.0, 20.0]]) @ rot.T + 32.3
    inside, d = edge_distance(square, (0, 0, 64, 64))
    ys, xs = np.mgrid[0:64, 0:64]
    local = np.stack([xs - 32.3, ys - 32.3], axis=-1) @ rot
    exact = 20.0 - np.abs(local).max(axis=-1)
    assert np.array_equal(inside, exact > 0)
    assert np.all(d[inside] <= exact[inside] + 1e-9)  # never beyond the nearest edge
    # close to it along the edges, where the chord profile is steep (corners are rounded)
    near = inside & (exact < 1.0) & (np.abs(np.abs(local[..., 0]) - np.abs(local[..., 1])) > 3.0)
    assert np.allclose(d[near], exact[near], atol=0.02)


def test_chain_sampling_follows_the_equal_arc_rule():
    t = np.linspace(0.0, np.pi, 2001)
    chain = Chain(np.stack([np.cos(t), np.sin(t)], axis=1) * 10.0, {"a": 0, "m": 700, "b": 2000})
    for first, last, n in (("a", "m", 5), ("m", "b", 7), ("b", "a", 4)):
        pts = chain.sample(first, last, n)
        assert np.allclose(pts[[0, -1]], chain.points[[chain.anchors[first], chain.anchors[last]]])
        steps = np.diff(arc_length(np.concatenate([pts[:1], pts])))[1:]
        assert np.allclose(steps, steps.mean(), rtol=1e-3)


def test_upsampling_keeps_pixel_centres_aligned():
    coarse = np.add.outer(np.arange(5.0), 10 * np.arange(4.0)).astype(np.float32)  # linear ramp
    fine = upsample(coarse, 3, (15, 12))
    ys, xs = np.mgrid[0:15, 0:12]
    expected = (ys - 1) / 3.0 + 10 * (xs - 1) / 3.0  # fine pixel i sits at coarse (i - 1) / 3
    interior = (ys >= 1) & (ys <= 13) & (xs >= 1) & (xs <= 10)
    assert np.allclose(fine[interior], expected[interior], atol=1e-5)


# ----------------------------------------------------------------------- on disk


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantom")
    manifest = generate_dataset("postop", 3, 99, out, size=SIZE)
    return out, manifest


def test_dataset_files_read_back_exactly(dataset):
    out, _ = dataset
    schema = load_schema("postop")
    for i in range(3):
        case = render_case("postop", 99, i, SIZE)
        stem = out / case.id
        dicom = read_radiograph(stem.with_suffix(".dcm"))
        if case.photometric == "MONOCHROME2":
            assert np.array_equal(dicom.pixels, case.image)
        else:  # inverted by the reader (1 - x): equal to float32 rounding
            assert np.abs(dicom.pixels - case.image).max() <= 1e-6
        assert dicom.spacing_mm == case.spacing_mm and dicom.spacing_source == "PixelSpacing"
        assert dicom.side == case.side and dicom.photometric == case.photometric
        points = read_landmarks(out / f"{case.id}.mrk.json", schema.names, ImagePlane.identity(case.spacing_mm))
        assert np.allclose(points, case.landmarks_px, atol=1e-9)
        png = sitk.ReadImage(str(stem.with_suffix(".png")))
        assert png.GetPixelID() == sitk.sitkUInt16
        # another reader (GDCM through SimpleITK) agrees on size and orientation; for DX it
        # reports the detector pitch (ImagerPixelSpacing), not the magnification-corrected
        # PixelSpacing that imageio uses: one reason we read DICOM ourselves
        dx = sitk.ReadImage(str(stem.with_suffix(".dcm")))
        assert dx.GetSize()[:2] == (case.image.shape[1], case.image.shape[0])
        pitch = case.params["imaging.imager_spacing_mm"]
        assert np.allclose(dx.GetSpacing()[:2], (pitch, pitch), atol=1e-6)
        assert np.allclose(pitch / case.params["imaging.magnification"], case.spacing_mm, atol=1e-6)
        assert np.allclose(np.array(dx.GetDirection()).reshape(3, 3), np.eye(3))
        assert np.abs(read_radiograph(stem.with_suffix(".png")).pixels - case.image).max() <= 0.5 / 65535 + 1e-7


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_both_photometric_interpretations_read_back_bright_dense(photometric, tmp_path):
    case = dataclasses.replace(render_case("preop", 8, 0, SIZE), photometric=photometric)
    write_case(case, tmp_path)
    path = tmp_path / f"{case.id}.dcm"
    stored = pydicom.dcmread(path).pixel_array
    maxval = (1 << case.bits_stored) - 1
    expected = case.display if photometric == "MONOCHROME2" else maxval - case.display
    assert np.array_equal(stored, expected)
    # MONOCHROME1 is inverted by the reader (1 - x): equal up to float32 rounding
    assert np.abs(read_radiograph(path).pixels - case.image).max() <= 1e-6


def test_manifest_has_one_row_per_case_with_the_truth(dataset):
    _, manifest = dataset
    with open(manifest, newline="") as stream:
        reader = csv.DictReader(stream)
        assert tuple(reader.fieldnames) == MANIFEST_COLUMNS
        rows = list(reader)
    assert [row["id"] for row in rows] == ["PHANTOM-000000", "PHANTOM-000001", "PHANTOM-000002"]
    for i, row in enumerate(rows):
        case = render_case("postop", 99, i, SIZE)
        assert row["kind"] == "postop" and row["side"] == case.side
        assert float(row["spacing_row_mm"]) == case.spacing_mm[0]
        for key in ("atfa_fts_deg", "atfa_fnts_deg", "alpha_deg", "beta_deg"):
            assert float(row[key]) == case.truth[key]


@pytest.mark.skipif(shutil.which("dciodvfy") is None,
                    reason="dciodvfy not installed (Debian/Ubuntu: apt-get install dicom3tools)")
def test_dicom_files_pass_dciodvfy(dataset):
    out, _ = dataset
    for path in sorted(out.glob("*.dcm")):
        result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        report = result.stdout + result.stderr
        assert "DXImageForPresentation" in report
        assert not [line for line in report.splitlines() if line.startswith("Error")], report


def test_two_workers_write_the_same_files_as_one(dataset, tmp_path):
    out, _ = dataset
    manifest = generate_dataset("postop", 3, 99, tmp_path, size=SIZE, workers=2)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(p.name for p in tmp_path.iterdir())
    match, mismatch, errors = filecmp.cmpfiles(out, tmp_path, names, shallow=False)
    assert mismatch == [] and errors == [] and len(match) == len(names)
    assert manifest.read_bytes() == (out / "manifest.csv").read_bytes()


def test_progress_is_reported_per_case(tmp_path):
    seen = []
    generate_dataset("preop", 2, 1, tmp_path, size=(128, 128), progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 2), (2, 2)]


# --- wrong views (for the QC checks of the shipped models) ---------------------------------------

@pytest.mark.parametrize("view", WRONG_VIEWS)
def test_wrong_views_are_seeded_images_in_the_unit_range(view):
    image = render_wrong_view(view, 3, (160, 128))
    assert image.shape == (160, 128) and image.min() >= 0.0 and image.max() <= 1.0
    assert np.array_equal(image, render_wrong_view(view, 3, (160, 128)))
    assert not np.array_equal(image, render_wrong_view(view, 4, (160, 128)))


def test_wrong_view_bone_is_brighter_than_soft_tissue():
    image = render_wrong_view("lateral_knee", 0, (400, 320))
    # the femoral shaft runs up from the knee in the middle; the corners hold air or soft tissue
    assert np.percentile(image, 99) > np.median(image) + 0.2


def test_unknown_wrong_view_is_refused():
    with pytest.raises(ValueError, match="view must be one of"):
        render_wrong_view("skull", 0)


# --- real-film calibration (../shared/real-films.md) ---------------------------------------

def test_shaft_widths_and_alignment_follow_the_real_films():
    from KneeAlignmentLib.phantom.anatomy import sample_anatomy
    from KneeAlignmentLib.phantom.joint import _sample_preop
    rng = np.random.default_rng(0)
    draws = [_sample_preop(rng) for _ in range(2000)]
    atfa = np.array([d[1] for d in draws])
    assert -4.0 < atfa.mean() < 0.0 and (atfa < 0).mean() > 0.55  # varus-dominant, as knees planned for TKA
    anatomies = [sample_anatomy(rng, "preop", a, j, k) for k, a, j in draws[:400]]
    femur = np.array([2 * p.femur_shaft_half_mm for p in anatomies])
    tibia = np.array([2 * p.tibia_shaft_half_mm for p in anatomies])
    assert abs(femur.mean() - 29.9) < 1.0 and abs(tibia.mean() - 23.2) < 1.0  # real 29.9 +- 2.7, 23.2 +- 3.2 mm
    assert 2.0 < tibia.std() < 4.0 and 1.8 < femur.std() < 3.6


def test_long_leg_crops_are_8_bit_exports_without_collimation():
    for index in range(3):
        case = render_case("preop", 11, index, (480, 240))
        assert case.params["imaging.long_leg"] and not case.params["imaging.collimation"]
        maxval = (1 << case.bits_stored) - 1
        levels = np.round(np.arange(256) * (maxval / 255.0)).astype(np.uint16)
        assert np.isin(np.unique(case.display), levels).all()  # 8-bit values, stored at bits_stored
    assert not render_case("preop", 11, 0, (240, 200)).params["imaging.long_leg"]


def _long_leg_knee():
    """A right knee and its long-leg-crop acquisition (480 x 240 px)."""
    from KneeAlignmentLib.phantom.imaging import sample_imaging
    knee = build_knee("preop", np.random.default_rng(3))
    axis = knee.poses["tibia"].rot @ np.array([0.0, 1.0])
    return knee, sample_imaging(np.random.default_rng(4), knee.landmarks_mm, axis, (480, 240), "R", "T")


def test_the_other_leg_enters_at_the_medial_edge():
    from KneeAlignmentLib.phantom.xray import render
    knee, im = _long_leg_knee()
    with_leg = dataclasses.replace(im, other_leg_gap_mm=-10.0, ruler=None, seam=None, jpeg_quality=None)
    images = [render(knee, m, np.random.default_rng(5), np.random.default_rng(6)).display.astype(float)
              for m in (with_leg, dataclasses.replace(with_leg, other_leg_gap_mm=None))]
    edge = slice(int(0.93 * 240), 240)  # a right knee's medial side is at +x
    assert images[0][:, edge].mean() > images[1][:, edge].mean() + 0.05 * images[1].max()


def test_ruler_ticks_every_5_mm_with_longer_centimetre_ticks():
    from KneeAlignmentLib.phantom.xray import _draw_ruler
    im = dataclasses.replace(_long_leg_knee()[1], spacing_mm=0.25,
                             ruler={"x": 10.0, "direction": 1.0, "offset_mm": 0.0})
    y = np.zeros((400, 60), dtype=np.float32)
    _draw_ruler(y, im)
    column = y[:, 10 + int(2.0 / 0.25)] > 0.5  # 2 mm from the base: every tick
    starts = np.flatnonzero(column[1:] & ~column[:-1])
    assert len(starts) in (19, 20) and np.allclose(np.diff(starts), 5.0 / 0.25, atol=1)
    long_only = y[:, 10 + int(4.5 / 0.25)] > 0.5  # 4.5 mm: only the centimetre ticks reach
    assert np.count_nonzero(long_only[1:] & ~long_only[:-1]) in (9, 10)
