"""Tests of the DICOM results (KneeAlignmentLib.dicom_results: SR measurement report and overlay Secondary
Capture): read back with highdicom and pydicom with the values intact, valid per dciodvfy, identifiers only
there, and `kneealign measure --dicom-sr` end to end.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.sr.codedict import codes
from pydicom.uid import SecondaryCaptureImageStorage

from dicom_factory import FAKE_IDENTIFIERS
from dicom_factory import write_dx as write_test_dx
from KneeAlignmentLib import DISCLAIMER, cli
from KneeAlignmentLib.batch import SUMMARY_FILE, read_summary
from KneeAlignmentLib.dicom_dx import full_range_window, write_dx
from KneeAlignmentLib.dicom_results import CODING_SCHEME, source_reference, write_measurement_sr, write_overlay_sc
from KneeAlignmentLib.errors import ImageReadError
from KneeAlignmentLib.geometry import compute_alignment
from KneeAlignmentLib.measurement import Landmarks, Measurement, ModelInfo, QCFlag
from KneeAlignmentLib.schema import example_landmarks_px, load_schema

SHAPE = (600, 480)  # (H, W)
SPACING = (0.5, 0.5)


def source_dx(path: Path) -> Path:
    """A DX with the test factory's made-up identifiers, lacking some Type 2 attributes as real files do."""
    stored = (np.random.default_rng(0).random(SHAPE) * 4095).astype(np.uint16)
    write_test_dx(path, stored, bits_stored=12, spacing_mm=SPACING, image_laterality="R")
    ds = pydicom.dcmread(path)
    for keyword in ("PatientSex", "StudyID", "StudyTime"):
        delattr(ds, keyword)
    ds.save_as(path)
    return path


def complete_dx(path: Path) -> Path:
    """A DX with every Type 1 and 2 attribute (the phantom's writer)."""
    stored = (np.random.default_rng(1).random(SHAPE) * 4095).astype(np.uint16)
    return write_dx(path, stored, imager_spacing_mm=SPACING, image_laterality="R", bits_stored=12, rescale=(1.0, 0.0),
                    window=full_range_window(12), uid_entropy=["results", 1], patient_id="PHANTOM-7",
                    patient_name="PHANTOM^7", accession_number="SYN7")


def known_measurement(version: str = "0.0.1", flags=()) -> Measurement:
    """The schema's example right knee (valgus 5 degrees) as a measurement with made-up confidences."""
    schema = load_schema("preop")
    points_px = example_landmarks_px("preop", atfa_valgus_deg=5.0, spacing_mm=SPACING[0], image_size=SHAPE)
    confidence = np.linspace(0.5, 0.99, len(schema))
    return Measurement(
        image_shape=SHAPE, spacing_mm=SPACING, spacing_source="PixelSpacing", side="R",
        side_source="DICOM ImageLaterality", kind="preop", kind_source="detected",
        reference_points_px=schema.reference_points(points_px), reference_confidence=np.array([0.9, 0.8]),
        landmarks=Landmarks("preop", schema.version, schema.names, points_px, confidence),
        alignment=compute_alignment(points_px, schema, "R", SPACING), qc_flags=tuple(flags), evidence={},
        models=(ModelInfo("global", "g", version), ModelInfo("local_preop", "p", version)),
        timings_ms={"total": 1.0}, device="cpu", precision="float32", case_id="case-000000000000")


def dciodvfy_lines(path: Path, kind: str) -> list[str]:
    tool = shutil.which("dciodvfy")
    if tool is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed")
    done = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith(kind)]


def dciodvfy_errors(path: Path) -> list[str]:
    return dciodvfy_lines(path, "Error")


def private(code: str):
    return hd.sr.CodedConcept(code, CODING_SCHEME, code)  # codes compare by value and scheme



# --- the structured report ----------------------------------------------------------------------

