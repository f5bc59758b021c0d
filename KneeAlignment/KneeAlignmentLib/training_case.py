"""Save a radiograph and its (corrected) landmarks as one case of a training dataset folder.

The training format (``evaluation.find_cases``, used by ``Training/``): a folder of images,
each with a Slicer point list ``<stem>.mrk.json`` of the same stem whose labels are the
schema's landmark names. The landmarks are written in the plain 2D geometry the reader
assumes for the image file (``ImagePlane.identity`` with the spacing the file states), so
``read_radiograph`` + ``read_landmarks`` give back the same pixels.

Image formats:

* ``"nrrd"``: the pixels as 16-bit unsigned integers with the pixel spacing in the
  header (angles and lengths in mm stay right, also for non-square pixels);
* ``"png"``: 16-bit greyscale PNG; PNG cannot state a spacing, so none is kept.

Either way the file holds pixels (and spacing) only: no patient name, ID, date or UID.
The source DICOM is not copied, because its header carries exactly those. Stems are
neutral (``case-0001``, the next free number), never derived from the input's name.
Shape legend: ``points_px`` (K, 2) as (x, y) pixels, (H, W) images.
"""

from __future__ import annotations

import os
import re
import secrets
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from .errors import MarkupsError
from .geometry import outside_image
from .imageio import Radiograph
from .markups import ImagePlane, write_landmarks
from .schema import KINDS, LandmarkSchema, load_schema

__all__ = ["IMAGE_FORMATS", "MARKUPS_SUFFIX", "TrainingCase", "next_case_stem", "save_training_case",
           "training_schema"]

IMAGE_FORMATS = ("png", "nrrd")
MARKUPS_SUFFIX = ".mrk.json"
_STEM = re.compile(r"case-(\d{4,})")
_UINT16_MAX = np.iinfo(np.uint16).max


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
        _write_image(image_tmp, radiograph.pixels, spacing)
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


def _write_image(path: Path, pixels: np.ndarray, spacing_mm: tuple[float, float] | None) -> None:
    """(H, W) [0, 1] pixels as 16-bit; NRRD with (row_mm, col_mm) spacing, PNG without."""
    image = sitk.GetImageFromArray(np.round(pixels.astype(np.float64) * _UINT16_MAX).astype(np.uint16))
    if spacing_mm is not None:
        image.SetSpacing((float(spacing_mm[1]), float(spacing_mm[0])))  # ITK order: (x, y)
    try:
        sitk.WriteImage(image, str(path), useCompression=True)
    except RuntimeError as exc:  # ITK's message holds the path; ours names the file only
        raise OSError(f"cannot write the training image {path.name}") from exc
