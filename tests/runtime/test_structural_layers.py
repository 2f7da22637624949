"""Structural layers: shapes, Caffe's routing rules (Eltwise MAX ties, ArgMax ties, the fork's
coeff_blob) and gradients (float64 gradcheck)."""

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

from runtime.layers import structural
from compiler.errors import CompileError
from support import compiled_layer


def make(cls, type_name, params="", bottoms=("x",), tops=("y",), bottom_shapes=(),
         top_shapes=(), param_shapes=(), phase="TRAIN"):
    text = (f'layer {{ name: "l" type: "{type_name}" '
            + "".join(f'bottom: "{b}" ' for b in bottoms)
            + "".join(f'top: "{t}" ' for t in tops) + f"{params} }}")
    layer = compiled_layer(text, bottom_shapes, top_shapes, param_shapes, phase)
    return cls(layer, torch.Generator().manual_seed(0)).double()


def rand(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64)


def leaf(t):
    return t.clone().requires_grad_(True)


def check_grad(fn, *inputs):
    assert gradcheck(fn, tuple(leaf(t) for t in inputs), eps=1e-6, atol=1e-6)


# ---- Input / Parameter ----

def test_input_returns_the_fed_tensors():
    layer = make(structural.Input, "Input", bottoms=(), tops=("data", "label"))
    a, b = rand(2, 3), rand(2)
    out = layer(a, b)
    assert out[0] is a and out[1] is b
    with pytest.raises(ValueError, match="fed 1"):
        layer(a)


def test_parameter_returns_its_blob_and_trains_it():
    layer = make(structural.Parameter, "Parameter", "parameter_param { shape { dim: 2 dim: 3 } }",
                 bottoms=(), param_shapes=[(2, 3)])
    (top,) = layer()
    assert top.shape == (2, 3) and not top.detach().any()
    (top * 2).sum().backward()
    assert torch.equal(layer.blobs[0].grad, torch.full((2, 3), 2.0, dtype=torch.float64))


# ---- Reshape / Flatten ----

def test_reshape_uses_the_compiled_top_shape():
    layer = make(structural.Reshape, "Reshape", "reshape_param { shape { dim: 0 dim: -1 } }",
                 bottom_shapes=[(2, 3, 4)], top_shapes=[(2, 12)])
    x = rand(2, 3, 4)
    assert layer(x)[0].shape == (2, 12)
    check_grad(lambda t: layer(t)[0], x)
    with pytest.raises(ValueError, match="compiled for bottom shape"):
        layer(rand(4, 3, 2))


@pytest.mark.parametrize("params, shape", [
    ("", (2, 60)), ("flatten_param { axis: 1 end_axis: 2 }", (2, 12, 5)),
    ("flatten_param { axis: -2 }", (2, 3, 20)), ("flatten_param { axis: 0 }", (120,))])
def test_flatten(params, shape):
    layer = make(structural.Flatten, "Flatten", params, bottom_shapes=[(2, 3, 4, 5)])
    x = rand(2, 3, 4, 5)
    y = layer(x)[0]
    assert y.shape == shape
    assert torch.equal(y.reshape(-1), x.reshape(-1))


# ---- Slice / Concat / Split / Silence ----

def test_slice_at_points():
    layer = make(structural.Slice, "Slice",
                 "slice_param { axis: 1 slice_point: 1 slice_point: 3 }", tops=("a", "b", "c"),
                 bottom_shapes=[(2, 5, 3)])
    x = rand(2, 5, 3)
    a, b, c = layer(x)
    assert [t.shape[1] for t in (a, b, c)] == [1, 2, 2]
    assert torch.equal(torch.cat([a, b, c], 1), x)
    check_grad(lambda t: layer(t)[1], x)


def test_slice_even_split_negative_axis_and_legacy_slice_dim():
    layer = make(structural.Slice, "Slice", "slice_param { axis: -1 }", tops=("a", "b"),
                 bottom_shapes=[(2, 3, 6)])
    a, b = layer(rand(2, 3, 6))
    assert a.shape == b.shape == (2, 3, 3)
    legacy = make(structural.Slice, "Slice", "slice_param { slice_dim: 0 }", tops=("a", "b"),
                  bottom_shapes=[(4, 3)])
    assert legacy(rand(4, 3))[0].shape == (2, 3)
    with pytest.raises(CompileError, match="evenly"):
        make(structural.Slice, "Slice", "slice_param { axis: -1 }", tops=("a", "b"),
             bottom_shapes=[(2, 3, 5)])


