"""Measurement results as DICOM: a Structured Report and a Secondary Capture.

A Measurement goes back to PACS as two new series in the measured image's study: a
Comprehensive SR (``write_measurement_sr``) and the overlay picture as a Secondary
Capture (``write_overlay_sc``). The patient and study attributes come from the source
header (``source_reference``) and go into these objects only. UIDs derive from the
source instance, the software version and the models, so the same models on the same
image give the same UIDs, and other models new ones. SR content (PS3.16 TID 1500 "Imaging Measurement Report"):
  observation context: the device (software name, version, local model id);
  procedure reported: SCT 168537006 "Plain radiography";
  one TID 1501 group "knee alignment" (finding site SCT knee joint, with laterality
    when known): aTFA by each method (TID 300, code ATFA of CODING_SCHEME, UCUM "deg",
    signed, valgus positive; method FTS or FNTS), inferred from the femoral and tibial
    axes as SCOORD POLYLINEs (purpose DCM 112302 "Anatomical axis of femur" / TIBAXIS);
    qualitative evaluation DCM 110002 "Quality Control" = DCM 111237 "Usable - Meets the
    quality control standard" (status ok) or DCM 111236 "Usable - Does not meet the
    quality control standard" (flagged);
  one TID 1410 group per landmark: tracking identifier = the landmark's schema name,
    a SCOORD POINT on the source image, and its detection confidence (DCM 111011
    "Certainty of Feature", UCUM "1", in [0, 1]).
Standard codes (DCM, SCT, UCUM) wherever PS3.16 has one; the private scheme, declared in
the Coding Scheme Identification Sequence, only for what it lacks: the aTFA, its two
axis methods and the tibial anatomical axis (_PRIVATE_CODES).
SCOORD graphic data are (column, row) with (0, 0) at the top-left corner of the
top-left pixel (PS3.3 C.18.6.1.2): our pixel-centre coordinates plus 0.5.
highdicom is imported only when results are written (phantom generation needs none of it).
"""

from __future__ import annotations

import os
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from . import DISCLAIMER, __version__
from .dicom_dx import save_dataset
from .errors import ImageReadError
from .imageio import quiet_pydicom

__all__ = [
    "CODING_SCHEME",
    "source_reference",
    "write_measurement_sr",
    "write_overlay_sc",
]

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
    return save_dataset(sr, path)


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
    sc.ImageComments = DISCLAIMER  # also drawn in the picture
    sc.DerivationDescription = "Landmarks, axes and aTFA drawn over the source radiograph by KneeAlignment"
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    sc.SourceImageSequence = DicomSequence([reference])
    return save_dataset(sc, path)

