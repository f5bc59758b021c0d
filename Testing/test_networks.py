"""Tests of KneeAlignmentLib.networks: shapes, pinned sizes, attention gate, validation."""

from __future__ import annotations

import json

import pytest
import torch

from KneeAlignmentLib.networks import (
    PRESETS,
    AttentionGate,
    Bottleneck,
    Hourglass,
    HourglassConfig,
    build_network,
    preset,
)


def tiny_config(**overrides) -> HourglassConfig:
    values = dict(
        depth=2, width=8, stacks=2, in_channels=1, out_channels=3, input_size=(32, 32), heatmap_stride=2, attention=True
    )
    values.update(overrides)
    return HourglassConfig(**values)


def n_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# Pinned so that any accidental architecture change (and so any change of the weight
# layout that shipped bundles rely on) fails here first.
@pytest.mark.parametrize(
    ("name", "stage", "n_landmarks", "expected"),
    [
        ("paper", "global", 2, 117_388),
        ("paper", "local", 134, 10_110_640),
        ("paper", "local", 181, 10_146_830),
        ("lite", "global", 2, 62_142),
        ("lite", "local", 134, 295_125),
        ("lite", "local", 181, 298_180),
    ],
)
def test_pinned_parameter_counts(name, stage, n_landmarks, expected):
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        network = build_network(preset(name, stage, n_landmarks))
    assert n_parameters(network) == expected


