"""Shape rules for the compute layers: one `@shape_rule` function per Caffe layer type.

Each rule does what the layer's LayerSetUp() + Reshape() do in BVLC Caffe (src/caffe/layers/
<name>_layer.cpp): the same axis canonicalisation, the same blob-count and shape checks (raised
as CompileError instead of a CHECK failure), the same top shapes and the same learnable blob
shapes in Caffe's blob order and layout. Data layers live in compiler/data_shapes.py.

FLOP convention (LayerShapes.flops, forward pass only, a count of float operations):
- A multiply-add is 2 FLOPs. Every other arithmetic operation, comparison, and elementary function
  (exp, log, tanh, pow) is 1 FLOP per element it produces. Pure data movement (Reshape, Flatten,
  Split, Concat, Slice, Crop, Tile, Silence, Input, Parameter, an Embed lookup, Dropout at TEST,
  Filter, BatchReindex, Im2col) is 0.
- Convolution: 2 * (C / group) * prod(kernel) per output element, + 1 per output for the bias.
  Deconvolution: 2 * (num_output / group) * prod(kernel) per input element, + 1 per output.
- InnerProduct: 2 * M * K * N (+ M * N for the bias). Embed: M * N for the bias only.
- Pooling: prod(kernel) per output element (a compare or an add per window element); SPP: the
  sum over its pyramid's Pooling levels.
- LRN: local_size (ACROSS_CHANNELS) or local_size^2 (WITHIN_CHANNEL) + 5 per element.
- Elementwise layers: _ELEMENTWISE_FLOPS[type] per element (the operations in Caffe's formula).
- Softmax: 3 per element (exp, sum, divide). Loss layers: their elementwise work plus softmax
  where Caffe runs one; Accuracy / ArgMax: one compare per score.
- LSTM: x transform 2 * T * N * 4H * D + bias T * N * 4H; static transform 2 * N * 4H * Ds once
  (Caffe computes it once and adds it every step); per step 2 * N * 4H * H (W_hc), N * H (cont
  gating of h), N * 4H per summand added to the gate input, 10 * N * H gate math (LSTMUnit:
  3 sigmoids, 2 tanh, 4 multiplies, 1 add). RNN likewise with its own terms (see _rnn_flops).
"""

import math

from lrcn_proto import caffe_pb2

from .errors import CompileError
from .shapes import LayerShapes, count, shape_rule

# Per-element FLOPs of the elementwise (Caffe "neuron") layers; see the module docstring.
_ELEMENTWISE_FLOPS = {
    "ReLU": 1,          # max(x, 0); a negative_slope adds a multiply (see relu_rule)
    "PReLU": 2,         # max(x, 0) + a * min(x, 0)
    "ELU": 3,           # alpha * (exp(x) - 1) on the negative side
    "Sigmoid": 3,       # 1 / (1 + exp(-x))
    "TanH": 1,
    "AbsVal": 1,
    "Power": 3,         # (shift + scale * x) ^ power
    "Exp": 3,           # base ^ (shift + scale * x)
    "Log": 3,           # log_base(shift + scale * x)
    "BNLL": 3,          # log(1 + exp(x))
    "Threshold": 1,
    "Clip": 2,          # max(min(x, max), min)
    "Swish": 5,         # x * sigmoid(beta * x)
    "Dropout": 2,       # TRAIN: mask compare + scale; TEST is a copy (0)
}

# Caffe's kDefaultStride / kDefaultPad / kDefaultDilation in base_conv_layer.cpp: the repeated
# fields carry no proto default, the layer code supplies these.
_CONV_DEFAULTS = {"stride": 1, "pad": 0, "dilation": 1}

_POOL = caffe_pb2.PoolingParameter
_LRN = caffe_pb2.LRNParameter
_ELTWISE = caffe_pb2.EltwiseParameter
_REDUCTION = caffe_pb2.ReductionParameter
_HINGE = caffe_pb2.HingeLossParameter


# ---------------------------------------------------------------------------------------------
# Shared helpers (Blob accessors and Layer::CheckBlobCounts)
# ---------------------------------------------------------------------------------------------

def _error(layer, message, hint=None):
    return CompileError(f"{layer.type} layer '{layer.name}': {message}", hint=hint)


def _shape_text(shape):
    return str(tuple(shape))   # Python's tuple notation: (), (5,), (2, 3)


def _span(shape, start=0, end=None):
    """Blob::count(start, end): the product of the dims in [start, end)."""
    return math.prod(shape[start:end])


def _axis(layer, shape, axis, what="axis"):
    """Blob::CanonicalAxisIndex: axis must lie in [-num_axes, num_axes); negatives count back."""
    num_axes = len(shape)
    if not -num_axes <= axis < num_axes:
        valid = f"[{-num_axes}, {num_axes - 1}]" if num_axes else "none (the blob is a scalar)"
        raise _error(layer, f"{what} {axis} is out of range for the {num_axes}-D bottom "
                            f"{_shape_text(shape)}", hint=f"valid axes: {valid}")
    return axis + num_axes if axis < 0 else axis


def _legacy_dim(layer, shape, index):
    """Blob::LegacyShape (num/channels/height/width): <= 4 axes, missing trailing axes read 1."""
    if len(shape) > 4:
        raise _error(layer, f"needs a bottom of at most 4 axes (Caffe reads it as num, channels, "
                            f"height, width), got {_shape_text(shape)}")
    return shape[index] if index < len(shape) else 1


def _plural(n, word):
    return f"{n} {word}" + ("" if n == 1 else "s")


def _range_text(low, high, word):
    if high == low:
        return _plural(low, word)
    if high is None:
        return f"at least {_plural(low, word)}"
    return f"{low} to {high} {word}s"


