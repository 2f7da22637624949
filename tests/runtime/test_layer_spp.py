"""SPP (spp_layer.cpp), built by compile_net and run by runtime.Net: the shape rule, a NumPy
transcription of Caffe's pyramid (GetPoolingParam + PoolingLayer's CPU loops + Flatten +
Concat), the gradient, and Caffe's refusals."""

import math

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

import compiler
from compiler.errors import CompileError
from runtime.net import Net

FLT_MAX = float(np.finfo(np.float32).max)


def spp_net(shape, params):
    dims = " ".join(f"dim: {d}" for d in shape)
    return (f'layer {{ name: "in" type: "Input" top: "x" input_param {{ shape {{ {dims} }} }} }}\n'
            f'layer {{ name: "spp" type: "SPP" bottom: "x" top: "y" spp_param {{ {params} }} }}\n')


def build(shape, params, phase="TEST"):
    return Net(compiler.load_text(spp_net(shape, params), "net", "spp.prototxt"), phase=phase)


def caffe_pool(x, pool, kernel, pad, stride):
    """PoolingLayer::Reshape's output size and Forward_cpu's MAX / AVE loops."""
    n, c, height, width = x.shape
    out = []
    for size, k, p, s in zip((height, width), kernel, pad, stride):
        o = int(math.ceil((size + 2 * p - k) / s)) + 1
        if p and (o - 1) * s >= size + p:
            o -= 1
        out.append(o)
    y = np.zeros((n, c, *out))
    for ph in range(out[0]):
        for pw in range(out[1]):
            hstart, wstart = ph * stride[0] - pad[0], pw * stride[1] - pad[1]
            hend = min(hstart + kernel[0], height + pad[0])
            wend = min(wstart + kernel[1], width + pad[1])
            pool_size = (hend - hstart) * (wend - wstart)
            hstart, wstart = max(hstart, 0), max(wstart, 0)
            hend, wend = min(hend, height), min(wend, width)
            window = x[:, :, hstart:hend, wstart:wend]
            if pool == "MAX":
                y[:, :, ph, pw] = window.max(axis=(2, 3)) if window.size else -FLT_MAX
            else:
                y[:, :, ph, pw] = window.sum(axis=(2, 3)) / pool_size
    return y


def caffe_spp(x, pyramid_height, pool):
    levels = []
    for level in range(pyramid_height):
        bins = 2 ** level
        kernel = [int(math.ceil(size / bins)) for size in x.shape[2:]]
        pad = [(k * bins - size + 1) // 2 for k, size in zip(kernel, x.shape[2:])]
        levels.append(caffe_pool(x, pool, kernel, pad, kernel))
    if pyramid_height == 1:
        return levels[0]
    return np.concatenate([y.reshape(y.shape[0], -1) for y in levels], axis=1)


@pytest.mark.parametrize("shape, pyramid, pool", [
    ((2, 3, 9, 8), 3, "MAX"), ((2, 3, 9, 8), 3, "AVE"), ((1, 2, 13, 7), 2, "AVE"),
    ((2, 2, 5, 6), 1, "MAX"), ((1, 4, 16, 16), 4, "MAX"),
])
def test_forward_equals_caffes_pyramid(shape, pyramid, pool):
    net = build(shape, f"pyramid_height: {pyramid} pool: {pool}")
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    expected = caffe_spp(x.astype(np.float64), pyramid, pool)
    assert net.compiled.blobs["y"] == expected.shape
    np.testing.assert_allclose(net(x=torch.from_numpy(x))["y"].numpy(), expected, rtol=1e-6,
                               atol=1e-6)


def test_top_is_n_by_channels_times_all_bins_and_flops_are_the_levels():
    compiled = build((2, 3, 16, 12), "pyramid_height: 3").compiled
    # Levels of 1, 4 and 16 bins over 3 channels.
    assert compiled.blobs["y"] == (2, 63)
    # Kernels 16 x 12, 8 x 6 and 4 x 3: each level compares 192 values per channel and item.
    assert compiled.layers[-1].flops == 3 * 2 * 3 * 192


@pytest.mark.parametrize("pool", ["MAX", "AVE"])
def test_gradient(pool):
    net = build((1, 2, 7, 6), f"pyramid_height: 3 pool: {pool}").double()
    x = torch.randn(1, 2, 7, 6, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda t: net(x=t)["y"], (x,), eps=1e-6, atol=1e-6)


def test_stochastic_levels_sample_in_train_and_weigh_in_test():
    x = torch.rand(1, 2, 8, 8) + 0.1
    train = build((1, 2, 8, 8), "pyramid_height: 2 pool: STOCHASTIC", phase="TRAIN")
    picked = train(x=x)["y"]
    # Each sampled value is one of the window's elements; a 1 x 1 bin holds all of them.
    assert all(torch.isclose(x[0, c], v).any() for c, v in zip(range(2), picked[0, :2]))
    test = build((1, 2, 8, 8), "pyramid_height: 1 pool: STOCHASTIC")
    whole = x.reshape(1, 2, -1)
    expected = (whole * whole).sum(-1) / whole.sum(-1)
    torch.testing.assert_close(test(x=x)["y"].reshape(1, 2), expected)


@pytest.mark.parametrize("shape, params, message", [
    ((2, 3, 8), "pyramid_height: 2", "input must have 4 axes"),
    ((2, 3, 8, 8), "", "pyramid_height must be at least 1"),
    ((1, 1, 2, 2), "pyramid_height: 3",
     "pyramid level 2 (4 x 4 bins of the 2 x 2 bottom): pad_h (1) must be smaller than "
     "kernel_h (1)"),
])
def test_caffes_refusals_are_located(shape, params, message):
    with pytest.raises(CompileError) as caught:
        build(shape, params)
    assert caught.value.line == 2 and message in caught.value.message