@pytest.mark.parametrize(
    ("name", "stage", "n_landmarks", "input_size"),
    [
        ("paper", "global", 2, None),
        ("lite", "global", 2, None),
        ("lite", "local", 134, None),
        ("lite", "local", 181, None),
        # The paper local net at its full 256 px input (its smallest valid input at stride 4).
        ("paper", "local", 181, None),
    ],
)
def test_preset_output_shapes(name, stage, n_landmarks, input_size):
    config = preset(name, stage, n_landmarks)
    size = input_size or config.input_size
    torch.manual_seed(0)
    network = build_network(config).eval()
    with torch.no_grad():
        out = network(torch.randn(1, 1, *size))
    stride = config.heatmap_stride
    assert out.shape == (1, config.stacks, n_landmarks, size[0] // stride, size[1] // stride)
    assert torch.isfinite(out).all()
    if input_size is None:
        assert out.shape[-2:] == config.heatmap_size


def test_preset_documented_architecture():
    paper_global, paper_local = preset("paper", "global", 2), preset("paper", "local", 134)
    assert (paper_global.depth, paper_global.width) == (4, 32)
    assert (paper_local.depth, paper_local.width) == (6, 256)
    lite_local = preset("lite", "local", 181)
    assert lite_local.stacks == 1 and lite_local.out_channels == 181
    assert all(preset(n, s, 2).attention for n in PRESETS for s in PRESETS[n])
    with pytest.raises(TypeError):
        PRESETS["paper"]["local"]["depth"] = 1  # presets are read-only


def test_stacks_each_return_distinct_heatmaps():
    torch.manual_seed(0)
    network = build_network(tiny_config(stacks=3, input_size=(16, 24))).eval()
    with torch.no_grad():
        out = network(torch.randn(2, 1, 16, 24))
    assert out.shape == (2, 3, 3, 8, 12)
    assert not torch.allclose(out[:, 0], out[:, 1]) and not torch.allclose(out[:, 1], out[:, 2])


@pytest.mark.parametrize("stride", [1, 2, 4])
def test_heatmap_stride(stride):
    network = build_network(tiny_config(heatmap_stride=stride, stacks=1, input_size=(16 * stride, 8 * stride)))
    out = network.eval()(torch.zeros(1, 1, 16 * stride, 8 * stride))
    assert out.shape == (1, 1, 3, 16, 8)


def test_deterministic_with_fixed_seed():
    image = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    outputs = []
    for _ in range(2):
        torch.manual_seed(123)
        network = build_network(tiny_config()).eval()
        with torch.no_grad():
            outputs.append(network(image))
            assert torch.equal(network(image), outputs[-1])  # same net, same input
    assert torch.equal(outputs[0], outputs[1])  # same seed, same weights


def test_different_seed_gives_different_weights():
    torch.manual_seed(0)
    a = build_network(tiny_config())
    torch.manual_seed(1)
    b = build_network(tiny_config())
    assert not torch.equal(a.heads[0].conv.weight, b.heads[0].conv.weight)


def test_gradients_flow_to_every_stack_and_the_input():
    torch.manual_seed(0)
    network = build_network(tiny_config(stacks=2)).train()
    image = torch.randn(2, 1, 32, 32, requires_grad=True)
    out = network(image)
    loss = ((out - torch.rand_like(out)) ** 2).mean()  # intermediate supervision: all stacks
    loss.backward()
    for name, parameter in network.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
    assert image.grad is not None and image.grad.abs().sum() > 0
    assert network.stem[0].conv.weight.grad.abs().sum() > 0
    for stack in range(2):
        assert network.heads[stack].conv.weight.grad.abs().sum() > 0
        assert network.hourglasses[stack].gate.W_x[0].conv.weight.grad.abs().sum() > 0


def test_without_attention_has_no_gates_and_fewer_parameters():
    with_gates, without = build_network(tiny_config()), build_network(tiny_config(attention=False))
    assert not any(isinstance(m, AttentionGate) for m in without.modules())
    assert sum(isinstance(m, AttentionGate) for m in with_gates.modules()) == 2 * 2  # stacks x depth
    assert n_parameters(without) < n_parameters(with_gates)


# --- attention gate alone ------------------------------------------------------------


def make_gate(seed: int = 0) -> AttentionGate:
    torch.manual_seed(seed)
    return AttentionGate(gating_channels=6, skip_channels=4, inter_channels=3)


def test_attention_gate_shapes_and_range():
    gate = make_gate()
    g, x = torch.randn(2, 6, 5, 7) * 10, torch.randn(2, 4, 5, 7) * 10
    for mode in (gate.train, gate.eval):
        mode()
        alpha = gate.coefficients(g, x)
        assert alpha.shape == (2, 1, 5, 7)
        assert (alpha >= 0).all() and (alpha <= 1).all()
        assert alpha.std() > 0  # the gate is spatially selective, not constant
        torch.testing.assert_close(gate(g, x), x * alpha)


def _set_gate_bias(gate: AttentionGate, bias: float) -> None:
    """Force the gate's pre-sigmoid logit to ``bias`` everywhere (eval-mode batch norm ~ identity)."""
    with torch.no_grad():
        gate.psi[0].conv.weight.zero_()
        gate.psi[0].conv.bias.fill_(bias)


def test_closed_gate_zeros_the_skip_and_open_gate_passes_it():
    gate = make_gate().eval()
    g, x = torch.randn(1, 6, 4, 4), torch.randn(1, 4, 4, 4)
    _set_gate_bias(gate, -1e4)
    assert torch.equal(gate(g, x), torch.zeros_like(x))
    _set_gate_bias(gate, 1e4)
    assert torch.equal(gate(g, x), x)


def test_closed_gates_cut_the_skip_path_of_an_hourglass():
    torch.manual_seed(0)
    hourglass = Hourglass(depth=1, channels=4, attention=True).eval()
    _set_gate_bias(hourglass.gate, -1e4)
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        low = torch.nn.functional.interpolate(hourglass.up(hourglass.inner(hourglass.down(x))), scale_factor=2.0)
        torch.testing.assert_close(hourglass(x), low, rtol=0, atol=0)


def test_attention_gate_rejects_bad_arguments():
    with pytest.raises(ValueError, match="inter_channels"):
        AttentionGate(4, 4, 0)
    with pytest.raises(ValueError, match="gating_channels"):
        AttentionGate(True, 4, 2)
    with pytest.raises(ValueError, match="spatial size"):
        make_gate()(torch.zeros(1, 6, 4, 4), torch.zeros(1, 4, 4, 5))


def test_bottleneck_projects_channels():
    block = Bottleneck(3, 8)
    assert block(torch.zeros(2, 3, 5, 5)).shape == (2, 8, 5, 5)
    with pytest.raises(ValueError, match="out_channels"):
        Bottleneck(3, 1)


# --- configuration ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"depth": 0}, "depth"),
        ({"depth": True}, "depth"),
        ({"width": 2}, "width"),
        ({"width": 9}, "width"),
        ({"width": 8.0}, "width"),
        ({"stacks": 0}, "stacks"),
        ({"in_channels": 0}, "in_channels"),
        ({"out_channels": -1}, "out_channels"),
        ({"heatmap_stride": 3}, "heatmap_stride"),
        ({"attention": "yes"}, "attention"),
        ({"input_size": (32,)}, "input_size"),
        ({"input_size": (32, 36)}, "input_size"),
        ({"input_size": (32, 0)}, "input_size"),
    ],
)
def test_invalid_config_raises_value_error_naming_it(override, named):
    with pytest.raises(ValueError, match=named):
        tiny_config(**override)


