"""Process-group set-up for one CPU, one GPU, or many processes under ``torchrun``.

``torchrun`` (or any launcher) sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT; with WORLD_SIZE > 1 the default process group is created with NCCL on
CUDA devices and Gloo on CPUs. Each process uses ``cuda:LOCAL_RANK`` on GPUs. Only rank
0 writes checkpoints and logs; metrics are summed over ranks with :func:`all_sum`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from KneeAlignmentLib.bundle.modelset import resolve_device

__all__ = ["DistContext", "init_distributed", "all_sum", "barrier"]


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: rank, world size, device, and whether it made the group."""

    rank: int
    world: int
    device: torch.device
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def close(self) -> None:
        """Destroy the process group if :func:`init_distributed` created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(device: str | torch.device = "auto") -> DistContext:
    """Read the launcher's environment, pick the device and join the process group.

    Args:
        device: "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:N".
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    target = resolve_device(device)
    if target.type == "cuda" and world > 1:
        target = torch.device("cuda", local_rank)
    if target.type == "cuda" and target.index is not None:
        torch.cuda.set_device(target)
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if target.type == "cuda" else "gloo")
        owns = True
    if world > 1:
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistContext(rank, world, target, owns)


def all_sum(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum a float64 tensor over all ranks (a copy; unchanged when not distributed)."""
    out = values.detach().to(device=ctx.device, dtype=torch.float64).clone()
    if ctx.distributed:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.cpu()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()
