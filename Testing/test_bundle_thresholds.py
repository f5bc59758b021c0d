"""QC thresholds travel in the bundle metadata (bundle.thresholds, bundle.format, pipeline) and are calibrated
by ``kneealign-train calibrate-qc`` (Training/kneetrain/calibrate.py) on validation phantoms.

Tiny random-init models (``model_factory``) and small phantoms: the numbers are meaningless,
the plumbing and the calibration rules are what is tested.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from KneeAlignmentLib.bundle.format import METADATA_FILE, load_bundle, write_qc_thresholds
from KneeAlignmentLib.bundle.modelset import ModelSet
from KneeAlignmentLib.bundle.thresholds import DEFAULT, QCThresholds
from KneeAlignmentLib.errors import BundleError
from KneeAlignmentLib.datasets import find_cases
from KneeAlignmentLib.imageio import radiograph_from_array
from KneeAlignmentLib.phantom.dataset import generate_dataset
from KneeAlignmentLib.pipeline import measure_batch


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def models_dir(tiny_models_dir, tmp_path):
    """A private copy: these tests write into the bundles."""
    return shutil.copytree(tiny_models_dir, tmp_path / "models")


def test_thresholds_read_partially_and_refuse_unknown_or_bad_fields():
    t = QCThresholds.from_dict({"mean_confidence_min": 0.42, "atfa_range_deg": [-20, 25]})
    assert t.mean_confidence_min == 0.42 and t.atfa_range_deg == (-20.0, 25.0)
    assert t.global_confidence_min == DEFAULT.global_confidence_min
    assert QCThresholds.from_dict(t.to_dict()) == t
    assert QCThresholds.from_dict(None) == DEFAULT
    with pytest.raises(ValueError, match="unknown qc thresholds"):
        QCThresholds.from_dict({"mean_confidence": 0.4})
    with pytest.raises(ValueError, match="mean_confidence_min"):
        QCThresholds.from_dict({"mean_confidence_min": -0.1})
    with pytest.raises(ValueError, match="atfa_range_deg"):
        QCThresholds.from_dict({"atfa_range_deg": [10, -10]})


def test_bundles_without_a_qc_section_get_the_defaults_and_written_values_are_read_back(models_dir):
    assert load_bundle(models_dir / "local_preop").metadata.qc == DEFAULT
    write_qc_thresholds(models_dir / "local_preop", {"mean_confidence_min": 0.37}, "a test")
    data = json.loads((models_dir / "local_preop" / METADATA_FILE).read_text())
    assert data["kneealignment"]["qc"]["mean_confidence_min"] == 0.37
    assert data["kneealignment"]["qc_calibration"] == "a test"
    assert load_bundle(models_dir / "local_preop").metadata.qc.mean_confidence_min == 0.37  # checksum still fine
    with pytest.raises(BundleError, match="unknown qc thresholds"):
        write_qc_thresholds(models_dir / "local_preop", {"no_such_threshold": 1.0})
    data["kneealignment"]["qc"] = {"mean_confidence_min": "high"}
    (models_dir / "local_preop" / METADATA_FILE).write_text(json.dumps(data))
    with pytest.raises(BundleError, match="invalid qc thresholds"):
        load_bundle(models_dir / "local_preop")


def test_the_pipeline_judges_results_by_the_thresholds_of_the_bundles_that_made_them(models_dir):
    image = radiograph_from_array(np.random.default_rng(0).random((160, 128)), spacing_mm=(0.5, 0.5), side="R")

    def codes(**qc):
        for folder, values in qc.items():
            write_qc_thresholds(models_dir / folder, values)
        return set(measure_batch([image], ModelSet.load(models_dir, device="cpu"), kind="preop")[0].flag_codes)

    assert "low_mean_confidence" in codes(local_preop={"mean_confidence_min": 1.0})
    assert "low_mean_confidence" not in codes(local_preop={"mean_confidence_min": 0.0})
    # the reference-point test is the global bundle's, whatever the local bundle says
    write_qc_thresholds(models_dir / "local_preop", {"wrong_view_mean_confidence": 0.0,
                                                     "global_confidence_min": 0.0})
    write_qc_thresholds(models_dir / "global", {"global_confidence_min": 1.0})
    assert "wrong_view_suspected" in codes()
    write_qc_thresholds(models_dir / "global", {"global_confidence_min": 0.0})
    assert "wrong_view_suspected" not in codes()


def test_calibrate_qc_derives_thresholds_that_keep_validation_knees_out_of_wrong_view(models_dir, tmp_path):
    from kneetrain.calibrate import calibrate_qc
    from kneetrain.cli import main as train_main

    data = []
    for kind, seed in (("preop", 11), ("postop", 12)):
        generate_dataset(kind, 3, seed, tmp_path / kind, size=(192, 160))
        data.append(tmp_path / kind)
    report = calibrate_qc(models_dir, data, wrong_views=1, write=False)
    assert set(report["thresholds"]) == {"global", "local_preop", "local_postop"}
    assert load_bundle(models_dir / "global").metadata.qc == DEFAULT  # not written without write=True
    stats = report["stats"]
    assert stats["cases"] == {"preop": 3, "postop": 3} and stats["wrong_views"] == 5
    assert report["thresholds"]["global"]["global_confidence_min"] <= stats["reference_confidence"]["ap_knees"]["min"]
    assert "kind_implant_confidence" in report["thresholds"]["local_postop"]

    assert train_main(["calibrate-qc", "--models-dir", str(models_dir), "--data", str(data[0]), "--data",
                       str(data[1]), "--wrong-views", "1", "--write", "--report", str(tmp_path / "cal.json")]) == 0
    written = json.loads((tmp_path / "cal.json").read_text())["thresholds"]
    models = ModelSet.load(models_dir, device="cpu")
    assert models.global_model.qc.global_confidence_min == written["global"]["global_confidence_min"]
    for kind in ("preop", "postop"):
        for key, value in written[f"local_{kind}"].items():
            assert getattr(models.local(kind).qc, key) == pytest.approx(value)
        # the rule: no validation knee is taken for a wrong view
        cases = [c.load() for c in find_cases(tmp_path / kind)]
        results = measure_batch([c.radiograph for c in cases], models, kind=kind)
        assert not any("wrong_view_suspected" in m.flag_codes for m in results)
