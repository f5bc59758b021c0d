"""FTS from image evidence (``axis_check``) against the landmark FTS, on phantoms, under the
appearance changes real AP knee crops have.

Not a test (pytest does not collect it). Run::

    .venv/bin/python Testing/benchmarks/bench_axes.py --kind preop --n 100 --seed 9001 [--size 1024 832]
        [--models DIR] [--threads N] [--csv FILE]

Renders ``--n`` held-out phantoms in memory (``phantom.dataset.render_case``; seed 9001 is
disjoint from the training seeds 1001/1002), applies each appearance change below to the
image (and moves the truth with any crop), measures with the models (default: the shipped
ones; kind given, side given as ``kneealign measure --side`` would) and prints per change:

- FTS mean absolute difference (MAD) and the share of cases off by more than 3 degrees,
  for the reported FTS (image-refined where the evidence was good) and for the landmark
  FTS alone (``Measurement.fts_axis["atfa_fts_landmarks_deg"]``), and FNTS beside them;
- how many cases used image evidence for both bones;
- ``axis_evidence_disagree``: how often it fired, and its precision and recall for a
  landmark-FTS error above 3 degrees (the error it exists to catch) and for a reported-FTS
  error above 3 degrees;
- ``weak_axis_evidence`` (a bone's edges could not confirm its axis; the landmark axis
  is reported for it): how often it fired, and its precision/recall for a reported-FTS
  error above 3 degrees;
- the distribution (median, p95, max) of |image FTS - landmark FTS| on cases whose
  landmark FTS is within 1 degree of the truth, the basis for the flag's threshold.

Appearance changes (each on the phantom's float image, bright = dense):

- "DICOM as is": the phantom with its spacing;
- "8-bit": requantised to 256 grey levels (p0.5-p99.5 window);
- "8-bit JPEG q70": and JPEG-compressed at quality 70 (Pillow);
- "unsharp mask": strong edge enhancement (image + 1.5 (image - Gaussian sigma 3 mm));
- "local contrast equalisation": the large scales flattened (image - Gaussian sigma 25 mm,
  divided by the local sd at 25 mm), as consoles' multi-scale processing does;
- "144 mm field": cropped to 144 mm wide (300 mm tall at most) around the knee, offset
  by up to 15 mm, as the real crops;
- "PNG without spacing": spacing dropped (the scale then comes from the anatomy);
- "real-like": all of the above at once (8-bit JPEG, unsharp, equalised, narrow, no spacing).
"""

from __future__ import annotations

import argparse
import io
import math

import numpy as np
import torch
from PIL import Image

from KneeAlignmentLib.bundle.modelset import ModelSet
from KneeAlignmentLib.bundle.resolve import SHIPPED_MODELS_DIR
from KneeAlignmentLib.geometry import compute_alignment
from KneeAlignmentLib.imageio import radiograph_from_array
from KneeAlignmentLib.phantom.dataset import render_case
from KneeAlignmentLib.phantom.xray import gaussian_blur
from KneeAlignmentLib.pipeline import measure_batch
from KneeAlignmentLib.schema import load_schema

FAILURE_DEG = 3.0


def _eight_bit(img: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(img, [0.5, 99.5])
    return np.round(np.clip((img - lo) / (hi - lo), 0, 1) * 255.0) / 255.0


def _jpeg(img: np.ndarray, quality: int = 70) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())), dtype=np.float64) / 255.0


def _unsharp(img: np.ndarray, mm_px: float) -> np.ndarray:
    s = 3.0 / mm_px
    return np.clip(img + 1.5 * (img - gaussian_blur(img, (s, s))), 0, 1)


def _equalise(img: np.ndarray, mm_px: float) -> np.ndarray:
    s = 25.0 / mm_px
    mean = gaussian_blur(img, (s, s))
    sd = np.sqrt(np.maximum(gaussian_blur((img - mean) ** 2, (s, s)), 1e-6))
    out = (img - mean) / sd
    lo, hi = np.percentile(out, [0.5, 99.5])
    return np.clip((out - lo) / (hi - lo), 0, 1)


def _narrow(img: np.ndarray, points: np.ndarray, knee: np.ndarray, mm_px: float, rng) -> tuple:
    h, w = img.shape
    width = int(round(144.0 / mm_px))
    height = min(h, int(round(300.0 / mm_px)))
    cx = knee[0] + rng.uniform(-15, 15) / mm_px
    x0 = int(np.clip(round(cx - width / 2), 0, max(0, w - width)))
    y0 = int(np.clip(round(knee[1] - height / 2), 0, max(0, h - height)))
    return img[y0:y0 + height, x0:x0 + width], points - [x0, y0]


