"""The DICOM DX For Presentation writer: required attributes, round trip, validation, dciodvfy."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pydicom
import pytest

from KneeAlignmentLib.dicomwrite import DX_FOR_PRESENTATION, write_dx
from KneeAlignmentLib.imageio import read_radiograph

RNG = np.random.default_rng(7)
PIXELS_12 = RNG.integers(0, 4096, size=(64, 48), dtype=np.uint16)


def _write(path, pixels=PIXELS_12, **overrides):
    kwargs = dict(imager_spacing_mm=(0.15, 0.15), laterality="R", photometric="MONOCHROME2", bits_stored=12,
                  uid_entropy=["test", 1], patient_id="PHANTOM-000001", patient_name="PHANTOM^000001",
                  spacing_mm=(0.14, 0.14), magnification=1.0714285714, study_date="20200101", study_time="120000",
                  study_id="1", accession_number="SYN000001", kvp=63.0, source_to_detector_mm=1125.0,
                  source_to_patient_mm=1050.0, burned_in_annotation=True, derivation="synthetic")
    kwargs.update(overrides)
    return write_dx(path, pixels, **kwargs)


def test_required_attributes_and_pixels(tmp_path):
    path = _write(tmp_path / "a.dcm")
    ds = pydicom.dcmread(path)
    assert ds.file_meta.MediaStorageSOPClassUID == DX_FOR_PRESENTATION == ds.SOPClassUID
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.Modality == "DX" and ds.PresentationIntentType == "FOR PRESENTATION"
    assert ds.ImageLaterality == "R" and ds.BodyPartExamined == "KNEE" and ds.ViewPosition == "AP"
    region = ds.AnatomicRegionSequence[0]
    assert (region.CodeValue, region.CodingSchemeDesignator) == ("72696002", "SCT")
    assert [float(v) for v in ds.ImagerPixelSpacing] == [0.15, 0.15]
    assert [float(v) for v in ds.PixelSpacing] == [0.14, 0.14] and ds.PixelSpacingCalibrationType == "GEOMETRY"
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (16, 12, 11, 0)
    assert ds.PresentationLUTShape == "IDENTITY" and ds.BurnedInAnnotation == "YES"
    assert ds.PatientID == "PHANTOM-000001"
    assert np.array_equal(ds.pixel_array, PIXELS_12)


def test_full_range_window_reads_back_as_stored_over_max(tmp_path):
    radiograph = read_radiograph(_write(tmp_path / "a.dcm"))
    assert radiograph.intensity_mapping == "window"
    assert np.allclose(radiograph.pixels, PIXELS_12 / 4095.0, atol=1e-6)
    assert radiograph.spacing_mm == (0.14, 0.14) and radiograph.side == "R"


def test_monochrome1_is_marked_inverse_and_reads_back_bright_dense(tmp_path):
    path = _write(tmp_path / "b.dcm", pixels=(4095 - PIXELS_12).astype(np.uint16), photometric="MONOCHROME1",
                  laterality="L", spacing_mm=None, magnification=None)
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1" and ds.PresentationLUTShape == "INVERSE"
    assert "PixelSpacing" not in ds
    radiograph = read_radiograph(path)
    assert np.allclose(radiograph.pixels, PIXELS_12 / 4095.0, atol=1e-6)
    assert radiograph.side == "L" and radiograph.spacing_source == "ImagerPixelSpacing"


def test_uids_are_deterministic_and_distinct(tmp_path):
    a = pydicom.dcmread(_write(tmp_path / "a.dcm"))
    b = pydicom.dcmread(_write(tmp_path / "b.dcm"))
    c = pydicom.dcmread(_write(tmp_path / "c.dcm", uid_entropy=["test", 2]))
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        assert a[key].value == b[key].value != c[key].value
    assert len({a.StudyInstanceUID, a.SeriesInstanceUID, a.SOPInstanceUID}) == 3
    assert (tmp_path / "a.dcm").read_bytes() == (tmp_path / "b.dcm").read_bytes()


def test_writing_replaces_atomically(tmp_path):
    path = tmp_path / "a.dcm"
    path.write_bytes(b"old")
    _write(path)
    assert pydicom.dcmread(path).Rows == 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.dcm"]  # no temporary file left


@pytest.mark.parametrize("bad, match", [
    (dict(pixels=PIXELS_12.astype(np.int32)), "uint16"),
    (dict(pixels=np.zeros((2, 3, 4), np.uint16)), "2D"),
    (dict(bits_stored=10), "bits_stored"),
    (dict(pixels=np.full((4, 4), 5000, np.uint16)), "do not fit"),
    (dict(photometric="RGB"), "photometric"),
    (dict(laterality="B"), "laterality"),
    (dict(imager_spacing_mm=(0.15, -1.0)), "imager_spacing_mm"),
    (dict(window=(2048.0, 0.0)), "window"),
    (dict(uid_entropy=[]), "uid_entropy"),
    (dict(magnification=0.5), "magnification"),
])
def test_invalid_arguments_raise_value_error(tmp_path, bad, match):
    with pytest.raises(ValueError, match=match):
        _write(tmp_path / "x.dcm", **bad)
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(shutil.which("dciodvfy") is None,
                    reason="dciodvfy not installed (Debian/Ubuntu: apt-get install dicom3tools)")
@pytest.mark.parametrize("photometric, bits", [("MONOCHROME2", 12), ("MONOCHROME1", 14), ("MONOCHROME2", 16)])
def test_dciodvfy_reports_no_errors(tmp_path, photometric, bits):
    maxval = (1 << bits) - 1
    pixels = (PIXELS_12.astype(np.uint32) * maxval // 4095).astype(np.uint16)
    path = _write(tmp_path / "a.dcm", pixels=pixels, photometric=photometric, bits_stored=bits)
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    report = result.stdout + result.stderr
    assert "DXImageForPresentation" in report
    assert not [line for line in report.splitlines() if line.startswith("Error")], report
