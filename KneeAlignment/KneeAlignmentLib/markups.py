"""3D Slicer markups files (``.mrk.json``): read, write, and map image pixels to them.

Files are written the way Slicer 5.x's ``vtkMRMLMarkupsJsonStorageNode`` writes them
(same fields, same order, LPS coordinates in mm, schema ``markups-schema-v1.0.3``), so
Slicer opens them as point lists, lines and angles; every written file validates
against Slicer's JSON schema. Reading accepts our files and Slicer's, in LPS or RAS,
with one or several markups per file.

Geometry: Slicer keeps points in patient space (mm). A radiograph is one plane of that
space, described by :class:`ImagePlane`. Image pixels are (x = column, y = row) with
the centre of the top-left pixel at (0, 0); ``spacing_mm`` is (row_mm, col_mm).

Conventions in this module: ``positions_lps`` is (N, 3) in mm, LPS; ``points_px`` is
(N, 2) as (x, y) in pixels. A NaN row in ``positions_lps`` is a control point whose
position is not defined (Slicer's position status "undefined", "preview" or "missing").
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .atomicio import write_atomic
from .errors import MarkupsError
from .geometry import mm_per_px, readonly_array

__all__ = [
    "SCHEMA_URL",
    "MARKUPS_TYPES",
    "ImagePlane",
    "Display",
    "MarkupsMeasurement",
    "MarkupsNode",
    "fiducial_node",
    "line_node",
    "angle_node",
    "write_markups",
    "write_landmarks",
    "read_markups",
    "read_landmarks",
    "flip_ras_lps",
]

# The exact @schema Slicer 5.x writes (it kept "master" for compatibility with Slicer < 5.1).
SCHEMA_URL = (
    "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/"
    "Resources/Schema/markups-schema-v1.0.3.json#"
)
# Slicer accepts any minor/patch version of schema v1 (case-insensitive).
_ACCEPTED_SCHEMA = re.compile(r"markups-schema-v1\.[0-9]+\.[0-9]+\.json#*$", re.IGNORECASE)

MARKUPS_TYPES = ("Fiducial", "Line", "Angle", "Curve", "ClosedCurve", "Plane", "ROI")
_REQUIRED_POINTS = {"Line": 2, "Angle": 3}
_POSITION_STATUSES = ("defined", "preview", "undefined", "missing")
# Refused before parsing: a post-op landmark file of ours is about 0.15 MB with 181 points.
MAX_MARKUPS_BYTES = 16 * 2**20
MAX_CONTROL_POINTS = 10_000  # per markups node
_UNITS_TO_MM = {"mm": 1.0, "um": 1e-3}

# RAS <-> LPS: negate the first two axes (its own inverse). The one definition of the flip:
# this matrix where it composes with other linear maps, its diagonal in flip_ras_lps.
_RAS_LPS = np.diag([-1.0, -1.0, 1.0])
# A control point's orientation as Slicer writes it in LPS (identity in RAS).
_LPS_ORIENTATION = [-1.0, -0.0, -0.0, -0.0, -1.0, -0.0, 0.0, 0.0, 1.0]


def _as_points(points: Any, dim: int, name: str) -> np.ndarray:
    """Return ``points`` as a float64 (N, dim) array, or raise ValueError naming it."""
    array = np.asarray(points, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != dim:
        raise ValueError(f"{name} must have shape (N, {dim}), got {array.shape}")
    return array


def flip_ras_lps(positions: Any) -> np.ndarray:
    """(N, 3) RAS -> LPS, or LPS -> RAS (the same map): x and y negated."""
    return _as_points(positions, 3, "positions") * _RAS_LPS.diagonal()


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True, eq=False)
class ImagePlane:
    """Where a 2D image lies in patient space: pixels (x, y) <-> LPS millimetres.

    ``origin_lps`` (3,): LPS position (mm) of the centre of the top-left pixel.
    ``spacing_mm``: (row_mm, col_mm), the pixel size along y and along x.
    ``direction`` (3, 3): orthonormal; its columns are the LPS unit vectors of the
    column axis i (increasing x), the row axis j (increasing y) and the normal k.

    ``LPS = origin + direction[:, 0] * x * col_mm + direction[:, 1] * y * row_mm``.
    Constructor arguments that are not a valid plane raise ``ValueError``.
    """

    origin_lps: np.ndarray
    spacing_mm: tuple[float, float]
    direction: np.ndarray

    def __post_init__(self) -> None:
        origin = np.asarray(self.origin_lps, dtype=np.float64)
        if origin.shape != (3,) or not np.all(np.isfinite(origin)):
            raise ValueError(f"origin_lps must be 3 finite numbers, got {self.origin_lps!r}")
        try:
            spacing = tuple(float(s) for s in self.spacing_mm)
        except (TypeError, ValueError):
            spacing = ()
        if len(spacing) != 2 or not all(math.isfinite(s) and s > 0 for s in spacing):
            raise ValueError(
                f"spacing_mm must be two positive numbers (row_mm, col_mm), got {self.spacing_mm!r}"
            )
        direction = np.asarray(self.direction, dtype=np.float64)
        if direction.shape != (3, 3) or not np.all(np.isfinite(direction)):
            raise ValueError(f"direction must be a finite 3x3 matrix, got shape {direction.shape}")
        if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-6):
            raise ValueError("direction must be orthonormal (columns: unit column axis, row axis, normal)")
        object.__setattr__(self, "origin_lps", readonly_array(origin))
        object.__setattr__(self, "spacing_mm", spacing)
        object.__setattr__(self, "direction", readonly_array(direction))

    @classmethod
    def identity(cls, spacing_mm: tuple[float, float] = (1.0, 1.0)) -> ImagePlane:
        """Slicer's geometry for a plain 2D image (PNG, DICOM DX): origin 0, axes L and P.

        Pixel (x, y) lands at LPS (x * col_mm, y * row_mm, 0), i.e. IJK-to-RAS is
        diag(-col_mm, -row_mm, 1) as Slicer shows it.
        """
        return cls(origin_lps=np.zeros(3), spacing_mm=spacing_mm, direction=np.eye(3))

    @classmethod
    def from_ijk_to_ras(cls, matrix: Any) -> ImagePlane:
        """Plane of slice k = 0 of a Slicer volume, from its (4, 4) IJK-to-RAS matrix.

        (``volumeNode.GetIJKToRASMatrix(m)``, as a nested list or array.) Columns 0 and 1
        give the column and row axes with their spacing; column 2 the normal.
        """
        m = np.asarray(matrix, dtype=np.float64)
        if m.shape != (4, 4) or not np.all(np.isfinite(m)):
            raise ValueError(f"IJK-to-RAS must be a finite 4x4 matrix, got shape {m.shape}")
        if not np.allclose(m[3], [0.0, 0.0, 0.0, 1.0]):
            raise ValueError(f"IJK-to-RAS must be affine (last row 0 0 0 1), got {m[3].tolist()}")
        lps = _RAS_LPS @ m[:3]  # (3, 4): scaled axes and origin in LPS
        lengths = np.linalg.norm(lps[:, :3], axis=0)
        if np.any(lengths <= 0):
            raise ValueError("IJK-to-RAS has a zero-length axis")
        return cls(
            origin_lps=lps[:, 3],
            spacing_mm=(float(lengths[1]), float(lengths[0])),
            direction=lps[:, :3] / lengths,
        )

    @property
    def _steps_mm(self) -> np.ndarray:
        """(2,) mm per pixel along x and along y."""
        return mm_per_px(self.spacing_mm)

    def to_lps(self, points_px: Any) -> np.ndarray:
        """(N, 2) pixels (x, y) -> (N, 3) LPS mm on the plane. NaN rows stay NaN."""
        points_px = _as_points(points_px, 2, "points_px")
        return self.origin_lps + (points_px * self._steps_mm) @ self.direction[:, :2].T

    def to_px(self, points_lps: Any) -> np.ndarray:
        """(N, 3) LPS mm -> (N, 2) pixels (x, y) of their orthogonal projection on the plane."""
        offsets = _as_points(points_lps, 3, "points_lps") - self.origin_lps
        return (offsets @ self.direction[:, :2]) / self._steps_mm

    def off_plane_mm(self, points_lps: Any) -> np.ndarray:
        """(N, 3) LPS mm -> (N,) signed distance (mm) from the plane along its normal."""
        offsets = _as_points(points_lps, 3, "points_lps") - self.origin_lps
        return offsets @ self.direction[:, 2]


# ------------------------------------------------------------------------------ nodes


def _check_rgb(color: Any, name: str) -> tuple[float, float, float]:
    rgb = tuple(float(c) for c in color)
    if len(rgb) != 3 or not all(0.0 <= c <= 1.0 for c in rgb):  # NaN fails the range too
        raise ValueError(f"{name} must be 3 numbers in 0..1 (RGB), got {color!r}")
    return rgb  # type: ignore[return-value]


@dataclass(frozen=True)
class Display:
    """How Slicer draws one markups node.

    ``color``: RGB in 0..1. Slicer draws control points in the *selected* colour
    (points are selected by default), so this sets both ``color`` and ``selectedColor``.
    ``glyph_scale``, ``text_scale``: glyph and label size as a percentage of the view
    height (Slicer's relative sizing), so labels keep a readable on-screen size however
    many pixels the radiograph has (a 2000-pixel film fits the view at these sizes).
    """

    color: tuple[float, float, float] = (1.0, 0.5, 0.5)
    glyph_scale: float = 1.5
    text_scale: float = 2.5
    point_labels_visible: bool = True
    properties_label_visible: bool = False
    opacity: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "color", _check_rgb(self.color, "color"))
        for name in ("glyph_scale", "text_scale"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {getattr(self, name)!r}")
            object.__setattr__(self, name, value)
        if not 0.0 <= float(self.opacity) <= 1.0:
            raise ValueError(f"opacity must be in 0..1, got {self.opacity!r}")
        object.__setattr__(self, "opacity", float(self.opacity))


# Slicer's own per-type habits: point lists show point labels; lines and angles show
# their name and measurement instead.
_FIDUCIAL_DISPLAY = Display()
_LINE_DISPLAY = Display(color=(0.2, 0.8, 1.0), point_labels_visible=False, properties_label_visible=True)
_ANGLE_DISPLAY = Display(color=(1.0, 0.85, 0.2), point_labels_visible=False, properties_label_visible=True)


@dataclass(frozen=True)
class MarkupsMeasurement:
    """One entry of a node's ``measurements`` (e.g. a line's length, an angle's value).

    ``value`` is None where Slicer stores no value (measurement not computable).
    """

    name: str
    value: float | None
    units: str = ""
    print_format: str = ""
    enabled: bool = True


@dataclass(frozen=True, eq=False)
class MarkupsNode:
    """One Slicer markups node: its type, name and control points.

    ``positions_lps`` (N, 3): mm, LPS; a NaN row is a point without a defined position.
    ``labels``, ``descriptions``: N strings each (``descriptions`` may be left empty).
    Arguments that do not fit together raise ``ValueError``.
    """

    type: str
    name: str
    labels: tuple[str, ...]
    positions_lps: np.ndarray
    descriptions: tuple[str, ...] = ()
    measurements: tuple[MarkupsMeasurement, ...] = ()
    display: Display = field(default_factory=Display)
    locked: bool = False

    def __post_init__(self) -> None:
        if self.type not in MARKUPS_TYPES:
            raise ValueError(f"type must be one of {MARKUPS_TYPES}, got {self.type!r}")
        positions = _as_points(self.positions_lps, 3, "positions_lps")
        finite = np.isfinite(positions)
        undefined = np.isnan(positions).all(axis=1)
        if not np.all(finite.all(axis=1) | undefined):
            raise ValueError("positions_lps rows must be all finite, or all NaN for an undefined point")
        labels = tuple(self.labels)
        descriptions = tuple(self.descriptions) or ("",) * len(labels)
        if len(labels) != len(positions) or len(descriptions) != len(positions):
            raise ValueError(
                f"{len(positions)} positions need as many labels and descriptions, "
                f"got {len(labels)} labels and {len(descriptions)} descriptions"
            )
        if not all(isinstance(s, str) for s in labels + descriptions):
            raise ValueError("labels and descriptions must be strings")
        object.__setattr__(self, "positions_lps", readonly_array(positions))
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "descriptions", descriptions)
        object.__setattr__(self, "measurements", tuple(self.measurements))

    @property
    def defined(self) -> np.ndarray:
        """(N,) bool: whether each control point has a defined position."""
        return ~np.isnan(self.positions_lps[:, 0])

    def measurement(self, name: str) -> MarkupsMeasurement:
        """The measurement called ``name``; KeyError if the node has none."""
        for item in self.measurements:
            if item.name == name:
                return item
        raise KeyError(name)


def fiducial_node(
    name: str,
    labels: Sequence[str],
    positions_lps: Any,
    descriptions: Sequence[str] = (),
    *,
    display: Display = _FIDUCIAL_DISPLAY,
) -> MarkupsNode:
    """A point list (Slicer type "Fiducial"), e.g. landmarks labelled with schema names."""
    return MarkupsNode("Fiducial", name, tuple(labels), positions_lps, tuple(descriptions), display=display)


def _default_labels(name: str, count: int) -> tuple[str, ...]:
    return tuple(f"{name}-{i + 1}" for i in range(count))  # Slicer's label format "%N-%d"


def line_node(
    name: str,
    positions_lps: Any,
    labels: Sequence[str] | None = None,
    *,
    display: Display = _LINE_DISPLAY,
) -> MarkupsNode:
    """A line through two points (2, 3), with its length measurement as Slicer stores it."""
    positions = _as_points(positions_lps, 3, "positions_lps")
    if len(positions) != 2:
        raise ValueError(f"a line needs 2 control points, got {len(positions)}")
    length = float(np.linalg.norm(positions[1] - positions[0]))
    value = length if math.isfinite(length) else None
    # Slicer's default length display format (unit node "mm").
    measurement = MarkupsMeasurement("length", value, "mm", "%-#4.4g%s")
    labels = _default_labels(name, 2) if labels is None else tuple(labels)
    return MarkupsNode("Line", name, labels, positions, measurements=(measurement,), display=display)


def _angle_deg(positions: np.ndarray) -> float | None:
    """Unsigned angle (degrees, 0..180) at the vertex positions[1], as Slicer computes it."""
    first, second = positions[0] - positions[1], positions[2] - positions[1]
    norms = np.linalg.norm(first), np.linalg.norm(second)
    if not all(math.isfinite(n) and n > 1e-12 for n in norms):
        return None
    cosine = float(np.dot(first, second) / (norms[0] * norms[1]))
    return math.degrees(math.acos(min(1.0, max(-1.0, cosine))))


def angle_node(
    name: str,
    positions_lps: Any,
    labels: Sequence[str] | None = None,
    *,
    display: Display = _ANGLE_DISPLAY,
) -> MarkupsNode:
    """An angle from three points (3, 3), vertex in the middle, with its measurement.

    The stored value is the unsigned angle between the two arms (degrees, 0..180),
    which is what Slicer shows; signed clinical angles belong to ``geometry``.
    """
    positions = _as_points(positions_lps, 3, "positions_lps")
    if len(positions) != 3:
        raise ValueError(f"an angle needs 3 control points, got {len(positions)}")
    measurement = MarkupsMeasurement("angle", _angle_deg(positions), "deg", "%3.1f%s")
    labels = _default_labels(name, 3) if labels is None else tuple(labels)
    return MarkupsNode("Angle", name, labels, positions, measurements=(measurement,), display=display)


# ---------------------------------------------------------------------------- writing


def _display_json(display: Display) -> dict[str, Any]:
    """Slicer's full display block (field order as Slicer writes it)."""
    color = list(display.color)
    return {
        "visibility": True,
        "opacity": float(display.opacity),
        "color": color,
        "selectedColor": color,
        "activeColor": [0.4, 1.0, 0.0],
        "propertiesLabelVisibility": bool(display.properties_label_visible),
        "pointLabelsVisibility": bool(display.point_labels_visible),
        "textScale": display.text_scale,
        "glyphType": "Sphere3D",
        "glyphScale": display.glyph_scale,
        "glyphSize": 5.0,
        "useGlyphScale": True,
        "sliceProjection": False,
        "sliceProjectionUseFiducialColor": True,
        "sliceProjectionOutlinedBehindSlicePlane": False,
        "sliceProjectionColor": [1.0, 1.0, 1.0],
        "sliceProjectionOpacity": 0.6,
        "lineThickness": 0.2,
        "lineColorFadingStart": 1.0,
        "lineColorFadingEnd": 10.0,
        "lineColorFadingSaturation": 1.0,
        "lineColorFadingHueOffset": 0.0,
        "handlesInteractive": False,
        "translationHandleVisibility": True,
        "rotationHandleVisibility": True,
        "scaleHandleVisibility": True,
        "interactionHandleScale": 3.0,
        "snapMode": "toVisibleSurface",
    }


def _control_point_json(index: int, node: MarkupsNode) -> dict[str, Any]:
    point: dict[str, Any] = {
        "id": str(index + 1),
        "label": node.labels[index],
        "description": node.descriptions[index],
        "associatedNodeID": "",
    }
    defined = bool(node.defined[index])
    # Slicer writes "position": "" for an undefined point, which its own schema rejects;
    # leaving the position out reads back identically and stays valid.
    if defined:
        point["position"] = [float(v) for v in node.positions_lps[index]]
    point["orientation"] = list(_LPS_ORIENTATION)
    point["selected"] = True
    point["locked"] = False
    point["visibility"] = True
    point["positionStatus"] = "defined" if defined else "undefined"
    return point


def _measurement_json(item: MarkupsMeasurement) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": item.name, "enabled": bool(item.enabled)}
    if item.value is not None:
        entry["value"] = float(item.value)
    if item.units:
        entry["units"] = item.units
    if item.print_format:
        entry["printFormat"] = item.print_format
    return entry


def _markup_json(node: MarkupsNode) -> dict[str, Any]:
    return {
        "type": node.type,
        "name": node.name,  # Slicer names the loaded node from this (else from the file name)
        "coordinateSystem": "LPS",
        "coordinateUnits": "mm",
        "locked": bool(node.locked),
        "fixedNumberOfControlPoints": False,
        "labelFormat": "%N-%d",
        "lastUsedControlPointNumber": len(node.labels),
        "controlPoints": [_control_point_json(i, node) for i in range(len(node.labels))],
        "measurements": [_measurement_json(m) for m in node.measurements],
        "display": _display_json(node.display),
    }


def _write_atomic(path: Path, text: str) -> None:
    try:
        write_atomic(path, text)
    except OSError as exc:
        raise MarkupsError(f"{path.name}: cannot write markups file ({exc.strerror or exc})") from exc


def write_markups(path: str | os.PathLike[str], nodes: MarkupsNode | Iterable[MarkupsNode]) -> Path:
    """Write one node, or several nodes, into one ``.mrk.json`` file; return its path.

    Slicer saves one node per file and names the node after the file, so one node per
    file is the usual choice; Slicer also loads every node of a multi-node file. The
    file is replaced atomically. Raises ``MarkupsError`` if a node cannot be stored
    (a line without 2 points, an angle without 3) or the file cannot be written.
    """
    path = Path(path)
    items = (nodes,) if isinstance(nodes, MarkupsNode) else tuple(nodes)
    if not items:
        raise MarkupsError(f"{path.name}: no markups nodes to write")
    for node in items:
        required = _REQUIRED_POINTS.get(node.type)
        if required is not None and len(node.labels) != required:
            raise MarkupsError(
                f"{path.name}: {node.type} node {node.name!r} needs {required} control points, "
                f"has {len(node.labels)}"
            )
    document = {"@schema": SCHEMA_URL, "markups": [_markup_json(node) for node in items]}
    # Slicer writes 4-space indented JSON; numbers as shortest round-trip decimals.
    text = json.dumps(document, indent=4, ensure_ascii=False, allow_nan=False) + "\n"
    _write_atomic(path, text)
    return path


def write_landmarks(
    path: str | os.PathLike[str],
    names: Sequence[str],
    points_px: Any,
    plane: ImagePlane = ImagePlane.identity(),
    *,
    descriptions: Sequence[str] = (),
    node_name: str = "Landmarks",
    display: Display = _FIDUCIAL_DISPLAY,
) -> Path:
    """Write landmarks (N, 2) px as one labelled point list; the inverse of :func:`read_landmarks`.

    ``names`` label the points (schema landmark names, unique); NaN rows are written as
    undefined points.
    """
    names = tuple(names)
    duplicates = sorted(n for n, c in Counter(names).items() if c > 1)
    if duplicates:
        raise ValueError(f"landmark names must be unique, repeated: {_listing(duplicates)}")
    points_px = _as_points(points_px, 2, "points_px")
    if len(points_px) != len(names):
        raise ValueError(f"{len(names)} names but {len(points_px)} points")
    node = fiducial_node(node_name, names, plane.to_lps(points_px), descriptions, display=display)
    return write_markups(path, node)


# ---------------------------------------------------------------------------- reading


def _fail(where: str, problem: str) -> MarkupsError:
    return MarkupsError(f"{where}: {problem}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _get(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any, where: str) -> Any:
    """``obj[key]`` checked against ``kind``; ``default`` when absent."""
    if key not in obj:
        return default
    value = obj[key]
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise _fail(where, f"'{key}' must be {names}, got {type(value).__name__}")
    return value


def _finite_number(value: Any, where: str, what: str) -> float:
    if not _is_number(value) or not math.isfinite(value):
        raise _fail(where, f"{what} must be a finite number, got {value!r}")
    return float(value)


def _units_code(value: Any, where: str, key: str) -> str:
    """A units field: plain string, or a coded entry [code value, scheme, meaning]."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and len(value) == 3 and all(isinstance(v, str) for v in value):
        return value[0]
    raise _fail(where, f"'{key}' must be a string or [code, scheme, meaning], got {value!r}")


def _parse_control_points(items: list[Any], to_lps: np.ndarray, where: str) -> tuple[list, list, np.ndarray]:
    if len(items) > MAX_CONTROL_POINTS:
        raise _fail(where, f"{len(items)} control points, more than the {MAX_CONTROL_POINTS} a markups node may "
                           f"have here")
    labels, descriptions = [], []
    positions = np.full((len(items), 3), np.nan)
    for index, item in enumerate(items):
        here = f"{where}.controlPoints[{index}]"
        if not isinstance(item, dict):
            raise _fail(here, "control point is not a JSON object")
        label = _get(item, "label", str, "", here)
        labels.append(label)
        descriptions.append(_get(item, "description", str, "", here))
        status = _get(item, "positionStatus", str, "defined", here)
        if status not in _POSITION_STATUSES:
            raise _fail(here, f"unknown positionStatus {status!r} (expected one of {_POSITION_STATUSES})")
        if status != "defined":
            continue  # Slicer writes "position": "" here; the coordinates must not be used
        position = item.get("position")
        if not (isinstance(position, list) and len(position) == 3):
            raise _fail(here, f"control point {label!r} is defined but its position is not 3 numbers")
        xyz = [_finite_number(v, here, f"position of control point {label!r}") for v in position]
        positions[index] = to_lps @ np.array(xyz)
    return labels, descriptions, positions


def _parse_measurements(items: list[Any], where: str) -> tuple[MarkupsMeasurement, ...]:
    parsed = []
    for index, item in enumerate(items):
        here = f"{where}.measurements[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise _fail(here, "measurement must be an object with a string 'name'")
        value = item.get("value")
        parsed.append(
            MarkupsMeasurement(
                name=item["name"],
                value=None if value is None else _finite_number(value, here, "'value'"),
                units=_units_code(item["units"], here, "units") if "units" in item else "",
                print_format=_get(item, "printFormat", str, "", here),
                enabled=_get(item, "enabled", bool, True, here),
            )
        )
    return tuple(parsed)


def _parse_display(item: dict[str, Any], where: str) -> Display:
    defaults = Display()
    # Points show in selectedColor (they are selected by default), so that is "the" colour.
    color = item.get("selectedColor", item.get("color", defaults.color))
    try:
        return Display(
            color=tuple(color),
            glyph_scale=_get(item, "glyphScale", (int, float), defaults.glyph_scale, where),
            text_scale=_get(item, "textScale", (int, float), defaults.text_scale, where),
            point_labels_visible=_get(
                item, "pointLabelsVisibility", bool, defaults.point_labels_visible, where
            ),
            properties_label_visible=_get(
                item, "propertiesLabelVisibility", bool, defaults.properties_label_visible, where
            ),
            opacity=_get(item, "opacity", (int, float), defaults.opacity, where),
        )
    except (TypeError, ValueError) as exc:
        raise _fail(where, f"invalid display properties ({exc})") from exc


def _parse_markup(item: Any, where: str, default_name: str) -> MarkupsNode:
    if not isinstance(item, dict):
        raise _fail(where, "markup is not a JSON object")
    kind = item.get("type")
    if kind not in MARKUPS_TYPES:
        raise _fail(where, f"'type' must be one of {MARKUPS_TYPES}, got {kind!r}")
    system = _get(item, "coordinateSystem", str, "LPS", where)
    if system not in ("LPS", "RAS"):
        raise _fail(where, f"coordinateSystem must be 'LPS' or 'RAS', got {system!r}")
    units = _units_code(item.get("coordinateUnits", "mm"), where, "coordinateUnits")
    if units not in _UNITS_TO_MM:
        raise _fail(where, f"coordinateUnits must be 'mm' or 'um', got {units!r}")
    to_lps = _UNITS_TO_MM[units] * (_RAS_LPS if system == "RAS" else np.eye(3))
    points = _get(item, "controlPoints", list, [], where)
    labels, descriptions, positions = _parse_control_points(points, to_lps, where)
    return MarkupsNode(
        type=kind,
        name=_get(item, "name", str, "", where) or default_name,
        labels=tuple(labels),
        positions_lps=positions,
        descriptions=tuple(descriptions),
        measurements=_parse_measurements(_get(item, "measurements", list, [], where), where),
        display=_parse_display(_get(item, "display", dict, {}, f"{where}.display"), f"{where}.display"),
        locked=_get(item, "locked", bool, False, where),
    )


def _node_name_from_file(path: Path) -> str:
    name = path.name
    for suffix in (".mrk.json", ".json"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_markups(path: str | os.PathLike[str]) -> list[MarkupsNode]:
    """All markups nodes of a ``.mrk.json`` file (ours or Slicer's, LPS or RAS), in file order.

    Positions come back in LPS mm whatever the file's coordinate system and units.
    A node without a name is named after the file, as Slicer does. Raises
    ``MarkupsError`` naming the file and the problem for anything unreadable.
    """
    path = Path(path)
    where = path.name
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_MARKUPS_BYTES + 1)
        if len(data) > MAX_MARKUPS_BYTES:
            raise _fail(where, f"markups file larger than {MAX_MARKUPS_BYTES // 2**20} MB; landmark files are far "
                               f"smaller")
        text = data.decode("utf-8-sig")
    except OSError as exc:
        raise _fail(where, f"cannot read markups file ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise _fail(where, "not a markups file (not UTF-8 text)") from exc
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _fail(where, f"not a JSON file ({exc.msg} at line {exc.lineno})") from exc
    except RecursionError:
        raise _fail(where, "not a markups file (JSON nested too deeply)") from None
    if not isinstance(document, dict):
        raise _fail(where, "not a markups file (top level is not a JSON object)")
    schema = document.get("@schema")
    if not isinstance(schema, str):
        raise _fail(where, "not a markups file (no '@schema')")
    if not _ACCEPTED_SCHEMA.search(schema.strip()):
        raise _fail(where, f"'@schema' {schema!r} is not Slicer's markups schema v1.x")
    markups = document.get("markups")
    if not isinstance(markups, list) or not markups:
        raise _fail(where, "no 'markups' array, or it is empty")
    default_name = _node_name_from_file(path)
    return [_parse_markup(item, f"{where}: markups[{i}]", default_name) for i, item in enumerate(markups)]


def _listing(items: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(repr(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _landmark_node(
    nodes: list[MarkupsNode], names: tuple[str, ...], node_name: str | None, where: str
) -> MarkupsNode:
    fiducials = [node for node in nodes if node.type == "Fiducial"]
    if node_name is not None:
        chosen = [node for node in fiducials if node.name == node_name]
        if len(chosen) != 1:
            raise _fail(where, f"{'no' if not chosen else 'more than one'} point list named {node_name!r}")
        return chosen[0]
    if len(fiducials) == 1:
        return fiducials[0]
    wanted = set(names)
    candidates = [node for node in fiducials if wanted & set(node.labels)]
    if not candidates:
        raise _fail(where, "no point list (Fiducial) with landmark labels")
    if len(candidates) > 1:
        listed = _listing([node.name for node in candidates])
        raise _fail(where, f"several point lists carry landmark labels ({listed}); pass node_name")
    return candidates[0]


def read_landmarks(
    path: str | os.PathLike[str],
    names: Sequence[str],
    plane: ImagePlane = ImagePlane.identity(),
    *,
    node_name: str | None = None,
    tolerance_mm: float = 0.5,
) -> np.ndarray:
    """Landmarks (N, 2) px as (x, y), ordered as ``names``, from a markups file.

    ``names``: the schema's landmark names; the point list whose labels they are is
    used (the only point list in the file, or the one named ``node_name``). ``plane``
    maps the file's patient coordinates to the image's pixels. Raises ``MarkupsError``
    naming unknown, duplicated or missing labels (points with an undefined, preview or
    missing position count as missing), and points farther than ``tolerance_mm`` from
    the image plane.
    """
    where = Path(path).name
    node = _landmark_node(read_markups(path), tuple(names), node_name, where)
    return landmarks_px(node, names, plane, tolerance_mm=tolerance_mm, where=where)


def landmarks_px(
    node: MarkupsNode,
    names: Sequence[str],
    plane: ImagePlane = ImagePlane.identity(),
    *,
    tolerance_mm: float = 0.5,
    where: str | None = None,
) -> np.ndarray:
    """Landmarks (N, 2) px as (x, y), ordered as ``names``, from a point list node.

    The checks of :func:`read_landmarks`, for a node from a file or built from a Slicer
    point list (undefined positions as NaN rows); ``where`` names the source in errors.
    """
    names = tuple(names)
    if len(set(names)) != len(names):
        raise ValueError("names must be unique")
    subject = f"point list {node.name!r}"
    where = where or subject
    counts = Counter(node.labels)
    index = {label: i for i, label in enumerate(node.labels)}
    known = set(names)
    unknown = [label for label in counts if label not in known]
    duplicated = [label for label, count in counts.items() if count > 1]
    missing = [n for n in names if n not in index or not node.defined[index[n]]]
    problems = [
        f"{what} {_listing(items)}"
        for what, items in (
            ("unknown labels", unknown),
            ("duplicated labels", duplicated),
            ("missing landmarks", missing),
        )
        if items
    ]
    if problems:
        raise _fail(where, ("" if where == subject else f"{subject}: ") + "; ".join(problems))
    positions_lps = node.positions_lps[[index[n] for n in names]]
    off = np.abs(plane.off_plane_mm(positions_lps))
    outside = [n for n, distance in zip(names, off, strict=True) if distance > tolerance_mm]
    if outside:
        raise _fail(
            where,
            f"points not in the image plane (more than {tolerance_mm} mm off, up to {off.max():.3g} mm): "
            f"{_listing(outside)}",
        )
    return plane.to_px(positions_lps)
