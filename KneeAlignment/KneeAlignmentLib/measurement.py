"""Measurement results: dataclasses, JSON (schema-versioned), CSV rows, Slicer markups, text.

A :class:`Measurement` is what ``pipeline.measure`` returns for one radiograph: the
landmarks with their confidence, the alignment from ``geometry``, how side and kind were
decided, quality-control flags, the models that produced it and timings.
:func:`decide_side` is the one side rule of every entry point (pipeline, Slicer,
``kneealign angles``, evaluation); :func:`measure_points` measures a labelled point list
(an annotation, a corrected case) with it. It carries no
patient identifier; the input file name is stored only when a caller puts it in
``input_name`` (the CLI does so only with ``--keep-names``).

JSON layout (``to_dict``)::

    {"format": "kneealignment-measurement", "format_version": 1,
     "software": {"name": "kneealignment", "version": ...}, "intended_use": ...,
     "case_id", "input_name", "status", "reason", "qc_flags": [{"code", "message"}],
     "image": {"rows", "columns", "spacing_mm", "spacing_source"},
     "side": {"value", "source"}, "kind": {"value", "source"},
     "reference_points": {"names", "points_px", "confidence"} | null,
     "landmarks": {"schema", "schema_version", "names", "points_px", "points_mm",
                   "confidence"} | null,
     "alignment": geometry.Alignment.to_dict() | null,
     "fts_axis": {"source", "atfa_fts_landmarks_deg", "difference_deg", ...} | null,
     "evidence": {...}, "models": [{"role", "name", "version", "model_id", "provenance"}],
     "device", "precision", "timings_ms": {...}}

Shape legend: K landmarks; points are (x, y); ``*_px`` image pixels (centre of the
top-left pixel is (0, 0)), ``*_mm`` millimetres from that same origin, x * col_mm and
y * row_mm.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from . import DISCLAIMER, __version__, markups
from .bundle.known import PROVENANCES
from .errors import MarkupsError, MeasurementError, SchemaError
from .geometry import Alignment, atfa_angle_points_px, compute_alignment, infer_side, mm_per_px, readonly_array
from .schema import KINDS, LandmarkSchema, load_schema

if TYPE_CHECKING:
    from .imageio import Radiograph

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Landmarks",
    "Measurement",
    "MeasuredPoints",
    "ModelInfo",
    "QCFlag",
    "SIDE_RULE",
    "SideDecision",
    "csv_header",
    "decide_side",
    "format_measurement",
    "measure_points",
    "reference_point_names",
    "write_markups",
]

FORMAT = "kneealignment-measurement"
FORMAT_VERSION = 1
STATUSES = ("ok", "flagged")

_CSV_COLUMNS = (
    "case_id", "input_name", "status", "reason", "atfa_fts_deg", "label_fts", "atfa_fnts_deg", "label_fnts",
    "fts_source", "atfa_fts_landmarks_deg",
    "side", "side_source", "kind", "kind_source", "global_model", "local_model", "model_provenance",
    "software_version",
    "qc_flags", "total_ms",
)


@dataclass(frozen=True)
class QCFlag:
    """One quality-control finding: a short stable ``code`` and a message for people."""

    code: str
    message: str


@dataclass(frozen=True)
class ModelInfo:
    """Which model bundle produced part of a result.

    ``role``: "global", "local_preop" or "local_postop"; ``model_id`` is "name@version";
    ``provenance``: "release" (a release pinned in this software, ``bundle.known``),
    "user-supplied" (anything else: imported, trained in-house, changed) or "unknown"
    (read from a result written before provenance was recorded).
    """

    role: str
    name: str
    version: str
    provenance: str = "user-supplied"

    def __post_init__(self) -> None:
        if self.provenance not in PROVENANCES:
            raise ValueError(f"provenance must be one of {PROVENANCES}, got {self.provenance!r}")

    @property
    def model_id(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def label(self) -> str:
        """``model_id``, marked when the model is not a known release."""
        return self.model_id if self.provenance == "release" else f"{self.model_id} ({self.provenance})"


@dataclass(frozen=True, eq=False)
class Landmarks:
    """Predicted landmarks of one schema.

    Attributes:
        schema: "preop" or "postop"; schema_version: its version.
        names: (K,) schema landmark names, in schema order.
        points_px: (K, 2) float64 image pixels (x, y).
        confidence: (K,) float64 in [0, 1], the heatmap codec's decoding confidence.
    """

    schema: str
    schema_version: str
    names: tuple[str, ...]
    points_px: np.ndarray
    confidence: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(self.names))
        object.__setattr__(self, "points_px", readonly_array(self.points_px))
        object.__setattr__(self, "confidence", readonly_array(self.confidence))
        k = len(self.names)
        if self.points_px.shape != (k, 2) or self.confidence.shape != (k,):
            raise ValueError(f"{k} names need points (K, 2) and confidence (K,), got "
                             f"{self.points_px.shape} and {self.confidence.shape}")

    def points_mm(self, spacing_mm: tuple[float, float]) -> np.ndarray:
        """(K, 2) mm for a (row_mm, col_mm) spacing."""
        return self.points_px * mm_per_px(spacing_mm)


@dataclass(frozen=True, eq=False)
class Measurement:
    """The result of measuring one radiograph.

    Attributes:
        image_shape: (H, W) px. spacing_mm: (row_mm, col_mm) or None; spacing_source.
        side: "L"/"R" or None when undetermined; side_source: "DICOM ImageLaterality",
            "DICOM Laterality", "given", "detected" or "undetermined".
        kind: "preop"/"postop" or None; kind_source: "given", "detected",
            "only model available" or "undetermined".
        reference_points_px: (2, 2) the global stage's reference points (schema order), or
            None; reference_confidence: (2,) or None.
        landmarks: Landmarks, or None when the local stage could not run.
        alignment: geometry's Alignment, or None (flagged: geometry failed).
        qc_flags: every quality-control finding; none means status "ok".
        evidence: the numbers behind the side and kind decisions (mean confidences per
            orientation, implant-landmark confidence, metal fraction of the crop, and
            ``orientation_margin``: measured mean confidence minus the best other view's).
        models: the bundles whose networks ran for this result.
        timings_ms: milliseconds per stage ("global", "local", "orientation", "geometry", "total"); in a
            batch each stage's time is shared equally among its images.
        device, precision: where and how the networks ran ("float32" or "float16 autocast").
        case_id: a neutral name such as "case-3f2a9c1b7d04"; input_name: the input's file name,
            only when the caller chooses to keep it (file names often name patients).
        fts_axis: how the FTS axes were obtained (``axis_check``): "source" ("image",
            "image (femur)", "image (tibia)" or "landmarks"), the landmark-only aTFA by FTS
            as a cross-check ("atfa_fts_landmarks_deg", "difference_deg"), the scale and
            each bone's edge evidence; None when no alignment was measured or for
            results made without that check.
    """

    image_shape: tuple[int, int]
    spacing_mm: tuple[float, float] | None
    spacing_source: str
    side: str | None
    side_source: str
    kind: str | None
    kind_source: str
    reference_points_px: np.ndarray | None
    reference_confidence: np.ndarray | None
    landmarks: Landmarks | None
    alignment: Alignment | None
    qc_flags: tuple[QCFlag, ...]
    evidence: Mapping[str, float]
    models: tuple[ModelInfo, ...]
    timings_ms: Mapping[str, float]
    device: str
    precision: str
    software_version: str = __version__
    case_id: str | None = None
    input_name: str | None = None
    fts_axis: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_shape", tuple(int(v) for v in self.image_shape))
        if self.spacing_mm is not None:
            object.__setattr__(self, "spacing_mm", tuple(float(v) for v in self.spacing_mm))
        for name, shape in (("reference_points_px", (2, 2)), ("reference_confidence", (2,))):
            value = getattr(self, name)
            if value is not None:
                value = readonly_array(value)
                if value.shape != shape:
                    raise ValueError(f"{name} must have shape {shape}, got {value.shape}")
                object.__setattr__(self, name, value)
        object.__setattr__(self, "qc_flags", tuple(self.qc_flags))
        object.__setattr__(self, "models", tuple(self.models))
        object.__setattr__(self, "evidence", MappingProxyType({k: float(v) for k, v in self.evidence.items()}))
        object.__setattr__(self, "timings_ms", MappingProxyType({k: float(v) for k, v in self.timings_ms.items()}))
        if self.fts_axis is not None:  # a private JSON-clean copy
            object.__setattr__(self, "fts_axis", MappingProxyType(json.loads(json.dumps(dict(self.fts_axis),
                                                                                         allow_nan=False))))

    def __reduce__(self):
        # MappingProxyType does not pickle: a Measurement travels (from data-loader workers) as its plain
        # field values and is rebuilt through __init__, arrays read-only again
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return _rebuilt_measurement, ({k: dict(v) if isinstance(v, MappingProxyType) else v
                                       for k, v in values.items()},)

    @property
    def status(self) -> str:
        """'ok' when no QC flag was raised, else 'flagged'."""
        return "flagged" if self.qc_flags else "ok"

    @property
    def reason(self) -> str:
        """The first (most serious) flag's message, or '' when the status is ok."""
        return self.qc_flags[0].message if self.qc_flags else ""

    @property
    def flag_codes(self) -> tuple[str, ...]:
        return tuple(flag.code for flag in self.qc_flags)

    def model(self, role: str) -> ModelInfo | None:
        """The model that ran in ``role`` ("global", "local_preop", "local_postop"), or None."""
        return next((m for m in self.models if m.role == role), None)

    @property
    def local_model(self) -> ModelInfo | None:
        """The local model whose landmarks this result reports."""
        return self.model(f"local_{self.kind}") if self.kind else None

    # --- JSON ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict in the layout of the module docstring."""
        lm = self.landmarks
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "software": {"name": "kneealignment", "version": self.software_version},
            "intended_use": DISCLAIMER,
            "case_id": self.case_id,
            "input_name": self.input_name,
            "status": self.status,
            "reason": self.reason,
            "qc_flags": [dataclasses.asdict(flag) for flag in self.qc_flags],
            "image": {"rows": self.image_shape[0], "columns": self.image_shape[1],
                      "spacing_mm": None if self.spacing_mm is None else list(self.spacing_mm),
                      "spacing_source": self.spacing_source},
            "side": {"value": self.side, "source": self.side_source},
            "kind": {"value": self.kind, "source": self.kind_source},
            "reference_points": None if self.reference_points_px is None else {
                "names": list(reference_point_names()),
                "points_px": self.reference_points_px.tolist(),
                "confidence": self.reference_confidence.tolist()},
            "landmarks": None if lm is None else {
                "schema": lm.schema, "schema_version": lm.schema_version, "names": list(lm.names),
                "points_px": lm.points_px.tolist(),
                "points_mm": None if self.spacing_mm is None else lm.points_mm(self.spacing_mm).tolist(),
                "confidence": lm.confidence.tolist()},
            "alignment": None if self.alignment is None else self.alignment.to_dict(),
            "fts_axis": None if self.fts_axis is None else json.loads(json.dumps(dict(self.fts_axis))),
            "evidence": dict(self.evidence),
            "models": [{"role": m.role, "name": m.name, "version": m.version, "model_id": m.model_id,
                        "provenance": m.provenance}
                       for m in self.models],
            "device": self.device,
            "precision": self.precision,
            "timings_ms": dict(self.timings_ms),
        }

    def to_json(self, indent: int | None = 2) -> str:
        """Strict JSON (no NaN) of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Measurement:
        """Inverse of :meth:`to_dict`; derived fields (status, reason, points_mm) are recomputed.

        Raises:
            MeasurementError: another format, an unsupported version, or missing or
                malformed fields.
        """
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise MeasurementError(f"not a {FORMAT} document")
        if data.get("format_version") != FORMAT_VERSION:
            raise MeasurementError(f"unsupported {FORMAT} format_version {data.get('format_version')!r}; "
                                     f"this version reads {FORMAT_VERSION}")
        try:
            image, ref, lm = data["image"], data["reference_points"], data["landmarks"]
            result = cls(
                image_shape=(image["rows"], image["columns"]),
                spacing_mm=image["spacing_mm"],
                spacing_source=image["spacing_source"],
                side=data["side"]["value"], side_source=data["side"]["source"],
                kind=data["kind"]["value"], kind_source=data["kind"]["source"],
                reference_points_px=None if ref is None else ref["points_px"],
                reference_confidence=None if ref is None else ref["confidence"],
                landmarks=None if lm is None else Landmarks(lm["schema"], lm["schema_version"], lm["names"],
                                                            lm["points_px"], lm["confidence"]),
                alignment=None if data["alignment"] is None else _alignment_from_dict(data["alignment"]),
                qc_flags=tuple(QCFlag(f["code"], f["message"]) for f in data["qc_flags"]),
                evidence=data["evidence"],
                models=tuple(ModelInfo(m["role"], m["name"], m["version"], m.get("provenance", "unknown"))
                             for m in data["models"]),
                timings_ms=data["timings_ms"],
                device=data["device"],
                precision=data["precision"],
                software_version=data["software"]["version"],
                case_id=data["case_id"],
                input_name=data["input_name"],
                fts_axis=data.get("fts_axis"),  # absent in results written before the image check
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MeasurementError(f"malformed {FORMAT} document ({type(exc).__name__}: {exc})") from None
        if data.get("status") != result.status:
            raise MeasurementError(f"{FORMAT} document: status {data.get('status')!r} contradicts its QC flags")
        return result

    @classmethod
    def from_json(cls, text: str) -> Measurement:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MeasurementError(f"{FORMAT} document is not valid JSON ({exc})") from None
        except RecursionError:
            raise MeasurementError(f"{FORMAT} document is not valid: JSON nested too deeply") from None
        return cls.from_dict(data)

    # --- CSV ----------------------------------------------------------------------------

    def to_csv_row(self) -> list[str]:
        """One row per image, in the order of :func:`csv_header` (strings, for ``csv.writer``)."""
        a = self.alignment
        global_model, local_model = self.model("global"), self.local_model
        values = {
            "case_id": self.case_id, "input_name": self.input_name, "status": self.status, "reason": self.reason,
            "atfa_fts_deg": None if a is None else f"{a.atfa_fts_deg:.3f}",
            "label_fts": None if a is None else a.label_fts,
            "atfa_fnts_deg": None if a is None else f"{a.atfa_fnts_deg:.3f}",
            "label_fnts": None if a is None else a.label_fnts,
            "fts_source": None if self.fts_axis is None else self.fts_axis["source"],
            "atfa_fts_landmarks_deg": None if self.fts_axis is None
            else f"{self.fts_axis['atfa_fts_landmarks_deg']:.3f}",
            "side": self.side, "side_source": self.side_source, "kind": self.kind, "kind_source": self.kind_source,
            "global_model": global_model and global_model.model_id,
            "local_model": local_model and local_model.model_id,
            "model_provenance": _provenance(self.models),
            "software_version": self.software_version,
            "qc_flags": ";".join(self.flag_codes),
            "total_ms": f"{self.timings_ms['total']:.1f}" if "total" in self.timings_ms else None,
        }
        return ["" if values[c] is None else str(values[c]) for c in _CSV_COLUMNS]


def _rebuilt_measurement(values: dict) -> Measurement:
    return Measurement(**values)


def _provenance(models: Sequence[ModelInfo]) -> str | None:
    """One word for a result's models: the least trusted of them."""
    for word in ("user-supplied", "unknown", "release"):
        if any(m.provenance == word for m in models):
            return word
    return None


