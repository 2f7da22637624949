"""Converters: the vision and parameterised layers."""

import copy
import math

import numpy as np
import torch
from onnx import TensorProto

from lrcn_proto import caffe_pb2

from .build import _LayerExport
from .registry import Unsupported, converter

# Caffe's -FLT_MAX: what MAX pooling pads with and yields for a window holding no input.
_NEG_FLT_MAX = float(np.finfo(np.float32).min)


def _conv_check(layer):
    spatial = len(layer.attrs.kernel)
    if spatial not in (1, 2, 3):
        return f"{spatial} spatial axes (1 to 3 are supported)"
    return None


def _convolution(op_type):
    def convert(ctx):
        unit = ctx.unit
        x = ctx.inputs[0]
        shape = ctx.bottom_shape(0)
        folded = unit.axis != 1
        if folded:
            # Axes before `axis` are batch-like: one N axis for ONNX, restored afterwards.
            axis = ctx.bottom_axis(0)
            inner = shape[unit.axis:]
            x = ctx.reshape(x, (math.prod(shape[:unit.axis]),) + tuple(inner),
                            None if axis is None else 0, label="fold")
        inputs = [x, ctx.blob(0, "weight")]
        if unit.bias_term:
            inputs.append(ctx.blob(1, "bias"))
        y = ctx.op(op_type, inputs, None if folded else ctx.outputs[0],
                   kernel_shape=list(unit.kernel), strides=list(unit.stride),
                   pads=list(unit.pad) * 2, dilations=list(unit.dilation), group=unit.group)
        if folded:
            ctx.reshape_to_top(y, label="unfold")
    return convert


converter("Convolution", check=_conv_check)(_convolution("Conv"))
converter("Deconvolution", check=_conv_check)(_convolution("ConvTranspose"))


def _pooling_check(layer):
    if len(layer.tops) > 1:
        return "the MAX pooling mask top is not exported"
    if layer.attrs.method == caffe_pb2.PoolingParameter.STOCHASTIC and layer.phase == "TRAIN":
        return "STOCHASTIC pooling in TRAIN samples at random; export the TEST phase"
    if len(layer.bottom_shapes[0]) != 4:
        return "Caffe pools (N, C, H, W) blobs only"
    return None


