"""The model bundle format: a network's weights plus everything needed to use them, in MONAI's layout.

A bundle is a folder::

    <bundle>/
      configs/metadata.json      MONAI-bundle metadata + our "kneealignment" section
      models/model.safetensors   weights (float32 or float16 storage)

``metadata.json`` carries MONAI's fields (version, changelog, library versions, task,
description, authors, copyright, license, network_data_format, intended_use,
data_source) and a ``"kneealignment"`` section that makes the bundle self-describing:
format version, stage, landmark schema, landmark names, preset, the architecture
(:class:`~KneeAlignmentLib.networks.HourglassConfig`), heatmap-codec and frame
parameters, evaluation metrics, the weights file with its SHA-256 and, optionally, the
quality-control thresholds calibrated for the model (``qc``: fields of
:class:`~KneeAlignmentLib.bundle.thresholds.QCThresholds`; absent: its defaults).

:func:`load_bundle` trusts nothing: it checks files, fields, format version and the
checksum before deserialising, reads safetensors (or, for a ``.pt``/``.pth`` state
dict, ``torch.load(..., weights_only=True)``; never a full unpickler), and loads the
weights strictly into the network built from the stored config. Every failure is a
:class:`~KneeAlignmentLib.errors.BundleError` naming the problem.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any

import numpy
import safetensors
import safetensors.torch
import torch
from safetensors import SafetensorError

from .. import DISCLAIMER, __version__
from ..errors import BundleError
from ..networks import STAGES, HourglassConfig, StackedHourglass
from ..schema import KINDS as SCHEMAS
from .known import metadata_digest, provenance
from .thresholds import QCThresholds

__all__ = [
    "FORMAT_VERSION",
    "METADATA_FILE",
    "SCHEMAS",
    "WEIGHTS_FILE",
    "BundleMetadata",
    "LoadedModel",
    "load_bundle",
    "replace_folder",
    "save_bundle",
    "write_qc_thresholds",
]

FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)
METADATA_FILE = "configs/metadata.json"
WEIGHTS_FILE = "models/model.safetensors"
SECTION = "kneealignment"

_MONAI_FIELDS = (
    "version",
    "changelog",
    "monai_version",
    "pytorch_version",
    "numpy_version",
    "required_packages_version",
    "task",
    "description",
    "authors",
    "copyright",
    "license",
    "network_data_format",
    "intended_use",
    "data_source",
)
_SECTION_FIELDS = (
    "format_version",
    "name",
    "stage",
    "schema",
    "landmark_names",
    "preset",
    "network",
    "codec",
    "frame",
    "metrics",
    "weights",
)
_WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth")
_STORAGE_DTYPES = {torch.float32: "float32", torch.float16: "float16"}
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclasses.dataclass(frozen=True)
class BundleMetadata:
    """What a bundle says about itself (parsed and checked ``metadata.json``).

    ``network`` is the architecture; ``landmark_names`` has one name per output heatmap,
    in channel order; ``schema`` is None only for a schema-independent global stage;
    ``codec`` and ``frame`` are the parameters of the heatmap codec and the reference
    frame the model was trained with (read by ``heatmaps`` and ``frame``).
    """

    name: str
    version: str
    stage: str
    schema: str | None
    landmark_names: tuple[str, ...]
    network: HourglassConfig
    preset: str | None
    codec: Mapping[str, Any]
    frame: Mapping[str, Any]
    metrics: Mapping[str, Any]
    description: str
    data_source: str
    intended_use: str
    authors: str
    copyright: str
    license: str
    changelog: Mapping[str, str]
    weights_file: str
    weights_sha256: str
    qc: QCThresholds = QCThresholds()

    @property
    def model_id(self) -> str:
        """``"<name>@<version>"``, the identifier results record."""
        return f"{self.name}@{self.version}"


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A network in eval mode on ``device``, with the metadata of the bundle it came from and
    its provenance: "release" (weights and metadata match a release pinned in
    ``data/known_models.json``) or "user-supplied"."""

    network: StackedHourglass
    metadata: BundleMetadata
    directory: Path
    device: torch.device
    provenance: str = "user-supplied"  # "release" when it matches a pinned release (.known)


# --- metadata ----------------------------------------------------------------------------


