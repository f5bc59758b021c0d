"""Tests of KneeAlignmentLib.imageio on real files: DICOM in every transfer syntax we can
write (plus pydicom's own samples), PNG, JPEG, TIFF, NRRD, NIfTI, and bad input."""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    RLELossless,
)
from PIL import Image

from dicom_factory import FAKE_IDENTIFIERS, write_dx, write_frames
from KneeAlignmentLib.errors import ImageReadError
from KneeAlignmentLib.imageio import (
    DEFAULT_MAX_PIXELS,
    Radiograph,
    radiograph_from_array,
    read_radiograph,
)

H, W = 48, 40
INFO_KEYS = {
    "format", "transfer_syntax", "rows", "columns", "bits_stored", "photometric",
    "intensity_mapping", "spacing_mm", "spacing_source", "side", "side_source",
}


def knee_like(bits: int = 12) -> np.ndarray:
    """(H, W) smooth stored values in [0, 2**bits - 1]: a soft-tissue gradient with a
    dense 'bone' block (high values = dense, as in MONOCHROME2)."""
    top = 2**bits - 1
    y, x = np.mgrid[0:H, 0:W]
    image = 0.15 * top + 0.25 * top * x / (W - 1) + 0.05 * top * y / (H - 1)
    image[12:36, 14:26] += 0.45 * top
    dtype = np.uint8 if bits <= 8 else np.uint16
    return np.rint(image).astype(dtype)


def min_max(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64)
    return ((values - values.min()) / (values.max() - values.min())).astype(np.float32)


@pytest.fixture
def private_dir(tmp_path: Path) -> Path:
    """A folder named like a patient, as PACS exports do: it must never leak."""
    folder = tmp_path / "Testperson_Erika_PID-31415926"
    folder.mkdir()
    return folder


def read_error(path: Path, **kwargs) -> str:
    """The ImageReadError message for ``path``, checked to be free of identifiers."""
    with pytest.raises(ImageReadError) as caught:
        read_radiograph(path, **kwargs)
    message = str(caught.value)
    assert "Testperson" not in message and str(path.parent) not in message
    for value in FAKE_IDENTIFIERS.values():
        assert value not in message
    return message


# --- DICOM written by pydicom in each transfer syntax ------------------------------

LOSSLESS = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless, JPEG2000Lossless, JPEGLosslessSV1]


@pytest.mark.parametrize("syntax", LOSSLESS, ids=lambda uid: UID(uid).name)
def test_lossless_dicom_round_trip(private_dir, syntax):
    stored = knee_like(12)
    path = write_dx(private_dir / "knee.dcm", stored, transfer_syntax=syntax, bits_stored=12)
    radiograph = read_radiograph(path)
    np.testing.assert_allclose(radiograph.pixels, min_max(stored), atol=1e-6)
    assert radiograph.pixels.dtype == np.float32 and radiograph.shape == (H, W)
    info = radiograph.info()
    assert info["transfer_syntax"] == UID(syntax).name
    assert (info["format"], info["bits_stored"], info["photometric"]) == ("DICOM", 12, "MONOCHROME2")
    assert info["intensity_mapping"] == "min-max"


@pytest.mark.parametrize(
    ("syntax", "bits", "max_error"),
    [(JPEGBaseline8Bit, 8, 0.05), (JPEG2000, 12, 0.05)],
    ids=["JPEG baseline", "JPEG 2000 lossy"],
)
def test_lossy_dicom_close_to_original(private_dir, syntax, bits, max_error):
    stored = knee_like(bits)
    path = write_dx(private_dir / "knee.dcm", stored, transfer_syntax=syntax)
    radiograph = read_radiograph(path)
    error = np.abs(radiograph.pixels - min_max(stored))
    assert error.max() < max_error and error.mean() < 0.01
    assert radiograph.info()["transfer_syntax"] == UID(syntax).name


