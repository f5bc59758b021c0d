"""Image input: one radiograph file (or array) in, one :class:`Radiograph` out.

Formats, recognised by content first (the extension is only used for NIfTI, whose
reader needs it):

* DICOM (preamble + ``DICM``, or a bare dataset that pydicom parses with ``force``):
  pydicom ``dcmread`` + ``pixel_array`` (uncompressed, RLE, JPEG baseline / extended /
  lossless, JPEG-LS, JPEG 2000 through the pylibjpeg plugins), then the modality LUT
  (Rescale Slope/Intercept or Modality LUT Sequence) and the VOI LUT Sequence or the
  first VOI window, all with ``pydicom.pixels``. MONOCHROME1 is inverted so that dense
  tissue is bright. Colour (RGB / YBR) secondary captures become grey.
* PNG, JPEG, TIFF, NRRD, NIfTI through SimpleITK. RGB(A) becomes grey (alpha dropped).

Intensities map to float32 in [0, 1], bright = dense:

* DICOM with a VOI LUT or window: the VOI output range maps to [0, 1] (``"VOI LUT"``,
  ``"window"``);
* unsigned-integer PNG / JPEG / TIFF (and DICOM colour): 0 .. 2**bits - 1 maps to
  [0, 1], since these are images for display (``"bit depth"``);
* everything else (DICOM without VOI, NRRD, NIfTI, float or signed data): the image's
  own minimum and maximum map to 0 and 1 (``"min-max"``), as viewers do by default.

A constant image is readable (all pixels 0.0 under min-max); flagging it is left to
quality control downstream.

Pixel spacing (row_mm, col_mm) is reported only where the file really stores it:
DICOM PixelSpacing, else ImagerPixelSpacing divided by
EstimatedRadiographicMagnificationFactor when present (else uncorrected, i.e. at the
detector plane); the NRRD header (``space directions`` or ``spacings``); the NIfTI
header (pixdim with a known spatial unit). PNG, JPEG and TIFF resolutions are print
hints (often a software default of 72 or 96 dpi), so they give ``None``.

Pixel order is the stored order (row 0 first); NRRD/NIfTI direction cosines and the
DICOM Presentation LUT Shape are not applied (MONOCHROME1 alone decides inversion).

Every failure raises :class:`~KneeAlignmentLib.errors.ImageReadError`. Messages name
the problem but neither the path (file names often carry patient names) nor any
identifier from the file; callers that want the path add it themselves.
"""

from __future__ import annotations

import dataclasses
import math
import os
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from .errors import ImageReadError

if TYPE_CHECKING:  # SimpleITK is imported where a non-DICOM file is read: DICOM reading does not need it
    import SimpleITK as sitk

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_SUFFIXES",
    "Radiograph",
    "radiograph_from_array",
    "read_radiograph",
    "with_given_spacing",
]

#: Largest image accepted by default, in pixels (rows x columns). 80 MP is ~3x a
#: stitched full-leg radiograph (43 x 129 cm at 0.15 mm) and 320 MB as float32;
#: larger headers are refused before any pixel is decoded.
DEFAULT_MAX_PIXELS = 80_000_000

# ITU-R BT.601 luma weights (the Y of DICOM YBR_FULL), for RGB -> grey.
_LUMA = np.array([0.299, 0.587, 0.114])

# Pixel Data larger than this stays on disk until the header has been checked.
_DEFER_BYTES = 64 * 1024

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_DICOM_PHOTOMETRICS_GREY = ("MONOCHROME1", "MONOCHROME2")
_DICOM_PHOTOMETRICS_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")

# What pydicom raises on a damaged file or pixel data it cannot decode.
_DICOM_ERRORS = (
    InvalidDicomError,
    BytesLengthException,
    OSError,
    EOFError,
    struct.error,
    ValueError,
    NotImplementedError,
    RuntimeError,
)

