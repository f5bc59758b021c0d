"""Landmark schemas: the one source of truth for landmark names, groups and definitions.

The data live in ``data/preop.json`` (134 landmarks) and ``data/postop.json`` (181: the
pre-op outline plus implant components); ``tools/author_schemas.py`` made them.
Everything else (geometry, markups, training, the phantom, the Slicer module) reads
landmark names, groups, mirror partners and derived-point definitions from here.

Array legend: K landmarks; points are (..., K, 2) as (x, y); derived points keep the
leading dimensions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

from .errors import SchemaError

KINDS = ("preop", "postop")


@dataclass(frozen=True)
class Landmark:
    index: int
    name: str
    group: str
    description: str
    mirror: str | None  # partner across the knee's midline (lateral <-> medial)


@dataclass(frozen=True, eq=False)
class LandmarkSchema:
    kind: str
    version: str
    landmarks: tuple[Landmark, ...]
    groups: dict  # group -> {"label": str, "color": [r, g, b]}
    contours: tuple[dict, ...]
    definitions: dict
    template_mm: np.ndarray  # (K, 2) mean right knee, x medial, y distal, mm

    def __len__(self) -> int:
        return len(self.landmarks)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(lm.name for lm in self.landmarks)

    def index(self, name: str) -> int:
        try:
            return self._index[name]
        except KeyError:
            raise SchemaError(f"no landmark named {name!r} in the {self.kind} schema") from None

    def indices(self, names) -> np.ndarray:
        return np.array([self.index(n) for n in names], dtype=np.int64)

    def group_indices(self, group: str) -> np.ndarray:
        if group not in self.groups:
            raise SchemaError(f"no group {group!r} in the {self.kind} schema")
        return np.array([lm.index for lm in self.landmarks if lm.group == group], dtype=np.int64)

    @property
    def mirror_permutation(self) -> np.ndarray:
        """(K,) index of each landmark's mirror partner (itself when it has none); an involution."""
        return np.array([self.index(lm.mirror) if lm.mirror else lm.index for lm in self.landmarks])

    def derive(self, points: np.ndarray, name: str) -> np.ndarray:
        """Evaluate a derived point set of ``definitions`` on points (..., K, 2).

        "mean_of" gives (..., 2); "pairs" gives the pair midpoints (..., M, 2);
        "points" gives the listed landmarks (..., M, 2); "reference_points" gives (..., 2, 2).
        """
        points = np.asarray(points, dtype=np.float64)
        if points.shape[-2:] != (len(self), 2):
            raise SchemaError(f"expected points of shape (..., {len(self)}, 2) for the {self.kind} schema, "
                              f"got {points.shape}")
        d = self._definition(name)
        if name == "reference_points":
            return np.stack([points[..., self.indices(p["mean_of"]), :].mean(axis=-2) for p in d["points"]], axis=-2)
        if "mean_of" in d:
            return points[..., self.indices(d["mean_of"]), :].mean(axis=-2)
        if "pairs" in d:
            pairs = np.array([self.indices(p) for p in d["pairs"]])
            return 0.5 * (points[..., pairs[:, 0], :] + points[..., pairs[:, 1], :])
        if "points" in d:
            return points[..., self.indices(d["points"]), :]
        raise SchemaError(f"definition {name!r} cannot be evaluated as points")

    def reference_points(self, points: np.ndarray) -> np.ndarray:
        """The global stage's two reference points (..., 2, 2) from landmarks (..., K, 2)."""
        return self.derive(points, "reference_points")

    def _definition(self, name: str) -> dict:
        try:
            return self.definitions[name]
        except KeyError:
            raise SchemaError(f"the {self.kind} schema defines no {name!r}") from None

    def __post_init__(self):
        object.__setattr__(self, "_index", {lm.name: lm.index for lm in self.landmarks})


@lru_cache(maxsize=None)
def load_schema(kind: str) -> LandmarkSchema:
    """The 'preop' or 'postop' schema, validated on load."""
    if kind not in KINDS:
        raise SchemaError(f"unknown schema {kind!r}; expected one of {', '.join(KINDS)}")
    doc = json.loads(resources.files(__package__).joinpath("data", f"{kind}.json").read_text())
    landmarks = tuple(Landmark(lm["index"], lm["name"], lm["group"], lm["description"], lm["mirror"])
                      for lm in doc["landmarks"])
    schema = LandmarkSchema(kind=doc["kind"], version=doc["version"], landmarks=landmarks,
                            groups=doc["groups"], contours=tuple(doc["contours"]),
                            definitions=doc["definitions"],
                            template_mm=np.asarray(doc["template_mm"], dtype=np.float64))
    _validate(schema, doc)
    return schema


def _validate(schema: LandmarkSchema, doc: dict) -> None:
    names = schema.names
    if len(set(names)) != len(names) or len(names) != doc["count"]:
        raise SchemaError(f"{schema.kind} schema: landmark names must be unique and {doc['count']} in number")
    if any(lm.index != i for i, lm in enumerate(schema.landmarks)):
        raise SchemaError(f"{schema.kind} schema: landmark indices must be 0..K-1 in order")
    perm = schema.mirror_permutation
    if not np.array_equal(perm[perm], np.arange(len(names))):
        raise SchemaError(f"{schema.kind} schema: mirror partners must pair up symmetrically")
    if schema.template_mm.shape != (len(names), 2):
        raise SchemaError(f"{schema.kind} schema: template must hold one (x, y) per landmark")
    unknown = {lm.group for lm in schema.landmarks} - set(schema.groups)
    if unknown:
        raise SchemaError(f"{schema.kind} schema: undeclared groups {sorted(unknown)}")


def kind_for_labels(labels) -> str:
    """'postop' when any implant landmark is among the labels, else 'preop'.

    Missing points are left for the reader to report by name, so one forgotten point
    does not turn into a confusing "wrong schema" message.
    """
    implant_names = set(load_schema("postop").names) - set(load_schema("preop").names)
    return "postop" if implant_names.intersection(labels) else "preop"


def example_landmarks_px(kind: str, *, atfa_valgus_deg: float = 5.0, spacing_mm: float = 0.15,
                         image_size: tuple[int, int] = (2000, 1600)) -> np.ndarray:
    """The template posed as a right knee in an image (H, W) = image_size: (K, 2) px.

    The tibia, fibula and tibial components are turned about the knee centre by
    ``atfa_valgus_deg`` (valgus: the distal tibia moves laterally, towards -x), so the
    example has a known angle. Used by the demo, the Slicer self-test and the docs.
    """
    schema = load_schema(kind)
    pts = schema.template_mm.copy()
    lower = np.array([lm.name[0] == "T" or lm.group in ("fibula", "tibial_component", "tibial_insert")
                      for lm in schema.landmarks])
    t = np.deg2rad(atfa_valgus_deg)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    pts[lower] = pts[lower] @ rot.T
    centre = np.array([image_size[1] / 2.0, image_size[0] / 2.0])
    return pts / spacing_mm + centre
