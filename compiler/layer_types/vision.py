"""Declarations of the vision and parameterised layers: Convolution, Deconvolution, Pooling,
SPP, Im2col, LRN, InnerProduct, Embed, Scale, Bias, BatchNorm, MVN."""

import math
from dataclasses import dataclass

from lrcn_proto import caffe_pb2

from ..errors import CompileError
from ..shapes import LayerShapes, count
from . import (FROZEN_BLOBS, ONE_IN_ONE_OUT, TIME_MAJOR_FROM_AXIS_2, TIME_MAJOR_PASSTHROUGH,
               BlobCounts, declare)
from .common import AxisAttrs, _axis, _error, _legacy_dim, _shape_text, _span

# Caffe's kDefaultStride / kDefaultPad / kDefaultDilation in base_conv_layer.cpp: the repeated
# fields carry no proto default, the layer code supplies these.
_CONV_DEFAULTS = {"stride": 1, "pad": 0, "dilation": 1}

_POOL = caffe_pb2.PoolingParameter
_LRN = caffe_pb2.LRNParameter


# ---------------------------------------------------------------------------------------------
# Convolution and Deconvolution (base_conv_layer.cpp)
# ---------------------------------------------------------------------------------------------

def _conv_spatial(layer, param, field, stem, num_spatial):
    """One value per spatial axis from a repeated field (given once or once per axis) or, in 2-D,
    from <stem>_h / <stem>_w (BaseConvolutionLayer::LayerSetUp)."""
    repeated = list(getattr(param, field))
    if stem and (param.HasField(stem + "_h") or param.HasField(stem + "_w")):
        if num_spatial != 2:
            raise _error(layer, f"{stem}_h and {stem}_w can only be used for 2-D convolution "
                                f"(this bottom has {num_spatial} spatial axes)",
                         hint=f"give {field} once, or once per spatial axis")
        if repeated:
            raise _error(layer, f"give either {field} or {stem}_h / {stem}_w, not both")
        # Both are read even if only one is written: the other is 0 (or pad's default 0).
        return [getattr(param, stem + "_h"), getattr(param, stem + "_w")]
    if not repeated and field in _CONV_DEFAULTS:
        return [_CONV_DEFAULTS[field]] * num_spatial
    if len(repeated) not in (1, num_spatial):
        if not repeated:
            raise _error(layer, "has no kernel size",
                         hint="set convolution_param { kernel_size: K } (or kernel_h and "
                              "kernel_w)")
        raise _error(layer, f"{field} must be given once, or once per spatial axis ({field} "
                            f"given {len(repeated)} times; {num_spatial} spatial axes)")
    return [repeated[0] if len(repeated) == 1 else repeated[i] for i in range(num_spatial)]


def _conv_geometry(layer, bottom):
    """Channel axis, kernel, stride, pad and dilation of a (de)convolution on `bottom`."""
    param = layer.convolution_param
    channel_axis = _axis(layer, bottom, param.axis)
    num_spatial = len(bottom) - channel_axis - 1
    kernel = _conv_spatial(layer, param, "kernel_size", "kernel", num_spatial)
    stride = _conv_spatial(layer, param, "stride", "stride", num_spatial)
    pad = _conv_spatial(layer, param, "pad", "pad", num_spatial)
    dilation = _conv_spatial(layer, param, "dilation", None, num_spatial)
    for name, values in (("kernel size", kernel), ("stride", stride), ("dilation", dilation)):
        if any(v <= 0 for v in values):
            raise _error(layer, f"{name} must be positive in every spatial axis, got "
                                f"{_shape_text(values)}")
    return channel_axis, kernel, stride, pad, dilation


def _conv_channels(layer, channels):
    """num_output and group checks; returns (num_output, group)."""
    param = layer.convolution_param
    num_output, group = param.num_output, param.group
    if num_output <= 0:
        raise _error(layer, "num_output must be positive",
                     hint="set convolution_param { num_output: ... }")
    if group <= 0:
        raise _error(layer, "group must be positive")
    if channels % group:
        raise _error(layer, f"input channels ({channels}) must be divisible by group ({group})")
    if num_output % group:
        raise _error(layer, f"num_output ({num_output}) must be divisible by group ({group})",
                     hint="Number of output should be multiples of group")
    return num_output, group


