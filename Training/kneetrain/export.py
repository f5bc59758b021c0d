"""Export a training checkpoint as a model bundle (written by ``KneeAlignmentLib.bundle.format``).

The bundle carries what ``bundle.modelset.ModelSet`` checks: landmark names in output order
(the reference points for the global stage, the schema's landmarks for the local
stage), the ``HeatmapCodec`` fields and, for the local stage, the ``FrameSpec`` fields;
plus the preset, a description of the training data, and the checkpoint's validation
metrics (``ref_error_sd_mm`` of a global model sets the local stage's jitter through
``jitter.from_global_bundle``), and the quality-control thresholds (``qc``: the defaults
of ``bundle.thresholds.QCThresholds`` until ``kneealign-train calibrate-qc --write``
calibrates them for the new weights). Place bundles as ``<models>/global``,
``<models>/local_preop`` and ``<models>/local_postop`` for ``kneealign``.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from KneeAlignmentLib.bundle.format import save_bundle
from KneeAlignmentLib.bundle.thresholds import DEFAULT as DEFAULT_QC
from KneeAlignmentLib.networks import HourglassConfig, build_network

from .checkpoint import load_checkpoint

__all__ = ["export_bundle"]


def export_bundle(checkpoint: str | Path, out: str | Path, *, name: str | None = None, version: str = "0.1.0",
                  description: str | None = None, half: bool = False, overwrite: bool = False) -> Path:
    """Write the bundle of a checkpoint (a ``.pt`` file, or a run folder: its ``best.pt``).

    Args:
        checkpoint: checkpoint file or run folder.
        out: the bundle folder to create.
        name: bundle name (default "kneealign-<stage>[-<schema>]-<preset>").
        version: bundle version.
        description: what the model is (default: made from the run).
        half: store float16 weights (half the size; loaded back as float32).
        overwrite: replace an existing bundle.

    Returns the bundle folder.
    """
    path, last = Path(checkpoint), None
    if path.is_dir():
        path, last = path / "checkpoints" / "best.pt", path / "checkpoints" / "last.pt"
    state = load_checkpoint(path)
    # best.pt is last.pt as it was at the best epoch: the run's length is in last.pt
    trained = int(load_checkpoint(last)["epoch"] if last is not None and last.is_file() else state["epoch"]) + 1
    run = state["run"]
    network = build_network(HourglassConfig.from_dict(run["network"]))
    network.load_state_dict(state["model"])
    stage, schema = run["stage"], run["schema"]  # a global stage trained on both kinds has None
    label = "-".join(p for p in ("kneealign", stage, schema, run["preset"]) if p)
    best = state["best"]
    metrics = {k: v for k, v in state["metrics"].items() if math.isfinite(v)}
    metrics |= {"epoch": best["epoch"], "selected_by": best["metric"], "epochs_trained": trained,
                "config": state["config"]}
    text = description or (f"{stage.capitalize()}-stage stacked hourglass of KneeAlignment "
                           f"({'reference points' if stage == 'global' else f'{schema} landmarks'}), trained with "
                           f"kneetrain {run['kneetrain_version']}, {run['preset']} preset, epoch {best['epoch']}.")
    return save_bundle(
        out, network.eval(), name=name or label, version=version, stage=stage, schema=schema,
        landmark_names=run["landmark_names"], codec=run["codec"], frame=run["frame"] or {},
        description=text, data_source=run["data_description"], preset=run["preset"], metrics=metrics,
        dtype=torch.float16 if half else torch.float32, overwrite=overwrite, qc=DEFAULT_QC.to_dict())
