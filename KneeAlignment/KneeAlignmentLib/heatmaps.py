"""The heatmap codec: landmark points <-> Gaussian heatmaps, shared by training and inference.

This module is the only place in the project that converts between network-input pixels
and heatmap cells, so training targets and inference decoding can never disagree.

Pixel convention (both grids): the centre of the top-left pixel is (0, 0), x is the
column and y the row, and a pixel covers [i - 0.5, i + 0.5]. An input of size (H, W)
and a heatmap of size (h, w) cover the same rectangle, so an input point (x, y) maps to

    x' = (x + 0.5) * w / W - 0.5,    y' = (y + 0.5) * h / H - 0.5.

Shape legend: N batch, K landmarks, (h, w) heatmap rows and columns; points are (..., 2)
as (x, y). ``*_px`` are input pixels, ``*_hm`` heatmap pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["HeatmapCodec", "finite_items"]

# Cells below this fraction of the peak are left out of the sub-pixel fit: their log is
# dominated by noise, and the H^2 weighting would make them irrelevant anyway.
_FIT_FLOOR = 0.05
# soft_argmax: fraction of the peak subtracted before the centroid (see its docstring).
_CENTROID_FLOOR = 0.1


def _to_tensor(array) -> tuple[torch.Tensor, bool]:
    """Return (float tensor, came_from_numpy); tensors keep their device."""
    if isinstance(array, torch.Tensor):
        return (array if array.is_floating_point() else array.double()), False
    arr = np.asarray(array)
    dtype = arr.dtype if arr.dtype.kind == "f" else np.float64
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=dtype)), True


def finite_items(x: torch.Tensor) -> torch.Tensor:
    """(B, ...) -> (B,) bool: every value of item b is finite.

    A finite sum proves it in one cheap pass (a NaN or an infinity makes the sum
    non-finite); only when some sum is not (or overflowed) are the values checked one by
    one. ``torch.isfinite`` on a local stage's heatmaps costs more than decoding them.
    """
    flat = x.reshape(x.shape[0], -1)
    ok = torch.isfinite(flat.sum(dim=1))
    return ok if bool(ok.all()) else torch.isfinite(flat).all(dim=1)


def image_size(value, name: str) -> tuple[int, int]:
    """(rows, cols) as two positive ints; ValueError naming ``name`` otherwise."""
    try:
        rows, cols = (int(v) for v in value)
        valid = (rows, cols) == tuple(value) and rows >= 1 and cols >= 1
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(f"{name} must be two positive integers (rows, cols), got {value!r}")
    return rows, cols


@dataclass(frozen=True)
class HeatmapCodec:
    """Encode points to Gaussian targets and decode heatmaps to sub-pixel points.

    Args:
        input_size: (H, W) of the network input the points live in.
        heatmap_size: (h, w) of the network output.
        sigma: standard deviation of the target Gaussian, in heatmap pixels.

    The fields are plain JSON values, so ``HeatmapCodec(**json.load(f))`` restores a
    codec stored with a model bundle (``dataclasses.asdict``).
    """

    input_size: tuple[int, int]
    heatmap_size: tuple[int, int]
    sigma: float = 2.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_size", image_size(self.input_size, "input_size"))
        object.__setattr__(self, "heatmap_size", image_size(self.heatmap_size, "heatmap_size"))
        sigma = self.sigma
        if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma must be a positive number of heatmap pixels, got {sigma!r}")
        object.__setattr__(self, "sigma", float(self.sigma))

    # -- coordinates --------------------------------------------------------------------

    @property
    def stride(self) -> tuple[float, float]:
        """Input pixels per heatmap pixel, (along x, along y)."""
        (H, W), (h, w) = self.input_size, self.heatmap_size
        return W / w, H / h

    def to_heatmap(self, points_px):
        """Input pixels (..., 2) -> heatmap pixels (..., 2); numpy or torch in and out."""
        sx, sy = self.stride
        x = (points_px[..., 0] + 0.5) / sx - 0.5
        y = (points_px[..., 1] + 0.5) / sy - 0.5
        return _stack(x, y, points_px)

    def to_input(self, points_hm):
        """Heatmap pixels (..., 2) -> input pixels (..., 2); numpy or torch in and out."""
        sx, sy = self.stride
        x = (points_hm[..., 0] + 0.5) * sx - 0.5
        y = (points_hm[..., 1] + 0.5) * sy - 0.5
        return _stack(x, y, points_hm)

    # -- encode -------------------------------------------------------------------------

    def encode(self, points_px, visible=None):
        """Gaussian targets for points.

        Args:
            points_px: (N, K, 2) or (K, 2) points in input pixels; NaN marks a missing point.
            visible: optional bool mask (N, K) or (K,); False marks an unannotated point.

        Returns:
            (targets, weights): targets (N, K, h, w) or (K, h, w) float32, a Gaussian of
            peak 1 centred exactly (sub-pixel) on each point; weights (N, K) or (K,)
            float32, 1 where the point is visible, finite and inside the heatmap area
            [-0.5, w - 0.5] x [-0.5, h - 0.5], else 0 (and that target is all zero).
            numpy in gives numpy out; a tensor gives tensors on its device.
        """
        pts, from_numpy = _to_tensor(points_px)
        if pts.ndim not in (2, 3) or pts.shape[-1] != 2:
            raise ValueError(f"points_px must be (N, K, 2) or (K, 2), got {tuple(pts.shape)}")
        pts_hm = self.to_heatmap(pts)
        h, w = self.heatmap_size
        finite = torch.isfinite(pts_hm).all(dim=-1)
        x, y = pts_hm[..., 0], pts_hm[..., 1]
        keep = finite & (x >= -0.5) & (x <= w - 0.5) & (y >= -0.5) & (y <= h - 0.5)
        if visible is not None:
            if not isinstance(visible, torch.Tensor):
                visible = torch.as_tensor(np.asarray(visible, dtype=bool))
            if visible.shape != keep.shape:
                raise ValueError(f"visible must be {tuple(keep.shape)}, got {tuple(visible.shape)}")
            keep = keep & visible.to(device=keep.device, dtype=torch.bool)
        centres = torch.where(keep[..., None], pts_hm, torch.zeros_like(pts_hm)).float()
        weights = keep.float()
        targets = self._render(centres) * weights[..., None, None]
        if from_numpy:
            return targets.numpy(), weights.numpy()
        return targets, weights

    def _render(self, points_hm: torch.Tensor) -> torch.Tensor:
        """Unnormalised Gaussians of peak 1 at points_hm (..., 2) -> (..., h, w) float32."""
        h, w = self.heatmap_size
        pts = points_hm.float()
        xs = torch.arange(w, dtype=torch.float32, device=pts.device)
        ys = torch.arange(h, dtype=torch.float32, device=pts.device)
        k = 1.0 / (2.0 * self.sigma**2)
        gx = torch.exp(-k * (xs - pts[..., 0:1]) ** 2)  # (..., w)
        gy = torch.exp(-k * (ys - pts[..., 1:2]) ** 2)  # (..., h)
        return gy[..., :, None] * gx[..., None, :]

    # -- decode -------------------------------------------------------------------------

    @property
    def window_radius(self) -> int:
        """Half-size of the fit window around the argmax, in heatmap pixels."""
        return max(2, math.ceil(2.5 * self.sigma))

    def decode(self, heatmaps):
        """Sub-pixel landmark positions and confidences from heatmaps.

        Method: a weighted least-squares fit of an isotropic Gaussian to the log heatmap in a
        window around the argmax (log H = a + b u + c v + d (u^2 + v^2), weights H^2, cells
        below 5 % of the peak and outside the map left out). A Gaussian's log is exactly
        this quadratic, so the fit is exact for Gaussian peaks of any width, including
        peaks cut off by the map border, where centroids and soft-argmax are biased. If the
        fitted curvature is not clearly concave (flat or noisy map) the codec's sigma is used
        instead. The offset from the argmax is clamped to one heatmap pixel.

        Confidence in [0, 1]: clip(a, 0, 1) * max(0, r) with, over the whole map, a the
        amplitude of the ideal target at the decoded point (peak 1, the codec's sigma)
        fitted to the heatmap by linear regression (so a constant background does not
        count) and r their Pearson correlation. An ideal target scores 1; a flat map,
        noise, a weak peak or a second strong peak score low.

        Args:
            heatmaps: (..., h, w), e.g. (N, K, h, w); numpy or torch (any device).

        Returns:
            (points_px, confidence): (..., 2) input pixels in the heatmaps' float dtype and
            (...,) float32, same library and device as the input.
        """
        hm, from_numpy = _to_tensor(heatmaps)
        h, w = self.heatmap_size
        if hm.ndim < 2 or tuple(hm.shape[-2:]) != (h, w):
            raise ValueError(f"heatmaps must have shape (..., {h}, {w}), got {tuple(hm.shape)}")
        if not finite_items(hm.reshape(1, -1)).all():
            raise ValueError("heatmaps contain NaN or infinite values")
        lead = hm.shape[:-2]
        flat = hm.detach().reshape(-1, h, w).float()
        points_hm = self._fit_peaks(flat)
        confidence = self._confidence(flat, points_hm)
        points_px = self.to_input(points_hm).to(hm.dtype)
        points_px, confidence = points_px.reshape(*lead, 2), confidence.reshape(lead)
        if from_numpy:
            return points_px.numpy(), confidence.numpy()
        return points_px, confidence

    def _fit_peaks(self, flat: torch.Tensor) -> torch.Tensor:
        """(B, h, w) heatmaps -> (B, 2) peak positions in heatmap pixels (float64 fit)."""
        B, h, w = flat.shape
        dev = flat.device
        peak, idx = flat.reshape(B, h * w).max(dim=1)
        my, mx = idx // w, idx % w
        r = self.window_radius
        offs = torch.arange(-r, r + 1, device=dev)
        rows = my[:, None, None] + offs[None, :, None]  # (B, S, 1)
        cols = mx[:, None, None] + offs[None, None, :]  # (B, 1, S)
        inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)  # (B, S, S)
        batch = torch.arange(B, device=dev)[:, None, None]
        vals = flat[batch, rows.clamp(0, h - 1), cols.clamp(0, w - 1)].double()

        used = inside & (vals > 0) & (vals >= _FIT_FLOOR * peak.double()[:, None, None])
        wts = torch.where(used, vals * vals, 0.0).flatten(1)
        logv = torch.log(torch.where(used, vals, 1.0)).flatten(1)
        u = offs.double()[None, None, :].expand_as(vals).flatten(1)
        v = offs.double()[None, :, None].expand_as(vals).flatten(1)
        rr = u * u + v * v
        k0 = 1.0 / (2.0 * self.sigma**2)

        # Free isotropic curvature: exact for Gaussians whatever their width.
        phi = torch.stack([torch.ones_like(u), u, v, rr], dim=-1)  # (B, S*S, 4)
        coef = _weighted_lstsq(phi, logv, wts)
        d_free = coef[:, 3]
        # Known curvature: stable when too few cells carry signal.
        coef_k = _weighted_lstsq(phi[..., :3], logv + k0 * rr, wts)
        enough = used.flatten(1).sum(dim=1) >= 6
        # A fitted width beyond 4 sigma means no real peak: fall back to sigma.
        concave = d_free < -k0 / 16.0
        use_free = (enough & concave)[:, None]
        bc = torch.where(use_free, coef[:, 1:3], coef_k[:, 1:3])
        d = torch.where(use_free[:, 0], d_free, torch.full_like(d_free, -k0))
        offset = (bc / (-2.0 * d[:, None])).clamp(-1.0, 1.0)
        return torch.stack([mx, my], dim=-1).double() + offset

    def _confidence(self, flat: torch.Tensor, points_hm: torch.Tensor) -> torch.Tensor:
        """(B, h, w) heatmaps, (B, 2) decoded points -> (B,) confidence in [0, 1]."""
        B, h, w = flat.shape
        a = flat.reshape(B, h * w)
        t = self._render(points_hm).reshape(B, h * w)
        a = a - a.mean(dim=1, keepdim=True)
        t = t - t.mean(dim=1, keepdim=True)
        cov, var_a, var_t = (a * t).sum(dim=1), (a * a).sum(dim=1), (t * t).sum(dim=1)
        amplitude = cov / var_t.clamp_min(1e-30)
        denom = torch.sqrt(var_a * var_t)
        corr = torch.where(denom > 0, cov / denom.clamp_min(1e-30), 0.0)
        return (amplitude.clamp(0.0, 1.0) * corr.clamp(0.0, 1.0)).float()

    # -- differentiable decoding for training -------------------------------------------

    def soft_argmax(self, heatmaps: torch.Tensor) -> torch.Tensor:
        """Differentiable decoding (integral regression) for coordinate losses in training.

        The centroid of relu(H - 0.1 * peak) within the fit window around the argmax,
        mapped to input pixels with the codec's convention. Level sets of a Gaussian are
        circles about its centre, so the thresholded centroid is unbiased for a peak the
        window contains (error below 0.02 heatmap px on ideal targets, sigma >= 1), and the
        threshold and window keep background and distant blobs out. Peaks cut off by the
        map border are pulled inwards (up to about 0.8 sigma, half a Gaussian): use
        :meth:`decode` for inference. Gradients reach the cells above the threshold inside
        the window; a map with no positive peak yields its argmax (no gradient).

        Args:
            heatmaps: (..., h, w) tensor, e.g. (N, K, h, w) network output.

        Returns:
            (..., 2) points in input pixels, differentiable w.r.t. heatmaps.
        """
        h, w = self.heatmap_size
        if not isinstance(heatmaps, torch.Tensor) or tuple(heatmaps.shape[-2:]) != (h, w):
            raise ValueError(f"heatmaps must be a tensor of shape (..., {h}, {w})")
        lead = heatmaps.shape[:-2]
        flat = heatmaps.reshape(-1, h * w)
        peak, idx = flat.detach().max(dim=1)
        my, mx = (idx // w).to(flat.dtype), (idx % w).to(flat.dtype)
        xs = torch.arange(w, dtype=flat.dtype, device=flat.device)
        ys = torch.arange(h, dtype=flat.dtype, device=flat.device)
        r = self.window_radius
        in_x = (xs[None, :] - mx[:, None]).abs() <= r  # (B, w)
        in_y = (ys[None, :] - my[:, None]).abs() <= r  # (B, h)
        window = (in_y[:, :, None] & in_x[:, None, :]).reshape(-1, h * w)
        floor = _CENTROID_FLOOR * peak.clamp_min(0.0)
        wts = (torch.relu(flat - floor[:, None]) * window).reshape(-1, h, w)
        # eps * argmax keeps maps without a positive peak finite (they decode to the argmax).
        eps = 1e-12
        total = wts.sum(dim=(1, 2)) + eps
        x = ((wts.sum(dim=1) * xs).sum(dim=-1) + eps * mx) / total
        y = ((wts.sum(dim=2) * ys).sum(dim=-1) + eps * my) / total
        return self.to_input(torch.stack([x, y], dim=-1)).reshape(*lead, 2)


def _stack(x, y, like):
    if isinstance(like, torch.Tensor):
        return torch.stack([x, y], dim=-1)
    return np.stack([x, y], axis=-1)


def _weighted_lstsq(phi: torch.Tensor, z: torch.Tensor, wts: torch.Tensor) -> torch.Tensor:
    """Batched weighted least squares: phi (B, n, p), z (B, n), wts (B, n) -> (B, p).

    A tiny ridge keeps the normal equations solvable when a map offers too few cells;
    the unconstrained coefficients then fall to 0 (no offset from the argmax).
    """
    A = torch.einsum("bn,bni,bnj->bij", wts, phi, phi)
    rhs = torch.einsum("bn,bni,bn->bi", wts, phi, z)
    p = phi.shape[-1]
    ridge = 1e-10 * A.diagonal(dim1=1, dim2=2).amax(dim=1) + 1e-300
    A = A + ridge[:, None, None] * torch.eye(p, dtype=A.dtype, device=A.device)
    return torch.linalg.solve(A, rhs)