# Leading bytes -> (format, SimpleITK ImageIO).
FORMAT_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG", "PNGImageIO"),
    (b"\xff\xd8\xff", "JPEG", "JPEGImageIO"),
    (b"II*\x00", "TIFF", "TIFFImageIO"),
    (b"MM\x00*", "TIFF", "TIFFImageIO"),
    (b"II+\x00", "TIFF", "TIFFImageIO"),
    (b"MM\x00+", "TIFF", "TIFFImageIO"),
    (b"NRRD000", "NRRD", "NrrdImageIO"),
)
# File names ending so are images this module reads (a DICOM file may also have no suffix).
IMAGE_SUFFIXES = (".dcm", ".dicom", ".dic", ".ima", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".nrrd", ".nhdr",
                  ".nii", ".nii.gz")
_DISPLAY_FORMATS = ("PNG", "JPEG", "TIFF")
_NIFTI_SUFFIXES = (".nii", ".nii.gz", ".nia", ".hdr", ".img", ".img.gz")  # what ITK's NiftiImageIO reads
_SUPPORTED = "DICOM, PNG, JPEG, TIFF, NRRD, NIfTI"


@dataclass(frozen=True, eq=False)
class Radiograph:
    """A single-frame 2D radiograph ready for measurement.

    Attributes:
        pixels: (H, W) float32 in [0, 1], bright = dense, read-only; row 0 is the
            first stored row, pixel (x = column, y = row).
        spacing_mm: (row_mm, col_mm), the distance between adjacent rows and between
            adjacent columns, or ``None`` when the file does not say.
        spacing_source: where ``spacing_mm`` came from ("PixelSpacing",
            "ImagerPixelSpacing", "ImagerPixelSpacing /
            EstimatedRadiographicMagnificationFactor", "NRRD header", "NIfTI header",
            "given" for arrays), or "none" exactly when ``spacing_mm`` is ``None``.
        side: "L", "R" or ``None`` (unknown).
        side_source: "ImageLaterality", "Laterality", "given", or "none" exactly when
            ``side`` is ``None``.
        source_format: "DICOM", "PNG", "JPEG", "TIFF", "NRRD", "NIfTI" or "array".
        photometric: the stored photometric interpretation (DICOM term, or
            "MONOCHROME2" / "RGB" / "RGBA" for other formats).
        bits_stored: bits per stored sample (DICOM Bits Stored; else the sample size).
        transfer_syntax: DICOM transfer syntax name; ``None`` for other formats.
        intensity_mapping: how stored values became [0, 1]: "VOI LUT", "window",
            "bit depth", "min-max", "min-max (invalid window ignored)" or, for
            arrays with a ``value_range``, "given range".
    """

    pixels: np.ndarray
    spacing_mm: tuple[float, float] | None = None
    spacing_source: str = "none"
    side: str | None = None
    side_source: str = "none"
    source_format: str = "array"
    photometric: str | None = None
    bits_stored: int | None = None
    transfer_syntax: str | None = None
    intensity_mapping: str = "min-max"

    def __post_init__(self) -> None:
        pixels = self.pixels
        if not isinstance(pixels, np.ndarray) or pixels.dtype != np.float32 or pixels.ndim != 2:
            raise ImageReadError("Radiograph.pixels must be a 2D float32 array; use radiograph_from_array")
        if pixels.size == 0:
            raise ImageReadError("image has no pixels")
        if not np.isfinite(pixels).all() or pixels.min() < 0.0 or pixels.max() > 1.0:
            raise ImageReadError("Radiograph.pixels must be finite and in [0, 1]; use radiograph_from_array")
        if pixels.flags.writeable or not pixels.flags.owndata:  # nobody else may change it
            pixels = pixels.copy()
            pixels.flags.writeable = False
            object.__setattr__(self, "pixels", pixels)

        if self.spacing_mm is not None:
            spacing = _positive_pair(self.spacing_mm)
            if spacing is None:
                raise ImageReadError(
                    f"pixel spacing must be two positive finite numbers (row_mm, col_mm), got {self.spacing_mm!r}"
                )
            object.__setattr__(self, "spacing_mm", spacing)
        if (self.spacing_mm is None) != (self.spacing_source == "none"):
            raise ImageReadError("spacing_source must be 'none' exactly when spacing_mm is None")
        if self.side not in ("L", "R", None):
            raise ImageReadError(f"side must be 'L', 'R' or None, got {self.side!r}")
        if (self.side is None) != (self.side_source == "none"):
            raise ImageReadError("side_source must be 'none' exactly when side is None")

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) in pixels."""
        return self.pixels.shape

    def info(self) -> dict[str, Any]:
        """What ``kneealign info`` prints: JSON-serialisable, free of patient identifiers.

        Keys: format, transfer_syntax, rows, columns, bits_stored, photometric,
        intensity_mapping, spacing_mm ([row_mm, col_mm] or None), spacing_source, side,
        side_source. Deliberately no path, names, IDs, dates or UIDs.
        """
        rows, columns = self.shape
        return {
            "format": self.source_format,
            "transfer_syntax": self.transfer_syntax,
            "rows": int(rows),
            "columns": int(columns),
            "bits_stored": None if self.bits_stored is None else int(self.bits_stored),
            "photometric": self.photometric,
            "intensity_mapping": self.intensity_mapping,
            "spacing_mm": None if self.spacing_mm is None else [float(v) for v in self.spacing_mm],
            "spacing_source": self.spacing_source,
            "side": self.side,
            "side_source": self.side_source,
        }


def with_given_spacing(radiograph: Radiograph, spacing_mm: tuple[float, float] | None,
                       rel_tol: float = 1e-3) -> Radiograph:
    """The radiograph with a pixel spacing given by the user (``kneealign measure --spacing``).

    For files that carry no spacing (PNG/JPEG exports): the result has ``spacing_mm`` and
    ``spacing_source`` "given". A file whose own spacing agrees (within ``rel_tol``) keeps
    its own and its source; ``None`` changes nothing.

    Raises:
        ImageReadError: a spacing that is not two positive finite numbers, or one that
            contradicts the file's own spacing (which is never silently overridden).
    """
    if spacing_mm is None:
        return radiograph
    spacing = _positive_pair(spacing_mm)
    if spacing is None:
        raise ImageReadError(f"the given pixel spacing must be two positive finite numbers (row_mm, col_mm), "
                             f"got {spacing_mm!r}")
    own = radiograph.spacing_mm
    if own is None:
        return dataclasses.replace(radiograph, spacing_mm=spacing, spacing_source="given")
    if all(abs(a - b) <= rel_tol * b for a, b in zip(spacing, own)):
        return radiograph
    raise ImageReadError(f"the given pixel spacing {spacing[0]:g} x {spacing[1]:g} mm contradicts the image's own "
                         f"{own[0]:g} x {own[1]:g} mm ({radiograph.spacing_source}); drop --spacing for this input")


def radiograph_from_array(
    pixels: np.ndarray,
    spacing_mm: tuple[float, float] | None = None,
    side: str | None = None,
    *,
    value_range: tuple[float, float] | None = None,
    invert: bool = False,
    spacing_source: str | None = None,
    side_source: str | None = None,
    source_format: str = "array",
    photometric: str | None = None,
    bits_stored: int | None = None,
    transfer_syntax: str | None = None,
    intensity_mapping: str | None = None,
) -> Radiograph:
    """Validate and normalise an in-memory image into a :class:`Radiograph`.

    Args:
        pixels: (H, W) grey, or (H, W, 3) RGB / (H, W, 4) RGBA (alpha dropped, grey
            by BT.601 luma); any real numeric dtype; must be finite.
        spacing_mm: (row_mm, col_mm) or ``None``.
        side: "L", "R" or ``None``.
        value_range: (value shown black, value shown white); values outside are
            clipped. ``None`` maps the image's own minimum and maximum to 0 and 1 (a
            constant image becomes all 0.0).
        invert: flip to 1 - value afterwards (MONOCHROME1: low values are dense).
        spacing_source, side_source: defaults "given" when a value is passed, else
            "none".
        source_format, photometric, bits_stored, transfer_syntax, intensity_mapping:
            provenance for :meth:`Radiograph.info`; photometric and bits_stored default
            to what ``pixels`` shows, intensity_mapping to "given range" or "min-max".

    Raises:
        ImageReadError: non-numeric or non-finite pixels, a shape that is not one 2D
            image, an empty value range, bad spacing or side.
    """
    array = np.asarray(pixels)
    if array.dtype.kind not in "uif":
        raise ImageReadError(f"pixel values must be real numbers, got dtype {array.dtype}")
    colour = array.ndim == 3 and array.shape[2] in (3, 4)
    if array.ndim != 2 and not colour:
        raise ImageReadError(
            f"expected one 2D image (H, W) or colour (H, W, 3|4), got shape {array.shape}"
        )
    if array.size == 0:
        raise ImageReadError("image has no pixels")
    if photometric is None:
        photometric = ("RGB", "RGBA")[array.shape[2] - 3] if colour else "MONOCHROME2"
    if bits_stored is None:
        bits_stored = array.dtype.itemsize * 8
    index, distinct = (None, array) if colour else _distinct_values(array)
    if index is not None and distinct.size < array.size:  # integer pixels: map each distinct value once
        return _expand(radiograph_from_array(
            distinct, spacing_mm, side, value_range=value_range, invert=invert, spacing_source=spacing_source,
            side_source=side_source, source_format=source_format, photometric=photometric,
            bits_stored=bits_stored, transfer_syntax=transfer_syntax, intensity_mapping=intensity_mapping), index)

    values = array[..., :3] @ _LUMA if colour else array.astype(np.float64)
    if not np.isfinite(values).all():
        raise ImageReadError("image contains NaN or infinite pixel values")
    if value_range is None:
        low, high = float(values.min()), float(values.max())
        mapping = "min-max"
    else:
        low, high = (float(v) for v in value_range)
        if not (math.isfinite(low) and math.isfinite(high)) or low == high:
            raise ImageReadError(f"intensity range must be two different finite values, got {value_range!r}")
        mapping = "given range"
    if high == low:
        scaled = np.zeros(values.shape, dtype=np.float32)
    else:
        scaled = np.clip((values - low) / (high - low), 0.0, 1.0).astype(np.float32)
    if invert:
        scaled = 1.0 - scaled
    scaled.flags.writeable = False

    return Radiograph(
        pixels=scaled,
        spacing_mm=spacing_mm,
        spacing_source=spacing_source or ("none" if spacing_mm is None else "given"),
        side=side,
        side_source=side_source or ("none" if side is None else "given"),
        source_format=source_format,
        photometric=photometric,
        bits_stored=int(bits_stored),
        transfer_syntax=transfer_syntax,
        intensity_mapping=intensity_mapping or mapping,
    )


def read_radiograph(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Radiograph:
    """Read one single-frame 2D radiograph from ``path`` (see the module docstring).

    Args:
        path: a DICOM, PNG, JPEG, TIFF, NRRD or NIfTI file.
        max_pixels: refuse images with more rows x columns than this, checked from the
            header before any pixel is decoded.

    Raises:
        ImageReadError: missing, unreadable, empty or directory path; unrecognised
            format; damaged or truncated file; DICOM without pixel data; multi-frame
            or 3D image; too many pixels; unsupported photometric interpretation;
            non-finite pixel values.
    """
    if not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive integer, got {max_pixels!r}")
    path = Path(path)
    head = _read_head(path)
    if head[128:132] == b"DICM":
        return _read_dicom(path, max_pixels, has_preamble=True)
    for magic, fmt, image_io in FORMAT_SIGNATURES:
        if head.startswith(magic):
            return _read_with_sitk(path, fmt, image_io, max_pixels)
    # ITK's NIfTI reader insists on a NIfTI name (and checks the header). Asking ITK about any
    # other name makes every ImageIO probe the file: GDCM alone spends seconds on damaged DICOM.
    if path.name.lower().endswith(_NIFTI_SUFFIXES):
        import SimpleITK as sitk

        if sitk.ImageFileReader().GetImageIOFromFileName(str(path)) == "NiftiImageIO":
            return _read_with_sitk(path, "NIfTI", "NiftiImageIO", max_pixels)
    # Last: a bare DICOM dataset (no preamble), which only a forced parse can tell.
    return _read_dicom(path, max_pixels, has_preamble=False)


def _read_head(path: Path) -> bytes:
    """First bytes of the file, after checking it is a readable, non-empty file."""
    if not path.exists():
        if path.is_symlink():
            raise ImageReadError("image file is a symbolic link that loops or leads to nothing")
        raise ImageReadError("image file does not exist")
    if path.is_dir():
        raise ImageReadError("path is a directory, not an image file")
    if not path.is_file():
        raise ImageReadError("path is not a regular file")
    try:
        with path.open("rb") as stream:
            head = stream.read(512)
    except OSError as exc:
        raise ImageReadError(f"image file cannot be opened ({type(exc).__name__})") from exc
    if not head:
        raise ImageReadError("image file is empty")
    return head


def _check_size(rows: int, columns: int, max_pixels: int) -> None:
    if rows < 1 or columns < 1:
        raise ImageReadError(f"image header gives an empty size ({rows} x {columns})")
    if rows * columns > max_pixels:
        raise ImageReadError(
            f"image is {rows} x {columns} = {rows * columns} pixels, above the limit of {max_pixels}"
        )


# --- DICOM -----------------------------------------------------------------------


@contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Keep pydicom's warnings about odd files (which name library paths) off the user's terminal.

    What matters in them becomes an ``ImageReadError`` with a plain message, or is
    tolerated as readers of real-world DICOM must.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _read_dicom(path: Path, max_pixels: int, *, has_preamble: bool) -> Radiograph:
    # pydicom converts element values when first read, so a damaged element fails wherever
    # it is first used; and pylibjpeg-rle's Rust decoder panics (a BaseException) on some
    # damaged RLE data. Both are damaged files, reported as such.
    try:
        with quiet_pydicom():
            return _read_dicom_dataset(path, max_pixels, has_preamble=has_preamble)
    except _DICOM_ERRORS as exc:
        raise ImageReadError("DICOM file is damaged (an element or the pixel data cannot be read)") from exc
    except BaseException as exc:
        if type(exc).__name__ != "PanicException":
            raise
        raise ImageReadError("DICOM pixel data cannot be decoded (damaged data crashed the decoder)") from exc


def _read_dicom_dataset(path: Path, max_pixels: int, *, has_preamble: bool) -> Radiograph:
    try:
        ds = pydicom.dcmread(path, force=not has_preamble, defer_size=_DEFER_BYTES)
    except _DICOM_ERRORS as exc:
        if not has_preamble:
            raise ImageReadError(f"not a recognised image format (supported: {_SUPPORTED})") from exc
        raise ImageReadError("DICOM header cannot be parsed (damaged or truncated file)") from exc
    # A forced parse of arbitrary bytes "succeeds" with junk elements: insist on the
    # elements every DICOM image has.
    if not has_preamble and not any(k in ds for k in ("SOPClassUID", "Rows", *_PIXEL_KEYWORDS)):
        raise ImageReadError(f"not a recognised image format (supported: {_SUPPORTED})")
    if not any(k in ds for k in _PIXEL_KEYWORDS):
        raise ImageReadError("DICOM file has no pixel data (not an image, or truncated)")

    frames = _header_int(ds, "NumberOfFrames", default=1)
    if frames > 1:
        raise ImageReadError(f"DICOM file has {frames} frames; one 2D radiograph is required")
    _check_size(_header_int(ds, "Rows"), _header_int(ds, "Columns"), max_pixels)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if photometric not in _DICOM_PHOTOMETRICS_GREY + _DICOM_PHOTOMETRICS_COLOUR:
        raise ImageReadError(f"DICOM photometric interpretation {photometric!r} is not supported")

    _ensure_transfer_syntax(ds)
    try:
        stored = ds.pixel_array
    except (*_DICOM_ERRORS, AttributeError) as exc:  # pydicom: AttributeError = element missing
        raise ImageReadError(
            "DICOM pixel data cannot be decoded (damaged, truncated, or unsupported compression)"
        ) from exc

    colour = photometric in _DICOM_PHOTOMETRICS_COLOUR
    if stored.ndim == (4 if colour else 3):  # more pixel data than Rows x Columns: pydicom returns "frames"
        raise ImageReadError(
            f"DICOM pixel data holds {stored.shape[0]} times the pixels of its header's image size "
            f"(Rows {_header_int(ds, 'Rows')} x Columns {_header_int(ds, 'Columns')}): the header does not "
            f"describe the pixel data (damaged or wrongly edited file)")
    if stored.ndim != (3 if colour else 2):
        raise ImageReadError(f"DICOM pixel data is not one 2D image ({stored.ndim} dimensions)")
    spacing_mm, spacing_source = _dicom_spacing(ds)
    side, side_source = side_from_laterality(ds)
    bits_stored = _header_int(ds, "BitsStored", default=stored.dtype.itemsize * 8)
    index = None
    if colour:
        # pydicom returns YBR as RGB; colour secondary captures have no modality/VOI LUT.
        values, value_range, mapping, invert = stored, (0, 2**bits_stored - 1), "bit depth", False
    else:
        index, stored = _distinct_values(stored)
        values, value_range, mapping = _modality_and_voi(stored, ds)
        invert = photometric == "MONOCHROME1"

    radiograph = radiograph_from_array(
        values,
        spacing_mm,
        side,
        value_range=value_range,
        invert=invert,
        spacing_source=spacing_source,
        side_source=side_source,
        source_format="DICOM",
        photometric=photometric,
        bits_stored=bits_stored,
        transfer_syntax=UID(ds.file_meta.TransferSyntaxUID).name,
        intensity_mapping=mapping,
    )
    return radiograph if index is None else _expand(radiograph, index)


def _expand(radiograph: Radiograph, index: tuple[np.ndarray, np.ndarray]) -> Radiograph:
    """The radiograph of the distinct values (1, N) -> the image's, by ``_distinct_values``'s index."""
    offset, places = index
    table = np.zeros(int(places[-1]) + 1, dtype=np.float32)
    table[places] = radiograph.pixels[0]
    pixels = table[offset]  # each pixel takes the value its stored value maps to
    pixels.flags.writeable = False
    return dataclasses.replace(radiograph, pixels=pixels)


def _distinct_values(stored: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray] | None, np.ndarray]:
    """((offset (H, W), places (N,)), values (1, N)): the N distinct stored values, sorted.

    Modality LUT, VOI and scaling act on each pixel alone, so they run once per distinct
    value (at most 65536 for 16-bit data) instead of on millions of pixels, and give the
    same numbers; the image's minimum and maximum are those of the distinct values. The
    results go back to the pixels through a table indexed by ``offset`` (the stored
    value, less the minimum for signed data), filled at ``places``.
    (None, stored) for data other than 8- or 16-bit integers.
    """
    if stored.dtype.kind not in "iu" or stored.dtype.itemsize > 2 or stored.ndim != 2:
        return None, stored
    low = 0 if stored.dtype.kind == "u" else int(stored.min())
    offset = stored if low == 0 else stored.astype(np.int32) - low
    present = np.zeros(int(offset.max()) + 1, dtype=bool)
    present[offset] = True
    places = np.flatnonzero(present)
    return (offset, places), (places + low).astype(stored.dtype)[None]


def _modality_and_voi(
    stored: np.ndarray, ds: Dataset
) -> tuple[np.ndarray, tuple[float, float] | None, str]:
    """Apply the modality LUT then the VOI LUT (preferred) or first window.

    Returns (values, (black, white) output range or None, mapping name). The output
    range is found by passing the VOI's whole input domain through the same pydicom
    function: for a window that is (-inf, +inf), for a LUT every mapped input value.
    """
    try:
        values = apply_modality_lut(stored, ds)
        voi_items = ds.get("VOILUTSequence")
        if voi_items and "LUTDescriptor" in voi_items[0] and "LUTData" in voi_items[0]:
            entries, first, _ = voi_items[0].LUTDescriptor
            # A VOI LUT indexes integer input values; rescaled values are float64.
            values = np.rint(values).astype(np.int64) if values.dtype.kind == "f" else values
            domain_out = apply_voi(np.arange(first, first + (entries or 2**16)), ds)
            return apply_voi(values, ds), (float(domain_out.min()), float(domain_out.max())), "VOI LUT"
    except (*_DICOM_ERRORS, AttributeError, IndexError) as exc:
        raise ImageReadError("DICOM modality or VOI LUT cannot be applied (malformed LUT)") from exc
    if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        try:
            with np.errstate(over="ignore"):
                black, white = apply_windowing(np.array([-np.inf, np.inf]), ds)
            return apply_windowing(values, ds), (float(black), float(white)), "window"
        except (ValueError, TypeError, IndexError):
            # Width < 1, unknown VOI LUT Function, non-numeric values: viewers fall
            # back to the full range too.
            return values, None, "min-max (invalid window ignored)"
    return values, None, "min-max"


def _dicom_spacing(ds: Dataset) -> tuple[tuple[float, float] | None, str]:
    """(row_mm, col_mm) and its source, by DICOM precedence for projection images."""
    spacing = _positive_pair(ds.get("PixelSpacing"))
    if spacing is not None:
        return spacing, "PixelSpacing"
    spacing = _positive_pair(ds.get("ImagerPixelSpacing"))
    if spacing is None:
        return None, "none"
    factor = _positive_float(ds.get("EstimatedRadiographicMagnificationFactor"))
    if factor is None:
        return spacing, "ImagerPixelSpacing"
    return (
        (spacing[0] / factor, spacing[1] / factor),
        "ImagerPixelSpacing / EstimatedRadiographicMagnificationFactor",
    )


LATERALITY_KEYWORDS = ("ImageLaterality", "Laterality")  # in order of precedence


def side_from_laterality(values: Any) -> tuple[str | None, str]:
    """(side, source) from DICOM laterality values looked up by keyword.

    ``values``: a pydicom Dataset or any mapping with ``get(keyword)``. Image Laterality
    wins over the series' Laterality; U (unpaired) and B (both) give (None, "none").
    """
    for keyword in LATERALITY_KEYWORDS:
        value = str(values.get(keyword) or "").strip().upper()
        if value in ("L", "R"):
            return value, keyword
    return None, "none"


def _ensure_transfer_syntax(ds: Dataset) -> None:
    """Give a bare dataset (no file meta) the uncompressed syntax pydicom parsed it
    with, which ``pixel_array`` needs."""
    if ds.file_meta.get("TransferSyntaxUID") is not None:
        return
    implicit, little_endian = ds.original_encoding
    if implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    else:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian if little_endian else ExplicitVRBigEndian


def _header_int(ds: Dataset, keyword: str, default: int | None = None) -> int:
    value = ds.get(keyword)
    if value in (None, ""):
        if default is None:
            raise ImageReadError(f"DICOM header lacks {keyword}")
        return default
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise ImageReadError(f"DICOM {keyword} is not an integer") from exc


def _positive_float(value: Any) -> float | None:
    """``value`` as a positive finite float, or None when absent or malformed."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _positive_pair(value: Any) -> tuple[float, float] | None:
    """Two positive finite numbers as a tuple, or None when absent or malformed."""
    if value is None or isinstance(value, (str, bytes)):
        return None
    try:
        items = list(value)
    except TypeError:
        return None
    if len(items) != 2:
        return None
    pair = tuple(_positive_float(v) for v in items)
    return None if None in pair else pair  # type: ignore[return-value]


