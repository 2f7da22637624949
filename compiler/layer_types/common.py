"""What the declaration modules share: Caffe's Blob accessors as the rules need them, the
errors they raise, and the attributes of a layer that works on one axis.

Every rule does what the layer's LayerSetUp() + Reshape() do in BVLC Caffe (src/caffe/layers/
<name>_layer.cpp): the same axis canonicalisation, the same shape checks (raised as
CompileError instead of a CHECK failure), the same top shapes and the same learnable blob
shapes in Caffe's blob order and layout. The declared blob counts are checked before a rule
runs (compiler.shapes.infer_layer).

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
- Elementwise layers: the operations in Caffe's formula, per element (stated in each rule).
- Softmax: 3 per element (exp, sum, divide). Loss layers: their elementwise work plus softmax
  where Caffe runs one; Accuracy / ArgMax: one compare per score.
- LSTM: x transform 2 * T * N * 4H * D + bias T * N * 4H; static transform 2 * N * 4H * Ds once
  (Caffe computes it once and adds it every step); per step 2 * N * 4H * H (W_hc), N * H (cont
  gating of h), N * 4H per summand added to the gate input, 10 * N * H gate math (LSTMUnit:
  3 sigmoids, 2 tanh, 4 multiplies, 1 add). RNN likewise with its own terms (see _rnn_flops).
"""

import math
from dataclasses import dataclass

from ..errors import CompileError


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


def _check_not_in_place(layer):
    for top in layer.top:
        if top in layer.bottom:
            raise _error(layer, f"does not allow in-place computation (top '{top}' is also a "
                                "bottom)", hint="give the top a name of its own")


@dataclass(frozen=True)
class AxisAttrs:
    """The canonical axis (Blob::CanonicalAxisIndex, or a legacy *_dim) a layer works on;
    None for ArgMax without an axis (it ranks each item's flattened data)."""
    axis: int
