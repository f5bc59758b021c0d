"""Image evidence for the FTS axes (shaft_edges, axis_check) on synthetic shafts whose axes are known.

The images are drawn here: the schema's example knee at 0.5 mm/px, each shaft a band
between its lateral and medial cortex lines (anti-aliased, so the edges are defined to a
fraction of a pixel), bright cortices around a darker canal in soft tissue, blurred and
noisy. The true FTS axis of a bone is the line through its template shaft centres.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from KneeAlignmentLib import shaft_edges
from KneeAlignmentLib.axis_check import refine_fts
from KneeAlignmentLib.geometry import compute_alignment
from KneeAlignmentLib.phantom.xray import gaussian_blur
from KneeAlignmentLib.bundle.thresholds import QCThresholds
from KneeAlignmentLib.schema import example_landmarks_px, load_schema

SPACING = (0.5, 0.5)
SHAPE = (680, 300)
CENTRE = np.array([140.3, 330.6])  # the knee centre off the pixel grid: sub-pixel truth
PAIRS = {"femur": "femoral_shaft_centres", "tibia": "tibial_shaft_centres"}


def _template(kind="preop", valgus=5.0):
    schema = load_schema(kind)
    return schema, example_landmarks_px(kind, atfa_valgus_deg=valgus, spacing_mm=SPACING[0], image_size=(0, 0)) + CENTRE


def _sides(schema, points, bone):
    pairs = schema.definitions[PAIRS[bone]]["pairs"]
    return points[schema.indices([a for a, _ in pairs])], points[schema.indices([b for _, b in pairs])]


def _line(points):
    """(centroid, unit direction) of the TLS line through points (M, 2)."""
    c = points.mean(axis=0)
    return c, np.linalg.svd(points - c)[2][0]


def _signed_distance(xy, line_points, inside_point):
    """Distance of pixels xy (..., 2) to the line through line_points, positive on inside_point's side."""
    c, d = _line(line_points)
    n = np.array([-d[1], d[0]])
    sign = 1.0 if (inside_point - c) @ n > 0 else -1.0
    return sign * ((xy - c) @ n)


def render(schema, points, *, fibula_gap_mm=None, noise=0.01, seed=0):
    """Soft tissue 0.3, cortex 0.85, canal 0.5 (cortex 5 mm thick), shafts away from the joint."""
    h, w = SHAPE
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    xy = np.stack([xx, yy], axis=-1)
    image = np.full(SHAPE, 0.3)
    knee = schema.reference_points(points)[0]
    for bone in ("femur", "tibia"):
        lat, med = _sides(schema, points, bone)
        mid = 0.5 * (lat + med).mean(axis=0)
        inside = np.minimum(_signed_distance(xy, lat, mid), _signed_distance(xy, med, mid))
        c, d = _line(0.5 * (lat + med))
        along = (xy - knee) @ d * np.sign((c - knee) @ d)  # > 0 away from the joint along this shaft
        shaft = np.clip(along - 25.0, 0, 1)  # the diaphysis only (no epiphysis drawn)
        bone_cover = np.clip(0.5 + inside, 0, 1) * shaft
        canal_cover = np.clip(0.5 + inside - 10.0, 0, 1) * shaft
        image += 0.55 * bone_cover - 0.35 * canal_cover
        if bone == "tibia" and fibula_gap_mm is not None:
            # a bright fibula-like band just lateral of the lateral cortex
            out = -_signed_distance(xy, lat, mid)  # distance outside the lateral cortex, px
            gap = fibula_gap_mm / SPACING[0]
            band = np.clip(0.5 + out - gap, 0, 1) * np.clip(0.5 + gap + 24.0 - out, 0, 1) * shaft
            image += 0.5 * band
    image = gaussian_blur(image, (1.0, 1.0))
    return image + np.random.default_rng(seed).normal(0.0, noise, SHAPE)


def _check_on_truth(fit, truth_centres, angle_tol_deg, offset_tol_px):
    assert fit.good, fit.reason
    c, d = _line(truth_centres)
    n = np.array([-d[1], d[0]])
    offsets = (fit.centres_px - c) @ n
    assert np.abs(offsets).max() < offset_tol_px
    _, fitted = _line(fit.centres_px)
    angle = math.degrees(math.asin(min(1.0, abs(fitted[0] * d[1] - fitted[1] * d[0]))))
    assert angle < angle_tol_deg


@pytest.mark.parametrize("kind", ["preop", "postop"])
def test_exact_landmarks_give_the_true_midline_to_a_fraction_of_a_pixel(kind):
    schema, points = _template(kind)
    evidence = shaft_edges.refine_shaft_axes(render(schema, points), points, schema, SPACING)
    assert evidence.scale_source == "spacing" and evidence.mm_per_px == pytest.approx(0.5)
    for bone in ("femur", "tibia"):
        lat, med = _sides(schema, points, bone)
        fit = evidence.fit(bone)
        _check_on_truth(fit, 0.5 * (lat + med), angle_tol_deg=0.05, offset_tol_px=0.15)
        assert fit.inliers >= shaft_edges.MIN_INLIERS and fit.rms_mm < 0.1


