"""`kneealign measure --spacing ROW_MM COL_MM` for inputs without spacing (imageio.with_given_spacing).

Tiny random-init models (``model_factory``): the results are flagged, which does not
matter here; what is tested is the spacing each result records and the refusals.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from dicom_factory import write_dx
from KneeAlignmentLib import cli
from KneeAlignmentLib.errors import ImageReadError
from KneeAlignmentLib.imageio import radiograph_from_array, with_given_spacing


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _png(path: Path) -> Path:
    sitk.WriteImage(sitk.GetImageFromArray((np.random.default_rng(0).random((90, 70)) * 255).astype(np.uint8)),
                    str(path))
    return path


def test_given_spacing_fills_a_missing_one_and_never_overrides_the_files():
    plain = radiograph_from_array(np.zeros((8, 8)))
    given = with_given_spacing(plain, (0.2, 0.25))
    assert given.spacing_mm == (0.2, 0.25) and given.spacing_source == "given"
    assert with_given_spacing(plain, None) is plain
    own = radiograph_from_array(np.zeros((8, 8)), spacing_mm=(0.15, 0.15), spacing_source="PixelSpacing")
    assert with_given_spacing(own, (0.15, 0.15)) is own  # agrees: the file's own value and source stay
    with pytest.raises(ImageReadError, match="contradicts the image's own 0.15 x 0.15 mm"):
        with_given_spacing(own, (0.2, 0.2))
    for bad in ((0.0, 0.2), (-0.2, 0.2), (float("nan"), 0.2), (0.2,)):
        with pytest.raises(ImageReadError, match="positive"):
            with_given_spacing(plain, bad)


def test_measure_records_the_given_spacing_and_refuses_a_conflicting_input(tmp_path, capsys, tiny_models_dir):
    image = _png(tmp_path / "knee.png")
    base = ["measure", "--models-dir", str(tiny_models_dir), "--device", "cpu", "--workers", "0", "--json"]
    assert cli.main([*base, str(image), "--spacing", "0.21", "0.22"]) == 0
    [result] = json.loads(capsys.readouterr().out)
    assert result["image"]["spacing_mm"] == [0.21, 0.22] and result["image"]["spacing_source"] == "given"

    dcm = write_dx(tmp_path / "knee.dcm", (np.random.default_rng(1).random((96, 80)) * 4095).astype(np.uint16),
                   bits_stored=12, spacing_mm=(0.5, 0.5))
    assert cli.main([*base, str(dcm), "--spacing", "0.21", "0.22"]) == 1  # an input failed
    [failed] = json.loads(capsys.readouterr().out)
    assert failed["status"] == "error" and "contradicts the image's own 0.5 x 0.5 mm" in failed["reason"]
    assert cli.main([*base, str(dcm), "--spacing", "0.5", "0.5"]) == 0  # agreeing is fine


@pytest.mark.parametrize("values", [("0", "0.2"), ("-0.2", "0.2"), ("inf", "0.2"), ("a", "0.2")])
def test_a_non_positive_spacing_is_refused_before_anything_runs(tmp_path, capsys, values):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["measure", str(tmp_path), "--spacing", *values])
    assert exit_info.value.code == 2
    assert "--spacing" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # the same definition serves angles
        cli.main(["angles", str(tmp_path / "x.mrk.json"), "--spacing", *values])
    assert exit_info.value.code == 2