def _expect_blobs(layer, bottoms, bottom_range, top_range):
    """Layer::CheckBlobCounts: bottom and top counts within [min, max] (max None: unbounded)."""
    for what, have, (low, high) in (("bottom", len(bottoms), bottom_range),
                                    ("top", len(layer.top), top_range)):
        if have < low or (high is not None and have > high):
            raise _error(layer, f"takes {_range_text(low, high, what)}, got {have}")


def _expect_loss_blobs(layer, bottoms, bottom_range=(2, 2), top_range=(1, 1)):
    """Loss layers' counts; a loss with no top is fine: Caffe adds one (AutoTopBlobs)."""
    _expect_blobs(layer, bottoms, bottom_range, (0, top_range[1]))


def _check_not_in_place(layer):
    for top in layer.top:
        if top in layer.bottom:
            raise _error(layer, f"does not allow in-place computation (top '{top}' is also a "
                                "bottom)", hint="give the top a name of its own")


def _check_loss_first_dims(layer, bottoms):
    """LossLayer::Reshape: data and label must agree on their first dimension."""
    data, label = bottoms[0], bottoms[1]
    _axis(layer, data, 0)
    _axis(layer, label, 0)
    if data[0] != label[0]:
        raise _error(layer, f"the data {_shape_text(data)} and label {_shape_text(label)} "
                            "should have the same first dimension")


def _check_label_count(layer, data, label, axis, what):
    """Softmax-style losses and Accuracy: one label per position outside the class axis."""
    outer, inner = _span(data, 0, axis), _span(data, axis + 1)
    if outer * inner != count(label):
        raise _error(layer, f"number of labels ({count(label)}, shape {_shape_text(label)}) must "
                            f"match number of predictions ({outer} x {inner} positions of "
                            f"{_shape_text(data)} with {what} {axis})",
                     hint=f"with {what} {axis} on a prediction of shape {_shape_text(data)} the "
                          f"label needs {outer * inner} entries, e.g. shape "
                          f"{_shape_text(data[:axis] + data[axis + 1:])}")
    return outer, inner


# ---------------------------------------------------------------------------------------------
# Elementwise ("neuron") layers: one bottom, one top of the same shape
# ---------------------------------------------------------------------------------------------

def _elementwise(layer, bottoms, per_element):
    _expect_blobs(layer, bottoms, (1, 1), (1, 1))
    return LayerShapes([bottoms[0]], [], per_element * count(bottoms[0]))


@shape_rule("ReLU")
def relu_rule(layer, bottoms, context):
    leaky = layer.relu_param.negative_slope != 0
    return _elementwise(layer, bottoms, _ELEMENTWISE_FLOPS["ReLU"] + leaky)


@shape_rule("PReLU")
def prelu_rule(layer, bottoms, context):
    _expect_blobs(layer, bottoms, (1, 1), (1, 1))
    bottom = bottoms[0]
    if len(bottom) < 2:
        raise _error(layer, f"the bottom must have at least 2 axes, got {_shape_text(bottom)}")
    # channel_shared: one slope as a 0-axis (scalar) blob, as prelu_layer.cpp creates it.
    slope = () if layer.prelu_param.channel_shared else (_legacy_dim(layer, bottom, 1),)
    return LayerShapes([bottom], [slope], _ELEMENTWISE_FLOPS["PReLU"] * count(bottom))


@shape_rule("ELU")
def elu_rule(layer, bottoms, context):
    return _elementwise(layer, bottoms, _ELEMENTWISE_FLOPS["ELU"])


@shape_rule("Sigmoid")
def sigmoid_rule(layer, bottoms, context):
    return _elementwise(layer, bottoms, _ELEMENTWISE_FLOPS["Sigmoid"])


@shape_rule("TanH")
def tanh_rule(layer, bottoms, context):
    return _elementwise(layer, bottoms, _ELEMENTWISE_FLOPS["TanH"])


@shape_rule("AbsVal")
def absval_rule(layer, bottoms, context):
    _check_not_in_place(layer)   # absval_layer.cpp: its backward needs the input
    return _elementwise(layer, bottoms, _ELEMENTWISE_FLOPS["AbsVal"])


@shape_rule("Power")
def power_rule(layer, bottoms, context):
    return _elementwise(layer, bottoms, _ELEMENTWISE_FLOPS["Power"])


def _check_log_base(layer, param):
    # exp_layer.cpp / log_layer.cpp: base -1 means e; any other base must be positive.
    if param.base != -1 and param.base <= 0:
        raise _error(layer, f"base must be strictly positive, got {param.base:g}",
                     hint="use base: -1 for the natural base e")


@shape_rule("Exp")
def exp_rule(layer, bottoms, context):
    _check_log_base(layer, layer.exp_param)
    return _elementwise(layer, bottoms, _ELEMENTWISE_FLOPS["Exp"])


@shape_rule("Log")
def log_rule(layer, bottoms, context):
    _check_log_base(layer, layer.log_param)
    return _elementwise(layer, bottoms, _ELEMENTWISE_FLOPS["Log"])


@shape_rule("BNLL")
def bnll_rule(layer, bottoms, context):
    return _elementwise(layer, bottoms, _ELEMENTWISE_FLOPS["BNLL"])


@shape_rule("Threshold")
def threshold_rule(layer, bottoms, context):
    return _elementwise(layer, bottoms, _ELEMENTWISE_FLOPS["Threshold"])


@shape_rule("Clip")
def clip_rule(layer, bottoms, context):
    param = layer.clip_param
    if param.min > param.max:
        raise _error(layer, f"clip_param min ({param.min:g}) is above max ({param.max:g})")
    return _elementwise(layer, bottoms, _ELEMENTWISE_FLOPS["Clip"])


@shape_rule("Swish")
def swish_rule(layer, bottoms, context):
    return _elementwise(layer, bottoms, _ELEMENTWISE_FLOPS["Swish"])


