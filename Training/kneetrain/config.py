"""Training configuration: YAML files -> frozen dataclasses, checked on load.

A config file may name a ``base`` file (relative to itself) whose values it overrides
key by key, so the post-op configs restate only what differs from the pre-op ones.
Unknown keys, wrong types and out-of-range values raise :class:`ConfigError` naming the
key. ``TrainConfig.to_dict()`` gives plain JSON values (stored in checkpoints and in
bundle metadata) and ``TrainConfig.from_dict`` reads them back.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from KneeAlignmentLib.errors import KneeAlignmentError
from KneeAlignmentLib.networks import STAGES
from KneeAlignmentLib.schema import KINDS


class ConfigError(KneeAlignmentError):
    """A training configuration that is unreadable or invalid."""


@dataclasses.dataclass(frozen=True)
class AffineAug:
    """Random affine in network-input space (MONAI RandAffine); ranges are symmetric."""

    prob: float = 0.0
    rotate_deg: float = 0.0  # rotation drawn from [-rotate_deg, rotate_deg]
    scale: float = 0.0  # zoom factor drawn from [1 - scale, 1 + scale]
    translate_frac: float = 0.0  # shift up to this fraction of the input size
    shear: float = 0.0  # shear factor drawn from [-shear, shear]


@dataclasses.dataclass(frozen=True)
class ProbRange:
    """An augmentation applied with probability ``prob`` and a parameter from ``range``."""

    prob: float = 0.0
    range: tuple[float, float] = (1.0, 1.0)


@dataclasses.dataclass(frozen=True)
class Probability:
    prob: float = 0.0


@dataclasses.dataclass(frozen=True)
class NoiseAug:
    prob: float = 0.0
    std: float = 0.0  # Gaussian noise sd drawn from [0, std] (image in [0, 1])


@dataclasses.dataclass(frozen=True)
class FieldOfViewAug:
    """A tighter field of view: up to ``max_cut`` of the radiograph's height and width cut
    away at each of its four sides (drawn independently), so that the knee moves towards
    the border and the view reaches beyond the image."""

    prob: float = 0.0
    max_cut: float = 0.0  # fraction of the height (top, bottom) or width (left, right), < 0.5


@dataclasses.dataclass(frozen=True)
class CutoutAug:
    prob: float = 0.0
    holes: int = 1
    size_frac: tuple[float, float] = (0.05, 0.1)  # hole side, fraction of the input size
    fill: float | None = None  # None: uniform noise in the image's range


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Augmentation parameters; everything off by default (validation uses the default)."""

    affine: AffineAug = AffineAug()
    flip: Probability = Probability()  # horizontal flip; the knee's side changes with it
    gamma: ProbRange = ProbRange()
    contrast: ProbRange = ProbRange()  # intensity scaled about its mean by a factor in range
    invert: Probability = Probability()  # 1 - image, applied to the radiograph before the view
    field_of_view: FieldOfViewAug = FieldOfViewAug()  # applied to the radiograph before the view
    noise: NoiseAug = NoiseAug()
    blur: ProbRange = ProbRange(range=(0.5, 1.0))  # Gaussian sigma in input px
    cutout: CutoutAug = CutoutAug()
    film: Probability = Probability()  # a random DR console look (augment.film_look)
    occluders: Probability = Probability()  # the other leg at an edge, a ruler (augment.occlude)


@dataclasses.dataclass(frozen=True)
class JitterConfig:
    """Local stage: perturbation of the ground-truth reference points before cropping.

    Each reference point moves by an isotropic Gaussian offset of sd ``point_sd_mm``
    (when the image has a pixel spacing) or ``point_sd_px`` image px (when not), which
    models the global stage's errors; then the frame is turned by a Gaussian angle of sd
    ``rotation_deg`` and scaled by exp(N(0, ``scale``)) about the knee centre. Draws are
    clipped at ``clip_sd`` standard deviations. ``from_global_bundle`` (a global bundle
    folder) replaces ``point_sd_mm`` by the per-axis sd of its validation error.
    """

    point_sd_mm: float = 0.0
    point_sd_px: float = 0.0
    rotation_deg: float = 0.0
    scale: float = 0.0
    clip_sd: float = 3.0
    from_global_bundle: str | None = None
    validate: bool = True  # also jitter validation crops (seeded per case, as at inference)


