"""Stage-by-stage profile of `kneealign measure` on phantom DICOMs, and the per-Apply time of the Slicer logic.

Not a test (pytest does not collect it). Run::

    .venv/bin/python Testing/benchmarks/bench_profile.py --data DIR [--n 200] [--threads 2]
        [--models DIR] [--kind auto] [--dicom-sr] [--device cpu|cuda] [--repeat 5] [--omp-default]

``--data``: a folder of DICOMs, e.g. ``kneealign synth --kind preop --n 20 --seed 5 --size 2000 1600
--out DIR`` (only ``*.dcm`` are used; with ``--n`` larger than the folder holds, the files are
used again under other names: decoding costs the same).

Three figures:

1. one image, in-process and with the models loaded: ``run_batch`` on one file with
   ``workers=0`` (so reading happens where it can be timed), best of ``--repeat``
   after a warm-up, split into stages;
2. ``--n`` images the same way (stage times summed over the run, per image), and the
   same ``--n`` images with ``kneealign measure``'s defaults (2 workers, which on the
   CPU read and measure while this process writes; batch 2) for the real throughput and
   the main process's memory (RSS after the first and the last image: flat memory shows
   as equal numbers);
3. per Apply of the Slicer module: what ``KneeAlignmentLogic.measure`` runs below the
   MRML layer (``volume.radiograph_from_volume`` on the volume's array and its source
   file, which it reads as the command line does, then
   ``workflow.measure_radiograph`` with the logic's model cache and a progress
   callback), median of ``--repeat`` after a warm-up.

Stages are timed by wrapping the functions that do them (exclusive times: a stage
called inside another is not counted twice); "other" is the rest of the wall time
(loops, data loader, Python). ``measure`` draws and writes a batch's outputs in a
writer thread while the networks run on the next batch, so in a many-image run the
stage times add up to more than the wall time where they overlapped ("other" then
comes out negative). The stage list is the issue's: read (file and DICOM
header), decode (pixel data), VOI/normalise, global resize, global net, frame + warp,
local net, decode heatmaps, geometry, QC, overlay, JSON/markups/CSV writes, DICOM SR/SC, and since
issue 14 "axes from image" (``axis_check.refine_fts``: FTS axes from the shaft edges).
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import shutil
import statistics
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import sys  # noqa: E402

if "--omp-default" not in sys.argv:  # before torch loads
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `kneealign` sets it (cli.OMP_WAIT_POLICY)

import numpy as np  # noqa: E402
import torch  # noqa: E402

STAGES = ("read", "decode", "VOI/normalise", "global resize", "global net", "frame + warp", "local net",
          "decode heatmaps", "geometry", "axes from image", "QC", "overlay", "JSON/markups/CSV", "DICOM SR/SC")


class StageClock:
    """Exclusive wall time per stage of wrapped functions."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._local = threading.local()  # per thread: [start, time spent in nested stages] of open calls
        self._undo: list = []

    @property
    def _stack(self) -> list[list[float]]:
        if not hasattr(self._local, "stack"):
            self._local.stack = []
        return self._local.stack

    def wrap(self, owner, name: str, stage: str) -> None:
        original = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
        if original is None:
            return  # not in this version of the code
        if isinstance(original, property):
            getter = self._timed(original.fget, stage)
            setattr(owner, name, property(getter, original.fset, original.fdel, original.__doc__))
        elif isinstance(original, staticmethod):
            setattr(owner, name, staticmethod(self._timed(original.__func__, stage)))
        elif isinstance(original, classmethod):
            setattr(owner, name, classmethod(self._timed(original.__func__, stage)))
        else:
            setattr(owner, name, self._timed(original, stage))
        self._undo.append((owner, name, original))

    def _timed(self, function, stage: str):
        @functools.wraps(function)
        def timed(*args, **kwargs):
            self._stack.append([time.perf_counter(), 0.0])
            try:
                return function(*args, **kwargs)
            finally:
                start, nested = self._stack.pop()
                spent = time.perf_counter() - start
                self.seconds[stage] += spent - nested
                if self._stack:
                    self._stack[-1][1] += spent
        return timed

    def restore(self) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)
        self._undo.clear()