@shape_rule("Dropout")
def dropout_rule(layer, bottoms, context):
    ratio = layer.dropout_param.dropout_ratio
    # The TRAIN scale is 1 / (1 - ratio): a ratio of 1 or more has no meaning.
    if not 0 <= ratio < 1:
        raise _error(layer, f"dropout_ratio must be in [0, 1), got {ratio:g}")
    per_element = _ELEMENTWISE_FLOPS["Dropout"] if context.phase == "TRAIN" else 0
    return _elementwise(layer, bottoms, per_element)


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


def _convolution(layer, bottoms, transposed):
    _expect_blobs(layer, bottoms, (1, None), (len(bottoms), len(bottoms)))
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
    return LayerShapes([top] * len(bottoms), params, len(bottoms) * (2 * macs + bias_flops))


@shape_rule("Convolution")
def convolution_rule(layer, bottoms, context):
    return _convolution(layer, bottoms, transposed=False)


@shape_rule("Deconvolution")
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


@shape_rule("Pooling")
def pooling_rule(layer, bottoms, context):
    param = layer.pooling_param
    # A second top (the argmax mask) exists for MAX pooling only.
    _expect_blobs(layer, bottoms, (1, 1), (1, 2 if param.pool == _POOL.MAX else 1))
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
    return LayerShapes([top] * len(layer.top), [], count(top) * kernel[0] * kernel[1])


@shape_rule("LRN")
def lrn_rule(layer, bottoms, context):
    _expect_blobs(layer, bottoms, (1, 1), (1, 1))
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

@shape_rule("InnerProduct")
def inner_product_rule(layer, bottoms, context):
    _expect_blobs(layer, bottoms, (1, 1), (1, 1))
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
    return LayerShapes([bottom[:axis] + (outputs,)], params, flops)


@shape_rule("Embed")
def embed_rule(layer, bottoms, context):
    _expect_blobs(layer, bottoms, (1, 1), (1, 1))
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
# Shape-only layers: Reshape, Flatten, Slice, Concat, Split, Silence, Tile, Crop
# ---------------------------------------------------------------------------------------------

def _reshape_spec(layer):
    """ReshapeLayer::LayerSetUp: positions of 0 (copy) and -1 (infer), product of the rest."""
    dims = list(layer.reshape_param.shape.dim)
    copy_axes = [i for i, d in enumerate(dims) if d == 0]
    inferred = [i for i, d in enumerate(dims) if d == -1]
    if len(inferred) > 1:
        raise _error(layer, f"new shape {_shape_text(dims)} contains multiple -1 dims; at most "
                            "one -1 may be specified")
    if any(d < -1 for d in dims):
        raise _error(layer, f"new shape {_shape_text(dims)} has a dim below -1",
                     hint="dims are positive sizes, 0 (copy the bottom dim) or -1 (infer)")
    return dims, copy_axes, (inferred[0] if inferred else None)


def _reshape_range(layer, bottom):
    """[start, end) of the bottom axes that reshape_param.axis / num_axes replace."""
    param = layer.reshape_param
    # Reshape's own rule: a negative axis counts from the end with -1 meaning "after the last".
    start = param.axis if param.axis >= 0 else len(bottom) + param.axis + 1
    if not 0 <= start <= len(bottom):
        raise _error(layer, f"axis {param.axis} out of range for the {len(bottom)}-D bottom "
                            f"{_shape_text(bottom)}")
    if param.num_axes < -1:
        raise _error(layer, "num_axes must be >= 0, or -1 for all")
    end = len(bottom) if param.num_axes == -1 else start + param.num_axes
    if end > len(bottom):
        raise _error(layer, f"end_axis = axis + num_axes = {end} is out of range for the "
                            f"{len(bottom)}-D bottom {_shape_text(bottom)}")
    return start, end


@shape_rule("Reshape")
def reshape_rule(layer, bottoms, context):
    _expect_blobs(layer, bottoms, (1, 1), (1, 1))
    bottom = bottoms[0]
    dims, copy_axes, inferred = _reshape_spec(layer)
    start, end = _reshape_range(layer, bottom)
    top = list(bottom[:start]) + dims + list(bottom[end:])
    for i in copy_axes:
        if start + i >= len(bottom):
            raise _error(layer, f"new shape {_shape_text(dims)} has a 0 at position {i}, but the "
                                "bottom has no corresponding axis to copy")
        top[start + i] = bottom[start + i]
    if inferred is not None:
        known = math.prod(d for i, d in enumerate(top) if i != start + inferred)
        if known == 0 or count(bottom) % known:
            raise _error(layer, f"bottom count ({count(bottom)}, shape {_shape_text(bottom)}) "
                                f"must be divisible by the product of the specified dimensions "
                                f"({known})")
        top[start + inferred] = count(bottom) // known
    if count(top) != count(bottom):
        raise _error(layer, f"output count ({count(top)}, shape {_shape_text(top)}) must match "
                            f"input count ({count(bottom)}, shape {_shape_text(bottom)})",
                     hint="use 0 to copy a bottom dim and -1 to infer one")
    return LayerShapes([tuple(top)])


@shape_rule("Flatten")
def flatten_rule(layer, bottoms, context):
    _expect_blobs(layer, bottoms, (1, 1), (1, 1))
    _check_not_in_place(layer)
    bottom, param = bottoms[0], layer.flatten_param
    start = _axis(layer, bottom, param.axis)
    end = _axis(layer, bottom, param.end_axis, "end_axis")
    if end < start:
        raise _error(layer, f"end_axis ({param.end_axis}) comes before axis ({param.axis}) on "
                            f"the bottom {_shape_text(bottom)}")
    return LayerShapes([bottom[:start] + (_span(bottom, start, end + 1),) + bottom[end + 1:]])


def _legacy_dim_axis(layer, shape, value, field):
    """slice_dim / concat_dim: a non-negative axis below num_axes (no counting from the end)."""
    if value >= len(shape):
        raise _error(layer, f"{field} {value} out of range for the {len(shape)}-D bottom "
                            f"{_shape_text(shape)}", hint="use the axis field instead")
    return value


