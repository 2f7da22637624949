"""Element-wise layers: Caffe's values, Caffe's gradients (gradcheck in float64 away from kinks,
explicit checks at the kinks), Dropout's phase behaviour and determinism."""

import math

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck
from torch.func import functional_call

from compiler.errors import CompileError
from runtime.layers import neuron
from support import compiled_layer


def make(cls, type_name, params="", shape=(2, 3, 4), param_shapes=(), phase="TRAIN", seed=0):
    text = f'layer {{ name: "l" type: "{type_name}" bottom: "x" top: "y" {params} }}'
    layer = compiled_layer(text, [shape], [shape], param_shapes, phase)
    return cls(layer, torch.Generator().manual_seed(seed)).double()


def away_from(x, points, gap=0.05):
    """Move entries of x that lie within `gap` of a kink to gap beyond it."""
    x = x.clone()
    for p in points:
        near = (x - p).abs() < gap
        x[near] = p + gap * torch.sign(x[near] - p + 1e-12)
    return x


def rand(*shape, seed=0, low=-2.0, high=2.0):
    g = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(shape, generator=g, dtype=torch.float64)


def check_grad(layer, x):
    x = x.clone().requires_grad_(True)
    assert gradcheck(lambda t: layer(t)[0], (x,), eps=1e-6, atol=1e-6)


def grad_of(layer, x):
    x = x.clone().requires_grad_(True)
    layer(x)[0].sum().backward()
    return x.grad


# ---- ReLU / PReLU / ELU ----

@pytest.mark.parametrize("slope", [0.0, 0.1, -0.3])
def test_relu_value_and_gradcheck(slope):
    layer = make(neuron.ReLU, "ReLU", f"relu_param {{ negative_slope: {slope} }}")
    x = away_from(rand(2, 3, 4), [0.0])
    y = layer(x)[0]
    expected = np.maximum(x.numpy(), 0) + slope * np.minimum(x.numpy(), 0)
    np.testing.assert_allclose(y.numpy(), expected)
    check_grad(layer, x)


@pytest.mark.parametrize("slope", [0.0, 0.25])
def test_relu_gradient_at_zero_is_the_negative_slope(slope):
    layer = make(neuron.ReLU, "ReLU", f"relu_param {{ negative_slope: {slope} }}")
    grad = grad_of(layer, torch.zeros(3, dtype=torch.float64))
    np.testing.assert_allclose(grad.numpy(), [slope] * 3)


def test_prelu_default_filler_is_0_25_and_channelwise_value():
    layer = make(neuron.PReLU, "PReLU", param_shapes=[(3,)])
    np.testing.assert_allclose(layer.blobs[0].detach().numpy(), [0.25] * 3)
    with torch.no_grad():
        layer.blobs[0].copy_(torch.tensor([0.1, -0.5, 2.0]))
    x = rand(2, 3, 4)
    expected = np.where(x.numpy() > 0, x.numpy(),
                        np.array([0.1, -0.5, 2.0])[None, :, None] * x.numpy())
    np.testing.assert_allclose(layer(x)[0].detach().numpy(), expected)


@pytest.mark.parametrize("shared, slope_shape", [(False, (3,)), (True, ())])
def test_prelu_gradcheck_input_and_slopes(shared, slope_shape):
    params = f"prelu_param {{ channel_shared: {str(shared).lower()} " \
             f"filler {{ type: 'uniform' min: -1 max: 1 }} }}"
    layer = make(neuron.PReLU, "PReLU", params, param_shapes=[slope_shape])
    x = away_from(rand(2, 3, 4), [0.0]).requires_grad_(True)
    slopes = layer.blobs[0].detach().clone().requires_grad_(True)

    def run(inp, a):
        return functional_call(layer, {"blobs.0": a}, (inp,))[0]
    assert gradcheck(run, (x, slopes), eps=1e-6, atol=1e-6)


def test_prelu_gradient_at_zero_is_the_slope():
    layer = make(neuron.PReLU, "PReLU", param_shapes=[(3,)])
    grad = grad_of(layer, torch.zeros(1, 3, 2, dtype=torch.float64))
    np.testing.assert_allclose(grad.numpy(), np.full((1, 3, 2), 0.25))


def test_elu_value_gradcheck_and_gradient_at_zero():
    layer = make(neuron.ELU, "ELU", "elu_param { alpha: 0.7 }")
    x = away_from(rand(2, 3, 4, low=-3, high=30), [0.0])
    expected = np.where(x.numpy() > 0, x.numpy(), 0.7 * (np.exp(x.numpy()) - 1))
    np.testing.assert_allclose(layer(x)[0].numpy(), expected)
    check_grad(layer, x)
    grad = grad_of(layer, torch.tensor([0.0, 1000.0], dtype=torch.float64))
    np.testing.assert_allclose(grad.numpy(), [0.7, 1.0])


