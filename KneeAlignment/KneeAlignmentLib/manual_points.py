"""Manual mode: the few defining points a user places by hand instead of a landmark model.

Six points, placed in this order (Slicer's guided placement fills them one after the
other): two femoral shaft centres, the femoral notch, the tibial spine centre, two tibial
shaft centres. More shaft centres may be added with the same label prefix and any number
(``femoral_shaft_centre_3``); the FTS axes are fitted through all of them.
:func:`next_instruction` is what the user is told to place next.
:func:`alignment_from_manual_points` turns the labelled points into the same aTFA (FTS and
FNTS) as the landmark path, through :func:`geometry.atfa_from_defining_points`.

Labels follow the schema's definition names (``femoral_shaft_centres``, ``femoral_notch``,
``tibial_spine_centre``, ``tibial_shaft_centres``). Shape legend: ``points_px`` (N, 2) as
(x, y) pixels; a NaN row is a point not placed yet.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import MarkupsError
from .geometry import Alignment, atfa_from_defining_points

__all__ = ["KIND", "MANUAL_POINTS", "ManualPoint", "alignment_from_manual_points", "next_instruction",
           "split_manual_points"]

KIND = "manual"  # the "schema" a manual point list reports (results table, exports)
FEMORAL_SHAFT = "femoral_shaft_centre"
TIBIAL_SHAFT = "tibial_shaft_centre"
NOTCH = "femoral_notch"
SPINE = "tibial_spine_centre"
_SHAFT_LABEL = re.compile(rf"({FEMORAL_SHAFT}|{TIBIAL_SHAFT})_([1-9][0-9]*)")


@dataclass(frozen=True)
class ManualPoint:
    """One point of the guided placement: its label and the instruction shown with it."""

    label: str
    description: str


MANUAL_POINTS: tuple[ManualPoint, ...] = (
    ManualPoint(f"{FEMORAL_SHAFT}_1", "Femoral shaft centre, proximal: midway between the lateral and medial "
                                      "outer cortex, as high on the femoral shaft as the image shows"),
    ManualPoint(f"{FEMORAL_SHAFT}_2", "Femoral shaft centre, distal: midway between the cortices where the "
                                      "shaft begins to widen into the condyles"),
    ManualPoint(NOTCH, "Femoral notch: the apex (roof) of the intercondylar notch"),
    ManualPoint(SPINE, "Tibial spine centre: midway between the tips of the lateral and medial tibial spines"),
    ManualPoint(f"{TIBIAL_SHAFT}_1", "Tibial shaft centre, proximal: midway between the cortices below the "
                                     "metaphysis, where the shaft sides become parallel"),
    ManualPoint(f"{TIBIAL_SHAFT}_2", "Tibial shaft centre, distal: midway between the cortices, as low on the "
                                     "tibial shaft as the image shows"),
)

_INSTRUCTIONS = {p.label: p.description for p in MANUAL_POINTS}


def next_instruction(labels: Sequence[str], points: Any) -> str:
    """What to place next: "Place <label>: <instruction>" for the first point without a position ("" when all are).

    Args:
        labels: the point list's labels, in its order.
        points: (N, 2) px or (N, 3) mm of those points; a NaN row is a point not placed yet.
    """
    placed = np.isfinite(np.asarray(points, dtype=np.float64)).all(axis=1)
    label = next((label for label, ok in zip(labels, placed) if not ok), None)
    if label is None:
        return ""
    return f"Place {label}: {_INSTRUCTIONS[label]}" if label in _INSTRUCTIONS else f"Place {label}"


def split_manual_points(labels: Sequence[str], points_px: Any, *, where: str = "manual points"
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(femoral shaft centres (M, 2), tibial shaft centres (N, 2), notch (2,), spine centre (2,)) px.

    Shaft centres come back ordered by their number (proximal first by convention).

    Raises:
        MarkupsError: unknown or duplicated labels, points not placed yet (NaN rows, or
            a required label absent), fewer than two shaft centres of a bone.
    """
    labels = tuple(labels)
    points = np.asarray(points_px, dtype=np.float64)
    if points.shape != (len(labels), 2):
        raise ValueError(f"{len(labels)} labels need points of shape ({len(labels)}, 2), got {points.shape}")
    duplicated = sorted(label for label, count in Counter(labels).items() if count > 1)
    unknown = [label for label in labels if label not in (NOTCH, SPINE) and not _SHAFT_LABEL.fullmatch(label)]
    placed = {label: points[i] for i, label in enumerate(labels) if np.isfinite(points[i]).all()}
    shafts: dict[str, list[tuple[int, np.ndarray]]] = {FEMORAL_SHAFT: [], TIBIAL_SHAFT: []}
    for label, point in placed.items():
        if match := _SHAFT_LABEL.fullmatch(label):
            shafts[match.group(1)].append((int(match.group(2)), point))

    def needed(label: str) -> bool:  # a template shaft centre is not needed when two others of its bone are placed
        match = _SHAFT_LABEL.fullmatch(label)
        return match is None or len(shafts[match.group(1)]) < 2

    missing = [p.label for p in MANUAL_POINTS if p.label not in placed and needed(p.label)]
    problems = [f"{what} {', '.join(repr(x) for x in items)}"
                for what, items in (("unknown labels", unknown), ("duplicated labels", duplicated),
                                    ("points not placed", missing)) if items]
    if problems:
        raise MarkupsError(f"{where}: " + "; ".join(problems) + ". Expected labels: "
                           + ", ".join(p.label for p in MANUAL_POINTS))
    femoral, tibial = (np.array([p for _, p in sorted(shafts[prefix], key=lambda item: item[0])])
                       for prefix in (FEMORAL_SHAFT, TIBIAL_SHAFT))
    return femoral, tibial, placed[NOTCH], placed[SPINE]


def alignment_from_manual_points(labels: Sequence[str], points_px: Any, side: str,
                                 spacing_mm: tuple[float, float] | None = None, *,
                                 where: str = "manual points") -> Alignment:
    """aTFA (FTS and FNTS) from labelled manual points; see :func:`split_manual_points`.

    Raises:
        MarkupsError: the labels (see :func:`split_manual_points`).
        GeometryError: points from which no axis can be drawn, bad side or spacing.
    """
    femoral, tibial, notch, spine = split_manual_points(labels, points_px, where=where)
    return atfa_from_defining_points(femoral, tibial, notch, spine, side, spacing_mm)
