"""What each stage sees: annotated radiographs -> network inputs and target points.

The geometry is inference's own (``KneeAlignmentLib.frame`` and ``pipeline.FILL``), so
training inputs are made exactly as ``pipeline.measure`` makes them:

- global: the whole radiograph letterboxed into the network input; targets are the
  schema's two reference points (knee centre, femoral shaft centre).
- local: the crop of a ``ReferenceFrame`` through the reference points (left knees
  mirrored into right ones, landmark indices unchanged); targets are all K landmarks.
  In training the reference points are first jittered like the global stage's errors
  (``jitter_reference``), so the local stage learns to tolerate them.

Augmentation (``augment.Augmenter``) follows the view, in network-input space; the
per-image standardisation (``pipeline.prepare_input``) is applied by the trainer.

Shapes: radiograph (H, W) in [0, 1]; input (1, h, w); points (K, 2) as (x, y), ``*_px``
image px, ``*_in`` network-input px; ``to_image`` (2, 2) is the linear part of the
input px -> image px map.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from KneeAlignmentLib.bundle.format import METADATA_FILE
from KneeAlignmentLib.datasets import AnnotatedImage
from KneeAlignmentLib.frame import FrameSpec, Letterbox, ReferenceFrame
from KneeAlignmentLib.geometry import mm_per_px, outside_image
from KneeAlignmentLib.heatmaps import HeatmapCodec
from KneeAlignmentLib.measurement import reference_point_names
from KneeAlignmentLib.networks import HourglassConfig, preset
from KneeAlignmentLib.pipeline import FILL
from KneeAlignmentLib.schema import LandmarkSchema, load_schema

from .augment import Augmenter, crop_field_of_view, invert_radiograph, sample_seed
from .config import ConfigError, JitterConfig, TrainConfig

__all__ = ["StageSetup", "StageDataset", "stage_setup", "jitter_reference", "resolve_jitter"]


@dataclasses.dataclass(frozen=True, eq=False)
class StageSetup:
    """The fixed parts of a stage: network architecture, codec, frame, output names.

    Attributes:
        stage: "global" or "local".
        schema: the local stage's landmark schema; None for the global stage.
        landmark_names: (K,) output channel names, as the pipeline expects them.
        network: the architecture (preset plus the config's overrides).
        codec: heatmap codec for the network's input and output sizes.
        frame_spec: the local crop geometry; None for the global stage.
        preset: the preset's name, suffixed "-custom" when the config overrides it.
    """

    stage: str
    schema: LandmarkSchema | None
    landmark_names: tuple[str, ...]
    network: HourglassConfig
    codec: HeatmapCodec
    frame_spec: FrameSpec | None
    preset: str


def stage_setup(cfg: TrainConfig) -> StageSetup:
    """Build the stage's architecture, codec and frame from a config."""
    schema = load_schema(cfg.schema) if cfg.stage == "local" else None
    names = schema.names if schema is not None else reference_point_names()
    try:
        base = preset(cfg.preset, cfg.stage, len(names))
        network = HourglassConfig.from_dict({**base.to_dict(), **cfg.network})
    except ValueError as exc:
        raise ConfigError(f"network: {exc}") from exc
    codec = HeatmapCodec(network.input_size, network.heatmap_size, cfg.sigma)
    spec = None
    if cfg.stage == "local":
        h, w = network.input_size
        canonical = tuple((fx * w - 0.5, fy * h - 0.5) for fx, fy in cfg.frame.ref_canonical_frac)
        spec = FrameSpec(crop_size=network.input_size, ref_canonical_px=canonical)
    name = cfg.preset + ("-custom" if cfg.network else "")
    return StageSetup(cfg.stage, schema, tuple(names), network, codec, spec, name)


def resolve_jitter(cfg: JitterConfig) -> JitterConfig:
    """``cfg`` with ``point_sd_mm`` taken from a global bundle's measured error, if it names one.

    The bundle's ``metrics.ref_error_sd_mm`` (per-axis sd of the reference-point error on
    its validation set, written by :mod:`kneetrain.export`) becomes ``point_sd_mm``.
    """
    if cfg.from_global_bundle is None:
        return cfg
    path = Path(cfg.from_global_bundle) / METADATA_FILE
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))["kneealignment"]["metrics"]
        sd = float(metrics["ref_error_sd_mm"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"jitter.from_global_bundle: no metrics.ref_error_sd_mm in {path} ({exc})") from exc
    if not (math.isfinite(sd) and sd >= 0):
        raise ConfigError(f"jitter.from_global_bundle: ref_error_sd_mm must be >= 0, got {sd!r}")
    return dataclasses.replace(cfg, point_sd_mm=sd, from_global_bundle=None)


def jitter_reference(ref_px: np.ndarray, spacing_mm: tuple[float, float] | None, cfg: JitterConfig,
                     rng: np.random.Generator) -> np.ndarray:
    """Perturb reference points (2, 2) image px as the global stage's errors would.

    Each point moves by N(0, sd) per axis, sd = point_sd_mm / spacing when the image has a
    spacing and point_sd_mm > 0, else point_sd_px; then point 1 is turned by
    N(0, rotation_deg) and scaled by exp(N(0, scale)) about point 0 (the knee centre).
    Every normal draw is clipped at ``clip_sd``.
    """
    def normal(shape=()):
        return np.clip(rng.standard_normal(shape), -cfg.clip_sd, cfg.clip_sd)

    ref = np.array(ref_px, dtype=np.float64)
    if spacing_mm is not None and cfg.point_sd_mm > 0:
        sd = cfg.point_sd_mm / mm_per_px(spacing_mm)  # (x, y) px
    else:
        sd = np.full(2, cfg.point_sd_px)
    ref = ref + normal((2, 2)) * sd
    angle = math.radians(float(normal()) * cfg.rotation_deg)
    factor = math.exp(float(normal()) * cfg.scale)
    c, s = math.cos(angle), math.sin(angle)
    ref[1] = ref[0] + factor * np.array([[c, -s], [s, c]]) @ (ref[1] - ref[0])
    return ref


class StageDataset(Dataset):
    """Network inputs and targets of one stage from a source of annotated radiographs.

    Args:
        source: indexable source with ``len()`` and ``load(index, epoch) ->
            AnnotatedImage`` (see :mod:`kneetrain.data`).
        setup: the stage (from :func:`stage_setup`).
        cfg: the training config (augmentation, jitter, seed).
        train: augment and jitter with fresh randomness per epoch; otherwise no
            augmentation, and for the local stage a jitter fixed per case (when
            ``jitter.validate``), as the global stage's errors are at inference.
        stream: separates the random streams of datasets that share a seed.

    Items are dicts: "image" (1, h, w) float32 pixels in [0, 1]-ish (before
    ``prepare_input``); "points" (K, 2) float32 input px (NaN when missing); "visible"
    (K,) bool; "to_image" (2, 2) float64, the linear part of the map from
    input px to image px (turns input-px errors into image px; valid without geometric
    augmentation); "spacing" (2,) float64 (row_mm, col_mm), NaN when unknown.
    """

    def __init__(self, source, setup: StageSetup, cfg: TrainConfig, *, train: bool, stream: int = 0) -> None:
        self.source, self.setup, self.cfg, self.train, self.stream = source, setup, cfg, train, stream
        self.jitter = resolve_jitter(cfg.jitter)
        self.augmenter = Augmenter(cfg.augment, setup.network.input_size) if train else None
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's randomness (and, for on-the-fly sources, its cases)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, object]:
        epoch = self.epoch if self.train else 0
        seed = sample_seed(self.cfg.seed, self.stream, epoch, index)
        rng = np.random.default_rng(seed)
        item: AnnotatedImage = self.source.load(index, self.epoch)
        pixels, points_px = item.radiograph.pixels, item.points_px
        ref_px = item.schema.reference_points(points_px)
        if self.train:
            pixels = invert_radiograph(pixels, self.cfg.augment, rng)
            pixels, offset = crop_field_of_view(pixels, self.cfg.augment, rng)
            points_px, ref_px = points_px - offset, ref_px - offset
            # landmarks cut away are missing, not targets
            points_px = np.where(outside_image(points_px, pixels.shape)[:, None], np.nan, points_px)
        image_t = torch.tensor(pixels, dtype=torch.float32)
        side = item.side
        if self.setup.stage == "global":
            box = Letterbox.fit(pixels.shape, self.setup.network.input_size)
            view = box.apply(image_t, fill=FILL)
            points_in, to_image = box.to_target(ref_px), np.eye(2) / box.scale
        else:
            if self.train or self.jitter.validate:
                ref_px = jitter_reference(ref_px, item.radiograph.spacing_mm, self.jitter, rng)
            frame = ReferenceFrame.from_reference_points(ref_px, self.setup.frame_spec, side)
            view = frame.warp(image_t, fill=FILL)
            points_in, to_image = frame.to_crop(points_px), frame.inverse_matrix[:, :2]
        view = view[None]
        if self.augmenter is not None:
            view, points_in, side = self.augmenter(view, points_in, side, seed)
        spacing = item.radiograph.spacing_mm
        return {
            "image": view.float(),
            "points": torch.as_tensor(points_in, dtype=torch.float32),
            "visible": torch.as_tensor(np.isfinite(points_in).all(axis=-1)),
            "to_image": torch.as_tensor(to_image, dtype=torch.float64),
            "spacing": torch.tensor(spacing if spacing is not None else (math.nan, math.nan), dtype=torch.float64),
        }
