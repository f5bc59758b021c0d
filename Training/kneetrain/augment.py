"""Augmentation with MONAI transforms, in which the landmarks move exactly with the image.

Geometric transforms (MONAI ``RandAffined``, ``RandFlipd``) act on a ``MetaTensor``,
whose affine records every resampling; MONAI's ``ApplyTransformToPointsd`` then maps
the points through the inverse of that affine. Image and points are therefore moved
by the same matrix, not by two separately written formulas. A horizontal flip turns a
right knee into a left one in the radiological view; landmark names are anatomical,
so every landmark keeps its index and only the side label changes (no pair swap).

Everything happens in network-input space (after the letterbox or the local crop), at
the resolution the network sees, so augmentation costs little. Intensity inversion is
the exception: it is applied to the radiograph before the view (``invert_radiograph``)
so that the letterbox padding stays black as at inference; so is the field-of-view crop
(``crop_field_of_view``), which changes what the view sees of the image.

Per-sample randomness comes from one integer seed (see ``sample_seed``): the same
(seed, epoch, index) gives the same augmentation in any worker process, which makes
runs reproducible and resumable.

Shapes: image (1, H, W) float32; points (K, 2) as (x, y) in input px, NaN = missing.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    ApplyTransformToPointsd,
    Compose,
    RandAdjustContrastd,
    RandAffined,
    RandCoarseDropoutd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandScaleIntensityFixedMeand,
)

from KneeAlignmentLib.phantom.xray import gaussian_blur

from .config import AugmentConfig

__all__ = ["Augmenter", "sample_seed", "invert_radiograph", "crop_field_of_view", "film_look", "occlude"]


def sample_seed(*keys: int) -> int:
    """A 31-bit seed from integer keys such as (run seed, stream, epoch, index)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0] >> 1)


