"""runtime/layers/vision.py units: NumPy references of Caffe's loops where Caffe and PyTorch
differ, and float64 gradient checks for every unit (inputs and learnable blobs)."""

import math

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

from runtime.layers.registry import unit_for
from compiler.errors import CompileError
from runtime.layers.base import LayerError
from support import compiled_layer

FLT_MAX = float(np.finfo(np.float32).max)


def build(text, bottom_shapes, top_shapes=(), param_shapes=(), phase="TRAIN", seed=0):
    layer = compiled_layer(text, bottom_shapes, top_shapes, param_shapes, phase)
    return unit_for(layer.type)(layer, torch.Generator().manual_seed(seed))


def layer_text(kind, params="", bottoms=("x",), tops=("y",)):
    lines = [f'name: "{kind.lower()}1" type: "{kind}"']
    lines += [f'bottom: "{b}"' for b in bottoms] + [f'top: "{t}"' for t in tops]
    return "layer { " + " ".join(lines) + " " + params + " }"


def randn(*shape, seed=1):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


def check_gradients(unit, *bottoms, differentiable=None, reseed=None):
    """gradcheck the unit's forward w.r.t. its learnable blobs and the differentiable bottoms
    (all by default), in float64. `reseed` re-seeds the unit's generator before each call,
    for units that draw random numbers in forward."""
    unit = unit.double()
    names = [name for name, p in unit.named_parameters() if p.requires_grad]
    blobs = [p.detach().clone().requires_grad_(True)
             for name, p in unit.named_parameters() if p.requires_grad]
    differentiable = range(len(bottoms)) if differentiable is None else differentiable
    inputs = [b.double().clone().requires_grad_(i in differentiable)
              for i, b in enumerate(bottoms)]

    def run(*args):
        if reseed is not None:
            unit.rng.manual_seed(reseed)
        replaced = dict(zip(names, args[:len(names)]))
        return torch.func.functional_call(unit, replaced, tuple(args[len(names):]))

    assert gradcheck(run, tuple(blobs + inputs), eps=1e-6, atol=1e-5, rtol=1e-4)


# --------------------------------------------------------------------------- references


def caffe_pool(x, method, kernel, stride, pad, out_size):
    """pooling_layer.cpp's Forward_cpu loops (MAX, AVE) for one (H, W) plane set."""
    n, c, height, width = x.shape
    top = np.zeros((n, c) + tuple(out_size))
    for ph in range(out_size[0]):
        for pw in range(out_size[1]):
            hstart, wstart = ph * stride[0] - pad[0], pw * stride[1] - pad[1]
            if method == "MAX":
                hend, wend = min(hstart + kernel[0], height), min(wstart + kernel[1], width)
                hstart, wstart = max(hstart, 0), max(wstart, 0)
                window = x[:, :, hstart:hend, wstart:wend].reshape(n, c, -1)
                top[:, :, ph, pw] = (window.max(axis=2) if window.shape[2]
                                     else -FLT_MAX)
            else:
                hend = min(hstart + kernel[0], height + pad[0])
                wend = min(wstart + kernel[1], width + pad[1])
                pool_size = (hend - hstart) * (wend - wstart)
                hstart, wstart = max(hstart, 0), max(wstart, 0)
                hend, wend = min(hend, height), min(wend, width)
                window = x[:, :, hstart:hend, wstart:wend]
                top[:, :, ph, pw] = window.sum(axis=(2, 3)) / pool_size
    return top


def caffe_lrn_across(x, size, alpha, beta, k):
    n, c, h, w = x.shape
    pre = (size - 1) // 2
    out = np.zeros_like(x)
    for i in range(c):
        lo, hi = max(0, i - pre), min(c, i - pre + size)
        scale = k + alpha / size * (x[:, lo:hi] ** 2).sum(axis=1)
        out[:, i] = x[:, i] * scale ** -beta
    return out


def caffe_lrn_across_backward(x, dy, size, alpha, beta, k):
    """lrn_layer.cpp CrossChannelBackward_cpu: dx = dy scale^-beta - 2 alpha beta / size * x *
    (running sum over each channel's window of dy * y / scale)."""
    n, c, h, w = x.shape
    pre = (size - 1) // 2
    scale = np.stack([k + alpha / size * (x[:, max(0, i - pre):i - pre + size] ** 2).sum(axis=1)
                      for i in range(c)], axis=1)
    y = x * scale ** -beta
    inverse_pre = size - (size + 1) // 2
    padded_ratio = np.zeros((n, c + size - 1, h, w))
    padded_ratio[:, inverse_pre:inverse_pre + c] = dy * y / scale
    dx = dy * scale ** -beta
    accum = padded_ratio[:, :size - 1].sum(axis=1)
    for i in range(c):
        accum = accum + padded_ratio[:, i + size - 1]
        dx[:, i] -= 2 * alpha * beta / size * x[:, i] * accum
        accum = accum - padded_ratio[:, i]
    return dx


def caffe_lrn_within(x, size, alpha, beta):
    n, c, h, w = x.shape
    pre = (size - 1) // 2
    out = np.zeros_like(x)
    for i in range(h):
        for j in range(w):
            window = x[:, :, max(0, i - pre):i - pre + size, max(0, j - pre):j - pre + size]
            mean = (window ** 2).sum(axis=(2, 3)) / size ** 2
            out[:, :, i, j] = x[:, :, i, j] * (1 + alpha * mean) ** -beta
    return out


