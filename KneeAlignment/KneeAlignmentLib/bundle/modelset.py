"""The model set the pipeline runs: bundles checked against their roles, on one device, cached.

:meth:`ModelSet.load` takes the bundle folder of each role (``resolve.resolve_models``).
A global bundle and at least one local bundle are required. Each bundle's metadata
must carry ``codec`` = ``HeatmapCodec`` fields with ``input_size`` equal to the network
input and ``heatmap_size`` to its output; a local bundle's ``frame`` is ``FrameSpec``
fields with ``crop_size`` equal to the network input (:meth:`StageModel.from_bundle`).

Loading the networks is the slow part of a first measurement in the Slicer module, so a
:class:`ModelCache` keeps the loaded set until the bundle files change.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import torch

from ..errors import BundleError
from ..frame import FrameSpec
from ..heatmaps import HeatmapCodec
from ..measurement import ModelInfo, reference_point_names
from ..schema import KINDS, LandmarkSchema, load_schema
from .format import LoadedModel, load_bundle
from .resolve import ROLE_DIRS, resolve_models
from .thresholds import DEFAULT as DEFAULT_QC
from .thresholds import QCThresholds

__all__ = ["ModelCache", "ModelSet", "StageModel", "resolve_device"]


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' -> CUDA when available, else CPU; other strings as ``torch.device`` reads them."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from exc


@dataclass(frozen=True, eq=False)
class StageModel:
    """One network and what running it needs.

    Attributes:
        network: (B, 1, H, W) -> (B, S, K, h, w) heatmaps; the last stack is the answer.
        codec: input_size (H, W) and heatmap_size (h, w) of the network.
        info: the bundle it came from (role, name, version).
        schema: the local stage's landmark schema; None for the global stage.
        frame_spec: the local stage's crop geometry; None for the global stage.
        qc: the bundle's quality-control thresholds.
    """

    network: torch.nn.Module
    codec: HeatmapCodec
    info: ModelInfo
    schema: LandmarkSchema | None = None
    frame_spec: FrameSpec | None = None
    qc: QCThresholds = DEFAULT_QC

    @classmethod
    def from_bundle(cls, loaded: LoadedModel, kind: str | None) -> StageModel:
        """Check a loaded bundle against its role (global if ``kind`` is None, else local ``kind``).

        Raises:
            BundleError: codec or frame parameters that do not fit the network, or
                landmark names other than the role needs.
        """
        meta, where = loaded.metadata, loaded.directory

        def fail(problem: str) -> BundleError:
            return BundleError(f"model bundle {where}: {problem}")

        config = meta.network
        if meta.stage != ("global" if kind is None else "local"):
            raise fail(f"is a {meta.stage}-stage model, not the {'global' if kind is None else 'local'} stage")
        if config.in_channels != 1:
            raise fail(f"the network takes {config.in_channels} channels; radiographs have 1")
        try:
            codec = HeatmapCodec(**meta.codec)
        except (TypeError, ValueError) as exc:
            raise fail(f"codec parameters are not HeatmapCodec fields ({exc})") from exc
        if codec.input_size != config.input_size or codec.heatmap_size != config.heatmap_size:
            raise fail(f"codec sizes {codec.input_size} -> {codec.heatmap_size} do not match the network "
                       f"{config.input_size} -> {config.heatmap_size}")
        if kind is None:
            expected = reference_point_names()
            role, schema, spec = ROLE_DIRS["global"], None, None
        else:
            schema = load_schema(kind)
            expected = schema.names
            role = ROLE_DIRS[kind]
            try:
                spec = FrameSpec(**meta.frame)
            except (TypeError, ValueError) as exc:
                raise fail(f"frame parameters are not FrameSpec fields ({exc})") from exc
            if spec.crop_size != config.input_size:
                raise fail(f"frame crop_size {spec.crop_size} differs from the network input {config.input_size}")
        if tuple(meta.landmark_names) != tuple(expected):
            raise fail(f"its outputs are not the {len(expected)} {kind or 'reference-point'} landmarks in "
                       f"schema order")
        return cls(loaded.network, codec, ModelInfo(role, meta.name, meta.version, loaded.provenance), schema, spec,
                   meta.qc)


@dataclass(frozen=True, eq=False)
class ModelSet:
    """The global model and the local model of each available schema kind, on one device."""

    global_model: StageModel
    local_models: Mapping[str, StageModel]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __post_init__(self) -> None:
        unknown = set(self.local_models) - set(KINDS)
        if unknown or not self.local_models:
            raise ValueError(f"local_models must map some of {KINDS} to models, got {sorted(self.local_models)}")
        object.__setattr__(self, "local_models", MappingProxyType(dict(self.local_models)))

    @classmethod
    def load(cls, source: str | os.PathLike[str] | Mapping[str, str | os.PathLike[str]], *,
             device: str | torch.device = "auto") -> ModelSet:
        """Load and check the bundles of a models folder or of one folder per role.

        Args:
            source: the bundle folder per role, {"global": path, "preop": path, "postop":
                path} (local entries optional, one needed), as ``resolve.resolve_models``
                gives it; or a models folder, used whole (``resolve_models(source)``).
            device: "auto", "cpu", "cuda", ...

        Raises:
            BundleError: a missing or invalid bundle (the message says where it looked and
                how to get models).
        """
        target = resolve_device(device)
        if isinstance(source, Mapping):
            paths = {key: Path(value) for key, value in source.items()}
            unknown = set(paths) - set(ROLE_DIRS)
            if unknown:
                raise ValueError(f"model paths must be keyed by 'global', 'preop', 'postop'; got {sorted(unknown)}")
            if "global" not in paths:
                raise BundleError("no global model given: the model paths need a 'global' entry")
        else:
            paths = resolve_models(source)
        if not any(kind in paths for kind in KINDS):
            raise BundleError("no local model given: the model paths need a 'preop' or 'postop' entry")
        glob = StageModel.from_bundle(load_bundle(paths["global"], expected_stage="global", device=target), None)
        local = {kind: StageModel.from_bundle(load_bundle(paths[kind], expected_stage="local",
                                                          expected_schema=kind, device=target), kind)
                 for kind in KINDS if kind in paths}
        return cls(glob, local, target)

    @property
    def kinds(self) -> tuple[str, ...]:
        """Schema kinds with a local model, in KINDS order."""
        return tuple(kind for kind in KINDS if kind in self.local_models)

    def local(self, kind: str) -> StageModel:
        if kind not in self.local_models:
            raise BundleError(f"the model set has no local {kind} model (it has: {', '.join(self.kinds)}); "
                              f"add a {ROLE_DIRS[kind]}/ bundle to the models folder")
        return self.local_models[kind]

    def to(self, device: str | torch.device) -> ModelSet:
        """This set on ``device``; the networks move in place, as ``nn.Module.to`` does."""
        target = resolve_device(device)
        if target == self.device:
            return self
        self.global_model.network.to(target)
        for model in self.local_models.values():
            model.network.to(target)
        return ModelSet(self.global_model, self.local_models, target)



class ModelCache:
    """The last loaded :class:`ModelSet`, reused while its files are unchanged."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._models: ModelSet | None = None

    @staticmethod
    def _key_of(paths: Mapping[str, Path], device: str) -> tuple:
        files = []
        for role in sorted(paths):
            for path in sorted(p for p in Path(paths[role]).rglob("*") if p.is_file()):
                stat = path.stat()
                files.append((role, str(path), stat.st_size, stat.st_mtime_ns))
        return device, tuple(files)

    def get(self, paths: Mapping[str, str | os.PathLike[str]], device: str) -> ModelSet:
        """The model set of these bundle folders on ``device``, loaded (and checked) on first use or change."""
        paths = {role: Path(p) for role, p in paths.items()}
        key = self._key_of(paths, device)
        if key != self._key:
            self._models, self._key = None, None  # free the old networks before loading new ones
            self._models = ModelSet.load(paths, device=device)
            self._key = key
        return self._models

    def clear(self) -> None:
        self._models, self._key = None, None