def test_shifted_and_tilted_shaft_points_are_corrected_by_the_edges():
    """The network's cortex points off by 3 px and turned by 4 degrees: the edges give the true axis."""
    schema, truth = _template()
    image = render(schema, truth)
    points = truth.copy()
    for bone, (dx, turn) in {"femur": (3.0, 4.0), "tibia": (-3.0, -4.0)}.items():
        idx = np.concatenate([schema.indices([p for pair in schema.definitions[PAIRS[bone]]["pairs"] for p in pair])])
        centre = points[idx].mean(axis=0)
        t = math.radians(turn)
        rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
        points[idx] = (points[idx] - centre) @ rot.T + centre + [dx, 0.0]
    landmark = compute_alignment(points, schema, "R", SPACING)
    true = compute_alignment(truth, schema, "R", SPACING)
    assert abs(landmark.atfa_fts_deg - true.atfa_fts_deg) > 5.0  # the landmark axes are clearly wrong
    evidence = shaft_edges.refine_shaft_axes(image, points, schema, SPACING)
    for bone in ("femur", "tibia"):
        lat, med = _sides(schema, truth, bone)
        _check_on_truth(evidence.fit(bone), 0.5 * (lat + med), angle_tol_deg=0.1, offset_tol_px=0.3)
    alignment, report, flags = refine_fts(image, points, schema, "R", SPACING, landmark, QCThresholds())
    assert report["source"] == "image"
    assert alignment.atfa_fts_deg == pytest.approx(true.atfa_fts_deg, abs=0.1)
    assert report["atfa_fts_landmarks_deg"] == pytest.approx(landmark.atfa_fts_deg)
    assert [f.code for f in flags] == ["axis_evidence_disagree"]
    assert alignment.atfa_fnts_deg == pytest.approx(landmark.atfa_fnts_deg)  # FNTS is the landmarks' alone


def test_an_adjacent_bright_fibula_does_not_capture_the_lateral_tibial_cortex():
    schema, points = _template()
    lat, med = _sides(schema, points, "tibia")
    for gap_mm in (2.0, 4.0):
        image = render(schema, points, fibula_gap_mm=gap_mm)
        # the predicted lateral cortex points pulled 2 mm towards the fibula
        moved = points.copy()
        pairs = schema.definitions["tibial_shaft_centres"]["pairs"]
        li = schema.indices([a for a, _ in pairs])
        towards_fibula = (lat - med) / np.hypot(*(lat - med).T)[:, None]
        moved[li] += 2.0 / SPACING[0] * towards_fibula
        evidence = shaft_edges.refine_shaft_axes(image, moved, schema, SPACING)
        _check_on_truth(evidence.fit("tibia"), 0.5 * (lat + med), angle_tol_deg=0.1, offset_tol_px=0.3)


@pytest.mark.parametrize("gap_mm", [1.0, 3.0])
def test_a_saturated_stem_in_the_canal_does_not_capture_the_cortical_edges(gap_mm):
    """A metal stem (saturated) in the tibial canal, ``gap_mm`` inside the lateral cortex's outer edge:
    3 mm in (a cortex beside it), the true axis; 1 mm in (through the cortex), no axis rather than a wrong one."""
    schema, points = _template()
    image = render(schema, points, noise=0.005)
    lat, med = _sides(schema, points, "tibia")
    h, w = SHAPE
    xy = np.stack(np.mgrid[:h, :w][::-1], axis=-1).astype(np.float64)
    mid = 0.5 * (lat + med).mean(axis=0)
    inside = _signed_distance(xy, lat, mid)  # px inside the lateral outer edge
    stem = (inside > gap_mm / SPACING[0]) & (inside < gap_mm / SPACING[0] + 24.0) & (xy[..., 1] > mid[1] - 80)
    image[stem] = 1.3  # brighter than anything else: metal
    evidence = shaft_edges.refine_shaft_axes(image, points, schema, SPACING)
    if gap_mm < shaft_edges.METAL_CLEARANCE_MM:
        assert not evidence.tibia.good
    else:
        _check_on_truth(evidence.tibia, 0.5 * (lat + med), angle_tol_deg=0.1, offset_tol_px=0.3)
    _check_on_truth(evidence.femur, 0.5 * np.add(*_sides(schema, points, "femur")), 0.05, 0.15)


def test_without_spacing_the_scale_comes_from_the_femoral_width():
    schema, points = _template()
    evidence = shaft_edges.refine_shaft_axes(render(schema, points), points, schema, None)
    lat, med = _sides(schema, points, "femur")
    width_px = np.median(np.hypot(*(lat - med).T))
    assert evidence.scale_source == "anatomy"
    assert evidence.mm_per_px == pytest.approx(shaft_edges.FEMUR_WIDTH_MM / width_px)
    assert evidence.femur.good and evidence.tibia.good