def csv_header() -> list[str]:
    """Column names of :meth:`Measurement.to_csv_row`."""
    return list(_CSV_COLUMNS)


@lru_cache(maxsize=None)
def reference_point_names() -> tuple[str, ...]:
    """Names of the global stage's two reference points, in order (one global model serves every schema)."""
    names = {tuple(p["name"] for p in load_schema(kind).definitions["reference_points"]["points"]) for kind in KINDS}
    if len(names) != 1:
        raise SchemaError(f"the schemas define different reference points: {sorted(names)}")
    return names.pop()


def _alignment_from_dict(data: Mapping[str, Any]) -> Alignment:
    names = {f.name for f in dataclasses.fields(Alignment)}
    if set(data) != names:
        raise ValueError(f"alignment fields differ from {sorted(names)}")
    return Alignment(**{k: readonly_array(v) if isinstance(v, list) else v for k, v in data.items()})


# --- the side rule and labelled point lists ----------------------------------------------

# The rule in one sentence, for --help texts and the README (decide_side explains it).
SIDE_RULE = ("a side given explicitly wins; else the image's laterality tag (DICOM); else it is detected. "
             "A given side that contradicts the tag is used and flagged side_conflict")
SIDE_FROM_ANATOMY = "anatomy (fibula is lateral)"  # the source of a side detected from a point list


