"""Robustness of the models to image changes beyond the phantom's own variation.

Not a test (pytest does not collect it). Run::

    .venv/bin/python Testing/benchmarks/bench_robustness.py --data runs/shipped/test/preop [--n 100]
        [--models DIR] [--threads N]

Takes the first ``--n`` cases of an annotated folder (e.g. a phantom test set), applies
each perturbation below to image and truth alike, measures with the models (default: the
shipped ones; the kind from the annotation) and prints, per perturbation, the aTFA mean
absolute difference (FTS and FNTS), the cases with an error above 3 degrees, how many of
those quality control flagged, and the flagged share of all cases. A robust model keeps
its accuracy or, failing that, flags its doubt.
"""

from __future__ import annotations

import argparse
import dataclasses
import math

import numpy as np
import torch

from KneeAlignmentLib.bundle.modelset import ModelSet
from KneeAlignmentLib.bundle.resolve import SHIPPED_MODELS_DIR
from KneeAlignmentLib.datasets import AnnotatedImage, find_cases
from KneeAlignmentLib.evaluation import evaluate, summarize
from KneeAlignmentLib.imageio import radiograph_from_array
from KneeAlignmentLib.phantom.xray import gaussian_blur


def _with(case: AnnotatedImage, pixels: np.ndarray, points: np.ndarray | None = None,
          spacing: tuple[float, float] | None = None) -> AnnotatedImage:
    r = case.radiograph
    radiograph = radiograph_from_array(np.clip(pixels, 0.0, 1.0), spacing_mm=spacing or r.spacing_mm, side=r.side,
                                       value_range=(0.0, 1.0))
    return dataclasses.replace(case, radiograph=radiograph,
                               points_px=case.points_px if points is None else points)


def _rotate(case: AnnotatedImage, degrees: float) -> AnnotatedImage:
    """Turned about the image centre (corners filled black), the truth with it."""
    image = case.radiograph.pixels
    h, w = image.shape
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    # output pixel p samples input R^-1 (p - centre) + centre
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    u, v = xs - centre[0], ys - centre[1]
    src_x, src_y = c * u + s * v + centre[0], -s * u + c * v + centre[1]
    grid = torch.tensor(np.stack([2 * src_x / (w - 1) - 1, 2 * src_y / (h - 1) - 1], axis=-1), dtype=torch.float32)
    out = torch.nn.functional.grid_sample(torch.tensor(image, dtype=torch.float32)[None, None], grid[None],
                                          align_corners=True, padding_mode="zeros")[0, 0].numpy()
    p = case.points_px - centre
    points = np.stack([c * p[:, 0] - s * p[:, 1], s * p[:, 0] + c * p[:, 1]], axis=1) + centre
    return _with(case, out.astype(np.float64), points)


def _half_resolution(case: AnnotatedImage) -> AnnotatedImage:
    image = case.radiograph.pixels
    h, w = (image.shape[0] // 2) * 2, (image.shape[1] // 2) * 2
    small = image[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    spacing = tuple(2 * s for s in case.radiograph.spacing_mm) if case.radiograph.spacing_mm else None
    return _with(case, small, (case.points_px + 0.5) / 2 - 0.5, spacing)


def _off_centre(case: AnnotatedImage) -> AnnotatedImage:
    """The top quarter cut away and a black band added below: the knee sits high in the image."""
    image = case.radiograph.pixels
    h = image.shape[0]
    cut = h // 4
    shifted = np.concatenate([image[cut:], np.zeros((cut, image.shape[1]))], axis=0)
    return _with(case, shifted, case.points_px - [0.0, cut])


PERTURBATIONS = {
    "none": lambda c, rng: c,
    "inverted (MONOCHROME1 read as 2)": lambda c, rng: _with(c, 1.0 - c.radiograph.pixels),
    "gamma 0.5": lambda c, rng: _with(c, c.radiograph.pixels ** 0.5),
    "gamma 2": lambda c, rng: _with(c, c.radiograph.pixels ** 2.0),
    "noise sd 0.05": lambda c, rng: _with(c, c.radiograph.pixels + rng.normal(0.0, 0.05, c.radiograph.shape)),
    "blur 2 px": lambda c, rng: _with(c, gaussian_blur(c.radiograph.pixels, (2.0, 2.0))),
    "rotated 15 deg": lambda c, rng: _rotate(c, 15.0),
    "half resolution": lambda c, rng: _half_resolution(c),
    "knee off centre": lambda c, rng: _off_centre(c),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="annotated folder (e.g. a phantom test set)")
    parser.add_argument("--n", type=int, default=100, help="cases to use (default 100)")
    parser.add_argument("--models", default=None, help="models folder (default: the shipped models)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    models = ModelSet.load(args.models or SHIPPED_MODELS_DIR, device="cpu")
    cases = [c.load() for c in find_cases(args.data)[: args.n]]
    print(f"{len(cases)} cases of {args.data}; models "
          + ", ".join(m.info.model_id for m in (models.global_model, *models.local_models.values())))
    print("| perturbation | aTFA MAD FTS / FNTS (deg) | errors > 3 deg | of those flagged | flagged |")
    print("| --- | --- | --- | --- | --- |")
    for name, perturb in PERTURBATIONS.items():
        rng = np.random.default_rng(0)
        summary = summarize(evaluate([perturb(c, rng) for c in cases], models))
        a, qc = summary["angles"], summary["qc"]
        print(f"| {name} | {a['fts'].get('mean_abs_diff', math.nan):.2f} / {a['fnts'].get('mean_abs_diff', math.nan):.2f} "
              f"| {qc['large_errors']} | {qc['large_errors_flagged']} | {qc['flagged']}/{summary['cases']} |", flush=True)


if __name__ == "__main__":
    main()
