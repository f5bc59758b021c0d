"""Tiny random-initialised model bundles for tests: a real models folder in seconds.

``save_models(root)`` writes ``global/`` and ``local_<kind>/`` bundles (the layout
``bundle.modelset.ModelSet.load`` reads) of one-level hourglasses on a 64 x 64 input. Their
outputs are meaningless but deterministic (seeded), so tests can run the whole
pipeline, batch and command line quickly; results come back flagged.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from KneeAlignmentLib.bundle.format import save_bundle
from KneeAlignmentLib.frame import FrameSpec
from KneeAlignmentLib.heatmaps import HeatmapCodec
from KneeAlignmentLib.measurement import reference_point_names
from KneeAlignmentLib.networks import HourglassConfig, build_network
from KneeAlignmentLib.schema import KINDS, load_schema

CODEC = HeatmapCodec(input_size=(64, 64), heatmap_size=(32, 32), sigma=1.5)
# Knee centre below the crop centre, femoral shaft centre 12 px above it: the whole
# template (240 mm tall) fits the crop with room for rotation. On the crop's centre line, as
# training puts them, so a knee seen as the other side is its crop flipped (FrameSpec.mirror_is_flip).
SPEC = FrameSpec(crop_size=(64, 64), ref_canonical_px=((31.5, 34.0), (31.5, 22.0)))


def tiny_network(out_channels: int, seed: int):
    config = HourglassConfig(depth=1, width=4, stacks=1, in_channels=1, out_channels=out_channels,
                             input_size=CODEC.input_size, heatmap_stride=2)
    torch.manual_seed(seed)
    return build_network(config).eval()


def save_models(root: Path, kinds=KINDS, seed: int = 0, codec: HeatmapCodec = CODEC) -> Path:
    """A models folder of random-init bundles: global/ and local_<kind>/."""
    common = dict(version="0.0.1", codec=dataclasses.asdict(codec), description="tiny random network for tests",
                  data_source="none (random initialisation)")
    save_bundle(root / "global", tiny_network(2, seed), name="tiny-global", stage="global", schema=None,
                landmark_names=reference_point_names(), frame={}, **common)
    for i, kind in enumerate(kinds, start=1):
        schema = load_schema(kind)
        save_bundle(root / f"local_{kind}", tiny_network(len(schema), seed + i), name=f"tiny-{kind}", stage="local",
                    schema=kind, landmark_names=schema.names, frame=dataclasses.asdict(SPEC), **common)
    return root
