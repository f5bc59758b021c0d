"""Model integrity beyond self-consistency (issue 16, defect 4).

A bundle's own checksum only shows that its weights and metadata agree; the released
bundles' digests are pinned in the package (``data/known_models.json``). Anything else
loads as "user-supplied", and every result it produces says so: JSON, CSV, text, overlay
and DICOM SR parameters. ``kneealign models verify`` lists what is installed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import safetensors.torch
import torch

from KneeAlignmentLib import cli
from KneeAlignmentLib.bundle import known
from KneeAlignmentLib.bundle.format import METADATA_FILE, load_bundle
from KneeAlignmentLib.bundle.known import KNOWN_MODELS_FILE, verify_models, write_known_models
from KneeAlignmentLib.bundle.modelset import ModelSet
from KneeAlignmentLib.bundle.resolve import SHIPPED_MODELS_DIR as SHIPPED
from KneeAlignmentLib.bundle.resolve import resolve_models
from KneeAlignmentLib.cli import EXAMPLE_RADIOGRAPHS
from KneeAlignmentLib.imageio import read_radiograph
from KneeAlignmentLib.measurement import Measurement, ModelInfo, csv_header, format_measurement
from KneeAlignmentLib.pipeline import measure


def test_the_shipped_bundles_are_the_pinned_releases(tmp_path):
    statuses = verify_models(resolve_models(SHIPPED))
    assert [(s.role, s.status) for s in statuses] == [("global", "release"), ("local_preop", "release"),
                                                      ("local_postop", "release")], \
        "re-exported models? run: .venv/bin/python -m KneeAlignmentLib.bundle.known"
    # The pinned list is exactly what the regeneration command writes for the shipped models.
    copy = tmp_path / "known_models.json"
    shutil.copy(KNOWN_MODELS_FILE, copy)
    write_known_models(SHIPPED, copy)
    assert json.loads(copy.read_text()) == json.loads(KNOWN_MODELS_FILE.read_text())
    assert cli.main(["models", "verify"]) == 0


def tampered_copy(tmp_path: Path, *, weights: bool = True) -> Path:
    """The shipped models with the pre-op weights noised (or its description edited), checksum updated."""
    models = tmp_path / "models"
    shutil.copytree(SHIPPED, models)
    bundle = models / "local_preop"
    meta_path = bundle / METADATA_FILE
    meta = json.loads(meta_path.read_text())
    section = meta["kneealignment"]
    weights_path = bundle / section["weights"]["file"]
    if weights:
        tensors = safetensors.torch.load_file(weights_path)
        generator = torch.Generator().manual_seed(0)
        noised = {k: v + 0.05 * torch.randn(v.shape, generator=generator) if v.is_floating_point() else v
                  for k, v in tensors.items()}
        safetensors.torch.save_file(noised, weights_path)
        section["weights"]["sha256"] = hashlib.sha256(weights_path.read_bytes()).hexdigest()
    else:
        meta["description"] += " Edited."
    meta_path.write_text(json.dumps(meta, indent=2))
    return models


@pytest.mark.parametrize("weights", [True, False], ids=["noised weights", "edited metadata"])
def test_a_tampered_bundle_with_an_updated_checksum_is_user_supplied(tmp_path, capsys, weights):
    models_dir = tampered_copy(tmp_path, weights=weights)
    assert load_bundle(models_dir / "local_preop").provenance == "user-supplied"  # self-consistent: it loads
    assert load_bundle(models_dir / "global").provenance == "release"

    assert cli.main(["models", "verify", "--models-dir", str(models_dir), "--json"]) == 1
    report = {b["role"]: b["status"] for b in json.loads(capsys.readouterr().out)["bundles"]}
    assert report == {"global": "release", "local_preop": "user-supplied", "local_postop": "release"}


def test_every_result_of_a_user_supplied_model_says_so(tmp_path):
    models = ModelSet.load(tampered_copy(tmp_path), device="cpu")
    result = measure(read_radiograph(EXAMPLE_RADIOGRAPHS / "phantom_preop.dcm"), models, kind="preop")
    assert result.local_model.provenance == "user-supplied" and result.model("global").provenance == "release"
    data = json.loads(result.to_json())
    assert {m["role"]: m["provenance"] for m in data["models"]}["local_preop"] == "user-supplied"
    assert Measurement.from_json(result.to_json()).local_model.provenance == "user-supplied"
    for model in data["models"]:  # a result written before provenance was recorded
        del model["provenance"]
    assert {m.provenance for m in Measurement.from_dict(data).models} == {"unknown"}
    row = dict(zip(csv_header(), result.to_csv_row()))
    assert row["model_provenance"] == "user-supplied"
    assert f"{result.local_model.model_id} (user-supplied)" in format_measurement(result)

    shipped = measure(read_radiograph(EXAMPLE_RADIOGRAPHS / "phantom_preop.dcm"), ModelSet.load(SHIPPED),
                      kind="preop")
    assert dict(zip(csv_header(), shipped.to_csv_row()))["model_provenance"] == "release"
    assert "(user-supplied)" not in format_measurement(shipped)


def test_provenance_values_and_results_written_before_it_was_recorded():
    with pytest.raises(ValueError, match="provenance"):
        ModelInfo("global", "g", "1", "trusted")
    assert ModelInfo("global", "g", "1").provenance == "user-supplied"  # never a release without the check
    assert ModelInfo("global", "g", "1", "release").label == "g@1"
    assert known.provenance("0" * 64, "0" * 64) == "user-supplied"


def test_an_unreadable_pinned_list_makes_nothing_a_release(tmp_path, monkeypatch):
    broken = tmp_path / "known_models.json"
    broken.write_text("{ not json")
    monkeypatch.setattr(known, "KNOWN_MODELS_FILE", broken)
    known.known_models.cache_clear()
    try:
        assert load_bundle(SHIPPED / "global").provenance == "user-supplied"
    finally:
        monkeypatch.undo()
        known.known_models.cache_clear()
