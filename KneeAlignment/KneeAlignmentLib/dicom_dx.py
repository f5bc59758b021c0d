"""Building and writing DICOM DX images with pydicom: the one home of DX writing.

``dx_dataset`` builds a Digital X-Ray Image, For Presentation (SOP Class
1.2.840.10008.5.1.4.1.1.1.1), single frame, with the Type 1 and Type 2 attributes of the
modules its IOD requires (PS3.3 A.26): Patient, General Study, General Series, DX Series,
General Equipment, General Acquisition, General Image, Image Pixel, DX Anatomy Imaged,
DX Image, DX Detector, VOI LUT (required For Presentation), Acquisition Context, SOP
Common, plus the optional DX Positioning and X-Ray Acquisition Dose attributes the
caller knows. The Frame of Reference module is User-optional for DX and left out: a
projection radiograph has no patient-based coordinate system to refer to.
``write_dx`` writes it; the phantom's files and the test suite's DICOM inputs both come
from here.

Optional arguments left at None leave their attributes out. A DX that passes a validator
has unsigned pixels, ``imager_spacing_mm``, ``image_laterality``, ``rescale`` (1, 0) and
a ``window`` or ``voi_lut``, as the phantom writes it; files without them, with signed
pixels or another rescale, are what readers meet in real archives (other modalities,
older exports), and the tests write them to test reading them.

Transfer syntaxes (``TRANSFER_SYNTAXES``): Explicit and Implicit VR Little Endian; RLE
Lossless and JPEG 2000 (lossless, or lossy at 10:1) with pydicom's own encoders
(pylibjpeg-openjpeg for JPEG 2000); JPEG Baseline 8-bit with Pillow's libjpeg; JPEG
Lossless SV1 with GDCM through SimpleITK, its codestream re-encapsulated by pydicom.
pydicom 3 has no JPEG encoders, hence the two outside ones.

UIDs are derived deterministically from ``uid_entropy`` (pydicom's ``generate_uid`` with
entropy sources), so the same synthetic case always gets the same UIDs. Files are
written atomically: to a temporary file in the target folder, then renamed.

Everything written here is synthetic: callers pass made-up identifiers only.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    JPEG2000,
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    RLELossless,
    generate_uid,
)

from . import __version__
from .atomicio import atomic_output

__all__ = [
    "DX_FOR_PRESENTATION",
    "TRANSFER_SYNTAXES",
    "dx_dataset",
    "full_range_window",
    "save_dataset",
    "write_dx",
]

#: SOP Class UID of Digital X-Ray Image Storage - For Presentation.
DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"

#: Transfer syntaxes ``dx_dataset`` can encode the pixels in.
TRANSFER_SYNTAXES = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    JPEG2000Lossless,
    JPEG2000,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
)
# Lossy syntaxes: Lossy Image Compression "01" and its method (PS3.3 C.7.6.1.1.5).
_LOSSY_METHODS = {JPEGBaseline8Bit: "ISO_10918_1", JPEG2000: "ISO_15444_1"}
_J2K_RATIO = 10

_PHOTOMETRICS = ("MONOCHROME1", "MONOCHROME2")
_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.int16))
_IMAGE_LATERALITIES = ("R", "L", "U", "B")
_MANUFACTURER = "KneeAlignment"
_MODEL = "KneeAlignment phantom (synthetic radiographs)"


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _ds(value: float) -> str:
    """A Decimal String of at most 16 characters that reads back as ``value`` (to 10 digits)."""
    for digits in range(10, 4, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    raise ValueError(f"{value!r} cannot be written as a DICOM decimal string")


def _pair(value, name: str) -> tuple[float, float]:
    try:
        pair = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        pair = ()
    if len(pair) != 2 or not all(np.isfinite(v) and v > 0 for v in pair):
        raise ValueError(f"{name} must be two positive numbers (row_mm, col_mm), got {value!r}")
    return pair  # type: ignore[return-value]


def full_range_window(bits_stored: int) -> tuple[float, float]:
    """(centre, width) of the VOI window over the whole stored range: stored values map linearly onto the display."""
    return float(1 << (int(bits_stored) - 1)), float(1 << int(bits_stored))


def dx_dataset(
    pixels: np.ndarray,
    *,
    uid_entropy: Sequence[object],
    patient_id: str,
    patient_name: str = "",
    transfer_syntax: str = ExplicitVRLittleEndian,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    imager_spacing_mm: Sequence[float] | None = None,
    spacing_mm: Sequence[float] | None = None,
    magnification: float | None = None,
    image_laterality: str | None = None,
    laterality: str | None = None,
    rescale: tuple[float, float] | None = None,
    window: tuple[float, float] | None = None,
    voi_function: str = "LINEAR",
    voi_lut: tuple[int, int, np.ndarray] | None = None,
    burned_in_annotation: bool = False,
    study_date: str = "",
    study_time: str = "",
    accession_number: str = "",
    study_id: str = "",
    series_number: int = 1,
    instance_number: int = 1,
    kvp: float | None = None,
    source_to_detector_mm: float | None = None,
    source_to_patient_mm: float | None = None,
    description: str = "KNEE AP",
    derivation: str = "",
) -> Dataset:
    """One single-frame DX For Presentation image as a pydicom Dataset (with its file meta).

    Args:
        pixels: (H, W) stored values, exactly as they go into Pixel Data: uint16 or uint8
            (Bits Allocated 16 or 8), or int16 (Pixel Representation 1, signed); for
            MONOCHROME1 (low values shown white) the caller has already inverted them.
        uid_entropy: values that identify the image (e.g. seed, case index, kind); the
            study, series and instance UIDs are derived from them.
        patient_id, patient_name: synthetic identifiers (never real ones).
        transfer_syntax: one of ``TRANSFER_SYNTAXES``; JPEG Baseline needs uint8 pixels.
        photometric: 'MONOCHROME1' or 'MONOCHROME2'.
        bits_stored: 6 to the bits of ``pixels``' dtype (the default); every value must fit.
        imager_spacing_mm: (row_mm, col_mm) detector pitch (ImagerPixelSpacing).
        spacing_mm: (row_mm, col_mm) spacing calibrated to the patient's plane
            (PixelSpacing, calibration type GEOMETRY).
        magnification: EstimatedRadiographicMagnificationFactor, >= 1.
        image_laterality: 'R', 'L', 'U' (unpaired) or 'B' (both) (ImageLaterality).
        laterality: 'R' or 'L', the series' Laterality.
        rescale: (slope, intercept) of the modality LUT; DX allows only (1, 0).
        window: (centre, width) of the VOI window, width >= 1 (see ``full_range_window``).
        voi_function: VOI LUT Function of the window: LINEAR, LINEAR_EXACT or SIGMOID.
        voi_lut: (first stored value mapped, output bits 10 to 16, table (N,) of values
            that fit them): a VOI LUT Sequence item, applied in preference to the window.
        burned_in_annotation: whether text is burned into the pixels.
        kvp, source_to_detector_mm, source_to_patient_mm: acquisition, if known.
        description: Study and series description.
        derivation: DerivationDescription (how the pixels were made), if any.

    Raises:
        ValueError: pixels not a 2D array of a supported dtype or not fitting
            ``bits_stored``, or an invalid transfer syntax, spacing, laterality,
            photometric interpretation, rescale, window or VOI LUT.
    """
    pixels = np.asarray(pixels)
    if pixels.dtype not in _DTYPES or pixels.ndim != 2 or 0 in pixels.shape:
        raise ValueError(f"pixels must be a non-empty 2D uint16, uint8 or int16 array, got {pixels.dtype} "
                         f"{pixels.shape}")
    allocated = pixels.dtype.itemsize * 8
    signed = pixels.dtype.kind == "i"
    bits_stored = allocated if bits_stored is None else bits_stored
    if not isinstance(bits_stored, (int, np.integer)) or not 6 <= bits_stored <= allocated:
        raise ValueError(f"bits_stored must be 6 to {allocated} for {pixels.dtype} pixels, got {bits_stored!r}")
    bits_stored = int(bits_stored)
    low, high = (-(1 << (bits_stored - 1)), (1 << (bits_stored - 1)) - 1) if signed else (0, (1 << bits_stored) - 1)
    if int(pixels.min()) < low or int(pixels.max()) > high:
        raise ValueError(f"pixel values {int(pixels.min())} to {int(pixels.max())} do not fit in {bits_stored} bits")
    transfer_syntax = UID(transfer_syntax)
    if transfer_syntax not in TRANSFER_SYNTAXES:
        raise ValueError(f"transfer_syntax must be one of {[uid.name for uid in TRANSFER_SYNTAXES]}, "
                         f"got {transfer_syntax!r}")
    if transfer_syntax == JPEGBaseline8Bit and pixels.dtype != np.uint8:
        raise ValueError(f"JPEG Baseline needs uint8 pixels, got {pixels.dtype}")
    if photometric not in _PHOTOMETRICS:
        raise ValueError(f"photometric must be one of {_PHOTOMETRICS}, got {photometric!r}")
    if image_laterality not in (None, *_IMAGE_LATERALITIES):
        raise ValueError(f"image_laterality must be one of {_IMAGE_LATERALITIES}, got {image_laterality!r}")
    if laterality not in (None, "R", "L"):
        raise ValueError(f"laterality must be 'R' or 'L', got {laterality!r}")
    if window is not None and not (np.isfinite(window[0]) and np.isfinite(window[1]) and window[1] >= 1):
        raise ValueError(f"window must be (centre, width) with width >= 1, got {window!r}")
    if rescale is not None and not (np.all(np.isfinite(rescale)) and len(rescale) == 2 and rescale[0] != 0):
        raise ValueError(f"rescale must be (slope, intercept) with a finite, non-zero slope, got {rescale!r}")
    if magnification is not None and not (np.isfinite(magnification) and magnification >= 1.0):
        raise ValueError(f"magnification must be a finite number >= 1, got {magnification!r}")
    entropy = [str(v) for v in uid_entropy]
    if not entropy:
        raise ValueError("uid_entropy must not be empty: UIDs are derived from it")

    def uid(role: str) -> str:
        return generate_uid(entropy_srcs=[*entropy, role])

    sop_uid = uid("instance")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_FOR_PRESENTATION
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"KNEEALIGN_{__version__}"[:16]

    ds = Dataset()
    ds.file_meta = meta
    # SOP Common
    ds.SOPClassUID = DX_FOR_PRESENTATION
    ds.SOPInstanceUID = sop_uid
    ds.SpecificCharacterSet = "ISO_IR 100"
    # Patient (synthetic: the identity is not a person's)
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "Synthetic image: no patient data"
    # General Study
    ds.StudyInstanceUID = uid("study")
    ds.StudyDate = study_date
    ds.StudyTime = study_time
    ds.ReferringPhysicianName = ""
    ds.StudyID = study_id
    ds.AccessionNumber = accession_number
    ds.StudyDescription = description
    # General Series + DX Series
    ds.Modality = "DX"
    ds.SeriesInstanceUID = uid("series")
    ds.SeriesNumber = int(series_number)
    ds.SeriesDescription = description
    if laterality is not None:
        ds.Laterality = laterality
    ds.BodyPartExamined = "KNEE"
    ds.PresentationIntentType = "FOR PRESENTATION"
    # General Equipment
    ds.Manufacturer = _MANUFACTURER
    ds.ManufacturerModelName = _MODEL
    ds.SoftwareVersions = __version__
    # General Image + DX Image
    ds.InstanceNumber = int(instance_number)
    ds.PatientOrientation = ["L", "F"]  # AP view, radiological display: rows to patient's left, columns to feet
    ds.ContentDate = study_date
    ds.ContentTime = study_time
    ds.ImageType = ["DERIVED", "PRIMARY", ""]
    if derivation:
        ds.DerivationDescription = derivation
    ds.BurnedInAnnotation = "YES" if burned_in_annotation else "NO"
    ds.LossyImageCompression = "00"
    ds.PixelIntensityRelationship = "LOG"
    # +1: lower values = less beam intensity (MONOCHROME1 as stored); -1: higher values = less
    ds.PixelIntensityRelationshipSign = 1 if photometric == "MONOCHROME1" else -1
    if rescale is not None:
        ds.RescaleIntercept = _ds(rescale[1])
        ds.RescaleSlope = _ds(rescale[0])
        ds.RescaleType = "US"
    ds.PresentationLUTShape = "INVERSE" if photometric == "MONOCHROME1" else "IDENTITY"
    # Image Pixel
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = (int(n) for n in pixels.shape)
    ds.BitsAllocated = allocated
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = int(signed)
    ds.PixelData = np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder("<")).tobytes()
    # DX Anatomy Imaged
    if image_laterality is not None:
        ds.ImageLaterality = image_laterality
    ds.AnatomicRegionSequence = DicomSequence([_code("72696002", "SCT", "Knee")])
    # DX Detector
    ds.DetectorType = "SCINTILLATOR"
    ds.DetectorConfiguration = "AREA"
    if imager_spacing_mm is not None:
        ds.ImagerPixelSpacing = [_ds(v) for v in _pair(imager_spacing_mm, "imager_spacing_mm")]
    if spacing_mm is not None:
        ds.PixelSpacing = [_ds(v) for v in _pair(spacing_mm, "spacing_mm")]
        ds.PixelSpacingCalibrationType = "GEOMETRY"
        ds.PixelSpacingCalibrationDescription = "Spacing at the knee's plane: detector pitch / magnification"
    # DX Positioning
    ds.PositionerType = "COLUMN"  # tube on a column or ceiling stand, detector in a bucky
    ds.ViewPosition = "AP"
    ds.ViewCodeSequence = DicomSequence([_code("399348003", "SCT", "antero-posterior")])
    if magnification is not None:
        ds.EstimatedRadiographicMagnificationFactor = _ds(magnification)
    if source_to_detector_mm is not None:
        ds.DistanceSourceToDetector = _ds(source_to_detector_mm)
    if source_to_patient_mm is not None:
        ds.DistanceSourceToPatient = _ds(source_to_patient_mm)
    if kvp is not None:
        ds.KVP = _ds(kvp)
    # VOI LUT
    if window is not None:
        ds.WindowCenter = _ds(window[0])
        ds.WindowWidth = _ds(window[1])
        ds.WindowCenterWidthExplanation = "FULL RANGE" if window == full_range_window(bits_stored) else "USER"
        ds.VOILUTFunction = voi_function
    if voi_lut is not None:
        ds.VOILUTSequence = DicomSequence([_voi_lut_item(*voi_lut, signed=signed)])
    # Acquisition Context (Type 2 sequence, empty)
    ds.AcquisitionContextSequence = DicomSequence([])

    _encode(ds, pixels, transfer_syntax)
    return ds


def _voi_lut_item(first: int, bits: int, table: np.ndarray, *, signed: bool) -> Dataset:
    table = np.asarray(table)
    if table.ndim != 1 or not 1 <= table.size <= 65536 or not 10 <= bits <= 16:  # DX: 10 to 16 bits (C.8.11.3.1.5)
        raise ValueError(f"voi_lut must be (first, bits 10..16, table of 1 to 65536 entries), got bits {bits!r}, "
                         f"table {table.shape}")
    if int(table.min()) < 0 or int(table.max()) >= 1 << bits:
        raise ValueError(f"voi_lut table values must fit in {bits} bits")
    item = Dataset()
    # 0 entries means 65536 (PS3.3 C.11.2.1.1); the first mapped value is signed for signed pixels
    item.add_new("LUTDescriptor", "SS" if signed else "US", [table.size % 65536, int(first), int(bits)])
    item.add_new("LUTData", "OW", table.astype("<u2").tobytes())
    item.LUTExplanation = "USER"
    return item


def _encode(ds: Dataset, pixels: np.ndarray, transfer_syntax: UID) -> None:
    """Replace ``ds.PixelData`` by its encoding in ``transfer_syntax``."""
    if not transfer_syntax.is_compressed:
        ds.file_meta.TransferSyntaxUID = transfer_syntax
        return
    if transfer_syntax in (RLELossless, JPEG2000Lossless, JPEG2000):
        ratio = {"j2k_cr": [_J2K_RATIO]} if transfer_syntax == JPEG2000 else {}
        ds.compress(transfer_syntax, pixels, generate_instance_uid=False, **ratio)
    else:
        frame = _jpeg_baseline(pixels) if transfer_syntax == JPEGBaseline8Bit else _jpeg_lossless(pixels)
        ds.PixelData = encapsulate([frame])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = transfer_syntax
    if transfer_syntax in _LOSSY_METHODS:
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = _LOSSY_METHODS[transfer_syntax]


def _jpeg_baseline(frame: np.ndarray) -> bytes:
    """Encode an (H, W) uint8 frame as a greyscale JPEG baseline codestream (Pillow)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame, mode="L").save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _jpeg_lossless(frame: np.ndarray) -> bytes:
    """Encode an (H, W) frame as a JPEG Lossless SV1 codestream using GDCM (SimpleITK)."""
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


def save_dataset(ds: Dataset, path: str | os.PathLike[str]) -> Path:
    """Write ``ds`` as a DICOM file (preamble, file meta) atomically; return the path.

    Raises:
        OSError: the file cannot be written.
    """
    path = Path(path)
    with atomic_output(path) as temporary:
        ds.save_as(temporary, enforce_file_format=True)
    return path


def write_dx(path: str | os.PathLike[str], pixels: np.ndarray, **options) -> Path:
    """Write ``dx_dataset(pixels, **options)`` to ``path`` atomically; return the path.

    Raises:
        ValueError: as :func:`dx_dataset`. OSError: the file cannot be written.
    """
    return save_dataset(dx_dataset(pixels, **options), path)