@dataclasses.dataclass(frozen=True)
class FrameConfig:
    """Local crop layout: where the reference points land, as fractions (x, y) of the crop.

    ``ref_canonical_frac[i]`` is reference point i's position divided by the crop's
    (width, height), measured from the crop's outer edge; see :meth:`spec`.
    """

    ref_canonical_frac: tuple[tuple[float, float], tuple[float, float]] = ((0.5, 0.49), (0.5, 0.29))


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Wing loss on soft-argmax coordinates (heatmap px) plus a weighted heatmap term."""

    wing_w: float = 10.0
    wing_eps: float = 2.0
    heatmap_weight: float = 10.0
    border_sigmas: float = 2.0  # no coordinate loss for targets this close to the map edge


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    epochs: int = 100
    batch_size: int = 8  # per process
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 2.0
    min_lr_ratio: float = 0.01  # cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    amp: bool = True  # mixed precision on CUDA devices (ignored on CPU)
    amp_dtype: str = "float16"  # or "bfloat16"


@dataclasses.dataclass(frozen=True)
class SplitConfig:
    val: float = 0.1
    test: float = 0.1
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class PhantomConfig:
    """On-the-fly phantom data: fresh training cases every epoch, fixed validation cases."""

    train_cases: int = 512  # per epoch
    val_cases: int = 64
    size: tuple[int, int] = (1024, 832)  # (H, W) of the rendered radiographs


@dataclasses.dataclass(frozen=True)
class DataConfig:
    split: SplitConfig = SplitConfig()
    phantom: PhantomConfig = PhantomConfig()
    num_workers: int = 2


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs besides the data location and the device."""

    stage: str
    schema: str | None = None  # the annotation schema; None (global stage only): pre-op and post-op data
    preset: str = "lite"
    network: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # overrides of the preset
    sigma: float = 2.0  # heatmap Gaussian sd, heatmap px
    frame: FrameConfig = FrameConfig()
    jitter: JitterConfig = JitterConfig()
    augment: AugmentConfig = AugmentConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    data: DataConfig = DataConfig()
    seed: int = 0
    sync_batchnorm: bool = True  # SyncBatchNorm under multi-GPU DDP

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ConfigError(f"stage must be one of {STAGES}, got {self.stage!r}")
        if self.schema not in KINDS and not (self.schema is None and self.stage == "global"):
            raise ConfigError(f"schema must be one of {KINDS}" + (" or null" if self.stage == "global" else "")
                              + f" for the {self.stage} stage, got {self.schema!r}")
        _check_ranges(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (tuples as lists)."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        return _build(cls, data, "config")


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Read a YAML config (following ``base`` files) and apply dotted-key ``overrides``.

    ``overrides`` maps e.g. ``"optim.epochs"`` to a value (the CLI's ``--set``).
    """
    data = _read_yaml(Path(path), seen=())
    for key, value in (overrides or {}).items():
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: {part!r} is not a section")
            node = child
        node[leaf] = value
    return TrainConfig.from_dict(data)


def _read_yaml(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path.name}: 'base' files form a cycle")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config {path} ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path.name}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path.name}: a config must be a mapping of keys to values")
    base = data.pop("base", None)
    if base is None:
        return data
    return _merge(_read_yaml(path.parent / base, (*seen, path)), data)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _build(cls, data: Any, where: str):
    """Instantiate dataclass ``cls`` from a mapping, recursively, checking keys and types."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; known: {sorted(fields)}")
    values = {name: _convert(hints[name], data[name], f"{where}.{name}") for name in fields if name in data}
    try:
        return cls(**values)
    except TypeError as exc:  # a required key is missing
        raise ConfigError(f"{where}: {exc}") from exc


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{where}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if origin is not None and issubclass(origin, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if hint in (int, bool, str):
        if type(value) is not hint:
            raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported config type {hint!r}")  # pragma: no cover


def _check_ranges(cfg: TrainConfig) -> None:
    def need(ok: bool, key: str, value: Any, rule: str) -> None:
        if not ok:
            raise ConfigError(f"{key} must be {rule}, got {value!r}")

    aug = cfg.augment
    for key, prob in (("affine", aug.affine.prob), ("flip", aug.flip.prob), ("gamma", aug.gamma.prob),
                      ("contrast", aug.contrast.prob), ("invert", aug.invert.prob), ("noise", aug.noise.prob),
                      ("blur", aug.blur.prob), ("cutout", aug.cutout.prob), ("field_of_view", aug.field_of_view.prob),
                      ("film", aug.film.prob), ("occluders", aug.occluders.prob)):
        need(0.0 <= prob <= 1.0, f"augment.{key}.prob", prob, "in [0, 1]")
    for key, (lo, hi) in (("gamma", aug.gamma.range), ("contrast", aug.contrast.range), ("blur", aug.blur.range)):
        need(0.0 < lo <= hi, f"augment.{key}.range", (lo, hi), "0 < low <= high")
    need(0.0 <= aug.affine.scale < 1.0, "augment.affine.scale", aug.affine.scale, "in [0, 1)")
    lo, hi = aug.cutout.size_frac
    need(0.0 < lo <= hi <= 1.0, "augment.cutout.size_frac", (lo, hi), "0 < low <= high <= 1")
    need(aug.cutout.holes >= 1, "augment.cutout.holes", aug.cutout.holes, ">= 1")
    need(0.0 <= aug.field_of_view.max_cut < 0.5, "augment.field_of_view.max_cut", aug.field_of_view.max_cut,
         "in [0, 0.5)")
    if cfg.stage == "local":
        need(aug.flip.prob == 0.0, "augment.flip.prob", aug.flip.prob,
             "0 for the local stage (its crops always show a right knee)")
    j = cfg.jitter
    for key in ("point_sd_mm", "point_sd_px", "rotation_deg", "scale"):
        need(getattr(j, key) >= 0.0, f"jitter.{key}", getattr(j, key), ">= 0")
    need(j.clip_sd > 0.0, "jitter.clip_sd", j.clip_sd, "> 0")
    need(cfg.sigma > 0.0, "sigma", cfg.sigma, "> 0")
    o = cfg.optim
    need(o.epochs >= 1, "optim.epochs", o.epochs, ">= 1")
    need(o.batch_size >= 1, "optim.batch_size", o.batch_size, ">= 1")
    need(o.lr > 0.0, "optim.lr", o.lr, "> 0")
    need(0.0 <= o.min_lr_ratio <= 1.0, "optim.min_lr_ratio", o.min_lr_ratio, "in [0, 1]")
    need(o.warmup_epochs >= 0.0, "optim.warmup_epochs", o.warmup_epochs, ">= 0")
    need(o.grad_clip >= 0.0, "optim.grad_clip", o.grad_clip, ">= 0")
    need(o.amp_dtype in ("float16", "bfloat16"), "optim.amp_dtype", o.amp_dtype, "'float16' or 'bfloat16'")
    s = cfg.data.split
    need(s.val >= 0.0 and s.test >= 0.0 and s.val + s.test < 1.0, "data.split", (s.val, s.test),
         "two fractions >= 0 summing to less than 1")
    p = cfg.data.phantom
    need(p.train_cases >= 1 and p.val_cases >= 1, "data.phantom", (p.train_cases, p.val_cases), "case counts >= 1")
    from KneeAlignmentLib.phantom.dataset import MIN_SIZE

    need(min(p.size) >= MIN_SIZE, "data.phantom.size", p.size, f"at least {MIN_SIZE} px each way (the phantom's)")
    need(cfg.data.num_workers >= 0, "data.num_workers", cfg.data.num_workers, ">= 0")
    loss = cfg.loss
    need(loss.wing_w > 0.0 and loss.wing_eps > 0.0, "loss.wing_w/wing_eps", (loss.wing_w, loss.wing_eps), "> 0")
    need(loss.heatmap_weight >= 0.0 and loss.border_sigmas >= 0.0, "loss.heatmap_weight/border_sigmas",
         (loss.heatmap_weight, loss.border_sigmas), ">= 0")


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