def conv_reference(x, weight, bias, stride, pad, dilation, group):
    """Direct gather convolution (Caffe's im2col + gemm, written as loops)."""
    n, c, height, width = x.shape
    out_c, in_per_group, kh, kw = weight.shape
    out_h = (height + 2 * pad[0] - (dilation[0] * (kh - 1) + 1)) // stride[0] + 1
    out_w = (width + 2 * pad[1] - (dilation[1] * (kw - 1) + 1)) // stride[1] + 1
    padded = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    out = np.zeros((n, out_c, out_h, out_w))
    out_per_group = out_c // group
    for o in range(out_c):
        g = o // out_per_group
        for i in range(out_h):
            for j in range(out_w):
                rows = i * stride[0] + dilation[0] * np.arange(kh)
                cols = j * stride[1] + dilation[1] * np.arange(kw)
                patch = padded[:, g * in_per_group:(g + 1) * in_per_group][:, :, rows][..., cols]
                out[:, o, i, j] = (patch * weight[o]).sum(axis=(1, 2, 3))
    return out + (0 if bias is None else bias[None, :, None, None])


def deconv_reference(x, weight, bias, stride, pad, dilation, group):
    """Scatter every input pixel through the (in, out / group, kh, kw) kernel (col2im)."""
    n, c, height, width = x.shape
    _, out_per_group, kh, kw = weight.shape
    in_per_group = c // group
    full_h = stride[0] * (height - 1) + dilation[0] * (kh - 1) + 1
    full_w = stride[1] * (width - 1) + dilation[1] * (kw - 1) + 1
    full = np.zeros((n, out_per_group * group, full_h, full_w))
    for ci in range(c):
        g = ci // in_per_group
        for h in range(height):
            for w in range(width):
                for a in range(kh):
                    for b in range(kw):
                        full[:, g * out_per_group:(g + 1) * out_per_group,
                             h * stride[0] + a * dilation[0],
                             w * stride[1] + b * dilation[1]] += (
                            x[:, ci, h, w][:, None] * weight[ci, :, a, b][None, :])
    out = full[:, :, pad[0]:full_h - pad[0], pad[1]:full_w - pad[1]]
    return out + (0 if bias is None else bias[None, :, None, None])


# --------------------------------------------------------------------------- Convolution


CONV_GROUPED = layer_text("Convolution", """convolution_param { num_output: 4 group: 2
    kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0
    weight_filler { type: "gaussian" } bias_filler { type: "uniform" } }""")


def test_grouped_convolution_matches_reference_with_hw_fields():
    unit = build(CONV_GROUPED, [(2, 6, 5, 4)], [(2, 4, 3, 3)], [(4, 3, 3, 2), (4,)])
    assert [tuple(b.shape) for b in unit.blobs] == [(4, 3, 3, 2), (4,)]
    x = torch.randn(2, 6, 5, 4, generator=torch.Generator().manual_seed(2))
    (y,) = unit(x)
    expected = conv_reference(x.double().numpy(), unit.blobs[0].detach().double().numpy(),
                              unit.blobs[1].detach().double().numpy(), (2, 1), (1, 0),
                              (1, 1), 2)
    np.testing.assert_allclose(y.detach().numpy(), expected, rtol=1e-5, atol=1e-5)


def test_dilated_convolution_with_repeated_fields_matches_reference():
    text = layer_text("Convolution", """convolution_param { num_output: 2 kernel_size: 2
        kernel_size: 3 stride: 2 pad: 1 pad: 2 dilation: 2 bias_term: false
        weight_filler { type: "xavier" } }""")
    unit = build(text, [(1, 3, 7, 8)], [(1, 2, 4, 4)], [(2, 3, 2, 3)])
    assert len(unit.blobs) == 1
    x = randn(1, 3, 7, 8).float()
    (y,) = unit(x)
    expected = conv_reference(x.double().numpy(), unit.blobs[0].detach().double().numpy(),
                              None, (2, 2), (1, 2), (2, 2), 1)
    assert y.shape == (1, 2, 4, 4)
    np.testing.assert_allclose(y.detach().numpy(), expected, rtol=1e-5, atol=1e-5)


def test_convolution_gradients():
    unit = build(CONV_GROUPED, [(2, 6, 5, 4)], [(2, 4, 3, 3)], [(4, 3, 3, 2), (4,)])
    check_gradients(unit, randn(2, 6, 5, 4))


def test_convolution_with_axis_2_folds_leading_axes_into_the_batch():
    text = layer_text("Convolution", """convolution_param { num_output: 3 kernel_size: 3
        axis: 2 weight_filler { type: "gaussian" } bias_filler { type: "gaussian" } }""")
    unit = build(text, [(2, 3, 4, 5, 5)], [(2, 3, 3, 3, 3)], [(3, 4, 3, 3), (3,)])
    x = randn(2, 3, 4, 5, 5).float()
    (y,) = unit(x)
    flat = torch.nn.functional.conv2d(x.reshape(6, 4, 5, 5), unit.blobs[0], unit.blobs[1])
    torch.testing.assert_close(y, flat.reshape(2, 3, 3, 3, 3))


@pytest.mark.parametrize("spatial", [1, 3])
def test_convolution_runs_1d_and_3d(spatial):
    text = layer_text("Convolution", """convolution_param { num_output: 2 kernel_size: 2
        stride: 2 weight_filler { type: "gaussian" } bias_filler { type: "gaussian" } }""")
    in_shape = (1, 2) + (3,) * spatial
    unit = build(text, [in_shape], [(1, 2) + (1,) * spatial],
                 [(2, 2) + (2,) * spatial, (2,)])
    x = randn(*in_shape).float()
    (y,) = unit(x)
    window = x[(slice(None), slice(None)) + (slice(0, 2),) * spatial]
    expected = torch.einsum("nc...,oc...->no", window, unit.blobs[0]) + unit.blobs[1]
    torch.testing.assert_close(y.reshape(1, 2), expected)
    check_gradients(unit, randn(*in_shape))


