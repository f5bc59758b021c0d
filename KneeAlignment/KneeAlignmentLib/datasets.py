"""Annotated datasets: the one home of their format, its reader and its writers.

An annotated dataset is a folder of radiographs with their true landmarks, shared by
training (``Training/kneetrain``), evaluation (``kneealign evaluate``), QC calibration
and the Slicer module's "save as training case":

* **paired files**: each image (DICOM, PNG, NRRD, ... any :data:`imageio.IMAGE_SUFFIXES`
  name, or a DICOM without suffix) with one Slicer point list ``<stem>.mrk.json`` of the
  same stem, whose labels are the schema's landmark names; the case id is the stem's
  path relative to the folder. The points are in the plain 2D geometry the reader
  assumes for the image (``ImagePlane.identity`` with the spacing the file states).
* **a manifest**: ``manifest.csv`` with one row per case: id (``case_id`` or ``id``),
  image (``image``, else ``dicom``, else ``png``), ``markups``, optionally ``kind`` and
  ``side``; paths relative to the folder (the phantom's ``generate_dataset`` writes one).

Reader: :func:`find_cases` -> :class:`AnnotatedCase`; :meth:`AnnotatedCase.load` reads and
checks one case -> :class:`AnnotatedImage` (its side by ``measurement.decide_side``).
Writers: :func:`write_image16` (the 16-bit image files), :func:`write_manifest`,
:func:`save_training_case` (one image + point list, as a corrected case is kept).

Saved training cases: ``"nrrd"`` keeps the pixels as 16-bit unsigned integers with the
pixel spacing in the header (angles and lengths in mm stay right, also for non-square
pixels); ``"png"`` is 16-bit greyscale and cannot state a spacing, so none is kept.
Either way the file holds pixels (and spacing) only: no patient name, ID, date or UID.
The source DICOM is not copied, because its header carries exactly those. Stems are
neutral (``case-0001``, the next free number), never derived from the input's name.

Shape legend: K landmarks; ``points_px`` (K, 2) as (x, y) image pixels; (H, W) images.
"""

from __future__ import annotations

import csv
import io
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from .atomicio import atomic_output, write_atomic
from .errors import KneeAlignmentError, MarkupsError
from .geometry import outside_image
from .imageio import IMAGE_SUFFIXES, Radiograph, read_radiograph
from .markups import ImagePlane, read_landmarks, read_markups, write_landmarks
from .measurement import QCFlag, decide_side
from .schema import KINDS, LandmarkSchema, kind_for_labels, load_schema

__all__ = [
    "IMAGE_FORMATS",
    "MANIFEST",
    "MARKUPS_SUFFIX",
    "AnnotatedCase",
    "AnnotatedImage",
    "DatasetError",
    "TrainingCase",
    "find_cases",
    "next_case_stem",
    "save_training_case",
    "training_schema",
    "write_image16",
    "write_manifest",
]

MANIFEST = "manifest.csv"
MARKUPS_SUFFIX = ".mrk.json"
# manifest.csv: the first column present of each list is used (the phantom writes id,
# dicom, png; DICOM first because it carries the pixel spacing and the laterality).
_ID_COLUMNS = ("case_id", "id")
_IMAGE_COLUMNS = ("image", "dicom", "png")
IMAGE_FORMATS = ("png", "nrrd")  # of saved training cases
_STEM = re.compile(r"case-(\d{4,})")
_UINT16_MAX = np.iinfo(np.uint16).max


class DatasetError(KneeAlignmentError):
    """A dataset folder that cannot be used: no cases, unpaired or ambiguous files, bad manifest."""


# --- reading ------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class AnnotatedImage:
    """One radiograph with its ground-truth landmarks.

    Attributes:
        case_id: the case's name (file stem or manifest id; groups images in splits).
        radiograph: the image.
        points_px: (K, 2) float64 landmarks of ``schema`` in image px.
        schema: the landmark schema the annotation follows.
        side: "L" or "R", by ``measurement.decide_side``; side_source: "manifest", the
            image's tag (e.g. "DICOM ImageLaterality") or "anatomy (fibula is lateral)".
        side_flags: the side decision's QC flags (``side_conflict``: the manifest's side
            contradicts the image's tag).
    """

    case_id: str
    radiograph: Radiograph
    points_px: np.ndarray
    schema: LandmarkSchema
    side: str
    side_source: str
    side_flags: tuple[QCFlag, ...] = ()


