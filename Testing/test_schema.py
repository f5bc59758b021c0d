"""The landmark schemas: counts, names, groups, mirror pairs, definitions, authoring."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from KneeAlignmentLib.errors import SchemaError
from KneeAlignmentLib.schema import KINDS, example_landmarks_px, kind_for_labels, load_schema

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=KINDS)
def schema(request):
    return load_schema(request.param)


def test_counts():
    assert len(load_schema("preop")) == 134
    assert len(load_schema("postop")) == 181
    assert kind_for_labels(load_schema("preop").names) == "preop"
    assert kind_for_labels(load_schema("postop").names) == "postop"
    assert kind_for_labels(["FLC00", "CTK02"]) == "postop"  # one implant point is enough
    assert kind_for_labels([]) == "preop"


def test_postop_extends_preop():
    pre, post = load_schema("preop"), load_schema("postop")
    assert post.names[:134] == pre.names
    np.testing.assert_array_equal(post.template_mm[:134], pre.template_mm)
    extra_groups = {lm.group for lm in post.landmarks[134:]}
    assert extra_groups == {"femoral_component", "tibial_component", "tibial_insert"}


def test_every_landmark_is_described(schema):
    for lm in schema.landmarks:
        assert lm.name and lm.description.strip() and lm.group in schema.groups
    for group, info in schema.groups.items():
        assert len(info["color"]) == 3 and all(0 <= c <= 1 for c in info["color"])
        assert len(schema.group_indices(group)) > 0


def test_contours_cover_landmarks_and_name_real_anchors(schema):
    assert sum(c["count"] for c in schema.contours) == len(schema)
    for contour in schema.contours:
        assert contour["anchors"], contour["code"]
        for name in contour["anchors"]:
            assert name.startswith(contour["code"])
            schema.index(name)


def test_mirror_pairs_lateral_with_medial(schema):
    perm = schema.mirror_permutation
    np.testing.assert_array_equal(perm[perm], np.arange(len(schema)))
    for lm in schema.landmarks:
        partner = schema.landmarks[perm[lm.index]]
        if "lateral" in lm.group:
            assert "medial" in partner.group, (lm.name, partner.name)
        # the template is a right knee: partners lie on opposite sides of the midline
        x, px = schema.template_mm[lm.index, 0], schema.template_mm[partner.index, 0]
        if partner.index != lm.index:
            assert np.sign(x) == -np.sign(px) or abs(x) < 1e-9, (lm.name, partner.name)
    assert not any(lm.mirror for lm in schema.landmarks if lm.group == "fibula")


def test_lateral_is_minus_x_in_the_right_knee_template(schema):
    t = schema.template_mm
    for group in schema.groups:
        if "lateral" in group:
            assert (t[schema.group_indices(group), 0] < 0).all(), group
        if "medial" in group:
            assert (t[schema.group_indices(group), 0] > 0).all(), group
    assert (t[schema.group_indices("fibula"), 0] < -25).all()


def test_definitions_evaluate(schema):
    pts = schema.template_mm
    ref = schema.reference_points(pts)
    assert ref.shape == (2, 2)
    assert np.linalg.norm(ref[0]) < 5  # the knee centre is the template origin, within a few mm
    assert ref[1, 1] < -40  # femoral shaft centre lies proximal
    fem = schema.derive(pts, "femoral_shaft_centres")
    tib = schema.derive(pts, "tibial_shaft_centres")
    assert fem.shape == (8, 2) and tib.shape == (7, 2)
    assert (fem[:, 1] < -55).all() and (tib[:, 1] > 55).all()
    np.testing.assert_allclose(fem[:, 0], 0.0, atol=0.5)  # template shafts are vertical and centred
    assert schema.derive(pts, "femoral_notch").shape == (2,)
    batch = np.stack([pts, pts + 1.0])
    np.testing.assert_allclose(schema.reference_points(batch)[1], ref + 1.0)
    if schema.kind == "postop":
        assert schema.derive(pts, "femoral_component_line").shape == (2, 2)
    for side in ("lateral", "medial"):
        js = schema.definitions["joint_space"][side]
        schema.indices(js["femur"]), schema.indices(js["tibia"])


def test_bad_requests_raise_schema_error(schema):
    with pytest.raises(SchemaError, match="unknown schema"):
        load_schema("lateral-view")
    with pytest.raises(SchemaError, match="no landmark named 'XYZ00'"):
        schema.index("XYZ00")
    with pytest.raises(SchemaError, match="expected points of shape"):
        schema.derive(np.zeros((10, 2)), "femoral_notch")
    with pytest.raises(SchemaError, match="defines no"):
        schema.derive(schema.template_mm, "hip_centre")


def test_example_has_the_requested_valgus():
    pts = example_landmarks_px("preop", atfa_valgus_deg=7.0)
    s = load_schema("preop")
    fem = s.derive(pts, "femoral_shaft_centres")
    tib = s.derive(pts, "tibial_shaft_centres")
    f = fem[0] - fem[-1]
    t = tib[0] - tib[-1]  # distal minus proximal
    angle = np.degrees(np.arctan2(f[0] * t[1] - f[1] * t[0], -(f @ t)))
    # the distal tibia moved towards -x (lateral for a right knee): valgus by construction
    assert abs(abs(angle) - 7.0) < 1e-9 and t[0] < 0


def test_data_files_match_their_authoring_script():
    spec = importlib.util.spec_from_file_location("author_schemas", ROOT / "tools" / "author_schemas.py")
    author = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(author)
    for kind in KINDS:
        stored = json.loads((author.OUT / f"{kind}.json").read_text())
        assert stored == json.loads(json.dumps(author.build(kind))), kind
