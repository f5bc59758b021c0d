"""Write real single-frame DICOM DX files for tests and synthetic data.

``write_dx`` builds a Digital X-Ray (For Presentation) dataset with pydicom around a
(H, W) array of stored values and writes it in the chosen transfer syntax:

* uncompressed: Explicit / Implicit VR Little Endian (pydicom);
* RLE Lossless and JPEG 2000 (lossless or lossy): ``Dataset.compress`` (pydicom's own
  RLE encoder, pylibjpeg-openjpeg for JPEG 2000);
* JPEG Baseline 8-bit: Pillow's libjpeg encoder, then encapsulated with pydicom;
* JPEG Lossless SV1: GDCM's encoder through SimpleITK, then re-encapsulated with pydicom.

pydicom 3 has no JPEG encoders, hence the two outside encoders.

Every file carries made-up patient identifiers (``FAKE_IDENTIFIERS``) so tests can check
that nothing downstream echoes them.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import (
    UID,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    RLELossless,
    generate_uid,
)

#: Identifiers written into every file; no reader output may contain any of them.
FAKE_IDENTIFIERS = {
    "PatientName": "Testperson^Erika^Q",
    "PatientID": "PID-31415926",
    "PatientBirthDate": "19450321",
    "AccessionNumber": "ACC-27182818",
    "StudyDate": "20240229",
    "InstitutionName": "Saint Nowhere Hospital",
    "ReferringPhysicianName": "Doctor^Who",
}

#: Transfer syntaxes ``write_dx`` can produce.
SUPPORTED_SYNTAXES = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    JPEG2000Lossless,
    JPEG2000,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
)


def write_dx(
    path: str | Path,
    stored: np.ndarray,
    *,
    transfer_syntax: str = ExplicitVRLittleEndian,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    pixel_spacing: Sequence[float] | None = None,
    imager_pixel_spacing: Sequence[float] | None = None,
    magnification: float | None = None,
    image_laterality: str | None = None,
    laterality: str | None = None,
    rescale: tuple[float, float] | None = None,
    window: tuple[float, float] | None = None,
    voi_function: str | None = None,
    number_of_frames: int | None = None,
    preamble: bool = True,
) -> Path:
    """Write ``stored`` as a DX DICOM file and return its path.

    Args:
        path: output file.
        stored: stored pixel values, (H, W) or, for multi-frame, (F, H, W); dtype uint8,
            uint16 or int16 (int16 sets Pixel Representation 1).
        transfer_syntax: one of ``SUPPORTED_SYNTAXES``.
        photometric: ``MONOCHROME1`` or ``MONOCHROME2``.
        bits_stored: Bits Stored; defaults to the dtype's bit count.
        pixel_spacing, imager_pixel_spacing: (row_mm, col_mm) for (0028,0030) and
            (0018,1164).
        magnification: Estimated Radiographic Magnification Factor (0018,1114).
        image_laterality, laterality: (0020,0062) and (0020,0060).
        rescale: (slope, intercept) for (0028,1053) and (0028,1052).
        window: (center, width) for (0028,1050) and (0028,1051).
        voi_function: VOI LUT Function (0028,1056), e.g. ``LINEAR_EXACT``.
        number_of_frames: writes (0028,0008) when given (requires ``stored`` (F, H, W)).
        preamble: ``False`` writes a bare dataset (no preamble, 'DICM' or file meta),
            as some old archives do.
    """
    stored = np.ascontiguousarray(stored)
    if stored.dtype not in (np.uint8, np.uint16, np.int16):
        raise ValueError(f"stored dtype must be uint8, uint16 or int16, got {stored.dtype}")
    transfer_syntax = UID(transfer_syntax)
    if transfer_syntax not in SUPPORTED_SYNTAXES:
        raise ValueError(f"unsupported transfer syntax {transfer_syntax.name}")
    if (number_of_frames is None) != (stored.ndim == 2):
        raise ValueError("pass number_of_frames exactly when stored is (F, H, W)")

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "DX"
    ds.BodyPartExamined = "KNEE"
    ds.ViewPosition = "AP"
    for keyword, value in FAKE_IDENTIFIERS.items():
        setattr(ds, keyword, value)

    bits_allocated = stored.dtype.itemsize * 8
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = stored.shape[-2:]
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored if bits_stored is not None else bits_allocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if stored.dtype == np.int16 else 0
    ds.PresentationLUTShape = "INVERSE" if photometric == "MONOCHROME1" else "IDENTITY"
    if number_of_frames is not None:
        ds.NumberOfFrames = number_of_frames

    if pixel_spacing is not None:
        ds.PixelSpacing = [float(v) for v in pixel_spacing]
    if imager_pixel_spacing is not None:
        ds.ImagerPixelSpacing = [float(v) for v in imager_pixel_spacing]
    if magnification is not None:
        ds.EstimatedRadiographicMagnificationFactor = float(magnification)
    if image_laterality is not None:
        ds.ImageLaterality = image_laterality
    if laterality is not None:
        ds.Laterality = laterality
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = (float(v) for v in rescale)
        ds.RescaleType = "US"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = (float(v) for v in window)
    if voi_function is not None:
        ds.VOILUTFunction = voi_function

    ds.PixelData = stored.tobytes()
    _encode(ds, stored, transfer_syntax)
    path = Path(path)
    if preamble:
        ds.save_as(path, enforce_file_format=True)
        return path
    if transfer_syntax != ExplicitVRLittleEndian:
        raise ValueError("a file without preamble is written as Explicit VR Little Endian")
    del ds.file_meta
    ds.save_as(path, implicit_vr=False, little_endian=True)
    return path


def _encode(ds: Dataset, stored: np.ndarray, transfer_syntax: UID) -> None:
    """Replace ``ds.PixelData`` by its encoding in ``transfer_syntax``."""
    if not transfer_syntax.is_compressed:
        ds.file_meta.TransferSyntaxUID = transfer_syntax
        return
    if transfer_syntax in (RLELossless, JPEG2000Lossless, JPEG2000):
        ratio = {"j2k_cr": [10]} if transfer_syntax == JPEG2000 else {}
        ds.compress(transfer_syntax, stored, generate_instance_uid=False, **ratio)
        return
    frames = stored.reshape(-1, *stored.shape[-2:])
    if transfer_syntax == JPEGBaseline8Bit:
        encoded = [_jpeg_baseline(frame) for frame in frames]
    else:
        encoded = [_jpeg_lossless(frame) for frame in frames]
    ds.PixelData = encapsulate(encoded)
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    if transfer_syntax == JPEGBaseline8Bit:
        ds.LossyImageCompression = "01"


def _jpeg_baseline(frame: np.ndarray) -> bytes:
    """Encode an (H, W) uint8 frame as a greyscale JPEG baseline codestream."""
    from PIL import Image  # Pillow, installed with matplotlib

    if frame.dtype != np.uint8:
        raise ValueError("JPEG baseline needs 8-bit stored values")
    buffer = io.BytesIO()
    Image.fromarray(frame, mode="L").save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _jpeg_lossless(frame: np.ndarray) -> bytes:
    """Encode an (H, W) frame as a JPEG Lossless SV1 codestream using GDCM."""
    import SimpleITK as sitk

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "frame.dcm"
        writer = sitk.ImageFileWriter()
        writer.SetImageIO("GDCMImageIO")
        writer.SetFileName(str(out))
        writer.UseCompressionOn()
        writer.SetCompressor("JPEG")  # GDCM's "JPEG" is lossless process 14, SV1
        writer.Execute(sitk.GetImageFromArray(frame))
        gdcm_ds = pydicom.dcmread(out)
    if gdcm_ds.file_meta.TransferSyntaxUID != JPEGLosslessSV1:
        raise RuntimeError("GDCM did not produce JPEG Lossless SV1")
    return next(generate_frames(gdcm_ds.PixelData, number_of_frames=1))