def test_convolution_rejects_hw_fields_for_3d():
    text = layer_text("Convolution", "convolution_param { num_output: 2 kernel_h: 2 kernel_w: 2 }")
    with pytest.raises(CompileError, match="kernel_h and kernel_w can only be used for 2-D"):
        build(text, [(1, 3, 4, 4, 4)], [(1, 2, 3, 3, 3)], [(2, 3, 2, 2, 2), (2,)])


# --------------------------------------------------------------------------- Deconvolution


DECONV = layer_text("Deconvolution", """convolution_param { num_output: 4 group: 2
    kernel_size: 3 stride: 2 pad: 1 dilation: 2
    weight_filler { type: "gaussian" } bias_filler { type: "gaussian" } }""")
# out = stride * (in - 1) + dilation * (k - 1) + 1 - 2 pad = 2 * 2 + 5 - 2 = 7 (and 9 for 4)
DECONV_SHAPES = dict(bottom_shapes=[(2, 6, 3, 4)], top_shapes=[(2, 4, 7, 9)],
                     param_shapes=[(6, 2, 3, 3), (4,)])


def test_deconvolution_matches_scatter_reference():
    unit = build(DECONV, **DECONV_SHAPES)
    x = randn(2, 6, 3, 4).float()
    (y,) = unit(x)
    expected = deconv_reference(x.double().numpy(), unit.blobs[0].detach().double().numpy(),
                                unit.blobs[1].detach().double().numpy(), (2, 2), (1, 1),
                                (2, 2), 2)
    assert y.shape == (2, 4, 7, 9)
    np.testing.assert_allclose(y.detach().numpy(), expected, rtol=1e-5, atol=1e-5)


def test_deconvolution_bilinear_upsampling_doubles_a_constant_interior():
    text = layer_text("Deconvolution", """convolution_param { num_output: 2 group: 2
        kernel_size: 4 stride: 2 pad: 1 bias_term: false weight_filler { type: "bilinear" } }""")
    unit = build(text, [(1, 2, 4, 4)], [(1, 2, 8, 8)], [(2, 1, 4, 4)])
    (y,) = unit(torch.ones(1, 2, 4, 4))
    # Away from the border the bilinear weights covering each output pixel sum to one.
    torch.testing.assert_close(y[:, :, 1:-1, 1:-1], torch.ones(1, 2, 6, 6))


def test_deconvolution_gradients():
    check_gradients(build(DECONV, **DECONV_SHAPES), randn(2, 6, 3, 4))


# --------------------------------------------------------------------------- Pooling


def pool_unit(params, in_shape, out_shape, phase="TRAIN", tops=("y",)):
    text = layer_text("Pooling", f"pooling_param {{ {params} }}", tops=tops)
    return build(text, [in_shape], [out_shape] * len(tops), phase=phase)


def test_ave_pool_ceil_with_pad_hand_computed():
    # 4 x 4 input 0..15, k 3, s 2, p 1: out = ceil((4 + 2 - 3) / 2) + 1 = 3; windows per
    # axis start -1, 1, 3 with divisors 3, 3, min(6, 5) - 3 = 2.
    unit = pool_unit("pool: AVE kernel_size: 3 stride: 2 pad: 1", (1, 1, 4, 4), (1, 1, 3, 3))
    (y,) = unit(torch.arange(16, dtype=torch.float64).reshape(1, 1, 4, 4))
    expected = [[10 / 9, 24 / 9, 10 / 6],
                [51 / 9, 90 / 9, 33 / 6],
                [25 / 6, 42 / 6, 15 / 4]]
    torch.testing.assert_close(y[0, 0], torch.tensor(expected, dtype=torch.float64))


def test_max_pool_ceil_with_pad_hand_computed():
    unit = pool_unit("pool: MAX kernel_size: 3 stride: 2 pad: 1", (1, 1, 4, 4), (1, 1, 3, 3))
    (y,) = unit(torch.arange(16, dtype=torch.float64).reshape(1, 1, 4, 4))
    expected = [[5, 7, 7], [13, 15, 15], [13, 15, 15]]
    torch.testing.assert_close(y[0, 0], torch.tensor(expected, dtype=torch.float64))


# (params, kernel, stride, pad, input H x W, output H x W as Caffe's shape rule gives it)
POOL_CASES = [
    ("kernel_size: 3 stride: 2", (3, 3), (2, 2), (0, 0), (6, 7), (3, 3)),  # ceil overhang
    ("kernel_size: 3 stride: 2 pad: 1", (3, 3), (2, 2), (1, 1), (6, 5), (4, 3)),
    ("kernel_size: 3 stride: 2 pad: 2", (3, 3), (2, 2), (2, 2), (5, 5), (4, 4)),  # p > k / 2
    ("kernel_size: 3 stride: 3 pad: 1", (3, 3), (3, 3), (1, 1), (5, 5), (2, 2)),  # drop rule
    ("kernel_h: 3 kernel_w: 2 stride_h: 3 stride_w: 1 pad_h: 1 pad_w: 1",
     (3, 2), (3, 1), (1, 1), (7, 4), (3, 5)),
    ("kernel_size: 2 stride: 3", (2, 2), (3, 3), (0, 0), (7, 7), (3, 3)),  # k < s
    ("kernel_size: 3 stride: 2 round_mode: FLOOR", (3, 3), (2, 2), (0, 0), (6, 6), (2, 2)),
    ("kernel_size: 4 stride: 3 pad: 2 round_mode: FLOOR", (4, 4), (3, 3), (2, 2), (8, 8),
     (3, 3)),
]


@pytest.mark.parametrize("case, ceil_mode", [(0, True), (1, True), (2, None), (3, True),
                                              (5, True), (6, False), (7, False)])
