"""A 3D Slicer volume as the core sees it: a :class:`Radiograph` and the :class:`ImagePlane` it lies in.

Slicer hands the module two things (no Slicer import is needed here):

* the voxel array, ``slicer.util.arrayFromVolume(node)``: (K, J, I) with K = 1 for a
  radiograph (slice, row, column), or (K, J, I, C) for a colour volume;
* the (4, 4) IJK-to-RAS matrix, ``node.GetIJKToRASMatrix(m)``.

Voxel (i, j, 0) is pixel (x = i, y = j): row 0 of the array is image row 0, so the core sees
the pixels in stored order, exactly as :func:`~KneeAlignmentLib.imageio.read_radiograph`
reads the same file. The matrix gives spacing (row_mm, col_mm) and where the plane lies in
patient space; Slicer's scene is RAS, the core's markups are LPS (x and y negated).

Shape legend: ``points_px`` (N, 2) as (x, y) pixels; ``positions_ras`` / ``positions_lps``
(N, 3) millimetres.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ImageReadError
from .imageio import Radiograph, radiograph_from_array
from .markups import ImagePlane

__all__ = ["VolumeImage", "flip_ras_lps", "px_from_ras", "radiograph_from_volume", "ras_from_px"]

# RAS <-> LPS: negate x and y; the map is its own inverse.
_RAS_LPS_FLIP = np.array([-1.0, -1.0, 1.0])


@dataclass(frozen=True, eq=False)
class VolumeImage:
    """A single-slice Slicer volume: the pixels to measure and the plane they lie in."""

    radiograph: Radiograph
    plane: ImagePlane


def flip_ras_lps(positions: Any) -> np.ndarray:
    """(N, 3) RAS -> LPS, or LPS -> RAS (the same map): x and y negated."""
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must have shape (N, 3), got {positions.shape}")
    return positions * _RAS_LPS_FLIP


def ras_from_px(plane: ImagePlane, points_px: Any) -> np.ndarray:
    """(N, 2) pixels (x, y) -> (N, 3) RAS mm on the plane (what Slicer's markups store)."""
    return flip_ras_lps(plane.to_lps(points_px))


def px_from_ras(plane: ImagePlane, positions_ras: Any) -> np.ndarray:
    """(N, 3) RAS mm -> (N, 2) pixels (x, y) of their projection on the plane."""
    return plane.to_px(flip_ras_lps(positions_ras))


def radiograph_from_volume(
    array_kji: Any,
    ijk_to_ras: Any,
    *,
    window: tuple[float, float] | None = None,
    invert: bool = False,
    side: str | None = None,
    side_source: str | None = None,
) -> VolumeImage:
    """The radiograph and plane of a single-slice Slicer volume.

    Args:
        array_kji: (1, J, I) grey or (1, J, I, 3|4) colour voxels (``arrayFromVolume``);
            a (J, I) array is taken as the one slice.
        ijk_to_ras: (4, 4) IJK-to-RAS matrix of the volume.
        window: (level, width) as the volume is displayed (Slicer's window/level): values
            level -/+ width/2 map to dark/bright, as a DICOM VOI window does in
            ``imageio``; None maps the image's own minimum and maximum.
        invert: the volume is shown with an inverted grey scale (MONOCHROME1: low
            values are dense), so the pixels are flipped to keep bright = dense.
        side, side_source: the knee's side ("L"/"R") if known (e.g. DICOM laterality)
            and where it came from.

    Raises:
        ImageReadError: not a single slice, non-finite voxels, a non-positive window
            width. ValueError: a matrix that is not an affine map with non-zero axes.
    """
    array = np.asarray(array_kji)
    colour = array.ndim == 4 and array.shape[-1] in (3, 4)
    if array.ndim == 2:
        pixels = array
    elif array.ndim == 3 + colour:
        if array.shape[0] != 1:
            raise ImageReadError(f"a radiograph is one slice; this volume has {array.shape[0]} slices")
        pixels = array[0]
    else:
        raise ImageReadError(f"expected a single-slice volume (1, rows, columns), got shape {array.shape}")
    plane = ImagePlane.from_ijk_to_ras(ijk_to_ras)
    value_range = None
    if window is not None:
        level, width = (float(v) for v in window)
        if not (np.isfinite(level) and np.isfinite(width) and width > 0):
            raise ImageReadError(f"window width must be a positive number, got level {level}, width {width}")
        value_range = (level - width / 2.0, level + width / 2.0)
    radiograph = radiograph_from_array(
        pixels,
        spacing_mm=plane.spacing_mm,
        side=side,
        value_range=value_range,
        invert=invert,
        spacing_source="volume geometry",
        side_source=side_source,
        source_format="Slicer volume",
        intensity_mapping="display window" if window is not None else None,
    )
    return VolumeImage(radiograph, plane)
