"""Benchmark of the network presets: parameters, FLOPs, latency, throughput, peak memory.

Not a test (pytest does not collect it). Run::

    .venv/bin/python Testing/benchmarks/bench_networks.py [--threads N] [--repeats R] [--batch B] [--device cpu]

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` at each preset's input
size, batch 1: convolutions and matrix products (2 FLOPs per multiply-add), not
normalisation, activations or resampling. Latency is the median eval-mode forward pass
at batch 1 over ``--repeats`` runs after one warm-up, without autograd; images/s is the
same at batch ``--batch``. "of peak" compares the achieved FLOP rate at batch 1 with the
device's measured peak: the median rate of a large float32 matrix product.
Peak memory: CUDA's max allocated, or the process's peak resident size on the CPU.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from KneeAlignmentLib.networks import build_network, preset

# (preset, stage, landmarks): the global stage finds 2 reference points; the local stage
# 134 (pre-op) or 181 (post-op) landmarks.
CASES = (
    ("lite", "global", 2),
    ("lite", "local", 134),
    ("lite", "local", 181),
    ("paper", "global", 2),
    ("paper", "local", 134),
    ("paper", "local", 181),
)


def _median_seconds(fn, repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats + 1):  # the first run is a warm-up
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def peak_gflops(device: torch.device, repeats: int, n: int = 2048) -> float:
    """Measured float32 matrix-product rate of the device, GFLOP/s."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    return 2 * n**3 / _median_seconds(lambda: a @ b, repeats, device) / 1e9


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def benchmark(name: str, stage: str, n_landmarks: int, repeats: int, batch: int, device: torch.device) -> dict:
    config = preset(name, stage, n_landmarks)
    torch.manual_seed(0)
    network = build_network(config).to(device).eval()
    image = torch.randn(1, config.in_channels, *config.input_size, device=device)
    images = image.expand(batch, -1, -1, -1).contiguous()
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            network(image)
        latency = _median_seconds(lambda: network(image), repeats, device)
        batch_seconds = _median_seconds(lambda: network(images), repeats, device)
    gflops = counter.get_total_flops() / 1e9
    return {
        "preset": f"{name}/{stage}",
        "K": n_landmarks,
        "input": "x".join(map(str, config.input_size)),
        "params": sum(p.numel() for p in network.parameters()),
        "gflops": gflops,
        "ms": 1e3 * latency,
        "achieved": gflops / latency,
        "images_s": batch / batch_seconds,
        "peak_mb": peak_memory_mb(device),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=3, help="timed forward passes per preset")
    parser.add_argument("--batch", type=int, default=8, help="batch size for the images/s column")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    peak = peak_gflops(device, args.repeats)
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} CPU threads; "
          f"measured peak {peak:.0f} GFLOP/s (float32 matrix product)")
    header = (f"{'preset':<14}{'K':>5}{'input':>9}{'params':>13}{'GFLOPs':>9}{'ms (b=1)':>10}"
              f"{'of peak':>9}{f'img/s (b={args.batch})':>15}{'peak MB':>9}")
    print(header)
    print("-" * len(header))
    for case in CASES:
        row = benchmark(*case, repeats=args.repeats, batch=args.batch, device=device)
        print(
            f"{row['preset']:<14}{row['K']:>5}{row['input']:>9}{row['params']:>13,}{row['gflops']:>9.2f}"
            f"{row['ms']:>10.1f}{row['achieved'] / peak:>9.0%}{row['images_s']:>15.1f}{row['peak_mb']:>9.0f}"
        )


if __name__ == "__main__":
    main()