def test_max_pooling_uses_torch_windows_only_where_they_are_caffes(case, ceil_mode):
    # torch's own padding (pad <= k / 2) and output size rule, where they give Caffe's
    # windows; the explicit -FLT_MAX padding otherwise. Both paths are checked above and below
    # against Caffe's loops (these cases include both).
    params, _, _, _, in_hw, out_hw = POOL_CASES[case]
    unit = pool_unit(f"pool: MAX {params}", (1, 1) + in_hw, (1, 1) + out_hw)
    assert unit.torch_ceil_mode is ceil_mode


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("params, kernel, stride, pad, in_hw, out_hw", POOL_CASES)
def test_pooling_matches_caffe_loops(method, params, kernel, stride, pad, in_hw, out_hw):
    unit = pool_unit(f"pool: {method} {params}", (2, 3) + in_hw, (2, 3) + out_hw)
    x = randn(2, 3, *in_hw)
    (y,) = unit(x)
    expected = caffe_pool(x.numpy(), method, kernel, stride, pad, out_hw)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_max_pool_window_past_the_input_gives_minus_flt_max():
    # p = 0, k 1 < s 2 on 4 rows: ceil(3 / 2) + 1 = 3 windows start 0, 2, 4; the last holds
    # no input (Caffe keeps it: its drop rule only applies with padding; torch drops it).
    unit = pool_unit("pool: MAX kernel_size: 1 stride: 2", (1, 1, 4, 4), (1, 1, 3, 3))
    assert unit.torch_ceil_mode is None
    (y,) = unit(randn(1, 1, 4, 4))
    assert torch.all(y[0, 0, 2, :] == -FLT_MAX) and torch.all(y[0, 0, :, 2] == -FLT_MAX)
    assert torch.all(y[0, 0, :2, :2] > -FLT_MAX)


def test_max_pool_mask_top_is_caffes_argmax_index():
    unit = pool_unit("pool: MAX kernel_size: 3 stride: 2 pad: 1", (1, 1, 4, 4), (1, 1, 3, 3),
                     tops=("y", "mask"))
    y, mask = unit(torch.arange(16.).reshape(1, 1, 4, 4))
    torch.testing.assert_close(mask[0, 0], torch.tensor([[5., 7, 7], [13, 15, 15],
                                                         [13, 15, 15]]))
    assert mask.dtype == y.dtype


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_global_pooling(method):
    unit = pool_unit(f"pool: {method} global_pooling: true", (2, 3, 4, 5), (2, 3, 1, 1))
    x = randn(2, 3, 4, 5)
    (y,) = unit(x)
    reduce = x.amax if method == "MAX" else x.mean
    torch.testing.assert_close(y, reduce(dim=(2, 3), keepdim=True))


def test_pooling_rejects_a_spatial_size_it_was_not_compiled_for():
    unit = pool_unit("pool: MAX kernel_size: 2 stride: 2", (1, 1, 4, 4), (1, 1, 2, 2))
    with pytest.raises(ValueError, match="pooling1.*compiled"):
        unit(torch.zeros(1, 1, 6, 6))


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("case", [1, 2, 4])
def test_pooling_gradients(method, case):
    params, _, _, _, in_hw, out_hw = POOL_CASES[case]
    unit = pool_unit(f"pool: {method} {params}", (1, 2) + in_hw, (1, 2) + out_hw)
    check_gradients(unit, randn(1, 2, *in_hw))


def caffe_max_pool_backward(x, top_diff, kernel, stride, pad):
    """pooling_layer.cpp's MAX Forward_cpu argmax (the first strict maximum of a window, in
    row-major order) and Backward_cpu (each top diff added to its argmax, in top order)."""
    n, c, height, width = x.shape
    bottom_diff = np.zeros_like(x)
    for i, j in np.ndindex(n, c):
        for ph, pw in np.ndindex(*top_diff.shape[2:]):
            hstart, wstart = ph * stride[0] - pad[0], pw * stride[1] - pad[1]
            hend, wend = min(hstart + kernel[0], height), min(wstart + kernel[1], width)
            best, argmax = -FLT_MAX, None
            for h, w in np.ndindex(hend - max(hstart, 0), wend - max(wstart, 0)):
                h, w = h + max(hstart, 0), w + max(wstart, 0)
                if x[i, j, h, w] > best:
                    best, argmax = x[i, j, h, w], (h, w)
            if argmax is not None:
                bottom_diff[i, j, argmax[0], argmax[1]] += top_diff[i, j, ph, pw]
    return bottom_diff


@pytest.mark.parametrize("case", [0, 1, 2, 3])       # 2: the explicit padding path
def test_max_pool_gradient_with_ties_goes_to_caffes_argmax(case):
    # ReLU'd integer maps hold many equal maxima (whole windows of zeros): the gradient must
    # reach the first one, as Caffe's mask does, in float32 on a batch of several channels.
    params, kernel, stride, pad, in_hw, out_hw = POOL_CASES[case]
    unit = pool_unit(f"pool: MAX {params}", (3, 5) + in_hw, (3, 5) + out_hw)
    generator = torch.Generator().manual_seed(case)
    x = torch.randint(-3, 3, (3, 5) + in_hw, generator=generator).float().clamp_(min=0)
    top_diff = torch.randn((3, 5) + out_hw, generator=generator)
    x.requires_grad_()
    (y,) = unit(x)
    y.backward(top_diff)
    expected = caffe_max_pool_backward(x.detach().numpy(), top_diff.numpy(), kernel, stride, pad)
    np.testing.assert_array_equal(x.grad.numpy(), expected)