@dataclass(frozen=True)
class AnnotatedCase:
    """Where one annotated image lives; :meth:`load` reads and checks it.

    ``kind`` and ``side`` are known when a manifest states them (else None: the kind
    follows from the point labels, the side from the image or the anatomy; see
    ``measurement.decide_side``).
    """

    case_id: str
    image_path: Path
    markups_path: Path
    kind: str | None = None
    side: str | None = None

    def load(self, kind: str | None = None) -> AnnotatedImage:
        """Read the image and its landmarks and check them.

        Args:
            kind: "preop"/"postop" to require that schema; None accepts either.

        Raises:
            ImageReadError: the image cannot be read.
            MarkupsError: the annotation cannot be read, has missing, unknown or
                duplicated landmarks, another point count than the schema, or points
                outside the image (the message names the file).
        """
        radiograph = read_radiograph(self.image_path)
        name = self.markups_path.name
        found = self.kind or _kind_of(self.markups_path)
        if kind is not None and found != kind:
            raise MarkupsError(f"{name}: the annotation follows the {found} schema ({len(load_schema(found))} "
                               f"points), the {kind} schema ({len(load_schema(kind))} points) was expected")
        schema = load_schema(found)
        plane = ImagePlane.identity(radiograph.spacing_mm or (1.0, 1.0))
        points = read_landmarks(self.markups_path, schema.names, plane)
        h, w = radiograph.shape
        outside = outside_image(points, radiograph.shape)
        if outside.any():
            names = [schema.names[i] for i in np.flatnonzero(outside)]
            shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
            raise MarkupsError(f"{name}: {len(names)} landmarks lie outside the {w}x{h} image "
                               f"{self.image_path.name}: {shown}")
        side = decide_side(self.side, radiograph, given_source="manifest", points_px=points, schema=schema)
        return AnnotatedImage(self.case_id, radiograph, points, schema, side.side, side.source, side.flags)


def _kind_of(path: Path) -> str:
    """The schema an annotation file follows, from its point labels (implant points: post-op)."""
    return kind_for_labels([label for node in read_markups(path) if node.type == "Fiducial" for label in node.labels])