def test_monochrome1_is_inverted_so_bone_is_bright(private_dir):
    stored = knee_like(12)
    mono2 = read_radiograph(write_dx(private_dir / "m2.dcm", stored, bits_stored=12))
    # The same anatomy stored as MONOCHROME1: dense = low stored values.
    mono1 = read_radiograph(
        write_dx(private_dir / "m1.dcm", (4095 - stored).astype(np.uint16), photometric="MONOCHROME1", bits_stored=12)
    )
    np.testing.assert_allclose(mono1.pixels, mono2.pixels, atol=1e-6)
    assert mono1.pixels[24, 20] > 0.9 > mono1.pixels[2, 2]
    assert mono1.info()["photometric"] == "MONOCHROME1"


def dicom_linear_window(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 'LINEAR', output scaled to [0, 1]."""
    c, w = center - 0.5, width - 1.0
    return np.clip((x - c) / w + 0.5, 0.0, 1.0)


def test_rescale_then_window(private_dir):
    stored = knee_like(12)
    slope, intercept, center, width = 2.0, -1000.0, 3000.0, 4000.0
    path = write_dx(private_dir / "w.dcm", stored, bits_stored=12, rescale=(slope, intercept), window=(center, width))
    radiograph = read_radiograph(path)
    expected = dicom_linear_window(stored * slope + intercept, center, width)
    np.testing.assert_allclose(radiograph.pixels, expected, atol=1e-6)
    assert radiograph.info()["intensity_mapping"] == "window"
    # The window clips: both ends of the range are reached, so it was not a min-max.
    assert radiograph.pixels.min() == 0.0 and radiograph.pixels.max() == 1.0


def test_window_with_monochrome1_inverts_after_windowing(private_dir):
    stored = knee_like(12)
    path = write_dx(private_dir / "w1.dcm", stored, photometric="MONOCHROME1", bits_stored=12, window=(1500, 1000))
    expected = 1.0 - dicom_linear_window(stored.astype(np.float64), 1500, 1000)
    np.testing.assert_allclose(read_radiograph(path).pixels, expected, atol=1e-6)


@pytest.mark.parametrize("function", ["LINEAR_EXACT", "SIGMOID"])
def test_voi_lut_functions(private_dir, function):
    stored = knee_like(12)
    center, width = 2000.0, 1500.0
    path = write_dx(private_dir / "f.dcm", stored, bits_stored=12, window=(center, width), voi_function=function)
    x = stored.astype(np.float64)
    if function == "LINEAR_EXACT":  # PS3.3 C.11.2.1.3.2
        expected = np.clip((x - center) / width + 0.5, 0.0, 1.0)
    else:  # PS3.3 C.11.2.1.3.1
        expected = 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    np.testing.assert_allclose(read_radiograph(path).pixels, expected, atol=1e-5)


def test_voi_lut_sequence_wins_over_window(private_dir):
    stored = knee_like(12)
    first, entries = 500, 3000
    lut = np.clip(np.arange(entries) // 2, 0, 1023).astype(np.uint16)  # 10-bit output
    path = write_dx(private_dir / "lut.dcm", stored, bits_stored=12, window=(100, 10), voi_lut=(first, 10, lut))
    radiograph = read_radiograph(path)
    index = np.clip(stored.astype(np.int64) - first, 0, entries - 1)
    expected = (lut[index] - lut.min()) / (lut.max() - lut.min())
    np.testing.assert_allclose(radiograph.pixels, expected, atol=1e-6)
    assert radiograph.info()["intensity_mapping"] == "VOI LUT"


def test_invalid_window_falls_back_to_min_max(private_dir):
    stored = knee_like(12)
    path = write_dx(private_dir / "bad.dcm", stored, bits_stored=12, odd={"WindowCenter": 2000, "WindowWidth": 0})
    radiograph = read_radiograph(path)
    np.testing.assert_allclose(radiograph.pixels, min_max(stored), atol=1e-6)
    assert radiograph.intensity_mapping == "min-max (invalid window ignored)"


@pytest.mark.parametrize(
    ("tags", "spacing", "source"),
    [
        (dict(spacing_mm=(0.2, 0.1), imager_spacing_mm=(0.3, 0.3), magnification=1.5), (0.2, 0.1), "PixelSpacing"),
        (dict(imager_spacing_mm=(0.15, 0.12), magnification=1.2), (0.125, 0.1),
         "ImagerPixelSpacing / EstimatedRadiographicMagnificationFactor"),
        (dict(imager_spacing_mm=(0.15, 0.12)), (0.15, 0.12), "ImagerPixelSpacing"),
        (dict(imager_spacing_mm=(0.15, 0.12), odd={"PixelSpacing": [0.0, 0.0]}), (0.15, 0.12), "ImagerPixelSpacing"),
        (dict(imager_spacing_mm=(0.15, 0.12), odd={"EstimatedRadiographicMagnificationFactor": 0.0}), (0.15, 0.12),
         "ImagerPixelSpacing"),
        (dict(magnification=1.2), None, "none"),
        ({}, None, "none"),
    ],
    ids=["pixel-spacing-first", "magnification", "imager-only", "zero-pixel-spacing", "zero-magnification",
         "magnification-alone", "nothing"],
)
def test_dicom_spacing_precedence(private_dir, tags, spacing, source):
    radiograph = read_radiograph(write_dx(private_dir / "s.dcm", knee_like(), **tags))
    if spacing is None:
        assert radiograph.spacing_mm is None
    else:
        np.testing.assert_allclose(radiograph.spacing_mm, spacing, rtol=1e-9)
    assert radiograph.spacing_source == source


@pytest.mark.parametrize(
    ("tags", "side", "source"),
    [
        (dict(image_laterality="R", laterality="L"), "R", "ImageLaterality"),
        (dict(laterality="L"), "L", "Laterality"),
        (dict(image_laterality="B"), None, "none"),
        (dict(image_laterality="U", laterality="R"), "R", "Laterality"),
        ({}, None, "none"),
    ],
)
def test_dicom_laterality(private_dir, tags, side, source):
    radiograph = read_radiograph(write_dx(private_dir / "l.dcm", knee_like(), **tags))
    assert (radiograph.side, radiograph.side_source) == (side, source)


def test_dicom_recognised_by_content_not_extension(private_dir):
    stored = knee_like(12)
    bare = write_dx(private_dir / "bare.png", stored, preamble=False)
    assert bare.read_bytes()[128:132] != b"DICM"
    radiograph = read_radiograph(bare)
    assert radiograph.source_format == "DICOM"
    np.testing.assert_allclose(radiograph.pixels, min_max(stored), atol=1e-6)
    named_png = write_dx(private_dir / "no_extension", stored)
    assert read_radiograph(named_png).source_format == "DICOM"


def test_info_is_json_and_free_of_identifiers(private_dir):
    path = write_dx(
        private_dir / "i.dcm", knee_like(12), bits_stored=12, spacing_mm=(0.14, 0.14), image_laterality="L",
        transfer_syntax=RLELossless,
    )
    info = read_radiograph(path).info()
    assert set(info) == INFO_KEYS
    text = json.dumps(info)
    assert json.loads(text) == info
    ds = pydicom.dcmread(path)
    forbidden = [*FAKE_IDENTIFIERS.values(), ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID, "Testperson"]
    assert not [value for value in forbidden if value in text]
    assert info == {
        "format": "DICOM", "transfer_syntax": "RLE Lossless", "rows": H, "columns": W, "bits_stored": 12,
        "photometric": "MONOCHROME2", "intensity_mapping": "min-max", "spacing_mm": [0.14, 0.14],
        "spacing_source": "PixelSpacing", "side": "L", "side_source": "ImageLaterality",
    }


# --- pydicom's sample files ---------------------------------------------------------


MR_SMALL_VARIANTS = [
    "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
]


@pytest.mark.parametrize("name", MR_SMALL_VARIANTS)
def test_pydicom_samples_same_image_in_every_codec(name):
    reference = read_radiograph(get_testdata_file("MR_small.dcm"))
    radiograph = read_radiograph(get_testdata_file(name))
    np.testing.assert_array_equal(radiograph.pixels, reference.pixels)
    assert radiograph.intensity_mapping == "window"
    assert radiograph.spacing_source == "PixelSpacing"


def test_pydicom_cr_monochrome1_sample():
    path = get_testdata_file("6154")  # dicomdirtests/77654033/CR1
    ds = pydicom.dcmread(path)
    radiograph = read_radiograph(path)
    assert (radiograph.photometric, radiograph.spacing_source) == ("MONOCHROME1", "ImagerPixelSpacing")
    np.testing.assert_allclose(radiograph.spacing_mm, [float(v) for v in ds.ImagerPixelSpacing])
    # MONOCHROME1: the highest stored value is shown darkest.
    stored = ds.pixel_array
    assert np.corrcoef(stored.ravel(), radiograph.pixels.ravel())[0, 1] < -0.9


@pytest.mark.parametrize(
    ("name", "transfer_syntax", "spacing"),
    [
        ("JPGExtended.dcm", "JPEG Extended (Process 2 and 4)", (2.26, 2.26)),
        ("693_J2KI.dcm", "JPEG 2000 Image Compression", None),
        ("SC_rgb_jpeg_dcmtk.dcm", "JPEG Baseline (Process 1)", (1.0, 1.0)),
        ("SC_rgb_jpeg_gdcm.dcm", None, None),
        ("CT_small.dcm", "Explicit VR Little Endian", None),
    ],
)
def test_pydicom_samples_read_sensibly(name, transfer_syntax, spacing):
    path = get_testdata_file(name)
    ds = pydicom.dcmread(path)
    radiograph = read_radiograph(path)
    assert radiograph.shape == (ds.Rows, ds.Columns)
    assert radiograph.pixels.min() >= 0.0 and radiograph.pixels.max() <= 1.0
    assert radiograph.pixels.std() > 0.01  # an image, not a blank
    assert radiograph.transfer_syntax == (transfer_syntax or ds.file_meta.TransferSyntaxUID.name)
    if spacing is not None:
        assert radiograph.spacing_mm == spacing
    assert set(radiograph.info()) == INFO_KEYS


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("rtdose_rle.dcm", "15 frames"),
        ("SC_rgb_rle_2frame.dcm", "2 frames"),
        ("examples_ybr_color.dcm", "30 frames"),
        ("rtplan.dcm", "no pixel data"),
        ("ExplVR_LitEndNoMeta.dcm", "no pixel data"),
        ("examples_palette.dcm", "PALETTE COLOR"),
        ("MR_truncated.dcm", "cannot be decoded"),
        ("JPEG-lossy.dcm", "cannot be decoded"),
        ("rtplan.dump", "not a recognised image format"),
    ],
)
def test_pydicom_samples_with_documented_errors(name, problem):
    with pytest.raises(ImageReadError, match=problem):
        read_radiograph(get_testdata_file(name))


# --- PNG, JPEG, TIFF, NRRD, NIfTI ---------------------------------------------------


def test_png_8_and_16_bit_use_the_bit_depth(private_dir):
    for dtype, top in ((np.uint8, 255), (np.uint16, 65535)):
        stored = (knee_like(8).astype(np.float64) / 255 * top * 0.8).astype(dtype)  # does not reach top
        path = private_dir / f"k{top}.png"
        sitk.WriteImage(sitk.GetImageFromArray(stored), str(path))
        radiograph = read_radiograph(path)
        np.testing.assert_allclose(radiograph.pixels, stored / top, atol=1e-6)
        info = radiograph.info()
        assert (info["format"], info["bits_stored"], info["intensity_mapping"]) == ("PNG", stored.itemsize * 8, "bit depth")
        assert info["transfer_syntax"] is None
        # PNG pHYs (written by ITK) is a print hint, never trusted as anatomy spacing.
        assert (radiograph.spacing_mm, radiograph.spacing_source) == (None, "none")
        assert (radiograph.side, radiograph.side_source) == (None, "none")


def test_rgb_and_rgba_png_become_grey(private_dir):
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    expected = (rgb @ np.array([0.299, 0.587, 0.114])) / 255
    for mode, pixels in (("RGB", rgb), ("RGBA", np.dstack([rgb, np.full((H, W), 9, np.uint8)]))):
        path = private_dir / f"{mode}.png"
        Image.fromarray(pixels, mode=mode).save(path)
        radiograph = read_radiograph(path)
        np.testing.assert_allclose(radiograph.pixels, expected, atol=1e-6)
        assert radiograph.photometric == mode
    # SimpleITK has no grey + alpha pixel type: a documented refusal.
    grey_alpha = private_dir / "la.png"
    Image.fromarray(np.dstack([knee_like(8), np.zeros((H, W), np.uint8)]), mode="LA").save(grey_alpha)
    assert "unsupported pixel layout" in read_error(grey_alpha)


def test_jpeg_and_tiff(private_dir):
    stored = knee_like(8)
    jpeg = private_dir / "k.jpg"
    Image.fromarray(stored, mode="L").save(jpeg, quality=95)
    radiograph = read_radiograph(jpeg)
    assert radiograph.source_format == "JPEG"
    assert np.abs(radiograph.pixels - stored / 255).max() < 0.05
    tiff = private_dir / "k.tif"
    image = sitk.GetImageFromArray(stored)
    image.SetSpacing((0.3, 0.2))  # stored as a TIFF resolution: a print hint
    sitk.WriteImage(image, str(tiff))
    radiograph = read_radiograph(tiff)
    np.testing.assert_allclose(radiograph.pixels, stored / 255, atol=1e-6)
    assert (radiograph.source_format, radiograph.spacing_mm) == ("TIFF", None)
    float_tiff = private_dir / "f.tif"
    sitk.WriteImage(sitk.GetImageFromArray(stored.astype(np.float32) * 3.0 - 100.0), str(float_tiff))
    radiograph = read_radiograph(float_tiff)
    np.testing.assert_allclose(radiograph.pixels, min_max(stored), atol=1e-6)
    assert radiograph.intensity_mapping == "min-max"


def test_nrrd_spacing_is_row_then_column(private_dir):
    stored = knee_like(12).astype(np.int16)
    image = sitk.GetImageFromArray(stored)
    image.SetSpacing((0.3, 0.15))  # ITK order: (x = column, y = row)
    path = private_dir / "k.nrrd"
    sitk.WriteImage(image, str(path))
    radiograph = read_radiograph(path)
    assert radiograph.spacing_mm == pytest.approx((0.15, 0.3))
    assert radiograph.spacing_source == "NRRD header"
    np.testing.assert_allclose(radiograph.pixels, min_max(stored), atol=1e-6)
    # Content, not the extension, says NRRD.
    renamed = private_dir / "k.dat"
    path.rename(renamed)
    assert read_radiograph(renamed).source_format == "NRRD"


def test_nrrd_without_spacing_field_and_single_slice_volume(private_dir):
    stored = knee_like(8)
    bare = private_dir / "bare.nrrd"
    header = f"NRRD0004\ntype: uint8\ndimension: 2\nsizes: {W} {H}\nencoding: raw\n\n"
    bare.write_bytes(header.encode() + stored.tobytes())
    radiograph = read_radiograph(bare)
    np.testing.assert_allclose(radiograph.pixels, min_max(stored), atol=1e-6)
    assert (radiograph.spacing_mm, radiograph.spacing_source) == (None, "none")
    # Slicer saves a 2D radiograph as a 3D volume of one slice.
    one_slice = private_dir / "slice.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(stored[None]), str(one_slice))
    np.testing.assert_allclose(read_radiograph(one_slice).pixels, min_max(stored), atol=1e-6)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_spacing_needs_a_known_unit(private_dir, suffix):
    stored = knee_like(12).astype(np.uint16)
    image = sitk.GetImageFromArray(stored)
    image.SetSpacing((0.25, 0.5))
    path = private_dir / f"k{suffix}"
    sitk.WriteImage(image, str(path))
    radiograph = read_radiograph(path)
    assert radiograph.source_format == "NIfTI"
    assert radiograph.spacing_mm == pytest.approx((0.5, 0.25))
    assert radiograph.spacing_source == "NIfTI header"
    np.testing.assert_allclose(radiograph.pixels, min_max(stored), atol=1e-6)
    if suffix == ".nii":  # xyzt_units is byte 123 of the NIfTI-1 header; 0 = unknown
        data = bytearray(path.read_bytes())
        data[123] = 0
        path.write_bytes(bytes(data))
        assert read_radiograph(path).spacing_source == "none"


# --- bad input ----------------------------------------------------------------------


def test_missing_directory_empty_and_special_paths(private_dir):
    assert "does not exist" in read_error(private_dir / "absent.dcm")
    assert "directory" in read_error(private_dir)
    empty = private_dir / "empty.dcm"
    empty.write_bytes(b"")
    assert "empty" in read_error(empty)
    fifo = private_dir / "pipe.dcm"
    os.mkfifo(fifo)
    assert "not a regular file" in read_error(fifo)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(private_dir):
    path = write_dx(private_dir / "locked.dcm", knee_like())
    path.chmod(0)
    assert "cannot be opened" in read_error(path)


@pytest.mark.parametrize("name", ["noise.dcm", "noise.bin", "noise.png"])
def test_random_bytes(private_dir, name):
    path = private_dir / name
    path.write_bytes(np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert "not a recognised image format" in read_error(path)


def test_truncated_dicom(private_dir):
    path = write_dx(private_dir / "t.dcm", knee_like(12))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 500])  # inside the pixel data
    assert "cannot be decoded" in read_error(path)
    path.write_bytes(data[:200])  # inside the file meta
    message = read_error(path)
    assert "cannot be parsed" in message or "no pixel data" in message


@pytest.mark.parametrize("syntax", [JPEG2000Lossless, RLELossless], ids=lambda uid: UID(uid).name)
def test_truncated_codestream(private_dir, syntax):
    path = write_dx(private_dir / "t.dcm", knee_like(12), transfer_syntax=syntax)
    ds = pydicom.dcmread(path)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame[: len(frame) // 2]])  # valid DICOM, half a codestream
    ds.save_as(path)
    with pytest.raises(ImageReadError, match="cannot be decoded") as caught:
        read_radiograph(path)
    assert caught.value.__cause__ is not None  # the library error is chained
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])  # the encapsulation itself cut short
    with warnings.catch_warnings(record=True) as caught_warnings:  # pydicom drops the element, and its
        warnings.simplefilter("always")  # "End of file reached" warning stays off the user's terminal
        assert "no pixel data" in read_error(path)
    assert not caught_warnings


def test_dicom_without_pixel_data(private_dir):
    path = write_dx(private_dir / "np.dcm", knee_like())
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    assert "no pixel data" in read_error(path)


def test_multiframe_dicom(private_dir):
    frames = np.stack([knee_like(12)] * 2)
    path = write_frames(private_dir / "mf.dcm", frames, RLELossless)
    assert "2 frames" in read_error(path)


def test_truncated_png(private_dir):
    path = private_dir / "t.png"
    sitk.WriteImage(sitk.GetImageFromArray(knee_like(8)), str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert "PNG pixel data cannot be decoded" in read_error(path)
    path.write_bytes(data[:20])
    assert "PNG header cannot be read" in read_error(path)


def test_volume_is_refused(private_dir):
    path = private_dir / "vol.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, H, W), np.uint8)), str(path))
    assert "one 2D image is required" in read_error(path)


def test_non_finite_pixels(private_dir):
    values = knee_like(12).astype(np.float32)
    values[3, 4] = np.nan
    path = private_dir / "nan.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(values), str(path))
    assert "NaN or infinite" in read_error(path)
    values[3, 4] = np.inf
    with pytest.raises(ImageReadError, match="NaN or infinite"):
        radiograph_from_array(values)


def test_pixel_limit_is_checked_before_decoding(private_dir):
    dicom = write_dx(private_dir / "big.dcm", knee_like(12))
    assert read_radiograph(dicom, max_pixels=H * W).shape == (H, W)
    data = dicom.read_bytes()
    dicom.write_bytes(data[: len(data) - 500])  # undecodable pixels: the header alone must decide
    assert f"{H} x {W} = {H * W} pixels, above the limit of {H * W - 1}" in read_error(dicom, max_pixels=H * W - 1)
    png = private_dir / "big.png"
    sitk.WriteImage(sitk.GetImageFromArray(knee_like(8)), str(png))
    png.write_bytes(png.read_bytes()[:-40])
    assert "above the limit" in read_error(png, max_pixels=100)
    assert DEFAULT_MAX_PIXELS == 80_000_000
    with pytest.raises(ValueError):
        read_radiograph(png, max_pixels=0)


# --- radiograph_from_array and Radiograph ------------------------------------------


def test_radiograph_from_array_normalises():
    stored = knee_like(12)
    radiograph = radiograph_from_array(stored, (0.1, 0.2), "R")
    np.testing.assert_allclose(radiograph.pixels, min_max(stored), atol=1e-6)
    assert (radiograph.spacing_mm, radiograph.spacing_source) == ((0.1, 0.2), "given")
    assert (radiograph.side, radiograph.side_source) == ("R", "given")
    assert (radiograph.bits_stored, radiograph.photometric, radiograph.source_format) == (16, "MONOCHROME2", "array")
    clipped = radiograph_from_array(np.array([[0, 50], [100, 200]]), value_range=(50, 150), invert=True)
    np.testing.assert_allclose(clipped.pixels, [[1.0, 1.0], [0.5, 0.0]])
    constant = radiograph_from_array(np.full((4, 5), 7.0))
    assert constant.pixels.shape == (4, 5) and not constant.pixels.any()


def test_radiograph_is_frozen_and_read_only():
    radiograph = radiograph_from_array(knee_like())
    with pytest.raises(ValueError):
        radiograph.pixels[0, 0] = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        radiograph.side = "L"  # type: ignore[misc]
    own = np.zeros((3, 3), np.float32)
    direct = Radiograph(own)
    own[0, 0] = 1.0  # the radiograph keeps its own read-only copy
    assert direct.pixels[0, 0] == 0.0


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        (dict(pixels=np.zeros((2, 3, 5))), "shape"),
        (dict(pixels=np.zeros((0, 4))), "no pixels"),
        (dict(pixels=np.zeros((3, 3), bool)), "real numbers"),
        (dict(pixels=np.zeros((3, 3), complex)), "real numbers"),
        (dict(pixels=np.zeros((3, 3)), spacing_mm=(0.1, -0.1)), "spacing"),
        (dict(pixels=np.zeros((3, 3)), spacing_mm=(0.1, 0.1, 0.1)), "spacing"),
        (dict(pixels=np.zeros((3, 3)), spacing_mm=(0.1, float("nan"))), "spacing"),
        (dict(pixels=np.zeros((3, 3)), side="left"), "side"),
        (dict(pixels=np.zeros((3, 3)), value_range=(5, 5)), "range"),
    ],
)
def test_radiograph_from_array_rejects(kwargs, problem):
    with pytest.raises(ImageReadError, match=problem):
        radiograph_from_array(**kwargs)


def test_radiograph_checks_its_invariants():
    with pytest.raises(ImageReadError, match=r"\[0, 1\]"):
        Radiograph(np.full((3, 3), 2.0, np.float32))
    with pytest.raises(ImageReadError, match="float32"):
        Radiograph(np.zeros((3, 3)))
    with pytest.raises(ImageReadError, match="spacing_source"):
        Radiograph(np.zeros((3, 3), np.float32), spacing_mm=(1.0, 1.0))
    with pytest.raises(ImageReadError, match="side_source"):
        Radiograph(np.zeros((3, 3), np.float32), side="L")


# --- the pixel mapping runs once per distinct stored value (issue 15) -------------------------

@pytest.mark.parametrize("case", [
    dict(dtype=np.uint16, bits=12, window=(1800.0, 2500.0)),
    dict(dtype=np.uint16, bits=12, window=(1800.0, 2500.0), photometric="MONOCHROME1"),
    dict(dtype=np.uint16, bits=16, rescale=(0.5, -100.0)),
    dict(dtype=np.int16, bits=16, rescale=(2.0, 7.0), window=(0.0, 3000.0), voi_function="SIGMOID"),
    dict(dtype=np.uint8, bits=8),
    dict(dtype=np.uint16, bits=12, voi_lut=True),
], ids=["window", "monochrome1", "rescale-min-max", "signed-sigmoid", "8-bit", "voi-lut"])
def test_pixels_equal_the_mapping_of_every_pixel(private_dir, case):
    """Bit for bit what applying the modality LUT, VOI and scaling to each pixel gives."""
    from KneeAlignmentLib.imageio import _modality_and_voi

    rng = np.random.default_rng(7)
    info = np.iinfo(case["dtype"])
    top = min(info.max, 2 ** case["bits"] - 1)
    stored = rng.integers(max(info.min, -1500), top, size=(150, 130), endpoint=True).astype(case["dtype"])
    stored[:40] = stored[:40] // 7  # repeated values, gaps between them
    lut = (200, 10, np.arange(3000)[::-1] % 1024) if case.get("voi_lut") else None  # not monotonic
    path = write_dx(private_dir / "m.dcm", stored, bits_stored=case["bits"],
                    photometric=case.get("photometric", "MONOCHROME2"), rescale=case.get("rescale"),
                    window=case.get("window"), voi_function=case.get("voi_function", "LINEAR"), voi_lut=lut)
    ds = pydicom.dcmread(path)
    values, value_range, mapping = _modality_and_voi(ds.pixel_array, ds)
    expected = radiograph_from_array(values, value_range=value_range,
                                     invert=case.get("photometric") == "MONOCHROME1").pixels
    radiograph = read_radiograph(path)
    assert radiograph.pixels.dtype == np.float32 and not radiograph.pixels.flags.writeable
    assert np.array_equal(radiograph.pixels, expected)
    assert radiograph.intensity_mapping == mapping


@pytest.mark.parametrize("dtype, value_range, invert", [(np.uint8, (0, 255), False), (np.uint16, None, False),
                                                         (np.int16, (-700.0, 2500.0), True), (np.int8, None, True)])
def test_integer_arrays_map_as_their_float_values(dtype, value_range, invert):
    """Integer pixels are mapped once per distinct value: the same float32 pixels as float input gives."""
    info = np.iinfo(dtype)
    stored = np.random.default_rng(3).integers(info.min, info.max, size=(120, 90), endpoint=True).astype(dtype)
    stored[::3] = stored[::3] // 5
    fast = radiograph_from_array(stored, value_range=value_range, invert=invert)
    reference = radiograph_from_array(stored.astype(np.float64), value_range=value_range, invert=invert)
    assert np.array_equal(fast.pixels, reference.pixels)
    assert fast.info() | {"bits_stored": None} == reference.info() | {"bits_stored": None}
    assert fast.bits_stored == info.bits
