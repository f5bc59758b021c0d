"""Tests of KneeAlignmentLib.bundle.format: round trips, the folder swap, and every way a bundle is refused."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import safetensors.torch
import torch

from KneeAlignmentLib.bundle import format as bundle_format
from KneeAlignmentLib import DISCLAIMER
from KneeAlignmentLib.bundle.format import METADATA_FILE, WEIGHTS_FILE, load_bundle, save_bundle
from KneeAlignmentLib.errors import BundleError
from KneeAlignmentLib.networks import HourglassConfig, build_network

NAMES = ["femur_ref", "tibia_ref", "joint_centre"]


def tiny_network(seed: int = 0, width: int = 4, out_channels: int = 3) -> torch.nn.Module:
    """A tiny hourglass whose every float tensor (incl. batch-norm statistics) is random."""
    config = HourglassConfig(
        depth=1, width=width, stacks=2, in_channels=1, out_channels=out_channels, input_size=(8, 8), heatmap_stride=2
    )
    torch.manual_seed(seed)
    network = build_network(config)
    with torch.no_grad():
        for key, tensor in network.state_dict().items():
            if tensor.is_floating_point():
                noise = torch.randn_like(tensor) * 0.5
                tensor.copy_(noise.abs() + 0.5 if key.endswith("running_var") else noise)
    return network.eval()


def save_tiny(directory: Path, network: torch.nn.Module | None = None, **overrides) -> Path:
    fields = dict(
        name="tiny-test",
        version="0.1.0",
        stage="local",
        schema="postop",
        landmark_names=NAMES,
        codec={"kind": "gaussian", "sigma_px": 1.5},
        frame={"crop_px": [8, 8]},
        description="Tiny network for tests.",
        data_source="random weights",
        preset=None,
        metrics={"mre_px": 1.25},
    )
    fields.update(overrides)
    return save_bundle(directory, network if network is not None else tiny_network(), **fields)


def image() -> torch.Tensor:
    return torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(7))


def read_metadata(path: Path) -> dict:
    return json.loads((path / METADATA_FILE).read_text(encoding="utf-8"))


def write_metadata(path: Path, data: dict) -> None:
    (path / METADATA_FILE).write_text(json.dumps(data), encoding="utf-8")


def replace_weights(path: Path, payload: bytes, file: str = WEIGHTS_FILE) -> None:
    """Swap the weights and record their true checksum, as a careful attacker would."""
    (path / WEIGHTS_FILE).unlink()
    (path / file).write_bytes(payload)
    data = read_metadata(path)
    data["kneealignment"]["weights"] = {"file": file, "sha256": hashlib.sha256(payload).hexdigest()}
    write_metadata(path, data)


class _TouchOnUnpickle:
    """Pickles to a call that creates ``sentinel`` when unpickled: a stand-in for malware."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (Path.touch, (self.sentinel,))


# --- round trips -------------------------------------------------------------------------


def test_round_trip_gives_identical_outputs_and_metadata(tmp_path):
    network = tiny_network()
    path = save_tiny(tmp_path / "model", network)
    assert (path / METADATA_FILE).is_file() and (path / WEIGHTS_FILE).is_file()
    loaded = load_bundle(path, expected_stage="local", expected_schema="postop")
    assert not loaded.network.training
    assert loaded.network.config == network.config
    with torch.no_grad():
        assert torch.equal(loaded.network(image()), network(image()))
    meta = loaded.metadata
    assert meta.landmark_names == tuple(NAMES) and meta.schema == "postop" and meta.stage == "local"
    assert meta.codec == {"kind": "gaussian", "sigma_px": 1.5} and meta.metrics == {"mre_px": 1.25}
    assert meta.model_id == "tiny-test@0.1.0" and meta.intended_use == DISCLAIMER
    assert meta.weights_sha256 == hashlib.sha256((path / WEIGHTS_FILE).read_bytes()).hexdigest()


