"""Stacked hourglass networks with attention-gated skip paths, and their presets.

Architecture: the stacked hourglass of Newell et al. (2016, "Stacked Hourglass
Networks for Human Pose Estimation") built from residual bottleneck blocks, with an
additive attention gate (Oktay et al. 2018, "Attention U-Net") on every skip path:
the up-sampled coarse branch is the gating signal that decides, per pixel, how much
of the fine skip branch passes. Each stack ends in a heatmap head; every stack's
heatmaps are returned for intermediate supervision, the last stack's are the answer.

Shapes (B batch, C input channels, K landmarks, S stacks):

- input image ``(B, C, H, W)``, H and W multiples of ``config.size_multiple``;
- output ``(B, S, K, H / s, W / s)`` with ``s = config.heatmap_stride``; ``[:, -1]``
  holds the final heatmaps. Values are raw (unnormalised) heatmaps; the heatmap
  codec (``KneeAlignmentLib.heatmaps``) turns them into points.

Presets (``PRESETS``, ``preset(name, stage, n_landmarks)``) - our choices, documented:

=========  ======  =====  =====  ======  ==========  =======  ===========
preset     stage   depth  width  stacks  input px    stride   heatmap px
=========  ======  =====  =====  ======  ==========  =======  ===========
paper      global  4      32     2       256 x 256   2        128 x 128
paper      local   6      256    2       256 x 256   4        64 x 64
lite       global  4      32     1       256 x 256   4        64 x 64
lite       local   5      64     1       256 x 256   4        64 x 64
=========  ======  =====  =====  ======  ==========  =======  ===========

Depth and width of ``paper`` follow arXiv 2506.18209 (global d4 w32, local d6 w256);
the stack count (2), input sizes and strides are ours. The paper local stage works at
the classic 1/4 resolution (64 x 64 heatmaps, 24 GFLOP, about 0.2 s on 2 CPU threads);
at 1/2 it would cost three times as much. ``lite`` works at 1/4 too: a training step
on 2 CPU cores costs a quarter of what it costs at 1/2 (measured), which is what makes
CPU training of the shipped models feasible. ``lite`` runs on a laptop CPU (see
``Testing/benchmarks/bench_networks.py`` for parameters, FLOPs and timings).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "HEATMAP_STRIDES",
    "PRESETS",
    "STAGES",
    "AttentionGate",
    "Bottleneck",
    "Hourglass",
    "HourglassConfig",
    "StackedHourglass",
    "build_network",
    "preset",
]

HEATMAP_STRIDES = (1, 2, 4)
STAGES = ("global", "local")


def _check_int(name: str, value: Any, minimum: int) -> None:
    """Raise ValueError unless ``value`` is an int (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def _conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    strides: int = 1,
    act: bool = True,
    norm: bool = True,
) -> nn.Sequential:
    """Conv → batch norm → ReLU (act/norm switchable); no bias when a norm follows.

    MONAI's ``Convolution`` block (``adn_ordering="NA"``, "same" padding), module for
    module and parameter name for parameter name (``conv``, ``adn.N``, ``adn.A``), in
    plain torch: importing MONAI costs inference more than a second and 70 MB, and
    bundles saved from MONAI's blocks load unchanged (``test_networks`` checks both).
    """
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        conv=nn.Conv2d(in_channels, out_channels, kernel_size, stride=strides, padding=(kernel_size - 1) // 2,
                       bias=not norm))
    if act or norm:
        adn: OrderedDict[str, nn.Module] = OrderedDict()
        if norm:
            adn["N"] = nn.BatchNorm2d(out_channels)
        if act:
            adn["A"] = nn.ReLU()
        layers["adn"] = nn.Sequential(adn)
    return nn.Sequential(layers)


