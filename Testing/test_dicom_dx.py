"""The DICOM DX For Presentation builder: required attributes, round trip, transfer syntaxes, validation, dciodvfy."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000, UID, JPEGBaseline8Bit

from KneeAlignmentLib.dicom_dx import DX_FOR_PRESENTATION, TRANSFER_SYNTAXES, full_range_window, write_dx
from KneeAlignmentLib.imageio import read_radiograph

RNG = np.random.default_rng(7)
PIXELS_12 = RNG.integers(0, 4096, size=(64, 48), dtype=np.uint16)


def _write(path, pixels=PIXELS_12, **overrides):
    """A complete DX, as the phantom writes it."""
    kwargs = dict(imager_spacing_mm=(0.15, 0.15), image_laterality="R", photometric="MONOCHROME2", bits_stored=12,
                  rescale=(1.0, 0.0), window=full_range_window(overrides.get("bits_stored", 12)),
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
                  image_laterality="L", spacing_mm=None, magnification=None)
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
    (dict(bits_stored=17), "bits_stored"),
    (dict(pixels=np.zeros((4, 4), np.uint8), bits_stored=12), "bits_stored"),
    (dict(pixels=np.full((4, 4), 5000, np.uint16)), "do not fit"),
    (dict(pixels=np.full((4, 4), -2049, np.int16)), "do not fit"),
    (dict(photometric="RGB"), "photometric"),
    (dict(image_laterality="X"), "image_laterality"),
    (dict(laterality="B"), "laterality"),
    (dict(transfer_syntax="1.2.840.10008.1.2.4.80"), "transfer_syntax"),
    (dict(transfer_syntax=JPEGBaseline8Bit), "uint8"),
    (dict(rescale=(0.0, 1.0)), "rescale"),
    (dict(voi_lut=(0, 10, np.full(8, 1024))), "voi_lut"),
    (dict(imager_spacing_mm=(0.15, -1.0)), "imager_spacing_mm"),
    (dict(window=(2048.0, 0.0)), "window"),
    (dict(uid_entropy=[]), "uid_entropy"),
    (dict(magnification=0.5), "magnification"),
])
def test_invalid_arguments_raise_value_error(tmp_path, bad, match):
    with pytest.raises(ValueError, match=match):
        _write(tmp_path / "x.dcm", **bad)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("syntax", TRANSFER_SYNTAXES, ids=lambda uid: UID(uid).name)
def test_every_transfer_syntax_reads_back(tmp_path, syntax):
    bits = 8 if syntax == JPEGBaseline8Bit else 12
    yy, xx = np.mgrid[:64, :48]
    pixels = ((np.sin(yy / 9.0) * np.cos(xx / 7.0) + 1.0) / 2.0 * (2 ** bits - 1)).astype(PIXELS_12.dtype)
    pixels = pixels.astype(np.uint8) if bits == 8 else pixels  # smooth: lossy coding keeps it close
    ds = pydicom.dcmread(_write(tmp_path / "a.dcm", pixels=pixels, bits_stored=bits, transfer_syntax=syntax))
    assert ds.file_meta.TransferSyntaxUID == syntax
    lossy = syntax in (JPEGBaseline8Bit, JPEG2000)
    assert ds.LossyImageCompression == ("01" if lossy else "00")
    error = np.abs(ds.pixel_array.astype(np.int64) - pixels)
    assert error.mean() <= (0.01 * 2 ** bits if lossy else 0)


def test_signed_pixels_rescale_and_voi_lut(tmp_path):
    pixels = (PIXELS_12.astype(np.int16) - 2048)
    lut = np.arange(4096) // 4
    ds = pydicom.dcmread(_write(tmp_path / "a.dcm", pixels=pixels, rescale=(2.0, -7.0), window=(0.0, 1000.0),
                                voi_function="SIGMOID", voi_lut=(-2048, 10, lut)))
    assert (ds.PixelRepresentation, ds.BitsAllocated, ds.BitsStored) == (1, 16, 12)
    assert np.array_equal(ds.pixel_array, pixels)
    assert (float(ds.RescaleSlope), float(ds.RescaleIntercept), ds.VOILUTFunction) == (2.0, -7.0, "SIGMOID")
    assert list(ds.VOILUTSequence[0].LUTDescriptor) == [4096, -2048, 10]


def _dciodvfy_errors(path) -> str:
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    report = result.stdout + result.stderr
    assert "DXImageForPresentation" in report
    return "\n".join(line for line in report.splitlines() if line.startswith("Error"))


@pytest.mark.skipif(shutil.which("dciodvfy") is None,
                    reason="dciodvfy not installed (Debian/Ubuntu: apt-get install dicom3tools)")
@pytest.mark.parametrize("photometric, bits", [("MONOCHROME2", 12), ("MONOCHROME1", 14), ("MONOCHROME2", 16)])
def test_dciodvfy_reports_no_errors(tmp_path, photometric, bits):
    maxval = (1 << bits) - 1
    pixels = (PIXELS_12.astype(np.uint32) * maxval // 4095).astype(np.uint16)
    path = _write(tmp_path / "a.dcm", pixels=pixels, photometric=photometric, bits_stored=bits)
    assert not _dciodvfy_errors(path)


@pytest.mark.skipif(shutil.which("dciodvfy") is None,
                    reason="dciodvfy not installed (Debian/Ubuntu: apt-get install dicom3tools)")
@pytest.mark.parametrize("syntax", TRANSFER_SYNTAXES, ids=lambda uid: UID(uid).name)
def test_dciodvfy_reports_no_errors_in_any_transfer_syntax(tmp_path, syntax):
    pixels = (PIXELS_12 // 16).astype(np.uint8) if syntax == JPEGBaseline8Bit else PIXELS_12
    bits = 8 if syntax == JPEGBaseline8Bit else 12
    assert not _dciodvfy_errors(_write(tmp_path / "a.dcm", pixels=pixels, bits_stored=bits, transfer_syntax=syntax,
                                       voi_lut=(0, 10, np.arange(2 ** bits) * 1023 // (2 ** bits - 1))))
