"""A case of the Slicer module: what it records, where its landmarks came from, what may be claimed as the model's.

A *case* is a landmark point list that carries a :class:`CaseRecord` as node attributes
(saved with the scene, so a reloaded scene measures every case as before): the landmark
kind, the side and where it came from, the source of the landmarks and, for a model's
result, the model's :class:`~measurement.Measurement`. The Slicer layer only stores the
record's :data:`ATTRIBUTES` under its own namespace and reads them back.

Sources (:data:`SOURCES`): the model ("model"), the model and then corrected by the user
("model, corrected": derived from the moved landmarks, never recorded), a point list the
user brought ("landmarks"), manual placement ("manual").

A DICOM Structured Report names the algorithm as the observer, so a case is exported as SR
only when it is a model's result, unedited, on a radiograph that is one DICOM instance
(:func:`dicom_sr_problem`, :func:`sr_measurement`).
Shape legend: ``points_px`` (K, 2) as (x, y) pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from .case_view import read_points
from .manual_points import KIND as MANUAL
from .markups import ImagePlane, MarkupsNode
from .measurement import Measurement
from .schema import KINDS

__all__ = [
    "ATTRIBUTES",
    "CORRECTED",
    "EDIT_TOLERANCE_PX",
    "SOURCES",
    "CaseRecord",
    "dicom_sr_problem",
    "edited_landmarks",
    "is_case",
    "sr_measurement",
]

SOURCES = ("model", "model, corrected", "landmarks", "manual")
CORRECTED = "model, corrected"  # reported, never recorded: derived from the landmarks the user moved
EDIT_TOLERANCE_PX = 0.01  # a landmark moved less than this (rounding in RAS <-> px) is not edited
# Node attribute (without the Slicer layer's namespace) -> record field. Saved in scenes: never rename.
_FIELDS = MappingProxyType({"Kind": "kind", "Side": "side", "SideSource": "side_source", "Source": "source",
                            "Measurement": "measurement_json"})
ATTRIBUTES = tuple(_FIELDS)


@dataclass(frozen=True)
class CaseRecord:
    """What a case records.

    Attributes:
        kind: "preop", "postop" or "manual": how the point list is measured.
        side: "L" or "R", decided when the case was created.
        side_source: where the side came from (``measurement.decide_side``: "given", "DICOM
            ImageLaterality", "anatomy (fibula is lateral)"; "detected" by the model).
        source: "model", "landmarks" or "manual".
        measurement_json: the model's Measurement as one line of JSON (a model's result only).
    """

    kind: str
    side: str
    side_source: str
    source: str
    measurement_json: str = ""

    def __post_init__(self) -> None:
        if self.kind not in (*KINDS, MANUAL):
            raise ValueError(f"a case's kind must be one of {(*KINDS, MANUAL)}, got {self.kind!r}")
        if self.side not in ("L", "R"):
            raise ValueError(f"a case's side must be 'L' or 'R', got {self.side!r}")
        if self.source not in SOURCES or self.source == CORRECTED:
            raise ValueError(f"a case's source must be 'model', 'landmarks' or 'manual', got {self.source!r}")
        if (self.source == "model") != bool(self.measurement_json):
            raise ValueError("a case records the model's measurement if and only if its source is the model")

    def to_attributes(self) -> dict[str, str]:
        """{attribute: value} for every one of :data:`ATTRIBUTES`."""
        return {attribute: getattr(self, name) for attribute, name in _FIELDS.items()}

    @classmethod
    def from_attributes(cls, get: Callable[[str], str | None]) -> CaseRecord:
        """The record from ``get(attribute)`` (None or "" where absent); raises ValueError when it is no case."""
        if not is_case(get):
            raise ValueError("not a Knee Alignment case")
        return cls(**{name: get(attribute) or "" for attribute, name in _FIELDS.items()})

    def measurement(self) -> Measurement | None:
        """The model's measurement (None unless the source is the model)."""
        return Measurement.from_json(self.measurement_json) if self.measurement_json else None

    def reported_source(self, edited: Sequence[str] = ()) -> str:
        """The source as reported: "model" becomes :data:`CORRECTED` when ``edited`` names landmarks."""
        return CORRECTED if self.source == "model" and edited else self.source


def is_case(get: Callable[[str], str | None]) -> bool:
    """Whether attributes read by ``get(attribute)`` hold a case record."""
    return bool(get("Kind"))


def edited_landmarks(measurement: Measurement | None, names: Sequence[str], points_px: Any) -> tuple[str, ...]:
    """Names of the landmarks (K, 2) px that differ from where the model put them (in schema order).

    Empty without a measurement or when the names are not the model's landmarks.
    """
    if measurement is None or measurement.landmarks is None or tuple(names) != measurement.landmarks.names:
        return ()
    moved = np.hypot(*(np.asarray(points_px, float) - measurement.landmarks.points_px).T) > EDIT_TOLERANCE_PX
    return tuple(name for name, m in zip(names, moved) if m)


def dicom_sr_problem(record: CaseRecord, dicom_instances: int, edited: Sequence[str] = ()) -> str:
    """Why a case cannot be exported as DICOM SR ("" when it can).

    Args:
        record: the case (only a model's result can be).
        dicom_instances: how many DICOM instances its radiograph came from (0: not from the
            DICOM database; an SR refers to exactly one image).
        edited: names of landmarks corrected since the model placed them: an SR names the
            algorithm as the observer, so corrected values are not its result.
    """
    if record.source != "model":
        return "DICOM SR export describes a model's result; this case has none (manual or your own points)."
    if dicom_instances != 1:
        return "DICOM SR export needs a radiograph loaded from the DICOM database (one image)."
    if edited:
        return (f"landmarks {', '.join(edited)} were corrected; a DICOM SR must not present corrected values as "
                f"the model's. Export the case as JSON or CSV instead.")
    return ""


def sr_measurement(record: CaseRecord, dicom_instances: int, landmarks: MarkupsNode, plane: ImagePlane
                   ) -> Measurement:
    """What a DICOM SR of the case carries: the model's measurement, when its landmarks are where the model put them.

    Args:
        record: the case.
        dicom_instances: as for :func:`dicom_sr_problem`.
        landmarks: the case's point list now (LPS mm); plane: its radiograph's plane.

    Raises:
        ValueError: :func:`dicom_sr_problem`'s reason.
        MarkupsError: the point list no longer fits the model's schema or the plane.
    """
    problem = dicom_sr_problem(record, dicom_instances)
    if problem:
        raise ValueError(problem)
    measurement = record.measurement()
    names, points_px = read_points(landmarks, measurement.kind, plane)
    problem = dicom_sr_problem(record, dicom_instances, edited_landmarks(measurement, names, points_px))
    if problem:
        raise ValueError(problem)
    return measurement