@converter("Pooling", check=_pooling_check)
def _pooling(ctx):
    unit = ctx.layer.attrs
    methods = caffe_pb2.PoolingParameter
    size, kernel = unit.input_size, unit.kernel
    stochastic = unit.method == methods.STOCHASTIC
    # Caffe's STOCHASTIC kernels ignore pad: windows start at i * stride.
    pad = (0, 0) if stochastic else unit.pad
    out = unit.output_size
    # Pad explicitly so that every window of the ceil rule (the last may hang past size + pad)
    # exists; then pool without padding and keep Caffe's first out_size windows.
    after = [max(0, (o - 1) * s + k - n - p) for o, s, k, n, p in
             zip(out, unit.stride, kernel, size, pad)]
    padded_size = [n + p + a for n, p, a in zip(size, pad, after)]
    pooled = [(m - k) // s + 1 for m, k, s in zip(padded_size, kernel, unit.stride)]
    crop = tuple(pooled) != out

    def pad_input(x, value, label="pad"):
        if not any(pad) and not any(after):
            return x
        pads = ctx.ints(f"{label}_pads", [0, 0, pad[0], pad[1], 0, 0, after[0], after[1]])
        return ctx.op("Pad", [x, pads, ctx.scalar(f"{label}_value", value)], label=label,
                      mode="constant")

    def pool(op_type, x, out_name, label):
        y = ctx.op(op_type, [x], None if crop else out_name, label, kernel_shape=list(kernel),
                   strides=list(unit.stride))
        if crop:
            y = ctx.slice(y, [0, 0], list(out), [2, 3], out=out_name, label=f"{label}_crop")
        return y

    x = ctx.inputs[0]
    if unit.method == methods.MAX:
        # -FLT_MAX padding never wins against an input and gives Caffe's -FLT_MAX for a
        # window with no input element.
        pool("MaxPool", pad_input(x, _NEG_FLT_MAX), ctx.outputs[0], "maxpool")
    elif unit.method == methods.AVE:
        rows, cols = (np.asarray(d, np.float32) for d in unit.ave_divisors)
        divisor = rows[:, None] * cols[None, :]
        factor = math.prod(kernel) / divisor
        exact = np.all(factor == 1)
        # AveragePool divides by the full window; Caffe divides by the window clipped to
        # size + pad: multiply by kernel area / Caffe's divisor where they differ.
        y = pool("AveragePool", pad_input(x, 0.0), ctx.outputs[0] if exact else None,
                 "avgpool")
        if not exact:
            ctx.op("Mul", [y, ctx.const("divisor_factor", factor[None, None])], ctx.outputs[0],
                   "divisor")
    else:
        # Activation-weighted mean sum(x^2) / sum(x), 0 where a window sums to <= 0; the two
        # window means share their divisor, so their ratio is the ratio of the sums.
        padded = pad_input(x, 0.0)
        squares = ctx.op("Mul", [padded, padded], label="squares")
        mean = pool("AveragePool", padded, None, "mean")
        mean_sq = pool("AveragePool", squares, None, "mean_squares")
        positive = ctx.op("Greater", [mean, ctx.scalar("zero", 0.0)], label="positive")
        safe = ctx.op("Where", [positive, mean, ctx.scalar("one", 1.0)], label="safe")
        ratio = ctx.op("Div", [mean_sq, safe], label="ratio")
        ctx.op("Where", [positive, ratio, ctx.scalar("zero_out", 0.0)], ctx.outputs[0],
               "select")


def _spp_check(layer):
    if layer.attrs.levels[0].pooling.method == caffe_pb2.PoolingParameter.STOCHASTIC and \
            layer.phase == "TRAIN":
        return "STOCHASTIC pooling in TRAIN samples at random; export the TEST phase"
    return None


@converter("SPP", check=_spp_check)
def _spp(ctx):
    """Each pyramid level through the Pooling converter (a layer whose attrs are the level's
    Pooling attrs), flattened to (N, C * bins) and concatenated on axis 1; one level stays
    unflattened."""
    levels = ctx.layer.attrs.levels
    flat = []
    for i, level in enumerate(levels):
        layer = copy.copy(ctx.layer)
        layer.key, layer.type = f"{ctx.key}/level{i}", "Pooling"
        layer.attrs, layer.top_shapes = level.pooling, [level.top_shape]
        out = ctx.outputs[0] if len(levels) == 1 else ctx._temp(f"level{i}")
        _pooling(_LayerExport(ctx.graph, layer, ctx.unit.levels[i], ctx.inputs, [out],
                              ctx.dynamic, None, ctx.doc))
        if len(levels) > 1:
            shape = level.top_shape
            flat.append(ctx.reshape(out, (shape[0], math.prod(shape[1:])), ctx.bottom_axis(0),
                                    label=f"flatten{i}"))
    if flat:
        ctx.op("Concat", flat, ctx.outputs[0], axis=1)


@converter("Im2col", check=_conv_check)
def _im2col(ctx):
    """A grouped convolution with one-hot kernels: group c (input channel c) has one output
    channel per kernel offset k, c * K + k, whose kernel is 1 at k: Caffe's channel-major
    columns, zero padding included. Each output is one input times 1 plus the window's other
    inputs times 0, so it is exact for finite inputs (an inf elsewhere in the window makes
    NaN)."""
    attrs = ctx.layer.attrs
    shape = ctx.bottom_shape(0)
    channels, kernel_size = shape[attrs.axis], math.prod(attrs.kernel)
    x = ctx.inputs[0]
    folded = attrs.axis != 1
    if folded:
        # Axes before `axis` are batch-like: one N axis for ONNX, restored afterwards.
        axis = ctx.bottom_axis(0)
        x = ctx.reshape(x, (math.prod(shape[:attrs.axis]),) + tuple(shape[attrs.axis:]),
                        None if axis is None else 0, label="fold")
    one_hot = np.eye(kernel_size, dtype=np.float32).reshape((kernel_size, 1) +
                                                            tuple(attrs.kernel))
    weight = ctx.const("one_hot", np.tile(one_hot, (channels,) + (1,) * (one_hot.ndim - 1)))
    y = ctx.op("Conv", [x, weight], None if folded else ctx.outputs[0],
               kernel_shape=list(attrs.kernel), strides=list(attrs.stride),
               pads=list(attrs.pad) * 2, dilations=list(attrs.dilation), group=channels)
    if folded:
        ctx.reshape_to_top(y, label="unfold")


@converter("LRN", check=lambda layer: None if len(layer.bottom_shapes[0]) == 4 else
           "Caffe's LRN needs (N, C, H, W)")
def _lrn(ctx):
    unit, x = ctx.unit, ctx.inputs[0]
    if unit.across:
        ctx.op("LRN", [x], ctx.outputs[0], size=unit.size, alpha=float(unit.alpha),
               beta=float(unit.beta), bias=float(unit.k))
        return
    # WITHIN_CHANNEL: Caffe composes AVE pooling (kernel n, pad (n-1)/2, stride 1: every
    # divisor is n^2 for odd n) and Power (1 + alpha * mean)^-beta; k is not used.
    squares = ctx.op("Mul", [x, x], label="squares")
    p = unit.pre_pad
    mean = ctx.op("AveragePool", [squares], label="mean", kernel_shape=[unit.size] * 2,
                  strides=[1, 1], pads=[p, p, p, p], count_include_pad=1)
    scaled = ctx.op("Mul", [mean, ctx.scalar("alpha", unit.alpha)], label="alpha")
    scale = ctx.op("Add", [scaled, ctx.scalar("one", 1.0)], label="scale")
    factor = ctx.op("Pow", [scale, ctx.scalar("neg_beta", -unit.beta)], label="factor")
    ctx.op("Mul", [x, factor], ctx.outputs[0], "normalize")


@converter("InnerProduct")
def _inner_product(ctx):
    unit = ctx.unit
    rank = len(ctx.bottom_shape(0))
    x = ctx.inputs[0]
    two_dim = unit.axis == 1 and rank == 2 and len(ctx.top_shape()) == 2
    if not two_dim:
        # Flatten gives (prod(axes before axis), prod(the rest)), as Caffe's M x K view.
        x = ctx.op("Flatten", [x], label="flatten", axis=unit.axis)
    inputs = [x, ctx.blob(0, "weight")]
    if unit.bias_term:
        inputs.append(ctx.blob(1, "bias"))
    # Caffe's weight is (N, K), or (K, N) with transpose: Gemm reads either layout as stored.
    y = ctx.op("Gemm", inputs, ctx.outputs[0] if two_dim else None, "gemm",
               transB=0 if unit.transpose else 1)
    if not two_dim:
        ctx.reshape_to_top(y)


@converter("Embed")
def _embed(ctx):
    """Row int(x) of the weight; index -1 (LRCN's padding) reads a zero row (the bias is still
    added). Caffe's static_cast<int> truncates toward zero; ONNX leaves Cast's rounding of
    fractions unspecified, so truncate first: sign(x) * floor(|x|)."""
    unit, x = ctx.unit, ctx.inputs[0]
    magnitude = ctx.op("Floor", [ctx.op("Abs", [x])], label="floor")
    truncated = ctx.op("Mul", [ctx.op("Sign", [x]), magnitude], label="trunc")
    index = ctx.op("Cast", [truncated], label="index", to=TensorProto.INT64)
    padding = ctx.op("Equal", [index, ctx.const("padding_index", np.int64(unit.PADDING_INDEX),
                                                np.int64)], label="is_padding")
    safe = ctx.op("Max", [index, ctx.const("zero_index", np.int64(0), np.int64)], label="clamp")
    rows = ctx.op("Gather", [ctx.blob(0, "weight"), safe], label="gather", axis=0)
    keep = ctx.op("Cast", [ctx.op("Not", [padding], label="keep")], label="keep_mask",
                  to=TensorProto.FLOAT)
    mask = ctx.unsqueeze(keep, [-1], label="mask")
    if unit.bias_term:
        masked = ctx.op("Mul", [rows, mask], label="masked")
        ctx.op("Add", [masked, ctx.blob(1, "bias")], ctx.outputs[0], "bias")
    else:
        ctx.op("Mul", [rows, mask], ctx.outputs[0], "masked")


@converter("BatchNorm")
def _batch_norm(ctx):
    unit, x = ctx.unit, ctx.inputs[0]
    shape = ctx.bottom_shape(0)
    if len(shape) == 1:
        # Caffe: a 1-axis bottom has one channel.
        x = ctx.reshape(x, (shape[0], 1), ctx.bottom_axis(0), label="as_2d")
    rank = max(len(shape), 2)
    if unit.use_global_stats:
        with torch.no_grad():
            mean, var = (t.detach().cpu().numpy().astype(np.float32)
                         for t in unit._global_stats())
        channels = len(mean)
        y = ctx.op("BatchNormalization",
                   [x, ctx.const("scale", np.ones(channels)), ctx.const("shift",
                                                                        np.zeros(channels)),
                    ctx.const("mean", mean), ctx.const("variance", var)],
                   ctx.outputs[0] if len(shape) > 1 else None, "batchnorm",
                   epsilon=float(unit.eps))
    else:
        # Batch statistics (biased variance), as the unit's forward computes them.
        axes = [d for d in range(rank) if d != 1]
        mean = ctx.reduce("ReduceMean", x, axes, 1, "mean")
        centred = ctx.op("Sub", [x, mean], label="centred")
        var = ctx.reduce("ReduceMean", ctx.op("Mul", [centred, centred], label="squares"),
                         axes, 1, "variance")
        std = ctx.op("Sqrt", [ctx.op("Add", [var, ctx.scalar("eps", unit.eps)], label="var_eps")],
                     label="std")
        y = ctx.op("Div", [centred, std], ctx.outputs[0] if len(shape) > 1 else None,
                   "normalize")
    if len(shape) == 1:
        ctx.reshape_to_top(y, label="as_1d")


def _broadcast_shape(blob_shape, rank, axis):
    """Shape of a blob covering axes axis.. of a rank-`rank` tensor, for ONNX's trailing
    broadcasting (leading singleton axes are implied)."""
    return tuple(blob_shape) + (1,) * (rank - axis - len(blob_shape))


def _bottom_operand(ctx, index, role):
    """Bottom `index` as a Scale / Bias operand, reshaped to broadcast from its axis (the
    compiler's: 0 for a scalar operand)."""
    rank, shape = len(ctx.bottom_shape(0)), ctx.bottom_shape(index)
    target = _broadcast_shape(shape, rank, ctx.layer.attrs.axis)
    if target == shape:
        return ctx.inputs[index]
    return ctx.reshape(ctx.inputs[index], target, ctx.bottom_axis(index), label=role)


def _blob_operand(ctx, blob_index, role):
    """Learnable blob `blob_index` as a Scale / Bias operand, stored broadcastable."""
    rank, shape = len(ctx.bottom_shape(0)), tuple(ctx.layer.param_shapes[blob_index])
    target = _broadcast_shape(shape, rank, ctx.layer.attrs.axis)
    return ctx.blob(blob_index, role, target or (1,))


@converter("Scale")
def _scale(ctx):
    unit = ctx.unit
    scale = (_bottom_operand(ctx, 1, "scale") if unit.scale_bottom else
             _blob_operand(ctx, 0, "scale"))
    if not unit.bias_term:
        ctx.op("Mul", [ctx.inputs[0], scale], ctx.outputs[0], "scale")
        return
    scaled = ctx.op("Mul", [ctx.inputs[0], scale], label="scale")
    bias = _blob_operand(ctx, len(unit.blobs) - 1, "bias")
    ctx.op("Add", [scaled, bias], ctx.outputs[0], "bias")


@converter("Bias")
def _bias(ctx):
    unit = ctx.unit
    bias = (_bottom_operand(ctx, 1, "bias") if unit.bias_bottom else
            _blob_operand(ctx, 0, "bias"))
    ctx.op("Add", [ctx.inputs[0], bias], ctx.outputs[0], "bias")


@converter("MVN")
def _mvn(ctx):
    unit, x = ctx.unit, ctx.inputs[0]
    shape = ctx.bottom_shape(0)
    axis = ctx.bottom_axis(0)
    leading = 1 if unit.across_channels or len(shape) < 2 else 2
    num = math.prod(shape[:leading])
    row = math.prod(shape[leading:])
    # One row per (n) or (n, c): the batch axis is in the row count or in the row itself.
    rows = ctx.reshape(x, (num, row), None if axis is None else (0 if axis < leading else 1),
                       label="rows")
    mean = ctx.reduce("ReduceMean", rows, [1], 1, "mean")
    centred = ctx.op("Sub", [rows, mean], label="centred")
    if unit.normalize_variance:
        var = ctx.reduce("ReduceMean", ctx.op("Mul", [centred, centred], label="squares"),
                         [1], 1, "variance")
        std = ctx.op("Add", [ctx.op("Sqrt", [var], label="std"), ctx.scalar("eps", unit.eps)],
                     label="std_eps")
        centred = ctx.op("Div", [centred, std], label="normalize")
    ctx.reshape_to_top(centred)


@converter("Crop")
def _crop(ctx):
    unit = ctx.layer.attrs
    reference = ctx.bottom_shape(1)
    axes = list(range(unit.axis, unit.axis + len(unit.offsets)))
    if ctx.bottom_axis(0) in axes:
        raise Unsupported("it crops the batch axis, which --dynamic-batch makes symbolic")
    ctx.slice(ctx.inputs[0], list(unit.offsets),
              [o + reference[a] for o, a in zip(unit.offsets, axes)], axes, out=ctx.outputs[0])