def test_stochastic_pooling_train_picks_window_elements_by_activation():
    # 1 x 1 x 2 x 2 windows with weights 1 : 3: element 1 must be chosen ~3 / 4 of the time.
    unit = pool_unit("pool: STOCHASTIC kernel_size: 2 stride: 2", (1, 1, 2, 4000),
                     (1, 1, 1, 2000))
    x = torch.zeros(1, 1, 2, 4000, dtype=torch.float64)
    x[0, 0, 0, 0::2] = 1.0
    x[0, 0, 0, 1::2] = 3.0
    (y,) = unit(x)
    assert set(y.unique().tolist()) <= {1.0, 3.0}
    assert (y == 3.0).double().mean().item() == pytest.approx(0.75, abs=0.03)


def test_stochastic_pooling_train_is_deterministic_per_seed():
    x = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(4))
    first = pool_unit("pool: STOCHASTIC kernel_size: 3 stride: 2", (2, 3, 6, 6),
                      (2, 3, 3, 3))(x)[0]
    again = pool_unit("pool: STOCHASTIC kernel_size: 3 stride: 2", (2, 3, 6, 6),
                      (2, 3, 3, 3))(x)[0]
    assert torch.equal(first, again)


def test_stochastic_pooling_test_is_activation_weighted_mean():
    # TEST: sum(x^2) / sum(x) over the window, which ignores pad and clips at the edge.
    unit = pool_unit("pool: STOCHASTIC kernel_size: 3 stride: 2", (1, 1, 4, 4),
                     (1, 1, 2, 2), phase="TEST")
    x = torch.arange(1, 17, dtype=torch.float64).reshape(1, 1, 4, 4)
    (y,) = unit(x)
    windows = [[x[0, 0, 0:3, 0:3], x[0, 0, 0:3, 2:4]], [x[0, 0, 2:4, 0:3], x[0, 0, 2:4, 2:4]]]
    expected = torch.tensor([[(w * w).sum() / w.sum() for w in row] for row in windows],
                            dtype=torch.float64)
    torch.testing.assert_close(y[0, 0], expected)
    (zero,) = unit(torch.zeros(1, 1, 4, 4))
    assert torch.all(zero == 0)


@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
def test_stochastic_pooling_gradients(phase):
    unit = pool_unit("pool: STOCHASTIC kernel_size: 3 stride: 2", (1, 2, 5, 5), (1, 2, 2, 2),
                     phase=phase)
    x = torch.rand(1, 2, 5, 5, generator=torch.Generator().manual_seed(3),
                   dtype=torch.float64) + 0.1
    check_gradients(unit, x, reseed=11)


# --------------------------------------------------------------------------- LRN


@pytest.mark.parametrize("size", [3, 5])
def test_lrn_across_channels_matches_loop(size):
    text = layer_text("LRN", f"lrn_param {{ local_size: {size} alpha: 0.7 beta: 0.6 k: 2 }}")
    unit = build(text, [(2, 7, 3, 3)], [(2, 7, 3, 3)])
    x = randn(2, 7, 3, 3)
    (y,) = unit(x)
    np.testing.assert_allclose(y.numpy(), caffe_lrn_across(x.numpy(), size, 0.7, 0.6, 2.0),
                               rtol=1e-6)


@pytest.mark.parametrize("size", [1, 3, 5, 9])
def test_lrn_across_channels_backward_matches_caffe(size):
    text = layer_text("LRN", f"lrn_param {{ local_size: {size} alpha: 0.7 beta: 0.6 k: 2 }}")
    unit = build(text, [(2, 7, 3, 3)], [(2, 7, 3, 3)]).double()
    x, dy = randn(2, 7, 3, 3), randn(2, 7, 3, 3, seed=2)
    x.requires_grad_(True)
    (y,) = unit(x)
    y.backward(dy)
    expected = caffe_lrn_across_backward(x.detach().numpy(), dy.numpy(), size, unit.alpha,
                                         unit.beta, unit.k)   # the fields' float32 values
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_lrn_within_channel_matches_loop_and_ignores_k():
    text = layer_text("LRN", """lrn_param { local_size: 3 alpha: 0.9 beta: 0.75 k: 5
        norm_region: WITHIN_CHANNEL }""")
    unit = build(text, [(2, 3, 5, 4)], [(2, 3, 5, 4)])
    x = randn(2, 3, 5, 4)
    (y,) = unit(x)
    np.testing.assert_allclose(y.numpy(), caffe_lrn_within(x.numpy(), 3, 0.9, 0.75),
                               rtol=1e-6)


def test_lrn_rejects_even_size():
    with pytest.raises(CompileError, match="odd"):
        build(layer_text("LRN", "lrn_param { local_size: 4 }"), [(1, 4, 2, 2)], [(1, 4, 2, 2)])


@pytest.mark.parametrize("region", ["ACROSS_CHANNELS", "WITHIN_CHANNEL"])
def test_lrn_gradients(region):
    text = layer_text("LRN", f"lrn_param {{ local_size: 3 alpha: 0.5 norm_region: {region} }}")
    check_gradients(build(text, [(1, 4, 3, 3)], [(1, 4, 3, 3)]), randn(1, 4, 3, 3))


# --------------------------------------------------------------------------- InnerProduct


IP_AXIS2 = layer_text("InnerProduct", """inner_product_param { num_output: 5 axis: 2
    weight_filler { type: "uniform" min: -1 max: 1 } bias_filler { type: "gaussian" } }""")


def test_inner_product_axis_2_keeps_leading_axes():
    unit = build(IP_AXIS2, [(3, 2, 4, 2)], [(3, 2, 5)], [(5, 8), (5,)])
    x = randn(3, 2, 4, 2)
    (y,) = unit.double()(x)
    w, b = unit.blobs[0].detach().numpy(), unit.blobs[1].detach().numpy()
    expected = np.einsum("tnk,ok->tno", x.numpy().reshape(3, 2, 8), w) + b
    np.testing.assert_allclose(y.detach().numpy(), expected, rtol=1e-12)


