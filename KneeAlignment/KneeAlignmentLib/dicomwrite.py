"""Writing real DICOM files with pydicom.

``write_dx``: a Digital X-Ray Image, For Presentation (SOP Class 1.2.840.10008.5.1.4.1.1.1.1),
single frame, with every Type 1 and Type 2 attribute of the modules its IOD requires
(PS3.3 A.26): Patient, General Study, General Series, DX Series, General Equipment,
General Acquisition, General Image, Image Pixel, DX Anatomy Imaged, DX Image, DX
Detector, VOI LUT (required For Presentation), Acquisition Context, SOP Common, plus the
optional DX Positioning and X-Ray Acquisition Dose attributes the phantom knows. The
Frame of Reference module is User-optional for DX and left out: a projection radiograph
has no patient-based coordinate system to refer to.

UIDs are derived deterministically from ``uid_entropy`` (pydicom's ``generate_uid`` with
entropy sources), so the same synthetic case always gets the same UIDs. Files are
written atomically: to a temporary file in the target folder, then renamed.

Everything written here is synthetic: callers pass made-up identifiers only.

Measurement results go back to PACS through ``source_reference``, ``write_measurement_sr``
(Comprehensive SR, TID 1500 measurement report) and ``write_overlay_sc`` (Secondary
Capture) at the end of this module: the only objects into which the measured image's
patient and study identifiers are copied.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.coding import Code
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

from . import __version__
from .atomicio import atomic_output
from .errors import ImageReadError
from .imageio import quiet_pydicom

__all__ = [
    "CODING_SCHEME",
    "DX_FOR_PRESENTATION",
    "source_reference",
    "write_dx",
    "write_measurement_sr",
    "write_overlay_sc",
]

#: SOP Class UID of Digital X-Ray Image Storage - For Presentation.
DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"

_PHOTOMETRICS = ("MONOCHROME1", "MONOCHROME2")
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


def write_dx(
    path: str | os.PathLike[str],
    pixels: np.ndarray,
    *,
    imager_spacing_mm: Sequence[float],
    laterality: str,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    uid_entropy: Sequence[object],
    patient_id: str,
    patient_name: str = "",
    spacing_mm: Sequence[float] | None = None,
    magnification: float | None = None,
    window: tuple[float, float] | None = None,
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
) -> Path:
    """Write one single-frame DX For Presentation image; return its path.

    Args:
        path: the file to write (replaced atomically).
        pixels: (H, W) uint16 stored values, exactly as they go into Pixel Data; for
            MONOCHROME1 (low values shown white) the caller has already inverted them.
        imager_spacing_mm: (row_mm, col_mm) detector pitch (ImagerPixelSpacing).
        laterality: 'R' or 'L' (ImageLaterality).
        photometric: 'MONOCHROME1' or 'MONOCHROME2'.
        bits_stored: 12 to 16; every value in ``pixels`` must fit.
        uid_entropy: values that identify the image (e.g. seed, case index, kind); the
            study, series and instance UIDs are derived from them.
        patient_id, patient_name: synthetic identifiers (never real ones).
        spacing_mm: (row_mm, col_mm) spacing calibrated to the patient's plane
            (PixelSpacing, calibration type GEOMETRY), or None.
        magnification: EstimatedRadiographicMagnificationFactor, or None.
        window: (centre, width) of the VOI window; default: the full stored range,
            which maps stored values linearly onto the display.
        burned_in_annotation: whether text is burned into the pixels.
        kvp, source_to_detector_mm, source_to_patient_mm: acquisition, if known.
        description: Study and series description.
        derivation: DerivationDescription (how the pixels were made), if any.

    Raises:
        ValueError: pixels not a 2D uint16 array or not fitting ``bits_stored``, or an
            invalid spacing, laterality, photometric interpretation or window.
        OSError: the file cannot be written.
    """
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint16 or pixels.ndim != 2 or 0 in pixels.shape:
        raise ValueError(f"pixels must be a non-empty 2D uint16 array, got {pixels.dtype} {pixels.shape}")
    if not isinstance(bits_stored, (int, np.integer)) or not 12 <= bits_stored <= 16:
        raise ValueError(f"bits_stored must be 12 to 16 for DX, got {bits_stored!r}")
    maxval = (1 << int(bits_stored)) - 1
    if int(pixels.max()) > maxval:
        raise ValueError(f"pixel values up to {int(pixels.max())} do not fit in {bits_stored} bits")
    if photometric not in _PHOTOMETRICS:
        raise ValueError(f"photometric must be one of {_PHOTOMETRICS}, got {photometric!r}")
    if laterality not in ("R", "L"):
        raise ValueError(f"laterality must be 'R' or 'L', got {laterality!r}")
    imager = _pair(imager_spacing_mm, "imager_spacing_mm")
    if window is None:
        window = (float(1 << (int(bits_stored) - 1)), float(1 << int(bits_stored)))
    if not (np.isfinite(window[0]) and np.isfinite(window[1]) and window[1] >= 1):
        raise ValueError(f"window must be (centre, width) with width >= 1, got {window!r}")
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
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "INVERSE" if photometric == "MONOCHROME1" else "IDENTITY"
    # Image Pixel
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = (int(n) for n in pixels.shape)
    ds.BitsAllocated = 16
    ds.BitsStored = int(bits_stored)
    ds.HighBit = int(bits_stored) - 1
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    # DX Anatomy Imaged
    ds.ImageLaterality = laterality
    ds.AnatomicRegionSequence = DicomSequence([_code("72696002", "SCT", "Knee")])
    # DX Detector
    ds.DetectorType = "SCINTILLATOR"
    ds.DetectorConfiguration = "AREA"
    ds.ImagerPixelSpacing = [_ds(v) for v in imager]
    if spacing_mm is not None:
        ds.PixelSpacing = [_ds(v) for v in _pair(spacing_mm, "spacing_mm")]
        ds.PixelSpacingCalibrationType = "GEOMETRY"
        ds.PixelSpacingCalibrationDescription = "Spacing at the knee's plane: detector pitch / magnification"
    # DX Positioning
    ds.PositionerType = "COLUMN"  # tube on a column or ceiling stand, detector in a bucky
    ds.ViewPosition = "AP"
    ds.ViewCodeSequence = DicomSequence([_code("399348003", "SCT", "antero-posterior")])
    if magnification is not None:
        if not (np.isfinite(magnification) and magnification >= 1.0):
            raise ValueError(f"magnification must be a finite number >= 1, got {magnification!r}")
        ds.EstimatedRadiographicMagnificationFactor = _ds(magnification)
    if source_to_detector_mm is not None:
        ds.DistanceSourceToDetector = _ds(source_to_detector_mm)
    if source_to_patient_mm is not None:
        ds.DistanceSourceToPatient = _ds(source_to_patient_mm)
    if kvp is not None:
        ds.KVP = _ds(kvp)
    # VOI LUT
    ds.WindowCenter = _ds(window[0])
    ds.WindowWidth = _ds(window[1])
    ds.WindowCenterWidthExplanation = "FULL RANGE" if window == (float(1 << (int(bits_stored) - 1)),
                                                                  float(1 << int(bits_stored))) else "USER"
    ds.VOILUTFunction = "LINEAR"
    # Acquisition Context (Type 2 sequence, empty)
    ds.AcquisitionContextSequence = DicomSequence([])

    return _save_result(ds, path)


# --- measurement results as DICOM: Structured Report and Secondary Capture ---------------
#
# A Measurement goes back to PACS as two new series in the measured image's study. The
# patient and study attributes come from the source header (``source_reference``) and
# go into these objects only. UIDs derive from the source instance, the software
# version and the models, so the same models on the same image give the same UIDs, and
# other models new ones. SR content (PS3.16 TID 1500 "Imaging Measurement Report"):
#   observation context: the device (software name, version, local model id);
#   procedure reported: SCT 168537006 "Plain radiography";
#   one TID 1501 group "knee alignment" (finding site SCT knee joint, with laterality
#     when known): aTFA by each method (TID 300, code ATFA of CODING_SCHEME, UCUM "deg",
#     signed, valgus positive; method FTS or FNTS), inferred from the femoral and tibial
#     axes as SCOORD POLYLINEs (purpose DCM 112302 "Anatomical axis of femur" / TIBAXIS);
#     qualitative evaluation DCM 110002 "Quality Control" = DCM 111237 "Usable - Meets the
#     quality control standard" (status ok) or DCM 111236 "Usable - Does not meet the
#     quality control standard" (flagged);
#   one TID 1410 group per landmark: tracking identifier = the landmark's schema name,
#     a SCOORD POINT on the source image, and its detection confidence (DCM 111011
#     "Certainty of Feature", UCUM "1", in [0, 1]).
# Standard codes (DCM, SCT, UCUM) wherever PS3.16 has one; the private scheme, declared in
# the Coding Scheme Identification Sequence, only for what it lacks: the aTFA, its two
# axis methods and the tibial anatomical axis (_PRIVATE_CODES).
# SCOORD graphic data are (column, row) with (0, 0) at the top-left corner of the
# top-left pixel (PS3.3 C.18.6.1.2): our pixel-centre coordinates plus 0.5.
# highdicom is imported only when results are written (phantom generation needs none of it).

CODING_SCHEME = "99KNEEALIGN"  # a private coding scheme ("99" prefix, PS3.16 Section 8.2)
RESULTS_MANUFACTURER = "KneeAlignment contributors"
SR_SERIES_NUMBER = 9901
SC_SERIES_NUMBER = 9902
SCOORD_OFFSET_PX = 0.5  # SCOORD = pixel-centre coordinates + this

# What PS3.16 has no code for.
_PRIVATE_CODES = MappingProxyType({
    "ATFA": Code("ATFA", CODING_SCHEME, "Anatomical tibiofemoral angle, valgus positive"),
    "FTS": Code("FTS", CODING_SCHEME, "Femoral and tibial shaft axes (FTS)"),
    "FNTS": Code("FNTS", CODING_SCHEME, "Femoral notch and tibial spine axes (FNTS)"),
    "TIBAXIS": Code("TIBAXIS", CODING_SCHEME, "Tibial anatomical axis"),
})
_CODES = MappingProxyType({
    **_PRIVATE_CODES,
    "FEMAXIS": Code("112302", "DCM", "Anatomical axis of femur"),
    "LMCONF": Code("111011", "DCM", "Certainty of Feature"),
    "QCSTATUS": Code("110002", "DCM", "Quality Control"),
    "ok": Code("111237", "DCM", "Usable - Meets the quality control standard"),
    "flagged": Code("111236", "DCM", "Usable - Does not meet the quality control standard"),
})
_SOURCE_REQUIRED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality", "Rows",
                    "Columns")
_SOURCE_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                 "StudyDate", "StudyTime", "ReferringPhysicianName")
_SOURCE_OPTIONAL = ("PatientOrientation", "ImageLaterality", "Laterality", "BodyPartExamined")
_PERSON_NAMES = ("PatientName", "ReferringPhysicianName")


def source_reference(path: str | os.PathLike[str]) -> Dataset:
    """The header of a measured DICOM image, reduced to what results copy from it.

    Returns a Dataset with the source's SOP, study and series UIDs, modality and size,
    its patient and study attributes (empty where the source lacks these Type 2
    attributes), and orientation and laterality when present. Person names become plain
    text, since the results are written in UTF-8.

    Raises:
        ImageReadError: not a readable DICOM file, or one without a UID or attribute
            needed to refer to it.
    """
    try:
        with quiet_pydicom():
            ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
        raise ImageReadError(f"DICOM results need a DICOM source image; its header cannot be read "
                             f"({type(exc).__name__})") from exc
    missing = [keyword for keyword in _SOURCE_REQUIRED if not ds.get(keyword)]
    if missing:
        raise ImageReadError(f"the source DICOM lacks {', '.join(missing)}, needed to refer to it")
    reference = Dataset()
    for keyword in (*_SOURCE_REQUIRED, *_SOURCE_TYPE2, *_SOURCE_OPTIONAL):
        value = ds.get(keyword)
        if value is None:
            if keyword in _SOURCE_TYPE2:
                setattr(reference, keyword, "")
            continue
        setattr(reference, keyword, str(value) if keyword in _PERSON_NAMES else value)
    return reference


def _result_uid(source: Dataset, measurement, role: str) -> str:
    models = [m.model_id for m in measurement.models]
    return generate_uid(entropy_srcs=[source.SOPInstanceUID, __version__, *models, role])


def _scoord(points_px: np.ndarray) -> np.ndarray:
    """(N, 2) pixel-centre (x, y) -> (N, 2) SCOORD (column, row)."""
    return np.asarray(points_px, dtype=np.float64) + SCOORD_OFFSET_PX


def write_measurement_sr(path: str | os.PathLike[str], measurement, source: Dataset) -> Path:
    """Write ``measurement`` as a Comprehensive SR (TID 1500) in the source's study; return the path.

    Args:
        path: the file to write (atomically).
        measurement: a ``measurement.Measurement`` of the source image.
        source: :func:`source_reference` of that image.

    Raises:
        OSError: the file cannot be written.
    """
    import highdicom as hd
    from highdicom.coding_schemes import CodingSchemeIdentificationItem
    from highdicom.sr import (AlgorithmIdentification, ComprehensiveSR, CoordinatesForMeasurement,
                              DeviceObserverIdentifyingAttributes, FindingSite, ImageRegion, Measurement,
                              MeasurementReport, MeasurementsAndQualitativeEvaluations, ObservationContext,
                              ObserverContext, PlanarROIMeasurementsAndQualitativeEvaluations, QualitativeEvaluation,
                              SourceImageForMeasurementGroup, SourceImageForRegion, TrackingIdentifier)
    from pydicom.sr.codedict import codes

    lm, a = measurement.landmarks, measurement.alignment
    algorithm = AlgorithmIdentification(
        name="KneeAlignment", version=__version__,
        parameters=[f"{m.role}={m.label}" for m in measurement.models]
        + ([f"schema={lm.schema} v{lm.schema_version}"] if lm is not None else []))
    laterality = {"R": codes.SCT.Right, "L": codes.SCT.Left}.get(measurement.side)
    angles = []
    if a is not None:
        for method in ("FTS", "FNTS"):
            axes = [CoordinatesForMeasurement("POLYLINE", _scoord(getattr(a, f"{bone}_axis_{method.lower()}_px")),
                                              SourceImageForRegion.from_source_image(source), purpose=_CODES[code])
                    for bone, code in (("femoral", "FEMAXIS"), ("tibial", "TIBAXIS"))]
            angles.append(Measurement(name=_CODES["ATFA"], value=float(getattr(a, f"atfa_{method.lower()}_deg")),
                                      unit=codes.UCUM.Degree, method=_CODES[method], referenced_coordinates=axes))
    groups = [MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=_result_uid(source, measurement, "tracking: knee alignment"),
                                               identifier="knee alignment"),
        finding_type=codes.SCT.KneeJoint, finding_sites=[FindingSite(codes.SCT.KneeJoint, laterality=laterality)],
        algorithm_id=algorithm, measurements=angles or None,
        qualitative_evaluations=[QualitativeEvaluation(_CODES["QCSTATUS"], _CODES[measurement.status])],
        source_images=[SourceImageForMeasurementGroup.from_source_image(source)])]
    if lm is not None:
        for name, point, confidence in zip(lm.names, _scoord(lm.points_px), lm.confidence):
            groups.append(PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=TrackingIdentifier(uid=_result_uid(source, measurement, f"tracking: {name}"),
                                                       identifier=name),
                referenced_region=ImageRegion("POINT", point[None], SourceImageForRegion.from_source_image(source)),
                finding_type=codes.SCT.AnatomicalPoint,
                measurements=[Measurement(name=_CODES["LMCONF"], value=float(confidence), unit=codes.UCUM.NoUnits)]))
    local = measurement.local_model
    device = DeviceObserverIdentifyingAttributes(
        uid=generate_uid(entropy_srcs=["KneeAlignment", __version__]), name="KneeAlignment",
        manufacturer_name=RESULTS_MANUFACTURER, model_name=local.model_id if local else "no local model")
    report = MeasurementReport(
        observation_context=ObservationContext(observer_device_context=ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device)),
        procedure_reported=codes.SCT.PlainRadiography, imaging_measurements=groups)
    sr = ComprehensiveSR(
        evidence=[source], content=report, series_instance_uid=_result_uid(source, measurement, "sr series"),
        series_number=SR_SERIES_NUMBER, sop_instance_uid=_result_uid(source, measurement, "sr"), instance_number=1,
        manufacturer=RESULTS_MANUFACTURER, is_complete=True, series_description="KneeAlignment aTFA (research)",
        manufacturer_model_name="KneeAlignment", software_versions=__version__,
        content_qualification=hd.ContentQualificationValues.RESEARCH, specific_character_set="ISO_IR 192",
        coding_schemes=[CodingSchemeIdentificationItem(
            designator=CODING_SCHEME, name="KneeAlignment measurement codes", version="1",
            responsible_organization=RESULTS_MANUFACTURER)])  # private, unregistered: no UID
    return _save_result(sr, path)


def write_overlay_sc(path: str | os.PathLike[str], rgb: np.ndarray, measurement, source: Dataset) -> Path:
    """Write an overlay picture as a Secondary Capture image in the source's study; return the path.

    Args:
        path: the file to write (atomically).
        rgb: (H, W, 3) uint8, the overlay (the PNG ``overlay.draw_measurement`` wrote).
        measurement: the ``measurement.Measurement`` it shows (laterality, UIDs).
        source: :func:`source_reference` of the measured image.

    Raises:
        ValueError: ``rgb`` is not (H, W, 3) uint8. OSError: the file cannot be written.
    """
    import highdicom as hd

    rgb = np.ascontiguousarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or 0 in rgb.shape:
        raise ValueError(f"rgb must be (H, W, 3) uint8, got {rgb.dtype} {rgb.shape}")
    # The overlay shows the source unrotated: its orientation, else the AP film convention.
    orientation = source.get("PatientOrientation")
    orientation = tuple(orientation) if orientation is not None and len(orientation) == 2 else ("L", "F")
    sc = hd.sc.SCImage.from_ref_dataset(
        source, rgb, "RGB", 8, "PATIENT", series_instance_uid=_result_uid(source, measurement, "sc series"),
        series_number=SC_SERIES_NUMBER, sop_instance_uid=_result_uid(source, measurement, "sc"), instance_number=1,
        manufacturer=RESULTS_MANUFACTURER, patient_orientation=orientation, laterality=measurement.side,
        series_description="KneeAlignment overlay (research)", manufacturer_model_name="KneeAlignment",
        software_versions=__version__, content_qualification=hd.ContentQualificationValues.RESEARCH,
        specific_character_set="ISO_IR 192")
    if measurement.side is None:
        sc.Laterality = ""  # Type 2C for a paired body part: present, value unknown
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.BurnedInAnnotation = "NO"  # only measurement text is drawn, no identifiers
    sc.DerivationDescription = "Landmarks, axes and aTFA drawn over the source radiograph by KneeAlignment"
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    sc.SourceImageSequence = DicomSequence([reference])
    return _save_result(sc, path)


def _save_result(ds: Dataset, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    with atomic_output(path) as temporary:
        ds.save_as(temporary, enforce_file_format=True)
    return path
