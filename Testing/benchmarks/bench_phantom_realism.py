"""The phantom held against real AP knee films: the aggregate figures of
``../shared/real-films.md``, measured the same way on phantom cases.

    python Testing/benchmarks/bench_phantom_realism.py [--n 24] [--seed 4242] [--size 1400 672] [--figure PNG]

Per case (grey values as exported, scaled to 0-255; femoral shaft 60-140 mm above the
joint line, tibial shaft 60-140 mm below it, every 5 mm, from the true landmarks):
outer shaft widths; medullary canal (central 30 % of the shaft), cortex (0.5-2.5 mm inside
each outer edge) and soft tissue (12 mm outside each edge) grey values, as shares of
p99 - p1; grey-value percentiles; high-frequency noise (sd of the image minus its
Gaussian blur, sigma 2 px, in the soft tissue beside the femur, in grey levels of 255);
aTFA (FTS). Prints phantom mean +- sd beside the real figures.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from KneeAlignmentLib.phantom.dataset import render_case
from KneeAlignmentLib.phantom.xray import gaussian_blur
from KneeAlignmentLib.schema import load_schema

# ../shared/real-films.md (93 real knees): (mean, sd) or a single mean
REAL = {
    "femoral shaft width (mm)": (29.9, 2.7),
    "tibial shaft width (mm)": (23.2, 3.2),
    "aTFA FTS (deg, valgus +)": (-2.6, 6.7),
    "grey p1": (8, 6), "grey p50": (74, 16), "grey p99": (194, 23),
    "canal - soft tissue (share)": (0.05, None),
    "cortex - canal (share)": (0.27, 0.07),
    "cortex - soft tissue (share)": (0.32, 0.07),
    "median above p1 (share)": (0.35, None),
    "HF noise in soft tissue (grey levels)": (0.84, 0.24),
}


def _cortex_x(points: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """x of a cortex polyline (K, 2) at image rows (linear in y); NaN outside it."""
    order = np.argsort(points[:, 1])
    p = points[order]
    return np.interp(rows, p[:, 1], p[:, 0], left=np.nan, right=np.nan)


def _band(img: np.ndarray, row: int, x0: float, x1: float) -> float:
    lo, hi = int(round(min(x0, x1))), int(round(max(x0, x1)))
    lo, hi = max(lo, 0), min(hi, img.shape[1] - 1)
    return float(img[row, lo:hi + 1].mean()) if hi >= lo else np.nan


def measure_case(case) -> dict[str, float]:
    pts = case.landmarks_px
    idx = {n: i for i, n in enumerate(load_schema(case.kind).names)}

    def group(prefix):
        return pts[[i for n, i in idx.items() if n.startswith(prefix)]]

    mm = case.spacing_mm[0]
    img = case.image.astype(np.float64) * 255.0  # as exported, 0-255
    femoral_joint = max(group("FLK")[:, 1].max(), group("FMK")[:, 1].max())
    tibial_joint = min(group("TLP")[:, 1].min(), group("TMP")[:, 1].min())
    out: dict[str, list[float]] = {k: [] for k in ("fw", "tw", "canal", "cortex", "soft")}
    for bone, joint, sign in (("F", femoral_joint, -1.0), ("T", tibial_joint, 1.0)):
        rows = np.round(joint + sign * np.arange(60.0, 140.1, 5.0) / mm).astype(int)
        rows = rows[(rows >= 0) & (rows < img.shape[0])]
        xl, xm = _cortex_x(group(bone + "LC"), rows), _cortex_x(group(bone + "MC"), rows)
        for r, a, b in zip(rows, xl, xm):
            if np.isnan(a) or np.isnan(b):
                continue
            lo, hi = min(a, b), max(a, b)
            out["fw" if bone == "F" else "tw"].append((hi - lo) * mm)
            if bone != "F":
                continue
            mid, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
            out["canal"].append(_band(img, r, mid - 0.15 * half * 2, mid + 0.15 * half * 2))
            out["cortex"].append(np.nanmean([_band(img, r, lo + 0.5 / mm, lo + 2.5 / mm),
                                             _band(img, r, hi - 2.5 / mm, hi - 0.5 / mm)]))
            out["soft"].append(np.nanmean([_band(img, r, lo - 13 / mm, lo - 11 / mm),
                                           _band(img, r, hi + 11 / mm, hi + 13 / mm)]))
    p1, p50, p99 = np.percentile(img, [1, 50, 99])
    rng_ = max(p99 - p1, 1e-6)
    canal, cortex, soft = (float(np.nanmean(out[k])) for k in ("canal", "cortex", "soft"))
    hf = img - gaussian_blur(img, (2.0, 2.0))
    # soft tissue beside the femoral shaft, 12 mm outside its cortices, 4 mm boxes
    samples = []
    rows = np.round(femoral_joint - np.arange(60.0, 140.1, 5.0) / mm).astype(int)
    xl, xm = _cortex_x(group("FLC"), rows), _cortex_x(group("FMC"), rows)
    for r, a, b in zip(rows, xl, xm):
        if np.isnan(a) or np.isnan(b) or not 0 <= r < img.shape[0]:
            continue
        for x in (min(a, b) - 12 / mm, max(a, b) + 12 / mm):
            x0, x1 = int(x - 2 / mm), int(x + 2 / mm)
            if 0 <= x0 and x1 < img.shape[1]:
                samples.append(hf[r, x0:x1])
    return {
        "femoral shaft width (mm)": float(np.mean(out["fw"])),
        "tibial shaft width (mm)": float(np.mean(out["tw"])),
        "aTFA FTS (deg, valgus +)": float(case.truth["atfa_fts_deg"]),
        "grey p1": p1, "grey p50": p50, "grey p99": p99,
        "canal - soft tissue (share)": (canal - soft) / rng_,
        "cortex - canal (share)": (cortex - canal) / rng_,
        "cortex - soft tissue (share)": (cortex - soft) / rng_,
        "median above p1 (share)": (p50 - p1) / rng_,
        "HF noise in soft tissue (grey levels)": float(np.std(np.concatenate(samples))) if samples else np.nan,
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--seed", type=int, default=4242)
    ap.add_argument("--kind", default="preop")
    ap.add_argument("--size", type=int, nargs=2, default=(1400, 672), metavar=("H", "W"))
    ap.add_argument("--figure", type=Path, help="write a phantom-vs-real bar chart here")
    args = ap.parse_args(argv)
    rows = [measure_case(render_case(args.kind, args.seed, i, tuple(args.size))) for i in range(args.n)]
    keys = list(REAL)
    print(f"{args.n} {args.kind} phantoms, {args.size[0]} x {args.size[1]} px, seed {args.seed}")
    print("| what | real | phantom |\n| --- | --- | --- |")
    stats = {}
    for k in keys:
        v = np.array([r[k] for r in rows], dtype=float)
        m, s = float(np.nanmean(v)), float(np.nanstd(v))
        stats[k] = (m, s)
        rm, rs = REAL[k]
        real = f"{rm:g}" + (f" ± {rs:g}" if rs is not None else "")
        print(f"| {k} | {real} | {m:.3g} ± {s:.2g} |")
    if args.figure:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        shares = [k for k in keys if "share" in k]
        fig, ax = plt.subplots(figsize=(7, 3.2))
        x = np.arange(len(shares))
        ax.bar(x - 0.2, [REAL[k][0] for k in shares], 0.4, label="real films (93 knees)")
        ax.bar(x + 0.2, [stats[k][0] for k in shares], 0.4, yerr=[stats[k][1] for k in shares],
               label=f"phantom ({args.n}, {args.size[0]}x{args.size[1]})")
        ax.set_xticks(x, [k.replace(" (share)", "") for k in shares], fontsize=8)
        ax.set_ylabel("share of p99 - p1")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.figure, dpi=110)
        print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