@dataclass(frozen=True)
class SideDecision:
    """Which knee side to measure, where it came from, and the QC flags of that decision.

    ``side``: "L"/"R", or None: detect it (``source`` "detected"; the pipeline does so
    with its networks). ``source``: the given side's source ("given", "manifest"), the
    image's tag ("DICOM ImageLaterality", "DICOM Laterality"; "given" for an array made
    with a side), "detected" or :data:`SIDE_FROM_ANATOMY`.
    """

    side: str | None
    source: str
    flags: tuple[QCFlag, ...] = ()


def decide_side(given: str | None, radiograph: Radiograph | None = None, *, given_source: str = "given",
                points_px: Any = None, schema: LandmarkSchema | None = None) -> SideDecision:
    """The side rule of every entry point.

    1. A side given explicitly (``kneealign measure``/``angles`` ``--side``, the Slicer
       module's side choice, an evaluation manifest's ``side`` column) wins: the user
       knows the film, and a laterality tag can be wrong.
    2. Else the image's own laterality tag (DICOM ImageLaterality, else Laterality).
    3. Else detection: from the landmarks when ``points_px`` (K, 2) of ``schema`` are
       given (the fibula is lateral, ``geometry.infer_side``); otherwise the side is
       left None for the caller to detect (the pipeline, from the image).

    A given side that contradicts the tag is used, never silently: the decision carries
    a ``side_conflict`` flag naming both sides.

    Raises:
        ValueError: ``given`` not "L", "R" or None.
        GeometryError: detection from degenerate landmarks.
    """
    if given not in (None, "L", "R"):
        raise ValueError(f"side must be 'L', 'R' or None, got {given!r}")
    tag = radiograph.side if radiograph is not None else None
    tag_source = radiograph.side_source if tag is not None else ""
    if tag_source in ("ImageLaterality", "Laterality"):
        tag_source = f"DICOM {tag_source}"
    if given is not None:
        flags = () if tag in (None, given) else (
            QCFlag("side_conflict", f"the {given_source} side {given} contradicts the image's side {tag} "
                                    f"({tag_source}); {given} was used"),)
        return SideDecision(given, given_source, flags)
    if tag is not None:
        return SideDecision(tag, tag_source)
    if points_px is not None:
        return SideDecision(infer_side(points_px, schema), SIDE_FROM_ANATOMY)
    return SideDecision(None, "detected")


