"""Tests of KneeAlignmentLib.manual_points: labelled hand-placed defining points -> aTFA."""

from __future__ import annotations

import numpy as np
import pytest

from KneeAlignmentLib.errors import MarkupsError
from KneeAlignmentLib.geometry import compute_alignment
from KneeAlignmentLib.manual_points import (
    MANUAL_POINTS,
    alignment_from_manual_points,
    next_instruction,
    split_manual_points,
)
from KneeAlignmentLib.schema import example_landmarks_px, load_schema

SCHEMA = load_schema("preop")
POINTS = example_landmarks_px("preop", atfa_valgus_deg=6.0, spacing_mm=0.5, image_size=(800, 600))
SPACING = (0.5, 0.5)
TRUTH = compute_alignment(POINTS, SCHEMA, "R", SPACING)


def placed(femur_rows=(0, 1), tibia_rows=(0, 1)):
    """(labels, (N, 2) px): the template's six points, shaft centres taken from the example's."""
    femur, tibia = TRUTH.femoral_shaft_centres_px, TRUTH.tibial_shaft_centres_px
    labels, points = [], []
    for n, row in enumerate(femur_rows, start=1):
        labels.append(f"femoral_shaft_centre_{n}"), points.append(femur[row])
    labels += ["femoral_notch", "tibial_spine_centre"]
    points += [TRUTH.femoral_axis_fnts_px[1], TRUTH.tibial_axis_fnts_px[0]]
    for n, row in enumerate(tibia_rows, start=1):
        labels.append(f"tibial_shaft_centre_{n}"), points.append(tibia[row])
    return labels, np.array(points)


def test_template_is_the_guided_placement_order():
    labels = [p.label for p in MANUAL_POINTS]
    assert labels == ["femoral_shaft_centre_1", "femoral_shaft_centre_2", "femoral_notch", "tibial_spine_centre",
                      "tibial_shaft_centre_1", "tibial_shaft_centre_2"]
    assert all(len(p.description) > 20 for p in MANUAL_POINTS)


def test_the_next_instruction_names_the_first_unplaced_point_in_list_order():
    labels, points = placed()
    unplaced = points.copy()
    unplaced[[2, 4]] = np.nan
    assert next_instruction(labels, unplaced) == f"Place femoral_notch: {MANUAL_POINTS[2].description}"
    assert next_instruction(labels, np.full((6, 3), np.nan)).startswith(
        "Place femoral_shaft_centre_1: Femoral shaft centre, proximal")  # LPS positions too
    assert next_instruction(labels, points) == ""
    added = [*labels, "femoral_shaft_centre_3"]  # a point the user added: no template instruction
    assert next_instruction(added, np.vstack([points, [np.nan, np.nan]])) == "Place femoral_shaft_centre_3"


def test_all_shaft_centres_give_the_landmark_angles():
    every = tuple(range(len(TRUTH.femoral_shaft_centres_px)))
    labels, points = placed(every, tuple(range(len(TRUTH.tibial_shaft_centres_px))))
    order = np.random.default_rng(0).permutation(len(labels))  # any order of the point list
    a = alignment_from_manual_points([labels[i] for i in order], points[order], "R", SPACING)
    assert a.atfa_fts_deg == pytest.approx(TRUTH.atfa_fts_deg, abs=1e-9)
    assert a.atfa_fnts_deg == pytest.approx(TRUTH.atfa_fnts_deg, abs=1e-9)
    np.testing.assert_allclose(a.femoral_shaft_centres_px, TRUTH.femoral_shaft_centres_px)


def test_two_centres_per_bone_measure_the_example_valgus():
    labels, points = placed((0, -1), (0, -1))
    a = alignment_from_manual_points(labels, points, "R", SPACING)
    assert a.atfa_fts_deg == pytest.approx(6.0, abs=1e-6)
    assert a.atfa_fnts_deg == pytest.approx(6.0, abs=1e-6)


def test_shaft_centres_are_ordered_by_number():
    labels, points = placed((0, 1, 2))
    femoral, _tibial, notch, spine = split_manual_points(labels[::-1], points[::-1])
    np.testing.assert_allclose(femoral, TRUTH.femoral_shaft_centres_px[:3])
    np.testing.assert_allclose(notch, TRUTH.femoral_axis_fnts_px[1])
    np.testing.assert_allclose(spine, TRUTH.tibial_axis_fnts_px[0])


def test_extra_shaft_centres_may_replace_unplaced_template_ones():
    labels, points = placed((0, 1, 2))
    points[0] = np.nan  # femoral_shaft_centre_1 not placed, but _2 and _3 are
    femoral, *_ = split_manual_points(labels, points)
    np.testing.assert_allclose(femoral, TRUTH.femoral_shaft_centres_px[1:3])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda l, p: (l, np.where(np.arange(len(l))[:, None] == 2, np.nan, p)), "points not placed 'femoral_notch'"),
        (lambda l, p: (l[:5], p[:5]), "points not placed 'tibial_shaft_centre_2'"),
        (lambda l, p: (l + ["fibula"], np.vstack([p, p[:1]])), "unknown labels 'fibula'"),
        (lambda l, p: (l + ["femoral_notch"], np.vstack([p, p[2:3]])), "duplicated labels 'femoral_notch'"),
        (lambda l, p: (l + ["femoral_shaft_centre_0"], np.vstack([p, p[:1]])),
         "unknown labels 'femoral_shaft_centre_0'"),
    ],
)
def test_label_problems_are_named(edit, message):
    labels, points = edit(*placed())
    with pytest.raises(MarkupsError, match=message):
        alignment_from_manual_points(labels, points, "R", SPACING, where="manual points 'M'")


def test_error_names_where_and_lists_the_expected_labels():
    labels, points = placed()
    with pytest.raises(MarkupsError, match=r"^list 'X': .*Expected labels: femoral_shaft_centre_1, "):
        split_manual_points(labels[1:], points[1:], where="list 'X'")
    with pytest.raises(ValueError, match=r"shape \(6, 2\)"):
        split_manual_points(labels, points[:, :1])
