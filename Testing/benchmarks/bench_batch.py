"""Benchmark of cohort measurement: images/s and peak memory of ``batch.run_batch`` on 2000 x 1600 DICOMs.

Not a test (pytest does not collect it). Run::

    .venv/bin/python Testing/benchmarks/bench_batch.py [--n 20] [--preset lite|paper|both]
        [--models DIR] [--workers 2] [--batch-size 4] [--kind auto] [--dicom-sr] [--threads N]

It writes ``--n`` synthetic DX files (smooth random anatomy-free images; decoding and
network cost do not depend on the content) and measures them as ``kneealign measure
--out`` does: decoding in DataLoader workers, both networks, geometry, and writing the
JSON, markups and overlay of every case (plus SR and Secondary Capture with
``--dicom-sr``). Models: ``--models``, else the shipped models when present, else
random-init bundles of each ``--preset`` built on the fly (speed does not depend on
the weights). Reported: images/s over the whole run (model loading excluded), the
networks' mean time per image (both stages; the rest is decoding not hidden by the
workers, geometry and writing the outputs), the main process's peak RSS, its RSS after the first and the last images (flat memory
shows as equal numbers), and the largest worker's peak RSS.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from KneeAlignmentLib.batch import BatchOptions, discover_inputs, run_batch
from KneeAlignmentLib.bundle.format import save_bundle
from KneeAlignmentLib.bundle.modelset import ModelSet
from KneeAlignmentLib.bundle.resolve import ROLE_DIRS, SHIPPED_MODELS_DIR
from KneeAlignmentLib.dicom_dx import full_range_window, write_dx
from KneeAlignmentLib.frame import FrameSpec
from KneeAlignmentLib.heatmaps import HeatmapCodec
from KneeAlignmentLib.measurement import reference_point_names
from KneeAlignmentLib.networks import build_network, preset
from KneeAlignmentLib.schema import KINDS, load_schema

SHAPE = (2000, 1600)  # (H, W)
SPACING_MM = (0.15, 0.15)
# Crop fractions of the two reference points, as Training/configs/local_*.yaml place them.
REF_FRACTIONS = ((0.5, 0.49), (0.5, 0.29))


def write_inputs(folder: Path, n: int) -> None:
    """n synthetic 12-bit DX files: smooth random images (coarse noise upsampled), seeded."""
    rng = np.random.default_rng(0)
    for i in range(n):
        coarse = torch.from_numpy(rng.random((1, 1, SHAPE[0] // 100, SHAPE[1] // 100)))
        image = torch.nn.functional.interpolate(coarse, size=SHAPE, mode="bilinear")[0, 0].numpy()
        write_dx(folder / f"knee{i:04d}.dcm", np.round(image * 4095).astype(np.uint16), imager_spacing_mm=SPACING_MM,
                 image_laterality="RL"[i % 2], bits_stored=12, rescale=(1.0, 0.0), window=full_range_window(12),
                 uid_entropy=["bench", i], patient_id=f"BENCH-{i:04d}")


def random_models(folder: Path, name: str) -> Path:
    """A models folder of random-init bundles of preset ``name``."""
    def save(directory: str, stage: str, kind: str | None, names) -> None:
        config = preset(name, stage, len(names))
        torch.manual_seed(0)
        h, w = config.input_size
        frame = {} if stage == "global" else dataclasses.asdict(
            FrameSpec((h, w), tuple((fx * w, fy * h) for fx, fy in REF_FRACTIONS)))
        save_bundle(folder / directory, build_network(config).eval(), name=f"{name}-random-{directory}",
                    version="0.0.0", stage=stage, schema=kind, landmark_names=names,
                    codec=dataclasses.asdict(HeatmapCodec(config.input_size, config.heatmap_size, 2.0)), frame=frame,
                    description="random initialisation for benchmarking", data_source="none", preset=name)

    save(ROLE_DIRS["global"], "global", None, reference_point_names())
    for kind in KINDS:
        save(ROLE_DIRS[kind], "local", kind, load_schema(kind).names)
    return folder


def rss_mb() -> float:
    """Resident memory of this process now (Linux /proc), MB."""
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def bench(label: str, models_dir: Path, inputs_dir: Path, out: Path, args) -> None:
    models = ModelSet.load(models_dir, device=args.device)
    inputs = discover_inputs([inputs_dir])
    options = BatchOptions(kind=args.kind, batch_size=args.batch_size, workers=args.workers,
                           dicom_results=args.dicom_sr, progress=False)
    rss: list[float] = []
    network_ms: list[float] = []

    def sample(record) -> None:
        rss.append(rss_mb())
        if record.measurement is not None:
            network_ms.append(record.measurement.timings_ms["total"])

    start = time.perf_counter()
    summary = run_batch(inputs, models, out, options, on_case=sample)
    elapsed = time.perf_counter() - start
    main_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux
    worker_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"{label:<22}{len(inputs):>4}{elapsed:>8.1f}{len(inputs) / elapsed:>10.2f}"
          f"{np.mean(network_ms) / 1000 if network_ms else float('nan'):>11.2f}{main_peak:>9.0f}"
          f"{rss[0]:>11.0f}{rss[-1]:>10.0f}{worker_peak:>12.0f}   "
          f"{summary.counts['ok']} ok, {summary.counts['flagged']} flagged, {summary.counts['error']} errors")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="number of images (default 20)")
    parser.add_argument("--preset", choices=["lite", "paper", "both"], default="lite",
                        help="random-init preset(s) when no models are given or shipped (default lite)")
    parser.add_argument("--models", type=Path, help="a models folder (default: the shipped models if present)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader decoding processes (default 2)")
    parser.add_argument("--batch-size", type=int, default=4, help="network batch size (default 4)")
    parser.add_argument("--kind", choices=["auto", "preop", "postop"], default="auto",
                        help="auto runs both local models, as `kneealign measure` does by default")
    parser.add_argument("--dicom-sr", action="store_true", help="also write the DICOM SR and Secondary Capture")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="bench_batch_") as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        start = time.perf_counter()
        write_inputs(tmp / "in", args.n)
        print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads, "
              f"{os.cpu_count()} CPUs; {args.n} DX {SHAPE[0]}x{SHAPE[1]} written in {time.perf_counter() - start:.1f} s; "
              f"kind {args.kind}, batch {args.batch_size}, {args.workers} workers, "
              f"outputs: json, mrk.json, png{', sr.dcm, sc.dcm' if args.dicom_sr else ''}")
        shipped = SHIPPED_MODELS_DIR
        if args.models is not None:
            runs = [(f"models {args.models.name}", args.models)]
        elif (shipped / ROLE_DIRS["global"]).is_dir():
            runs = [("shipped models", shipped)]
        else:
            names = ("lite", "paper") if args.preset == "both" else (args.preset,)
            runs = [(f"{name} (random init)", random_models(tmp / f"models_{name}", name)) for name in names]
        print(f"{'models':<22}{'n':>4}{'s':>8}{'images/s':>10}{'net s/img':>11}{'peak MB':>9}{'MB first':>11}"
              f"{'MB last':>10}"
              f"{'worker MB':>12}   results")
        for label, models_dir in runs:
            bench(label, models_dir, tmp / "in", tmp / f"out_{len(label)}_{models_dir.name}", args)


if __name__ == "__main__":
    main()