def test_slice_rejects_bad_points():
    # The compiler refuses them (the unit reads the compiled sizes).
    with pytest.raises(CompileError, match="1 slice_point need 2 tops, got 3"):
        make(structural.Slice, "Slice", "slice_param { slice_point: 1 }", tops=("a", "b", "c"),
             bottom_shapes=[(2, 5)])
    with pytest.raises(CompileError, match="increase"):
        make(structural.Slice, "Slice", "slice_param { slice_point: 3 slice_point: 2 }",
             tops=("a", "b", "c"), bottom_shapes=[(2, 5)])


def test_concat():
    layer = make(structural.Concat, "Concat", "concat_param { axis: -1 }", bottoms=("a", "b"),
                 bottom_shapes=[(2, 3, 1), (2, 3, 4)])
    a, b = rand(2, 3, 1), rand(2, 3, 4, seed=1)
    y = layer(a, b)[0]
    assert y.shape == (2, 3, 5)
    check_grad(lambda s, t: layer(s, t)[0], a, b)
    default = make(structural.Concat, "Concat", bottoms=("a", "b"),
                   bottom_shapes=[(2, 3), (2, 4)])
    assert default(rand(2, 3), rand(2, 4))[0].shape == (2, 7)
    legacy = make(structural.Concat, "Concat", "concat_param { concat_dim: 0 }",
                  bottoms=("a", "b"), bottom_shapes=[(2, 3), (1, 3)])
    assert legacy(rand(2, 3), rand(1, 3))[0].shape == (3, 3)


def test_split_sums_the_gradients_of_its_tops():
    layer = make(structural.Split, "Split", tops=("a", "b", "c"), bottom_shapes=[(2, 3)])
    x = leaf(rand(2, 3))
    a, b, c = layer(x)
    (a + 2 * b + 3 * c).sum().backward()
    assert torch.equal(x.grad, torch.full((2, 3), 6.0, dtype=torch.float64))


def test_silence_has_no_tops():
    layer = make(structural.Silence, "Silence", bottoms=("a", "b"), tops=(),
                 bottom_shapes=[(2,), (3,)])
    assert layer(rand(2), rand(3)) == ()


# ---- Eltwise ----

def test_eltwise_sum_with_coeffs_and_prod():
    s = make(structural.Eltwise, "Eltwise",
             "eltwise_param { operation: SUM coeff: 1 coeff: -0.5 }", bottoms=("a", "b"),
             bottom_shapes=[(2, 3)] * 2)
    a, b = rand(2, 3), rand(2, 3, seed=1)
    np.testing.assert_allclose(s(a, b)[0].numpy(), a.numpy() - 0.5 * b.numpy())
    check_grad(lambda x, y: s(x, y)[0], a, b)
    p = make(structural.Eltwise, "Eltwise", "eltwise_param { operation: PROD }",
             bottoms=("a", "b", "c"), bottom_shapes=[(2, 3)] * 3)
    c = rand(2, 3, seed=2)
    np.testing.assert_allclose(p(a, b, c)[0].numpy(), a.numpy() * b.numpy() * c.numpy())
    check_grad(lambda x, y, z: p(x, y, z)[0], a, b, c)


def test_eltwise_max_value_and_gradcheck_without_ties():
    m = make(structural.Eltwise, "Eltwise", "eltwise_param { operation: MAX }",
             bottoms=("a", "b", "c"), bottom_shapes=[(2, 3)] * 3)
    a, b, c = rand(2, 3), rand(2, 3, seed=1), rand(2, 3, seed=2)
    np.testing.assert_allclose(m(a, b, c)[0].numpy(),
                               np.maximum(np.maximum(a.numpy(), b.numpy()), c.numpy()))
    check_grad(lambda x, y, z: m(x, y, z)[0], a, b, c)


