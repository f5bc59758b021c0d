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

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ImageReadError
from .imageio import Radiograph, radiograph_from_array, read_radiograph
from .markups import ImagePlane, flip_ras_lps

__all__ = ["VolumeImage", "px_from_ras", "radiograph_from_volume", "ras_from_px"]


@dataclass(frozen=True, eq=False)
class VolumeImage:
    """A single-slice Slicer volume: the pixels to measure and the plane they lie in."""

    radiograph: Radiograph
    plane: ImagePlane


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
    source_file: str | os.PathLike[str] | None = None,
    invert: bool = False,
    side: str | None = None,
    side_source: str | None = None,
) -> VolumeImage:
    """The radiograph and plane of a single-slice Slicer volume.

    The pixels never depend on how the volume is displayed (its window/level, which Slicer
    sets automatically and the user changes at will): the same file gives the networks
    the same input in Slicer as in ``kneealign measure``.

    * With ``source_file`` (the file the volume was loaded from, unmodified since): the
      pixels are that file read by ``imageio.read_radiograph``, exactly as the command
      line reads it (DICOM modality and VOI LUT, MONOCHROME1, bit depth), provided it
      has the volume's rows and columns; its DICOM laterality, if any, is the side.
    * Otherwise (a volume made in memory, or edited): the voxels' own minimum and maximum
      map to 0 and 1 (``invert`` flips them: a MONOCHROME1 volume shown inverted). The
      networks standardise each image, so this equals any other affine grey mapping,
      the file's bit depth included; only a clipping VOI window differs.

    Args:
        array_kji: (1, J, I) grey or (1, J, I, 3|4) colour voxels (``arrayFromVolume``);
            a (J, I) array is taken as the one slice.
        ijk_to_ras: (4, 4) IJK-to-RAS matrix of the volume (plane and spacing).
        source_file: the volume's file, or None.
        invert: for voxels only: low values are dense (MONOCHROME1).
        side, side_source: the knee's side ("L"/"R") if known (e.g. DICOM laterality)
            and where it came from.

    Raises:
        ImageReadError: not a single slice, non-finite voxels. ValueError: a matrix that
            is not an affine map with non-zero axes.
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
    from_file = _read_source(source_file, pixels.shape[:2])
    if from_file is not None:
        radiograph = dataclasses.replace(
            from_file, spacing_mm=plane.spacing_mm, spacing_source="volume geometry",
            side=from_file.side or side, side_source=from_file.side_source if from_file.side else
            (side_source or ("none" if side is None else "given")))
        return VolumeImage(radiograph, plane)
    radiograph = radiograph_from_array(
        pixels,
        spacing_mm=plane.spacing_mm,
        side=side,
        invert=invert,
        spacing_source="volume geometry",
        side_source=side_source,
        source_format="Slicer volume",
    )
    return VolumeImage(radiograph, plane)


def _read_source(source_file: str | os.PathLike[str] | None, shape: tuple[int, int]) -> Radiograph | None:
    """The source file as the command line reads it, if it can be read and has ``shape``; else None."""
    if source_file is None:
        return None
    try:
        radiograph = read_radiograph(source_file)
    except ImageReadError:
        return None
    return radiograph if radiograph.shape == tuple(shape) else None
