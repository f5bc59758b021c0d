"""Tests of the reference frame and the letterbox (KneeAlignmentLib.frame)."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from KneeAlignmentLib.errors import GeometryError, SchemaError
from KneeAlignmentLib.frame import FrameSpec, Letterbox, ReferenceFrame, mirror_landmarks

SPEC = FrameSpec(crop_size=(96, 80), ref_canonical_px=((40.0, 18.0), (40.0, 78.0)))
CANON = np.array(SPEC.ref_canonical_px)


def random_frame(rng, side, scale_range=(0.05, 20.0), image_size=400.0):
    """A frame with any rotation and a log-uniform scale (crop px per image px)."""
    scale = float(np.exp(rng.uniform(*np.log(scale_range))))
    length = np.hypot(*(CANON[1] - CANON[0])) / scale
    angle = rng.uniform(0.0, 2 * np.pi)
    p0 = rng.uniform(0.0, image_size, 2)
    p1 = p0 + length * np.array([np.cos(angle), np.sin(angle)])
    return ReferenceFrame.from_reference_points(np.stack([p0, p1]), SPEC, side), scale


def blob(shape, centre, sigma):
    """(H, W) float32 Gaussian dot of peak 1 at centre (x, y) px."""
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    return np.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2) / (2 * sigma**2)).astype(np.float32)


def centroid(image):
    """(x, y) intensity centroid of an (H, W) image, pixel-centre convention."""
    y, x = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    return np.array([(image * x).sum(), (image * y).sum()]) / image.sum()


@pytest.mark.parametrize("side", ["R", "L"])
def test_reference_points_land_on_canonical_positions(side):
    rng = np.random.default_rng(0)
    for _ in range(20):
        frame, scale = random_frame(rng, side)
        ref = frame.to_image(CANON)
        np.testing.assert_allclose(frame.to_crop(ref), CANON, atol=1e-9)
        assert frame.scale == pytest.approx(scale, rel=1e-9)
        # Right knees keep handedness; left knees are mirrored (negative determinant).
        det = np.linalg.det(frame.matrix[:, :2])
        assert det == pytest.approx(scale**2 if side == "R" else -(scale**2), rel=1e-9)
        assert frame.mirrored == (side == "L")


@pytest.mark.parametrize("side", ["R", "L"])
def test_forward_inverse_round_trip_extreme_rotations_and_scales(side):
    rng = np.random.default_rng(1)
    for _ in range(200):
        frame, _ = random_frame(rng, side)
        points_px = rng.uniform(-1000.0, 5000.0, (50, 2))
        assert np.abs(frame.to_image(frame.to_crop(points_px)) - points_px).max() < 0.01
        points_crop = rng.uniform(-100.0, 200.0, (3, 7, 2))
        assert np.abs(frame.to_crop(frame.to_image(points_crop)) - points_crop).max() < 0.01
    as_torch = frame.to_crop(torch.as_tensor(points_px))
    assert isinstance(as_torch, torch.Tensor)
    np.testing.assert_allclose(as_torch.numpy(), frame.to_crop(points_px), atol=1e-9)


@pytest.mark.parametrize("side", ["R", "L"])
def test_a_dot_in_the_image_appears_at_to_crop_in_the_crop(side):
    rng = np.random.default_rng(2)
    h, w = SPEC.crop_size
    for _ in range(6):
        frame, scale = random_frame(rng, side, scale_range=(0.4, 2.5), image_size=150.0)
        target_crop = rng.uniform([15.0, 15.0], [w - 16.0, h - 16.0])
        dot_px = frame.to_image(target_crop)
        shift = 60.0 - dot_px.min()  # keep the dot well inside a small image
        frame = ReferenceFrame.from_reference_points(frame.to_image(CANON) + shift, SPEC, side)
        dot_px = dot_px + shift
        image = blob((int(dot_px[1] + 80), int(dot_px[0] + 80)), dot_px, sigma=2.0 / scale)
        crop = frame.warp(image)
        assert crop.shape == (h, w) and crop.dtype == np.float32
        assert np.abs(centroid(crop) - target_crop).max() < 0.05
        assert np.abs(np.argwhere(crop == crop.max())[0][::-1] - target_crop).max() <= 0.5 + 1e-9


@pytest.mark.parametrize("antialias", [False, True])
def test_warp_samples_the_image_at_to_image_of_each_crop_pixel(antialias):
    """On a linear ramp (reproduced exactly by bilinear sampling and a symmetric blur)
    every crop pixel must hold the image value at to_image of its centre."""
    rng = np.random.default_rng(3)
    H, W = 300, 260
    ramp = lambda p: 0.37 * p[..., 0] - 0.21 * p[..., 1] + 5.0  # noqa: E731
    y, x = np.mgrid[0:H, 0:W]
    image = ramp(np.stack([x, y], -1)).astype(np.float64)
    h, w = SPEC.crop_size
    v, u = np.mgrid[0:h, 0:w]
    crop_px = np.stack([u, v], -1).astype(np.float64)
    for side in "RL":
        for _ in range(4):
            frame, _ = random_frame(rng, side, scale_range=(0.5, 1.5), image_size=1.0)
            # Centre the crop in the image so every sample, blur included, has real data.
            centre_crop = np.array([(w - 1) / 2, (h - 1) / 2])
            shift = np.array([W / 2, H / 2]) - frame.to_image(centre_crop)
            frame = ReferenceFrame.from_reference_points(frame.to_image(CANON) + shift, SPEC, side)
            crop = frame.warp(image, antialias=antialias)
            assert crop.dtype == np.float64
            np.testing.assert_allclose(crop, ramp(frame.to_image(crop_px)), atol=1e-6)


def test_left_knee_crop_equals_right_knee_crop_of_the_flipped_image():
    """Mirroring is exact: x -> W - 1 - x under the pixel-centre convention."""
    rng = np.random.default_rng(4)
    image = rng.uniform(0.0, 1.0, (120, 150)).astype(np.float32)
    W = image.shape[1]
    ref = np.array([[70.3, 20.9], [64.2, 101.5]])
    flipped_ref = ref * [-1, 1] + [W - 1, 0]
    left = ReferenceFrame.from_reference_points(ref, SPEC, "L")
    right = ReferenceFrame.from_reference_points(flipped_ref, SPEC, "R")
    np.testing.assert_allclose(left.matrix[:, :2] @ [[-1, 0], [0, 1]], right.matrix[:, :2], atol=1e-12)
    np.testing.assert_allclose(left.warp(image), right.warp(image[:, ::-1]), atol=1e-5)


def test_a_knee_as_the_other_side_is_its_crop_flipped_where_the_axis_is_the_crop_centre_line():
    rng = np.random.default_rng(5)
    image = rng.uniform(0.0, 1.0, (300, 260)).astype(np.float32)
    ref = np.array([[131.7, 180.2], [120.4, 60.9]])
    centred = FrameSpec(crop_size=(96, 81), ref_canonical_px=((40.0, 60.0), (40.0, 20.0)))
    assert centred.mirror_is_flip and not SPEC.mirror_is_flip  # SPEC's axis: x = 40 of 80 columns (39.5 is centre)
    right, left = (ReferenceFrame.from_reference_points(ref, centred, side) for side in ("R", "L"))
    np.testing.assert_allclose(left.matrix, right.matrix * [[-1], [1]] + [[0, 0, 80], [0, 0, 0]], atol=1e-12)
    np.testing.assert_allclose(left.warp(image), right.warp(image)[:, ::-1], atol=1e-5)


def test_warp_fill_channels_and_torch_parity():
    rng = np.random.default_rng(5)
    image = rng.uniform(0.0, 1.0, (3, 60, 70)).astype(np.float32)
    # Reference points near the image corner: most of the crop lies outside the image.
    frame = ReferenceFrame.from_reference_points([[2.0, -30.0], [2.0, 30.0]], SPEC, "R")
    crop = frame.warp(image, fill=-7.0)
    assert crop.shape == (3, 96, 80)
    outside = frame.to_image(np.array([[5.0, 5.0], [75.0, 90.0]]))
    assert (outside[:, 0] < -1).any() or (outside[:, 1] < -1).any()
    assert crop[0, 5, 5] == pytest.approx(-7.0)
    np.testing.assert_allclose(crop[1], frame.warp(image[1], fill=-7.0), atol=1e-6)
    as_torch = frame.warp(torch.as_tensor(image), fill=-7.0)
    assert isinstance(as_torch, torch.Tensor) and as_torch.shape == (3, 96, 80)
    np.testing.assert_allclose(as_torch.numpy(), crop, atol=1e-6)
    nearest = frame.warp(image[0], order=0)
    assert np.isin(nearest[nearest != 0], image[0]).all()
    with pytest.raises(ValueError, match="order"):
        frame.warp(image, order=3)


def test_antialiasing_suppresses_aliasing_when_shrinking():
    checker = np.indices((200, 200)).sum(0) % 2 * 2.0 - 1.0  # +-1 at the Nyquist frequency
    frame = ReferenceFrame.from_reference_points([[100.0, 20.0], [100.0, 170.0]], SPEC, "R")
    assert frame.scale == pytest.approx(0.4)
    inner = (slice(20, 76), slice(20, 60))
    assert np.abs(frame.warp(checker, antialias=True)[inner]).max() < 0.05
    assert np.abs(frame.warp(checker, antialias=False)[inner]).max() > 0.3


@pytest.mark.parametrize(
    "ref, message",
    [
        ([[10.0, 10.0], [10.0, 10.0]], "coincide"),
        ([[10.0, 10.0], [10.4, 10.3]], "coincide"),
        ([[np.nan, 10.0], [10.0, 50.0]], "not finite"),
        ([[10.0, 10.0], [np.inf, 50.0]], "not finite"),
    ],
)
def test_degenerate_reference_points_raise_geometry_error(ref, message):
    with pytest.raises(GeometryError, match=message):
        ReferenceFrame.from_reference_points(ref, SPEC, "R")


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="side"):
        ReferenceFrame.from_reference_points([[0, 0], [0, 50]], SPEC, "left")
    with pytest.raises(ValueError, match="ref_px"):
        ReferenceFrame.from_reference_points([[0, 0, 0], [0, 50, 0]], SPEC, "R")
    with pytest.raises(ValueError, match="coincide"):
        FrameSpec(crop_size=(64, 64), ref_canonical_px=((5, 5), (5, 5)))
    with pytest.raises(ValueError, match="crop_size"):
        FrameSpec(crop_size=(64, -1), ref_canonical_px=((5, 5), (5, 50)))
    frame = ReferenceFrame.from_reference_points([[0, 0], [0, 50]], SPEC, "R")
    with pytest.raises(ValueError, match=r"\(x, y\)"):
        frame.to_crop(np.zeros((4, 3)))


def test_frame_spec_round_trips_through_json():
    stored = json.loads(json.dumps(dataclasses.asdict(SPEC)))
    assert FrameSpec(**stored) == SPEC


PERM = np.array([0, 2, 1, 3, 5, 4])  # landmark pairs (1, 2) and (4, 5); 0 and 3 unpaired


def test_mirror_landmarks_swaps_pairs_and_is_an_involution():
    rng = np.random.default_rng(6)
    points = rng.uniform(0, 100, (2, 6, 2))
    swapped = mirror_landmarks(points, PERM)
    np.testing.assert_array_equal(swapped[:, 1], points[:, 2])
    np.testing.assert_array_equal(swapped[:, 4], points[:, 5])
    np.testing.assert_array_equal(swapped[:, 0], points[:, 0])
    np.testing.assert_array_equal(mirror_landmarks(swapped, PERM), points)
    as_torch = mirror_landmarks(torch.as_tensor(points), PERM)
    np.testing.assert_array_equal(as_torch.numpy(), swapped)


def test_left_knee_landmarks_keep_their_anatomical_indices_in_the_crop():
    """A flipped right-knee radiograph is a left knee with the same anatomical landmarks
    (flip x -> W - 1 - x, names unchanged). Through the mirrored frame every landmark
    lands where the right knee's same-named landmark lands: no index swap."""
    rng = np.random.default_rng(7)
    W = 400
    points_right = rng.uniform(0, W - 1, (6, 2))
    ref_right = rng.uniform(100, 300, (2, 2))
    points_left = points_right * [-1, 1] + [W - 1, 0]
    ref_left = ref_right * [-1, 1] + [W - 1, 0]
    right = ReferenceFrame.from_reference_points(ref_right, SPEC, "R")
    left = ReferenceFrame.from_reference_points(ref_left, SPEC, "L")
    np.testing.assert_allclose(left.to_crop(points_left), right.to_crop(points_right), atol=1e-9)
    np.testing.assert_allclose(left.to_image(right.to_crop(points_right)), points_left, atol=1e-9)


