"""Tests of the measurement overlay (KneeAlignmentLib.overlay.draw_result): each mark where it belongs."""

import numpy as np
from PIL import Image

from KneeAlignmentLib.case_view import AXIS_COLORS
from KneeAlignmentLib.geometry import compute_alignment
from KneeAlignmentLib.overlay import draw_result
from KneeAlignmentLib.schema import example_landmarks_px, load_schema

SHAPE = (1000, 800)  # (H, W) of the radiograph; the picture is 500 px tall: half its size


def drawn(tmp_path, confidence=None, flagged=False):
    schema = load_schema("preop")
    points = example_landmarks_px("preop", spacing_mm=0.3, image_size=SHAPE)
    alignment = compute_alignment(points, schema, "R", (0.3, 0.3))
    pixels = np.full(SHAPE, 0.5, np.float32)
    path = draw_result(pixels, ("preop", points, confidence), alignment, ["right knee"], "FLAGGED: x" if flagged
                       else "OK", tmp_path / "o.png", flagged=flagged, height_px=500)
    with Image.open(path) as image:
        return schema, points, alignment, np.asarray(image.convert("RGB"), dtype=int)


def colour_near(picture, point_px, rgb, radius=1):
    """Whether ``rgb`` (within 40 per channel) is drawn within ``radius`` picture px of an image point."""
    x, y = ((np.asarray(point_px) + 0.5) * 0.5 - 0.5).round().astype(int)
    patch = picture[y - radius:y + radius + 1, x - radius:x + radius + 1]
    return bool((np.abs(patch - np.array(rgb)).max(axis=-1) <= 40).any())


def test_landmarks_axes_and_panels_are_drawn_where_they_belong(tmp_path):
    schema, points, alignment, picture = drawn(tmp_path)
    assert picture.shape == (500, 400, 3)
    grey = picture[250, 395]  # far from any mark: the radiograph, 0.5 grey
    assert abs(grey - 128).max() <= 1
    for group, info in schema.groups.items():
        i = schema.group_indices(group)[0]
        if np.hypot(*(alignment.femoral_axis_fnts_px[0] - points[i])) > 20:  # not under an axis
            assert colour_near(picture, points[i], [round(255 * c) for c in info["color"]]), group
    fts = [round(255 * c) for c in AXIS_COLORS["FTS"]]
    assert colour_near(picture, alignment.femoral_axis_fts_px.mean(axis=0), fts)
    assert colour_near(picture, alignment.tibial_axis_fts_px.mean(axis=0), fts)
    top_panel = picture[12:30, 12:150]
    assert (top_panel.max(axis=-1) > 200).any() and np.median(top_panel) < 80  # white text on a dark box


def test_weak_landmarks_are_red_crosses_and_a_flagged_status_is_red(tmp_path):
    confidence = np.ones(len(load_schema("preop")))
    confidence[0] = 0.05
    schema, points, _, picture = drawn(tmp_path, confidence, flagged=True)
    assert colour_near(picture, points[0], (255, 0, 0), radius=2)
    bottom_panel = picture[-40:-10, 10:200]
    red = (bottom_panel[..., 0] > 200) & (bottom_panel[..., 1] < 60) & (bottom_panel[..., 2] < 60)
    assert red.any()