def test_config_dict_round_trip_through_json():
    config = tiny_config(input_size=[16, 24])
    assert config.input_size == (16, 24)
    data = json.loads(json.dumps(config.to_dict()))
    assert HourglassConfig.from_dict(data) == config
    with pytest.raises(ValueError, match="unknown"):
        HourglassConfig.from_dict({**data, "dropout": 0.1})
    del data["attention"]
    with pytest.raises(ValueError, match="missing.*attention"):
        HourglassConfig.from_dict(data)


def test_preset_rejects_unknown_names():
    with pytest.raises(ValueError, match="huge"):
        preset("huge", "local", 134)
    with pytest.raises(ValueError, match="middle"):
        preset("paper", "middle", 134)
    with pytest.raises(ValueError, match="out_channels"):
        preset("lite", "local", 0)


def test_forward_rejects_wrong_input():
    network = build_network(tiny_config())
    with pytest.raises(ValueError, match="multiples of 8"):
        network(torch.zeros(1, 1, 32, 20))
    with pytest.raises(ValueError, match="channel|\\(B, 1, H, W\\)"):
        network(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="HourglassConfig"):
        build_network({"depth": 2})


# --- MONAI's blocks, in plain torch (importing MONAI is slow) -----------------------------------

def take_their_weights(ours, theirs, seed: int) -> None:
    """Same parameter names, then MONAI's module's weights (randomised away from the defaults) in ours."""
    assert list(ours.state_dict()) == list(theirs.state_dict())
    torch.manual_seed(seed)
    for tensor in theirs.state_dict().values():
        if tensor.is_floating_point():
            tensor.copy_(torch.rand_like(tensor) + 0.5)
    ours.load_state_dict(theirs.state_dict())


@pytest.mark.parametrize("act, norm, kernel, stride", [(True, True, 3, 1), (False, True, 1, 1), (False, False, 1, 1),
                                                        (True, True, 7, 2)])
def test_conv_block_is_monai_convolution(act, norm, kernel, stride):
    from monai.networks.blocks import Convolution

    from KneeAlignmentLib.networks import _conv

    ours = _conv(3, 6, kernel, strides=stride, act=act, norm=norm)
    theirs = Convolution(spatial_dims=2, in_channels=3, out_channels=6, kernel_size=kernel, strides=stride,
                         adn_ordering="NA", act="RELU" if act else None, norm="BATCH" if norm else None,
                         bias=not norm, conv_only=not (act or norm))
    take_their_weights(ours, theirs, seed=4)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    for mode in ("train", "eval"):
        getattr(ours, mode)(), getattr(theirs, mode)()
        assert torch.equal(ours(x), theirs(x))


def test_attention_gate_is_monai_attention_block():
    from monai.networks.nets.attentionunet import AttentionBlock

    ours, theirs = AttentionGate(6, 4, 3), AttentionBlock(spatial_dims=2, f_int=3, f_g=6, f_l=4)
    take_their_weights(ours, theirs, seed=6)
    g, x = torch.randn(2, 6, 8, 8), torch.randn(2, 4, 8, 8)
    ours.eval(), theirs.eval()
    assert torch.equal(ours(g, x), theirs(g=g, x=x))


def test_inference_imports_neither_monai_nor_plotting(tmp_path):
    """What `kneealign measure` imports to measure DICOMs and draw overlays: no MONAI, matplotlib or SimpleITK
    (issue 15)."""
    import subprocess
    import sys

    code = ("import sys, numpy, KneeAlignmentLib.pipeline, KneeAlignmentLib.batch, KneeAlignmentLib.cli; "
            "from KneeAlignmentLib.overlay import draw_result; "
            f"draw_result(numpy.zeros((40, 30)), None, None, ['a note'], 'OK', {str(tmp_path / 'o.png')!r}); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'monai', 'matplotlib', 'SimpleITK'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]" and (tmp_path / "o.png").stat().st_size