def test_eltwise_max_routes_ties_like_caffe_cpu():
    m = make(structural.Eltwise, "Eltwise", "eltwise_param { operation: MAX }",
             bottoms=("a", "b", "c"), bottom_shapes=[(4,)] * 3)
    # Column 0: all equal -> bottom 1 (0 must be strictly greater to beat 1; 2 must be
    # strictly greater to beat the winner). Column 1: 0 wins, 2 ties it -> stays 0.
    # Column 2: 2 strictly greater -> 2. Column 3: 0 and 1 tie, 2 lower -> 1.
    a = leaf(torch.tensor([1.0, 5.0, 1.0, 4.0], dtype=torch.float64))
    b = leaf(torch.tensor([1.0, 2.0, 1.0, 4.0], dtype=torch.float64))
    c = leaf(torch.tensor([1.0, 5.0, 3.0, 0.0], dtype=torch.float64))
    m(a, b, c)[0].sum().backward()
    assert a.grad.tolist() == [0, 1, 0, 0]
    assert b.grad.tolist() == [1, 0, 0, 1]
    assert c.grad.tolist() == [0, 0, 1, 0]


def eltwise_coeff_blob_reference(inputs, coeff_blob, coeffs):
    """Caffe (lisa-caffe-public) EltwiseLayer::Forward_cpu's coeff_blob loop, literally."""
    k = len(inputs)
    coeff_data = coeff_blob.reshape(-1)
    num = coeff_data.size // k
    top = np.zeros(inputs[0].size)
    for i, bottom in enumerate(inputs):
        data = bottom.reshape(-1)
        dim = data.size // num
        for j in range(num):
            top[j * dim:(j + 1) * dim] += coeffs[i] * coeff_data[i * num + j] * \
                data[j * dim:(j + 1) * dim]
    return top.reshape(inputs[0].shape)


@pytest.mark.parametrize("coeff_shape", [(2, 2), (2, 2, 3)])
def test_eltwise_coeff_blob(coeff_shape):
    layer = make(structural.Eltwise, "Eltwise",
                 "eltwise_param { operation: SUM coeff_blob: true coeff: 2 coeff: -1 }",
                 bottoms=("a", "b", "w"), bottom_shapes=[(2, 3, 4), (2, 3, 4), coeff_shape])
    assert layer.no_grad_bottoms == (2,)
    a, b, w = rand(2, 3, 4), rand(2, 3, 4, seed=1), rand(*coeff_shape, seed=2)
    expected = eltwise_coeff_blob_reference([a.numpy(), b.numpy()], w.numpy(), [2.0, -1.0])
    np.testing.assert_allclose(layer(a, b, w)[0].numpy(), expected, rtol=1e-12)
    check_grad(lambda x, y: layer(x, y, w)[0], a, b)
    a_leaf, w_leaf = leaf(a), leaf(w)
    layer(a_leaf, b, w_leaf)[0].sum().backward()
    assert a_leaf.grad is not None and w_leaf.grad is None


def test_eltwise_coeff_blob_checks():
    # The compiler refuses the settings (the unit never sees them) ...
    with pytest.raises(CompileError, match="only implemented for operation: SUM"):
        make(structural.Eltwise, "Eltwise", "eltwise_param { operation: MAX coeff_blob: true }",
             bottoms=("a", "b", "w"), bottom_shapes=[(2, 3), (2, 3), (2, 2)])
    with pytest.raises(CompileError, match="one coefficient per input bottom"):
        make(structural.Eltwise, "Eltwise", "eltwise_param { coeff: 1 }", bottoms=("a", "b"),
             bottom_shapes=[(2, 3), (2, 3)])
    # ... and the unit a coeff blob of another shape than the compiled one.
    layer = make(structural.Eltwise, "Eltwise", "eltwise_param { coeff_blob: true }",
                 bottoms=("a", "b", "w"), bottom_shapes=[(2, 3), (2, 3), (2, 2)])
    with pytest.raises(ValueError, match="coeff blob shape"):
        layer(rand(2, 3), rand(2, 3), rand(3, 2))


# ---- Tile / ArgMax / Reduction / Softmax ----

def test_tile():
    layer = make(structural.Tile, "Tile", "tile_param { axis: 1 tiles: 3 }",
                 bottom_shapes=[(2, 2, 3)])
    x = rand(2, 2, 3)
    np.testing.assert_array_equal(layer(x)[0].numpy(), np.tile(x.numpy(), (1, 3, 1)))
    check_grad(lambda t: layer(t)[0], x)


