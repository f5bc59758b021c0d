"""Tiny annotated datasets for the training and evaluation tests.

``write_dataset`` writes radiograph-like images (a bright blob at every landmark on a
dim background) as PNG or DICOM DX, each with its Slicer ``.mrk.json``, the layout a
researcher's annotated folder has. Landmarks are the schema's example knee, scaled into
the image, with seeded per-case jitter; left knees are the mirror image of right ones
(landmark names are anatomical, so names stay with their points).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from dicom_factory import write_dx
from KneeAlignmentLib.markups import ImagePlane, write_landmarks
from KneeAlignmentLib.schema import example_landmarks_px, load_schema

SHAPE = (96, 80)  # (H, W): the 240 mm template fits at 3 mm per pixel
SPACING_MM = 3.0


def knee_points(kind: str, side: str, rng: np.random.Generator, shape=SHAPE, spacing_mm=SPACING_MM) -> np.ndarray:
    """(K, 2) px: the example knee with random valgus, shift and 0.3 px jitter."""
    points = example_landmarks_px(kind, atfa_valgus_deg=float(rng.uniform(-6, 8)), spacing_mm=spacing_mm,
                                  image_size=shape)
    points = points + rng.uniform(-3, 3, size=2) + rng.normal(0, 0.3, size=points.shape)
    if side == "L":
        points[:, 0] = shape[1] - 1 - points[:, 0]
    return points


def render(points_px: np.ndarray, shape=SHAPE) -> np.ndarray:
    """(H, W) float in [0, 1]: Gaussian blobs (sd 1 px) at the finite points on a 0.1 background."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    image = np.full(shape, 0.1)
    for x, y in points_px[np.isfinite(points_px).all(axis=1)]:
        image = np.maximum(image, np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 2.0))
    return image


def write_case(folder: Path, stem: str, kind: str, points_px: np.ndarray, *, fmt: str = "png",
               spacing_mm: float | None = None, laterality: str | None = None, shape=SHAPE) -> tuple[Path, Path]:
    """Write one image and its annotation; returns (image path, markups path)."""
    folder.mkdir(parents=True, exist_ok=True)
    stored = np.round(render(points_px, shape) * 255).astype(np.uint8)
    if fmt == "png":
        image = folder / f"{stem}.png"
        sitk.WriteImage(sitk.GetImageFromArray(stored), str(image))
        plane = ImagePlane.identity()
    else:
        image = folder / f"{stem}.dcm"
        spacing = (spacing_mm, spacing_mm)
        write_dx(image, stored, spacing_mm=spacing, image_laterality=laterality)
        plane = ImagePlane.identity(spacing)
    mrk = write_landmarks(folder / f"{stem}.mrk.json", load_schema(kind).names, points_px, plane)
    return image, mrk


def write_dataset(folder: Path, n: int, kind: str = "preop", *, fmt: str = "png", seed: int = 0) -> Path:
    """n cases case000..., alternating right and left knees (DICOM: with spacing and laterality)."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        side = "RL"[i % 2]
        write_case(folder, f"case{i:03d}", kind, knee_points(kind, side, rng), fmt=fmt,
                   spacing_mm=SPACING_MM if fmt == "dcm" else None, laterality=side if fmt == "dcm" else None)
    return folder
