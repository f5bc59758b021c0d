"""Tests for KneeAlignmentLib.markups: Slicer .mrk.json files and the image plane."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from KneeAlignmentLib import markups
from KneeAlignmentLib.errors import MarkupsError
from KneeAlignmentLib.markups import (
    SCHEMA_URL,
    Display,
    ImagePlane,
    MarkupsNode,
    angle_node,
    fiducial_node,
    flip_ras_lps,
    line_node,
    read_landmarks,
    read_markups,
    write_landmarks,
    write_markups,
)

SCHEMA_PATH = Path(__file__).parent / "data" / "markups-schema-v1.0.3.json"
NAMES = (
    "femur_shaft_proximal",
    "femur_notch",
    "tibia_spine_medial",
    "tibia_plateau_lateral",
    "tibia_shaft_distal",
)


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    assert cls is jsonschema.Draft7Validator  # the draft the schema declares
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def rotation(seed: int) -> np.ndarray:
    """A seeded random proper rotation (3, 3)."""
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def oblique_plane(seed: int = 0) -> ImagePlane:
    """Anisotropic spacing, rotated axes, offset origin."""
    return ImagePlane(origin_lps=[-120.5, 33.25, 410.0], spacing_mm=(0.139, 0.171), direction=rotation(seed))


def landmarks_px(n: int = len(NAMES), seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 2000, size=(n, 2))


def write_doc(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def slicer_document(markup: dict) -> dict:
    return {"@schema": SCHEMA_URL, "markups": [markup]}


# ----------------------------------------------------------------------- ImagePlane


def test_identity_plane_is_slicer_default_for_2d_images():
    plane = ImagePlane.identity(spacing_mm=(0.2, 0.1))  # (row_mm, col_mm)
    points_px = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [3.5, 7.25]])
    expected = np.array([[0, 0, 0], [1.0, 0, 0], [0, 2.0, 0], [0.35, 1.45, 0]])
    np.testing.assert_allclose(plane.to_lps(points_px), expected, atol=1e-12)
    # Slicer shows a plain 2D image with IJK-to-RAS = diag(-col_mm, -row_mm, 1).
    from_slicer = ImagePlane.from_ijk_to_ras(np.diag([-0.1, -0.2, 1.0, 1.0]))
    np.testing.assert_allclose(from_slicer.to_lps(points_px), expected, atol=1e-12)
    assert from_slicer.spacing_mm == pytest.approx((0.2, 0.1))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_plane_round_trip_and_projection(seed):
    plane = oblique_plane(seed)
    points_px = landmarks_px(50, seed)
    points_lps = plane.to_lps(points_px)
    np.testing.assert_allclose(plane.to_px(points_lps), points_px, atol=1e-9)
    np.testing.assert_allclose(plane.off_plane_mm(points_lps), 0.0, atol=1e-9)
    # Physical distances follow the anisotropic spacing: one column = 0.171 mm, one row = 0.139 mm.
    steps = plane.to_lps(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
    assert np.linalg.norm(steps[1] - steps[0]) == pytest.approx(0.171)
    assert np.linalg.norm(steps[2] - steps[0]) == pytest.approx(0.139)
    # A point lifted off the plane projects back to the same pixel and reports its height.
    lifted = points_lps + 2.5 * plane.direction[:, 2]
    np.testing.assert_allclose(plane.to_px(lifted), points_px, atol=1e-9)
    np.testing.assert_allclose(plane.off_plane_mm(lifted), 2.5, atol=1e-9)


def test_plane_from_ijk_to_ras_matches_matrix():
    rot = rotation(7)
    spacing_ijk = np.array([0.171, 0.139, 2.0])  # column, row, slice
    ijk_to_ras = np.eye(4)
    ijk_to_ras[:3, :3] = rot * spacing_ijk
    ijk_to_ras[:3, 3] = [12.0, -40.0, 7.5]
    plane = ImagePlane.from_ijk_to_ras(ijk_to_ras.tolist())
    assert plane.spacing_mm == pytest.approx((0.139, 0.171))
    points_px = landmarks_px(20, 3)
    ijk = np.column_stack([points_px, np.zeros(len(points_px)), np.ones(len(points_px))])
    ras = (ijk_to_ras @ ijk.T).T[:, :3]
    lps = ras * [-1.0, -1.0, 1.0]
    np.testing.assert_allclose(plane.to_lps(points_px), lps, atol=1e-9)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"origin_lps": [0, 0], "spacing_mm": (1, 1), "direction": np.eye(3)}, "origin_lps"),
        ({"origin_lps": [0, 0, 0], "spacing_mm": (1, 0), "direction": np.eye(3)}, "spacing_mm"),
        ({"origin_lps": [0, 0, 0], "spacing_mm": 1.0, "direction": np.eye(3)}, "spacing_mm"),
        ({"origin_lps": [0, 0, 0], "spacing_mm": (1, 1), "direction": np.diag([1, 2, 1])}, "orthonormal"),
        ({"origin_lps": [0, 0, np.nan], "spacing_mm": (1, 1), "direction": np.eye(3)}, "origin_lps"),
    ],
)
def test_plane_rejects_bad_geometry(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ImagePlane(**kwargs)


def test_plane_rejects_sheared_or_non_affine_matrix():
    sheared = np.eye(4)
    sheared[0, 1] = 0.3
    with pytest.raises(ValueError, match="orthonormal"):
        ImagePlane.from_ijk_to_ras(sheared)
    projective = np.eye(4)
    projective[3, 0] = 0.1
    with pytest.raises(ValueError, match="affine"):
        ImagePlane.from_ijk_to_ras(projective)


def test_plane_arrays_are_read_only():
    plane = oblique_plane()
    with pytest.raises(ValueError):
        plane.origin_lps[0] = 1.0


# ------------------------------------------------------------------- schema validity


def written_kinds(tmp_path: Path) -> dict[str, Path]:
    plane = oblique_plane()
    points_lps = plane.to_lps(landmarks_px())
    with_undefined = points_lps.copy()
    with_undefined[2] = np.nan
    return {
        "fiducials": write_markups(
            tmp_path / "f.mrk.json", fiducial_node("Landmarks", NAMES, points_lps, NAMES)
        ),
        "fiducials_undefined": write_markups(
            tmp_path / "u.mrk.json", fiducial_node("Landmarks", NAMES, with_undefined)
        ),
        "line": write_markups(tmp_path / "l.mrk.json", line_node("Femoral axis", points_lps[:2])),
        "angle": write_markups(tmp_path / "a.mrk.json", angle_node("aTFA", points_lps[:3])),
        "several": write_markups(
            tmp_path / "s.mrk.json",
            [
                fiducial_node("Landmarks", NAMES, points_lps),
                line_node("Femoral axis", points_lps[:2]),
                line_node("Tibial axis", points_lps[3:5]),
                angle_node("aTFA", points_lps[[0, 2, 4]]),
            ],
        ),
        "landmarks": write_landmarks(tmp_path / "w.mrk.json", NAMES, landmarks_px(), plane),
    }


def test_every_written_kind_validates_against_slicer_schema(tmp_path, validator):
    for kind, path in written_kinds(tmp_path).items():
        document = json.loads(path.read_text(encoding="utf-8"))
        errors = sorted(validator.iter_errors(document), key=str)
        assert not errors, f"{kind}: {errors[0].message}"


def test_validator_rejects_documents_slicer_would_not_read(tmp_path, validator):
    document = json.loads(written_kinds(tmp_path)["line"].read_text(encoding="utf-8"))
    bad_position = json.loads(json.dumps(document))
    bad_position["markups"][0]["controlPoints"][0]["position"] = [1.0, 2.0]
    bad_system = json.loads(json.dumps(document))
    bad_system["markups"][0]["coordinateSystem"] = "XYZ"
    no_markups = {"@schema": SCHEMA_URL}
    for bad in (bad_position, bad_system, no_markups):
        assert not validator.is_valid(bad)


def test_written_file_has_slicer_structure(tmp_path):
    path = written_kinds(tmp_path)["fiducials_undefined"]
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["@schema"] == SCHEMA_URL
    (markup,) = document["markups"]
    assert list(markup)[:3] == ["type", "name", "coordinateSystem"]
    assert (markup["type"], markup["coordinateSystem"], markup["coordinateUnits"]) == (
        "Fiducial",
        "LPS",
        "mm",
    )
    assert markup["lastUsedControlPointNumber"] == len(NAMES)
    points = markup["controlPoints"]
    assert [p["id"] for p in points] == ["1", "2", "3", "4", "5"]
    assert [p["label"] for p in points] == list(NAMES)
    assert [p["positionStatus"] for p in points] == ["defined", "defined", "undefined", "defined", "defined"]
    assert "position" not in points[2] and len(points[0]["position"]) == 3
    assert points[0]["orientation"] == [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0]
    assert path.read_text(encoding="utf-8").startswith('{\n    "@schema"')  # Slicer's 4-space layout


def test_display_parameters_are_written(tmp_path):
    display = Display(color=(0.1, 0.2, 0.3), glyph_scale=2.0, text_scale=4.0, point_labels_visible=False)
    node = fiducial_node("L", NAMES[:1], [[1.0, 2.0, 3.0]], display=display)
    path = write_markups(tmp_path / "d.mrk.json", node)
    shown = json.loads(path.read_text(encoding="utf-8"))["markups"][0]["display"]
    # Slicer draws selected points (the default) in selectedColor: both carry the colour.
    assert shown["color"] == shown["selectedColor"] == [0.1, 0.2, 0.3]
    assert (shown["glyphScale"], shown["textScale"], shown["pointLabelsVisibility"]) == (2.0, 4.0, False)
    assert shown["useGlyphScale"] is True
    (read,) = read_markups(path)
    assert read.display == display


@pytest.mark.parametrize(
    "kwargs",
    [
        {"color": (1.2, 0.0, 0.0)},
        {"color": (0.5, 0.5)},
        {"glyph_scale": 0.0},
        {"text_scale": math.nan},
        {"opacity": 2.0},
    ],
)
def test_display_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        Display(**kwargs)


# ------------------------------------------------------------------------ round trip


@pytest.mark.parametrize("seed", [0, 5])
def test_landmarks_round_trip_through_oblique_plane(tmp_path, seed):
    plane = oblique_plane(seed)
    points_px = landmarks_px(seed=seed)
    path = write_landmarks(
        tmp_path / "lm.mrk.json", NAMES, points_px, plane, descriptions=[n.upper() for n in NAMES]
    )
    (node,) = read_markups(path)
    np.testing.assert_allclose(node.positions_lps, plane.to_lps(points_px), atol=1e-6)
    assert node.labels == NAMES and node.descriptions == tuple(n.upper() for n in NAMES)
    np.testing.assert_allclose(read_landmarks(path, NAMES, plane), points_px, atol=1e-6)
    # Reading in another order returns the points in that order.
    order = [3, 0, 4, 1, 2]
    np.testing.assert_allclose(
        read_landmarks(path, [NAMES[i] for i in order], plane), points_px[order], atol=1e-6
    )


def test_line_and_angle_round_trip_with_measurements(tmp_path):
    plane = ImagePlane.identity(spacing_mm=(0.2, 0.1))
    femoral = plane.to_lps(np.array([[100.0, 0.0], [100.0, 500.0]]))  # 100 mm down the rows
    vertex_arms = plane.to_lps(np.array([[0.0, 0.0], [100.0, 0.0], [100.0, 50.0]]))  # 10 mm and 10 mm arms
    path = write_markups(
        tmp_path / "axes.mrk.json", [line_node("Femoral axis", femoral), angle_node("A", vertex_arms)]
    )
    line, angle = read_markups(path)
    assert (line.type, line.name, angle.type, angle.name) == ("Line", "Femoral axis", "Angle", "A")
    assert line.labels == ("Femoral axis-1", "Femoral axis-2")
    length = line.measurement("length")
    assert (length.value, length.units) == (pytest.approx(100.0), "mm")
    degrees = angle.measurement("angle")
    assert (degrees.value, degrees.units) == (pytest.approx(90.0), "deg")
    np.testing.assert_allclose(angle.positions_lps, vertex_arms, atol=1e-12)


def test_angle_measurement_is_unsigned_and_undefined_when_degenerate():
    obtuse = angle_node("A", [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [-1.0, 1.0, 0.0]])
    assert obtuse.measurement("angle").value == pytest.approx(135.0)
    collapsed = angle_node("A", [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    assert collapsed.measurement("angle").value is None


def test_undefined_points_round_trip_as_nan(tmp_path):
    points_px = landmarks_px()
    points_px[1] = np.nan
    path = write_landmarks(tmp_path / "p.mrk.json", NAMES, points_px)
    (node,) = read_markups(path)
    assert node.defined.tolist() == [True, False, True, True, True]
    assert np.isnan(node.positions_lps[1]).all()
    with pytest.raises(MarkupsError, match=r"missing landmarks 'femur_notch'"):
        read_landmarks(path, NAMES)


def test_overwrite_is_atomic_and_leaves_no_temporary_files(tmp_path, monkeypatch):
    path = write_landmarks(tmp_path / "a.mrk.json", NAMES, landmarks_px(seed=1))
    before = path.read_bytes()

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(markups.os, "replace", failing_replace)
    with pytest.raises(MarkupsError, match=r"a\.mrk\.json: cannot write"):
        write_landmarks(path, NAMES, landmarks_px(seed=2))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mrk.json"]
    write_landmarks(path, NAMES, landmarks_px(seed=2))
    np.testing.assert_allclose(read_landmarks(path, NAMES), landmarks_px(seed=2), atol=1e-9)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mrk.json"]


def test_write_into_missing_folder_raises(tmp_path):
    with pytest.raises(MarkupsError, match=r"x\.mrk\.json: cannot write"):
        write_landmarks(tmp_path / "nope" / "x.mrk.json", NAMES, landmarks_px())


def test_write_rejects_nodes_slicer_cannot_hold(tmp_path):
    three_point_line = MarkupsNode("Line", "L", ("a", "b", "c"), np.zeros((3, 3)))
    with pytest.raises(MarkupsError, match="Line node 'L' needs 2 control points"):
        write_markups(tmp_path / "l.mrk.json", three_point_line)
    with pytest.raises(MarkupsError, match="no markups nodes"):
        write_markups(tmp_path / "e.mrk.json", [])
    with pytest.raises(ValueError, match="3 control points"):
        angle_node("A", np.zeros((2, 3)))
    with pytest.raises(ValueError, match="all NaN"):
        fiducial_node("F", ["a"], [[1.0, np.nan, 0.0]])
    with pytest.raises(ValueError, match="labels"):
        fiducial_node("F", ["a", "b"], np.zeros((3, 3)))
    assert not any(tmp_path.iterdir())


# -------------------------------------------------------------------- Slicer's files


def slicer_point(label: str, position, status: str = "defined") -> dict:
    """A control point as Slicer 5.x writes it."""
    return {
        "id": label,
        "label": label,
        "description": "",
        "associatedNodeID": "vtkMRMLScalarVolumeNode1",
        "position": position,
        "orientation": [-1.0, -0.0, -0.0, -0.0, -1.0, -0.0, 0.0, 0.0, 1.0],
        "selected": True,
        "locked": False,
        "visibility": True,
        "positionStatus": status,
    }


def test_reads_ras_file_by_flipping_x_and_y(tmp_path):
    plane = ImagePlane.identity(spacing_mm=(0.15, 0.15))
    points_px = landmarks_px()
    lps = plane.to_lps(points_px)
    ras = lps * [-1.0, -1.0, 1.0]
    markup = {
        "type": "Fiducial",
        "coordinateSystem": "RAS",
        "controlPoints": [slicer_point(n, p.tolist()) for n, p in zip(NAMES, ras, strict=True)],
    }
    path = write_doc(tmp_path / "ras.mrk.json", slicer_document(markup))
    (node,) = read_markups(path)
    np.testing.assert_allclose(node.positions_lps, lps, atol=1e-9)
    assert node.name == "ras"  # unnamed nodes take the file name, as in Slicer
    np.testing.assert_allclose(read_landmarks(path, NAMES, plane), points_px, atol=1e-6)


def test_reads_slicer_undefined_and_missing_points_and_micrometres(tmp_path):
    markup = {
        "type": "Fiducial",
        "coordinateSystem": "LPS",
        "coordinateUnits": ["um", "UCUM", "micrometer"],
        "controlPoints": [
            slicer_point("a", [1000.0, 2000.0, 0.0]),
            slicer_point("b", "", "undefined"),  # Slicer writes an empty string here
            slicer_point("c", "", "missing"),  # newer Slicer: skipped on purpose
            slicer_point("d", [5.0, 5.0, 0.0], "preview"),
        ],
        "measurements": [{"name": "length", "enabled": False, "units": ["mm", "UCUM", "millimeter"]}],
    }
    (node,) = read_markups(write_doc(tmp_path / "s.mrk.json", slicer_document(markup)))
    assert node.defined.tolist() == [True, False, False, False]
    np.testing.assert_allclose(node.positions_lps[0], [1.0, 2.0, 0.0])
    assert node.measurement("length").value is None and node.measurement("length").units == "mm"


def test_read_landmarks_picks_the_landmark_list_among_several_nodes(tmp_path):
    points_lps = ImagePlane.identity().to_lps(landmarks_px())
    nodes = [
        line_node("Femoral axis", points_lps[:2]),
        fiducial_node("Other", ["x"], [[1.0, 1.0, 0.0]]),
        fiducial_node("Landmarks", NAMES, points_lps),
    ]
    path = write_markups(tmp_path / "m.mrk.json", nodes)
    assert [node.name for node in read_markups(path)] == ["Femoral axis", "Other", "Landmarks"]
    np.testing.assert_allclose(read_landmarks(path, NAMES), landmarks_px(), atol=1e-9)
    second = write_markups(tmp_path / "two.mrk.json", [*nodes, fiducial_node("Copy", NAMES, points_lps)])
    with pytest.raises(MarkupsError, match="several point lists carry landmark labels"):
        read_landmarks(second, NAMES)
    np.testing.assert_allclose(read_landmarks(second, NAMES, node_name="Copy"), landmarks_px(), atol=1e-9)
    with pytest.raises(MarkupsError, match="no point list named 'Nope'"):
        read_landmarks(second, NAMES, node_name="Nope")


# ----------------------------------------------------------------------- bad labels


def test_read_landmarks_names_unknown_duplicated_and_missing_labels(tmp_path):
    points_lps = np.zeros((5, 3))
    labels = [NAMES[0], NAMES[1], NAMES[1], "patella_top", NAMES[3]]
    path = write_markups(tmp_path / "bad.mrk.json", fiducial_node("Landmarks", labels, points_lps))
    with pytest.raises(MarkupsError) as caught:
        read_landmarks(path, NAMES)
    message = str(caught.value)
    assert message.startswith("bad.mrk.json: point list 'Landmarks'")
    assert "unknown labels 'patella_top'" in message
    assert "duplicated labels 'femur_notch'" in message
    assert "missing landmarks 'tibia_spine_medial', 'tibia_shaft_distal'" in message


def test_read_landmarks_rejects_points_off_the_image_plane(tmp_path):
    plane = oblique_plane()
    points_lps = plane.to_lps(landmarks_px())
    points_lps[3] += 4.0 * plane.direction[:, 2]
    path = write_markups(tmp_path / "off.mrk.json", fiducial_node("Landmarks", NAMES, points_lps))
    with pytest.raises(MarkupsError, match=r"points not in the image plane .*'tibia_plateau_lateral'"):
        read_landmarks(path, NAMES, plane)
    # Within the tolerance the point is projected onto the plane.
    np.testing.assert_allclose(
        read_landmarks(path, NAMES, plane, tolerance_mm=5.0), landmarks_px(), atol=1e-6
    )


# ------------------------------------------------------------------------ bad files


def valid_markup() -> dict:
    return {
        "type": "Fiducial",
        "coordinateSystem": "LPS",
        "controlPoints": [slicer_point("a", [1.0, 2.0, 3.0])],
    }


def with_point(**changes) -> dict:
    markup = valid_markup()
    markup["controlPoints"][0].update(changes)
    return slicer_document(markup)


@pytest.mark.parametrize(
    "content, problem",
    [
        ("{not json", "not a JSON file"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        ("[1, 2, 3]", "top level is not a JSON object"),
        (json.dumps({"markups": [valid_markup()]}), "no '@schema'"),
        (
            json.dumps({"@schema": "https://example.org/other-schema.json", "markups": []}),
            "not Slicer's markups schema",
        ),
        (json.dumps({"@schema": SCHEMA_URL, "markups": []}), "no 'markups' array, or it is empty"),
        (json.dumps({"@schema": SCHEMA_URL, "markups": {"type": "Fiducial"}}), "no 'markups' array"),
        (json.dumps(slicer_document({"type": "Ruler"})), "'type' must be one of"),
        (json.dumps(slicer_document({"coordinateSystem": "LPS"})), "'type' must be one of"),
        (
            json.dumps(slicer_document({**valid_markup(), "coordinateSystem": "IJK"})),
            "coordinateSystem must be",
        ),
        (json.dumps(slicer_document({**valid_markup(), "coordinateUnits": "cm"})), "coordinateUnits must be"),
        (
            json.dumps(slicer_document({**valid_markup(), "controlPoints": {}})),
            "'controlPoints' must be list",
        ),
        (json.dumps(with_point(position=[1.0, 2.0])), "position is not 3 numbers"),
        (json.dumps(with_point(position="")), "position is not 3 numbers"),
        (json.dumps(with_point(position=[1.0, "2", 3.0])), "must be a finite number"),
        (json.dumps(with_point(position=[1.0, True, 3.0])), "must be a finite number"),
        (json.dumps(with_point(position=[1.0, float("nan"), 3.0])), "must be a finite number"),
        (json.dumps(with_point(position=[1.0, float("inf"), 3.0])), "must be a finite number"),
        (json.dumps(with_point(positionStatus="placed")), "unknown positionStatus 'placed'"),
        (json.dumps(with_point(label=7)), "'label' must be str"),
        (json.dumps(slicer_document({**valid_markup(), "measurements": [{"value": 1.0}]})), "string 'name'"),
        (json.dumps(slicer_document({**valid_markup(), "display": {"color": [2, 0, 0]}})), "invalid display"),
    ],
)
def test_bad_files_raise_markups_error_naming_file_and_problem(tmp_path, content, problem):
    path = tmp_path / "patient folder" / "case.mrk.json"
    path.parent.mkdir()
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(MarkupsError) as caught:
        read_markups(path)
    message = str(caught.value)
    assert message.startswith("case.mrk.json")
    assert problem in message
    assert "patient folder" not in message  # the basename only, never the full path


def test_nan_literal_in_file_is_rejected(tmp_path):
    path = tmp_path / "nan.mrk.json"
    text = json.dumps(slicer_document(valid_markup())).replace("[1.0, 2.0, 3.0]", "[1.0, NaN, 3.0]")
    assert "NaN" in text
    path.write_text(text, encoding="utf-8")
    with pytest.raises(MarkupsError, match=r"nan\.mrk\.json: markups\[0\]\.controlPoints\[0\]: position"):
        read_markups(path)


def test_missing_file_raises_markups_error(tmp_path):
    with pytest.raises(MarkupsError, match=r"absent\.mrk\.json: cannot read"):
        read_markups(tmp_path / "absent.mrk.json")
    with pytest.raises(MarkupsError, match=r"absent\.mrk\.json"):
        read_landmarks(tmp_path / "absent.mrk.json", NAMES)


def test_read_landmarks_requires_unique_names(tmp_path):
    path = write_landmarks(tmp_path / "u.mrk.json", NAMES, landmarks_px())
    with pytest.raises(ValueError, match="unique"):
        read_landmarks(path, [NAMES[0], NAMES[0]])


def test_written_files_keep_umask_permissions(tmp_path):
    path = write_landmarks(tmp_path / "perm.mrk.json", NAMES, landmarks_px())
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_ras_lps_flip_is_its_own_inverse_and_matches_the_plane():
    positions = np.random.default_rng(4).normal(size=(5, 3))
    np.testing.assert_allclose(flip_ras_lps(positions)[:, :2], -positions[:, :2])
    np.testing.assert_allclose(flip_ras_lps(flip_ras_lps(positions)), positions)
    ijk_to_ras = np.diag([0.2, 0.3, 1.0, 1.0])
    ijk_to_ras[:3, 3] = (5.0, -7.0, 2.0)
    plane = ImagePlane.from_ijk_to_ras(ijk_to_ras)
    np.testing.assert_allclose(plane.origin_lps, flip_ras_lps(ijk_to_ras[None, :3, 3])[0])
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        flip_ras_lps(np.zeros((3, 2)))
