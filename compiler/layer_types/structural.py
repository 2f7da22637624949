"""Declarations of the layers that route, reshape, combine or reduce blobs (and Input,
Parameter)."""

import math
from dataclasses import dataclass

from lrcn_proto import caffe_pb2

from ..shapes import LayerShapes, count
from . import (ONE_IN_ONE_OUT, SINK, TIME_MAJOR_FROM_AXIS_2, TIME_MAJOR_PASSTHROUGH,
               VALUE_PRESERVING, BlobCounts, declare, fixed)
from .common import AxisAttrs, _axis, _check_not_in_place, _error, _plural, _shape_text, _span

_ELTWISE = caffe_pb2.EltwiseParameter
_REDUCTION = caffe_pb2.ReductionParameter


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


@dataclass(frozen=True)
class FlattenAttrs:
    start: int               # canonical axis and end_axis: start .. end (inclusive) merge
    end: int


@dataclass(frozen=True)
class SliceAttrs:
    axis: int
    sizes: tuple             # each top's size along the axis (from slice_point or even parts)


@dataclass(frozen=True)
class CropAttrs:
    axis: int
    offsets: tuple           # one per cropped axis (axis .. last), Caffe's 0 / 1 / many rule


@declare("Reshape", counts=ONE_IN_ONE_OUT, traits={VALUE_PRESERVING})
def reshape_rule(layer, bottoms, context):
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


@declare("Flatten", counts=ONE_IN_ONE_OUT, traits={VALUE_PRESERVING})
def flatten_rule(layer, bottoms, context):
    _check_not_in_place(layer)
    bottom, param = bottoms[0], layer.flatten_param
    start = _axis(layer, bottom, param.axis)
    end = _axis(layer, bottom, param.end_axis, "end_axis")
    if end < start:
        raise _error(layer, f"end_axis ({param.end_axis}) comes before axis ({param.axis}) on "
                            f"the bottom {_shape_text(bottom)}")
    return LayerShapes([bottom[:start] + (_span(bottom, start, end + 1),) + bottom[end + 1:]],
                       attrs=FlattenAttrs(start, end))


def _legacy_dim_axis(layer, shape, value, field):
    """slice_dim / concat_dim: a non-negative axis below num_axes (no counting from the end)."""
    if value >= len(shape):
        raise _error(layer, f"{field} {value} out of range for the {len(shape)}-D bottom "
                            f"{_shape_text(shape)}", hint="use the axis field instead")
    return value


@declare("Slice", counts=BlobCounts(1, 1, 1, None),
         traits={VALUE_PRESERVING, TIME_MAJOR_FROM_AXIS_2})
def slice_rule(layer, bottoms, context):
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
    return LayerShapes([bottom[:axis] + (s,) + bottom[axis + 1:] for s in sizes],
                       attrs=SliceAttrs(axis, tuple(sizes)))


@declare("Concat", counts=BlobCounts(1, None, 1, 1),
         traits={VALUE_PRESERVING, TIME_MAJOR_FROM_AXIS_2})
def concat_rule(layer, bottoms, context):
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
    return LayerShapes([first[:axis] + (total,) + first[axis + 1:]], attrs=AxisAttrs(axis))


@declare("Split", counts=BlobCounts(1, 1, 1, None),
         traits={TIME_MAJOR_PASSTHROUGH, VALUE_PRESERVING})
def split_rule(layer, bottoms, context):
    _check_not_in_place(layer)
    return LayerShapes([bottoms[0]] * len(layer.top))


@declare("Silence", counts=BlobCounts(1, None, 0, 0), traits={SINK})
def silence_rule(layer, bottoms, context):
    return LayerShapes([])


@declare("Tile", counts=ONE_IN_ONE_OUT)
def tile_rule(layer, bottoms, context):
    param, bottom = layer.tile_param, bottoms[0]
    axis = _axis(layer, bottom, param.axis)
    if not param.HasField("tiles"):
        raise _error(layer, "number of tiles must be specified", hint="set tile_param { tiles: "
                                                                      "... }")
    if param.tiles <= 0:
        raise _error(layer, f"number of tiles must be positive, got {param.tiles}")
    top = bottom[:axis] + (bottom[axis] * param.tiles,) + bottom[axis + 1:]
    return LayerShapes([top], attrs=AxisAttrs(axis))