def perturb(name: str, case, rng) -> tuple[np.ndarray, np.ndarray, tuple | None]:
    """(image, truth points, spacing) of a case under the named change."""
    img, pts, spacing = case.image.astype(np.float64), case.landmarks_px.copy(), case.spacing_mm
    mm_px = spacing[0]
    schema = load_schema(case.kind)
    knee = schema.reference_points(pts)[0]
    if name == "DICOM as is":
        return img, pts, spacing
    if name == "8-bit":
        return _eight_bit(img), pts, spacing
    if name == "8-bit JPEG q70":
        return _jpeg(_eight_bit(img)), pts, spacing
    if name == "unsharp mask":
        return _unsharp(img, mm_px), pts, spacing
    if name == "local contrast equalisation":
        return _equalise(img, mm_px), pts, spacing
    if name == "144 mm field":
        img, pts = _narrow(img, pts, knee, mm_px, rng)
        return img, pts, spacing
    if name == "PNG without spacing":
        return _eight_bit(img), pts, None
    if name == "real-like":
        img, pts = _narrow(_unsharp(_equalise(img, mm_px), mm_px), pts, knee, mm_px, rng)
        return _jpeg(_eight_bit(img)), pts, None
    raise ValueError(name)


CHANGES = ("DICOM as is", "8-bit", "8-bit JPEG q70", "unsharp mask", "local contrast equalisation", "144 mm field",
           "PNG without spacing", "real-like")


def _pr(flagged: np.ndarray, wrong: np.ndarray) -> str:
    tp = int((flagged & wrong).sum())
    return f"{tp}/{int(flagged.sum())} wrong, {tp}/{int(wrong.sum())} caught"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=("preop", "postop"), default="preop")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--seed", type=int, default=9001)
    parser.add_argument("--size", type=int, nargs=2, default=(1024, 832), metavar=("ROWS", "COLS"))
    parser.add_argument("--models", default=None, help="models folder (default: the shipped models)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--changes", nargs="*", default=CHANGES, choices=CHANGES)
    parser.add_argument("--csv", default=None, help="write one row per case and change here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    models = ModelSet.load(args.models or SHIPPED_MODELS_DIR, device="cpu")
    schema = load_schema(args.kind)
    cases = [render_case(args.kind, args.seed, i, tuple(args.size)) for i in range(args.n)]
    print(f"{len(cases)} {args.kind} phantoms, seed {args.seed}, {args.size[0]}x{args.size[1]}; models "
          + ", ".join(m.info.model_id for m in (models.global_model, *models.local_models.values())))
    print("| change | FTS MAD reported / landmarks (deg) | FTS > 3 deg reported / landmarks | FNTS MAD | image axes "
          "used (both bones) | axis_evidence_disagree fired | its precision/recall, landmark FTS > 3 | "
          "reported FTS > 3 | weak_axis_evidence fired; precision/recall, reported FTS > 3 | "
          "abs(image - landmark) on good landmark cases: median / p95 / max |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    rows = []
    for name in args.changes:
        rng = np.random.default_rng(0)
        inputs, truths = [], []
        for case in cases:
            img, pts, spacing = perturb(name, case, rng)
            inputs.append(radiograph_from_array(img.astype(np.float32), spacing_mm=spacing, side=case.side,
                                                value_range=(0.0, 1.0)))
            truths.append(compute_alignment(pts, schema, case.side, spacing))
        results = measure_batch(inputs, models, kind=args.kind, batch_size=4)
        true_fts = np.array([t.atfa_fts_deg for t in truths])
        true_fnts = np.array([t.atfa_fnts_deg for t in truths])
        nan = math.nan
        rep = np.array([m.alignment.atfa_fts_deg if m.alignment else nan for m in results])
        lmk = np.array([m.fts_axis["atfa_fts_landmarks_deg"] if m.fts_axis else nan for m in results])
        fnts = np.array([m.alignment.atfa_fnts_deg if m.alignment else nan for m in results])
        both = np.array([bool(m.fts_axis) and m.fts_axis["source"] == "image" for m in results])
        flag = np.array(["axis_evidence_disagree" in m.flag_codes for m in results])
        weak = np.array(["weak_axis_evidence" in m.flag_codes for m in results])
        e_rep, e_lmk, e_fnts = np.abs(rep - true_fts), np.abs(lmk - true_fts), np.abs(fnts - true_fnts)
        wrong_rep, wrong_lmk = ~(e_rep <= FAILURE_DEG), ~(e_lmk <= FAILURE_DEG)  # NaN (not measured) is wrong
        diff = np.abs(rep - lmk)[(e_lmk <= 1.0) & both]
        q = (lambda v: f"{np.median(v):.2f} / {np.percentile(v, 95):.2f} / {v.max():.2f}") if diff.size else \
            (lambda v: "n/a")
        print(f"| {name} | {np.nanmean(e_rep):.2f} / {np.nanmean(e_lmk):.2f} | {wrong_rep.mean():.0%} / "
              f"{wrong_lmk.mean():.0%} | {np.nanmean(e_fnts):.2f} | {both.sum()}/{len(results)} | {flag.sum()} | "
              f"{_pr(flag, wrong_lmk)} | {_pr(flag, wrong_rep)} | {weak.sum()}; {_pr(weak, wrong_rep)} | "
              f"{q(diff)} |", flush=True)
        for case, m, r, lm, t in zip(cases, results, rep, lmk, true_fts):
            source = m.fts_axis["source"] if m.fts_axis else ""
            rows.append((name, case.index, t, r, lm, source, ";".join(m.flag_codes)))
    if args.csv:
        import csv
        with open(args.csv, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(("change", "case", "true_fts", "reported_fts", "landmark_fts", "fts_source", "flags"))
            writer.writerows(rows)


if __name__ == "__main__":
    main()