class Bottleneck(nn.Module):
    """Residual bottleneck block (1x1 → 3x3 → 1x1 at half width, plus a shortcut).

    ``(B, in_channels, H, W) → (B, out_channels, H, W)``. The shortcut is the identity
    when the channel counts agree, else a 1x1 projection.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        _check_int("in_channels", in_channels, 1)
        _check_int("out_channels", out_channels, 2)
        mid = out_channels // 2
        self.residual = nn.Sequential(
            _conv(in_channels, mid, 1),
            _conv(mid, mid, 3),
            _conv(mid, out_channels, 1, act=False),
        )
        self.shortcut: nn.Module = (
            nn.Identity() if in_channels == out_channels else _conv(in_channels, out_channels, 1, act=False)
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.residual(x) + self.shortcut(x))


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al. 2018) on a skip path; MONAI's 2D ``AttentionBlock``.

    The same modules and parameter names as MONAI's ``AttentionBlock`` (``W_g``, ``W_x``,
    ``psi``, ``relu``), in plain torch (see ``_conv``).

    Args:
        gating_channels: channels of the gating signal ``g`` (the coarse branch).
        skip_channels: channels of the gated skip features ``x``.
        inter_channels: channels of the intermediate 1x1 projections.

    Shapes: ``g (B, gating_channels, H, W)``, ``x (B, skip_channels, H, W)``;
    :meth:`coefficients` gives ``(B, 1, H, W)`` in [0, 1]; ``forward`` gives ``x`` scaled
    by them, ``(B, skip_channels, H, W)``.
    """

    def __init__(self, gating_channels: int, skip_channels: int, inter_channels: int) -> None:
        _check_int("gating_channels", gating_channels, 1)
        _check_int("skip_channels", skip_channels, 1)
        _check_int("inter_channels", inter_channels, 1)
        super().__init__()
        self.W_g = nn.Sequential(_conv(gating_channels, inter_channels, 1, act=False, norm=False),
                                 nn.BatchNorm2d(inter_channels))
        self.W_x = nn.Sequential(_conv(skip_channels, inter_channels, 1, act=False, norm=False),
                                 nn.BatchNorm2d(inter_channels))
        self.psi = nn.Sequential(_conv(inter_channels, 1, 1, act=False, norm=False), nn.BatchNorm2d(1), nn.Sigmoid())
        self.relu = nn.ReLU()

    def coefficients(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Attention coefficients ``(B, 1, H, W)`` in [0, 1] for skip ``x`` under gating ``g``."""
        if g.shape[0] != x.shape[0] or g.shape[2:] != x.shape[2:]:
            raise ValueError(
                f"gating signal and skip features must share batch and spatial size, got "
                f"{tuple(g.shape)} and {tuple(x.shape)}."
            )
        psi: torch.Tensor = self.psi(self.relu(self.W_g(g) + self.W_x(x)))
        return psi

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x * self.coefficients(g, x)


class Hourglass(nn.Module):
    """One hourglass with ``depth`` down-samplings (max-pool 2) and nearest up-samplings.

    Per level: ``out = gate(g=up(inner(pool(x))), x=skip(x)) + up(inner(pool(x)))``;
    the innermost ``inner`` is a bottleneck. ``(B, channels, H, W) → (B, channels, H, W)``
    with H and W multiples of ``2**depth``.
    """

    def __init__(self, depth: int, channels: int, attention: bool) -> None:
        super().__init__()
        _check_int("depth", depth, 1)
        _check_int("channels", channels, 2)
        if not isinstance(attention, bool):
            raise ValueError(f"attention must be a bool, got {attention!r}.")
        self.skip = Bottleneck(channels, channels)
        self.down = nn.Sequential(nn.MaxPool2d(2), Bottleneck(channels, channels))
        self.inner: nn.Module = (
            Hourglass(depth - 1, channels, attention) if depth > 1 else Bottleneck(channels, channels)
        )
        self.up = Bottleneck(channels, channels)
        self.gate = AttentionGate(channels, channels, max(channels // 2, 1)) if attention else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.skip(x)
        low = F.interpolate(self.up(self.inner(self.down(x))), scale_factor=2.0, mode="nearest")
        if self.gate is not None:
            skip = self.gate(low, skip)
        return skip + low


@dataclasses.dataclass(frozen=True)
class HourglassConfig:
    """Everything that fixes a stacked hourglass's architecture (and its weight shapes).

    Attributes:
        depth: down-samplings per hourglass (>= 1).
        width: feature channels inside the hourglasses (even, >= 4).
        stacks: hourglasses in sequence, each with its own heatmap output (>= 1).
        in_channels: image channels (1 for radiographs).
        out_channels: heatmaps, one per landmark.
        input_size: ``(height, width)`` in px of the network input the model is trained
            for; multiples of :attr:`size_multiple`.
        heatmap_stride: input px per heatmap px, one of ``HEATMAP_STRIDES``.
        attention: attention gates on the skip paths.
    """

    depth: int
    width: int
    stacks: int
    in_channels: int
    out_channels: int
    input_size: tuple[int, int]
    heatmap_stride: int
    attention: bool = True

    def __post_init__(self) -> None:
        _check_int("depth", self.depth, 1)
        _check_int("width", self.width, 4)
        if self.width % 2:
            raise ValueError(f"width must be even, got {self.width!r}.")
        _check_int("stacks", self.stacks, 1)
        _check_int("in_channels", self.in_channels, 1)
        _check_int("out_channels", self.out_channels, 1)
        if self.heatmap_stride not in HEATMAP_STRIDES or isinstance(self.heatmap_stride, bool):
            raise ValueError(f"heatmap_stride must be one of {HEATMAP_STRIDES}, got {self.heatmap_stride!r}.")
        if not isinstance(self.attention, bool):
            raise ValueError(f"attention must be a bool, got {self.attention!r}.")
        size = self.input_size
        if not isinstance(size, (tuple, list)) or len(size) != 2:
            raise ValueError(f"input_size must be (height, width), got {size!r}.")
        for value in size:
            _check_int("input_size entries", value, 1)
            if value % self.size_multiple:
                raise ValueError(
                    f"input_size {tuple(size)!r} must be a multiple of heatmap_stride * 2**depth "
                    f"= {self.size_multiple}."
                )
        object.__setattr__(self, "input_size", (int(size[0]), int(size[1])))

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this (stride times 2**depth)."""
        return self.heatmap_stride * 2**self.depth

    @property
    def heatmap_size(self) -> tuple[int, int]:
        """``(height, width)`` of the output heatmaps for :attr:`input_size`, in heatmap px."""
        return (self.input_size[0] // self.heatmap_stride, self.input_size[1] // self.heatmap_stride)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``input_size`` as a list); inverse of :meth:`from_dict`."""
        data = dataclasses.asdict(self)
        data["input_size"] = list(self.input_size)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HourglassConfig:
        """Build from :meth:`to_dict` output; unknown or missing keys raise ValueError."""
        if not isinstance(data, Mapping):
            raise ValueError(f"network config must be a mapping, got {type(data).__name__}.")
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown network config keys: {unknown}.")
        missing = sorted(names - set(data))
        if missing:
            raise ValueError(f"missing network config keys: {missing}.")
        values = dict(data)
        if isinstance(values["input_size"], list):
            values["input_size"] = tuple(values["input_size"])
        return cls(**values)


class StackedHourglass(nn.Module):
    """Stacked hourglass network; see the module docstring for the data flow and shapes.

    Stem (7x7 conv, stride 2 when ``heatmap_stride >= 2``; bottleneck; max-pool when
    ``heatmap_stride == 4``; bottleneck) brings the image to heatmap resolution. Each
    stack: hourglass → bottleneck → 1x1 conv → 1x1 heatmap head; between stacks the
    features and heatmaps are projected back and added (Newell et al. 2016).
    """

    def __init__(self, config: HourglassConfig) -> None:
        super().__init__()
        if not isinstance(config, HourglassConfig):
            raise ValueError(f"config must be a HourglassConfig, got {type(config).__name__}.")
        self.config = config
        width, k = config.width, config.out_channels
        stem: list[nn.Module] = [
            _conv(config.in_channels, width // 2, 7, strides=2 if config.heatmap_stride >= 2 else 1),
            Bottleneck(width // 2, width),
        ]
        if config.heatmap_stride == 4:
            stem.append(nn.MaxPool2d(2))
        stem.append(Bottleneck(width, width))
        self.stem = nn.Sequential(*stem)
        self.hourglasses = nn.ModuleList(
            Hourglass(config.depth, width, config.attention) for _ in range(config.stacks)
        )
        self.features = nn.ModuleList(
            nn.Sequential(Bottleneck(width, width), _conv(width, width, 1)) for _ in range(config.stacks)
        )
        self.heads = nn.ModuleList(_conv(width, k, 1, act=False, norm=False) for _ in range(config.stacks))
        self.merge_features = nn.ModuleList(
            _conv(width, width, 1, act=False, norm=False) for _ in range(config.stacks - 1)
        )
        self.merge_heatmaps = nn.ModuleList(
            _conv(k, width, 1, act=False, norm=False) for _ in range(config.stacks - 1)
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, H, W)`` → heatmaps of every stack ``(B, stacks, K, H/s, W/s)``."""
        cfg = self.config
        if image.ndim != 4 or image.shape[1] != cfg.in_channels:
            raise ValueError(f"image must be (B, {cfg.in_channels}, H, W), got {tuple(image.shape)}.")
        if image.shape[2] % cfg.size_multiple or image.shape[3] % cfg.size_multiple:
            raise ValueError(
                f"image height and width must be multiples of {cfg.size_multiple}, got {tuple(image.shape[2:])}."
            )
        x = self.stem(image)
        heatmaps = []
        for i in range(cfg.stacks):
            features = self.features[i](self.hourglasses[i](x))
            heatmaps.append(self.heads[i](features))
            if i < cfg.stacks - 1:
                x = x + self.merge_features[i](features) + self.merge_heatmaps[i](heatmaps[-1])
        return torch.stack(heatmaps, dim=1)


def build_network(config: HourglassConfig) -> StackedHourglass:
    """The network for ``config`` (training mode, PyTorch default initialisation)."""
    return StackedHourglass(config)


def _frozen(**kwargs: Any) -> Mapping[str, Any]:
    return MappingProxyType(kwargs)


# Architecture per preset and stage, all but out_channels (which the landmark schema sets).
PRESETS: Mapping[str, Mapping[str, Mapping[str, Any]]] = MappingProxyType(
    {
        "paper": MappingProxyType(
            {
                "global": _frozen(
                    depth=4, width=32, stacks=2, in_channels=1, input_size=(256, 256), heatmap_stride=2, attention=True
                ),
                "local": _frozen(
                    depth=6, width=256, stacks=2, in_channels=1, input_size=(256, 256), heatmap_stride=4, attention=True
                ),
            }
        ),
        "lite": MappingProxyType(
            {
                "global": _frozen(
                    depth=4, width=32, stacks=1, in_channels=1, input_size=(256, 256), heatmap_stride=4, attention=True
                ),
                "local": _frozen(
                    depth=5, width=64, stacks=1, in_channels=1, input_size=(256, 256), heatmap_stride=4, attention=True
                ),
            }
        ),
    }
)


def preset(name: str, stage: str, n_landmarks: int) -> HourglassConfig:
    """Config of preset ``name`` ("paper" or "lite") for ``stage`` ("global" or "local").

    ``n_landmarks`` sets out_channels: the reference points for the global stage, the
    schema's landmark count (134 pre-op, 181 post-op) for the local stage.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}.")
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}.")
    return HourglassConfig(out_channels=n_landmarks, **PRESETS[name][stage])
