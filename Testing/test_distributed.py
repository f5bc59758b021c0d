"""DistributedDataParallel training on two CPU processes (Gloo), as `torchrun` would run it.

Each process gets the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*),
trains a tiny local-stage model for one epoch of two steps on its half of the data, and
saves its weights; both ranks must end with identical weights, and only rank 0 writes
the run folder.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

from annotated_factory import write_dataset
from KneeAlignmentLib.networks import build_network
from kneetrain.checkpoint import load_checkpoint
from kneetrain.config import TrainConfig
from kneetrain.trainer import Trainer
from kneetrain.views import stage_setup

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config() -> TrainConfig:
    return TrainConfig.from_dict({
        "stage": "local", "schema": "preop", "network": {"depth": 1, "width": 4, "input_size": [32, 32]},
        "sigma": 1.0, "jitter": {"point_sd_mm": 2.0},
        "optim": {"epochs": 1, "batch_size": 1, "warmup_epochs": 0.0},
        "data": {"split": {"val": 0.4, "test": 0.0, "seed": 0}, "num_workers": 0},
    })


def _worker(rank: int, port: int, data: str, out: str, result: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    trainer = Trainer(_config(), [data], out, device="cpu", progress=False)
    try:
        assert (trainer.shard.rank, trainer.shard.world, trainer.steps_per_epoch) == (rank, WORLD, 2)
        trainer.fit()
        torch.save(trainer.network.state_dict(), Path(result) / f"rank{rank}.pt")
    finally:
        trainer.close()


def test_two_gloo_ranks_end_with_identical_weights(tmp_path):
    data = write_dataset(tmp_path / "data", 6, fmt="dcm")  # 4 train + 2 val cases (seed 0): 2 steps per rank
    out = tmp_path / "run"
    mp.spawn(_worker, args=(_free_port(), str(data), str(out), str(tmp_path)), nprocs=WORLD, join=True)
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    saved = load_checkpoint(out / "checkpoints" / "last.pt")
    assert all(torch.equal(saved["model"][k], a[k]) for k in a)
    assert saved["run"]["world_size"] == WORLD
    torch.manual_seed(0)  # the run's seeded initialisation: training moved the weights away from it
    start = build_network(stage_setup(_config()).network).state_dict()
    assert not all(torch.equal(start[k], a[k]) for k in a)
