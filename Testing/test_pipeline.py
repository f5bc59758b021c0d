"""Tests of KneeAlignmentLib.pipeline: the whole geometric chain against an oracle,
batching, determinism and QC flags on bad outputs (`kneealign measure` is tested in test_batch.py).

The oracle stands in for trained networks: it knows the true landmarks of the test images
and answers each network input with the heatmap codec's encoding of those landmarks in
that input's own frame (recognised by correlation with the letterbox / crops of the true
reference points). The pipeline must then return the true landmarks and angles: any error
in letterboxing, decoding, framing, mirroring or mapping back shows up.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model_factory import CODEC, save_models
from KneeAlignmentLib.bundle.modelset import ModelSet
from KneeAlignmentLib.bundle.thresholds import DEFAULT as DEFAULT_QC
from KneeAlignmentLib.errors import BundleError
from KneeAlignmentLib.frame import FrameSpec, Letterbox, ReferenceFrame
from KneeAlignmentLib.geometry import compute_alignment
from KneeAlignmentLib.heatmaps import HeatmapCodec
from KneeAlignmentLib.imageio import radiograph_from_array
from KneeAlignmentLib.measurement import Measurement
from KneeAlignmentLib.pipeline import FILL, measure, measure_batch, prepare_input
from KneeAlignmentLib.schema import example_landmarks_px, load_schema

SHAPE = (640, 512)  # (H, W) of the test radiographs


# --- tiny bundles (model_factory) ------------------------------------------------------------

@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    return save_models(tmp_path_factory.mktemp("models"))


@pytest.fixture
def models(models_dir) -> ModelSet:
    return ModelSet.load(models_dir, device="cpu")


# --- test knees ---------------------------------------------------------------------------

@dataclasses.dataclass
class Knee:
    kind: str
    side: str
    spacing_mm: tuple[float, float]
    points_px: np.ndarray  # (K, 2) the truth
    pixels: np.ndarray  # (H, W)

    @property
    def schema(self):
        return load_schema(self.kind)

    @property
    def reference_px(self) -> np.ndarray:
        return self.schema.reference_points(self.points_px)

    def radiograph(self, side=None, side_source=None):
        return radiograph_from_array(self.pixels, spacing_mm=self.spacing_mm, side=side, side_source=side_source,
                                     value_range=(0.0, 1.0))

    def alignment(self):
        return compute_alignment(self.points_px, self.schema, self.side, self.spacing_mm)


def make_knee(kind="preop", side="R", spacing_mm=(0.5, 0.5), rotation_deg=0.0, valgus_deg=5.0, seed=0,
              centre_px=(267.3, 313.3), moved_mm=None) -> Knee:
    """The schema's example knee, turned in physical space, imaged with (row_mm, col_mm) pixels.

    ``moved_mm``: {landmark name: (dx, dy) mm} displacements applied before turning.
    """
    schema = load_schema(kind)
    points_mm = example_landmarks_px(kind, atfa_valgus_deg=valgus_deg, spacing_mm=1.0, image_size=(0, 0))
    for name, offset in (moved_mm or {}).items():
        points_mm[schema.index(name)] += offset
    t = math.radians(rotation_deg)
    points_mm = points_mm @ np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]]).T
    h, w = SHAPE
    points_px = points_mm / np.array([spacing_mm[1], spacing_mm[0]]) + np.asarray(centre_px)
    if side == "L":  # the mirror image of a right knee is a left knee
        points_px[:, 0] = (w - 1) - points_px[:, 0]
    return Knee(kind, side, spacing_mm, points_px, render(points_px, schema, seed))


def render(points_px: np.ndarray, schema, seed: int) -> np.ndarray:
    """A smooth random background, a blob per landmark and saturated (metal) implant boxes."""
    h, w = SHAPE
    coarse = torch.from_numpy(np.random.default_rng(seed).random((h // 32 + 2, w // 32 + 2)))
    image = 0.1 + 0.4 * F.interpolate(coarse[None, None], size=SHAPE, mode="bilinear")[0, 0].numpy()
    yy, xx = np.mgrid[:h, :w]
    for x, y in points_px:
        image += 0.35 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 3.0**2))
    image = np.clip(image, 0.0, 0.9)
    for groups in (("femoral_component",), ("tibial_component", "tibial_insert")):
        idx = np.concatenate([schema.group_indices(g) for g in groups if g in schema.groups] or [[]]).astype(int)
        if idx.size:
            (x0, y0), (x1, y1) = points_px[idx].min(axis=0), points_px[idx].max(axis=0)
            image[(xx >= x0) & (xx <= x1) & (yy >= y0) & (yy <= y1)] = 1.0
    return image.astype(np.float32)


# --- the oracle ---------------------------------------------------------------------------

class Oracle(torch.nn.Module):
    """Stands in for a trained network (see the module docstring).

    candidates: (input (H, W), points (K, 2) in that input's px with NaN for points the
    truth lacks, amplitude). Each input is answered with the candidate it correlates with
    best: amplitude * codec.encode(points) as (B, 1, K, h, w).
    """

    def __init__(self, codec: HeatmapCodec, candidates) -> None:
        super().__init__()
        inputs = torch.stack([torch.as_tensor(np.asarray(c[0]), dtype=torch.float64).flatten() for c in candidates])
        self.inputs = (inputs - inputs.mean(1, keepdim=True)) / inputs.std(1, keepdim=True)
        self.targets = torch.stack([c[2] * torch.from_numpy(codec.encode(np.asarray(c[1], float))[0])
                                    for c in candidates])
        self.seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1).double()
        flat = (flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True)
        best = (flat @ self.inputs.T).argmax(dim=1)
        self.seen += len(x)
        return self.targets[best][:, None]


def oracle_models(models: ModelSet, knees, wrong_side_amplitude: float = 0.4) -> ModelSet:
    """``models`` with every network replaced by an oracle for ``knees``.

    A crop in the wrong orientation (a right knee seen mirrored) gets the true points
    with a weaker peak, as an uncertain network would give.
    """
    glob = models.global_model
    candidates = []
    for knee in knees:
        box = Letterbox.fit(SHAPE, glob.codec.input_size)
        candidates.append((box.apply(knee.pixels, fill=FILL), box.to_target(knee.reference_px), 1.0))
    local = {}
    for kind in models.kinds:
        stage = models.local(kind)
        local_candidates = []
        for knee in knees:
            truth = dict(zip(knee.schema.names, knee.points_px))
            points = np.array([truth.get(name, (np.nan, np.nan)) for name in stage.schema.names])
            for side in ("R", "L"):
                frame = ReferenceFrame.from_reference_points(knee.reference_px, stage.frame_spec, side)
                amplitude = 1.0 if side == knee.side else wrong_side_amplitude
                local_candidates.append((frame.warp(knee.pixels, fill=FILL), frame.to_crop(points), amplitude))
        # The oracle's images are blobs at the landmarks, without shaft cortices: the shaft-edge
        # evidence is weak by design, and its flag (tested in test_shaft_edges.py) is off here.
        local[kind] = dataclasses.replace(stage, network=Oracle(stage.codec, local_candidates),
                                          qc=dataclasses.replace(stage.qc, flag_weak_axis_evidence=False))
    return ModelSet(dataclasses.replace(glob, network=Oracle(glob.codec, candidates)), local, models.device)


def assert_true_measurement(result: Measurement, knee: Knee) -> None:
    truth = knee.alignment()
    assert result.kind == knee.kind and result.side == knee.side
    np.testing.assert_allclose(result.reference_points_px, knee.reference_px, atol=0.1, rtol=0)
    error_px = np.hypot(*(result.landmarks.points_px - knee.points_px).T)
    assert error_px.max() < 0.1, f"worst landmark off by {error_px.max():.3f} px"
    assert result.alignment.atfa_fts_deg == pytest.approx(truth.atfa_fts_deg, abs=0.05)
    assert result.alignment.atfa_fnts_deg == pytest.approx(truth.atfa_fnts_deg, abs=0.05)
    assert result.landmarks.confidence.min() > 0.99
    assert result.status == "ok", result.qc_flags


# --- the oracle chain -----------------------------------------------------------------------

@pytest.mark.parametrize("kind, side, spacing_mm, rotation_deg", [
    ("preop", "R", (0.5, 0.5), 0.0),
    ("preop", "L", (0.5, 0.5), 0.0),
    ("preop", "R", (0.5, 0.4), 0.0),  # anisotropic pixels
    ("preop", "L", (0.45, 0.55), 12.0),  # rotated, anisotropic, left
    ("postop", "R", (0.5, 0.5), -10.0),
    ("postop", "L", (0.5, 0.45), 7.0),
])
def test_oracle_networks_give_the_true_landmarks_and_angles(models, kind, side, spacing_mm, rotation_deg):
    knee = make_knee(kind, side, spacing_mm, rotation_deg)
    result = measure(knee.radiograph(), oracle_models(models, [knee]))
    assert_true_measurement(result, knee)
    assert (result.side_source, result.kind_source) == ("detected", "detected")
    assert result.alignment.spacing_known


def test_a_knee_is_warped_once_per_view_and_flipped_to_be_seen_as_the_other_side(models, monkeypatch):
    knee = make_knee("preop", "L", seed=4)
    oracle = oracle_models(models, [knee])
    warps, original = [], ReferenceFrame.warp
    counted = lambda frame, *args, **kwargs: warps.append(frame.side) or original(frame, *args, **kwargs)  # noqa: E731
    monkeypatch.setattr(ReferenceFrame, "warp", counted)
    flipped = measure(knee.radiograph(), oracle)
    assert_true_measurement(flipped, knee)  # the left knee was measured on the right knee's crop flipped
    # Side detected, both kinds: one crop as a right knee, shared by the kinds, flipped as a left knee;
    # the orientation check: one crop turned by 180 degrees as the measured left knee, flipped as a right one.
    assert warps == ["R", "L"]
    monkeypatch.setattr(FrameSpec, "mirror_is_flip", property(lambda spec: False))
    warped = measure(knee.radiograph(), oracle)
    assert sorted(warps) == ["L", "L", "L", "R", "R", "R"]
    assert_close(without_timings(flipped), without_timings(warped))


def test_oracle_batch_keeps_every_image_with_its_own_result(models):
    knees = [make_knee("preop", "R", seed=1), make_knee("postop", "L", (0.5, 0.45), 8.0, seed=2),
             make_knee("preop", "L", (0.45, 0.5), -6.0, valgus_deg=-4.0, seed=3)]
    results = measure_batch([k.radiograph() for k in knees], oracle_models(models, knees), batch_size=2)
    for result, knee in zip(results, knees):
        assert_true_measurement(result, knee)


def test_a_stated_side_skips_detection_and_a_given_side_wins_over_the_tag_flagged(models):
    knee = make_knee("preop", "R", rotation_deg=5.0)  # a right knee whose laterality tag wrongly says L
    oracle = oracle_models(models, [knee])
    result = measure(knee.radiograph(side="L", side_source="ImageLaterality"), oracle, side="R")
    assert (result.side, result.side_source) == ("R", "given")
    # One crop per model (no second side), plus the measured kind's orientation check: the knee
    # turned by 180 degrees as either side and mirrored (qc.orientation_flags).
    assert oracle.local("preop").network.seen == 1 + 3 and oracle.local("postop").network.seen == 1
    assert result.flag_codes == ("side_conflict",)
    assert "given side R" in result.reason and "image's side L (DICOM ImageLaterality)" in result.reason
    assert result.alignment.atfa_fts_deg == pytest.approx(knee.alignment().atfa_fts_deg, abs=0.05)

    tagged = measure(knee.radiograph(side="R", side_source="ImageLaterality"), oracle_models(models, [knee]))
    assert (tagged.side, tagged.side_source, tagged.status) == ("R", "DICOM ImageLaterality", "ok")
    given = measure(knee.radiograph(), oracle_models(models, [knee]), side="R")
    assert (given.side_source, given.status) == ("given", "ok")


def test_a_given_side_that_contradicts_the_anatomy_is_flagged_without_angles(models):
    knee = make_knee("preop", "R")
    result = measure(knee.radiograph(), oracle_models(models, [knee], wrong_side_amplitude=1.0), side="L")
    assert result.alignment is None and "geometry_failed" in result.flag_codes
    assert "contradicts" in result.reason


def test_equal_confidence_both_ways_flags_the_side_but_anatomy_decides(models):
    knee = make_knee("preop", "L", rotation_deg=-8.0)
    result = measure(knee.radiograph(), oracle_models(models, [knee], wrong_side_amplitude=1.0))
    assert result.side == "L"
    assert result.flag_codes == ("side_uncertain",)
    assert result.evidence["preop_confidence_as_right"] == pytest.approx(result.evidence["preop_confidence_as_left"])


def test_kind_given_runs_one_local_model_and_post_op_without_metal_is_flagged(models):
    knee = make_knee("postop", "R")
    oracle = oracle_models(models, [knee])
    result = measure(knee.radiograph(), oracle, kind="preop")
    assert (result.kind, result.kind_source) == ("preop", "given")
    assert oracle.local("postop").network.seen == 0
    assert [m.role for m in result.models] == ["global", "local_preop"]
    assert result.evidence["metal_fraction"] > 0.01 and result.status == "ok"  # saturation alone: no doubt
    # an 8-bit export with a white level below the maximum: the implants are still the brightest
    exported = dataclasses.replace(knee, pixels=0.8 * knee.pixels)
    result = measure(exported.radiograph(), oracle_models(models, [exported]), kind="postop")
    assert result.evidence["metal_fraction"] > 0.01 and result.status == "ok"
    dull = dataclasses.replace(knee, pixels=np.where(knee.pixels >= 1.0, 0.3, knee.pixels))  # no metal in sight
    dull.pixels[0, 0] = 1.0  # one hot pixel sets the brightest value
    result = measure(dull.radiograph(), oracle_models(models, [dull]), kind="postop")
    assert result.evidence["metal_fraction"] < 0.01
    assert result.flag_codes == ("kind_uncertain",) and "metal-like" in result.reason


def test_metal_in_plain_view_makes_auto_post_op_even_with_weak_implant_landmarks(models):
    knee = make_knee("preop", "R")
    metal = knee.pixels.copy()
    h, w = metal.shape
    metal[int(0.35 * h):int(0.65 * h), int(0.25 * w):int(0.75 * w)] = 1.0  # a wide metal block over the joint
    metal_knee = dataclasses.replace(knee, pixels=metal)
    result = measure(metal_knee.radiograph(), oracle_models(models, [metal_knee]), kind="auto")
    assert result.evidence["implant_confidence"] < 0.5  # the pre-op oracle answers: no implant landmarks
    doubt = [f.message for f in result.qc_flags if f.code == "kind_uncertain"]
    assert result.kind == "postop" and doubt and "metal-like" in doubt[0]
    plain = measure(knee.radiograph(), oracle_models(models, [knee]), kind="auto")
    assert plain.kind == "preop" and "kind_uncertain" not in plain.flag_codes


def test_a_single_local_model_decides_the_kind(tmp_path):
    models = ModelSet.load(save_models(tmp_path, kinds=("preop",)), device="cpu")
    knee = make_knee("preop", "R")
    result = measure(knee.radiograph(), oracle_models(models, [knee]))
    assert (result.kind, result.kind_source, result.status) == ("preop", "only model available", "ok")
    with pytest.raises(BundleError, match="no local postop model"):
        measure(knee.radiograph(), models, kind="postop")


# --- failures of the predicted landmarks become flags -------------------------------------------

@pytest.mark.parametrize("knee_args, spacing_mm, expected", [
    # turned rigidly about the knee centre by 40 degrees, the plateau cuts into a condyle
    (dict(valgus_deg=40.0), None, {"implausible_atfa", "joint_surfaces_cross"}),
    (dict(valgus_deg=-31.0), None, {"implausible_atfa", "joint_surfaces_cross"}),
    (dict(moved_mm={"FNT04": (14.0, 0.0)}), None, {"fts_fnts_disagree"}),
    (dict(), (0.05, 0.05), {"implausible_axis_length"}),  # a spacing ten times too small
    (dict(centre_px=(256.0, 638.0)), None, {"reference_near_border", "landmarks_outside_image"}),
])
def test_implausible_anatomy_and_border_positions_are_flagged(models, knee_args, spacing_mm, expected):
    knee = make_knee(**knee_args)
    radiograph = radiograph_from_array(knee.pixels, spacing_mm=spacing_mm or knee.spacing_mm, value_range=(0, 1))
    result = measure(radiograph, oracle_models(models, [knee]), kind="preop", side="R")
    assert set(result.flag_codes) == expected and result.status == "flagged"
    assert result.alignment is not None  # flagged, still measured


def test_crossing_joint_surfaces_are_flagged(models):
    lowered = {f"{c}{i:02d}": (0.0, 12.0) for c in ("FLK", "FMK") for i in range(3, 14)}  # condyles into the tibia
    knee = make_knee(moved_mm=lowered)
    result = measure(knee.radiograph(), oracle_models(models, [knee]), kind="preop", side="R")
    assert "joint_surfaces_cross" in result.flag_codes
    assert result.alignment.jsw_lateral_px > 0 and result.alignment.jsw_medial_px > 0  # no outline crossing


class Peaks(torch.nn.Module):
    """Every channel a Gaussian at the same input point (or NaN): degenerate predictions."""

    def __init__(self, codec: HeatmapCodec, channels: int, point=(30.0, 30.0), nan=False) -> None:
        super().__init__()
        self.map = torch.from_numpy(codec.encode(np.array([point], float))[0][0])
        self.channels, self.nan = channels, nan

    def forward(self, x):
        out = self.map.expand(len(x), 1, self.channels, *self.map.shape).clone()
        return out.fill_(float("nan")) if self.nan else out


def with_networks(models: ModelSet, global_net=None, local_net=None) -> ModelSet:
    glob = models.global_model if global_net is None else dataclasses.replace(models.global_model, network=global_net)
    local = {k: m if local_net is None else dataclasses.replace(m, network=local_net(m))
             for k, m in models.local_models.items()}
    return ModelSet(glob, local, models.device)


def test_coinciding_landmarks_give_a_flagged_result_without_angles(models):
    knee = make_knee("preop", "R")
    oracle = oracle_models(models, [knee])
    broken = with_networks(oracle, local_net=lambda m: Peaks(m.codec, len(m.schema)))
    result = measure(knee.radiograph(), broken, kind="preop", side="R")
    assert result.alignment is None and result.landmarks is not None
    assert result.flag_codes[0] == "geometry_failed" and result.status == "flagged"
    assert Measurement.from_json(result.to_json()).to_dict() == result.to_dict()


def test_coinciding_reference_points_give_a_flagged_result_without_landmarks(models):
    knee = make_knee("preop", "R")
    result = measure(knee.radiograph(), with_networks(models, global_net=Peaks(CODEC, 2)))
    assert result.landmarks is None and result.alignment is None
    assert result.flag_codes == ("frame_failed",) and result.kind is None and result.side is None
    assert "coincide" in result.reason


def test_non_finite_network_output_is_flagged(models):
    knee = make_knee("preop", "R")
    result = measure(knee.radiograph(), with_networks(models, global_net=Peaks(CODEC, 2, nan=True)))
    assert result.flag_codes == ("invalid_network_output",) and result.landmarks is None
    local_nan = with_networks(oracle_models(models, [knee]),
                              local_net=lambda m: Peaks(m.codec, len(m.schema), nan=True))
    result = measure(knee.radiograph(), local_nan, kind="preop", side="R")
    assert "invalid_network_output" in result.flag_codes and result.landmarks is None


def test_random_networks_give_flagged_results_with_every_field(models):
    knee = make_knee("postop", "R")
    blank = radiograph_from_array(np.zeros((200, 150)))
    for radiograph in (knee.radiograph(), blank):
        result = measure(radiograph, models)
        assert result.status == "flagged"
        assert {"low_mean_confidence", "wrong_view_suspected"} <= set(result.flag_codes)
        k = len(load_schema(result.kind))
        assert result.landmarks.points_px.shape == (k, 2) and result.landmarks.confidence.shape == (k,)
        assert np.all((result.landmarks.confidence >= 0) & (result.landmarks.confidence <= 1))
        assert result.reference_points_px.shape == (2, 2)
        assert [m.model_id for m in result.models] == ["tiny-global@0.0.1", "tiny-preop@0.0.1", "tiny-postop@0.0.1"]
        assert set(result.timings_ms) == {"global", "local", "orientation", "geometry", "total"}
        assert (result.device, result.precision) == ("cpu", "float32")
        json.loads(result.to_json())


# --- batching, determinism, arguments ---------------------------------------------------------

def without_timings(result: Measurement) -> dict:
    data = result.to_dict()
    del data["timings_ms"]
    return data


def assert_close(a, b, where="result"):
    """Equal structure and text; numbers within 1e-3 (px, degrees, confidence).

    Convolutions over a different batch size may round differently (about 1e-6 here),
    so batched and one-by-one results agree to float precision, not bit for bit. Flag
    messages quote rounded numbers, so flags are compared by code.
    """
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            if key == "qc_flags":
                assert [f["code"] for f in a[key]] == [f["code"] for f in b[key]], where
            elif key != "reason":
                assert_close(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and not isinstance(b, bool):
        assert b == pytest.approx(a, abs=1e-3), where
    else:
        assert a == b, where


def test_batches_give_the_results_of_one_by_one_and_runs_repeat_exactly(models):
    knees = [make_knee("preop", "R", seed=4), make_knee("postop", "L", seed=5), make_knee("preop", "L", seed=6)]
    radiographs = [k.radiograph() for k in knees] + [radiograph_from_array(np.random.default_rng(7).random((90, 70)))]
    # Oracle networks give well-defined peaks. Random-init networks give nearly flat heatmaps
    # (confidence ~0.002), where a float rounding difference between batch sizes moves the
    # decoded point by tenths of a pixel: that measures the decoder's conditioning, not batching.
    oracle = oracle_models(models, knees)
    single = [without_timings(measure(r, oracle)) for r in radiographs]
    for batch_size in (2, 8):
        batched = measure_batch(radiographs, oracle, batch_size=batch_size)
        for i, (one, many) in enumerate(zip(single, batched)):
            assert_close(one, without_timings(many), f"image {i}, batch size {batch_size}")
    # Repeats are bit-identical, random-init networks included.
    assert [without_timings(measure(r, oracle)) for r in radiographs] == single
    first = [without_timings(measure(r, models)) for r in radiographs]
    assert [without_timings(measure(r, models)) for r in radiographs] == first


def test_prepare_input_standardises_each_image_on_its_own():
    images = torch.stack([torch.linspace(0, 1, 64).reshape(8, 8), torch.full((8, 8), 0.3)])
    x = prepare_input(images)
    assert x.shape == (2, 1, 8, 8) and x.dtype == torch.float32
    assert x[0].mean().item() == pytest.approx(0.0, abs=1e-6) and x[0].std(correction=0).item() == pytest.approx(1.0)
    assert torch.equal(x[1], torch.zeros(1, 8, 8))
    assert torch.equal(prepare_input(images[:1]), x[:1])


def test_invalid_arguments_raise_value_errors(models):
    radiograph = make_knee().radiograph()
    with pytest.raises(ValueError, match="kind"):
        measure(radiograph, models, kind="knee")
    with pytest.raises(ValueError, match="side"):
        measure(radiograph, models, side="left")
    with pytest.raises(ValueError, match="batch_size"):
        measure_batch([radiograph], models, batch_size=0)
    with pytest.raises(ValueError, match="CUDA only"):
        measure(radiograph, models, autocast=True)
    with pytest.raises(ValueError, match="Radiograph"):
        measure_batch([radiograph.pixels], models)


def test_a_few_weak_landmarks_pass_many_are_flagged_and_weak_reference_points_suggest_a_wrong_view():
    from KneeAlignmentLib import qc
    from KneeAlignmentLib.measurement import Landmarks

    schema = load_schema("preop")
    points = example_landmarks_px("preop", spacing_mm=0.5, image_size=(640, 512))

    def codes(confidence, ref_conf=(0.9, 0.9)):
        landmarks = Landmarks("preop", schema.version, schema.names, points, np.asarray(confidence, float))
        return [f.code for f in qc.confidence_flags(landmarks, np.asarray(ref_conf))]

    conf = np.full(len(schema), 0.8)
    conf[:int(DEFAULT_QC.weak_landmark_fraction_max * len(schema))] = 0.1  # as many weak ones as allowed
    assert codes(conf) == []
    conf[:int(DEFAULT_QC.weak_landmark_fraction_max * len(schema)) + 1] = 0.1
    assert codes(conf) == ["low_landmark_confidence"]
    weak_reference = (0.9, DEFAULT_QC.global_confidence_min - 0.01)
    assert codes(np.full(len(schema), 0.8), ref_conf=weak_reference) == ["wrong_view_suspected"]
    assert codes(np.full(len(schema), 0.2)) == ["low_landmark_confidence", "low_mean_confidence",
                                                "wrong_view_suspected"]


def test_progress_after_each_network_stage(models):
    knees = [radiograph_from_array(np.random.default_rng(i).uniform(0, 1, size=(120, 100)), value_range=(0.0, 1.0))
             for i in range(3)]
    reports = []
    results = measure_batch(knees, models, batch_size=2, progress=lambda f, m: reports.append((f, m)))
    assert len(results) == 3
    fractions = [f for f, _ in reports]
    # Two chunks (2 + 1 images), each: global, pre-op, post-op, orientation check.
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0) and len(reports) == 8
    assert [m for _, m in reports[:4]] == ["Reference points found", "pre-op landmarks found",
                                           "post-op landmarks found", "Orientation checked"]


def test_an_exception_from_progress_stops_the_measurement(models):
    class Stop(Exception):
        pass

    def stop(fraction, message):
        raise Stop(message)

    with pytest.raises(Stop, match="Reference points"):
        measure(radiograph_from_array(np.zeros((64, 64)) + 0.5), models, progress=stop)
