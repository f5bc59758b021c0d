"""The torchrun context: this process's place among those ``torchrun`` (or any launcher) started.

The launcher sets RANK, WORLD_SIZE and LOCAL_RANK (and MASTER_ADDR / MASTER_PORT for
the rendezvous); :meth:`Shard.from_env` reads them, :meth:`Shard.device` picks the
rank's device and :meth:`Shard.join` / :meth:`Shard.leave` make and end the process
group. Batch measuring and training (``kneetrain.distributed``) both start from it.

Sharding a batch: process ``rank`` takes every ``world``-th input starting at its rank,
so the shards are disjoint, cover every input, and do not depend on timing. Ranks meet
twice through a Gloo process group (CPU only, so it works with or without GPUs): at
the start, to check they all see the same input list, and at the end, when rank 0
gathers every shard's summary rows. Without WORLD_SIZE (or with 1) nothing of this runs.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from .bundle.modelset import resolve_device

__all__ = ["GROUP_TIMEOUT", "Shard"]

T = TypeVar("T")

# Rank 0 waits at the final gather for the slowest shard, and in training the other ranks
# wait while rank 0 saves; a day covers any cohort or epoch.
GROUP_TIMEOUT = datetime.timedelta(hours=24)


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {text!r}") from None


@dataclass(frozen=True)
class Shard:
    """This process's place among ``world`` processes measuring one batch.

    Attributes:
        rank: 0 .. world - 1; rank 0 merges the summary.
        world: number of processes (1: not distributed).
        local_rank: rank on this node (picks the GPU ``cuda:local_rank``).
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    def __post_init__(self) -> None:
        if self.world < 1 or not 0 <= self.rank < self.world or self.local_rank < 0:
            raise ValueError(f"need 0 <= rank < world and local_rank >= 0, got rank {self.rank}, world {self.world}, "
                             f"local_rank {self.local_rank}")

    @classmethod
    def from_env(cls) -> Shard:
        """RANK, WORLD_SIZE, LOCAL_RANK as ``torchrun`` sets them; a single process without them."""
        rank = _env_int("RANK", 0)
        return cls(rank, _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", rank))

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def select(self, items: Sequence[T]) -> list[T]:
        """This rank's share: items rank, rank + world, rank + 2 world, ..."""
        return list(items[self.rank::self.world])

    def device(self, requested: str | torch.device) -> torch.device:
        """The device for this rank: "auto" or "cuda" become ``cuda:local_rank`` when distributed on GPUs."""
        target = resolve_device(requested)
        if self.distributed and target.type == "cuda" and target.index is None:
            target = torch.device("cuda", self.local_rank)
        return target

    # --- meeting the other ranks --------------------------------------------------------

    def join(self, backend: str = "gloo") -> bool:
        """Join the default process group (when distributed and not yet joined); True if this call made it.

        ``backend``: "gloo" (CPU tensors and objects, as batch measuring needs) or "nccl" (CUDA tensors).
        """
        if not self.distributed or dist.is_initialized():
            return False
        dist.init_process_group(backend=backend, rank=self.rank, world_size=self.world, timeout=GROUP_TIMEOUT)
        return True

    def check_same_inputs(self, keys: Sequence[str]) -> None:
        """Raise ValueError unless every rank discovered the same inputs (same ids, same order)."""
        if not self.distributed:
            return
        digest = hashlib.sha256("\n".join(keys).encode()).hexdigest()
        digests: list[Any] = [None] * self.world
        dist.all_gather_object(digests, digest)
        if len(set(digests)) != 1:
            raise ValueError("the ranks found different inputs (are the input folders the same on every node?)")

    def gather(self, payload: T) -> list[T] | None:
        """Every rank's ``payload`` on rank 0 (in rank order); None on the other ranks."""
        if not self.distributed:
            return [payload]
        gathered: list[Any] | None = [None] * self.world if self.is_main else None
        dist.gather_object(payload, gathered, dst=0)
        return gathered

    @staticmethod
    def leave(made_group: bool) -> None:
        """Destroy the process group if :meth:`join` made it."""
        if made_group and dist.is_initialized():
            dist.destroy_process_group()
