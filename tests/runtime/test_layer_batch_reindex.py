"""BatchReindex (batch_reindex_layer.cpp), built by compile_net and run by runtime.Net: NumPy
transcriptions of Caffe's forward and backward loops (repeated indices accumulate), the
gradient, and Caffe's refusals."""

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

import compiler
from compiler.errors import CompileError
from runtime.net import Net


def build(data_shape=(4, 3, 2), index_shape=(6,)):
    dims = [" ".join(f"dim: {d}" for d in s) for s in (data_shape, index_shape)]
    text = (f'layer {{ name: "in" type: "Input" top: "x" top: "i" input_param {{ '
            f'shape {{ {dims[0]} }} shape {{ {dims[1]} }} }} }}\n'
            f'layer {{ name: "reindex" type: "BatchReindex" bottom: "x" bottom: "i" '
            f'top: "y" }}\n')
    return Net(compiler.load_text(text, "net", "r.prototxt"))


def caffe_forward(x, permut):
    inner = x.size // x.shape[0]
    out = np.zeros(len(permut) * inner)
    flat = x.reshape(-1)
    for index in range(out.size):
        n = index // inner
        out[index] = flat[int(permut[n]) * inner + index % inner]
    return out.reshape((len(permut),) + x.shape[1:])


def caffe_backward(top_diff, x_shape, permut):
    inner = int(np.prod(x_shape[1:]))
    diff, flat = np.zeros(int(np.prod(x_shape))), top_diff.reshape(-1)
    for index in range(flat.size):
        n = index // inner
        diff[int(permut[n]) * inner + index % inner] += flat[index]
    return diff.reshape(x_shape)


def test_forward_and_backward_equal_caffes_loops():
    net = build().double()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 2))
    permut = np.array([3, 0, 0, 2.7, 1, 3])   # repeated rows; 2.7 truncates to 2
    tx = torch.tensor(x, requires_grad=True)
    y = net(x=tx, i=torch.tensor(permut))["y"]
    np.testing.assert_array_equal(y.detach().numpy(), caffe_forward(x, permut))
    top_diff = rng.standard_normal(y.shape)
    y.backward(torch.tensor(top_diff))
    np.testing.assert_allclose(tx.grad.numpy(), caffe_backward(top_diff, x.shape, permut),
                               rtol=1e-15, atol=1e-15)


def test_gradient_and_no_gradient_to_the_index():
    net = build().double()
    i = torch.tensor([1.0, 1.0, 0.0, 3.0, 3.0, 3.0], dtype=torch.float64, requires_grad=True)
    x = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda t: net(x=t, i=i.detach())["y"], (x,), eps=1e-6, atol=1e-6)
    net(x=x, i=i)["y"].sum().backward()
    assert i.grad is None


def test_an_empty_index_gives_an_empty_top():
    assert build(index_shape=(0,))(x=torch.randn(4, 3, 2), i=torch.zeros(0))["y"].shape == \
        (0, 3, 2)


@pytest.mark.parametrize("value", [-1.0, -0.5, 4.0, float("nan")])
def test_an_index_outside_the_batch_is_a_located_error(value):
    net = build()
    index = torch.tensor([0.0, 1, 2, value, 0, 0])
    with pytest.raises(CompileError) as caught:
        net(x=torch.randn(4, 3, 2), i=index)
    assert caught.value.line == 2 and "is outside [0, 4)" in caught.value.message


def test_the_index_must_have_one_axis():
    with pytest.raises(CompileError) as caught:
        build(index_shape=(6, 1))
    assert caught.value.line == 2
    assert "the index (bottom 1) must have exactly 1 axis, got (6, 1)" in caught.value.message
