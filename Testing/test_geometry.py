"""Alignment geometry against analytic constructions: posed bones, offsets, spacing, joint space.

Landmark sets are built from the schema template (a right knee in mm, lateral = -x,
y distal) by rotating the femur and the tibia rigidly about the knee centre. A rotation
by +t in image coordinates moves a bone's distal end towards -x, so a femur turned by
phi and a tibia turned by theta have aTFA = theta - phi (valgus positive).
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from KneeAlignmentLib.errors import GeometryError
from KneeAlignmentLib.case_view import format_alignment
from KneeAlignmentLib.geometry import (
    NEUTRAL_TOLERANCE_DEG,
    Alignment,
    alignment_label,
    atfa_from_defining_points,
    compute_alignment,
    infer_side,
    outside_image,
)
from KneeAlignmentLib.schema import KINDS, example_landmarks_px, load_schema

PRE, POST = load_schema("preop"), load_schema("postop")
PX_PER_MM = 1 / 0.15
CENTRE_PX = np.array([800.0, 1000.0])
ANGLES = ("atfa_fts_deg", "atfa_fnts_deg", "aldfa_deg", "mpta_deg", "jlca_deg",
          "femoral_component_alpha_deg", "tibial_component_beta_deg")
LABELS = ("label_fts", "label_fnts")
AXES = ("femoral_axis_fts_px", "tibial_axis_fts_px", "femoral_axis_fnts_px", "tibial_axis_fnts_px",
        "femoral_shaft_centres_px", "tibial_shaft_centres_px")


def rotation(deg: float) -> np.ndarray:
    t = math.radians(deg)
    return np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])


def moves_with_tibia(schema) -> np.ndarray:
    """(K,) True for landmarks rigidly attached to the tibia (tibia, fibula, tibial implant)."""
    return np.array([lm.name[0] == "T" or lm.group in ("fibula", "tibial_component", "tibial_insert")
                     for lm in schema.landmarks])


def template(schema, **moved_mm) -> np.ndarray:
    """(K, 2) template in mm with some landmarks moved to given (x, y) mm."""
    pts = schema.template_mm.copy()
    for name, xy in moved_mm.items():
        pts[schema.index(name)] = xy
    return pts


def pose(schema, femur_deg=0.0, tibia_deg=0.0, pts_mm=None) -> np.ndarray:
    """(K, 2) px: femur and tibia turned rigidly about the knee centre, placed in an image."""
    pts = (schema.template_mm if pts_mm is None else pts_mm).copy()
    lower = moves_with_tibia(schema)
    pts[~lower] = pts[~lower] @ rotation(femur_deg).T
    pts[lower] = pts[lower] @ rotation(tibia_deg).T
    return pts * PX_PER_MM + CENTRE_PX


def assert_same_angles(a: Alignment, b: Alignment, abs_tol=1e-9):
    for name in ANGLES:
        va, vb = getattr(a, name), getattr(b, name)
        assert (va is None) == (vb is None), name
        if va is not None:
            assert va == pytest.approx(vb, abs=abs_tol), name
    for name in LABELS:
        assert getattr(a, name) == getattr(b, name), name


def assert_same_lengths(a: Alignment, b: Alignment, names=("jsw_lateral_px", "jsw_medial_px", "jsw_lateral_mm",
                                                             "jsw_medial_mm")):
    for name in names:
        va, vb = getattr(a, name), getattr(b, name)
        assert va == vb if vb is None else va == pytest.approx(vb, rel=1e-12), name


# --- aTFA on posed bones ----------------------------------------------------------------

def test_template_fnts_axes_are_collinear_with_the_shafts():
    """Why FTS equals FNTS on posed templates: notch and spine centre lie on the shaft lines."""
    t = PRE.template_mm
    np.testing.assert_allclose(PRE.derive(t, "femoral_shaft_centres")[:, 0], 0.0, atol=1e-12)
    np.testing.assert_allclose(PRE.derive(t, "tibial_shaft_centres")[:, 0], 0.0, atol=1e-12)
    assert PRE.derive(t, "femoral_notch")[0] == 0.0
    assert PRE.derive(t, "tibial_spine_centre")[0] == 0.0


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("femur_deg, tibia_deg", [(0, 0), (0, 6), (0, -9), (3, 11), (-20, -14), (35, 20), (170, 176)])
def test_posed_bones_give_the_constructed_angle(kind, femur_deg, tibia_deg):
    schema = load_schema(kind)
    a = compute_alignment(pose(schema, femur_deg, tibia_deg), schema, "R", (0.15, 0.15))
    expected = tibia_deg - femur_deg
    assert a.atfa_fts_deg == pytest.approx(expected, abs=1e-9)
    assert a.atfa_fnts_deg == pytest.approx(expected, abs=1e-9)
    assert a.label_fts == a.label_fnts == alignment_label(expected)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("valgus", [-8.0, 0.0, 5.0, 12.5])
def test_schema_example_landmarks_have_their_valgus(kind, valgus):
    schema = load_schema(kind)
    a = compute_alignment(example_landmarks_px(kind, atfa_valgus_deg=valgus), schema, "R", (0.15, 0.15))
    assert a.atfa_fts_deg == pytest.approx(valgus, abs=1e-9)
    assert a.atfa_fnts_deg == pytest.approx(valgus, abs=1e-9)


@pytest.mark.parametrize("notch_lateral_mm, spines_medial_mm", [(3.0, 0.0), (0.0, 2.0), (-4.0, 1.5)])
def test_fnts_differs_from_fts_by_the_analytic_offset(notch_lateral_mm, spines_medial_mm):
    """Moving the notch laterally tilts the FNTS femoral axis laterally (less valgus);
    moving the spines medially tilts the FNTS tibial axis laterally (more valgus)."""
    t = PRE.template_mm
    notch = PRE.derive(t, "femoral_notch")
    spine = PRE.derive(t, "tibial_spine_centre")
    femoral_length = notch[1] - PRE.derive(t, "femoral_shaft_centres")[:, 1].mean()
    tibial_length = PRE.derive(t, "tibial_shaft_centres")[:, 1].mean() - spine[1]
    assert femoral_length == pytest.approx(66.0) and tibial_length > 60

    shift = np.array([spines_medial_mm, 0.0])
    moved = template(PRE, FNT04=notch - [notch_lateral_mm, 0.0],
                     TSP01=t[PRE.index("TSP01")] + shift, TSP05=t[PRE.index("TSP05")] + shift)
    a = compute_alignment(pose(PRE, 4.0, 10.0, moved), PRE, "R", (0.15, 0.15))
    assert a.atfa_fts_deg == pytest.approx(6.0, abs=1e-9)
    expected = 6.0 - math.degrees(math.atan(notch_lateral_mm / femoral_length)) \
        + math.degrees(math.atan(spines_medial_mm / tibial_length))
    assert a.atfa_fnts_deg == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("tibia_deg, value_sign, label", [
    (-6.0, -1, "varus"), (6.0, 1, "valgus"), (0.0, 0, "neutral"), (0.3, 1, "neutral"), (-0.6, -1, "varus")])
def test_varus_is_negative_and_labels_follow_the_sign(tibia_deg, value_sign, label):
    a = compute_alignment(pose(PRE, 0.0, tibia_deg), PRE, "R")
    assert np.sign(round(a.atfa_fts_deg, 9)) == value_sign
    assert a.label_fts == a.label_fnts == label


def test_alignment_label_thresholds():
    assert alignment_label(NEUTRAL_TOLERANCE_DEG) == "valgus"
    assert alignment_label(-NEUTRAL_TOLERANCE_DEG) == "varus"
    assert alignment_label(np.nextafter(NEUTRAL_TOLERANCE_DEG, 0)) == "neutral"
    assert alignment_label(-15.0) == "varus" and alignment_label(15.0) == "valgus"


# --- invariances --------------------------------------------------------------------------

def jittered(schema, femur_deg, tibia_deg, seed):
    rng = np.random.default_rng(seed)
    return pose(schema, femur_deg, tibia_deg) + rng.normal(0.0, 2.0, size=(len(schema), 2))


@pytest.mark.parametrize("kind", KINDS)
def test_invariant_under_rotation_translation_and_uniform_scale(kind):
    schema = load_schema(kind)
    rng = np.random.default_rng(7)
    base_pts = jittered(schema, 2.0, 9.0, seed=1)
    base = compute_alignment(base_pts, schema, "R")
    for _ in range(6):
        angle, scale = rng.uniform(-180, 180), rng.uniform(0.3, 4.0)
        shift = rng.uniform(-5000, 5000, size=2)
        matrix = scale * rotation(angle)
        moved = base_pts @ matrix.T + shift
        a = compute_alignment(moved, schema, "R")
        assert_same_angles(a, base)
        for name in ("jsw_lateral_px", "jsw_medial_px"):
            if getattr(base, name) is not None:
                assert getattr(a, name) == pytest.approx(scale * getattr(base, name), rel=1e-9)
        for name in AXES:
            np.testing.assert_allclose(getattr(a, name), getattr(base, name) @ matrix.T + shift, atol=1e-6)
        assert infer_side(moved, schema) == "R"


@pytest.mark.parametrize("kind", KINDS)
def test_mirroring_a_right_knee_into_a_left_one_keeps_every_value(kind):
    schema = load_schema(kind)
    width = 1600.0
    right = jittered(schema, -3.0, 4.0, seed=2)
    left = right * [-1.0, 1.0] + [width, 0.0]
    a_right = compute_alignment(right, schema, "R", (0.2, 0.1))
    a_left = compute_alignment(left, schema, "L", (0.2, 0.1))
    assert a_left.side == "L"
    assert_same_angles(a_left, a_right)
    assert_same_lengths(a_left, a_right)
    np.testing.assert_allclose(a_left.femoral_axis_fts_px, a_right.femoral_axis_fts_px * [-1, 1] + [width, 0])
    assert infer_side(left, schema) == "L"
    with pytest.raises(GeometryError, match="fibula"):
        compute_alignment(left, schema, "R")


@pytest.mark.parametrize("kind", KINDS)
def test_swapping_lateral_and_medial_names_changes_nothing(kind):
    """Pairs are used symmetrically and compartments found by position, so results do not
    depend on whether pair names are anatomical or image-side specific."""
    schema = load_schema(kind)
    pts = jittered(schema, 1.0, -5.0, seed=3)
    a = compute_alignment(pts, schema, "R", (0.15, 0.15))
    b = compute_alignment(pts[schema.mirror_permutation], schema, "R", (0.15, 0.15))
    assert_same_angles(a, b, abs_tol=1e-12)
    assert_same_lengths(a, b)


# --- pixel spacing --------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("tibia_deg", [7.0, -11.0])
def test_anisotropic_spacing_is_applied_before_angles(kind, tibia_deg):
    schema = load_schema(kind)
    square = pose(schema, 0.0, tibia_deg)  # femur upright: stretching x keeps it upright
    stretched = square * [2.0, 1.0]
    reference = compute_alignment(square, schema, "R", (1.0, 1.0))
    right = compute_alignment(stretched, schema, "R", (1.0, 0.5))
    assert_same_angles(right, reference)
    assert_same_lengths(right, reference, names=("jsw_lateral_mm", "jsw_medial_mm"))
    for name in AXES:
        np.testing.assert_allclose(getattr(right, name), getattr(reference, name) * [2.0, 1.0], atol=1e-9)

    # reading the stretched image as square: tan(angle) doubles
    wrong = compute_alignment(stretched, schema, "R", (1.0, 1.0))
    expected = math.degrees(math.atan(2.0 * math.tan(math.radians(tibia_deg))))
    assert wrong.atfa_fts_deg == pytest.approx(expected, abs=1e-9)
    assert wrong.atfa_fnts_deg == pytest.approx(expected, abs=1e-9)


def test_unknown_spacing_takes_pixels_as_square():
    pts = jittered(PRE, 2.0, 8.0, seed=4)
    unknown = compute_alignment(pts, PRE, "R")
    square = compute_alignment(pts, PRE, "R", (0.3, 0.3))
    assert_same_angles(unknown, square)
    assert not unknown.spacing_known and square.spacing_known
    assert unknown.jsw_lateral_mm is None and unknown.jsw_medial_mm is None
    assert square.jsw_lateral_mm == pytest.approx(0.3 * square.jsw_lateral_px, rel=1e-12)
    assert square.jsw_medial_mm == pytest.approx(0.3 * square.jsw_medial_px, rel=1e-12)


# --- joint-line orientation and component angles -----------------------------------------------

def tilted_line(lateral_name, medial_name, half_width, y, medial_down_deg):
    """Two landmarks at x = -/+half_width, the medial one lower (distal) by the given slope."""
    dy = half_width * math.tan(math.radians(medial_down_deg))
    return {lateral_name: (-half_width, y - dy), medial_name: (half_width, y + dy)}


@pytest.mark.parametrize("condyles_deg, plateau_deg", [(9.0, 3.0), (0.0, 0.0), (2.0, 7.0), (-4.0, 5.0)])
def test_joint_line_angles_analytic(condyles_deg, plateau_deg):
    """Upright bones; condylar and plateau lines with their medial ends lower by the given angles:
    aLDFA = 90 - condyles, MPTA = 90 - plateau, JLCA = condyles - plateau (converging medially)."""
    moved = template(PRE, **tilted_line("FLK06", "FMK06", 22.0, -3.0, condyles_deg),
                     **tilted_line("TLP00", "TMP00", 37.0, 5.0, plateau_deg))
    for turn in (0.0, 25.0):  # the same knee, also turned as a whole
        a = compute_alignment(pose(PRE, turn, turn, moved), PRE, "R", (0.15, 0.15))
        assert a.aldfa_deg == pytest.approx(90.0 - condyles_deg, abs=1e-9)
        assert a.mpta_deg == pytest.approx(90.0 - plateau_deg, abs=1e-9)
        assert a.jlca_deg == pytest.approx(condyles_deg - plateau_deg, abs=1e-9)
        assert a.femoral_component_alpha_deg is None and a.tibial_component_beta_deg is None


def test_atfa_is_mpta_minus_aldfa_minus_jlca():
    for seed in range(5):
        a = compute_alignment(jittered(PRE, seed - 2.0, 3.0 * seed - 4.0, seed), PRE, "R", (0.14, 0.16))
        assert a.atfa_fts_deg == pytest.approx(a.mpta_deg - a.aldfa_deg - a.jlca_deg, abs=1e-9)


@pytest.mark.parametrize("femoral_deg, tray_deg", [(6.0, 0.0), (0.0, 2.0), (-3.0, -4.0)])
def test_component_angles_analytic(femoral_deg, tray_deg):
    """Femoral component with its medial condyle lower by f: alpha = 90 + f (medial, femoral side);
    tray with its medial end lower by b: beta = 90 - b (medial, tibial side); any bone pose."""
    moved = template(POST, **tilted_line("CFL06", "CFM06", 22.0, -3.5, femoral_deg),
                     **tilted_line("CTL00", "CTM00", 37.0, 14.0, tray_deg))
    for femur, tibia in ((0.0, 0.0), (4.0, 10.0), (-30.0, -36.0)):
        a = compute_alignment(pose(POST, femur, tibia, moved), POST, "R", (0.15, 0.15))
        assert a.femoral_component_alpha_deg == pytest.approx(90.0 + femoral_deg, abs=1e-9)
        assert a.tibial_component_beta_deg == pytest.approx(90.0 - tray_deg, abs=1e-9)
        assert a.aldfa_deg is a.mpta_deg is a.jlca_deg is a.jsw_lateral_px is a.jsw_medial_mm is None


# --- joint space -------------------------------------------------------------------------------

def joint_space_case(medial_tibia_y: float) -> np.ndarray:
    """Upright right knee in px with hand-made condyle and plateau outlines.

    Lateral: flat condyle at y = 990 (vertices every 15 px from x = 560) over a plateau
    whose peak vertex (630, 1002) lies between two condyle vertices: the gap is 12 px,
    although the nearest vertices are sqrt(12^2 + 5^2) px apart. Medial: a V-shaped
    condyle, lowest vertex (965, 990), over a flat plateau at y = medial_tibia_y.
    """
    pts = pose(PRE)
    spaces = PRE.definitions["joint_space"]
    x = 560.0 + 15.0 * np.arange(11)
    pts[PRE.indices(spaces["lateral"]["femur"])] = np.stack([x, np.full(11, 990.0)], axis=1)
    x = 570.0 + 20.0 * np.arange(8)
    pts[PRE.indices(spaces["lateral"]["tibia"])] = np.stack([x, np.where(x == 630.0, 1002.0, 1032.0)], axis=1)
    x = 890.0 + 15.0 * np.arange(11)
    pts[PRE.indices(spaces["medial"]["femur"])] = np.stack([x, 990.0 - 0.5 * np.abs(x - 965.0)], axis=1)
    x = 900.0 + 20.0 * np.arange(8)
    pts[PRE.indices(spaces["medial"]["tibia"])] = np.stack([x, np.full(8, medial_tibia_y)], axis=1)
    return pts


def test_joint_space_width_is_the_segment_distance():
    a = compute_alignment(joint_space_case(997.0), PRE, "R", (0.2, 0.1))
    assert a.jsw_lateral_px == pytest.approx(12.0, abs=1e-9)
    assert a.jsw_medial_px == pytest.approx(7.0, abs=1e-9)
    # the gaps are vertical, so rows' spacing alone converts them
    assert a.jsw_lateral_mm == pytest.approx(12.0 * 0.2, abs=1e-9)
    assert a.jsw_medial_mm == pytest.approx(7.0 * 0.2, abs=1e-9)


def test_crossing_outlines_have_zero_joint_space():
    a = compute_alignment(joint_space_case(985.0), PRE, "R", (0.2, 0.1))
    assert a.jsw_medial_px == 0.0 and a.jsw_medial_mm == 0.0
    assert a.jsw_lateral_px == pytest.approx(12.0, abs=1e-9)


# --- outputs -----------------------------------------------------------------------------------

def test_axes_and_centres_are_reported_in_pixels():
    pts = pose(PRE, 0.0, 5.0)
    a = compute_alignment(pts, PRE, "R", (0.2, 0.1))
    femur, tibia = PRE.derive(pts, "femoral_shaft_centres"), PRE.derive(pts, "tibial_shaft_centres")
    np.testing.assert_allclose(a.femoral_shaft_centres_px, femur)
    np.testing.assert_allclose(a.tibial_shaft_centres_px, tibia)
    # upright femur: the fitted line spans the centres from the most proximal to the most distal
    np.testing.assert_allclose(a.femoral_axis_fts_px, [femur[0], femur[-1]], atol=1e-9)
    assert a.femoral_axis_fts_px[0, 1] < a.femoral_axis_fts_px[1, 1]
    # tibial centres run distal -> proximal in the schema; the axis is [proximal, distal]
    np.testing.assert_allclose(a.tibial_axis_fts_px, [tibia[-1], tibia[0]], atol=1e-9)
    np.testing.assert_allclose(a.femoral_axis_fnts_px, [femur.mean(axis=0), PRE.derive(pts, "femoral_notch")])
    np.testing.assert_allclose(a.tibial_axis_fnts_px, [PRE.derive(pts, "tibial_spine_centre"), tibia.mean(axis=0)])


def test_alignment_is_immutable():
    a = compute_alignment(pose(PRE, 0.0, 5.0), PRE, "R")
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.atfa_fts_deg = 0.0
    with pytest.raises(ValueError):
        a.femoral_axis_fts_px[0, 0] = 0.0


@pytest.mark.parametrize("kind", KINDS)
def test_to_dict_is_json_with_full_precision(kind):
    schema = load_schema(kind)
    a = compute_alignment(jittered(schema, 1.0, 6.0, seed=5), schema, "R", (0.15, 0.15))
    d = json.loads(json.dumps(a.to_dict()))
    assert set(d) == {f.name for f in dataclasses.fields(Alignment)}
    assert d["atfa_fts_deg"] == a.atfa_fts_deg  # not rounded
    assert np.array(d["femoral_axis_fts_px"]).shape == (2, 2)
    assert np.array(d["tibial_shaft_centres_px"]).shape == a.tibial_shaft_centres_px.shape
    assert d["side"] == "R" and d["spacing_known"] is True and d["label_fts"] == a.label_fts
    if kind == "preop":
        assert d["femoral_component_alpha_deg"] is None and d["jsw_lateral_mm"] == a.jsw_lateral_mm
    else:
        assert d["tibial_component_beta_deg"] == a.tibial_component_beta_deg and d["aldfa_deg"] is None


def test_format_alignment_for_people():
    pre = format_alignment(compute_alignment(pose(PRE, 0.0, 5.0), PRE, "R", (0.15, 0.15)))
    assert "right knee" in pre and "spacing known" in pre
    assert "5.0°  valgus" in pre and "aLDFA" in pre and " mm (" in pre and "alpha" not in pre
    unknown = format_alignment(compute_alignment(pose(PRE, 0.0, -7.26), PRE, "R"))
    assert "-7.3°  varus" in unknown and "spacing unknown" in unknown
    assert " mm" not in unknown and " px" in unknown
    left = pose(POST, 0.0, 0.04) * [-1, 1] + [1600, 0]
    post = format_alignment(compute_alignment(left, POST, "L"))
    assert "left knee" in post and "0.0°  neutral" in post and "-0.0" not in post
    assert "alpha" in post and "beta" in post and "aLDFA" not in post and "Joint space" not in post


@pytest.mark.parametrize("kind", KINDS)
def test_infer_side_from_the_fibula(kind):
    schema = load_schema(kind)
    right = pose(schema, 0.0, 6.0)
    assert infer_side(right, schema) == "R"
    assert infer_side(right * [-1, 1] + [1600, 0], schema) == "L"
    assert infer_side(right @ rotation(150.0).T, schema) == "R"  # rotation keeps handedness


# --- degenerate input ------------------------------------------------------------------------

def _set(names, value_of):
    def change(pts, schema):
        for name in names:
            pts[schema.index(name)] = value_of(pts, schema)
        return pts
    return change


def _femoral_centre(pts, schema):
    return schema.derive(pts, "femoral_shaft_centres").mean(axis=0)


def _tibial_centre(pts, schema):
    return schema.derive(pts, "tibial_shaft_centres").mean(axis=0)


def _circle_of_centres(pts, schema):
    for i in range(8):
        t = 2 * math.pi * i / 8
        pts[schema.index(f"FLC{i:02d}")] = pts[schema.index(f"FMC{i:02d}")] = [800 + 60 * math.cos(t),
                                                                                 500 + 60 * math.sin(t)]
    return pts


DEGENERATE = {
    "nan": (lambda p, s: _set(["TMC03"], lambda *_: [np.nan, 1.0])(p, s), "finite; NaN or inf at TMC03"),
    "inf": (lambda p, s: _set(["FLK02", "FIB00"], lambda *_: [1.0, np.inf])(p, s), "FLK02, FIB00"),
    "too few": (lambda p, s: p[:-1], r"expected \(\d+, 2\) landmarks"),
    "three columns": (lambda p, s: np.concatenate([p, p[:, :1]], axis=1), "landmarks"),
    "flat": (lambda p, s: p.ravel(), "landmarks"),
    "not numbers": (lambda p, s: np.full(p.shape, "x", dtype=object), "must be numbers"),
    "all coincide": (lambda p, s: np.zeros_like(p), "all landmarks coincide"),
    "femoral centres coincide": (
        lambda p, s: _set([f"F{c}C{i:02d}" for c in "LM" for i in range(8)], lambda *_: [800.0, 500.0])(p, s),
        "femoral shaft centres coincide"),
    "tibial centres coincide": (
        lambda p, s: _set([f"T{c}C{i:02d}" for c in "LM" for i in range(7)], lambda *_: [800.0, 1500.0])(p, s),
        "tibial shaft centres coincide"),
    "femoral centres not a line": (_circle_of_centres, "do not lie along a line"),
    "notch at the femoral shaft centre": (_set(["FNT04"], _femoral_centre), "FNTS femoral axis"),
    "spines at the tibial shaft centre": (_set(["TSP01", "TSP05"], _tibial_centre), "FNTS tibial axis"),
    "condylar line": (_set(["FMK06"], lambda p, s: p[s.index("FLK06")]), "femoral condylar line"),
    "plateau line": (_set(["TMP00"], lambda p, s: p[s.index("TLP00")]), "tibial plateau line"),
}
DEGENERATE_POSTOP = {
    "femoral component line": (_set(["CFM06"], lambda p, s: p[s.index("CFL06")]), "femoral component line"),
    "tibial component line": (_set(["CTM00"], lambda p, s: p[s.index("CTL00")]), "tibial component line"),
}


@pytest.mark.parametrize("case", sorted(DEGENERATE))
def test_degenerate_landmarks_raise(case):
    change, message = DEGENERATE[case]
    pts = change(pose(PRE, 0.0, 5.0).astype(object if case == "not numbers" else float), PRE)
    with pytest.raises(GeometryError, match=message):
        compute_alignment(pts, PRE, "R", (0.15, 0.15))


@pytest.mark.parametrize("case", sorted(DEGENERATE_POSTOP))
def test_degenerate_component_lines_raise(case):
    change, message = DEGENERATE_POSTOP[case]
    with pytest.raises(GeometryError, match=message):
        compute_alignment(change(pose(POST, 0.0, 5.0), POST), POST, "R")


def test_landmarks_of_the_other_schema_raise():
    with pytest.raises(GeometryError, match=r"expected \(134, 2\)"):
        compute_alignment(pose(POST), PRE, "R")


@pytest.mark.parametrize("side", ["X", "r", "right", "", None, 1, ["R"]])
def test_bad_side_raises(side):
    with pytest.raises(GeometryError, match="side must be 'L' or 'R'"):
        compute_alignment(pose(PRE), PRE, side)


@pytest.mark.parametrize("spacing", [(0.0, 0.1), (0.1, -0.1), (np.nan, 0.1), (0.1, np.inf), (0.1,), (0.1, 0.1, 0.1),
                                     "ab", [[0.1, 0.1]], 0.1])
def test_bad_spacing_raises(spacing):
    with pytest.raises(GeometryError, match="spacing_mm must be two positive finite numbers"):
        compute_alignment(pose(PRE), PRE, "R", spacing)


def test_side_contradicting_the_anatomy_raises():
    with pytest.raises(GeometryError, match="side 'L' contradicts the landmarks"):
        compute_alignment(pose(PRE, 0.0, 5.0), PRE, "L")


def test_infer_side_degenerate_input_raises():
    pts = pose(PRE)
    on_axis = pts.copy()
    on_axis[PRE.group_indices("fibula")] = _tibial_centre(pts, PRE)
    with pytest.raises(GeometryError, match="fibula lies on the tibial axis"):
        infer_side(on_axis, PRE)
    pts[3] = np.nan
    with pytest.raises(GeometryError, match="finite"):
        infer_side(pts, PRE)
    with pytest.raises(GeometryError, match="landmarks"):
        infer_side(pts[:10], PRE)


# --- the four defining points alone (manual mode) -------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("side", ["R", "L"])
@pytest.mark.parametrize("spacing", [None, (0.2, 0.1)])
def test_defining_points_give_the_landmarks_angles_and_axes(kind, side, spacing):
    """The same derived points give the same aTFA, axes and centres as the full landmark set."""
    schema = load_schema(kind)
    pts = jittered(schema, -2.0, 6.0, seed=11)
    if side == "L":
        pts = pts * [-1, 1] + [1600, 0]
    full = compute_alignment(pts, schema, side, spacing)
    manual = atfa_from_defining_points(schema.derive(pts, "femoral_shaft_centres"),
                                       schema.derive(pts, "tibial_shaft_centres"),
                                       schema.derive(pts, "femoral_notch"), schema.derive(pts, "tibial_spine_centre"),
                                       side, spacing)
    for name in ("atfa_fts_deg", "atfa_fnts_deg"):
        assert getattr(manual, name) == pytest.approx(getattr(full, name), abs=1e-9), name
    for name in LABELS:
        assert getattr(manual, name) == getattr(full, name)
    for name in AXES:
        np.testing.assert_allclose(getattr(manual, name), getattr(full, name), atol=1e-9, err_msg=name)
    assert manual.side == side and manual.spacing_known == (spacing is not None)
    others = [f.name for f in dataclasses.fields(Alignment)
              if f.name not in (*AXES, *LABELS, "atfa_fts_deg", "atfa_fnts_deg", "side", "spacing_known")]
    assert all(getattr(manual, name) is None for name in others)


def test_defining_points_with_two_centres_per_bone_measure_the_posed_angle():
    """Two hand-placed shaft centres per bone: FTS equals the construction (the template shafts are straight)."""
    pts = pose(PRE, 3.0, 10.0)
    femur, tibia = PRE.derive(pts, "femoral_shaft_centres"), PRE.derive(pts, "tibial_shaft_centres")
    a = atfa_from_defining_points(femur[[0, -1]], tibia[[0, -1]], PRE.derive(pts, "femoral_notch"),
                                  PRE.derive(pts, "tibial_spine_centre"), "R", (0.15, 0.15))
    assert a.atfa_fts_deg == pytest.approx(7.0, abs=1e-9)
    assert a.label_fts == "valgus"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f, t, n, s: (f[:1], t, n, s), "at least 2 femoral shaft centres needed, got 1"),
        (lambda f, t, n, s: (f, t[:, :1], n, s), r"tibial shaft centres must be \(x, y\) points"),
        (lambda f, t, n, s: (f, t, [np.nan, 1.0], s), "femoral notch must be finite"),
        (lambda f, t, n, s: (f, t, n, "spine"), "tibial spine centre must be numbers"),
        (lambda f, t, n, s: (np.repeat(f[:1], 3, axis=0), t, n, s), "femoral shaft centres coincide"),
        (lambda f, t, n, s: (f, t, f.mean(axis=0), s), "FNTS femoral axis .* has zero length"),
    ],
)
def test_bad_defining_points_raise(change, message):
    pts = pose(PRE, 0.0, 5.0)
    args = (PRE.derive(pts, "femoral_shaft_centres"), PRE.derive(pts, "tibial_shaft_centres"),
            PRE.derive(pts, "femoral_notch"), PRE.derive(pts, "tibial_spine_centre"))
    with pytest.raises(GeometryError, match=message):
        atfa_from_defining_points(*change(*args), "R")
    with pytest.raises(GeometryError, match="side must be 'L' or 'R'"):
        atfa_from_defining_points(*args, "right")


def test_outside_image_with_and_without_a_margin():
    points = np.array([[-0.5, 0.0], [-0.51, 0.0], [9.5, 4.5], [9.51, 4.5], [2.0, 2.0], [np.nan, 2.0], [0.0, 5.0]])
    assert outside_image(points, (5, 10)).tolist() == [False, True, False, True, False, False, True]
    assert outside_image(points, (5, 10), margin_px=2.5).tolist() == [True, True, True, True, False, False, True]
