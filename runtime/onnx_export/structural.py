"""Converters: the layers that route, reshape, combine or reduce blobs."""

import math
import sys

import numpy as np
from onnx import TensorProto

from lrcn_proto import caffe_pb2

from .registry import Unsupported, converter


@converter("Reshape", "Flatten")
def _reshape(ctx):
    ctx.reshape_to_top(ctx.inputs[0])


@converter("Parameter")
def _parameter(ctx):
    ctx.identity(ctx.blob(0, "blob"), ctx.outputs[0])


@converter("BatchReindex")
def _batch_reindex(ctx):
    """Gather on axis 0 at the index cast to int64 (Cast truncates toward zero, as Caffe's
    static_cast<int> does). The net refuses an index outside [0, N); Gather counts one in
    [-N, 0) from the end and refuses the rest."""
    index = ctx.op("Cast", [ctx.inputs[1]], label="index", to=TensorProto.INT64)
    ctx.op("Gather", [ctx.inputs[0], index], ctx.outputs[0], axis=0)


@converter("Split")
def _split(ctx):
    for out in ctx.outputs:
        ctx.node("Identity", ctx.inputs, [out], label=out.replace("/", "_"))


@converter("Slice")
def _slice(ctx):
    axis = ctx.layer.attrs.axis
    if ctx.bottom_axis(0) == axis:
        raise Unsupported("it slices the batch axis, which --dynamic-batch makes symbolic")
    if len(ctx.outputs) == 1:
        ctx.identity(ctx.inputs[0], ctx.outputs[0])
        return
    ctx.split(ctx.inputs[0], list(ctx.layer.attrs.sizes), axis, ctx.outputs)


@converter("Concat")
def _concat(ctx):
    if len(ctx.inputs) == 1:
        ctx.identity(ctx.inputs[0], ctx.outputs[0])
        return
    ctx.op("Concat", ctx.inputs, ctx.outputs[0], axis=ctx.layer.attrs.axis)


@converter("Eltwise")
def _eltwise(ctx):
    ops = caffe_pb2.EltwiseParameter
    unit = ctx.unit
    if unit.op == ops.MAX:
        ctx.op("Max", ctx.inputs, ctx.outputs[0])
        return
    if unit.op == ops.PROD:
        _chain(ctx, "Mul", ctx.inputs, "prod")
        return
    if unit.coeff_blob:
        _eltwise_coeff_blob(ctx)
        return
    terms = [x if c == 1 else ctx.op("Mul", [x, ctx.scalar(f"coeff{i}", c)], label=f"term{i}")
             for i, (c, x) in enumerate(zip(unit.coeffs, ctx.inputs))]
    _chain(ctx, "Add", terms, "sum")


def _chain(ctx, op_type, values, label):
    """Fold values left to right with a binary op (Caffe's order of accumulation)."""
    acc = values[0]
    for k, value in enumerate(values[1:], 1):
        acc = ctx.op(op_type, [acc, value], ctx.outputs[0] if k == len(values) - 1 else None,
                     f"{label}{k}")