def test_inner_product_transpose_stores_k_by_n():
    text = layer_text("InnerProduct", """inner_product_param { num_output: 3 transpose: true
        bias_term: false weight_filler { type: "gaussian" } }""")
    unit = build(text, [(4, 2, 3)], [(4, 3)], [(6, 3)])
    assert [tuple(b.shape) for b in unit.blobs] == [(6, 3)]
    x = randn(4, 2, 3)
    (y,) = unit.double()(x)
    np.testing.assert_allclose(y.detach().numpy(),
                               x.numpy().reshape(4, 6) @ unit.blobs[0].detach().numpy())


@pytest.mark.parametrize("transpose", ["false", "true"])
def test_inner_product_gradients(transpose):
    text = layer_text("InnerProduct", f"""inner_product_param {{ num_output: 3 axis: 2
        transpose: {transpose} weight_filler {{ type: "gaussian" }}
        bias_filler {{ type: "gaussian" }} }}""")
    shapes = [(6, 3), (3,)] if transpose == "true" else [(3, 6), (3,)]
    check_gradients(build(text, [(2, 2, 6)], [(2, 2, 3)], shapes), randn(2, 2, 6))


# --------------------------------------------------------------------------- Embed


EMBED = layer_text("Embed", """embed_param { num_output: 4 input_dim: 6
    weight_filler { type: "uniform" min: -0.08 max: 0.08 } bias_filler { type: "gaussian" } }""")


def test_embed_looks_up_truncated_indices_and_pads_minus_one_with_zero_rows():
    unit = build(EMBED, [(2, 3)], [(2, 3, 4)], [(6, 4), (4,)])
    x = torch.tensor([[0.0, 5.0, 2.7], [-1.0, 3.0, -1.0]])
    (y,) = unit(x)
    w, b = unit.blobs[0].detach(), unit.blobs[1].detach()
    expected = torch.stack([torch.stack([w[0], w[5], w[2]]),
                            torch.stack([torch.zeros(4), w[3], torch.zeros(4)])]) + b
    torch.testing.assert_close(y, expected)


def test_embed_padding_gets_no_gradient():
    unit = build(EMBED, [(1, 3)], [(1, 3, 4)], [(6, 4), (4,)])
    (y,) = unit(torch.tensor([[-1.0, 2.0, -1.0]]))
    y.sum().backward()
    expected = torch.zeros(6, 4)
    expected[2] = 1.0  # only the real index; row 0 (where -1 was redirected) stays zero
    torch.testing.assert_close(unit.blobs[0].grad, expected)
    torch.testing.assert_close(unit.blobs[1].grad, torch.full((4,), 3.0))


@pytest.mark.parametrize("bad", [6.0, -2.0])
def test_embed_out_of_range_index_names_the_layer(bad):
    unit = build(EMBED, [(1, 2)], [(1, 2, 4)], [(6, 4), (4,)])
    with pytest.raises(LayerError, match=r"'embed1'.*index .*\[0, 6\)"):
        unit(torch.tensor([[1.0, bad]]))


def test_embed_gradients():
    unit = build(EMBED, [(2, 3)], [(2, 3, 4)], [(6, 4), (4,)])
    check_gradients(unit, torch.tensor([[0.0, 5.0, -1.0], [2.0, 2.0, 1.0]]),
                    differentiable=())


# --------------------------------------------------------------------------- BatchNorm


def bn_unit(phase, params=""):
    text = layer_text("BatchNorm", f"batch_norm_param {{ {params} }}")
    return build(text, [(4, 3, 2, 2)], [(4, 3, 2, 2)], [(3,), (3,), (1,)], phase=phase)


def test_batch_norm_running_sums_after_two_train_steps_and_global_test():
    unit = bn_unit("TRAIN", "moving_average_fraction: 0.9 eps: 0.001").double()
    batches = [randn(4, 3, 2, 2, seed=s) * (s + 1) + s for s in (5, 6)]
    mean_sum, var_sum, factor = np.zeros(3), np.zeros(3), 0.0
    m = 4 * 2 * 2
    for batch in batches:
        (y,) = unit(batch)
        data = batch.numpy()
        mean = data.mean(axis=(0, 2, 3))
        var = ((data - mean[None, :, None, None]) ** 2).mean(axis=(0, 2, 3))
        expected = (data - mean[None, :, None, None]) / np.sqrt(var + 1e-3)[None, :, None, None]
        np.testing.assert_allclose(y.numpy(), expected, rtol=1e-6, atol=1e-6)
        factor = 0.9 * factor + 1
        mean_sum = 0.9 * mean_sum + mean
        var_sum = 0.9 * var_sum + m / (m - 1) * var
    np.testing.assert_allclose(unit.blobs[0].numpy(), mean_sum, rtol=1e-6)
    np.testing.assert_allclose(unit.blobs[1].numpy(), var_sum, rtol=1e-6)
    np.testing.assert_allclose(unit.blobs[2].numpy(), [factor], rtol=1e-6)

    test = bn_unit("TEST", "eps: 0.001").double()
    for target, source in zip(test.blobs, unit.blobs):
        target.data.copy_(source.data)
    x = randn(4, 3, 2, 2, seed=9)
    (y,) = test(x)
    mean, var = mean_sum / factor, var_sum / factor
    expected = (x.numpy() - mean[None, :, None, None]) / np.sqrt(var + 1e-3)[None, :, None, None]
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(test.blobs[2].numpy(), [factor])  # TEST does not update


def test_batch_norm_global_stats_with_zero_scale_factor_read_as_zero():
    unit = bn_unit("TEST")
    x = randn(4, 3, 2, 2).float()
    (y,) = unit(x)
    torch.testing.assert_close(y, x / math.sqrt(unit.param.batch_norm_param.eps))


