"""Benchmark of the phantom: synthetic radiographs per second on one CPU core.

Not a test (pytest does not collect it). Run::

    .venv/bin/python Testing/benchmarks/bench_phantom.py [--n 20] [--size 2000 1600] [--kind preop] [--write DIR]

The process is pinned to one core where the OS allows it (Linux ``sched_setaffinity``)
and renders cases 0..n-1 of seed 0 after one warm-up case (imports, font loading).
``render_case`` is timed: knee construction, acquisition, physics and processing. With
``--write DIR`` the DICOM, PNG and markups writing is timed as well. Both wall-clock and
CPU time are reported: on a shared machine the CPU-time rate is what one free core gives.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from KneeAlignmentLib.phantom import render_case
from KneeAlignmentLib.phantom.dataset import write_case


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--size", type=int, nargs=2, default=(2000, 1600), metavar=("H", "W"))
    parser.add_argument("--kind", choices=("preop", "postop", "both"), default="both")
    parser.add_argument("--write", type=Path, default=None, help="also write the files into this folder")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    kinds = ("preop", "postop") if args.kind == "both" else (args.kind,)
    size = tuple(args.size)
    render_case(kinds[0], 0, 10_000, size)  # warm-up: imports, fonts, caches
    out = args.write
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    for kind in kinds:
        render_times, write_times, cpu = [], [], 0.0
        for i in range(args.n):
            start, start_cpu = time.perf_counter(), time.process_time()
            case = render_case(kind, 0, i, size)
            render_times.append(time.perf_counter() - start)
            cpu += time.process_time() - start_cpu
            if out is not None:
                start = time.perf_counter()
                write_case(case, out)
                write_times.append(time.perf_counter() - start)
        total = sum(render_times) + sum(write_times)
        line = (f"{kind:6s} {size[0]}x{size[1]}: {args.n / sum(render_times):.2f} images/s rendered "
                f"(median {statistics.median(render_times) * 1000:.0f} ms, max {max(render_times) * 1000:.0f} ms; "
                f"CPU time {args.n / cpu:.2f} images/s)")
        if write_times:
            line += (f"; with DICOM+PNG+markups writing {args.n / total:.2f} images/s "
                     f"(writing median {statistics.median(write_times) * 1000:.0f} ms)")
        print(line + ", one core")


if __name__ == "__main__":
    main()
