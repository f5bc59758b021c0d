"""DICOM DX inputs for the tests: ``KneeAlignmentLib.dicom_dx`` with made-up identifiers.

``write_dx`` passes its options to ``dicom_dx.dx_dataset`` (every transfer syntax, MONOCHROME1,
rescale, window and VOI LUT, laterality and spacing tags), gives each file fresh random UIDs
and writes made-up patient identifiers (``FAKE_IDENTIFIERS``) into every file so tests can
check that nothing downstream echoes them. What a conforming DX cannot be is written here:
a bare dataset without preamble and file meta (``preamble=False``), attributes set
verbatim after building (``odd``), and several frames (``write_frames``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from KneeAlignmentLib.dicom_dx import dx_dataset, save_dataset

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


def fake_dataset(stored: np.ndarray, **options) -> Dataset:
    """``dx_dataset(stored, **options)`` with fresh random UIDs and ``FAKE_IDENTIFIERS``."""
    ds = dx_dataset(stored, uid_entropy=[uuid.uuid4().hex], patient_id=FAKE_IDENTIFIERS["PatientID"], **options)
    ds.update(FAKE_IDENTIFIERS)
    return ds


def write_dx(path: str | Path, stored: np.ndarray, *, preamble: bool = True,
             odd: Mapping[str, object] | None = None, **options) -> Path:
    """Write ``stored`` (H, W) as a DX file with :func:`fake_dataset`; return its path.

    Args:
        preamble: ``False`` writes a bare dataset (no preamble, 'DICM' or file meta), as
            some old archives do; Explicit VR Little Endian only.
        odd: attributes set verbatim after building (keyword -> value), for deliberately
            malformed files such as a zero PixelSpacing.
        options: as for ``dicom_dx.dx_dataset``.
    """
    ds = fake_dataset(stored, **options)
    for keyword, value in (odd or {}).items():
        setattr(ds, keyword, value)
    path = Path(path)
    if preamble:
        return save_dataset(ds, path)
    if ds.file_meta.TransferSyntaxUID != ExplicitVRLittleEndian:
        raise ValueError("a file without preamble is written as Explicit VR Little Endian")
    del ds.file_meta
    ds.save_as(path, implicit_vr=False, little_endian=True)
    return path


def write_frames(path: str | Path, frames: np.ndarray, transfer_syntax: str = ExplicitVRLittleEndian) -> Path:
    """Write (F, H, W) stored values as one multi-frame DX (which a radiograph reader refuses)."""
    frames = np.ascontiguousarray(frames)
    ds = fake_dataset(frames[0])
    ds.NumberOfFrames = len(frames)
    ds.PixelData = frames.tobytes()
    if transfer_syntax != ExplicitVRLittleEndian:
        ds.compress(transfer_syntax, frames, generate_instance_uid=False)
    return save_dataset(ds, path)