def test_flip_augmentation_with_pair_swap_restores_the_sides():
    """Flipping an image but keeping its side label: coordinates flip and each landmark
    takes its partner's index. A layout symmetric about the image's vertical midline
    (pairs (1, 2) and (4, 5) mirror each other) therefore maps onto itself."""
    W = 100  # midline x = 49.5 under the pixel-centre convention
    points = np.array([[49.5, 10.0], [30.0, 40.0], [69.0, 40.0], [49.5, 60.0], [20.0, 80.0], [79.0, 80.0]])
    flipped = mirror_landmarks(points * [-1, 1] + [W - 1, 0], PERM)
    np.testing.assert_allclose(flipped, points, atol=1e-12)
    unswapped = points * [-1, 1] + [W - 1, 0]
    assert not np.allclose(unswapped, points)


@pytest.mark.parametrize("bad", [[0, 1, 2, 4, 5, 3], [0, 0, 2, 3, 4, 5], [0.0, 2.0, 1.0, 3.0, 5.0, 4.0], [[0, 1]]])
def test_bad_permutation_raises_schema_error(bad):
    with pytest.raises(SchemaError, match="permutation"):
        mirror_landmarks(np.zeros((6, 2)), bad)


def test_permutation_length_must_match_points():
    with pytest.raises(ValueError, match="points"):
        mirror_landmarks(np.zeros((5, 2)), PERM)