def _conv_output_dims(layer, spatial_in, kernel, stride, pad, dilation, transposed):
    """BaseConvolutionLayer::compute_output_shape of Convolution / Deconvolution."""
    out = []
    for size, k, s, p, d in zip(spatial_in, kernel, stride, pad, dilation):
        extent = d * (k - 1) + 1
        if transposed:
            dim = s * (size - 1) + extent - 2 * p
        else:
            span = size + 2 * p - extent
            # C++ truncates a negative span towards 0 and would invent an output; refuse it.
            dim = span // s + 1 if span >= 0 else 0
        if dim <= 0:
            raise _error(layer, f"output size would be {dim} on an input of size {size} "
                                f"(kernel extent {extent}, stride {s}, pad {p})",
                         hint="the (dilated) kernel must fit in the padded input")
        out.append(dim)
    return out


@dataclass(frozen=True)
class ConvolutionAttrs:
    """A (de)convolution resolved: Caffe's defaults and the _h / _w spellings applied."""
    axis: int                # the channel axis (canonical); axes before it are batch-like
    kernel: tuple            # one value per spatial axis
    stride: tuple
    pad: tuple
    dilation: tuple
    group: int
    num_output: int
    bias_term: bool


def _convolution(layer, bottoms, transposed):
    bottom = bottoms[0]
    for i, other in enumerate(bottoms[1:], 1):
        if other != bottom:
            raise _error(layer, f"all bottoms must have the same shape: bottom 0 is "
                                f"{_shape_text(bottom)}, bottom {i} is {_shape_text(other)}")
    channel_axis, kernel, stride, pad, dilation = _conv_geometry(layer, bottom)
    channels = bottom[channel_axis]
    num_output, group = _conv_channels(layer, channels)
    spatial = _conv_output_dims(layer, bottom[channel_axis + 1:], kernel, stride, pad, dilation,
                                transposed)
    top = bottom[:channel_axis] + (num_output, *spatial)
    # Deconvolution swaps the roles of input and output channels in the weight (conv_out/in).
    out_channels, in_channels = (channels, num_output) if transposed else (num_output, channels)
    params = [(out_channels, in_channels // group, *kernel)]
    if layer.convolution_param.bias_term:
        params.append((num_output,))
    kernel_size = math.prod(kernel)
    if transposed:
        macs = count(bottom) * (num_output // group) * kernel_size
    else:
        macs = count(top) * (channels // group) * kernel_size
    bias_flops = count(top) if layer.convolution_param.bias_term else 0
    attrs = ConvolutionAttrs(channel_axis, tuple(kernel), tuple(stride), tuple(pad),
                             tuple(dilation), group, num_output,
                             layer.convolution_param.bias_term)
    return LayerShapes([top] * len(bottoms), params, len(bottoms) * (2 * macs + bias_flops),
                       attrs)


@declare("Convolution", counts=BlobCounts(1, None, 1, None, one_top_per_bottom=True))
def convolution_rule(layer, bottoms, context):
    return _convolution(layer, bottoms, transposed=False)


@declare("Deconvolution", counts=BlobCounts(1, None, 1, None, one_top_per_bottom=True))
def deconvolution_rule(layer, bottoms, context):
    return _convolution(layer, bottoms, transposed=True)


# ---------------------------------------------------------------------------------------------
# Pooling (pooling_layer.cpp) and LRN
# ---------------------------------------------------------------------------------------------

def _pool_kernel(layer, param, height, width):
    if param.global_pooling:
        if param.HasField("kernel_size") or param.HasField("kernel_h") or \
                param.HasField("kernel_w"):
            raise _error(layer, "with global_pooling: true the filter size cannot be specified",
                         hint="remove kernel_size / kernel_h / kernel_w")
        return height, width
    has_square = param.HasField("kernel_size")
    has_both = param.HasField("kernel_h") and param.HasField("kernel_w")
    if has_square and has_both:
        raise _error(layer, "filter size is kernel_size OR kernel_h and kernel_w; not both")
    if not has_square and not has_both:
        if param.HasField("kernel_h") or param.HasField("kernel_w"):
            raise _error(layer, "for non-square filters both kernel_h and kernel_w are required")
        raise _error(layer, "has no kernel size",
                     hint="set pooling_param { kernel_size: K } (or kernel_h and kernel_w), "
                          "or global_pooling: true")
    if has_square:
        return param.kernel_size, param.kernel_size
    return param.kernel_h, param.kernel_w


def _pool_pair(layer, param, name):
    """pad / stride: the scalar, or both of <name>_h and <name>_w (never a mix)."""
    has_h, has_w = param.HasField(name + "_h"), param.HasField(name + "_w")
    if not ((not param.HasField(name) and has_h and has_w) or (not has_h and not has_w)):
        raise _error(layer, f"{name} is {name} OR {name}_h and {name}_w; give one form, and "
                            "both halves of the second")
    if has_h:
        return getattr(param, name + "_h"), getattr(param, name + "_w")
    return getattr(param, name), getattr(param, name)


def _pooled_size(size, kernel, pad, stride, ceil_mode, any_pad):
    """Caffe's output size: ceil (or floor) of (size + 2 pad - kernel) / stride, + 1; then, when
    the layer has any padding, a last window starting at or beyond size + pad is dropped."""
    span = size + 2 * pad - kernel
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if any_pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


@dataclass(frozen=True)
class PoolingAttrs:
    """A pooling layer resolved on its (N, C, H, W) bottom; pairs are (h, w)."""
    method: int              # PoolingParameter.PoolMethod
    kernel: tuple            # the input size with global_pooling
    stride: tuple
    pad: tuple
    input_size: tuple
    output_size: tuple       # Caffe's rule (ceil or floor, then the padding drop rule)
    ave_divisors: tuple      # per axis, AVE's window size at each output position
    with_mask: bool          # MAX pooling's second top (the argmax) is asked for


def _ave_divisors(output, kernel, stride, pad, size):
    """Caffe's AVE pool_size along one axis: window [start, min(start + k, size + pad)),
    start = i * stride - pad. Padding counts; the ceil overhang past size + pad does not. A
    window that starts past the end (Caffe divides 0 by <= 0 there) gets divisor 1, so its
    output is 0 rather than Caffe's NaN / -0."""
    return tuple(max(min(i * stride - pad + kernel, size + pad) - (i * stride - pad), 1)
                 for i in range(output))


def _pooling_counts(layer):
    # A second top (the argmax mask) exists for MAX pooling only.
    return BlobCounts(1, 1, 1, 2 if layer.pooling_param.pool == _POOL.MAX else 1)


@declare("Pooling", counts=_pooling_counts)
def pooling_rule(layer, bottoms, context):
    param = layer.pooling_param
    # A second top (the argmax mask) exists for MAX pooling only.
    bottom = bottoms[0]
    if len(bottom) != 4:
        raise _error(layer, f"input must have 4 axes (num, channels, height, width), got "
                            f"{_shape_text(bottom)}")
    num, channels, height, width = bottom
    kernel = _pool_kernel(layer, param, height, width)
    pad = _pool_pair(layer, param, "pad")
    stride = _pool_pair(layer, param, "stride")
    if param.global_pooling and (pad != (0, 0) or stride != (1, 1)):
        raise _error(layer, "with global_pooling: true only pad = 0 and stride = 1 are allowed")
    if min(kernel) <= 0:
        raise _error(layer, f"filter dimensions cannot be zero, got {_shape_text(kernel)}")
    if min(stride) <= 0:
        raise _error(layer, f"stride must be positive, got {_shape_text(stride)}")
    any_pad = pad != (0, 0)
    if any_pad:
        if param.pool not in (_POOL.MAX, _POOL.AVE):
            raise _error(layer, "padding is implemented only for average and max pooling")
        for axis_name, p, k in zip("hw", pad, kernel):
            if p >= k:
                raise _error(layer, f"pad_{axis_name} ({p}) must be smaller than kernel_"
                                    f"{axis_name} ({k})",
                             hint="Caffe requires pad < kernel (PyTorch allows pad <= kernel / 2)")
    ceil_mode = param.round_mode == _POOL.CEIL
    out = []
    for axis_name, size, k, p, s in zip("hw", (height, width), kernel, pad, stride):
        dim = _pooled_size(size, k, p, s, ceil_mode, any_pad)
        if dim <= 0:
            raise _error(layer, f"the kernel ({k}) does not fit in the padded input "
                                f"{axis_name} = {size} + 2 * {p}")
        if any_pad and (dim - 1) * s >= size + p:
            raise _error(layer, f"the last pooling window in {axis_name} starts in the padding")
        out.append(dim)
    top = (num, channels, *out)
    attrs = PoolingAttrs(param.pool, tuple(kernel), tuple(stride), tuple(pad), (height, width),
                         tuple(out), tuple(_ave_divisors(o, k, s, p, n) for o, k, s, p, n in
                                           zip(out, kernel, stride, pad, (height, width))),
                         len(layer.top) > 1)
    return LayerShapes([top] * len(layer.top), [], count(top) * kernel[0] * kernel[1], attrs)


# ---------------------------------------------------------------------------------------------
# SPP (spp_layer.cpp) and Im2col (im2col_layer.cpp)
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SPPLevel:
    """One pyramid level: the Pooling it is, resolved as a Pooling layer's attrs, and its top."""
    pooling: PoolingAttrs
    top_shape: tuple


@dataclass(frozen=True)
class SPPAttrs:
    levels: tuple            # SPPLevel per level, level i pooling 2^i x 2^i bins


def spp_levels(layer, bottom):
    """SPPLayer's pyramid on a 4-axis bottom: one (PoolingAttrs, LayerShapes) per level.

    Level i pools 2^i x 2^i bins over the whole image (SPPLayer::GetPoolingParam): kernel
    ceil(size / bins), pad (kernel * bins - size + 1) / 2, stride = kernel, the SPP's method.
    Each level is checked and shaped by the Pooling rule itself, as Caffe sets up a PoolingLayer.
    """
    param = layer.spp_param
    if len(bottom) != 4:
        raise _error(layer, f"input must have 4 axes (num, channels, height, width), got "
                            f"{_shape_text(bottom)}")
    height, width = bottom[2], bottom[3]
    if height <= 0 or width <= 0:
        raise _error(layer, f"input dimensions cannot be zero, got {_shape_text(bottom)}")
    if param.pyramid_height < 1:
        raise _error(layer, "pyramid_height must be at least 1",
                     hint="set spp_param { pyramid_height: ... }")
    method = caffe_pb2.SPPParameter.PoolMethod.Name(param.pool)
    levels = []
    for level in range(param.pyramid_height):
        bins = 2 ** level
        kernel_h, kernel_w = -(-height // bins), -(-width // bins)
        pooling = caffe_pb2.LayerParameter(name=layer.name, type="Pooling",
                                           bottom=layer.bottom[:1], top=layer.top[:1])
        pooling.pooling_param.pool = _POOL.PoolMethod.Value(method)
        pooling.pooling_param.kernel_h, pooling.pooling_param.kernel_w = kernel_h, kernel_w
        pooling.pooling_param.stride_h, pooling.pooling_param.stride_w = kernel_h, kernel_w
        pooling.pooling_param.pad_h = (kernel_h * bins - height + 1) // 2
        pooling.pooling_param.pad_w = (kernel_w * bins - width + 1) // 2
        try:
            shapes = pooling_rule(pooling, [tuple(bottom)], None)
        except CompileError as error:
            reason = error.message.removeprefix(f"Pooling layer '{layer.name}': ")
            raise _error(layer, f"pyramid level {level} ({bins} x {bins} bins of the "
                                f"{height} x {width} bottom): {reason}",
                         hint="the bottom is too small for this pyramid_height") from None
        levels.append(shapes)
    return levels


@declare("SPP", counts=ONE_IN_ONE_OUT)
def spp_rule(layer, bottoms, context):
    """FLOPs: the sum of its Pooling levels'."""
    levels = spp_levels(layer, bottoms[0])
    flops = sum(shapes.flops for shapes in levels)
    attrs = SPPAttrs(tuple(SPPLevel(shapes.attrs, tuple(shapes.top_shapes[0]))
                           for shapes in levels))
    if len(levels) == 1:
        return LayerShapes(levels[0].top_shapes, [], flops, attrs)   # the Pooling top as is
    # Each level is flattened to (N, C * bins_h * bins_w) and the levels joined on axis 1.
    joined = sum(_span(shapes.top_shapes[0], 1) for shapes in levels)
    return LayerShapes([(bottoms[0][0], joined)], [], flops, attrs)


@dataclass(frozen=True)
class Im2colAttrs:
    """Im2colLayer::LayerSetUp's geometry, resolved as Convolution resolves it."""
    axis: int                # the channel axis (canonical); axes before it are batch-like
    kernel: tuple            # one value per spatial axis
    stride: tuple
    pad: tuple
    dilation: tuple
    output_size: tuple       # the convolution's output positions per spatial axis


@declare("Im2col", counts=ONE_IN_ONE_OUT)
def im2col_rule(layer, bottoms, context):
    """Top: the bottom with its channel axis C made C * prod(kernel) (channel-major: column
    c * prod(kernel) + kernel offset) and its spatial axes made Convolution's output sizes.
    FLOPs: 0 (data movement)."""
    bottom = bottoms[0]
    channel_axis = _axis(layer, bottom, layer.convolution_param.axis)
    if len(bottom) - channel_axis - 1 < 1:
        raise _error(layer, f"needs at least one spatial axis after the channel axis "
                            f"{channel_axis} of {_shape_text(bottom)}")
    channel_axis, kernel, stride, pad, dilation = _conv_geometry(layer, bottom)
    spatial = _conv_output_dims(layer, bottom[channel_axis + 1:], kernel, stride, pad, dilation,
                                transposed=False)
    top = bottom[:channel_axis] + (bottom[channel_axis] * math.prod(kernel), *spatial)
    attrs = Im2colAttrs(channel_axis, tuple(kernel), tuple(stride), tuple(pad),
                        tuple(dilation), tuple(spatial))
    return LayerShapes([top], [], 0, attrs)


@declare("LRN", counts=ONE_IN_ONE_OUT)
def lrn_rule(layer, bottoms, context):
    param = layer.lrn_param
    if param.local_size % 2 != 1:
        raise _error(layer, f"LRN only supports odd values for local_size, got "
                            f"{param.local_size}")
    bottom = bottoms[0]
    if len(bottom) != 4:
        raise _error(layer, f"input must have 4 axes (num, channels, height, width), got "
                            f"{_shape_text(bottom)}")
    window = param.local_size if param.norm_region == _LRN.ACROSS_CHANNELS else \
        param.local_size ** 2
    return LayerShapes([bottom], [], count(bottom) * (window + 5))


# ---------------------------------------------------------------------------------------------
# InnerProduct and Embed
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class InnerProductAttrs:
    axis: int                # canonical: axes from it on are flattened into K
    num_output: int
    transpose: bool          # the weight is (K, N) rather than (N, K)
    bias_term: bool


@declare("InnerProduct", counts=ONE_IN_ONE_OUT, traits={TIME_MAJOR_FROM_AXIS_2})
def inner_product_rule(layer, bottoms, context):
    param, bottom = layer.inner_product_param, bottoms[0]
    if param.num_output <= 0:
        raise _error(layer, "num_output must be positive",
                     hint="set inner_product_param { num_output: ... }")
    axis = _axis(layer, bottom, param.axis)
    # Everything from `axis` on is flattened into the K inputs of each of M rows.
    rows, inputs, outputs = _span(bottom, 0, axis), _span(bottom, axis), param.num_output
    weight = (inputs, outputs) if param.transpose else (outputs, inputs)
    params = [weight] + ([(outputs,)] if param.bias_term else [])
    flops = 2 * rows * inputs * outputs + (rows * outputs if param.bias_term else 0)
    attrs = InnerProductAttrs(axis, outputs, param.transpose, param.bias_term)
    return LayerShapes([bottom[:axis] + (outputs,)], params, flops, attrs)


@declare("Embed", counts=ONE_IN_ONE_OUT, traits={TIME_MAJOR_PASSTHROUGH})
def embed_rule(layer, bottoms, context):
    param, bottom = layer.embed_param, bottoms[0]
    if param.num_output <= 0:
        raise _error(layer, "num_output must be positive",
                     hint="set embed_param { num_output: ... }")
    if param.input_dim <= 0:
        raise _error(layer, "input_dim must be positive (the vocabulary size)",
                     hint="set embed_param { input_dim: ... }")
    params = [(param.input_dim, param.num_output)]
    if param.bias_term:
        params.append((param.num_output,))
    flops = count(bottom) * param.num_output if param.bias_term else 0
    return LayerShapes([bottom + (param.num_output,)], params, flops)


# ---------------------------------------------------------------------------------------------
# Scale, Bias, BatchNorm, MVN
# ---------------------------------------------------------------------------------------------

def _check_broadcast(layer, bottom, operand, axis, what):
    """Scale / Bias Reshape: the operand's dims must equal the bottom's from `axis` on."""
    if len(bottom) < axis + len(operand):
        raise _error(layer, f"{what} blob's shape {_shape_text(operand)} extends past the bottom "
                            f"{_shape_text(bottom)} when applied starting with bottom axis {axis}")
    for i, dim in enumerate(operand):
        if bottom[axis + i] != dim:
            raise _error(layer, f"dimension mismatch between bottom shape[{axis + i}] = "
                                f"{bottom[axis + i]} and {what} shape[{i}] = {dim}")


def _learned_operand_shape(layer, bottom, axis_field, num_axes, what):
    """Shape of a learned scale / bias: bottom dims [axis, axis + num_axes) (-1: to the end)."""
    axis = _axis(layer, bottom, axis_field)
    if num_axes < -1:
        raise _error(layer, "num_axes must be non-negative, or -1 to extend to the end of the "
                            "bottom")
    if num_axes >= 0 and len(bottom) < axis + num_axes:
        raise _error(layer, f"{what} blob's shape extends past the bottom {_shape_text(bottom)} "
                            f"when applied starting with bottom axis {axis}")
    return bottom[axis:] if num_axes == -1 else bottom[axis:axis + num_axes]


def _broadcast_operand(layer, bottoms, axis_field, num_axes, what):
    """(operand shape, learned?, axis) for Scale / Bias: the operand is bottom 1 when given,
    else a learned blob; it applies from `axis` on."""
    bottom = bottoms[0]
    if len(bottoms) > 1:
        operand, learned = bottoms[1], False
    else:
        operand, learned = _learned_operand_shape(layer, bottom, axis_field, num_axes, what), True
    # A scalar operand applies the same way at any axis; Caffe then uses axis 0.
    axis = 0 if not operand else _axis(layer, bottom, axis_field)
    _check_broadcast(layer, bottom, operand, axis, what)
    return operand, learned, axis


@declare("Bias", counts=BlobCounts(1, 2, 1, 1), traits={TIME_MAJOR_PASSTHROUGH})
def bias_rule(layer, bottoms, context):
    param = layer.bias_param
    bias, learned, axis = _broadcast_operand(layer, bottoms, param.axis, param.num_axes, "bias")
    return LayerShapes([bottoms[0]], [bias] if learned else [], count(bottoms[0]),
                       AxisAttrs(axis))


@declare("Scale", counts=BlobCounts(1, 2, 1, 1), traits={TIME_MAJOR_PASSTHROUGH})
def scale_rule(layer, bottoms, context):
    param, bottom = layer.scale_param, bottoms[0]
    scale, learned, axis = _broadcast_operand(layer, bottoms, param.axis, param.num_axes,
                                              "scale")
    params = [scale] if learned else []
    flops = count(bottom)
    if param.bias_term:
        # scale_layer.cpp builds an inner Bias layer on bottom 0 with the same axis and, with
        # two bottoms, num_axes = bottom 1's axis count: its blob is a parameter even then.
        bias_axes = len(bottoms[1]) if len(bottoms) > 1 else param.num_axes
        bias = _learned_operand_shape(layer, bottom, param.axis, bias_axes, "bias")
        params.append(bias)
        flops += count(bottom)
    return LayerShapes([bottom], params, flops, AxisAttrs(axis))


@dataclass(frozen=True)
class BatchNormAttrs:
    """use_global_stats as written; None when unset: Caffe then normalises with the running
    statistics in TEST and the batch's in TRAIN (the unit follows train / eval mode)."""
    use_global_stats: object


@declare("BatchNorm", counts=ONE_IN_ONE_OUT, traits={FROZEN_BLOBS})
def batch_norm_rule(layer, bottoms, context):
    bottom, param = bottoms[0], layer.batch_norm_param
    if len(bottom) < 2:
        # batch_norm_layer.cpp reads shape(1) in Reshape, which fails below 2 axes.
        raise _error(layer, f"the bottom must have at least 2 axes (N, C, ...), got "
                            f"{_shape_text(bottom)}")
    channels = bottom[1]
    attrs = BatchNormAttrs(param.use_global_stats if param.HasField("use_global_stats")
                           else None)
    global_stats = attrs.use_global_stats if attrs.use_global_stats is not None else \
        context.phase == "TEST"
    # Normalising is a subtract and a divide; batch statistics add mean, square, variance sum.
    per_element = 2 if global_stats else 5
    # Blobs: running mean sum, running variance sum, and the scale factor they are divided by.
    return LayerShapes([bottom], [(channels,), (channels,), (1,)], per_element * count(bottom),
                       attrs)


@declare("MVN", counts=ONE_IN_ONE_OUT)
def mvn_rule(layer, bottoms, context):
    bottom = bottoms[0]
    _legacy_dim(layer, bottom, 0)   # mvn_layer.cpp shapes its statistics as num x channels
    per_element = 5 if layer.mvn_param.normalize_variance else 2
    return LayerShapes([bottom], [], per_element * count(bottom))