@declare("Crop", counts=fixed(2, 1))
def crop_rule(layer, bottoms, context):
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
    top, resolved = list(data[:start]), []
    for i in range(start, len(data)):
        offset = offsets[0] if len(offsets) == 1 else (offsets[i - start] if offsets else 0)
        resolved.append(offset)
        if data[i] - offset < reference[i]:
            raise _error(layer, f"the crop for dimension {i} is out of bounds: size "
                                f"{reference[i]} at offset {offset} in {data[i]}")
        top.append(reference[i])
    return LayerShapes([tuple(top)], attrs=CropAttrs(start, tuple(resolved)))


# ---------------------------------------------------------------------------------------------
# Eltwise
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


@declare("Eltwise", counts=BlobCounts(2, None, 1, 1), traits={TIME_MAJOR_PASSTHROUGH})
def eltwise_rule(layer, bottoms, context):
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


# ---------------------------------------------------------------------------------------------
# Softmax, ArgMax, Reduction
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# Row selection: Filter (filter_layer.cpp), BatchReindex (batch_reindex_layer.cpp)
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FilterAttrs:
    num_filtered: int        # the bottoms filtered; bottom num_filtered is the selector


@declare("Filter", counts=BlobCounts(2, None, 1, None))
def filter_rule(layer, bottoms, context):
    """Tops: one per bottom but the last (the selector), keeping the rows whose selector value
    is non-zero. How many that is depends on the selector's values: the compiled shape is
    Caffe's set-up shape, all rows (FilterLayer's first Reshape), and the first axis of every
    top holds the kept rows at run time. FLOPs: 0 (data movement)."""
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
    return LayerShapes(list(bottoms[:-1]), [], 0, FilterAttrs(len(bottoms) - 1))


@dataclass(frozen=True)
class BatchReindexAttrs:
    num_rows: int            # rows of bottom 0: an index must lie in [0, num_rows)


@declare("BatchReindex", counts=fixed(2, 1))
def batch_reindex_rule(layer, bottoms, context):
    """FLOPs: 0 (data movement)."""
    data, index = bottoms
    if len(index) != 1:
        raise _error(layer, f"the index (bottom 1) must have exactly 1 axis, got "
                            f"{_shape_text(index)}")
    _axis(layer, data, 0, "batch axis")
    return LayerShapes([index + data[1:]], [], 0, BatchReindexAttrs(data[0]))


@declare("Softmax", counts=ONE_IN_ONE_OUT)
def softmax_rule(layer, bottoms, context):
    axis = _axis(layer, bottoms[0], layer.softmax_param.axis)
    return LayerShapes([bottoms[0]], [], 3 * count(bottoms[0]), AxisAttrs(axis))


@declare("ArgMax", counts=ONE_IN_ONE_OUT)
def argmax_rule(layer, bottoms, context):
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
    return LayerShapes([top], [], count(bottom),
                       AxisAttrs(axis if param.HasField("axis") else None))


@declare("Reduction", counts=ONE_IN_ONE_OUT)
def reduction_rule(layer, bottoms, context):
    param, bottom = layer.reduction_param, bottoms[0]
    axis = _axis(layer, bottom, param.axis)
    # The axes from `axis` on are all reduced (Caffe reduces tails only); axis 0 gives a scalar.
    top = bottom[:axis]
    per_element = 2 if param.operation in (_REDUCTION.ASUM, _REDUCTION.SUMSQ) else 1
    return LayerShapes([top], [], per_element * count(bottom) + count(top), AxisAttrs(axis))


# ---------------------------------------------------------------------------------------------
# Input and Parameter
# ---------------------------------------------------------------------------------------------

def _blob_shape(layer, blob_shape, what):
    dims = tuple(blob_shape.dim)
    if any(d < 0 for d in dims):
        raise _error(layer, f"{what} {_shape_text(dims)} has a negative dimension")
    return dims


@declare("Input", counts=BlobCounts(0, 0, 1, None))
def input_rule(layer, bottoms, context):
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


@declare("Parameter", counts=fixed(0, 1))
def parameter_rule(layer, bottoms, context):
    shape = _blob_shape(layer, layer.parameter_param.shape, "parameter shape")
    return LayerShapes([shape], [shape])