# ---- smooth element-wise units ----

@pytest.mark.parametrize("cls, type_name, reference", [
    (neuron.Sigmoid, "Sigmoid", lambda x: 1 / (1 + np.exp(-x))),
    (neuron.TanH, "TanH", np.tanh),
    (neuron.AbsVal, "AbsVal", np.abs),
])
def test_simple_units(cls, type_name, reference):
    layer = make(cls, type_name)
    x = away_from(rand(2, 3, 4), [0.0])
    np.testing.assert_allclose(layer(x)[0].numpy(), reference(x.numpy()), rtol=1e-12)
    check_grad(layer, x)


def test_absval_gradient_at_zero_is_zero():
    layer = make(neuron.AbsVal, "AbsVal")
    assert grad_of(layer, torch.zeros(2, dtype=torch.float64)).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("power, scale, shift", [(2, 0.5, 3), (1, -2, 1), (0.5, 1, 3),
                                                 (-1.5, 2, 5), (3, 1, 0)])
def test_power(power, scale, shift):
    params = f"power_param {{ power: {power} scale: {scale} shift: {shift} }}"
    layer = make(neuron.Power, "Power", params)
    x = rand(2, 3, 4, low=-1, high=1)
    np.testing.assert_allclose(layer(x)[0].numpy(), (shift + scale * x.numpy()) ** power,
                               rtol=1e-12)
    check_grad(layer, x)


def test_power_with_zero_scale_is_constant():
    layer = make(neuron.Power, "Power", "power_param { power: 2 scale: 0 shift: 3 }")
    np.testing.assert_allclose(layer(rand(2, 3))[0].numpy(), np.full((2, 3), 9.0))
    layer = make(neuron.Power, "Power", "power_param { power: 0 scale: 0 shift: 0 }")
    np.testing.assert_allclose(layer(rand(2, 3))[0].numpy(), np.ones((2, 3)))


@pytest.mark.parametrize("base, scale, shift", [(-1, 1, 0), (2, 0.5, 1), (10, -1, -0.5),
                                                (-1, 2, 0.3)])
def test_exp(base, scale, shift):
    params = f"exp_param {{ base: {base} scale: {scale} shift: {shift} }}"
    layer = make(neuron.Exp, "Exp", params)
    x = rand(2, 3, 4)
    b = math.e if base == -1 else base
    # Parameters are proto floats: compare against their float32 values.
    scale, shift = float(np.float32(scale)), float(np.float32(shift))
    np.testing.assert_allclose(layer(x)[0].numpy(), b ** (shift + scale * x.numpy()),
                               rtol=1e-12)
    check_grad(layer, x)


@pytest.mark.parametrize("base, scale, shift", [(-1, 1, 0), (2, 0.5, 3), (10, -1, 4)])
def test_log(base, scale, shift):
    params = f"log_param {{ base: {base} scale: {scale} shift: {shift} }}"
    layer = make(neuron.Log, "Log", params)
    x = rand(2, 3, 4, low=0.1, high=2)
    b = math.e if base == -1 else base
    expected = np.log(shift + scale * x.numpy()) / np.log(b)
    np.testing.assert_allclose(layer(x)[0].numpy(), expected, rtol=1e-12)
    check_grad(layer, x)


def test_exp_and_log_reject_a_non_positive_base():
    with pytest.raises(CompileError, match="base"):
        make(neuron.Exp, "Exp", "exp_param { base: 0 }")
    with pytest.raises(CompileError, match="base"):
        make(neuron.Log, "Log", "log_param { base: -2 }")


def test_bnll_is_stable_and_its_gradient_is_the_sigmoid():
    layer = make(neuron.BNLL, "BNLL")
    x = torch.tensor([-800.0, -3.0, -1e-3, 0.0, 1e-3, 2.0, 800.0], dtype=torch.float64)
    y = layer(x)[0]
    expected = np.where(x.numpy() > 0, x.numpy() + np.log1p(np.exp(-np.abs(x.numpy()))),
                        np.log1p(np.exp(-np.abs(x.numpy()))))
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12, atol=1e-300)
    grad = grad_of(layer, x)
    sigmoid = np.array([1 / (1 + math.exp(-v)) if v > -700 else 0.0 for v in x.tolist()])
    np.testing.assert_allclose(grad.numpy(), sigmoid, rtol=1e-12)
    check_grad(layer, rand(2, 3, 4))


