"""Benchmark of the network presets: parameters, FLOPs per image and forward time.

Not a test (pytest does not collect it). Run::

    .venv/bin/python Testing/benchmarks/bench_networks.py [--threads N] [--repeats R] [--device cpu]

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` at each preset's input
size, batch 1: convolutions and matrix products (2 FLOPs per multiply-add), not
normalisation, activations or resampling. Time is the median eval-mode forward pass
over ``--repeats`` runs after one warm-up, without autograd.
"""

from __future__ import annotations

import argparse
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


def benchmark(name: str, stage: str, n_landmarks: int, repeats: int, device: torch.device) -> dict:
    config = preset(name, stage, n_landmarks)
    torch.manual_seed(0)
    network = build_network(config).to(device).eval()
    image = torch.randn(1, config.in_channels, *config.input_size, device=device)
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            network(image)
        times = []
        for _ in range(repeats + 1):  # the first run is a warm-up
            start = time.perf_counter()
            network(image)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
    return {
        "preset": f"{name}/{stage}",
        "K": n_landmarks,
        "input": "x".join(map(str, config.input_size)),
        "heatmap": "x".join(map(str, config.heatmap_size)),
        "params": sum(p.numel() for p in network.parameters()),
        "gflops": counter.get_total_flops() / 1e9,
        "ms": 1e3 * statistics.median(times[1:]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=3, help="timed forward passes per preset")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} CPU threads, batch 1")
    header = f"{'preset':<14}{'K':>5}{'input':>10}{'heatmap':>10}{'params':>13}{'GFLOPs':>10}{'ms/image':>11}"
    print(header)
    print("-" * len(header))
    for case in CASES:
        row = benchmark(*case, repeats=args.repeats, device=device)
        print(
            f"{row['preset']:<14}{row['K']:>5}{row['input']:>10}{row['heatmap']:>10}"
            f"{row['params']:>13,}{row['gflops']:>10.2f}{row['ms']:>11.1f}"
        )


if __name__ == "__main__":
    main()