def find_cases(folder: str | Path) -> list[AnnotatedCase]:
    """The annotated cases of a dataset folder, sorted by case id.

    With a ``manifest.csv`` the manifest decides: one row per case with its id
    (column ``case_id`` or ``id``), image (``image``, else ``dicom``, else ``png``),
    ``markups``, and optionally ``kind`` and ``side``; paths relative to the folder
    (the phantom's ``generate_dataset`` writes such a manifest). Otherwise
    every ``<stem>.mrk.json`` (in the folder or below) is paired with the one image named
    ``<stem>`` plus an image suffix (.dcm, .png, ...) or ``<stem>`` itself (DICOM without a
    suffix), and the case id is the stem's path relative to the folder.

    Raises:
        DatasetError: no folder, no cases, an annotation without an image or with
            several, an image without an annotation, or a malformed manifest.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} not found")
    if (root / MANIFEST).is_file():
        cases = _read_manifest(root)
    else:
        cases = _pair_files(root)
    if not cases:
        raise DatasetError(f"{root}: no annotated images (expected <name>.mrk.json beside each image, "
                           f"or a {MANIFEST})")
    return sorted(cases, key=lambda c: c.case_id)


def _image_stem(path: Path) -> str | None:
    """The stem an image file pairs by, or None when the file is not an image candidate."""
    name = path.name
    lower = name.lower()
    if name.startswith(".") or lower.endswith((MARKUPS_SUFFIX, ".json", ".csv", ".md", ".txt", ".yaml", ".yml")):
        return None
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name if "." not in name else None  # DICOM files often have no suffix


def _pair_files(root: Path) -> list[AnnotatedCase]:
    images: dict[Path, list[Path]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        stem = _image_stem(path)
        if stem is not None:
            images.setdefault(path.parent / stem, []).append(path)
    cases, problems = [], []
    annotated = set()
    for mrk in sorted(root.rglob(f"*{MARKUPS_SUFFIX}")):
        key = mrk.parent / mrk.name[: -len(MARKUPS_SUFFIX)]
        annotated.add(key)
        found = images.get(key, [])
        if len(found) != 1:
            what = "no image" if not found else f"several images ({', '.join(p.name for p in found)})"
            problems.append(f"{mrk.relative_to(root)} has {what}")
            continue
        cases.append(AnnotatedCase(key.relative_to(root).as_posix(), found[0], mrk))
    problems += [f"{paths[0].relative_to(root)} has no {MARKUPS_SUFFIX} annotation"
                 for key, paths in images.items() if key not in annotated]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise DatasetError(f"{root}: every image needs exactly one annotation <name>{MARKUPS_SUFFIX}: {shown}")
    return cases


def _read_manifest(root: Path) -> list[AnnotatedCase]:
    path = root / MANIFEST
    try:
        with open(path, newline="", encoding="utf-8") as stream:
            rows = list(csv.DictReader(stream))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from exc
    columns = set(rows[0]) if rows else set()
    id_column = next((c for c in _ID_COLUMNS if c in columns), None)
    image_column = next((c for c in _IMAGE_COLUMNS if c in columns), None)
    if id_column is None or image_column is None or "markups" not in columns:
        raise DatasetError(f"{path}: needs at least one row and columns for the case id ({' or '.join(_ID_COLUMNS)}), "
                           f"the image ({' or '.join(_IMAGE_COLUMNS)}) and 'markups'")
    cases, seen = [], set()
    for line, row in enumerate(rows, start=2):
        case_id, kind, side = row[id_column].strip(), (row.get("kind") or "").strip(), (row.get("side") or "").strip()
        if not case_id or case_id in seen:
            raise DatasetError(f"{path}, line {line}: empty or repeated case id {case_id!r}")
        if kind not in ("", *KINDS) or side not in ("", "L", "R"):
            raise DatasetError(f"{path}, line {line}: kind must be one of {KINDS} and side L or R")
        image, mrk = root / row[image_column].strip(), root / row["markups"].strip()
        for file in (image, mrk):
            if not file.is_file():
                raise DatasetError(f"{path}, line {line}: {file.relative_to(root)} not found")
        seen.add(case_id)
        cases.append(AnnotatedCase(case_id, image, mrk, kind or None, side or None))
    return cases


# --- writing ------------------------------------------------------------------------------


def write_image16(path: str | os.PathLike[str], pixels: np.ndarray,
                  spacing_mm: tuple[float, float] | None = None) -> Path:
    """(H, W) pixels in [0, 1] (clipped) as a 16-bit grey image (0 .. 65535), compressed, atomically.

    The format follows the suffix (PNG, NRRD, ...); ``spacing_mm`` (row_mm, col_mm) goes
    into formats that hold one (NRRD), None writes none.

    Raises:
        OSError: the file cannot be written (the message names the file, not the folder).
    """
    path = Path(path)
    values = np.round(np.clip(pixels, 0.0, 1.0).astype(np.float64) * _UINT16_MAX).astype(np.uint16)
    image = sitk.GetImageFromArray(values)
    if spacing_mm is not None:
        image.SetSpacing((float(spacing_mm[1]), float(spacing_mm[0])))  # ITK order: (x, y)
    try:
        with atomic_output(path) as temporary:
            sitk.WriteImage(image, str(temporary), True)
    except RuntimeError as exc:  # ITK's message holds the path; ours names the file only
        raise OSError(f"cannot write the image {path.name}") from exc
    return path


def write_manifest(folder: str | os.PathLike[str], columns: Sequence[str],
                   rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write ``<folder>/manifest.csv`` atomically: ``columns`` (at least an id, an image and
    ``markups``, see :func:`find_cases`) and one row per case; floats as ``repr`` (exact)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: repr(row[k]) if isinstance(row[k], float) else row[k] for k in columns})
    return write_atomic(Path(folder) / MANIFEST, buffer.getvalue())


@dataclass(frozen=True)
class TrainingCase:
    """The files of one saved case."""

    stem: str
    image: Path
    markups: Path


def next_case_stem(folder: str | os.PathLike[str]) -> str:
    """``case-NNNN``, one above the highest such stem among the folder's files (``case-0001`` first)."""
    folder = Path(folder)
    numbers = [int(m.group(1)) for p in folder.iterdir() if (m := _STEM.match(p.name))] if folder.is_dir() else []
    return f"case-{max(numbers, default=0) + 1:04d}"


