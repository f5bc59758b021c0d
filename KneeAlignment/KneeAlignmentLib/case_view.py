"""What a measured knee looks like as markups: the nodes the Slicer module shows, described here.

The Slicer layer only mirrors these descriptions into MRML nodes (and a ``.mrk.json``
file can hold the same nodes), so every choice of what is drawn, how it is named and
coloured, and where it lies is made and tested here, without Slicer.

* The **landmarks**: one point list, labelled with the schema's names and described by
  anatomy. It is the one node the user edits.
* **Outlines**, one open curve per schema contour, in its group's colour, through the
  landmarks, with the control points themselves hidden. Slicer colours all control
  points of one markups node alike (``color`` for unselected and ``selectedColor`` for
  selected points; scalar colouring applies to curve lines only), so per-group colours
  cannot be had inside the single landmark list; coloured outlines that follow it are
  the closest faithful design.
* **Defining points** (derived, locked): the femoral and tibial shaft centres (midpoints
  of the cortex pairs), the femoral notch and the tibial spine centre.
* **Axes**: line nodes for the femoral and tibial axes, FTS and FNTS.
* **Angles**: one angle node per method whose value is the signed aTFA (valgus
  positive): the arms run along the femoral axis continued distally and along the
  tibial axis, and Slicer's oriented-signed mode turns about :func:`valgus_axis_ras`.
* The **summary**: :func:`format_alignment`, the plain-text table of the angles beside
  the view (``kneealign angles`` prints the same). Axis colours (:data:`AXIS_COLORS`)
  are shared with the overlay pictures.

Sizes are relative to the view height (Slicer's ``glyphScale``/``textScale`` in
percent), so they read the same on a 2000-pixel radiograph as on a small one.
Shape legend: ``points_px`` (K, 2) as (x, y) pixels; positions (N, 3) LPS mm.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from .errors import MarkupsError
from .geometry import Alignment, atfa_angle_points_px
from .manual_points import KIND as MANUAL, alignment_from_manual_points
from .markups import Display, ImagePlane, MarkupsNode, angle_node, fiducial_node, flip_ras_lps, landmarks_px, line_node
from .measurement import measure_points
from .schema import KINDS, LandmarkSchema, load_schema

__all__ = [
    "AXIS_COLORS",
    "DEFINING_DISPLAY",
    "LANDMARK_DISPLAY",
    "MANUAL_DISPLAY",
    "METHODS",
    "PLANE_TOLERANCE_MM",
    "CaseUpdate",
    "ViewNode",
    "defining_points",
    "derived_view",
    "format_alignment",
    "landmark_node",
    "read_points",
    "recompute",
    "valgus_axis_ras",
]

METHODS = ("FTS", "FNTS")
# Display colours of the axes (RGB 0..1), shared by the Slicer markups and the overlays.
AXIS_COLORS = MappingProxyType({"FTS": (1.0, 0.69, 0.0), "FNTS": (0.35, 0.75, 1.0)})
# Points farther than this from the radiograph's plane are refused rather than projected.
PLANE_TOLERANCE_MM = 0.5

# Sizes in percent of the view height. Landmarks are dense (134-181 on one knee), so
# their glyphs and labels are small; derived points and angles stand out.
LANDMARK_DISPLAY = Display(color=(1.0, 0.95, 0.6), glyph_scale=1.0, text_scale=1.5)
DEFINING_DISPLAY = Display(color=(1.0, 1.0, 1.0), glyph_scale=1.8, text_scale=1.8, point_labels_visible=False)
MANUAL_DISPLAY = dataclasses.replace(DEFINING_DISPLAY, point_labels_visible=True)  # the user places these by label
_OUTLINE = dict(glyph_scale=1.0, text_scale=1.5, point_labels_visible=False, opacity=0.9)
_AXIS = dict(glyph_scale=1.2, text_scale=2.0, point_labels_visible=False, properties_label_visible=False)
_ANGLE = dict(glyph_scale=1.2, text_scale=3.0, point_labels_visible=False, properties_label_visible=True)


@dataclass(frozen=True, eq=False)
class ViewNode:
    """One markups node to show, under a stable ``role`` by which the Slicer layer finds it again.

    Attributes:
        role: e.g. "Outline.FLC", "DefiningPoints", "Axis.femoral.FTS", "Angle.FTS".
        node: type, name, labels, LPS positions, descriptions, display, lock state.
        points_visible: False draws only the line or curve, not its control points.
        signed_axis_ras: (3,) for angle nodes: measure oriented-signed about this axis.
    """

    role: str
    node: MarkupsNode
    points_visible: bool = True
    signed_axis_ras: tuple[float, float, float] | None = None


def landmark_node(name: str, schema: LandmarkSchema, points_px: Any, plane: ImagePlane) -> MarkupsNode:
    """The editable point list: (K, 2) px in schema order, labelled and described by the schema."""
    points_px = np.asarray(points_px, dtype=np.float64)
    if points_px.shape != (len(schema), 2):
        raise ValueError(f"expected ({len(schema)}, 2) points for the {schema.kind} schema, got {points_px.shape}")
    descriptions = [lm.description for lm in schema.landmarks]
    return fiducial_node(name, schema.names, plane.to_lps(points_px), descriptions, display=LANDMARK_DISPLAY)


def defining_points(alignment: Alignment) -> tuple[tuple[str, ...], np.ndarray, tuple[str, ...]]:
    """(labels, (M, 2) px, descriptions) of the points the axes are drawn from.

    Shaft centres numbered from proximal (FSC1, TSC1); the notch and spine centre are the
    FNTS axes' distal femoral and proximal tibial ends.
    """
    femur, tibia = alignment.femoral_shaft_centres_px, alignment.tibial_shaft_centres_px
    labels = ([f"FSC{i + 1}" for i in range(len(femur))] + ["NOTCH", "SPINE"]
              + [f"TSC{i + 1}" for i in range(len(tibia))])
    descriptions = ([f"femoral shaft centre {i + 1} (FTS femoral axis)" for i in range(len(femur))]
                    + ["femoral notch (FNTS femoral axis)", "tibial spine centre (FNTS tibial axis)"]
                    + [f"tibial shaft centre {i + 1} (FTS tibial axis)" for i in range(len(tibia))])
    points = np.vstack([femur, alignment.femoral_axis_fnts_px[1], alignment.tibial_axis_fnts_px[0], tibia])
    return tuple(labels), points, tuple(descriptions)


def valgus_axis_ras(plane: ImagePlane, side: str) -> tuple[float, float, float]:
    """(3,) RAS unit axis about which a turn from the femoral to the tibial direction is valgus.

    In pixels (x right, y down) a right knee's lateral side is -x, so turning the distal
    direction laterally is a turn about +z = x cross y (about -z for a left knee). That
    z is the plane's column axis cross row axis in patient space; RAS and LPS differ by a
    rotation, which keeps cross products. Slicer's oriented-signed angle is positive
    when (arm1 x arm2) points along this axis.
    """
    if side not in ("L", "R"):
        raise ValueError(f"side must be 'L' or 'R', got {side!r}")
    normal_lps = np.cross(plane.direction[:, 0], plane.direction[:, 1])
    axis = flip_ras_lps(normal_lps[None])[0] * (1.0 if side == "R" else -1.0)
    return tuple(float(v) for v in axis)


def _outlines(case: str, schema: LandmarkSchema, points_lps: np.ndarray) -> list[ViewNode]:
    nodes = []
    for contour in schema.contours:
        code, group = contour["code"], schema.groups[contour["group"]]
        index = [i for i, name in enumerate(schema.names) if name.startswith(code)]
        display = Display(color=tuple(group["color"]), **_OUTLINE)
        node = MarkupsNode("Curve", f"{case} {group['label']} ({code})", tuple(schema.names[i] for i in index),
                           points_lps[index], display=display, locked=True)
        nodes.append(ViewNode(f"Outline.{code}", node, points_visible=False))
    return nodes


def derived_view(case: str, alignment: Alignment, plane: ImagePlane, *, schema: LandmarkSchema | None = None,
                 points_px: Any = None) -> tuple[ViewNode, ...]:
    """Every node computed from the landmarks (all locked): outlines, defining points, axes, angles.

    Args:
        case: prefix of the node names (the landmark list's name).
        alignment: the current alignment of the landmarks.
        plane: where the image lies in patient space.
        schema, points_px: the landmarks (K, 2) px and their schema, for the outlines and
            the defining points; None for manual points, which are themselves the
            defining points.
    """
    nodes: list[ViewNode] = []
    if schema is not None:
        nodes += _outlines(case, schema, plane.to_lps(np.asarray(points_px, dtype=np.float64)))
        labels, points, descriptions = defining_points(alignment)
        nodes.append(ViewNode("DefiningPoints", MarkupsNode(
            "Fiducial", f"{case} defining points", labels, plane.to_lps(points), descriptions,
            display=DEFINING_DISPLAY, locked=True)))
    axis = valgus_axis_ras(plane, alignment.side)
    for method in METHODS:
        color = AXIS_COLORS[method]
        femoral = getattr(alignment, f"femoral_axis_{method.lower()}_px")
        tibial = getattr(alignment, f"tibial_axis_{method.lower()}_px")
        for bone, ends in (("femoral", femoral), ("tibial", tibial)):
            node = line_node(f"{case} {bone} axis {method}", plane.to_lps(ends), display=Display(color=color, **_AXIS))
            nodes.append(ViewNode(f"Axis.{bone}.{method}", _locked(node)))
        label = getattr(alignment, f"label_{method.lower()}")
        node = angle_node(f"aTFA {method} {label}", plane.to_lps(atfa_angle_points_px(femoral, tibial)),
                          display=Display(color=color, **_ANGLE))
        nodes.append(ViewNode(f"Angle.{method}", _locked(node), signed_axis_ras=axis))
    return tuple(nodes)


def _locked(node: MarkupsNode) -> MarkupsNode:
    return dataclasses.replace(node, locked=True)


@dataclass(frozen=True, eq=False)
class CaseUpdate:
    """The result of :func:`recompute`: the landmarks as measured, the alignment, and the nodes to show.

    ``names``/``points_px``: (K,) labels and (K, 2) px of the points the angles came from
    (schema order for a schema, placed points only for manual mode).
    """

    kind: str
    names: tuple[str, ...]
    points_px: np.ndarray
    alignment: Alignment
    view: tuple[ViewNode, ...]


def recompute(landmarks: MarkupsNode, kind: str, side: str, plane: ImagePlane) -> CaseUpdate:
    """Angles and derived nodes from a point list's current positions: the live-correction step.

    No inference runs: the landmarks are read (any order; NaN rows are points without a
    position), checked against the schema (or the manual labels) and the image plane,
    measured with ``geometry``, and :func:`derived_view` describes what to redraw.

    Args:
        landmarks: the edited point list (LPS mm); its name prefixes the derived nodes.
        kind: "preop", "postop" or "manual".
        side: "L" or "R", as decided when the case was created (``measurement.decide_side``).
        plane: the radiograph's plane.

    Raises:
        MarkupsError: unknown, duplicated or missing labels, points off the image plane.
        GeometryError: landmarks from which no angle can be computed.
    """
    labels, points = read_points(landmarks, kind, plane)
    if kind == MANUAL:
        where = f"point list {landmarks.name!r}"
        alignment = alignment_from_manual_points(labels, points, side, plane.spacing_mm, where=where)
        placed = np.isfinite(points).all(axis=1)
        names = tuple(label for label, ok in zip(labels, placed) if ok)
        return CaseUpdate(kind, names, points[placed], alignment, derived_view(landmarks.name, alignment, plane))
    schema = load_schema(kind)
    alignment = measure_points(points, schema, side=side, spacing_mm=plane.spacing_mm).alignment
    view = derived_view(landmarks.name, alignment, plane, schema=schema, points_px=points)
    return CaseUpdate(kind, labels, points, alignment, view)


def read_points(landmarks: MarkupsNode, kind: str, plane: ImagePlane) -> tuple[tuple[str, ...], np.ndarray]:
    """(labels, (N, 2) px) of a point list, checked against the image plane (and the schema).

    Schema kinds: the schema's names and points in schema order (unknown, duplicated or
    missing labels raise). Manual: the list's own labels and points, NaN rows where a
    point is not placed yet (reported later, by label, by ``manual_points``).

    Raises:
        MarkupsError: label problems (schema kinds), points off the plane, an unknown kind.
    """
    where = f"point list {landmarks.name!r}"
    if kind == MANUAL:
        off = np.abs(plane.off_plane_mm(landmarks.positions_lps))  # NaN (unplaced) compares False
        outside = [label for label, distance in zip(landmarks.labels, off) if distance > PLANE_TOLERANCE_MM]
        if outside:
            raise MarkupsError(f"{where}: points not in the image plane (more than {PLANE_TOLERANCE_MM} mm off): "
                               + ", ".join(repr(label) for label in outside))
        return landmarks.labels, plane.to_px(landmarks.positions_lps)
    if kind not in KINDS:
        raise MarkupsError(f"{where}: unknown landmark kind {kind!r}; expected {', '.join((*KINDS, MANUAL))}")
    names = load_schema(kind).names
    return names, landmarks_px(landmarks, names, plane, tolerance_mm=PLANE_TOLERANCE_MM, where=where)


def format_alignment(alignment: Alignment) -> str:
    """A plain-text table of an Alignment for people (angles to 0.1 degree)."""
    side = {"R": "right", "L": "left"}[alignment.side]
    spacing = "pixel spacing known" if alignment.spacing_known else "pixel spacing unknown: lengths in px"
    rows = [
        ("aTFA, shaft axes (FTS)", _deg(alignment.atfa_fts_deg, alignment.label_fts)),
        ("aTFA, notch-spine axes (FNTS)", _deg(alignment.atfa_fnts_deg, alignment.label_fnts)),
        ("aLDFA (lateral distal femoral)", _deg(alignment.aldfa_deg)),
        ("MPTA (medial proximal tibial)", _deg(alignment.mpta_deg)),
        ("JLCA (+ converging medially)", _deg(alignment.jlca_deg)),
        ("Joint space, lateral (min)", _length(alignment.jsw_lateral_mm, alignment.jsw_lateral_px)),
        ("Joint space, medial (min)", _length(alignment.jsw_medial_mm, alignment.jsw_medial_px)),
        ("Femoral component alpha", _deg(alignment.femoral_component_alpha_deg, "medial; ideal ~96")),
        ("Tibial component beta", _deg(alignment.tibial_component_beta_deg, "medial; ideal 90")),
    ]
    rows = [(name, value) for name, value in rows if value is not None]
    width = max(len(name) for name, _ in rows)
    lines = [f"Knee alignment: {side} knee ({alignment.side}), {spacing}"]
    lines += [f"  {name:<{width}}  {value}" for name, value in rows]
    return "\n".join(lines)


def _deg(value: float | None, note: str = "") -> str | None:
    if value is None:
        return None
    value = round(value, 1) + 0.0  # + 0.0 turns -0.0 into 0.0
    return f"{value:6.1f}°  {note}".rstrip()  # fixed width: the decimal points line up


def _length(mm: float | None, px: float | None) -> str | None:
    if px is None:
        return None
    return f"{px:6.1f} px" if mm is None else f"{mm:6.1f} mm ({px:.1f} px)"
