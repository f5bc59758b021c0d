"""Results of a knee measured in the Slicer module: the table row, CSV and JSON exports.

The results table holds one row per case (what a case records and where its landmarks
came from: ``case_record``); its columns (:data:`COLUMNS`) are the CSV header.
The JSON document keeps the current result and, beside it, the model's original
measurement, so a corrected value never hides what the model said.

Numbers in a row are floats (NaN where a measure does not apply to the case); the
rest are strings. Shape legend: ``points_px`` (K, 2) as (x, y) pixels.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import DISCLAIMER, __version__
from .atomicio import write_atomic
from .case_record import SOURCES, CaseRecord, edited_landmarks
from .case_view import CaseUpdate
from .geometry import mm_per_px

__all__ = [
    "COLUMNS",
    "FORMAT",
    "FORMAT_VERSION",
    "Column",
    "case_document",
    "results_row",
    "write_case_json",
    "write_results_csv",
]

FORMAT = "kneealignment-slicer-case"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Column:
    """A results column: numeric when it has a unit."""

    name: str
    unit: str | None
    description: str


COLUMNS: tuple[Column, ...] = (
    Column("radiograph", None, "radiograph volume"),
    Column("landmarks", None, "landmark point list"),
    Column("source", None, "where the landmarks came from: " + " | ".join(SOURCES)),
    Column("schema", None, "landmark schema: preop, postop or manual"),
    Column("atfa_fts_deg", "deg", "anatomical tibiofemoral angle, shaft axes (FTS); valgus positive"),
    Column("label_fts", None, "valgus, varus or neutral (FTS)"),
    Column("atfa_fnts_deg", "deg", "anatomical tibiofemoral angle, notch-spine axes (FNTS); valgus positive"),
    Column("label_fnts", None, "valgus, varus or neutral (FNTS)"),
    Column("side", None, "R or L"),
    Column("side_source", None, "where the side came from"),
    Column("aldfa_deg", "deg", "anatomical lateral distal femoral angle (pre-op)"),
    Column("mpta_deg", "deg", "medial proximal tibial angle (pre-op)"),
    Column("jlca_deg", "deg", "joint line convergence angle, positive converging medially (pre-op)"),
    Column("jsw_lateral_mm", "mm", "minimum lateral joint space (pre-op, spacing known)"),
    Column("jsw_medial_mm", "mm", "minimum medial joint space (pre-op, spacing known)"),
    Column("femoral_component_alpha_deg", "deg", "femoral component angle alpha, medial (post-op)"),
    Column("tibial_component_beta_deg", "deg", "tibial component angle beta, medial (post-op)"),
    Column("status", None, "the model's quality control: ok or flagged (empty without a model)"),
    Column("qc_flags", None, "the model's quality-control flag codes"),
    Column("models", None, "model bundles that found the landmarks (name@version; marked user-supplied unless a "
                           "pinned release)"),
    Column("edited_landmarks", None, "landmarks the user moved after the model placed them"),
    Column("software_version", None, "kneealignment version"),
)
_ALIGNMENT_NUMBERS = ("atfa_fts_deg", "atfa_fnts_deg", "aldfa_deg", "mpta_deg", "jlca_deg", "jsw_lateral_mm",
                      "jsw_medial_mm", "femoral_component_alpha_deg", "tibial_component_beta_deg")


def results_row(record: CaseRecord, update: CaseUpdate, *, radiograph: str, landmarks: str
                ) -> dict[str, float | str]:
    """The results-table row of a case as measured now, keyed by :data:`COLUMNS` names, in their order.

    Landmarks moved since the model placed them are listed, and the source then reads
    "model, corrected" (``case_record``). ``radiograph``/``landmarks``: the names shown.
    """
    alignment, measurement = update.alignment, record.measurement()
    edited = edited_landmarks(measurement, update.names, update.points_px)
    values: dict[str, Any] = {name: getattr(alignment, name) for name in _ALIGNMENT_NUMBERS}
    values |= {
        "radiograph": radiograph, "landmarks": landmarks, "source": record.reported_source(edited),
        "schema": record.kind, "label_fts": alignment.label_fts, "label_fnts": alignment.label_fnts,
        "side": alignment.side, "side_source": record.side_source,
        "status": measurement.status if measurement else "",
        "qc_flags": ";".join(measurement.flag_codes) if measurement else "",
        "models": ";".join(m.label for m in measurement.models) if measurement else "",
        "edited_landmarks": ";".join(edited),
        "software_version": __version__,
    }
    return {c.name: (math.nan if values[c.name] is None else float(values[c.name])) if c.unit
            else str(values[c.name]) for c in COLUMNS}


def _cell(value: float | str) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.3f}"
    return value


def write_results_csv(path: str | os.PathLike[str], rows: Sequence[Mapping[str, float | str]]) -> Path:
    """Write rows of :func:`results_row` as CSV (header = column names; numbers to 0.001; NaN empty)."""
    names = [c.name for c in COLUMNS]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(names)
    for row in rows:
        if list(row) != names:
            raise ValueError(f"a row must have the columns {names}, got {list(row)}")
        writer.writerow([_cell(row[name]) for name in names])
    return write_atomic(path, buffer.getvalue())


def case_document(record: CaseRecord, update: CaseUpdate, *, radiograph: str, landmarks: str,
                  spacing_mm: tuple[float, float] | None) -> dict[str, Any]:
    """The JSON document of one case: the current result (:func:`results_row`) and the model's original measurement.

    Layout::

        {"format", "format_version", "software": {"name", "version"}, "intended_use",
         "result": {row, NaN as null}, "spacing_mm",
         "landmarks": {"schema", "names", "points_px", "points_mm"},
         "alignment": geometry.Alignment.to_dict(),
         "inference": measurement.Measurement.to_dict() | null}
    """
    row = results_row(record, update, radiograph=radiograph, landmarks=landmarks)
    names, points_px, measurement = update.names, np.asarray(update.points_px, dtype=np.float64), record.measurement()
    if points_px.shape != (len(names), 2):
        raise ValueError(f"{len(names)} names need points of shape ({len(names)}, 2), got {points_px.shape}")
    scale = None if spacing_mm is None else mm_per_px(spacing_mm)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "software": {"name": "kneealignment", "version": __version__},
        "intended_use": DISCLAIMER,
        "result": {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()},
        "spacing_mm": None if spacing_mm is None else [float(v) for v in spacing_mm],
        "landmarks": {"schema": record.kind, "names": list(names), "points_px": points_px.tolist(),
                      "points_mm": None if scale is None else (points_px * scale).tolist()},
        "alignment": update.alignment.to_dict(),
        "inference": None if measurement is None else measurement.to_dict(),
    }


def write_case_json(path: str | os.PathLike[str], document: Mapping[str, Any]) -> Path:
    """Write a :func:`case_document` as strict JSON (no NaN), atomically."""
    return write_atomic(path, json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