# -- letterbox --------------------------------------------------------------------------


@pytest.mark.parametrize("image_shape", [(300, 500), (500, 300), (64, 64), (37, 1000)])
def test_letterbox_keeps_aspect_and_centres_the_image(image_shape):
    lb = Letterbox.fit(image_shape, (128, 96))
    H, W = image_shape
    assert lb.scale == pytest.approx(min(128 / H, 96 / W))
    # The image's outer edges land on the padding's inner edges, symmetric about the centre.
    corners = lb.to_target(np.array([[-0.5, -0.5], [W - 0.5, H - 0.5]]))
    np.testing.assert_allclose(corners[0], np.array(lb.pad) - 0.5, atol=1e-9)
    np.testing.assert_allclose(corners[1], [96 - lb.pad[0] - 0.5, 128 - lb.pad[1] - 0.5], atol=1e-9)
    assert min(lb.pad) == pytest.approx(0.0, abs=1e-9)


def test_letterbox_round_trip_and_dot():
    rng = np.random.default_rng(8)
    for shape in [(300, 500), (410, 170), (50, 60)]:
        lb = Letterbox.fit(shape, (128, 128))
        points_px = rng.uniform(-10, 600, (100, 2))
        assert np.abs(lb.to_image(lb.to_target(points_px)) - points_px).max() < 0.01
        dot_px = rng.uniform(20, np.array(shape[::-1]) - 20)
        out = lb.apply(blob(shape, dot_px, sigma=2.0 / lb.scale))
        assert out.shape == (128, 128)
        assert np.abs(centroid(out) - lb.to_target(dot_px)).max() < 0.05


def test_letterbox_pads_with_fill_and_checks_the_image_shape():
    lb = Letterbox.fit((100, 200), (64, 64))
    out = lb.apply(np.ones((100, 200), np.float32), fill=-1.0)
    assert lb.pad == pytest.approx((0.0, 16.0))
    assert (out[:15] == -1.0).all() and (out[49:] == -1.0).all()
    np.testing.assert_allclose(out[17:47], 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="fitted"):
        lb.apply(np.ones((100, 201), np.float32))