def instrument(clock: StageClock, models) -> None:
    """Wrap the functions of each stage (those that exist in the code being measured)."""
    import pydicom
    from pydicom.dataset import Dataset

    from KneeAlignmentLib import batch, frame, geometry, heatmaps, imageio, measurement, overlay, pipeline, qc

    clock.wrap(imageio, "_read_head", "read")
    clock.wrap(pydicom, "dcmread", "read")
    clock.wrap(Dataset, "pixel_array", "decode")
    for name in ("_modality_and_voi", "radiograph_from_array", "_distinct_values", "_expand"):
        clock.wrap(imageio, name, "VOI/normalise")
    clock.wrap(imageio.Radiograph, "__post_init__", "VOI/normalise")
    clock.wrap(frame.Letterbox, "apply", "global resize")
    clock.wrap(frame.ReferenceFrame, "warp", "frame + warp")
    clock.wrap(frame.ReferenceFrame, "from_reference_points", "frame + warp")
    clock.wrap(heatmaps.HeatmapCodec, "decode", "decode heatmaps")
    for module in (pipeline, geometry):
        clock.wrap(module, "compute_alignment", "geometry")
        clock.wrap(module, "infer_side", "geometry")
    clock.wrap(pipeline, "refine_fts", "axes from image")  # issue 14: FTS axes from the shaft edges
    for name in ("confidence_flags", "border_flags", "anatomy_flags", "ordered"):
        clock.wrap(qc, name, "QC")
    clock.wrap(overlay, "draw_result", "overlay")
    clock.wrap(measurement.Measurement, "to_json", "JSON/markups/CSV")
    clock.wrap(measurement.Measurement, "to_csv_row", "JSON/markups/CSV")
    for name in ("write_markups", "write_atomic", "_summary_text"):
        clock.wrap(batch, name, "JSON/markups/CSV")
    clock.wrap(batch, "_write_dicom_results", "DICOM SR/SC")
    # The networks: wrap each module's forward (an instance attribute shadows the class's).
    networks = [(models.global_model.network, "global net")]
    networks += [(model.network, "local net") for model in models.local_models.values()]
    for network, stage in networks:
        network.forward = clock._timed(type(network).forward.__get__(network), stage)
        clock._undo.append((network, "forward", None))


def uninstrument(clock: StageClock) -> None:
    for owner, name, original in reversed(clock._undo):
        if original is None:
            del owner.__dict__[name]
        else:
            setattr(owner, name, original)
    clock._undo.clear()


def rss_mb() -> float:
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def inputs_folder(data: Path, n: int, where: Path) -> Path:
    """``n`` DICOMs from ``data`` in a new folder (hard links or copies: ``discover_inputs`` measures a file
    reached through two symbolic links once)."""
    files = sorted(data.glob("*.dcm"))
    if not files:
        raise SystemExit(f"no *.dcm in {data}")
    where.mkdir(parents=True)
    for i in range(n):
        try:
            os.link(files[i % len(files)], where / f"img{i:05d}.dcm")
        except OSError:  # another file system
            shutil.copyfile(files[i % len(files)], where / f"img{i:05d}.dcm")
    return where


def profiled_run(inputs, models, out: Path, options) -> tuple[float, dict[str, float]]:
    from KneeAlignmentLib.batch import run_batch

    clock = StageClock()
    instrument(clock, models)
    try:
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        run_batch(inputs, models, out, options)
        wall = time.perf_counter() - start
    finally:
        uninstrument(clock)
    return wall, dict(clock.seconds)


