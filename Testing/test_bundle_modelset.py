"""Tests of KneeAlignmentLib.bundle.modelset: bundles checked against their roles, the model set
the pipeline runs, the device it runs on, and the cache that keeps it loaded."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from model_factory import CODEC, SPEC, save_models, tiny_network
from KneeAlignmentLib.bundle.format import save_bundle
from KneeAlignmentLib.bundle.modelset import ModelCache, ModelSet, resolve_device
from KneeAlignmentLib.bundle.resolve import resolve_models
from KneeAlignmentLib.errors import BundleError
from KneeAlignmentLib.frame import FrameSpec
from KneeAlignmentLib.heatmaps import HeatmapCodec
from KneeAlignmentLib.measurement import reference_point_names
from KneeAlignmentLib.schema import KINDS, load_schema


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    return save_models(tmp_path_factory.mktemp("models"))


def test_model_set_loads_a_folder_or_explicit_paths(models_dir):
    models = ModelSet.load(models_dir, device="cpu")
    assert models.kinds == KINDS and models.device == torch.device("cpu")
    assert models.local("postop").frame_spec == SPEC and models.global_model.codec == CODEC
    assert not models.global_model.network.training
    explicit = ModelSet.load({"global": models_dir / "global", "postop": models_dir / "local_postop"}, device="cpu")
    assert explicit.kinds == ("postop",) and explicit.local("postop").info.model_id == "tiny-postop@0.0.1"


@pytest.mark.parametrize("problem, match", [
    ("codec", "codec sizes"),
    ("names", "schema order"),
    ("frame", "crop_size"),
    ("stage", "global-stage model"),
])
def test_bundles_that_do_not_fit_their_role_are_refused(tmp_path, problem, match):
    root = save_models(tmp_path, kinds=("preop",))
    schema = load_schema("preop")
    fields = dict(name="bad", version="1", stage="local", schema="preop", landmark_names=schema.names,
                  codec=dataclasses.asdict(CODEC), frame=dataclasses.asdict(SPEC), description="d", data_source="s")
    network = tiny_network(len(schema), 1)
    if problem == "codec":
        fields["codec"] = dataclasses.asdict(HeatmapCodec((64, 64), (16, 16), 1.5))
    elif problem == "names":
        fields["landmark_names"] = schema.names[::-1]
    elif problem == "frame":
        fields["frame"] = dataclasses.asdict(FrameSpec((32, 32), SPEC.ref_canonical_px))
    else:
        network = tiny_network(2, 1)
        fields |= dict(stage="global", schema=None, landmark_names=reference_point_names())
    save_bundle(root / "local_preop", network, overwrite=True, **fields)
    with pytest.raises(BundleError, match=match):
        ModelSet.load(root, device="cpu")


def test_devices_are_named_or_auto():
    with pytest.raises(ValueError, match="device"):
        resolve_device("gpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_cache_reuses_models_until_a_bundle_changes(tmp_path):
    root = save_models(tmp_path / "models", kinds=("preop",))
    paths = resolve_models(root)
    cache = ModelCache()
    first = cache.get(paths, "cpu")
    assert cache.get(paths, "cpu") is first
    metadata = root / "local_preop" / "configs" / "metadata.json"
    metadata.write_text(metadata.read_text() + "\n")  # the file changes: load again
    assert cache.get(paths, "cpu") is not first
    cache.clear()
    assert cache._models is None