def test_metadata_json_has_monai_fields(tmp_path):
    data = read_metadata(save_tiny(tmp_path / "model"))
    for field in ("version", "changelog", "monai_version", "pytorch_version", "numpy_version", "task",
                  "required_packages_version", "authors", "copyright", "license", "data_source"):
        assert data[field], field
    assert data["intended_use"] == DISCLAIMER
    assert data["network_data_format"]["inputs"]["image"]["spatial_shape"] == [8, 8]
    pred = data["network_data_format"]["outputs"]["pred"]
    assert pred["num_channels"] == 3 and pred["spatial_shape"] == [4, 4]
    assert pred["channel_def"] == {"0": "femur_ref", "1": "tibia_ref", "2": "joint_centre"}
    assert data["kneealignment"]["format_version"] == 1


def test_float16_storage_is_smaller_and_close(tmp_path):
    network = tiny_network()
    full = save_tiny(tmp_path / "f32", network)
    half = save_tiny(tmp_path / "f16", network, dtype=torch.float16)
    stored_full = safetensors.torch.load_file(full / WEIGHTS_FILE)
    stored_half = safetensors.torch.load_file(half / WEIGHTS_FILE)
    for key, tensor in stored_full.items():
        if tensor.dtype == torch.float32:
            assert stored_half[key].dtype == torch.float16, key
        else:  # e.g. batch-norm counters stay integers
            assert torch.equal(stored_half[key], tensor), key
    loaded = load_bundle(half)
    assert all(p.dtype == torch.float32 for p in loaded.network.parameters())
    with torch.no_grad():
        expected, actual = network(image()), loaded.network(image())
    assert not torch.equal(actual, expected)  # the storage really was rounded
    torch.testing.assert_close(actual, expected, rtol=2e-2, atol=2e-2)


def test_plain_state_dict_pt_file_is_accepted(tmp_path):
    network = tiny_network()
    path = save_tiny(tmp_path / "model", network)
    buffer = tmp_path / "state.pt"
    torch.save(network.state_dict(), buffer)
    replace_weights(path, buffer.read_bytes(), file="models/model.pt")
    with torch.no_grad():
        assert torch.equal(load_bundle(path).network(image()), network(image()))


def test_global_bundle_without_schema_fits_any_schema(tmp_path):
    network = tiny_network(out_channels=2)
    path = save_tiny(tmp_path / "g", network, stage="global", schema=None, landmark_names=["a", "b"])
    assert load_bundle(path, expected_stage="global", expected_schema="preop").metadata.schema is None


# --- save ---------------------------------------------------------------------------------