@shape_rule("Slice")
def slice_rule(layer, bottoms, context):
    _expect_blobs(layer, bottoms, (1, 1), (1, None))
    param, bottom, num_tops = layer.slice_param, bottoms[0], len(layer.top)
    if param.HasField("slice_dim"):
        axis = _legacy_dim_axis(layer, bottom, param.slice_dim, "slice_dim")
    else:
        axis = _axis(layer, bottom, param.axis)
    size = bottom[axis]
    points = list(param.slice_point)
    if points:
        if len(points) != num_tops - 1:
            raise _error(layer, f"{_plural(len(points), 'slice_point')} need "
                                f"{len(points) + 1} tops, got {num_tops}")
        bounds = [0] + points + [size]
        for before, after in zip(bounds, bounds[1:]):
            if after <= before:
                raise _error(layer, f"slice points {points} must increase strictly and lie "
                                    f"inside (0, {size}) on axis {axis} of {_shape_text(bottom)}")
        sizes = [after - before for before, after in zip(bounds, bounds[1:])]
    else:
        if size % num_tops:
            raise _error(layer, f"number of top blobs ({num_tops}) should evenly divide the "
                                f"input slice axis ({size}, axis {axis} of "
                                f"{_shape_text(bottom)})", hint="give slice_point values")
        sizes = [size // num_tops] * num_tops
    return LayerShapes([bottom[:axis] + (s,) + bottom[axis + 1:] for s in sizes])


@shape_rule("Concat")
def concat_rule(layer, bottoms, context):
    _expect_blobs(layer, bottoms, (1, None), (1, 1))
    param, first = layer.concat_param, bottoms[0]
    if param.HasField("concat_dim"):
        axis = _legacy_dim_axis(layer, first, param.concat_dim, "concat_dim")
    else:
        axis = _axis(layer, first, param.axis)
    for i, other in enumerate(bottoms[1:], 1):
        same_off_axis = len(other) == len(first) and all(
            a == b for j, (a, b) in enumerate(zip(first, other)) if j != axis)
        if not same_off_axis:
            raise _error(layer, f"all inputs must have the same shape except at the concat axis "
                                f"{axis}: bottom 0 is {_shape_text(first)}, bottom {i} is "
                                f"{_shape_text(other)}")
    total = sum(b[axis] for b in bottoms)
    return LayerShapes([first[:axis] + (total,) + first[axis + 1:]])


@shape_rule("Split")
def split_rule(layer, bottoms, context):
    _expect_blobs(layer, bottoms, (1, 1), (1, None))
    _check_not_in_place(layer)
    return LayerShapes([bottoms[0]] * len(layer.top))


@shape_rule("Silence")
def silence_rule(layer, bottoms, context):
    _expect_blobs(layer, bottoms, (1, None), (0, 0))
    return LayerShapes([])


@shape_rule("Tile")
def tile_rule(layer, bottoms, context):
    _expect_blobs(layer, bottoms, (1, 1), (1, 1))
    param, bottom = layer.tile_param, bottoms[0]
    axis = _axis(layer, bottom, param.axis)
    if not param.HasField("tiles"):
        raise _error(layer, "number of tiles must be specified", hint="set tile_param { tiles: "
                                                                      "... }")
    if param.tiles <= 0:
        raise _error(layer, f"number of tiles must be positive, got {param.tiles}")
    top = bottom[:axis] + (bottom[axis] * param.tiles,) + bottom[axis + 1:]
    return LayerShapes([top])


@shape_rule("Crop")
def crop_rule(layer, bottoms, context):
    _expect_blobs(layer, bottoms, (2, 2), (1, 1))
    data, reference = bottoms
    param = layer.crop_param
    start = _axis(layer, data, param.axis)
    offsets = list(param.offset)
    if len(offsets) > 1 and start + len(offsets) != len(data):
        raise _error(layer, f"number of crop offsets ({len(offsets)}) must be 1 or equal to the "
                            f"number of axes from axis {start} on ({len(data) - start})")
    if len(reference) < len(data):
        raise _error(layer, f"the reference bottom {_shape_text(reference)} has fewer axes than "
                            f"the data {_shape_text(data)}")
    # Axes before `axis` are kept; every axis from it on takes the reference's size (offset 0
    # when no offset is given).
    top = list(data[:start])
    for i in range(start, len(data)):
        offset = offsets[0] if len(offsets) == 1 else (offsets[i - start] if offsets else 0)
        if data[i] - offset < reference[i]:
            raise _error(layer, f"the crop for dimension {i} is out of bounds: size "
                                f"{reference[i]} at offset {offset} in {data[i]}")
        top.append(reference[i])
    return LayerShapes([tuple(top)])


# ---------------------------------------------------------------------------------------------
# Eltwise, Scale, Bias, BatchNorm, MVN
# ---------------------------------------------------------------------------------------------

def _check_coeff_blob(layer, first, coeffs, num_inputs):
    """lisa-caffe-public's coeff_blob: the last bottom holds a coefficient per input bottom and
    per leading position: shape (num_inputs, first[0], first[1], ...) up to its own axis count."""
    if coeffs[:1] != (num_inputs,):
        raise _error(layer, f"the coeff blob's axis 0 {_shape_text(coeffs)} must equal the number "
                            f"of input bottoms ({num_inputs}, not counting the coeff blob)")
    if len(coeffs) - 1 > len(first) or coeffs[1:] != first[:len(coeffs) - 1]:
        raise _error(layer, f"each axis i >= 1 of the coeff blob {_shape_text(coeffs)} must match "
                            f"axis i - 1 of the input {_shape_text(first)}")


@shape_rule("Eltwise")
def eltwise_rule(layer, bottoms, context):
    _expect_blobs(layer, bottoms, (2, None), (1, 1))
    param, first = layer.eltwise_param, bottoms[0]
    is_sum = param.operation == _ELTWISE.SUM
    if param.coeff_blob and not is_sum:
        raise _error(layer, "the coeff_blob option is only implemented for operation: SUM")
    inputs = bottoms[:-1] if param.coeff_blob else bottoms
    if len(param.coeff) not in (0, len(inputs)):
        raise _error(layer, f"Eltwise takes one coefficient per input bottom: "
                            f"{_plural(len(param.coeff), 'coeff')} for "
                            f"{_plural(len(inputs), 'input bottom')}")
    if param.coeff and not is_sum:
        raise _error(layer, "Eltwise only takes coefficients for summation (operation: SUM)")
    for i, other in enumerate(inputs[1:], 1):
        if other != first:
            raise _error(layer, f"all bottoms must have the same shape: bottom 0 is "
                                f"{_shape_text(first)}, bottom {i} is {_shape_text(other)}")
    if param.coeff_blob:
        _check_coeff_blob(layer, first, bottoms[-1], len(inputs))
    flops = (len(inputs) - 1) * count(first)
    if is_sum and (param.coeff or param.coeff_blob):
        flops += len(inputs) * count(first)   # one multiply per input element
    return LayerShapes([first], [], flops)


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
    """(operand shape, learned?) for Scale / Bias: bottom 1 when given, else a learned blob."""
    bottom = bottoms[0]
    if len(bottoms) > 1:
        operand, learned = bottoms[1], False
    else:
        operand, learned = _learned_operand_shape(layer, bottom, axis_field, num_axes, what), True
    # A scalar operand applies the same way at any axis; Caffe then uses axis 0.
    axis = 0 if not operand else _axis(layer, bottom, axis_field)
    _check_broadcast(layer, bottom, operand, axis, what)
    return operand, learned


@shape_rule("Bias")
def bias_rule(layer, bottoms, context):
    _expect_blobs(layer, bottoms, (1, 2), (1, 1))
    param = layer.bias_param
    bias, learned = _broadcast_operand(layer, bottoms, param.axis, param.num_axes, "bias")
    return LayerShapes([bottoms[0]], [bias] if learned else [], count(bottoms[0]))


@shape_rule("Scale")
def scale_rule(layer, bottoms, context):
    _expect_blobs(layer, bottoms, (1, 2), (1, 1))
    param, bottom = layer.scale_param, bottoms[0]
    scale, learned = _broadcast_operand(layer, bottoms, param.axis, param.num_axes, "scale")
    params = [scale] if learned else []
    flops = count(bottom)
    if param.bias_term:
        # scale_layer.cpp builds an inner Bias layer on bottom 0 with the same axis and, with
        # two bottoms, num_axes = bottom 1's axis count: its blob is a parameter even then.
        bias_axes = len(bottoms[1]) if len(bottoms) > 1 else param.num_axes
        bias = _learned_operand_shape(layer, bottom, param.axis, bias_axes, "bias")
        params.append(bias)
        flops += count(bottom)
    return LayerShapes([bottom], params, flops)


@shape_rule("BatchNorm")
def batch_norm_rule(layer, bottoms, context):
    _expect_blobs(layer, bottoms, (1, 1), (1, 1))
    bottom, param = bottoms[0], layer.batch_norm_param
    if len(bottom) < 2:
        # batch_norm_layer.cpp reads shape(1) in Reshape, which fails below 2 axes.
        raise _error(layer, f"the bottom must have at least 2 axes (N, C, ...), got "
                            f"{_shape_text(bottom)}")
    channels = bottom[1]
    global_stats = param.use_global_stats if param.HasField("use_global_stats") else \
        context.phase == "TEST"
    # Normalising is a subtract and a divide; batch statistics add mean, square, variance sum.
    per_element = 2 if global_stats else 5
    # Blobs: running mean sum, running variance sum, and the scale factor they are divided by.
    return LayerShapes([bottom], [(channels,), (channels,), (1,)], per_element * count(bottom))


@shape_rule("MVN")
def mvn_rule(layer, bottoms, context):
    _expect_blobs(layer, bottoms, (1, 1), (1, 1))
    bottom = bottoms[0]
    _legacy_dim(layer, bottom, 0)   # mvn_layer.cpp shapes its statistics as num x channels
    per_element = 5 if layer.mvn_param.normalize_variance else 2
    return LayerShapes([bottom], [], per_element * count(bottom))


# ---------------------------------------------------------------------------------------------
# Softmax, ArgMax, Reduction
# ---------------------------------------------------------------------------------------------

@shape_rule("Softmax")
def softmax_rule(layer, bottoms, context):
    _expect_blobs(layer, bottoms, (1, 1), (1, 1))
    _axis(layer, bottoms[0], layer.softmax_param.axis)
    return LayerShapes([bottoms[0]], [], 3 * count(bottoms[0]))


@shape_rule("ArgMax")
def argmax_rule(layer, bottoms, context):
    _expect_blobs(layer, bottoms, (1, 1), (1, 1))
    param, bottom = layer.argmax_param, bottoms[0]
    if param.top_k < 1:
        raise _error(layer, "top_k must not be less than 1")
    if param.HasField("axis"):
        axis = _axis(layer, bottom, param.axis)
        if param.top_k > bottom[axis]:
            raise _error(layer, f"top_k ({param.top_k}) must be at most the dimension of axis "
                                f"{axis} ({bottom[axis]})")
        top = bottom[:axis] + (param.top_k,) + bottom[axis + 1:]
    else:
        _axis(layer, bottom, 0)
        if param.top_k > _span(bottom, 1):
            raise _error(layer, f"top_k ({param.top_k}) must be at most the size of one "
                                f"flattened instance ({_span(bottom, 1)})")
        # Without an axis the top is (N, 1 or 2 [index, value], top_k, 1, ...), at least 3-D.
        top = [1] * max(len(bottom), 3)
        top[0], top[1], top[2] = bottom[0], 2 if param.out_max_val else 1, param.top_k
        top = tuple(top)
    return LayerShapes([top], [], count(bottom))


@shape_rule("Reduction")
def reduction_rule(layer, bottoms, context):
    _expect_blobs(layer, bottoms, (1, 1), (1, 1))
    param, bottom = layer.reduction_param, bottoms[0]
    axis = _axis(layer, bottom, param.axis)
    # The axes from `axis` on are all reduced (Caffe reduces tails only); axis 0 gives a scalar.
    top = bottom[:axis]
    per_element = 2 if param.operation in (_REDUCTION.ASUM, _REDUCTION.SUMSQ) else 1
    return LayerShapes([top], [], per_element * count(bottom) + count(top))


# ---------------------------------------------------------------------------------------------
# Losses and Accuracy (the loss top is a scalar: shape ())
# ---------------------------------------------------------------------------------------------

@shape_rule("SoftmaxWithLoss")
def softmax_loss_rule(layer, bottoms, context):
    _expect_loss_blobs(layer, bottoms, top_range=(1, 2))
    _check_loss_first_dims(layer, bottoms)
    data, label = bottoms
    axis = _axis(layer, data, layer.softmax_param.axis)
    outer, inner = _check_label_count(layer, data, label, axis, "softmax axis")
    # Softmax over every score, then a log and an accumulate per labelled position.
    return LayerShapes([(), data], [], 3 * count(data) + 2 * outer * inner)


@shape_rule("SigmoidCrossEntropyLoss")
def sigmoid_cross_entropy_loss_rule(layer, bottoms, context):
    _expect_loss_blobs(layer, bottoms)
    _check_loss_first_dims(layer, bottoms)
    scores, targets = bottoms
    if count(scores) != count(targets):
        raise _error(layer, f"inputs must have the same count: {_shape_text(scores)} vs "
                            f"{_shape_text(targets)}")
    # Sigmoid output (3) + the stable log-loss formula (about 6) per element.
    return LayerShapes([()], [], 9 * count(scores))


@shape_rule("EuclideanLoss")
def euclidean_loss_rule(layer, bottoms, context):
    _expect_loss_blobs(layer, bottoms)
    _check_loss_first_dims(layer, bottoms)
    a, b = bottoms
    if _span(a, 1) != _span(b, 1):
        raise _error(layer, f"inputs must have the same dimension: {_shape_text(a)} vs "
                            f"{_shape_text(b)}")
    return LayerShapes([()], [], 3 * count(a))   # subtract, square, sum


@shape_rule("HingeLoss")
def hinge_loss_rule(layer, bottoms, context):
    _expect_loss_blobs(layer, bottoms)
    _check_loss_first_dims(layer, bottoms)
    squared = layer.hinge_loss_param.norm == _HINGE.L2
    return LayerShapes([()], [], (3 + squared) * count(bottoms[0]))


@shape_rule("InfogainLoss")
def infogain_loss_rule(layer, bottoms, context):
    _expect_loss_blobs(layer, bottoms, bottom_range=(2, 3), top_range=(1, 2))
    _check_loss_first_dims(layer, bottoms)
    data, label = bottoms[0], bottoms[1]
    axis = _axis(layer, data, layer.infogain_loss_param.axis)
    _check_label_count(layer, data, label, axis, "axis")
    classes = data[axis]
    if len(bottoms) == 3 and count(bottoms[2]) != classes * classes:
        raise _error(layer, f"the infogain matrix {_shape_text(bottoms[2])} must be "
                            f"{classes} x {classes}")
    if len(bottoms) == 2 and not layer.infogain_loss_param.HasField("source"):
        raise _error(layer, "the infogain matrix source must be specified",
                     hint="set infogain_loss_param { source: ... } or give it as bottom 2")
    # Softmax, then log, multiply and accumulate against the matrix row for every score.
    return LayerShapes([(), data], [], 6 * count(data))


@shape_rule("MultinomialLogisticLoss")
def multinomial_logistic_loss_rule(layer, bottoms, context):
    _expect_loss_blobs(layer, bottoms)
    _check_loss_first_dims(layer, bottoms)
    label = bottoms[1]
    if any(_legacy_dim(layer, label, i) != 1 for i in (1, 2, 3)):
        raise _error(layer, f"the label must hold one value per example (shape (N,) or "
                            f"(N, 1, 1, 1)), got {_shape_text(label)}")
    return LayerShapes([()], [], 2 * label[0])


@shape_rule("ContrastiveLoss")
def contrastive_loss_rule(layer, bottoms, context):
    _expect_loss_blobs(layer, bottoms, bottom_range=(3, 3))
    a, b, similar = bottoms
    if _legacy_dim(layer, a, 1) != _legacy_dim(layer, b, 1):
        raise _error(layer, f"the two feature bottoms must have the same channels: "
                            f"{_shape_text(a)} vs {_shape_text(b)}")
    for name, shape, first in (("bottom 0", a, 2), ("bottom 1", b, 2), ("bottom 2", similar, 1)):
        if any(_legacy_dim(layer, shape, i) != 1 for i in range(first, 4)):
            raise _error(layer, f"{name} {_shape_text(shape)} must be "
                                f"{'(N, C, 1, 1)' if first == 2 else '(N, 1, 1, 1)'}")
    # Per feature: subtract, square, accumulate; per pair a few more (ignored).
    return LayerShapes([()], [], 3 * count(a))


@shape_rule("Accuracy")
def accuracy_rule(layer, bottoms, context):
    _expect_blobs(layer, bottoms, (2, 2), (1, 2))
    param = layer.accuracy_param
    scores, label = bottoms
    if count(label) == 0 or param.top_k > count(scores) // count(label):
        raise _error(layer, f"top_k ({param.top_k}) must be at most the number of classes "
                            f"({count(scores) // max(count(label), 1)})")
    axis = _axis(layer, scores, param.axis)
    _check_label_count(layer, scores, label, axis, "axis")
    # A scalar accuracy, then (optionally) one accuracy per class.
    return LayerShapes([(), (scores[axis],)], [], count(scores))


# ---------------------------------------------------------------------------------------------
# Input and Parameter
# ---------------------------------------------------------------------------------------------

def _blob_shape(layer, blob_shape, what):
    dims = tuple(blob_shape.dim)
    if any(d < 0 for d in dims):
        raise _error(layer, f"{what} {_shape_text(dims)} has a negative dimension")
    return dims


@shape_rule("Input")
def input_rule(layer, bottoms, context):
    _expect_blobs(layer, bottoms, (0, 0), (1, None))
    shapes = layer.input_param.shape
    num_tops = len(layer.top)
    if len(shapes) not in (0, 1, num_tops):
        raise _error(layer, f"must specify 'shape' once, once per top blob, or not at all: "
                            f"{_plural(num_tops, 'top')} vs. {_plural(len(shapes), 'shape')}")
    if not shapes:
        # Unshaped until someone reshapes it: known only through context.input_shapes.
        return LayerShapes([None] * num_tops)
    tops = [_blob_shape(layer, shapes[0 if len(shapes) == 1 else i], "shape")
            for i in range(num_tops)]
    return LayerShapes(tops)


@shape_rule("Parameter")
def parameter_rule(layer, bottoms, context):
    _expect_blobs(layer, bottoms, (0, 0), (1, 1))
    shape = _blob_shape(layer, layer.parameter_param.shape, "parameter shape")
    return LayerShapes([shape], [shape])


# ---------------------------------------------------------------------------------------------
# Recurrent layers: LSTM, RNN (recurrent_layer.cpp + lstm_layer.cpp / rnn_layer.cpp), LSTMUnit
# ---------------------------------------------------------------------------------------------

def _recurrent_inputs(layer, bottoms, num_states):
    """Split and check bottoms as RecurrentLayer::LayerSetUp / Reshape do.

    Bottoms are x (T, N, ...), cont (T, N), an optional x_static (N, ...) and, with
    expose_hidden, the initial states (1, N, H) each. Returns (T, N, H, D, Ds or None).
    """
    param = layer.recurrent_param
    exposed = num_states if param.expose_hidden else 0
    _expect_blobs(layer, bottoms, (2 + exposed, 3 + exposed), (1 + exposed, 1 + exposed))
    hidden = param.num_output
    if hidden <= 0:
        raise _error(layer, "num_output must be positive",
                     hint="set recurrent_param { num_output: ... }")
    x, cont = bottoms[0], bottoms[1]
    if len(x) < 3:
        # The unrolled net's x transform is an InnerProduct with axis 2.
        raise _error(layer, f"x (bottom 0) must have at least 3 axes (T, N, features...), got "
                            f"{_shape_text(x)}", hint="Reshape it to (T, N, D)")
    steps, streams = x[0], x[1]
    if cont != (steps, streams):
        raise _error(layer, f"cont (bottom 1) must have exactly 2 axes (T, N) = "
                            f"{_shape_text((steps, streams))}, got {_shape_text(cont)}",
                     hint="cont holds one 0/1 marker per time step and stream")
    has_static = len(bottoms) > 2 + exposed
    static_dim = None
    if has_static:
        x_static = bottoms[2]
        # The static transform is an InnerProduct with axis 1 on (N, ...).
        if len(x_static) < 2 or x_static[0] != streams:
            raise _error(layer, f"x_static (bottom 2) must have shape (N, features...) with "
                                f"N = {streams}, got {_shape_text(x_static)}")
        static_dim = _span(x_static, 1)
    state_shape = (1, streams, hidden)
    for i, state in enumerate(bottoms[2 + has_static:], 2 + has_static):
        if state != state_shape:
            raise _error(layer, f"exposed hidden state (bottom {i}) must have shape "
                                f"{_shape_text(state_shape)}, got {_shape_text(state)}")
    return steps, streams, hidden, _span(x, 2), static_dim, exposed


def _lstm_flops(steps, streams, hidden, input_dim, static_dim):
    gates = 4 * hidden
    flops = 2 * steps * streams * gates * input_dim + steps * streams * gates   # W_xc x + b_c
    summands = 2
    if static_dim is not None:
        flops += 2 * streams * gates * static_dim                               # once
        summands = 3
    per_step = (2 * streams * gates * hidden          # W_hc h_{t-1}
                + streams * hidden                    # cont_t * h_{t-1}
                + (summands - 1) * streams * gates    # summing the gate inputs
                + 10 * streams * hidden)              # LSTMUnit gate math
    return flops + steps * per_step


def _rnn_flops(steps, streams, hidden, input_dim, static_dim):
    flops = 2 * steps * streams * hidden * input_dim + steps * streams * hidden  # W_xh x + b_h
    summands = 2
    if static_dim is not None:
        flops += 2 * streams * hidden * static_dim
        summands = 3
    per_step = (streams * hidden                      # cont_t * h_{t-1}
                + 2 * streams * hidden * hidden       # W_hh h_{t-1}
                + (summands - 1) * streams * hidden   # summing the inputs
                + streams * hidden                    # tanh -> h_t
                + 2 * streams * hidden * hidden       # W_ho h_t
                + 2 * streams * hidden)               # + b_o, tanh -> o_t
    return flops + steps * per_step


@shape_rule("LSTM")
def lstm_rule(layer, bottoms, context):
    steps, streams, hidden, input_dim, static_dim, exposed = _recurrent_inputs(layer, bottoms, 2)
    gates = 4 * hidden   # packed [i | f | o | g]
    params = [(gates, input_dim), (gates,)]            # W_xc, b_c (the only bias)
    if static_dim is not None:
        params.append((gates, static_dim))             # W_xc_static
    params.append((gates, hidden))                     # W_hc
    tops = [(steps, streams, hidden)] + [(1, streams, hidden)] * exposed   # h, [h_T, c_T]
    return LayerShapes(tops, params, _lstm_flops(steps, streams, hidden, input_dim, static_dim))


@shape_rule("RNN")
def rnn_rule(layer, bottoms, context):
    steps, streams, hidden, input_dim, static_dim, exposed = _recurrent_inputs(layer, bottoms, 1)
    params = [(hidden, input_dim), (hidden,)]          # W_xh, b_h
    if static_dim is not None:
        params.append((hidden, static_dim))            # W_xh_static
    params += [(hidden, hidden), (hidden, hidden), (hidden,)]   # W_hh, W_ho, b_o
    tops = [(steps, streams, hidden)] + [(1, streams, hidden)] * exposed   # o, [h_T]
    return LayerShapes(tops, params, _rnn_flops(steps, streams, hidden, input_dim, static_dim))


@shape_rule("LSTMUnit")
def lstm_unit_rule(layer, bottoms, context):
    _expect_blobs(layer, bottoms, (3, 3), (2, 2))
    c_prev, gates, cont = bottoms
    streams = c_prev[1] if len(c_prev) == 3 else None
    expected = (("c_prev (bottom 0)", c_prev, 3), ("gate input (bottom 1)", gates, 3),
                ("cont (bottom 2)", cont, 2))
    for name, shape, num_axes in expected:
        if len(shape) != num_axes or shape[0] != 1 or shape[1] != streams:
            want = "(1, N, H)" if num_axes == 3 else "(1, N)"
            raise _error(layer, f"{name} must have shape {want} with one time step and the "
                                f"streams of c_prev, got {_shape_text(shape)}")
    hidden = c_prev[2]
    if gates[2] != 4 * hidden:
        raise _error(layer, f"gate input (bottom 1) must have 4 * H = {4 * hidden} channels "
                            f"(packed i, f, o, g), got {gates[2]}")
    return LayerShapes([c_prev, c_prev], [], 10 * count(c_prev))


# ---------------------------------------------------------------------------------------------
# SPP, Filter, BatchReindex, Im2col
# ---------------------------------------------------------------------------------------------

def spp_levels(layer, bottom):
    """SPPLayer's pyramid on a 4-axis bottom: one (Pooling LayerParameter, LayerShapes) per level.

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
        levels.append((pooling, shapes))
    return levels


@shape_rule("SPP")
def spp_rule(layer, bottoms, context):
    _expect_blobs(layer, bottoms, (1, 1), (1, 1))
    levels = spp_levels(layer, bottoms[0])
    flops = sum(shapes.flops for _, shapes in levels)
    if len(levels) == 1:
        return LayerShapes(levels[0][1].top_shapes, [], flops)   # the Pooling top, unflattened
    # Each level is flattened to (N, C * bins_h * bins_w) and the levels joined on axis 1.
    joined = sum(_span(shapes.top_shapes[0], 1) for _, shapes in levels)
    return LayerShapes([(bottoms[0][0], joined)], [], flops)


@shape_rule("Filter")
def filter_rule(layer, bottoms, context):
    """Tops: one per bottom but the last (the selector), keeping the rows whose selector value
    is non-zero. How many that is depends on the selector's values: the compiled shape is
    Caffe's set-up shape, all rows (FilterLayer's first Reshape), and the first axis of every
    top holds the kept rows at run time."""
    _expect_blobs(layer, bottoms, (2, None), (1, None))
    if len(layer.top) != len(bottoms) - 1:
        raise _error(layer, f"takes one top per filtered bottom (every bottom but the last, "
                            f"the selector): {len(bottoms) - 1} for {len(bottoms)} bottoms, "
                            f"got {len(layer.top)}")
    selector = bottoms[-1]
    _axis(layer, selector, 0, "selector axis")
    if any(d != 1 for d in selector[1:]):
        raise _error(layer, f"selector dimensions must be singletons (1), except the first: "
                            f"the selector (last bottom) is {_shape_text(selector)}")
    for i, bottom in enumerate(bottoms[:-1]):
        if not bottom or bottom[0] != selector[0]:
            raise _error(layer, f"each bottom should have the same 0th dimension as the "
                                f"selector {_shape_text(selector)}: bottom {i} is "
                                f"{_shape_text(bottom)}")
    return LayerShapes(list(bottoms[:-1]))


@shape_rule("BatchReindex")
def batch_reindex_rule(layer, bottoms, context):
    _expect_blobs(layer, bottoms, (2, 2), (1, 1))
    data, index = bottoms
    if len(index) != 1:
        raise _error(layer, f"the index (bottom 1) must have exactly 1 axis, got "
                            f"{_shape_text(index)}")
    _axis(layer, data, 0, "batch axis")
    return LayerShapes([index + data[1:]])


def im2col_geometry(layer, bottom):
    """Im2colLayer::LayerSetUp: (channel axis, kernel, stride, pad, dilation), read from
    convolution_param as Convolution reads them."""
    channel_axis = _axis(layer, bottom, layer.convolution_param.axis)
    if len(bottom) - channel_axis - 1 < 1:
        raise _error(layer, f"needs at least one spatial axis after the channel axis "
                            f"{channel_axis} of {_shape_text(bottom)}")
    return _conv_geometry(layer, bottom)


@shape_rule("Im2col")
def im2col_rule(layer, bottoms, context):
    """Top: the bottom with its channel axis C made C * prod(kernel) (channel-major: column
    c * prod(kernel) + kernel offset) and its spatial axes made Convolution's output sizes."""
    _expect_blobs(layer, bottoms, (1, 1), (1, 1))
    bottom = bottoms[0]
    channel_axis, kernel, stride, pad, dilation = im2col_geometry(layer, bottom)
    spatial = _conv_output_dims(layer, bottom[channel_axis + 1:], kernel, stride, pad, dilation,
                                transposed=False)
    top = bottom[:channel_axis] + (bottom[channel_axis] * math.prod(kernel), *spatial)
    return LayerShapes([top])