def test_sr_reads_back_with_angles_methods_units_and_landmarks_on_the_source_image(tmp_path):
    source = source_dx(tmp_path / "source.dcm")
    measurement = known_measurement()
    path = write_measurement_sr(tmp_path / "r.sr.dcm", measurement, source_reference(source))
    original, sr = pydicom.dcmread(source), hd.sr.srread(path)
    a, lm = measurement.alignment, measurement.landmarks

    for keyword in ("PatientName", "PatientID", "AccessionNumber", "StudyInstanceUID"):
        assert str(sr[keyword].value) == str(original[keyword].value)
    assert sr.SeriesInstanceUID != original.SeriesInstanceUID and sr.Modality == "SR"
    assert sr.ContentQualification == "RESEARCH" and sr.CompletionFlag == "COMPLETE"

    [group] = sr.content.get_image_measurement_groups()
    assert group.finding_sites[0].laterality == codes.SCT.Right
    assert [img.referenced_sop_instance_uid for img in group.source_images] == [original.SOPInstanceUID]
    [qc] = group.get_qualitative_evaluations(name=codes.DCM.QualityControl)
    assert qc.value == codes.DCM.UsableMeetsTheQualityControlStandard
    angles = group.get_measurements(name=private("ATFA"))
    assert [m.method.value for m in angles] == ["FTS", "FNTS"]
    for m, method in zip(angles, ("fts", "fnts")):
        assert m.value == pytest.approx(getattr(a, f"atfa_{method}_deg"), abs=1e-9)
        assert (m.unit.value, m.unit.scheme_designator) == ("deg", "UCUM")
        femoral, tibial = m.referenced_coordinates
        assert (femoral.name, tibial.name) == (codes.DCM.AnatomicalAxisOfFemur, private("TIBAXIS"))
        assert femoral.graphic_type.value == "POLYLINE"
        np.testing.assert_allclose(femoral.value - 0.5, getattr(a, f"femoral_axis_{method}_px"), atol=1e-3)
        np.testing.assert_allclose(tibial.value - 0.5, getattr(a, f"tibial_axis_{method}_px"), atol=1e-3)
        assert femoral.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == \
            original.SOPInstanceUID

    points = sr.content.get_planar_roi_measurement_groups()
    assert [g.tracking_identifier for g in points] == list(lm.names)
    assert all(g.roi.graphic_type.value == "POINT" for g in points)
    np.testing.assert_allclose(np.concatenate([g.roi.value for g in points]) - 0.5, lm.points_px, atol=1e-3)
    confidence = [g.get_measurements(name=codes.DCM.CertaintyOfFeature)[0].value for g in points]
    np.testing.assert_allclose(confidence, lm.confidence, atol=1e-9)
    assert dciodvfy_errors(path) == []


def test_sr_uses_standard_codes_and_the_private_scheme_only_where_none_exists(tmp_path):
    """dciodvfy warns once per use of a private coding scheme (145 warnings for a pre-op report, one per
    landmark, before standard codes replaced them); what is left is the aTFA, its methods and the tibial axis."""
    path = write_measurement_sr(tmp_path / "r.sr.dcm", known_measurement(),
                                source_reference(source_dx(tmp_path / "source.dcm")))
    # (the test source leaves Study ID and Time empty, Type 2: copied empty, DICOMDIR would want them)
    warnings = [w for w in dciodvfy_lines(path, "Warning") if "needed to build DICOMDIR" not in w]
    private_scheme = [w for w in warnings if CODING_SCHEME in w]
    assert not set(warnings) - set(private_scheme), warnings  # no other kind of warning
    # 2 x ATFA, its 2 methods, 2 x TIBAXIS, and the scheme's own declaration
    assert len(private_scheme) <= 7, f"{len(private_scheme)} uses of {CODING_SCHEME}"
    sr = pydicom.dcmread(path)
    [scheme] = sr.CodingSchemeIdentificationSequence
    assert (scheme.CodingSchemeDesignator, scheme.CodingSchemeVersion) == (CODING_SCHEME, "1")
    assert scheme.CodingSchemeName and scheme.CodingSchemeResponsibleOrganization


def test_result_uids_are_stable_for_the_same_models_and_new_for_others(tmp_path):
    reference = source_reference(source_dx(tmp_path / "source.dcm"))
    first = pydicom.dcmread(write_measurement_sr(tmp_path / "a.dcm", known_measurement(), reference))
    again = pydicom.dcmread(write_measurement_sr(tmp_path / "b.dcm", known_measurement(), reference))
    other = pydicom.dcmread(write_measurement_sr(tmp_path / "c.dcm", known_measurement("0.0.2"), reference))
    assert (first.SOPInstanceUID, first.SeriesInstanceUID) == (again.SOPInstanceUID, again.SeriesInstanceUID)
    assert other.SOPInstanceUID != first.SOPInstanceUID and other.SeriesInstanceUID != first.SeriesInstanceUID


def test_a_flagged_result_without_angles_or_landmarks_still_gives_a_valid_report(tmp_path):
    failed = Measurement(
        image_shape=SHAPE, spacing_mm=None, spacing_source="none", side=None, side_source="undetermined",
        kind=None, kind_source="undetermined", reference_points_px=None, reference_confidence=None, landmarks=None,
        alignment=None, qc_flags=(QCFlag("frame_failed", "no knee frame"),), evidence={},
        models=(ModelInfo("global", "g", "1"),), timings_ms={}, device="cpu", precision="float32")
    path = write_measurement_sr(tmp_path / "f.sr.dcm", failed, source_reference(complete_dx(tmp_path / "s.dcm")))
    sr = hd.sr.srread(path)
    [group] = sr.content.get_image_measurement_groups()
    assert group.get_measurements() == [] and sr.content.get_planar_roi_measurement_groups() == []
    assert group.get_qualitative_evaluations()[0].value == codes.DCM.UsableDoesNotMeetTheQualityControlStandard
    assert group.finding_sites[0].laterality is None
    assert dciodvfy_errors(path) == []