def _eltwise_coeff_blob(ctx):
    """LRCN fork: the last bottom C (K, ...) scales each of the K others, C[i] viewed as `num`
    entries multiplying bottom i viewed as (num, count / num)."""
    inputs, blob = ctx.inputs[:-1], ctx.inputs[-1]
    if any(ctx.bottom_axis(i) is not None for i in range(len(ctx.inputs))):
        raise Unsupported("coeff_blob with --dynamic-batch is not supported")
    k = len(inputs)
    shape = ctx.bottom_shape(0)
    num = math.prod(ctx.bottom_shape(k)) // k
    per_input = ctx.reshape(blob, (k, num, 1), None, label="coeff_rows")
    terms = []
    for i, (coeff, x) in enumerate(zip(ctx.unit.coeffs, inputs)):
        weights = ctx.op("Gather", [per_input, ctx.const(f"index{i}", np.int64(i), np.int64)],
                         label=f"coeff{i}", axis=0)
        if coeff != 1:
            weights = ctx.op("Mul", [weights, ctx.scalar(f"scale{i}", coeff)], label=f"scaled{i}")
        rows = ctx.reshape(x, (num, math.prod(shape) // num), None, label=f"rows{i}")
        terms.append(ctx.op("Mul", [rows, weights], label=f"term{i}"))
    acc = terms[0]
    for j, term in enumerate(terms[1:], 1):
        acc = ctx.op("Add", [acc, term], label=f"sum{j}")
    ctx.reshape(acc, shape, None, ctx.outputs[0], "restore")


@converter("Tile")
def _tile(ctx):
    axis = ctx.layer.attrs.axis
    # Caffe repeats the whole block from `axis` on: repeat `axis` after merging the later
    # axes into it, then restore the top's shape.
    shape = ctx.bottom_shape(0)
    merged = tuple(shape[:axis]) + (math.prod(shape[axis:]),)
    batch = ctx.bottom_axis(0)
    x = ctx.reshape(ctx.inputs[0], merged, None if batch is None else min(batch, axis),
                    label="merge")
    repeats = [1] * len(merged)
    repeats[axis] = ctx.unit.tiles
    y = ctx.op("Tile", [x, ctx.ints("repeats", repeats)], label="tile")
    ctx.reshape_to_top(y, label="restore")


@converter("ArgMax")
def _argmax(ctx):
    """Caffe's order: values descending, equal values by index descending. TopK keeps equal
    values in index order, so run it on the reversed axis and map the indices back."""
    unit, x = ctx.unit, ctx.inputs[0]
    shape = ctx.bottom_shape(0)
    if unit.axis is not None:
        axis = unit.axis
    else:
        x = ctx.op("Flatten", [x], label="flatten", axis=1)
        axis = 1
    size = shape[axis] if unit.axis is not None else math.prod(shape[1:])
    reversed_x = ctx.slice(x, [-1], [-sys.maxsize - 1], [axis], [-1], label="reverse")
    values, order = ctx.node("TopK", [reversed_x, ctx.ints("k", [unit.top_k])], 2, "topk",
                             axis=axis, largest=1, sorted=1)
    index = ctx.op("Sub", [ctx.const("last", np.int64(size - 1), np.int64), order],
                   label="index")
    index = ctx.op("Cast", [index], label="index_float", to=TensorProto.FLOAT)
    if unit.axis is not None:
        ctx.identity(values if unit.out_max_val else index, ctx.outputs[0])
        return
    parts = [ctx.unsqueeze(index, [1], label="index_row")]
    if unit.out_max_val:
        parts.append(ctx.unsqueeze(values, [1], label="value_row"))
    stacked = ctx.op("Concat", parts, label="stack", axis=1) if len(parts) > 1 else parts[0]
    ctx.reshape_to_top(stacked)


@converter("Reduction")
def _reduction(ctx):
    ops = caffe_pb2.ReductionParameter
    unit, x = ctx.unit, ctx.inputs[0]
    rank = len(ctx.bottom_shape(0))
    axes = list(range(ctx.layer.attrs.axis, rank))
    if unit.op == ops.ASUM:
        x = ctx.op("Abs", [x])
    elif unit.op == ops.SUMSQ:
        x = ctx.op("Mul", [x, x], label="squares")
    reduce_op = "ReduceMean" if unit.op == ops.MEAN else "ReduceSum"
    if not axes:     # nothing to reduce (axis past the last): Caffe's top is the bottom
        y = x
    else:
        y = ctx.reduce(reduce_op, x, axes, 0, "reduce")
    if unit.coeff != 1:
        ctx.op("Mul", [y, ctx.scalar("coeff", unit.coeff)], ctx.outputs[0], "coeff")
    else:
        ctx.identity(y, ctx.outputs[0])


@converter("Softmax")
def _softmax(ctx):
    ctx.op("Softmax", ctx.inputs, ctx.outputs[0], axis=ctx.layer.attrs.axis)
