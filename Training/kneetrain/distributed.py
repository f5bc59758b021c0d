"""Training across processes: the core's torchrun context plus what training adds.

Where a process stands (rank, world size, device ``cuda:LOCAL_RANK`` on GPUs) is
``KneeAlignmentLib.sharding.Shard``, shared with batch measuring. Training joins the
process group with NCCL on CUDA devices and Gloo on CPUs, only rank 0 writes
checkpoints and logs, and metrics are summed over ranks with :func:`all_sum`.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from KneeAlignmentLib.sharding import Shard

__all__ = ["join_training_group", "all_sum", "barrier"]


def join_training_group(shard: Shard, device: torch.device) -> bool:
    """Make ``device`` this process's CUDA device (if it is one) and join the process group
    (NCCL on CUDA, Gloo on CPU; when distributed); True if this call made the group."""
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    return shard.join(backend="nccl" if device.type == "cuda" else "gloo")


def all_sum(values: torch.Tensor, shard: Shard, device: torch.device) -> torch.Tensor:
    """Sum a float64 tensor over all ranks (a copy; unchanged when not distributed), reduced on ``device``."""
    out = values.detach().to(device=device, dtype=torch.float64).clone()
    if shard.distributed:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.cpu()


def barrier(shard: Shard) -> None:
    if shard.distributed:
        dist.barrier()