def _monai_version() -> str:
    """The installed MONAI's version, for the bundle metadata, without importing MONAI (slow)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("monai")
    except PackageNotFoundError:
        return "not installed"


def _fail(path: Path, problem: str) -> BundleError:
    return BundleError(f"model bundle {path}: {problem}")


def _string(value: Any, field: str, bundle: Path) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(bundle, f"{field!r} must be a non-empty string, got {value!r}")
    return value


def _object(value: Any, field: str, bundle: Path) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(bundle, f"{field!r} must be a JSON object, got {type(value).__name__}")
    return MappingProxyType(dict(value))


def _network_data_format(config: HourglassConfig, stage: str, names: Sequence[str]) -> dict[str, Any]:
    """MONAI ``network_data_format`` for ``config``: image in, per-landmark heatmaps out."""
    patch = stage == "local"  # the local stage sees a crop of the image
    return {
        "inputs": {
            "image": {
                "type": "image",
                "format": "magnitude",
                "modality": "XR",
                "num_channels": config.in_channels,
                "spatial_shape": list(config.input_size),
                "dtype": "float32",
                "value_range": [],
                "is_patch_data": patch,
                "channel_def": {"0": "image"},
            }
        },
        "outputs": {
            "pred": {
                "type": "image",
                "format": "heatmaps",
                "description": f"(B, {config.stacks}, K, H, W): each stack's heatmaps; the last is the prediction",
                "num_channels": config.out_channels,
                "spatial_shape": list(config.heatmap_size),
                "dtype": "float32",
                "value_range": [],
                "is_patch_data": patch,
                "channel_def": {str(i): name for i, name in enumerate(names)},
            }
        },
    }


def _parse_metadata(data: Any, bundle: Path) -> BundleMetadata:
    """Check a decoded ``metadata.json`` and return it as :class:`BundleMetadata`."""
    if not isinstance(data, Mapping):
        raise _fail(bundle, f"{METADATA_FILE} must hold a JSON object")
    missing = [field for field in (*_MONAI_FIELDS, SECTION) if field not in data]
    if missing:
        raise _fail(bundle, f"{METADATA_FILE} lacks required fields {missing}")
    own = data[SECTION]
    if not isinstance(own, Mapping):
        raise _fail(bundle, f"{SECTION!r} must be a JSON object")
    missing = [field for field in _SECTION_FIELDS if field not in own]
    if missing:
        raise _fail(bundle, f"{SECTION!r} lacks required fields {missing}")

    format_version = own["format_version"]
    if isinstance(format_version, bool) or format_version not in SUPPORTED_FORMAT_VERSIONS:
        raise _fail(
            bundle, f"unsupported format_version {format_version!r}; this version reads {SUPPORTED_FORMAT_VERSIONS}"
        )
    stage = own["stage"]
    if stage not in STAGES:
        raise _fail(bundle, f"stage must be one of {STAGES}, got {stage!r}")
    schema = own["schema"]
    if schema not in SCHEMAS and not (schema is None and stage == "global"):
        allowed = SCHEMAS if stage == "local" else (*SCHEMAS, None)
        raise _fail(bundle, f"schema of a {stage} stage must be one of {allowed}, got {schema!r}")
    try:
        config = HourglassConfig.from_dict(own["network"])
    except (ValueError, TypeError) as exc:
        raise _fail(bundle, f"invalid network config: {exc}") from exc

    names = own["landmark_names"]
    if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
        raise _fail(bundle, "landmark_names must be a list of non-empty strings")
    if len(names) != config.out_channels:
        raise _fail(bundle, f"{len(names)} landmark names for a network with {config.out_channels} outputs")
    if len(set(names)) != len(names):
        raise _fail(bundle, "landmark_names contains duplicates")
    preset = own["preset"]
    if preset is not None:
        _string(preset, "preset", bundle)

    formats = data["network_data_format"]
    expected = _network_data_format(config, stage, names)
    try:
        consistent = all(
            formats[side][key][entry] == expected[side][key][entry]
            for side, key in (("inputs", "image"), ("outputs", "pred"))
            for entry in ("num_channels", "spatial_shape")
        )
    except (KeyError, TypeError):
        consistent = False
    if not consistent:
        raise _fail(bundle, "network_data_format does not match the network config (channels or spatial shape)")

    weights = _object(own["weights"], "weights", bundle)
    weights_file = _string(weights.get("file"), "weights.file", bundle)
    sha256 = weights.get("sha256")
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise _fail(bundle, f"weights.sha256 must be 64 lowercase hex digits, got {sha256!r}")
    changelog = _object(data["changelog"], "changelog", bundle)
    try:
        qc = QCThresholds.from_dict(_object(own.get("qc", {}), "qc", bundle))
    except ValueError as exc:
        raise _fail(bundle, f"invalid qc thresholds: {exc}") from exc
    return BundleMetadata(
        name=_string(own["name"], "name", bundle),
        version=_string(data["version"], "version", bundle),
        stage=stage,
        schema=schema,
        landmark_names=tuple(names),
        network=config,
        preset=preset,
        codec=_object(own["codec"], "codec", bundle),
        frame=_object(own["frame"], "frame", bundle),
        metrics=_object(own["metrics"], "metrics", bundle),
        description=_string(data["description"], "description", bundle),
        data_source=_string(data["data_source"], "data_source", bundle),
        intended_use=_string(data["intended_use"], "intended_use", bundle),
        authors=_string(data["authors"], "authors", bundle),
        copyright=_string(data["copyright"], "copyright", bundle),
        license=_string(data["license"], "license", bundle),
        changelog=changelog,
        weights_file=weights_file,
        weights_sha256=sha256,
        qc=qc,
    )


def _weights_path(bundle: Path, relative: str) -> Path:
    """The weights file named in metadata: a ``models/`` file inside the bundle, known suffix."""
    parts = PurePosixPath(relative).parts
    if len(parts) != 2 or parts[0] != "models" or parts[1] in ("..", "."):
        raise _fail(bundle, f"weights.file must name a file directly under models/, got {relative!r}")
    if PurePosixPath(relative).suffix not in _WEIGHT_SUFFIXES:
        raise _fail(bundle, f"weights.file must end in one of {_WEIGHT_SUFFIXES}, got {relative!r}")
    return bundle / parts[0] / parts[1]


# --- weights -----------------------------------------------------------------------------


def _deserialise(data: bytes, suffix: str, bundle: Path) -> dict[str, torch.Tensor]:
    """Tensors from checksum-verified bytes; never a full unpickler."""
    if suffix == ".safetensors":
        try:
            return safetensors.torch.load(data)
        except SafetensorError as exc:
            raise _fail(bundle, f"weights are not a valid safetensors file ({exc})") from exc
    try:
        # Restricted unpickler: tensors and plain containers only, no code execution.
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types here (UnpicklingError, RuntimeError, ...)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _fail(bundle, f"weights are not a plain state dict ({reason})") from exc
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise _fail(bundle, "weights file must hold a flat mapping of tensor names to tensors")
    return dict(state)


def _fit_state_dict(
    tensors: Mapping[str, torch.Tensor], network: StackedHourglass, bundle: Path
) -> dict[str, torch.Tensor]:
    """Check names, shapes, dtypes and finiteness against ``network``; upcast float16 storage."""
    expected = network.state_dict()
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise _fail(
            bundle,
            f"weights do not fit the network config: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})",
        )
    fitted = {}
    for key, reference in expected.items():
        tensor = tensors[key]
        if tensor.shape != reference.shape:
            raise _fail(
                bundle, f"tensor {key!r} has shape {tuple(tensor.shape)}, network needs {tuple(reference.shape)}"
            )
        if reference.is_floating_point():
            if tensor.dtype not in _STORAGE_DTYPES:
                raise _fail(bundle, f"tensor {key!r} is stored as {tensor.dtype}; expected float32 or float16")
            if not torch.isfinite(tensor).all():
                raise _fail(bundle, f"tensor {key!r} contains NaN or infinity")
        elif tensor.dtype != reference.dtype:
            raise _fail(bundle, f"tensor {key!r} is stored as {tensor.dtype}, network needs {reference.dtype}")
        fitted[key] = tensor.to(reference.dtype)
    return fitted


# --- public API --------------------------------------------------------------------------


def load_bundle(
    directory: str | os.PathLike[str],
    *,
    expected_stage: str | None = None,
    expected_schema: str | None = None,
    device: str | torch.device = "cpu",
) -> LoadedModel:
    """Load and verify a bundle; the network comes back in eval mode on ``device``.

    Args:
        directory: the bundle folder.
        expected_stage: "global" or "local" to refuse a bundle of the other stage.
        expected_schema: "preop" or "postop" to refuse a local model of the other
            schema (a schema-independent global model, schema None, fits any).
        device: where to put the network (a ``torch.device`` string such as "cpu").

    Raises:
        BundleError: missing files, unparsable or incomplete metadata, unsupported
            format version, checksum mismatch, weights that are not safetensors (or a
            plain state dict), that do not fit the stored config, or a stage/schema
            other than expected.
        ValueError: ``expected_stage``/``expected_schema`` is not a known name.
    """
    if expected_stage is not None and expected_stage not in STAGES:
        raise ValueError(f"expected_stage must be one of {STAGES} or None, got {expected_stage!r}.")
    if expected_schema is not None and expected_schema not in SCHEMAS:
        raise ValueError(f"expected_schema must be one of {SCHEMAS} or None, got {expected_schema!r}.")
    bundle = Path(directory)
    if not bundle.is_dir():
        raise _fail(bundle, "folder not found")
    metadata_path = bundle / METADATA_FILE
    if not metadata_path.is_file():
        raise _fail(bundle, f"{METADATA_FILE} not found")
    try:
        data = json.loads(metadata_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(bundle, f"cannot read {METADATA_FILE} as JSON ({exc})") from exc
    except RecursionError:
        raise _fail(bundle, f"cannot read {METADATA_FILE} as JSON (nested too deeply)") from None
    metadata = _parse_metadata(data, bundle)

    if expected_stage is not None and metadata.stage != expected_stage:
        raise _fail(bundle, f"holds a {metadata.stage}-stage model, a {expected_stage}-stage model was expected")
    if expected_schema is not None and metadata.schema not in (expected_schema, None):
        raise _fail(bundle, f"is for the {metadata.schema!r} schema, {expected_schema!r} was expected")

    weights_path = _weights_path(bundle, metadata.weights_file)
    try:
        payload = weights_path.read_bytes()
    except OSError as exc:
        raise _fail(bundle, f"cannot read weights file {metadata.weights_file} ({exc.strerror})") from exc
    digest = hashlib.sha256(payload).hexdigest()
    if digest != metadata.weights_sha256:  # before any deserialisation
        raise _fail(
            bundle,
            f"checksum mismatch for {metadata.weights_file}: sha256 {digest}, metadata says {metadata.weights_sha256}",
        )
    tensors = _deserialise(payload, weights_path.suffix, bundle)

    network = StackedHourglass(metadata.network)
    network.load_state_dict(_fit_state_dict(tensors, network, bundle), strict=True)
    try:
        target = torch.device(device)
        network = network.to(target).eval()
    except (RuntimeError, ValueError, AssertionError) as exc:  # torch: unknown or unavailable device
        raise _fail(bundle, f"cannot place the model on device {device!r} ({exc})") from exc
    origin = provenance(digest, metadata_digest(data))
    return LoadedModel(network=network, metadata=metadata, directory=bundle, device=target, provenance=origin)


def save_bundle(
    directory: str | os.PathLike[str],
    network: StackedHourglass,
    *,
    name: str,
    version: str,
    stage: str,
    schema: str | None,
    landmark_names: Sequence[str],
    codec: Mapping[str, Any],
    frame: Mapping[str, Any],
    description: str,
    data_source: str,
    preset: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    authors: str = "KneeAlignment contributors",
    copyright: str = "Copyright (c) KneeAlignment contributors",
    license: str = "Apache-2.0",
    changelog: Mapping[str, str] | None = None,
    dtype: torch.dtype = torch.float32,
    overwrite: bool = False,
    qc: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``network`` and its metadata as a bundle folder, atomically; returns the folder.

    The architecture comes from ``network.config``. ``landmark_names`` names the output
    channels in order; ``codec``/``frame``/``metrics`` must be JSON-serialisable objects;
    ``qc``: quality-control thresholds (``QCThresholds`` fields) to store, or None for none.
    ``dtype`` is the storage type of floating tensors (float32, or float16 to halve the
    size; loading converts back to float32). The bundle is assembled in a temporary
    sibling folder and renamed into place, so readers never see a half-written bundle.

    Raises:
        BundleError: the bundle would be invalid (the same checks as :func:`load_bundle`),
            ``directory`` exists and is not empty while ``overwrite`` is False, a
            tensor does not fit float16, or the files cannot be written.
    """
    target = Path(directory)
    if not isinstance(network, StackedHourglass):
        raise _fail(target, f"network must be a StackedHourglass, got {type(network).__name__}")
    if dtype not in _STORAGE_DTYPES:
        raise _fail(target, f"storage dtype must be torch.float32 or torch.float16, got {dtype!r}")
    if target.exists() and not overwrite and (not target.is_dir() or any(target.iterdir())):
        raise _fail(target, "already exists; pass overwrite=True to replace it")

    tensors = {}
    for key, tensor in network.state_dict().items():
        tensor = tensor.detach().to("cpu").contiguous()
        if tensor.is_floating_point():
            stored = tensor.to(dtype)
            if not torch.isfinite(stored).all():
                raise _fail(target, f"tensor {key!r} is not finite when stored as {_STORAGE_DTYPES[dtype]}")
            tensor = stored
        tensors[key] = tensor.clone()
    payload = safetensors.torch.save(tensors, metadata={"format": "pt"})

    config = network.config
    names = list(landmark_names)
    task = (
        f"{stage} stage of KneeAlignment: {config.out_channels} landmark heatmaps "
        f"({schema or 'schema-independent'}) on AP knee radiographs"
    )
    data = {
        "version": version,
        "changelog": dict(changelog) if changelog is not None else {version: "initial version"},
        "monai_version": _monai_version(),
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": numpy.__version__,
        "required_packages_version": {"safetensors": safetensors.__version__, "kneealignment": __version__},
        "task": task,
        "description": description,
        "authors": authors,
        "copyright": copyright,
        "license": license,
        "network_data_format": _network_data_format(config, stage, names),
        "intended_use": DISCLAIMER,
        "data_source": data_source,
        SECTION: {
            "format_version": FORMAT_VERSION,
            "name": name,
            "stage": stage,
            "schema": schema,
            "landmark_names": names,
            "preset": preset,
            "network": config.to_dict(),
            "codec": dict(codec),
            "frame": dict(frame),
            "metrics": dict(metrics or {}),
            "weights": {"file": WEIGHTS_FILE, "sha256": hashlib.sha256(payload).hexdigest()},
        },
    }
    if qc is not None:
        data[SECTION]["qc"] = dict(qc)
    try:
        text = json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise _fail(target, f"metadata is not strict JSON ({exc})") from exc
    _parse_metadata(json.loads(text), target)  # refuse to write what load_bundle would refuse

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _write_synced(staging / WEIGHTS_FILE, payload)
        _write_synced(staging / METADATA_FILE, text.encode("utf-8"))
        replace_folder(staging, target)
    except OSError as exc:
        raise _fail(target, f"cannot write the bundle ({exc})") from exc
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def write_qc_thresholds(directory: str | os.PathLike[str], qc: Mapping[str, Any],
                        provenance: str | None = None) -> BundleMetadata:
    """Set ``kneealignment.qc`` of an existing bundle (merged over what it has), atomically.

    ``qc``: fields of :class:`~KneeAlignmentLib.bundle.thresholds.QCThresholds`;
    ``provenance``: how they were derived, stored as ``kneealignment.qc_calibration``.
    The weights and their checksum are untouched. Returns the re-read metadata.

    Raises:
        BundleError: not a valid bundle, bad thresholds, or the file cannot be written.
    """
    bundle = Path(directory)
    path = bundle / METADATA_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(bundle, f"cannot read {METADATA_FILE} ({exc})") from exc
    current = _parse_metadata(data, bundle).qc
    try:
        merged = QCThresholds.from_dict(dict(qc), base=current)
    except ValueError as exc:
        raise _fail(bundle, f"invalid qc thresholds: {exc}") from exc
    data[SECTION]["qc"] = merged.to_dict()
    if provenance is not None:
        data[SECTION]["qc_calibration"] = provenance
    text = json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False)
    staging = path.with_name(f".{path.name}.tmp")
    try:
        _write_synced(staging, text.encode("utf-8"))
        os.replace(staging, path)
    except OSError as exc:
        raise _fail(bundle, f"cannot write {METADATA_FILE} ({exc})") from exc
    return _parse_metadata(json.loads(text), bundle)


def _write_synced(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())


def replace_folder(staging: Path, target: Path) -> None:
    """Move ``staging`` to ``target``; an existing ``target`` is swapped out, then removed.

    Both must be on one file system (``staging`` beside ``target``): each step is a rename,
    so readers see the old folder or the new one, never a mix; a failed swap puts the old back.
    Raises OSError.
    """
    if not target.exists():
        os.replace(staging, target)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
    os.rmdir(retired)  # a free name next to target, for the rename
    os.replace(target, retired)
    try:
        os.replace(staging, target)
    except OSError:
        os.replace(retired, target)  # put the old bundle back
        raise
    shutil.rmtree(retired, ignore_errors=True)

