"""An image shown upside down, on its side or mirrored is never measured as "ok" (issue 16, defect 1).

The landmarks a network predicts cannot prove the orientation (it fits an upright right
knee to whatever the crop shows), so quality control compares what the network makes of
the knee in other orientations (``qc.orientation_flags``) and checks that the predicted
femur is above the tibia (``qc.upright_flags``). The shipped-model test runs every flip
and rotation of the bundled examples and of phantoms of both kinds and asserts what any
sound model must satisfy, not today's numbers.
"""

from __future__ import annotations

import numpy as np
import pytest

from KneeAlignmentLib import qc
from KneeAlignmentLib.bundle.modelset import ModelSet
from KneeAlignmentLib.bundle.resolve import SHIPPED_MODELS_DIR
from KneeAlignmentLib.cli import EXAMPLE_RADIOGRAPHS
from KneeAlignmentLib.imageio import radiograph_from_array, read_radiograph
from KneeAlignmentLib.phantom.dataset import render_case
from KneeAlignmentLib.pipeline import measure_batch
from KneeAlignmentLib.schema import load_schema

# The 8 symmetries of the image rectangle: (name, array -> array, mirrors the knee).
VIEWS = (
    ("upright", lambda a: a),
    ("turned 90", lambda a: np.rot90(a, 1)),
    ("turned 180", lambda a: np.rot90(a, 2)),
    ("turned 270", lambda a: np.rot90(a, 3)),
    ("mirrored left-right", lambda a: a[:, ::-1]),
    ("flipped top-bottom", lambda a: a[::-1]),
    ("transposed", lambda a: a.T),
    ("anti-transposed", lambda a: np.rot90(a, 2).T),
)
# Views that keep the knee's long axis vertical: these fooled the pipeline before (defect 1).
VERTICAL = ("turned 180", "mirrored left-right", "flipped top-bottom")


def test_orientation_flags_only_when_another_view_is_more_convincing():
    assert qc.orientation_flags(0.7, {}) == []
    assert qc.orientation_flags(0.7, {"turned by 180 degrees": 0.5, "mirrored": 0.69}) == []
    flags = qc.orientation_flags(0.5, {"turned by 180 degrees": 0.73, "mirrored": 0.6})
    assert [f.code for f in flags] == ["orientation_suspected"]
    assert "turned by 180 degrees" in flags[0].message and "0.73" in flags[0].message
    assert "orientation_suspected" in qc.FLAG_ORDER
    assert qc.FLAG_ORDER.index("orientation_suspected") < qc.FLAG_ORDER.index("low_mean_confidence")


@pytest.mark.parametrize("kind", ["preop", "postop"])
def test_upright_flags_fire_for_a_knee_on_its_side_or_upside_down(kind):
    case = render_case(kind, 5, 0, size=(320, 256))
    schema = load_schema(kind)
    points = case.landmarks_px
    centre = points.mean(axis=0)
    assert qc.upright_flags(points, schema) == []
    assert qc.upright_flags(points * [-1, 1], schema) == []  # mirrored left-right: still femur up
    for turn_deg in (90, 180, 270):
        t = np.radians(turn_deg)
        rotation = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
        turned = (points - centre) @ rotation.T + centre
        assert [f.code for f in qc.upright_flags(turned, schema)] == ["orientation_suspected"], turn_deg
    flipped = points * [1, -1]
    assert [f.code for f in qc.upright_flags(flipped, schema)] == ["orientation_suspected"]


@pytest.fixture(scope="module")
def shipped():
    return ModelSet.load(SHIPPED_MODELS_DIR, device="cpu")


def _cases():
    """(name, pixels, side, spacing): the two bundled example DICOMs and three phantoms."""
    cases = []
    for path in sorted(EXAMPLE_RADIOGRAPHS.glob("*.dcm")):
        r = read_radiograph(path)
        cases.append((path.stem, r.pixels, r.side, r.spacing_mm))
    for kind in ("preop", "postop"):
        for index in (0, 1) if kind == "preop" else (0,):
            c = render_case(kind, 77, index, size=(640, 512))
            cases.append((f"{kind} phantom {index}", c.image, c.side, c.spacing_mm))
    return cases


def test_every_flip_and_rotation_is_flagged_and_never_ok(shipped):
    """The side is stated (as a DICOM ImageLaterality would state it) and the image turned or mirrored."""
    radiographs, labels = [], []
    for name, pixels, side, spacing in _cases():
        for view, transform in VIEWS:
            radiographs.append(radiograph_from_array(np.ascontiguousarray(transform(pixels)), spacing_mm=spacing,
                                                     side=side, value_range=(0.0, 1.0)))
            labels.append((name, view))
    results = measure_batch(radiographs, shipped, kind="auto", batch_size=8)
    wrong = []
    for (name, view), m in zip(labels, results):
        if view == "upright":
            if "orientation_suspected" in m.flag_codes:
                wrong.append(f"{name} upright flagged: {m.reason}")
        elif m.status == "ok":
            wrong.append(f"{name} {view}: ok, aTFA FTS {m.alignment.atfa_fts_deg:.1f}")
        elif view in VERTICAL and "orientation_suspected" not in m.flag_codes:
            wrong.append(f"{name} {view}: flagged only {m.flag_codes}")
    assert not wrong, wrong


def test_the_turned_example_dicom_is_flagged_through_the_reader(shipped, tmp_path):
    """The issue's case: the example DICOM turned by 180 degrees, its laterality kept."""
    import pydicom

    ds = pydicom.dcmread(EXAMPLE_RADIOGRAPHS / "phantom_preop.dcm")
    ds.PixelData = np.ascontiguousarray(np.rot90(ds.pixel_array, 2)).tobytes()
    path = tmp_path / "turned.dcm"
    ds.save_as(path)
    result = measure_batch([read_radiograph(path)], shipped, kind="auto")[0]
    assert result.status == "flagged" and "orientation_suspected" in result.flag_codes
