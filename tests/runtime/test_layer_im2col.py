"""Im2col (im2col_layer.cpp), built by compile_net and run by runtime.Net: NumPy
transcriptions of Caffe's im2col_nd_cpu and col2im_nd_cpu loops (the channel-major column
layout) in 1, 2 and 3 spatial axes, the gradient, and Caffe's refusals."""

import itertools

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

import compiler
from compiler.errors import CompileError
from runtime.net import Net


def build(shape, params):
    dims = " ".join(f"dim: {d}" for d in shape)
    text = (f'layer {{ name: "in" type: "Input" top: "x" input_param {{ shape {{ {dims} }} }} }}\n'
            f'layer {{ name: "cols" type: "Im2col" bottom: "x" top: "y" '
            f'convolution_param {{ {params} }} }}\n')
    return Net(compiler.load_text(text, "net", "i.prototxt"))


def im2col_nd(image, kernel, pad, stride, dilation, out, backward_from=None):
    """im2col_nd_core_cpu for one item: column c_col = c_im * prod(kernel) + kernel offset
    (row-major); with backward_from (the column diff), col2im: each entry added to its pixel."""
    channels, spatial = image.shape[0], image.shape[1:]
    kernel_size = int(np.prod(kernel))
    columns = np.zeros((channels * kernel_size,) + tuple(out))
    result = np.zeros(image.shape)
    for c_col in range(channels * kernel_size):
        c_im, offset = divmod(c_col, kernel_size)
        d_offset = np.unravel_index(offset, kernel)
        for position in itertools.product(*(range(o) for o in out)):
            d_im = [p * s - pd + k * dl for p, s, pd, k, dl in
                    zip(position, stride, pad, d_offset, dilation)]
            inside = all(0 <= i < n for i, n in zip(d_im, spatial))
            if backward_from is None:
                columns[(c_col,) + position] = image[(c_im,) + tuple(d_im)] if inside else 0
            elif inside:
                result[(c_im,) + tuple(d_im)] += backward_from[(c_col,) + position]
    return columns if backward_from is None else result


CASES = [
    ((2, 3, 7, 6), "kernel_size: 3", (3, 3), (0, 0), (1, 1), (1, 1)),
    ((2, 2, 9, 8), "kernel_size: 3 stride: 2 pad: 1 dilation: 2", (3, 3), (1, 1), (2, 2),
     (2, 2)),
    ((1, 2, 6, 7), "kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2 pad_h: 1 pad_w: 0",
     (2, 3), (1, 0), (1, 2), (1, 1)),
    ((2, 3, 9), "kernel_size: 4 stride: 2 pad: 1", (4,), (1,), (2,), (1,)),
    ((1, 2, 4, 5, 3), "kernel_size: 2 kernel_size: 3 kernel_size: 2 pad: 1", (2, 3, 2),
     (1, 1, 1), (1, 1, 1), (1, 1, 1)),
    ((1, 2, 4, 5, 3), "kernel_size: 2 kernel_size: 3 force_nd_im2col: true", (2, 3), (0, 0),
     (1, 1), (1, 1)),
]


@pytest.mark.parametrize("shape, params, kernel, pad, stride, dilation", CASES)
def test_forward_and_backward_equal_caffes_loops(shape, params, kernel, pad, stride, dilation):
    axis = 2 if "force_nd_im2col" in params else 1
    if axis == 2:
        params += " axis: 2"
    net = build(shape, params).double()
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    tx = torch.tensor(x, requires_grad=True)
    y = net(x=tx)["y"]
    items = x.reshape((-1,) + shape[axis:])
    out = y.shape[axis + 1:]
    expected = np.stack([im2col_nd(item, kernel, pad, stride, dilation, out) for item in items])
    assert net.compiled.blobs["y"] == tuple(y.shape)
    np.testing.assert_array_equal(y.detach().numpy(), expected.reshape(y.shape))
    top_diff = rng.standard_normal(y.shape)
    y.backward(torch.tensor(top_diff))
    diffs = top_diff.reshape((-1,) + tuple(top_diff.shape[axis:]))
    expected_grad = np.stack([im2col_nd(item, kernel, pad, stride, dilation, out, diff)
                              for item, diff in zip(items, diffs)])
    np.testing.assert_allclose(tx.grad.numpy(), expected_grad.reshape(shape), rtol=1e-12,
                               atol=1e-12)


def test_gradient():
    net = build((1, 2, 5, 5), "kernel_size: 3 stride: 2 pad: 1").double()
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda t: net(x=t)["y"], (x,), eps=1e-6, atol=1e-6)


def test_columns_times_weights_is_the_convolution():
    # The layout Caffe's convolution multiplies: weight (O, C * kh * kw) @ columns.
    net = build((2, 3, 6, 5), "kernel_size: 3 pad: 1 stride: 2")
    x, weight = torch.randn(2, 3, 6, 5), torch.randn(4, 3, 3, 3)
    columns = net(x=x)["y"]
    product = torch.einsum("ok,nkhw->nohw", weight.reshape(4, -1), columns)
    expected = torch.nn.functional.conv2d(x, weight, padding=1, stride=2)
    torch.testing.assert_close(product, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape, params, message", [
    ((2, 3, 4, 4), "stride: 1", "has no kernel size"),
    ((2, 3, 4, 4), "kernel_size: 5", "output size would be 0"),
    ((2, 3, 4, 4), "kernel_size: 2 kernel_size: 2 kernel_size: 2",
     "kernel_size must be given once, or once per spatial axis"),
    ((2, 3, 4, 4, 4), "kernel_h: 2 kernel_w: 2", "can only be used for 2-D"),
    ((2, 3), "kernel_size: 1", "needs at least one spatial axis"),
])
def test_caffes_refusals_are_located(shape, params, message):
    with pytest.raises(CompileError) as caught:
        build(shape, params)
    assert caught.value.line == 2 and message in caught.value.message