# --- the secondary capture -------------------------------------------------------------------------

@pytest.mark.parametrize("make_source", [source_dx, complete_dx])
def test_sc_carries_the_overlay_into_the_source_study(tmp_path, make_source):
    source = make_source(tmp_path / "source.dcm")
    rgb = np.random.default_rng(2).integers(0, 256, size=(70, 56, 3), dtype=np.uint8)
    path = write_overlay_sc(tmp_path / "o.sc.dcm", rgb, known_measurement(), source_reference(source))
    sc, original = pydicom.dcmread(path), pydicom.dcmread(source)
    assert sc.SOPClassUID == SecondaryCaptureImageStorage and sc.PhotometricInterpretation == "RGB"
    np.testing.assert_array_equal(sc.pixel_array, rgb)
    assert sc.StudyInstanceUID == original.StudyInstanceUID and sc.SeriesInstanceUID != original.SeriesInstanceUID
    assert (sc.PatientID, str(sc.PatientName)) == (original.PatientID, str(original.PatientName))
    assert sc.Laterality == "R" and list(sc.PatientOrientation) == ["L", "F"]
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == original.SOPInstanceUID
    assert sc.ImageComments == DISCLAIMER
    assert dciodvfy_errors(path) == []
    with pytest.raises(ValueError, match="uint8"):
        write_overlay_sc(tmp_path / "x.dcm", rgb.astype(np.float32), known_measurement(), source_reference(source))


def test_complete_source_gives_a_valid_report(tmp_path):
    path = write_measurement_sr(tmp_path / "r.dcm", known_measurement(),
                                source_reference(complete_dx(tmp_path / "s.dcm")))
    assert str(pydicom.dcmread(path).PatientName) == "PHANTOM^7"
    assert dciodvfy_errors(path) == []


def test_results_need_a_dicom_source_that_can_be_referred_to(tmp_path):
    not_dicom = tmp_path / "Testperson.png"
    not_dicom.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(ImageReadError, match="header cannot be read"):
        source_reference(not_dicom)
    source = source_dx(tmp_path / "s.dcm")
    ds = pydicom.dcmread(source)
    del ds.StudyInstanceUID
    ds.save_as(source)
    with pytest.raises(ImageReadError, match="lacks StudyInstanceUID") as refused:
        source_reference(source)
    assert not any(value in str(refused.value) for value in FAKE_IDENTIFIERS.values())


# --- kneealign measure --dicom-sr ----------------------------------------------------------------------

def test_measure_with_dicom_sr_writes_dicom_results_for_dicom_inputs_only(tiny_models_dir, tmp_path, capsys):
    inputs = tmp_path / "Testperson_Erika"
    inputs.mkdir()
    source_dx(inputs / "knee.dcm")
    sitk.WriteImage(sitk.GetImageFromArray(np.full((60, 50), 9, np.uint8)), str(inputs / "photo.png"))
    out = tmp_path / "out"
    assert cli.main(["measure", str(inputs), "--models-dir", str(tiny_models_dir), "--device", "cpu", "--out",
                     str(out), "--dicom-sr", "--workers", "0", "--quiet"]) == 0
    printed = capsys.readouterr()
    rows = read_summary(out / SUMMARY_FILE)
    dicom_case, png_case = (next(r["case_id"] for r in rows if r["side_source"] == source)
                            for source in ("DICOM ImageLaterality", "detected"))
    assert (out / f"{dicom_case}.sr.dcm").is_file() and (out / f"{dicom_case}.sc.dcm").is_file()
    assert not list(out.glob(f"{png_case}.s?.dcm"))
    sr = pydicom.dcmread(out / f"{dicom_case}.sr.dcm")
    assert sr.PatientID == FAKE_IDENTIFIERS["PatientID"]  # identifiers go into the DICOM results ...
    assert pydicom.dcmread(out / f"{dicom_case}.sc.dcm").AccessionNumber == FAKE_IDENTIFIERS["AccessionNumber"]
    others = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file() and not p.name.endswith((".sr.dcm",
                                                                                                   ".sc.dcm")))
    for value in [*FAKE_IDENTIFIERS.values(), "Testperson"]:  # ... and nowhere else
        assert value.encode() not in others and value not in printed.out + printed.err
        assert all(value not in p.name for p in out.rglob("*"))