@dataclass(frozen=True, eq=False)
class MeasuredPoints:
    """A labelled point list measured: its points (K, 2) px in schema order, the side decision, the alignment."""

    schema: LandmarkSchema
    points_px: np.ndarray
    side: SideDecision
    alignment: Alignment


def measure_points(points_px: Any, schema: LandmarkSchema, *, side: str | None = None,
                   radiograph: Radiograph | None = None, spacing_mm: tuple[float, float] | None = None,
                   given_source: str = "given") -> MeasuredPoints:
    """Alignment of landmarks (K, 2) px of ``schema``, their side by :func:`decide_side`.

    Args:
        side: the side given explicitly, or None. radiograph: the image the points lie on
            (for its laterality tag), or None. spacing_mm: (row_mm, col_mm) or None.
        given_source: what gave ``side`` ("given", "manifest").

    Raises:
        GeometryError: landmarks from which no angle can be computed, or whose fibula
            contradicts the decided side.
    """
    decision = decide_side(side, radiograph, given_source=given_source, points_px=points_px, schema=schema)
    points = np.array(points_px, dtype=np.float64)
    return MeasuredPoints(schema, points, decision, compute_alignment(points, schema, decision.side, spacing_mm))


# --- Slicer markups -----------------------------------------------------------------------

def write_markups(measurement: Measurement, directory: str | Path, stem: str,
                  plane: markups.ImagePlane | None = None) -> Path:
    """Write ``<directory>/<stem>.mrk.json``: landmarks, the four axes and both aTFA angles.

    One file with several nodes (Slicer loads them all): a point list labelled with the
    schema names and descriptions, line nodes "femoral axis FTS", "tibial axis FTS",
    "femoral axis FNTS", "tibial axis FNTS", and angle nodes "aTFA FTS" and "aTFA FNTS"
    (when the alignment exists). ``plane`` maps image px to patient mm; default: the
    plain 2D geometry ``ImagePlane.identity(spacing)`` (unit spacing when unknown).

    Raises:
        MarkupsError: the measurement has no landmarks, or the file cannot be written.
    """
    if measurement.landmarks is None:
        raise MarkupsError(f"{stem}: the measurement has no landmarks to write")
    if plane is None:
        plane = markups.ImagePlane.identity(measurement.spacing_mm or (1.0, 1.0))
    lm = measurement.landmarks
    schema = load_schema(lm.schema)
    descriptions = [schema.landmarks[schema.index(n)].description for n in lm.names]
    nodes = [markups.fiducial_node("Landmarks", lm.names, plane.to_lps(lm.points_px), descriptions)]
    a = measurement.alignment
    if a is not None:
        for method in ("FTS", "FNTS"):
            femoral = getattr(a, f"femoral_axis_{method.lower()}_px")
            tibial = getattr(a, f"tibial_axis_{method.lower()}_px")
            nodes.append(markups.line_node(f"femoral axis {method}", plane.to_lps(femoral)))
            nodes.append(markups.line_node(f"tibial axis {method}", plane.to_lps(tibial)))
            nodes.append(markups.angle_node(f"aTFA {method}", plane.to_lps(atfa_angle_points_px(femoral, tibial))))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return markups.write_markups(directory / f"{stem}.mrk.json", nodes)


