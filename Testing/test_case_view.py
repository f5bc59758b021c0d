"""Tests of KneeAlignmentLib.case_view: the markups the Slicer module shows for a case, and live recompute.

Angle nodes are checked the way Slicer measures them: vtkMRMLMarkupsAngleNode::GetAngleDegrees
in oriented-signed mode is re-implemented below (angle between the arms in RAS, negative
when (arm1 x arm2) points against the rotation axis), so the value shown must be the
signed aTFA for both sides, on oblique planes with non-square pixels.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from KneeAlignmentLib.case_view import (
    AXIS_COLORS,
    METHODS,
    derived_view,
    landmark_node,
    recompute,
    valgus_axis_ras,
)
from KneeAlignmentLib.errors import GeometryError, MarkupsError
from KneeAlignmentLib.geometry import atfa_angle_points_px, compute_alignment
from KneeAlignmentLib.markups import ImagePlane, MarkupsNode, flip_ras_lps, read_markups, write_markups
from KneeAlignmentLib.schema import KINDS, example_landmarks_px, load_schema

SLICER_SCHEMA = json.loads((Path(__file__).parent / "data" / "markups-schema-v1.0.3.json").read_text())


def rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


PLANES = {
    "slicer-2d": ImagePlane(origin_lps=[-20.0, 35.0, 0.0], spacing_mm=(1.1, 0.9), direction=np.eye(3)),
    "oblique": ImagePlane(origin_lps=[-120.5, 33.25, 410.0], spacing_mm=(0.139, 0.171), direction=rotation(5)),
    "mirrored": ImagePlane(origin_lps=[3.0, 2.0, 1.0], spacing_mm=(0.5, 0.5), direction=np.diag([-1.0, 1.0, -1.0])),
}


def knee(kind: str, side: str, valgus: float) -> np.ndarray:
    """(K, 2) px: the example knee (a right knee), mirrored for a left one."""
    points = example_landmarks_px(kind, atfa_valgus_deg=valgus, spacing_mm=1.0, image_size=(300, 240))
    return points if side == "R" else points * [-1, 1] + [239, 0]


def slicer_signed_angle(positions_ras: np.ndarray, axis_ras) -> float:
    """vtkMRMLMarkupsAngleNode::GetAngleDegrees, AngleMeasurementMode OrientedSigned."""
    v1, v2 = positions_ras[0] - positions_ras[1], positions_ras[2] - positions_ras[1]
    v1, v2 = v1 / np.linalg.norm(v1), v2 / np.linalg.norm(v2)
    angle = math.degrees(math.acos(np.clip(v1 @ v2, -1.0, 1.0)))
    return angle if np.cross(v1, v2) @ np.asarray(axis_ras) >= 0 else -angle


def by_role(view):
    return {v.role: v for v in view}


@pytest.mark.parametrize("plane_name", PLANES)
@pytest.mark.parametrize("side", ["R", "L"])
@pytest.mark.parametrize("valgus", [7.5, -4.0, 0.2])
def test_angle_nodes_show_the_signed_atfa(plane_name, side, valgus):
    plane, schema = PLANES[plane_name], load_schema("preop")
    points = knee("preop", side, valgus)
    alignment = compute_alignment(points, schema, side, plane.spacing_mm)
    view = by_role(derived_view("Case", alignment, plane, schema=schema, points_px=points))
    for method in METHODS:
        angle = view[f"Angle.{method}"]
        shown = slicer_signed_angle(flip_ras_lps(angle.node.positions_lps), angle.signed_axis_ras)
        assert shown == pytest.approx(getattr(alignment, f"atfa_{method.lower()}_deg"), abs=1e-9)
        assert angle.node.measurement("angle").value == pytest.approx(abs(shown), abs=1e-9)  # the file's unsigned value
        assert angle.node.name == f"aTFA {method} {getattr(alignment, f'label_{method.lower()}')}"


def test_valgus_axis_is_the_plane_normal_signed_by_side():
    plane = PLANES["oblique"]
    right, left = np.array(valgus_axis_ras(plane, "R")), np.array(valgus_axis_ras(plane, "L"))
    normal_ras = flip_ras_lps(np.cross(plane.direction[:, 0], plane.direction[:, 1])[None])[0]
    np.testing.assert_allclose(right, normal_ras, atol=1e-12)
    np.testing.assert_allclose(left, -right)
    with pytest.raises(ValueError, match="side"):
        valgus_axis_ras(plane, "X")


def test_angle_points_continue_the_femoral_axis():
    femoral, tibial = np.array([[10.0, 0.0], [10.0, 50.0]]), np.array([[20.0, 60.0], [30.0, 160.0]])
    np.testing.assert_allclose(atfa_angle_points_px(femoral, tibial), [[10.0, 100.0], [10.0, 50.0], [20.0, 150.0]])


def test_landmark_node_is_labelled_and_described_by_the_schema():
    plane, schema = PLANES["oblique"], load_schema("postop")
    points = knee("postop", "R", 3.0)
    node = landmark_node("Knee landmarks", schema, points, plane)
    assert (node.type, node.name, node.labels) == ("Fiducial", "Knee landmarks", schema.names)
    assert node.descriptions == tuple(lm.description for lm in schema.landmarks)
    np.testing.assert_allclose(node.positions_lps, plane.to_lps(points))
    assert not node.locked
    # Relative sizes (percent of the view height): readable however many pixels the film has.
    assert 0.5 <= node.display.glyph_scale <= 2.0 and 1.0 <= node.display.text_scale <= 3.0
    with pytest.raises(ValueError, match=r"\(181, 2\)"):
        landmark_node("x", schema, points[:-1], plane)


@pytest.mark.parametrize("kind", KINDS)
def test_derived_view_draws_outlines_defining_points_axes_and_angles(kind):
    plane, schema = PLANES["slicer-2d"], load_schema(kind)
    points = knee(kind, "R", 5.0)
    alignment = compute_alignment(points, schema, "R", plane.spacing_mm)
    view = by_role(derived_view("Case", alignment, plane, schema=schema, points_px=points))
    outlines = [v for role, v in view.items() if role.startswith("Outline.")]
    assert [v.role for v in outlines] == [f"Outline.{c['code']}" for c in schema.contours]
    outlined = [label for v in outlines for label in v.node.labels]
    assert sorted(outlined) == sorted(schema.names)  # every landmark on exactly one outline
    for contour, outline in zip(schema.contours, outlines):
        assert outline.node.type == "Curve" and not outline.points_visible
        assert outline.node.display.color == tuple(schema.groups[contour["group"]]["color"])
        np.testing.assert_allclose(outline.node.positions_lps,
                                   plane.to_lps(points[schema.indices(outline.node.labels)]))

    defining = view["DefiningPoints"].node
    m, n = len(alignment.femoral_shaft_centres_px), len(alignment.tibial_shaft_centres_px)
    assert defining.labels == (*(f"FSC{i}" for i in range(1, m + 1)), "NOTCH", "SPINE",
                               *(f"TSC{i}" for i in range(1, n + 1)))
    np.testing.assert_allclose(plane.to_px(defining.positions_lps)[:m], schema.derive(points, "femoral_shaft_centres"),
                               atol=1e-9)
    np.testing.assert_allclose(plane.to_px(defining.positions_lps)[m], schema.derive(points, "femoral_notch"),
                               atol=1e-9)
    for method in METHODS:
        for bone in ("femoral", "tibial"):
            line = view[f"Axis.{bone}.{method}"]
            np.testing.assert_allclose(plane.to_px(line.node.positions_lps),
                                       getattr(alignment, f"{bone}_axis_{method.lower()}_px"), atol=1e-9)
            assert line.node.display.color == AXIS_COLORS[method]
    assert all(v.node.locked for v in view.values())


def test_manual_view_has_no_outlines():
    plane, schema = PLANES["slicer-2d"], load_schema("preop")
    alignment = compute_alignment(knee("preop", "R", 5.0), schema, "R", plane.spacing_mm)
    assert sorted(v.role for v in derived_view("M", alignment, plane)) == sorted(
        [f"Axis.{b}.{m}" for b in ("femoral", "tibial") for m in METHODS] + [f"Angle.{m}" for m in METHODS])


def test_a_case_written_as_markups_is_valid_for_slicer(tmp_path):
    plane, schema = PLANES["oblique"], load_schema("postop")
    points = knee("postop", "L", 2.0)
    alignment = compute_alignment(points, schema, "L", plane.spacing_mm)
    view = derived_view("Case", alignment, plane, schema=schema, points_px=points)
    nodes = [landmark_node("Case", schema, points, plane), *(v.node for v in view)]
    path = write_markups(tmp_path / "case.mrk.json", nodes)
    document = json.loads(path.read_text())
    validator = jsonschema.Draft7Validator(SLICER_SCHEMA)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.path))
    assert not errors, errors[0].message
    back = read_markups(path)
    assert [n.type for n in back] == [n.type for n in nodes] and [n.name for n in back] == [n.name for n in nodes]
    np.testing.assert_allclose(back[0].positions_lps, nodes[0].positions_lps)


# --- live recompute ---------------------------------------------------------------------------

def as_point_list(name, labels, points_px, plane, order=None):
    labels = list(labels)
    positions = plane.to_lps(points_px)
    order = np.arange(len(labels)) if order is None else order
    return MarkupsNode("Fiducial", name, tuple(labels[i] for i in order), positions[order])


@pytest.mark.parametrize("kind", KINDS)
def test_recompute_follows_a_dragged_landmark(kind):
    plane, schema = PLANES["oblique"], load_schema(kind)
    points = knee(kind, "R", 5.0)
    order = np.random.default_rng(3).permutation(len(schema))
    before = recompute(as_point_list("Knee", schema.names, points, plane, order), kind, "R", plane)
    np.testing.assert_allclose(before.points_px, points, atol=1e-9)
    moved = points.copy()
    moved[schema.index("TLC06")] += (8.0, 0.0)  # drag a distal tibial cortex point sideways
    after = recompute(as_point_list("Knee", schema.names, moved, plane, order), kind, "R", plane)
    expected = compute_alignment(moved, schema, "R", plane.spacing_mm)
    assert after.alignment.atfa_fts_deg == pytest.approx(expected.atfa_fts_deg, abs=1e-9)
    assert after.alignment.atfa_fts_deg != pytest.approx(before.alignment.atfa_fts_deg, abs=1e-3)
    angle = by_role(after.view)["Angle.FTS"]
    assert slicer_signed_angle(flip_ras_lps(angle.node.positions_lps), angle.signed_axis_ras) == pytest.approx(
        expected.atfa_fts_deg, abs=1e-9)
    assert after.names == schema.names and after.kind == kind


def test_recompute_manual_points_and_their_guidance():
    plane, schema = PLANES["slicer-2d"], load_schema("preop")
    truth = compute_alignment(knee("preop", "R", 5.0), schema, "R", plane.spacing_mm)
    labels = ["femoral_shaft_centre_1", "femoral_shaft_centre_2", "femoral_notch", "tibial_spine_centre",
              "tibial_shaft_centre_1", "tibial_shaft_centre_2"]
    px = np.array([truth.femoral_shaft_centres_px[0], truth.femoral_shaft_centres_px[-1],
                   truth.femoral_axis_fnts_px[1], truth.tibial_axis_fnts_px[0],
                   truth.tibial_shaft_centres_px[0], truth.tibial_shaft_centres_px[-1]])
    update = recompute(as_point_list("Manual", labels, px, plane), "manual", "R", plane)
    assert update.alignment.atfa_fnts_deg == pytest.approx(truth.atfa_fnts_deg, abs=1e-9)
    assert not any(v.role.startswith("Outline") for v in update.view)
    unplaced = as_point_list("Manual", labels, px, plane)
    positions = unplaced.positions_lps.copy()
    positions[3] = np.nan  # the spine centre is not placed yet
    with pytest.raises(MarkupsError, match="points not placed 'tibial_spine_centre'"):
        recompute(MarkupsNode("Fiducial", "Manual", unplaced.labels, positions), "manual", "R", plane)


def test_recompute_refuses_what_cannot_be_measured():
    plane, schema = PLANES["slicer-2d"], load_schema("preop")
    points = knee("preop", "R", 5.0)
    node = as_point_list("Knee", schema.names, points, plane)
    with pytest.raises(MarkupsError, match="^point list 'Knee': missing landmarks 'FLC00'"):  # named once
        recompute(MarkupsNode("Fiducial", "Knee", node.labels[1:], node.positions_lps[1:]), "preop", "R", plane)
    lifted = node.positions_lps.copy()
    lifted[4, 2] += 3.0
    with pytest.raises(MarkupsError, match="points not in the image plane"):
        recompute(MarkupsNode("Fiducial", "Knee", node.labels, lifted), "preop", "R", plane)
    with pytest.raises(MarkupsError, match="points not in the image plane"):
        manual = MarkupsNode("Fiducial", "M", ("femoral_notch",), lifted[4:5])
        recompute(manual, "manual", "R", plane)
    with pytest.raises(GeometryError, match="contradicts the landmarks"):
        recompute(node, "preop", "L", plane)
    with pytest.raises(MarkupsError, match="unknown landmark kind 'knee'"):
        recompute(node, "knee", "R", plane)