# --- PNG, JPEG, TIFF, NRRD, NIfTI -------------------------------------------------


def _read_with_sitk(path: Path, fmt: str, image_io: str, max_pixels: int) -> Radiograph:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.SetImageIO(image_io)
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:  # ITK's message holds the path: keep it out of ours
        raise ImageReadError(
            f"{fmt} header cannot be read (damaged file or unsupported pixel layout)"
        ) from exc
    size = reader.GetSize()  # (x = columns, y = rows, ...)
    if len(size) < 2 or any(extent > 1 for extent in size[2:]):
        raise ImageReadError(f"{fmt} file holds an image of size {size}; one 2D image is required")
    columns, rows = size[0], size[1]
    _check_size(rows, columns, max_pixels)
    components = reader.GetNumberOfComponents()
    if components not in (1, 3, 4):
        raise ImageReadError(
            f"{fmt} image has {components} components per pixel; grey, RGB or RGBA is required"
        )
    spacing_mm, spacing_source = _header_spacing(path, fmt, reader)

    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise ImageReadError(f"{fmt} pixel data cannot be decoded (damaged or truncated file)") from exc
    array = sitk.GetArrayFromImage(image)  # (..., H, W[, C]) in index order
    array = array.reshape((rows, columns, components) if components > 1 else (rows, columns))

    unsigned = array.dtype.kind == "u"
    value_range = (0, np.iinfo(array.dtype).max) if unsigned and fmt in _DISPLAY_FORMATS else None
    return radiograph_from_array(
        array,
        spacing_mm,
        None,
        value_range=value_range,
        spacing_source=spacing_source,
        source_format=fmt,
        intensity_mapping="bit depth" if value_range else "min-max",
    )