def test_batch_norm_use_global_stats_overrides_phase():
    unit = bn_unit("TRAIN", "use_global_stats: true")
    unit(randn(4, 3, 2, 2).float())
    assert unit.blobs[2].item() == 0.0  # no running update with global stats
    assert not any(b.requires_grad for b in unit.blobs)


@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
def test_batch_norm_gradients(phase):
    unit = bn_unit(phase)
    if phase == "TEST":
        with torch.no_grad():
            unit.blobs[0].copy_(torch.tensor([0.5, -1.0, 2.0]))
            unit.blobs[1].copy_(torch.tensor([2.0, 1.0, 0.5]))
            unit.blobs[2].fill_(2.0)
    check_gradients(unit, randn(4, 3, 2, 2))


# --------------------------------------------------------------------------- Scale / Bias


def test_scale_blob_defaults_to_ones_and_covers_num_axes():
    text = layer_text("Scale", "scale_param { axis: 1 num_axes: 2 bias_term: true }")
    unit = build(text, [(2, 3, 4, 5)], [(2, 3, 4, 5)], [(3, 4), (3, 4)])
    assert torch.all(unit.blobs[0] == 1) and torch.all(unit.blobs[1] == 0)
    with torch.no_grad():
        unit.blobs[0].copy_(randn(3, 4, seed=2))
        unit.blobs[1].copy_(randn(3, 4, seed=3))
    x = randn(2, 3, 4, 5).float()
    (y,) = unit(x)
    expected = x * unit.blobs[0][None, :, :, None] + unit.blobs[1][None, :, :, None]
    torch.testing.assert_close(y, expected)


def test_scale_with_second_bottom_and_negative_axis():
    text = layer_text("Scale", "scale_param { axis: -2 bias_term: true }", bottoms=("x", "s"))
    unit = build(text, [(2, 3, 4), (3, 4)], [(2, 3, 4)], [(3, 4)])
    assert len(unit.blobs) == 1
    x, s = randn(2, 3, 4).float(), randn(3, 4, seed=7).float()
    (y,) = unit(x, s)
    torch.testing.assert_close(y, x * s + unit.blobs[0])


def test_scale_gradients_learnt_and_bottom():
    learnt = layer_text("Scale", """scale_param { bias_term: true filler { type: "gaussian" }
        bias_filler { type: "gaussian" } }""")
    check_gradients(build(learnt, [(2, 3, 2)], [(2, 3, 2)], [(3,), (3,)]), randn(2, 3, 2))
    two = layer_text("Scale", "scale_param { axis: 0 }", bottoms=("x", "s"))
    check_gradients(build(two, [(2, 3), (2,)], [(2, 3)]), randn(2, 3), randn(2, seed=4))


def test_scalar_scale_with_num_axes_0():
    text = layer_text("Scale", 'scale_param { num_axes: 0 filler { type: "constant" value: 3 } }')
    unit = build(text, [(2, 3)], [(2, 3)], [()])
    x = randn(2, 3).float()
    torch.testing.assert_close(unit(x)[0], 3 * x)
    check_gradients(unit, randn(2, 3))


def test_bias_learnt_and_from_second_bottom():
    text = layer_text("Bias", 'bias_param { axis: 1 filler { type: "gaussian" } }')
    unit = build(text, [(2, 3, 4)], [(2, 3, 4)], [(3,)])
    x = randn(2, 3, 4).float()
    torch.testing.assert_close(unit(x)[0], x + unit.blobs[0][None, :, None])
    check_gradients(unit, randn(2, 3, 4))
    two = build(layer_text("Bias", "bias_param { axis: 1 num_axes: -1 }", bottoms=("x", "b")),
                [(2, 3, 4), (3, 4)], [(2, 3, 4)])
    b = randn(3, 4, seed=5).float()
    torch.testing.assert_close(two(x, b)[0], x + b)
    check_gradients(two, randn(2, 3, 4), randn(3, 4, seed=5))


# --------------------------------------------------------------------------- MVN


def mvn_unit(variance, across, eps=None):
    eps_field = "" if eps is None else f"eps: {eps}"
    text = layer_text("MVN", f"""mvn_param {{ normalize_variance: {str(variance).lower()}
        across_channels: {str(across).lower()} {eps_field} }}""")
    return build(text, [(2, 3, 2, 2)], [(2, 3, 2, 2)])


@pytest.mark.parametrize("across", [False, True])
@pytest.mark.parametrize("variance", [False, True])
def test_mvn_matches_reference(across, variance):
    unit = mvn_unit(variance, across, eps=0.01)
    x = randn(2, 3, 2, 2) * 3 + 1
    (y,) = unit(x)
    rows = x.numpy().reshape(2 if across else 6, -1)
    centred = rows - rows.mean(axis=1, keepdims=True)
    if variance:  # eps (a float field) is added to the standard deviation
        eps = float(np.float32(0.01))
        centred = centred / (np.sqrt((centred ** 2).mean(axis=1, keepdims=True)) + eps)
    np.testing.assert_allclose(y.numpy(), centred.reshape(2, 3, 2, 2), rtol=1e-10)


@pytest.mark.parametrize("across", [False, True])
@pytest.mark.parametrize("variance", [False, True])
def test_mvn_gradients(across, variance):
    # With the default eps (1e-9) Caffe's backward equals the exact gradient to ~1e-9.
    check_gradients(mvn_unit(variance, across), randn(2, 3, 2, 2))