@pytest.mark.parametrize("image_kind", ["flat", "noise", "smooth background"])
def test_no_cortices_means_weak_evidence_and_the_landmark_axes(image_kind):
    schema, points = _template()
    rng = np.random.default_rng(1)
    image = {"flat": np.full(SHAPE, 0.4), "noise": rng.normal(0.4, 0.05, SHAPE),
             "smooth background": gaussian_blur(rng.random(SHAPE), (20.0, 20.0))}[image_kind]
    evidence = shaft_edges.refine_shaft_axes(image, points, schema, SPACING)
    assert not evidence.femur.good and not evidence.tibia.good
    assert evidence.femur.reason and evidence.tibia.reason
    landmark = compute_alignment(points, schema, "R", SPACING)
    alignment, report, flags = refine_fts(image, points, schema, "R", SPACING, landmark, QCThresholds())
    assert alignment is landmark and report["source"] == "landmarks"
    assert [f.code for f in flags] == ["weak_axis_evidence"]  # on by default: weak evidence predicts errors
    assert "femur and tibia" in flags[0].message
    _, _, flags = refine_fts(image, points, schema, "R", SPACING, landmark,
                             QCThresholds(flag_weak_axis_evidence=False))
    assert flags == []


def test_one_bone_without_evidence_keeps_its_landmark_axis():
    schema, points = _template()
    image = render(schema, points)
    lat, med = _sides(schema, points, "tibia")
    rows = slice(int(min(lat[:, 1].min(), med[:, 1].min())) - 40, SHAPE[0])
    image[rows] = 0.3  # the tibial shaft erased
    landmark = compute_alignment(points, schema, "R", SPACING)
    alignment, report, flags = refine_fts(image, points, schema, "R", SPACING, landmark, QCThresholds())
    assert report["source"] == "image (femur)" and report["femur"]["good"] and not report["tibia"]["good"]
    np.testing.assert_allclose(alignment.tibial_axis_fts_px, landmark.tibial_axis_fts_px)
    assert [f.code for f in flags] == ["weak_axis_evidence"] and "of the tibia" in flags[0].message


def test_bad_input_is_refused_clearly():
    schema, points = _template()
    with pytest.raises(ValueError, match="2D"):
        shaft_edges.refine_shaft_axes(np.zeros((10, 10, 3)), points, schema)
    bad = points.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="finite"):
        shaft_edges.refine_shaft_axes(np.zeros(SHAPE), bad, schema)


def test_metal_cores_counted_per_tile_equal_one_box_filter_over_the_whole_image():
    # blobs across tile and image borders, specks too small to be metal, values near the threshold
    rng = np.random.default_rng(3)
    image = rng.uniform(0.0, 0.9, (300, 270))
    for y, x, h, w in [(0, 0, 20, 15), (120, 120, 30, 20), (250, 200, 50, 70), (60, 260, 9, 10), (200, 30, 3, 3)]:
        image[y:y + h, x:x + w] = rng.uniform(0.985, 1.0, image[y:y + h, x:x + w].shape)
    image[140, 130] = 0.97  # a hole: below the saturation threshold
    scale = 0.5  # mm per px: k = 13
    cores = shaft_edges._metal_cores(image, scale)
    k = cores.k
    top = image.max()
    saturated = image >= top - shaft_edges.METAL_SHARE * (top - image.min())
    padded = np.pad(saturated, k // 2)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (k, k))
    expected = windows.sum(axis=(2, 3)) >= 0.95 * k * k
    yy, xx = np.mgrid[0:300, 0:270]
    assert expected.any() and not expected.all()
    np.testing.assert_array_equal(cores[yy, xx], expected.astype(np.uint8))


def test_percentiles_equal_numpy_in_float64_bit_for_bit():
    rng = np.random.default_rng(4)
    for n in (1, 2, 3, 101, 4096, 20011):
        for values in (rng.random(n), np.round(rng.random(n) * 40) / 7, rng.integers(0, 4095, n) / 4095):
            image = values.astype(np.float32).reshape(1, -1)
            for q in ((1.0, 99.0), (0.0, 100.0), (50.0, 99.9), (33.3, 66.7)):
                expected = np.percentile(image.astype(np.float64), q)
                np.testing.assert_array_equal(shaft_edges._percentiles(image, q), expected)


def test_metal_across_a_profile_equals_sampling_the_cores_and_skips_profiles_far_from_metal(monkeypatch):
    rng = np.random.default_rng(5)
    image = rng.uniform(0.0, 0.9, (300, 270))
    image[120:150, 120:140] = 0.99  # one metal-like blob
    cores = shaft_edges._metal_cores(image, 0.5)
    sampled, original = [], shaft_edges._bilinear
    monkeypatch.setattr(shaft_edges, "_bilinear", lambda *args: sampled.append(1) or original(*args))
    for x, y in [(130.0, 135.0), (118.5, 131.2), (20.0, 250.0), (260.0, 10.0), (0.0, 0.0), (269.0, 299.0)]:
        u = np.arange(-12.0, 12.0, 0.5)
        xs, ys = x + u[None, :] + np.zeros((5, 1)), y + np.arange(-2.0, 3.0)[:, None] + 0 * u
        expected = original(cores, xs, ys).max(axis=0) > 0.5
        np.testing.assert_array_equal(cores.across(xs, ys), expected)
    assert len(sampled) == 2  # only the two profiles near the blob were sampled
