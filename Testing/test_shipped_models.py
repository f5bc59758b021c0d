"""The trained models that ship in KneeAlignment/Resources/Models, and the demo that uses them.

Their accuracy is measured by ``Training/train_shipped_models.sh evaluate`` on 600 held-out
phantoms (README, "Accuracy"); here: they load, fit the size budget, say what they were
trained on, measure the bundled example radiographs, and let quality control flag
images that are not AP knees.
"""

from __future__ import annotations

import csv
import json

import pytest

from KneeAlignmentLib import DISCLAIMER
from KneeAlignmentLib.bundle.format import METADATA_FILE
from KneeAlignmentLib.bundle.modelset import ModelSet
from KneeAlignmentLib.bundle.resolve import SHIPPED_MODELS_DIR
from KneeAlignmentLib.cli import EXAMPLE_RADIOGRAPHS, main
from KneeAlignmentLib.imageio import radiograph_from_array
from KneeAlignmentLib.phantom.wrong_view import MM_PER_PX, WRONG_VIEWS, render_wrong_view
from KneeAlignmentLib.pipeline import measure_batch

MODELS = SHIPPED_MODELS_DIR
BUNDLES = ("global", "local_preop", "local_postop")


@pytest.fixture(scope="module")
def models():
    return ModelSet.load(MODELS, device="cpu")


def _metadata(bundle: str) -> dict:
    return json.loads((MODELS / bundle / METADATA_FILE).read_text(encoding="utf-8"))


def test_three_bundles_within_the_size_budget():
    weights = [p for b in BUNDLES for p in (MODELS / b).rglob("*.safetensors")]
    assert len(weights) == 3
    assert sum(p.stat().st_size for p in weights) <= 60 * 2**20


@pytest.mark.parametrize("bundle", BUNDLES)
def test_metadata_says_synthetic_training_data_and_research_use(bundle):
    meta = _metadata(bundle)
    text = json.dumps(meta).lower()
    assert "synthetic" in meta["description"].lower() and "clinical data" in meta["description"].lower()
    assert "not for clinical use" in text
    assert meta["version"]


def test_models_load_for_both_kinds(models):
    assert set(models.kinds) == {"preop", "postop"}


def test_demo_measures_the_example_radiographs(tmp_path, capsys):
    out_dir = tmp_path / "demo"
    code = main(["demo", "--out", str(out_dir), "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0, out
    for kind in ("preop", "postop"):
        assert f"== phantom_{kind}.dcm" in out
    assert out.count("phantom truth: aTFA FTS") == 2 and DISCLAIMER in out
    rows = list(csv.DictReader(open(out_dir / "summary.csv", encoding="utf-8")))
    assert len(rows) == 2
    assert len(list(out_dir.glob("case-*.png"))) == 2
    assert sorted(p.name for p in EXAMPLE_RADIOGRAPHS.glob("*.dcm")) == ["phantom_postop.dcm", "phantom_preop.dcm"]


def test_quality_control_flags_images_that_are_not_ap_knees(models):
    images = [(view, seed) for view in WRONG_VIEWS for seed in range(2)]
    radiographs = [radiograph_from_array(render_wrong_view(view, seed), spacing_mm=(MM_PER_PX, MM_PER_PX),
                                         value_range=(0.0, 1.0)) for view, seed in images]
    results = measure_batch(radiographs, models, kind="auto", batch_size=4)
    missed = [f"{view} {seed}: {m.flag_codes}" for (view, seed), m in zip(images, results)
              if "wrong_view_suspected" not in m.flag_codes]
    assert not missed, f"not flagged as a wrong view: {missed}"
