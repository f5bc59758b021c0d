"""Losses for heatmap landmark networks: wing loss on sub-pixel coordinates plus a heatmap term.

Coordinates come from the heatmaps by the codec's differentiable ``soft_argmax`` (the
same codec that makes the targets and decodes at inference). Soft-argmax pulls peaks
cut by the map border inwards, so targets within ``border_sigmas`` Gaussian sds of the
edge get no coordinate loss; the heatmap term (MSE against the codec's Gaussian
targets) supervises them, and gives every landmark a useful gradient early in
training when the maps have no peak yet. Stacked networks are supervised at every
stack (intermediate supervision), with equal weights.

Units: coordinate errors in heatmap px (so ``wing_w``/``wing_eps`` mean the same for
every input size); the heatmap term per landmark is sum((pred - target)^2) / (pi
sigma^2), which is 1 for an all-zero prediction of a full target.

Shapes: N batch, S stacks, K landmarks, (h, w) heatmap; points (N, K, 2) as (x, y) in
input px, NaN where missing.
"""

from __future__ import annotations

import math

import torch

from KneeAlignmentLib.heatmaps import HeatmapCodec

__all__ = ["wing_loss", "LandmarkLoss"]


def wing_loss(error: torch.Tensor, w: float, eps: float) -> torch.Tensor:
    """Wing loss (Feng et al. 2018) of non-negative distances ``error`` (any shape), elementwise.

    w * ln(1 + e / eps) below w, linear (slope 1) above, continuous at e = w.
    """
    c = w - w * math.log1p(w / eps)
    return torch.where(error < w, w * torch.log1p(error / eps), error - c)


class LandmarkLoss:
    """Wing loss on soft-argmax coordinates + ``heatmap_weight`` x heatmap MSE, over all stacks.

    Args:
        codec: the stage's heatmap codec.
        wing_w, wing_eps: wing-loss parameters in heatmap px.
        heatmap_weight: weight of the heatmap term (0: coordinates only).
        border_sigmas: targets closer than this many sigma to the heatmap edge get no
            coordinate loss.
    """

    def __init__(self, codec: HeatmapCodec, wing_w: float = 10.0, wing_eps: float = 2.0,
                 heatmap_weight: float = 10.0, border_sigmas: float = 2.0) -> None:
        self.codec = codec
        self.wing_w, self.wing_eps = float(wing_w), float(wing_eps)
        self.heatmap_weight = float(heatmap_weight)
        self.border_sigmas = float(border_sigmas)

    def coordinate_mask(self, points_px: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """(N, K) True where a visible target lies at least ``border_sigmas`` sigma inside the map."""
        h, w = self.codec.heatmap_size
        p = self.codec.to_heatmap(points_px)
        margin = self.border_sigmas * self.codec.sigma - 0.5  # map area is [-0.5, w - 0.5]
        x, y = p[..., 0], p[..., 1]
        inside = (x >= margin) & (x <= w - 1 - margin) & (y >= margin) & (y <= h - 1 - margin)
        return visible & inside & torch.isfinite(p).all(dim=-1)

    def __call__(self, heatmaps: torch.Tensor, points_px: torch.Tensor,
                 visible: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss of heatmaps (N, S, K, h, w) against points (N, K, 2) with mask visible (N, K).

        Returns:
            (total, parts): the scalar loss to minimise, and detached scalars "coord"
            (mean wing loss), "heatmap" (mean heatmap term) and "error_hm" (mean final-
            stack soft-argmax error in heatmap px over coordinate-supervised points).
        """
        if heatmaps.ndim != 5 or tuple(heatmaps.shape[-2:]) != self.codec.heatmap_size:
            raise ValueError(f"heatmaps must be (N, S, K, {self.codec.heatmap_size[0]}, "
                             f"{self.codec.heatmap_size[1]}), got {tuple(heatmaps.shape)}")
        heatmaps = heatmaps.float()
        points_px = points_px.float()
        targets, weights = self.codec.encode(points_px, visible)  # (N, K, h, w), (N, K)
        coord_mask = self.coordinate_mask(points_px, weights > 0).float()
        target_hm = self.codec.to_heatmap(torch.nan_to_num(points_px))
        n_coord = coord_mask.sum().clamp_min(1.0)
        n_visible = weights.sum().clamp_min(1.0)
        norm = math.pi * self.codec.sigma**2
        coord_terms, heatmap_terms = [], []
        for s in range(heatmaps.shape[1]):
            maps = heatmaps[:, s]
            pred_hm = self.codec.to_heatmap(self.codec.soft_argmax(maps))
            distance = torch.linalg.vector_norm(pred_hm - target_hm, dim=-1)
            coord_terms.append((wing_loss(distance, self.wing_w, self.wing_eps) * coord_mask).sum() / n_coord)
            per_landmark = ((maps - targets) ** 2).sum(dim=(-2, -1)) / norm
            heatmap_terms.append((per_landmark * weights).sum() / n_visible)
        coord = torch.stack(coord_terms).mean()
        heatmap = torch.stack(heatmap_terms).mean()
        total = coord + self.heatmap_weight * heatmap
        error = ((distance * coord_mask).sum() / n_coord).detach()
        return total, {"coord": coord.detach(), "heatmap": heatmap.detach(), "error_hm": error}