def test_save_refuses_to_clobber_unless_asked(tmp_path):
    path = save_tiny(tmp_path / "model", tiny_network(seed=0))
    with pytest.raises(BundleError, match="already exists"):
        save_tiny(path, tiny_network(seed=1))
    save_tiny(path, tiny_network(seed=1), overwrite=True)
    with torch.no_grad():
        assert torch.equal(load_bundle(path).network(image()), tiny_network(seed=1)(image()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging folders left


def test_failed_save_leaves_nothing_behind(tmp_path, monkeypatch):
    real_write = bundle_format._write_synced

    def failing_write(path, payload):
        if path.name == "metadata.json":
            raise OSError(28, "No space left on device")
        real_write(path, payload)

    monkeypatch.setattr(bundle_format, "_write_synced", failing_write)
    with pytest.raises(BundleError, match="cannot write"):
        save_tiny(tmp_path / "model")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_folder_swap_puts_the_old_folder_back(tmp_path, monkeypatch):
    target = save_tiny(tmp_path / "model", tiny_network(seed=0))
    before = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    staging = tmp_path / ".staging"
    staging.mkdir()
    (staging / "new.txt").write_text("new")
    real_replace = os.replace

    def failing_replace(source, destination):
        if Path(source) == staging:
            raise OSError(28, "No space left on device")
        real_replace(source, destination)

    monkeypatch.setattr(bundle_format.os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space"):
        bundle_format.replace_folder(staging, target)
    assert {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".staging", "model"]  # nothing retired left over


@pytest.mark.parametrize(
    ("override", "problem"),
    [
        ({"schema": "midop"}, "schema"),
        ({"stage": "regional"}, "stage"),
        ({"landmark_names": ["a", "b"]}, "2 landmark names"),
        ({"landmark_names": ["a", "a", "b"]}, "duplicates"),
        ({"metrics": {"mre_px": float("nan")}}, "strict JSON"),
        ({"description": ""}, "description"),
        ({"dtype": torch.bfloat16}, "storage dtype"),
    ],
)
def test_save_refuses_invalid_bundles(tmp_path, override, problem):
    with pytest.raises(BundleError, match=problem):
        save_tiny(tmp_path / "model", **override)
    assert not (tmp_path / "model").exists()


def test_save_refuses_weights_that_overflow_float16(tmp_path):
    network = tiny_network()
    with torch.no_grad():
        network.heads[0].conv.weight[0, 0] = 1e6
    with pytest.raises(BundleError, match="float16"):
        save_tiny(tmp_path / "model", network, dtype=torch.float16)


# --- refusals -------------------------------------------------------------------------------


def test_tampered_weight_byte_fails_checksum(tmp_path):
    path = save_tiny(tmp_path / "model")
    weights = bytearray((path / WEIGHTS_FILE).read_bytes())
    weights[-5] ^= 0x01
    (path / WEIGHTS_FILE).write_bytes(bytes(weights))
    with pytest.raises(BundleError, match="checksum mismatch"):
        load_bundle(path)


def test_truncated_weights_fail_checksum(tmp_path):
    path = save_tiny(tmp_path / "model")
    weights = (path / WEIGHTS_FILE).read_bytes()
    (path / WEIGHTS_FILE).write_bytes(weights[: len(weights) // 2])
    with pytest.raises(BundleError, match="checksum mismatch"):
        load_bundle(path)


def test_truncated_weights_with_matching_checksum_are_not_safetensors(tmp_path):
    path = save_tiny(tmp_path / "model")
    weights = (path / WEIGHTS_FILE).read_bytes()
    replace_weights(path, weights[: len(weights) // 2])
    with pytest.raises(BundleError, match="not a valid safetensors"):
        load_bundle(path)


@pytest.mark.parametrize(("section", "field"), [(None, "license"), (None, "intended_use"),
                                                ("kneealignment", "landmark_names"), ("kneealignment", "weights")])
def test_missing_metadata_field(tmp_path, section, field):
    path = save_tiny(tmp_path / "model")
    data = read_metadata(path)
    del (data[section] if section else data)[field]
    write_metadata(path, data)
    with pytest.raises(BundleError, match=f"lacks required fields.*{field}"):
        load_bundle(path)


def test_unsupported_format_version(tmp_path):
    path = save_tiny(tmp_path / "model")
    data = read_metadata(path)
    data["kneealignment"]["format_version"] = 2
    write_metadata(path, data)
    with pytest.raises(BundleError, match="format_version 2"):
        load_bundle(path)


def test_wrong_schema_or_stage_expectation(tmp_path):
    path = save_tiny(tmp_path / "model")
    with pytest.raises(BundleError, match="'postop' schema, 'preop' was expected"):
        load_bundle(path, expected_schema="preop")
    with pytest.raises(BundleError, match="local-stage model, a global-stage model was expected"):
        load_bundle(path, expected_stage="global")
    with pytest.raises(ValueError, match="post-op"):
        load_bundle(path, expected_schema="post-op")


def test_weights_of_another_architecture_do_not_fit(tmp_path):
    path = save_tiny(tmp_path / "model")
    other = save_tiny(tmp_path / "wider", tiny_network(width=6))
    replace_weights(path, (other / WEIGHTS_FILE).read_bytes())
    with pytest.raises(BundleError, match="has shape"):
        load_bundle(path)


def test_missing_tensor_does_not_fit(tmp_path):
    path = save_tiny(tmp_path / "model")
    tensors = safetensors.torch.load_file(path / WEIGHTS_FILE)
    del tensors["stem.0.conv.weight"]
    replace_weights(path, safetensors.torch.save(tensors))
    with pytest.raises(BundleError, match=r"1 missing \(e\.g\. \['stem\.0\.conv\.weight'\]\)"):
        load_bundle(path)


def test_non_finite_weights_are_refused(tmp_path):
    path = save_tiny(tmp_path / "model")
    tensors = safetensors.torch.load_file(path / WEIGHTS_FILE)
    tensors["heads.1.conv.bias"][0] = float("nan")
    replace_weights(path, safetensors.torch.save(tensors))
    with pytest.raises(BundleError, match="heads.1.conv.bias.*NaN"):
        load_bundle(path)


def test_landmark_names_must_match_outputs(tmp_path):
    path = save_tiny(tmp_path / "model")
    data = read_metadata(path)
    data["kneealignment"]["landmark_names"].append("extra")
    write_metadata(path, data)
    with pytest.raises(BundleError, match="4 landmark names for a network with 3 outputs"):
        load_bundle(path)


def test_network_data_format_must_match_config(tmp_path):
    path = save_tiny(tmp_path / "model")
    data = read_metadata(path)
    data["network_data_format"]["inputs"]["image"]["spatial_shape"] = [16, 16]
    write_metadata(path, data)
    with pytest.raises(BundleError, match="network_data_format"):
        load_bundle(path)


@pytest.mark.parametrize("file", ["../model.safetensors", "/tmp/model.safetensors", "models/model.bin",
                                  "models/sub/model.safetensors"])
def test_weights_file_must_be_a_known_file_inside_models(tmp_path, file):
    path = save_tiny(tmp_path / "model")
    data = read_metadata(path)
    data["kneealignment"]["weights"]["file"] = file
    write_metadata(path, data)
    with pytest.raises(BundleError, match="weights.file"):
        load_bundle(path)


def test_missing_or_unreadable_files(tmp_path):
    with pytest.raises(BundleError, match="folder not found"):
        load_bundle(tmp_path / "nowhere")
    path = save_tiny(tmp_path / "model")
    (path / METADATA_FILE).write_text("{not json", encoding="utf-8")
    with pytest.raises(BundleError, match="cannot read configs/metadata.json"):
        load_bundle(path)
    (path / METADATA_FILE).unlink()
    with pytest.raises(BundleError, match="metadata.json not found"):
        load_bundle(path)
    path = save_tiny(tmp_path / "model2")
    (path / WEIGHTS_FILE).unlink()
    with pytest.raises(BundleError, match="cannot read weights file"):
        load_bundle(path)


def test_unknown_device_is_a_bundle_error(tmp_path):
    path = save_tiny(tmp_path / "model")
    assert load_bundle(path, device=torch.device("cpu")).device == torch.device("cpu")
    with pytest.raises(BundleError, match="device"):
        load_bundle(path, device="no-such-device")


# --- malicious payloads -----------------------------------------------------------------------


def test_pickle_named_safetensors_is_refused_without_executing(tmp_path):
    armed, sentinel = tmp_path / "armed", tmp_path / "pwned"
    pickle.loads(pickle.dumps(_TouchOnUnpickle(armed)))
    assert armed.exists()  # the payload really runs code when unpickled

    path = save_tiny(tmp_path / "model")
    replace_weights(path, pickle.dumps(_TouchOnUnpickle(sentinel)))
    with pytest.raises(BundleError, match="not a valid safetensors"):
        load_bundle(path)
    assert not sentinel.exists()


def test_malicious_pt_file_is_refused_without_executing(tmp_path):
    armed, sentinel = tmp_path / "armed", tmp_path / "pwned"
    payload_file = tmp_path / "evil.pt"
    torch.save({"stem.0.conv.weight": _TouchOnUnpickle(armed)}, payload_file)
    with zipfile.ZipFile(payload_file) as archive:  # the pickle inside a torch.save archive
        pickle.loads(archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl"))))
    assert armed.exists()  # the payload really runs code when unpickled

    torch.save({"stem.0.conv.weight": _TouchOnUnpickle(sentinel)}, payload_file)
    path = save_tiny(tmp_path / "model")
    replace_weights(path, payload_file.read_bytes(), file="models/model.pt")
    with pytest.raises(BundleError, match="not a plain state dict"):
        load_bundle(path)
    assert not sentinel.exists()