def training_schema(kind: str) -> LandmarkSchema:
    """The schema a case of this landmark kind is saved with; training needs a full (pre-op or post-op) set.

    Raises:
        ValueError: any other kind, e.g. manual points.
    """
    if kind not in KINDS:
        raise ValueError(f"a training case needs the full landmark set ({' or '.join(KINDS)}); {kind} points "
                         f"cannot be saved as one")
    return load_schema(kind)


def save_training_case(folder: str | os.PathLike[str], radiograph: Radiograph, schema: LandmarkSchema,
                       points_px: Any, *, image_format: str = "auto", stem: str | None = None) -> TrainingCase:
    """Write ``<folder>/<stem>.<png|nrrd>`` and ``<folder>/<stem>.mrk.json``; both or neither.

    Args:
        folder: the dataset folder (created if needed).
        radiograph: the image, pixels in [0, 1] as measured (stored as 16-bit).
        schema: the landmarks' schema; labels and descriptions come from it.
        points_px: (K, 2) landmarks in schema order, inside the image.
        image_format: "png", "nrrd", or "auto" (NRRD when the spacing is known, else PNG).
        stem: file stem; default :func:`next_case_stem`.

    Raises:
        MarkupsError: points of the wrong shape, not finite, or outside the image (the
            training reader refuses those); a file of that stem already exists.
        ValueError: an unknown image format or a stem that is not a plain file name.
    """
    if image_format == "auto":
        image_format = "nrrd" if radiograph.spacing_mm is not None else "png"
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be 'auto', 'png' or 'nrrd', got {image_format!r}")
    points = _checked_points(points_px, schema, radiograph.shape)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = next_case_stem(folder) if stem is None else stem
    if not stem or stem != Path(stem).name or stem.startswith("."):
        raise ValueError(f"stem must be a plain file name, got {stem!r}")
    taken = [p.name for p in folder.iterdir() if p.name == stem or p.name.startswith(stem + ".")]
    if taken:
        raise MarkupsError(f"{folder.name}: a case named {stem!r} exists already ({', '.join(sorted(taken))}); "
                           f"nothing was overwritten")

    image_path, markups_path = folder / f"{stem}.{image_format}", folder / f"{stem}{MARKUPS_SUFFIX}"
    token = secrets.token_hex(6)  # hidden temporaries: dataset scans skip dot files
    image_tmp = folder / f".{stem}.{token}.{image_format}"
    markups_tmp = folder / f".{stem}.{token}{MARKUPS_SUFFIX}"
    spacing = radiograph.spacing_mm if image_format == "nrrd" else None
    try:
        write_image16(image_tmp, radiograph.pixels, spacing)
        write_landmarks(markups_tmp, schema.names, points, ImagePlane.identity(spacing or (1.0, 1.0)),
                        descriptions=[lm.description for lm in schema.landmarks])
        os.replace(image_tmp, image_path)
        try:
            os.replace(markups_tmp, markups_path)
        except OSError:
            image_path.unlink(missing_ok=True)  # an image without its annotation would break the dataset
            raise
    finally:
        for temporary in (image_tmp, markups_tmp):
            with suppress(OSError):
                temporary.unlink(missing_ok=True)
    return TrainingCase(stem, image_path, markups_path)


def _checked_points(points_px: Any, schema: LandmarkSchema, shape: tuple[int, int]) -> np.ndarray:
    try:
        points = np.array(points_px, dtype=np.float64)
    except (TypeError, ValueError):
        raise MarkupsError("landmarks must be (x, y) pixel coordinates") from None
    if points.shape != (len(schema), 2):
        raise MarkupsError(f"expected ({len(schema)}, 2) landmarks for the {schema.kind} schema, got {points.shape}")
    if not np.isfinite(points).all():
        raise MarkupsError("every landmark must be placed (finite coordinates) in a training case")
    h, w = shape
    outside = outside_image(points, shape)
    if outside.any():
        names = [schema.names[i] for i in np.flatnonzero(outside)]
        raise MarkupsError(f"{len(names)} landmarks lie outside the {w}x{h} image: {', '.join(names[:6])}"
                           + (" ..." if len(names) > 6 else ""))
    return points