# --- text -------------------------------------------------------------------------------

def format_measurement(m: Measurement) -> str:
    """A short plain-text report of one result for people."""
    name = m.case_id or "image"
    if m.input_name:
        name += f" ({m.input_name})"
    side = {"R": "right knee (R)", "L": "left knee (L)", None: "side undetermined"}[m.side]
    lines = [f"{name}: {side} (side: {m.side_source}); {m.kind or 'kind undetermined'} (kind: {m.kind_source})"]
    a = m.alignment
    if a is None:
        lines.append("  aTFA: not measured")
    else:
        for method, value, label in (("FTS", a.atfa_fts_deg, a.label_fts), ("FNTS", a.atfa_fnts_deg, a.label_fnts)):
            lines.append(f"  aTFA {method:<4}  {round(value, 1) + 0.0:6.1f}°  {label}")
        if m.fts_axis is not None:
            lines.append(f"  FTS axes from {m.fts_axis['source']} (landmark shaft points alone: "
                         f"{round(m.fts_axis['atfa_fts_landmarks_deg'], 1) + 0.0:.1f}°)")
    lines.append(f"  status: {m.status}")
    lines += [f"    - {flag.code}: {flag.message}" for flag in m.qc_flags]
    used = [info.label for info in (m.model("global"), m.local_model) if info is not None]
    lines.append(f"  models: {', '.join(used) or 'none'}; kneealignment {m.software_version}")
    if "total" in m.timings_ms:
        lines.append(f"  time: {m.timings_ms['total']:.0f} ms on {m.device} ({m.precision})")
    return "\n".join(lines)
