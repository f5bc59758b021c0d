"""Tests of KneeAlignmentLib.volume: a Slicer volume (array + IJK-to-RAS) as a Radiograph and plane.

The expected RAS positions are computed with the IJK-to-RAS matrix directly (voxel (i, j, 0)
is pixel (x = i, y = j)), independently of ImagePlane, for axis-aligned, flipped and oblique
volumes with non-square pixels.
"""

from __future__ import annotations

import numpy as np
import pytest

from KneeAlignmentLib.errors import ImageReadError
from KneeAlignmentLib.imageio import read_radiograph
from KneeAlignmentLib.volume import px_from_ras, radiograph_from_volume, ras_from_px


def rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def ijk_to_ras(direction: np.ndarray, col_mm: float, row_mm: float, origin) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = direction * [col_mm, row_mm, 1.0]
    m[:3, 3] = origin
    return m


MATRICES = {
    # How Slicer loads a PNG or DICOM DX: i along L, j along P (IJK-to-RAS diag(-col, -row, 1)).
    "slicer-2d": ijk_to_ras(np.diag([-1.0, -1.0, 1.0]), 0.9, 1.1, [20.0, -35.0, 0.0]),
    "flipped": ijk_to_ras(np.diag([1.0, -1.0, -1.0]), 0.2, 0.3, [-5.0, 7.0, 12.0]),
    "oblique": ijk_to_ras(rotation(3), 0.139, 0.171, [-120.5, 33.25, 410.0]),
}


def voxel_ras(matrix: np.ndarray, points_px: np.ndarray) -> np.ndarray:
    """(N, 3) RAS of pixel (x, y) = voxel (i, j, 0), straight from the matrix."""
    return (np.c_[points_px, np.zeros(len(points_px)), np.ones(len(points_px))] @ matrix.T)[:, :3]


@pytest.mark.parametrize("name", MATRICES)
def test_pixels_map_to_the_voxel_positions_and_back(name):
    matrix = MATRICES[name]
    image = radiograph_from_volume(np.zeros((1, 40, 30), np.int16), matrix)
    points_px = np.random.default_rng(1).uniform([-0.5, -0.5], [29.5, 39.5], size=(25, 2))
    np.testing.assert_allclose(ras_from_px(image.plane, points_px), voxel_ras(matrix, points_px), atol=1e-9)
    np.testing.assert_allclose(px_from_ras(image.plane, voxel_ras(matrix, points_px)), points_px, atol=1e-9)
    col_mm, row_mm = np.linalg.norm(matrix[:3, :2], axis=0)
    assert image.radiograph.spacing_mm == pytest.approx((row_mm, col_mm))
    assert image.radiograph.spacing_source == "volume geometry"


def test_array_rows_are_image_rows_in_stored_order():
    """arrayFromVolume gives (K, J, I): row j, column i is pixel (x = i, y = j)."""
    voxels = np.arange(1 * 4 * 5, dtype=np.uint16).reshape(1, 4, 5)
    image = radiograph_from_volume(voxels, MATRICES["slicer-2d"])
    assert image.radiograph.shape == (4, 5)
    np.testing.assert_allclose(image.radiograph.pixels, voxels[0] / voxels.max(), atol=1e-7)


def test_same_pixels_as_reading_the_file(tmp_path):
    """A PNG read by the core and the same PNG as Slicer's volume array agree pixel for pixel."""
    import SimpleITK as sitk

    stored = np.random.default_rng(2).integers(0, 65535, size=(30, 20), dtype=np.uint16)
    sitk.WriteImage(sitk.GetImageFromArray(stored), str(tmp_path / "knee.png"))
    from_file = read_radiograph(tmp_path / "knee.png")
    from_volume = radiograph_from_volume(stored[None], MATRICES["slicer-2d"], source_file=tmp_path / "knee.png")
    np.testing.assert_array_equal(from_volume.radiograph.pixels, from_file.pixels)
    assert from_volume.radiograph.spacing_source == "volume geometry"
    # Without the file: the voxels' own range, which the networks' standardisation makes equivalent.
    voxels_only = radiograph_from_volume(stored[None], MATRICES["slicer-2d"]).radiograph
    standardise = lambda p: (p - p.mean()) / p.std()
    np.testing.assert_allclose(standardise(voxels_only.pixels), standardise(from_file.pixels), atol=1e-4)


def test_a_source_file_that_does_not_match_the_volume_is_not_used(tmp_path):
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 8), np.uint8)), str(tmp_path / "other.png"))
    voxels = np.array([[[0, 100, 200, 300]]], dtype=np.int16)
    for source in (tmp_path / "other.png", tmp_path / "missing.png"):
        image = radiograph_from_volume(voxels, MATRICES["slicer-2d"], source_file=source)
        np.testing.assert_allclose(image.radiograph.pixels[0], [0.0, 1 / 3, 2 / 3, 1.0], atol=1e-6)


def test_voxels_map_by_their_own_range_and_inverted_grey_is_applied():
    voxels = np.array([[[0, 100, 200, 300]]], dtype=np.int16)
    plain = radiograph_from_volume(voxels, MATRICES["slicer-2d"])
    np.testing.assert_allclose(plain.radiograph.pixels[0], [0.0, 1 / 3, 2 / 3, 1.0], atol=1e-6)
    assert plain.radiograph.intensity_mapping == "min-max"
    inverted = radiograph_from_volume(voxels, MATRICES["slicer-2d"], invert=True)
    np.testing.assert_allclose(inverted.radiograph.pixels[0], [1.0, 2 / 3, 1 / 3, 0.0], atol=1e-6)


def test_side_and_colour_volumes():
    rgb = np.zeros((1, 6, 7, 3), np.uint8)
    rgb[0, 2, 3] = (255, 255, 255)
    image = radiograph_from_volume(rgb, MATRICES["slicer-2d"], side="L", side_source="DICOM ImageLaterality")
    assert image.radiograph.shape == (6, 7) and image.radiograph.pixels[2, 3] == 1.0
    assert (image.radiograph.side, image.radiograph.side_source) == ("L", "DICOM ImageLaterality")


@pytest.mark.parametrize(
    ("voxels", "message"),
    [
        (np.zeros((2, 4, 4)), "this volume has 2 slices"),
        (np.zeros((4,)), "single-slice volume"),
        (np.full((1, 4, 4), np.nan), "NaN or infinite"),
    ],
)
def test_bad_volumes_raise_image_read_error(voxels, message):
    with pytest.raises(ImageReadError, match=message):
        radiograph_from_volume(voxels, MATRICES["slicer-2d"])


def test_bad_matrix_and_positions_raise_value_error():
    singular = MATRICES["slicer-2d"].copy()
    singular[:3, 0] = 0.0
    with pytest.raises(ValueError, match="zero-length axis"):
        radiograph_from_volume(np.zeros((1, 4, 4)), singular)
