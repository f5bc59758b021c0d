"""Interactive measurement: the GUI's choices, progress reports, cancellation between stages.

The Slicer module runs inference in the GUI thread (torch and MRML both want it), so a
measurement is cut into stages; between stages the caller's ``progress(fraction, message)``
runs (the module updates its progress bar and lets Qt process events there) and
``cancelled()`` is asked, and a True answer stops the run with :class:`Cancelled`.
Loading the networks is the slow part of a first run, so a ``bundle.modelset.ModelCache``
keeps the loaded model set until the bundle files change.

Importing this module does not import torch; measuring does.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from .imageio import Radiograph

if TYPE_CHECKING:
    from .bundle.modelset import ModelCache
    from .measurement import Measurement

__all__ = ["DEVICES", "SCHEMA_KINDS", "SIDE_CODES", "Cancelled", "checkpoint", "gui_choices", "measure_radiograph"]

# The Slicer module's choices ("Auto" besides these) -> core values.
SCHEMA_KINDS = MappingProxyType({"Pre-op": "preop", "Post-op": "postop"})  # "Auto": the model or the labels decide
SIDE_CODES = MappingProxyType({"Left": "L", "Right": "R"})  # wins; "Auto": DICOM laterality, else detected
DEVICES = MappingProxyType({"Auto": "auto", "CPU": "cpu", "GPU": "cuda"})  # torch device strings

Progress = Callable[[float, str], None]
IsCancelled = Callable[[], bool]


def gui_choices(model: str, side: str, device: str) -> tuple[str | None, str | None, str]:
    """GUI choices -> (schema kind or None, side code or None, device string); ValueError names a bad one."""
    for value, table, what in ((model, SCHEMA_KINDS, "model"), (side, SIDE_CODES, "side"),
                               (device, DEVICES, "device")):
        if value != "Auto" and value not in table:
            raise ValueError(f"{what} must be Auto or one of {', '.join(table)}, got {value!r}")
    return SCHEMA_KINDS.get(model), SIDE_CODES.get(side), DEVICES[device]


class Cancelled(Exception):
    """The user stopped a measurement; nothing of it was kept."""


def checkpoint(fraction: float, message: str, progress: Progress | None, cancelled: IsCancelled | None) -> None:
    """Report ``fraction`` (0..1) and ``message``, after stopping with :class:`Cancelled` if asked to."""
    if cancelled is not None and cancelled():
        raise Cancelled(f"cancelled before: {message}")
    if progress is not None:
        progress(fraction, message)


def measure_radiograph(radiograph: Radiograph, model_paths: Mapping[str, str | os.PathLike[str]], *,
                       kind: str = "auto", side: str | None = None, device: str = "auto",
                       cache: ModelCache | None = None, progress: Progress | None = None,
                       cancelled: IsCancelled | None = None, span: tuple[float, float] = (0.0, 1.0)
                       ) -> Measurement:
    """Load the models (or reuse them) and measure one radiograph, in cancellable stages.

    Args:
        radiograph: the image.
        model_paths: bundle folder per role, as ``bundle.resolve.resolve_models`` gives.
        kind, side: as ``pipeline.measure`` ("auto"/"preop"/"postop"; "L"/"R"/None).
        device: "auto", "cpu" or "cuda".
        cache: keeps the loaded models between calls; None loads them afresh.
        progress, cancelled: see the module docstring.
        span: the part (start, end) of the caller's progress range this run fills.

    Raises:
        Cancelled: ``cancelled()`` said so between stages.
        ValueError: "cuda" without a CUDA device, or bad kind/side.
        BundleError: missing or invalid bundles.
    """
    import torch

    from .bundle.modelset import ModelCache
    from .pipeline import measure

    def at(fraction: float) -> float:  # this run's fraction -> the caller's progress range
        return span[0] + fraction * (span[1] - span[0])

    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("a GPU was requested, but PyTorch finds no CUDA device; choose Auto or CPU")
    checkpoint(at(0.0), "Loading the models", progress, cancelled)
    models = (cache or ModelCache()).get(model_paths, device)
    checkpoint(at(0.4), "Finding the landmarks", progress, cancelled)
    result = measure(radiograph, models, kind=kind, side=side,
                     progress=lambda fraction, message: checkpoint(at(0.4 + 0.6 * fraction), message, progress,
                                                                   cancelled))
    checkpoint(at(1.0), "Landmarks found", progress, cancelled)
    return result