def test_swish():
    layer = make(neuron.Swish, "Swish", "swish_param { beta: 1.5 }")
    x = rand(2, 3, 4)
    np.testing.assert_allclose(layer(x)[0].numpy(),
                               x.numpy() / (1 + np.exp(-1.5 * x.numpy())), rtol=1e-12)
    check_grad(layer, x)


def test_clip():
    layer = make(neuron.Clip, "Clip", "clip_param { min: -0.5 max: 1 }")
    x = away_from(rand(2, 3, 4), [-0.5, 1.0])
    np.testing.assert_allclose(layer(x)[0].numpy(), np.clip(x.numpy(), -0.5, 1))
    check_grad(layer, x)
    # The bounds themselves pass the gradient (Caffe: x >= min && x <= max).
    grad = grad_of(layer, torch.tensor([-0.5, 1.0, 1.5], dtype=torch.float64))
    assert grad.tolist() == [1.0, 1.0, 0.0]


def test_threshold_forward_and_no_gradient():
    layer = make(neuron.Threshold, "Threshold", "threshold_param { threshold: 0.5 }")
    x = torch.tensor([0.2, 0.5, 0.51, 3.0], dtype=torch.float64, requires_grad=True)
    y = layer(x)[0]
    assert y.tolist() == [0.0, 0.0, 1.0, 1.0]
    assert not y.requires_grad
    assert neuron.Threshold.no_grad_bottoms == (0,)


# ---- Dropout ----

def test_dropout_train_scales_kept_units_and_drops_the_rest():
    layer = make(neuron.Dropout, "Dropout", "dropout_param { dropout_ratio: 0.3 }",
                 shape=(100, 100))
    x = rand(100, 100, low=0.5, high=1.5).requires_grad_(True)
    y = layer(x)[0]
    kept = y != 0
    # dropout_ratio is a proto float, so the scale is 1 / (1 - float32(0.3)), as in Caffe.
    keep = 1 - float(np.float32(0.3))
    np.testing.assert_allclose(y[kept].detach().numpy(), x[kept].detach().numpy() / keep,
                               rtol=1e-12)
    assert abs(kept.double().mean().item() - 0.7) < 0.02
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), kept.double().numpy() / keep, rtol=1e-12)


def test_dropout_test_phase_is_identity():
    layer = make(neuron.Dropout, "Dropout", shape=(5, 5), phase="TEST")
    x = rand(5, 5)
    assert layer(x)[0] is x


def test_dropout_is_deterministic_for_a_seed_and_fresh_each_call():
    a = make(neuron.Dropout, "Dropout", shape=(50,), seed=7)
    b = make(neuron.Dropout, "Dropout", shape=(50,), seed=7)
    c = make(neuron.Dropout, "Dropout", shape=(50,), seed=8)
    x = torch.ones(50, dtype=torch.float64)
    first_a, first_b, first_c = a(x)[0], b(x)[0], c(x)[0]
    assert torch.equal(first_a, first_b)
    assert not torch.equal(first_a, first_c)
    second_a = a(x)[0]
    assert not torch.equal(first_a, second_a)
    assert torch.equal(second_a, b(x)[0])


def test_dropout_rejects_a_ratio_of_one():
    with pytest.raises(CompileError, match="dropout_ratio"):
        make(neuron.Dropout, "Dropout", "dropout_param { dropout_ratio: 1 }")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_dropout_on_cuda_draws_on_the_device_deterministically():
    a = make(neuron.Dropout, "Dropout", shape=(1000,), seed=3).cuda()
    b = make(neuron.Dropout, "Dropout", shape=(1000,), seed=3).cuda()
    x = torch.ones(1000, dtype=torch.float64, device="cuda")
    ya, yb = a(x)[0], b(x)[0]
    assert ya.device.type == "cuda"
    assert torch.equal(ya, yb)
    assert set(ya.unique().tolist()) <= {0.0, 2.0}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_units_run_on_cuda():
    x = rand(2, 3, 4).cuda()
    for cls, type_name, params, pshapes in [
            (neuron.ReLU, "ReLU", "", ()), (neuron.PReLU, "PReLU", "", [(3,)]),
            (neuron.ELU, "ELU", "", ()), (neuron.BNLL, "BNLL", "", ()),
            (neuron.Exp, "Exp", "exp_param { base: 2 shift: 1 }", ()),
            (neuron.Threshold, "Threshold", "", ())]:
        layer = make(cls, type_name, params, param_shapes=pshapes).cuda()
        assert layer(x)[0].device.type == "cuda"


def test_registry_names():
    from runtime.layers.registry import unit_for
    for name in ["ReLU", "PReLU", "ELU", "Sigmoid", "TanH", "AbsVal", "Power", "Exp", "Log",
                 "BNLL", "Threshold", "Dropout", "Swish", "Clip"]:
        assert unit_for(name) is getattr(neuron, name)