def test_mvn_backward_is_caffes_formula():
    # mvn_layer.cpp: dx = (dy - mean(dy) - y * mean(y * dy)) / (std + eps), which drops a
    # factor std / (std + eps) from the exact gradient: visible with a large eps.
    unit = mvn_unit(True, False, eps=0.5)
    x = (randn(2, 3, 2, 2) * 3 + 1).requires_grad_(True)
    dy = randn(2, 3, 2, 2, seed=8)
    (y,) = unit(x)
    y.backward(dy)
    rows, dys = x.detach().numpy().reshape(6, 4), dy.numpy().reshape(6, 4)
    centred = rows - rows.mean(axis=1, keepdims=True)
    std_eps = np.sqrt((centred ** 2).mean(axis=1, keepdims=True)) + 0.5
    ys = centred / std_eps
    expected = (dys - dys.mean(axis=1, keepdims=True)
                - ys * (ys * dys).mean(axis=1, keepdims=True)) / std_eps
    np.testing.assert_allclose(x.grad.numpy().reshape(6, 4), expected, rtol=1e-10)


def test_mvn_gradient_is_finite_for_a_constant_input():
    unit = build(layer_text("MVN"), [(1, 2, 2, 2)], [(1, 2, 2, 2)])
    x = torch.ones(1, 2, 2, 2, requires_grad=True)
    (y,) = unit(x)
    (y * randn(1, 2, 2, 2).float()).sum().backward()
    assert torch.all(torch.isfinite(x.grad))


# --------------------------------------------------------------------------- Crop


@pytest.mark.parametrize("offsets, expected", [
    ("", (slice(0, 3), slice(0, 2))),
    ("offset: 1", (slice(1, 4), slice(1, 3))),
    ("offset: 2 offset: 1", (slice(2, 5), slice(1, 3))),
])
def test_crop_offsets(offsets, expected):
    text = layer_text("Crop", f"crop_param {{ axis: 2 {offsets} }}", bottoms=("x", "ref"))
    unit = build(text, [(2, 3, 5, 4), (1, 1, 3, 2)], [(2, 3, 3, 2)])
    x = randn(2, 3, 5, 4)
    (y,) = unit(x, torch.zeros(1, 1, 3, 2))
    torch.testing.assert_close(y, x[(slice(None), slice(None)) + expected])
    check_gradients(unit, x, torch.zeros(1, 1, 3, 2), differentiable=(0,))


def test_crop_rejects_offset_past_the_end():
    text = layer_text("Crop", "crop_param { axis: 2 offset: 3 }", bottoms=("x", "ref"))
    with pytest.raises(CompileError, match="crop1.*out of bounds: size 3 at offset 3 in 5"):
        build(text, [(1, 1, 5, 5), (1, 1, 3, 3)], [(1, 1, 3, 3)])


# --------------------------------------------------------------------------- registry


def test_every_vision_type_is_registered():
    from runtime.layers import vision
    for name in ["Convolution", "Deconvolution", "Pooling", "LRN", "InnerProduct", "Embed",
                 "BatchNorm", "Scale", "Bias", "MVN", "Crop"]:
        assert unit_for(name) is getattr(vision, name)


# --------------------------------------------------------------------------- devices


DEVICE_CASES = {
    "conv": (lambda: build(CONV_GROUPED, [(2, 6, 5, 4)], [(2, 4, 3, 3)], [(4, 3, 3, 2), (4,)]),
             lambda: [randn(2, 6, 5, 4)]),
    "deconv": (lambda: build(DECONV, **DECONV_SHAPES), lambda: [randn(2, 6, 3, 4)]),
    "max_pool_mask": (lambda: pool_unit("pool: MAX kernel_size: 3 stride: 2 pad: 2",
                                        (1, 2, 5, 5), (1, 2, 4, 4), tops=("y", "mask")),
                      lambda: [randn(1, 2, 5, 5)]),
    "ave_pool": (lambda: pool_unit("pool: AVE kernel_size: 2 stride: 3", (1, 2, 7, 7),
                                   (1, 2, 3, 3)), lambda: [randn(1, 2, 7, 7)]),
    "stochastic_pool": (lambda: pool_unit("pool: STOCHASTIC kernel_size: 3 stride: 2",
                                          (1, 2, 5, 5), (1, 2, 2, 2)),
                        lambda: [randn(1, 2, 5, 5).abs()]),
    "lrn": (lambda: build(layer_text("LRN", "lrn_param { norm_region: WITHIN_CHANNEL }"),
                          [(1, 4, 3, 3)], [(1, 4, 3, 3)]), lambda: [randn(1, 4, 3, 3)]),
    "embed": (lambda: build(EMBED, [(2, 3)], [(2, 3, 4)], [(6, 4), (4,)]),
              lambda: [torch.tensor([[0.0, 5.0, -1.0], [2.0, 2.0, 1.0]])]),
    "batch_norm": (lambda: bn_unit("TRAIN"), lambda: [randn(4, 3, 2, 2)]),
    "mvn": (lambda: mvn_unit(True, False), lambda: [randn(2, 3, 2, 2)]),
}


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("case", sorted(DEVICE_CASES))
def test_unit_gives_the_same_tops_and_blob_gradients_on_cuda(case):
    make, bottoms = DEVICE_CASES[case]
    results = []
    for device in ("cpu", "cuda"):
        unit = make().double().to(device)
        tops = unit(*[b.to(device) for b in bottoms()])
        float_tops = [t for t in tops if t.is_floating_point() and t.requires_grad]
        if float_tops:
            sum(t.sum() for t in float_tops).backward()
        grads = [b.grad for b in unit.blobs if b.grad is not None]
        state = [b.detach() for b in unit.blobs]
        results.append([t.detach().cpu() for t in list(tops) + grads + state])
    for on_cpu, on_cuda in zip(*results):
        torch.testing.assert_close(on_cuda, on_cpu)