def _header_spacing(path: Path, fmt: str, reader: sitk.ImageFileReader) -> tuple[tuple[float, float] | None, str]:
    """(row_mm, col_mm) from NRRD/NIfTI headers that state it; None otherwise.

    ITK reports 1.0 both for "1 mm" and for "not stated", so the header is checked
    for the fields that state it.
    """
    column_mm, row_mm = reader.GetSpacing()[:2]
    spacing = _positive_pair((row_mm, column_mm))
    if spacing is None:
        return None, "none"
    if fmt == "NRRD" and _nrrd_states_spacing(path):
        return spacing, "NRRD header"
    if fmt == "NIfTI":
        units = reader.GetMetaData("xyzt_units") if reader.HasMetaDataKey("xyzt_units") else "0"
        if units.isdigit() and int(units) & 0x07 in (1, 2, 3):  # m, mm, um: ITK gives mm
            return spacing, "NIfTI header"
    return None, "none"


def _nrrd_states_spacing(path: Path) -> bool:
    """True when the NRRD header has a ``space directions`` or ``spacings`` field."""
    try:
        with path.open("rb") as stream:
            for raw in stream:
                line = raw.strip()
                if not line:  # a blank line ends the header
                    return False
                if line.startswith((b"space directions:", b"spacings:")):
                    return True
    except OSError as exc:
        raise ImageReadError(f"NRRD header cannot be read ({type(exc).__name__})") from exc
    return False
