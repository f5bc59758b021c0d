"""Tests of the heatmap codec (KneeAlignmentLib.heatmaps)."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from KneeAlignmentLib.heatmaps import HeatmapCodec, finite_items

# Anisotropic on purpose: 4 input px per cell along y, 3 along x.
CODEC = HeatmapCodec(input_size=(256, 144), heatmap_size=(64, 48), sigma=2.0)


def random_points_hm(rng, n, size, border_fraction=0.5):
    """(n, 2) heatmap-pixel points over the whole map area [-0.5, size - 0.5],
    border_fraction of them within one pixel of an edge, a fifth of those in a corner."""
    h, w = size
    pts = np.stack([rng.uniform(-0.5, w - 0.5, n), rng.uniform(-0.5, h - 0.5, n)], axis=-1)

    def near_edge(axis):
        hi = (w, h)[axis] - 0.5
        return rng.uniform(-0.5, 0.5) if rng.random() < 0.5 else rng.uniform(hi - 1.0, hi)

    for i in range(int(n * border_fraction)):
        pts[i, i % 2] = near_edge(i % 2)
        if i % 5 == 0:
            pts[i, 1 - i % 2] = near_edge(1 - i % 2)
    return pts


def test_coordinate_convention_matches_docstring_formula():
    (H, W), (h, w) = CODEC.input_size, CODEC.heatmap_size
    p = np.array([[0.0, 0.0], [-0.5, -0.5], [W - 0.5, H - 0.5], [17.3, 101.9]])
    expected = np.stack([(p[:, 0] + 0.5) * w / W - 0.5, (p[:, 1] + 0.5) * h / H - 0.5], -1)
    np.testing.assert_allclose(CODEC.to_heatmap(p), expected, atol=1e-12)
    # The outer edges of both grids coincide.
    np.testing.assert_allclose(CODEC.to_heatmap(p[1:3]), [[-0.5, -0.5], [w - 0.5, h - 0.5]], atol=1e-12)
    np.testing.assert_allclose(CODEC.to_input(CODEC.to_heatmap(p)), p, atol=1e-12)


@pytest.mark.parametrize("sigma", [1.0, 2.0, 3.0])
def test_round_trip_subpixel_everywhere_including_borders(sigma):
    codec = HeatmapCodec(input_size=(256, 144), heatmap_size=(64, 48), sigma=sigma)
    rng = np.random.default_rng(1234)
    pts_hm = random_points_hm(rng, 1500, codec.heatmap_size)
    targets, weights = codec.encode(codec.to_input(pts_hm))
    assert weights.min() == 1.0
    decoded_px, confidence = codec.decode(targets)
    err_hm = np.abs(codec.to_heatmap(decoded_px) - pts_hm)
    assert err_hm.max() < 0.05, f"worst error {err_hm.max():.4f} heatmap px"
    assert confidence.min() > 0.99


def test_round_trip_exact_at_the_outer_edges_and_corners():
    h, w = CODEC.heatmap_size
    edges = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [-0.5, h - 0.5], [w - 0.5, h - 0.5],
                      [-0.5, 30.25], [w - 0.5, 7.7], [20.1, -0.5], [3.3, h - 0.5]])
    targets, weights = CODEC.encode(CODEC.to_input(edges))
    assert weights.tolist() == [1.0] * len(edges)
    decoded, _ = CODEC.decode(targets)
    assert np.abs(CODEC.to_heatmap(decoded) - edges).max() < 0.05


def test_decode_recovers_peaks_wider_or_narrower_than_sigma():
    """Network outputs rarely match the target width or height; borders included."""
    rng = np.random.default_rng(7)
    pts_hm = random_points_hm(rng, 600, CODEC.heatmap_size)
    for sigma_out, amplitude in [(1.5, 0.7), (2.8, 0.9)]:
        other = dataclasses.replace(CODEC, sigma=sigma_out)
        targets, _ = other.encode(other.to_input(pts_hm))
        decoded, _ = CODEC.decode(amplitude * targets)
        assert np.abs(CODEC.to_heatmap(decoded) - pts_hm).max() < 0.05


def test_decode_is_robust_to_noise():
    rng = np.random.default_rng(11)
    pts_hm = random_points_hm(rng, 800, CODEC.heatmap_size, border_fraction=0.0)
    targets, _ = CODEC.encode(CODEC.to_input(pts_hm))
    noisy = 0.8 * targets + rng.normal(0.0, 0.01, targets.shape).astype(np.float32)
    decoded, confidence = CODEC.decode(noisy)
    err = np.linalg.norm(CODEC.to_heatmap(decoded) - pts_hm, axis=-1)
    assert np.sqrt(np.mean(err**2)) < 0.03
    assert err.max() < 0.25
    assert confidence.min() > 0.6


def test_batch_shapes_and_types():
    rng = np.random.default_rng(3)
    pts = CODEC.to_input(random_points_hm(rng, 5 * 7, CODEC.heatmap_size)).reshape(5, 7, 2)
    targets, weights = CODEC.encode(pts)
    assert targets.shape == (5, 7, 64, 48) and targets.dtype == np.float32
    assert weights.shape == (5, 7) and weights.dtype == np.float32
    decoded, conf = CODEC.decode(targets)
    assert isinstance(decoded, np.ndarray) and decoded.shape == (5, 7, 2)
    assert conf.shape == (5, 7) and conf.dtype == np.float32
    np.testing.assert_allclose(decoded, pts, atol=0.05 * 4)

    single_t, single_w = CODEC.encode(pts[2])
    assert single_t.shape == (7, 64, 48) and single_w.shape == (7,)
    np.testing.assert_array_equal(single_t, targets[2])
    assert CODEC.decode(single_t)[0].shape == (7, 2)
    assert CODEC.decode(targets[2, 3])[0].shape == (2,)

    tt, tw = CODEC.encode(torch.as_tensor(pts))
    assert isinstance(tt, torch.Tensor) and tt.dtype == torch.float32 and tw.shape == (5, 7)
    td, tc = CODEC.decode(tt)
    assert isinstance(td, torch.Tensor) and td.shape == (5, 7, 2) and tc.shape == (5, 7)


def test_torch_numpy_parity():
    rng = np.random.default_rng(5)
    pts = CODEC.to_input(random_points_hm(rng, 40, CODEC.heatmap_size)).reshape(4, 10, 2)
    t_np, w_np = CODEC.encode(pts)
    t_th, w_th = CODEC.encode(torch.as_tensor(pts))
    np.testing.assert_allclose(t_th.numpy(), t_np, atol=1e-6)
    np.testing.assert_array_equal(w_th.numpy(), w_np)
    noisy = t_np + rng.normal(0, 0.02, t_np.shape).astype(np.float32)
    p_np, c_np = CODEC.decode(noisy)
    p_th, c_th = CODEC.decode(torch.as_tensor(noisy))
    np.testing.assert_allclose(p_th.numpy(), p_np, atol=1e-5)
    np.testing.assert_allclose(c_th.numpy(), c_np, atol=1e-6)


def test_weights_and_targets_for_missing_hidden_and_outside_points():
    h, w = CODEC.heatmap_size
    # inside; missing; hidden; just left of the map; just below it; on the right edge
    pts_hm = np.array([[10.2, 20.7], [np.nan, 5.0], [12.0, 12.0], [-0.6, 30.0], [20.0, h - 0.4],
                       [w - 0.5, 0.0]])
    visible = np.array([True, True, False, True, True, True])
    targets, weights = CODEC.encode(CODEC.to_input(pts_hm), visible=visible)
    np.testing.assert_array_equal(weights, [1, 0, 0, 0, 0, 1])
    assert np.isfinite(targets).all()
    assert not targets[1:5].any()
    # Peak 1 at the exact sub-pixel point: the cell values follow the Gaussian.
    y, x = np.mgrid[0:h, 0:w]
    expected = np.exp(-((x - 10.2) ** 2 + (y - 20.7) ** 2) / (2 * CODEC.sigma**2))
    np.testing.assert_allclose(targets[0], expected, atol=1e-6)
    with pytest.raises(ValueError, match="visible"):
        CODEC.encode(CODEC.to_input(pts_hm), visible=visible[:3])


def test_confidence_high_for_clean_peak_low_for_flat_noisy_or_ambiguous_maps():
    rng = np.random.default_rng(9)
    h, w = CODEC.heatmap_size
    clean, _ = CODEC.encode(CODEC.to_input(np.array([[20.3, 33.6]])))
    _, c_clean = CODEC.decode(clean)
    assert c_clean[0] > 0.99
    flat_maps = np.stack([
        np.zeros((h, w)),
        np.full((h, w), 0.5),
        -np.ones((h, w)),
        rng.uniform(0.0, 1.0, (h, w)),
        rng.normal(0.0, 0.2, (h, w)),
    ]).astype(np.float32)
    points, c_flat = CODEC.decode(flat_maps)
    assert np.isfinite(points).all()
    assert c_flat.max() < 0.1, c_flat
    # A weak peak scores about its height; two equal peaks score well below one.
    _, c_weak = CODEC.decode(0.3 * clean)
    assert 0.25 < c_weak[0] < 0.35
    two, _ = CODEC.encode(CODEC.to_input(np.array([[20.3, 33.6], [35.0, 10.0]])))
    _, c_two = CODEC.decode(np.maximum(two[0], two[1]))
    assert c_two < 0.75


def test_soft_argmax_is_accurate_inside_and_differentiable():
    rng = np.random.default_rng(21)
    h, w = CODEC.heatmap_size
    margin = 3 * CODEC.sigma
    pts_hm = np.stack([rng.uniform(margin, w - 1 - margin, 300),
                       rng.uniform(margin, h - 1 - margin, 300)], -1)
    targets, _ = CODEC.encode(torch.as_tensor(CODEC.to_input(pts_hm)).reshape(3, 100, 2))
    heat = (0.8 * targets).requires_grad_(True)
    coords_px = CODEC.soft_argmax(heat)
    assert coords_px.shape == (3, 100, 2)
    err_hm = (CODEC.to_heatmap(coords_px.detach().reshape(-1, 2).double()) - torch.as_tensor(pts_hm)).abs()
    assert err_hm.max() < 0.02
    # Gradients reach the heatmap: moving mass to the right moves the x estimate right.
    coords_px[..., 0].sum().backward()
    grad = heat.grad
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    cell_x = torch.arange(w, dtype=torch.float64)[None, None, None, :]
    peak_x = torch.as_tensor(pts_hm[:, 0]).reshape(3, 100, 1, 1)
    above_floor = heat.detach() > 0.1 * 0.8 + 1e-3
    assert (grad[above_floor & (cell_x > peak_x + 0.5)] > 0).all()
    assert (grad[above_floor & (cell_x < peak_x - 0.5)] < 0).all()


def test_soft_argmax_degenerate_maps_stay_finite():
    h, w = CODEC.heatmap_size
    maps = torch.stack([torch.zeros(h, w), -torch.ones(h, w), torch.full((h, w), 0.3)]).requires_grad_(True)
    out = CODEC.soft_argmax(maps)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(maps.grad).all()


def test_invalid_arguments_raise_value_error():
    with pytest.raises(ValueError, match="input_size"):
        HeatmapCodec(input_size=(0, 64), heatmap_size=(16, 16))
    with pytest.raises(ValueError, match="heatmap_size"):
        HeatmapCodec(input_size=(64, 64), heatmap_size=(16.5, 16))
    with pytest.raises(ValueError, match="sigma"):
        HeatmapCodec(input_size=(64, 64), heatmap_size=(16, 16), sigma=float("nan"))
    with pytest.raises(ValueError, match="points_px"):
        CODEC.encode(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="heatmaps"):
        CODEC.decode(np.zeros((2, 64, 47), np.float32))
    bad = np.zeros((2, 64, 48), np.float32)
    bad[1, 3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        CODEC.decode(bad)
    with pytest.raises(ValueError, match="heatmaps"):
        CODEC.soft_argmax(np.zeros((64, 48), np.float32))


def test_finite_items_names_each_item_with_a_nan_or_infinity_even_where_the_sum_overflows():
    maps = torch.zeros(5, 3, 8, 8)
    maps[1, 2, 3, 4] = float("nan")
    maps[2, 0, 0, 0] = -float("inf")
    maps[3, :, :2, :2] = 3e38  # finite values whose float32 sum overflows
    maps[4, 0, 0, :2] = torch.tensor([float("inf"), -float("inf")])
    assert finite_items(maps).tolist() == [True, False, False, True, False]
    assert finite_items(torch.zeros(2, 4)).tolist() == [True, True]


def test_codec_round_trips_through_json():
    stored = json.loads(json.dumps(dataclasses.asdict(CODEC)))
    assert HeatmapCodec(**stored) == CODEC