def invert_radiograph(image: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """With probability ``cfg.invert.prob`` return 1 - image (image (H, W) in [0, 1])."""
    if cfg.invert.prob > 0.0 and rng.random() < cfg.invert.prob:
        return 1.0 - image
    return image


def crop_field_of_view(image: np.ndarray, cfg: AugmentConfig,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """With probability ``cfg.field_of_view.prob`` cut the radiograph (H, W) to a smaller field.

    Returns (image, offset): offset (2,) is the (x, y) of the kept part's first pixel in
    the input, to subtract from points. No random draw when the probability is 0.
    """
    f = cfg.field_of_view
    if f.prob > 0.0 and rng.random() < f.prob:
        h, w = image.shape
        top, bottom = (rng.uniform(0.0, f.max_cut, 2) * h).astype(int)
        left, right = (rng.uniform(0.0, f.max_cut, 2) * w).astype(int)
        return image[top:h - bottom, left:w - right], np.array([left, top], dtype=np.float64)
    return image, np.zeros(2)


def film_look(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random DR console and export look of a view (H, W) in [0, 1], bright = dense.

    Real consoles equalise thickness (the medullary canal ends up barely brighter than the
    soft tissue beside the bone) and enhance local contrast and edges, then export 8 bits
    with black and white levels of their own; the sizes are in input px.
    """
    y = image.astype(np.float64)
    if rng.random() < 0.7:  # thickness equalisation
        big = gaussian_blur(y, (rng.uniform(4.0, 30.0),) * 2)
        y = y - rng.uniform(0.3, 0.95) * (big - big.mean())
    for _ in range(int(rng.integers(0, 3))):  # local contrast / edge enhancement, one or two scales
        sigma = rng.uniform(0.8, 8.0)
        y = y + rng.uniform(0.2, 1.5) * (y - gaussian_blur(y, (sigma, sigma)))
    lo, hi = np.percentile(y, [rng.uniform(0.0, 2.0), rng.uniform(98.0, 100.0)])
    y = np.clip((y - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    knots = np.sort(rng.uniform(0.1, 0.9, 2))  # a random monotone tone curve
    y = np.interp(y, [0.0, *knots, 1.0], [0.0, *np.sort(np.clip(knots + rng.normal(0.0, 0.12, 2), 0.02, 0.98)), 1.0])
    black, white = rng.uniform(0.0, 0.1), rng.uniform(0.65, 1.0)
    y = black + (white - black) * y
    if rng.random() < 0.5:  # correlated (denoised or blurred) noise
        noise = gaussian_blur(rng.standard_normal(y.shape), (rng.uniform(0.0, 2.0),) * 2)
        y = y + rng.uniform(0.0, 0.03) * noise / max(float(noise.std()), 1e-6)
    levels = float(rng.choice([63.0, 127.0, 255.0, 1023.0]))  # bit depth of the export
    return np.clip(np.round(y * levels) / levels, 0.0, 1.0).astype(np.float32)


def occlude(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The field of a standing long-leg film in a view (H, W) in [0, 1]: the other leg
    (the view mirrored) entering at one edge, and/or a ruler's ticks along an edge."""
    y = image.copy()
    H, W = y.shape
    if rng.random() < 0.7:
        band = int(rng.uniform(0.04, 0.3) * W)
        if band > 0:
            mirrored = y[:, ::-1] * rng.uniform(0.6, 1.0)
            shift = int(rng.uniform(0.0, 0.3) * W)  # which part of the leg enters the field
            if rng.random() < 0.5:  # at the right edge
                y[:, W - band:] = np.maximum(y[:, W - band:], np.roll(mirrored, -shift, axis=1)[:, W - band:])
            else:
                y[:, :band] = np.maximum(y[:, :band], np.roll(mirrored, shift, axis=1)[:, :band])
    if rng.random() < 0.6:
        pitch = rng.uniform(3.0, 12.0)  # 5 mm in input px
        x0 = int(rng.uniform(0.0, 0.1) * W)
        x0 = x0 if rng.random() < 0.5 else W - 1 - x0
        direction = 1 if x0 < W // 2 else -1
        value = rng.uniform(0.8, 1.0)
        for k, row in enumerate(np.arange(rng.uniform(0.0, pitch), H, pitch)):
            length = int(round(pitch * (1.2 if k % 2 == 0 else 0.6)))
            xs = np.clip(x0 + direction * np.arange(length), 0, W - 1)
            y[int(row), xs] = value
        y[:, x0] = value
    return y


class Augmenter:
    """Random geometric and intensity augmentation of one network input and its points.

    Args:
        cfg: augmentation parameters.
        input_size: (H, W) of the network input (translations are fractions of it).
    """

    def __init__(self, cfg: AugmentConfig, input_size: tuple[int, int]) -> None:
        self.cfg = cfg
        H, W = input_size
        a = cfg.affine
        geometric = []
        if a.prob > 0.0:
            geometric.append(RandAffined(
                keys="image", prob=a.prob, rotate_range=math.radians(a.rotate_deg),
                scale_range=(a.scale, a.scale), translate_range=(a.translate_frac * H, a.translate_frac * W),
                shear_range=(a.shear, a.shear), mode="bilinear", padding_mode="zeros"))
        if cfg.flip.prob > 0.0:
            geometric.append(RandFlipd(keys="image", prob=cfg.flip.prob, spatial_axis=1))  # axis 1 = columns
        intensity = []
        if cfg.gamma.prob > 0.0:
            intensity.append(RandAdjustContrastd(keys="image", prob=cfg.gamma.prob, gamma=cfg.gamma.range))
        if cfg.contrast.prob > 0.0:
            lo, hi = cfg.contrast.range
            intensity.append(RandScaleIntensityFixedMeand(keys="image", prob=cfg.contrast.prob,
                                                          factors=(lo - 1.0, hi - 1.0)))
        if cfg.noise.prob > 0.0:
            intensity.append(RandGaussianNoised(keys="image", prob=cfg.noise.prob, std=cfg.noise.std))
        if cfg.blur.prob > 0.0:
            intensity.append(RandGaussianSmoothd(keys="image", prob=cfg.blur.prob, sigma_x=cfg.blur.range,
                                                 sigma_y=cfg.blur.range))
        c = cfg.cutout
        if c.prob > 0.0:
            side = min(H, W)
            intensity.append(RandCoarseDropoutd(
                keys="image", prob=c.prob, holes=c.holes, max_holes=c.holes,
                spatial_size=max(1, round(c.size_frac[0] * side)),
                max_spatial_size=max(1, round(c.size_frac[1] * side)),
                fill_value=c.fill))
        self._geometric = Compose(geometric) if geometric else None
        self._to_points = ApplyTransformToPointsd(keys="points", refer_keys="image", invert_affine=True)
        self._intensity = Compose(intensity) if intensity else None
        self._film, self._occluders = cfg.film.prob, cfg.occluders.prob

    def __call__(self, image: torch.Tensor, points_px: np.ndarray, side: str, seed: int):
        """Augment one sample.

        Args:
            image: (1, H, W) float32 tensor.
            points_px: (K, 2) float, (x, y) input px.
            side: "L" or "R" before augmentation.
            seed: per-sample seed (``sample_seed``).

        Returns:
            (image (1, H, W) float32 tensor, points (K, 2) float64, side after a flip).
        """
        if image.ndim != 3 or image.shape[0] != 1:
            raise ValueError(f"image must be (1, H, W), got {tuple(image.shape)}")
        points_px = np.asarray(points_px, dtype=np.float64)
        if self._geometric is not None:
            self._geometric.set_random_state(seed=seed)
            # MONAI points are (C, N, dims) in array-axis order: (row, col) = (y, x).
            data = {"image": MetaTensor(image.float()),
                    "points": torch.from_numpy(np.ascontiguousarray(points_px[None, :, ::-1]))}
            data = self._to_points(self._geometric(data))
            linear = data["image"].affine[:2, :2]
            if torch.linalg.det(linear.double()) < 0:  # an odd number of mirrorings
                side = {"L": "R", "R": "L"}[side]
            image = data["image"].as_tensor()
            points_px = data["points"][0].numpy()[:, ::-1].astype(np.float64)
        if self._intensity is not None:
            self._intensity.set_random_state(seed=(seed + 1) % 2**31)
            image = self._intensity({"image": image})["image"]
            image = image.as_tensor() if isinstance(image, MetaTensor) else image
        if self._film > 0.0 or self._occluders > 0.0:
            rng = np.random.default_rng((seed + 2) % 2**31)
            view = image[0].float().numpy()
            if rng.random() < self._occluders:
                view = occlude(view, rng)
            if rng.random() < self._film:
                view = film_look(view, rng)
            image = torch.from_numpy(np.ascontiguousarray(view))[None]
        return image.float().contiguous(), np.ascontiguousarray(points_px), side
