"""Training checkpoints: everything an exact resume needs, loadable with ``weights_only=True``.

A checkpoint is a dict of tensors and plain values only (no pickled objects):
``format``, ``epoch`` (the last finished epoch, 0-based), ``model``, ``optimizer``,
``scheduler``, ``scaler`` state dicts, ``rng`` (torch, CUDA, numpy and Python random
states, stored as tensors), ``best`` ({"metric", "value", "epoch"}), ``metrics`` (the
epoch's validation metrics), ``config`` (``TrainConfig.to_dict()``) and ``run`` (data
and stage description). Files are written to a temporary name and renamed, so a crash
never leaves half a checkpoint.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from KneeAlignmentLib.atomicio import atomic_output
from KneeAlignmentLib.errors import KneeAlignmentError

__all__ = ["CHECKPOINT_FORMAT", "CheckpointError", "rng_state", "set_rng_state", "save_checkpoint", "load_checkpoint"]

CHECKPOINT_FORMAT = "kneetrain-checkpoint-1"


class CheckpointError(KneeAlignmentError):
    """A checkpoint that is missing, unreadable or of another format."""


def rng_state() -> dict[str, Any]:
    """Every global random state, as tensors and ints (weights_only-loadable)."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": torch.tensor(mt, dtype=torch.int64),
                   "gauss": float("nan") if gauss is None else float(gauss)},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    gauss = None if np.isnan(p["gauss"]) else p["gauss"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), gauss))


def save_checkpoint(path: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (see the module docstring) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as temporary:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, temporary)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)`` onto the CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types (UnpicklingError, RuntimeError, EOFError)
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a {CHECKPOINT_FORMAT} checkpoint")
    return state