def test_argmax_ties_put_the_larger_index_first():
    layer = make(structural.ArgMax, "ArgMax", "argmax_param { top_k: 3 out_max_val: true }",
                 bottom_shapes=[(2, 5)])
    x = torch.tensor([[1.0, 3.0, 2.0, 3.0, 3.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    (top,) = layer(x)
    assert top.shape == (2, 2, 3)
    assert top[0, 0].tolist() == [4.0, 3.0, 1.0] and top[0, 1].tolist() == [3.0, 3.0, 3.0]
    assert top[1, 0].tolist() == [4.0, 3.0, 2.0]


def test_argmax_shapes():
    x = rand(2, 3, 4, 5)
    shapes = [tuple(x.shape)]
    plain = make(structural.ArgMax, "ArgMax", bottom_shapes=shapes)
    (top,) = plain(x)
    assert top.shape == (2, 1, 1, 1)
    assert top.reshape(2).tolist() == x.reshape(2, -1).argmax(1).double().tolist()
    on_axis = make(structural.ArgMax, "ArgMax", "argmax_param { axis: 1 top_k: 2 }",
                   bottom_shapes=shapes)
    (top,) = on_axis(x)
    assert top.shape == (2, 2, 4, 5)
    assert torch.equal(top[:, 0], x.argmax(1).double())
    values = make(structural.ArgMax, "ArgMax", "argmax_param { axis: -1 out_max_val: true }",
                  bottom_shapes=shapes)
    assert torch.equal(values(x)[0], x.max(-1, keepdim=True).values)
    assert make(structural.ArgMax, "ArgMax", bottom_shapes=[(3, 7)])(rand(3, 7))[0].shape == \
        (3, 1, 1)
    with pytest.raises(CompileError, match="top_k"):
        make(structural.ArgMax, "ArgMax", "argmax_param { axis: 1 top_k: 4 }",
             bottom_shapes=shapes)


@pytest.mark.parametrize("op, reference", [
    ("SUM", lambda a: a.sum(-1)), ("ASUM", lambda a: np.abs(a).sum(-1)),
    ("SUMSQ", lambda a: (a * a).sum(-1)), ("MEAN", lambda a: a.mean(-1))])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_reduction(op, reference, axis):
    layer = make(structural.Reduction, "Reduction",
                 f"reduction_param {{ operation: {op} axis: {axis} coeff: 2 }}",
                 bottom_shapes=[(2, 3, 4)])
    x = rand(2, 3, 4)
    canonical = axis % 3
    expected = 2 * reference(x.numpy().reshape(x.shape[:canonical] + (-1,)))
    y = layer(x)[0]
    assert y.shape == x.shape[:canonical]
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12)
    check_grad(lambda t: layer(t)[0], x)


def test_softmax():
    layer = make(structural.Softmax, "Softmax", "softmax_param { axis: 2 }",
                 bottom_shapes=[(2, 3, 4)])
    x = rand(2, 3, 4)
    e = np.exp(x.numpy() - x.numpy().max(2, keepdims=True))
    np.testing.assert_allclose(layer(x)[0].numpy(), e / e.sum(2, keepdims=True), rtol=1e-12)
    check_grad(lambda t: layer(t)[0], x)


def test_axis_out_of_range_is_an_error():
    with pytest.raises(CompileError, match="axis 3 is out of range"):
        make(structural.Softmax, "Softmax", "softmax_param { axis: 3 }",
             bottom_shapes=[(2, 3, 4)])
    with pytest.raises(CompileError, match="axis 3 is out of range"):
        make(structural.Tile, "Tile", "tile_param { axis: 3 tiles: 2 }",
             bottom_shapes=[(2, 3, 4)])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_structural_units_run_on_cuda():
    x = rand(2, 5, 3).cuda()
    shapes = [tuple(x.shape)]
    assert make(structural.ArgMax, "ArgMax", "argmax_param { top_k: 2 }",
                bottom_shapes=shapes)(x)[0].is_cuda
    m = make(structural.Eltwise, "Eltwise", "eltwise_param { coeff_blob: true }",
             bottoms=("a", "b", "w"), bottom_shapes=[(2, 5, 3), (2, 5, 3), (2, 2)])
    assert m(x, x, torch.ones(2, 2, dtype=torch.float64, device="cuda"))[0].is_cuda
    assert make(structural.Reduction, "Reduction", bottom_shapes=shapes)(x)[0].is_cuda


def test_registry_names():
    from runtime.layers.registry import unit_for
    for name in ["Input", "Parameter", "Reshape", "Flatten", "Slice", "Concat", "Split",
                 "Silence", "Eltwise", "Tile", "ArgMax", "Reduction", "Softmax"]:
        assert unit_for(name) is getattr(structural, name)