def print_profile(title: str, runs: list[tuple[str, int, float, dict[str, float]]]) -> None:
    print(f"\n{title}: ms per image (exclusive), in-process, models loaded")
    print(f"{'stage':<20}" + "".join(f"{label:>16}" for label, *_ in runs))
    for stage in (*STAGES, "other", "total (wall)"):
        cells = []
        for _, n, wall, seconds in runs:
            if stage == "other":
                value = wall - sum(seconds.values())
            elif stage == "total (wall)":
                value = wall
            else:
                value = seconds.get(stage)
            cells.append("-" if value is None else f"{1000 * value / n:.1f}")
        print(f"{stage:<20}" + "".join(f"{c:>16}" for c in cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of DICOMs (kneealign synth output)")
    parser.add_argument("--n", type=int, default=200, help="images in the batch runs (default 200)")
    parser.add_argument("--models", type=Path, help="models folder (default: the shipped models)")
    parser.add_argument("--preset", choices=["lite", "paper"],
                        help="instead of --models: random-init bundles of this preset (speed does not depend on "
                             "the weights), e.g. paper on a GPU")
    parser.add_argument("--kind", choices=["auto", "preop", "postop"], default="auto")
    parser.add_argument("--dicom-sr", action="store_true", help="also write the DICOM SR and Secondary Capture")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--repeat", type=int, default=5, help="repetitions of the one-image figures (default 5)")
    parser.add_argument("--workers", type=int, default=2,
                        help="workers of the throughput run (default 2; on the CPU they read and measure)")
    parser.add_argument("--batch-size", type=int, default=2, help="network batch size (default 2, as measure's)")
    parser.add_argument("--skip-batch", action="store_true", help="only the one-image and per-Apply figures")
    parser.add_argument("--omp-default", action="store_true",
                        help="leave OMP_WAIT_POLICY unset (as before kneealign set it to PASSIVE)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    import KneeAlignmentLib
    from KneeAlignmentLib.batch import BatchOptions, discover_inputs, run_batch
    from KneeAlignmentLib.imageio import read_radiograph
    from KneeAlignmentLib.bundle.modelset import ModelSet
    from KneeAlignmentLib.bundle.resolve import SHIPPED_MODELS_DIR, resolve_models

    models_dir = args.models or SHIPPED_MODELS_DIR
    made = tempfile.TemporaryDirectory(prefix="bench_profile_models_")
    if args.preset is not None:
        from bench_batch import random_models  # beside this script

        models_dir = random_models(Path(made.name), args.preset)
    start = time.perf_counter()
    models = ModelSet.load(models_dir, device=args.device)
    load_s = time.perf_counter() - start
    print(f"KneeAlignmentLib from {Path(KneeAlignmentLib.__file__).parent}; torch {torch.__version__}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
          f"device {args.device}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; models {models_dir} "
          f"loaded in {load_s:.2f} s; kind {args.kind}; batch {args.batch_size}")
    in_process = BatchOptions(kind=args.kind, batch_size=args.batch_size, workers=0, dicom_results=args.dicom_sr,
                              progress=False)
    with tempfile.TemporaryDirectory(prefix="bench_profile_") as tmp:
        tmp = Path(tmp)
        one = discover_inputs([inputs_folder(args.data, 1, tmp / "one")])
        run_batch(one, models, tmp / "warm", in_process)  # warm-up: first calls, caches
        singles = [profiled_run(one, models, tmp / "out1", in_process) for _ in range(args.repeat)]
        wall, seconds = min(singles, key=lambda run: run[0])
        runs = [("1 image", 1, wall, seconds)]
        if not args.skip_batch:
            many = discover_inputs([inputs_folder(args.data, args.n, tmp / "many")])
            wall_n, seconds_n = profiled_run(many, models, tmp / "outn", in_process)
            runs.append((f"{args.n} images", args.n, wall_n, seconds_n))
        print_profile("Profile", runs)
        print(f"one image in-process: median {1000 * statistics.median(r[0] for r in singles):.0f} ms, "
              f"best {1000 * wall:.0f} ms over {args.repeat} runs")

        if not args.skip_batch:
            rss: list[float] = []
            options = BatchOptions(kind=args.kind, batch_size=args.batch_size, workers=args.workers,
                                   dicom_results=args.dicom_sr, progress=False)
            start = time.perf_counter()
            summary = run_batch(many, models, tmp / "outw", options, on_case=lambda record: rss.append(rss_mb()))
            elapsed = time.perf_counter() - start
            role = "measuring" if models.device.type == "cpu" else "decoding"
            print(f"\nthroughput, {args.workers} {role} workers, batch {args.batch_size}: {args.n} images in "
                  f"{elapsed:.1f} s = {args.n / elapsed:.2f} images/s ({1000 * elapsed / args.n:.0f} ms per image); "
                  f"main RSS {rss[0]:.0f} MB after the first image, {rss[-1]:.0f} MB after the last, peak "
                  f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; "
                  f"{summary.counts['ok']} ok, {summary.counts['flagged']} flagged, {summary.counts['error']} errors")

            # Decoding alone, as the workers do it: what the networks can be fed at most.
            from torch.utils.data import DataLoader

            from KneeAlignmentLib.batch import _as_list, _ReadDataset

            loader = DataLoader(_ReadDataset(many, options.max_pixels), batch_size=args.batch_size,
                                num_workers=args.workers, collate_fn=_as_list,
                                prefetch_factor=2 if args.workers else None)
            start = time.perf_counter()
            count = sum(len(reads) for reads, _ in loader)
            elapsed = time.perf_counter() - start
            print(f"decoding alone, {args.workers} workers: {count / elapsed:.1f} images/s")

        # Per Apply of the Slicer module: the logic's calls below MRML.
        from KneeAlignmentLib.bundle.modelset import ModelCache
        from KneeAlignmentLib.volume import radiograph_from_volume
        from KneeAlignmentLib.workflow import measure_radiograph

        radiograph = read_radiograph(one[0].path)
        volume = np.round(radiograph.pixels * 4095).astype(np.int16)[None]  # (1, H, W) as arrayFromVolume gives
        ijk_to_ras = np.diag([-0.15, -0.15, 1.0, 1.0])
        paths = resolve_models(models_dir)
        cache, stages = ModelCache(), []
        times = []
        for i in range(args.repeat + 1):
            start = time.perf_counter()
            image = radiograph_from_volume(volume, ijk_to_ras, source_file=one[0].path, side=radiograph.side,
                                           side_source="DICOM ImageLaterality" if radiograph.side else None)
            measure_radiograph(image.radiograph, paths, kind=args.kind, device=args.device, cache=cache,
                               progress=lambda fraction, message: stages.append(message))
            if i:  # the first Apply loads the models
                times.append(time.perf_counter() - start)
        print(f"\nper Apply (Slicer logic below MRML, models cached): median {1000 * statistics.median(times):.0f} ms, "
              f"best {1000 * min(times):.0f} ms over {args.repeat}; progress messages per Apply: "
              f"{len(stages) // (args.repeat + 1)}")


if __name__ == "__main__":
    main()
