"""Converters: Input and the element-wise (neuron) layers."""

import numpy as np
from onnx import TensorProto, numpy_helper

from .registry import converter


@converter("Input")
def _input(ctx):
    """Input tops are graph inputs (export_model declares them); no node."""


def _simple(op_type, **attributes):
    def convert(ctx):
        ctx.op(op_type, ctx.inputs, ctx.outputs[0], **attributes)
    return convert


converter("Sigmoid")(_simple("Sigmoid"))
converter("TanH")(_simple("Tanh"))
converter("AbsVal")(_simple("Abs"))
# Caffe's BNLL is log(1 + exp(x)) computed stably: ONNX Softplus.
converter("BNLL")(_simple("Softplus"))


@converter("ReLU")
def _relu(ctx):
    slope = float(ctx.unit.negative_slope)
    if slope == 0:
        ctx.op("Relu", ctx.inputs, ctx.outputs[0])
    else:
        ctx.op("LeakyRelu", ctx.inputs, ctx.outputs[0], alpha=slope)


@converter("PReLU")
def _prelu(ctx):
    rank = len(ctx.bottom_shape(0))
    if ctx.unit.channel_shared:
        slope = ctx.blob(0, "slope", (1,))
    else:
        # (C,) broadcast over (N, C, ...): trailing singleton axes.
        slope = ctx.blob(0, "slope", (-1,) + (1,) * (rank - 2))
    ctx.op("PRelu", [ctx.inputs[0], slope], ctx.outputs[0])


@converter("ELU")
def _elu(ctx):
    ctx.op("Elu", ctx.inputs, ctx.outputs[0], alpha=float(ctx.unit.alpha))


@converter("Power")
def _power(ctx):
    unit, x = ctx.unit, ctx.inputs[0]
    if unit.scale == 0:
        # Caffe fills a constant whatever x holds (x * 0 would turn inf into NaN).
        value = 1.0 if unit.power == 0 else unit.shift ** unit.power
        shape = ctx.op("Shape", [x])
        ctx.op("ConstantOfShape", [shape], ctx.outputs[0],
               value=numpy_helper.from_array(np.array([value], np.float32)))
        return
    steps = []
    if unit.scale != 1:
        steps.append(("Mul", "scale", unit.scale))
    if unit.shift != 0:
        steps.append(("Add", "shift", unit.shift))
    if unit.power != 1:
        steps.append(("Pow", "power", unit.power))
    if not steps:
        ctx.identity(x, ctx.outputs[0])
    for k, (op_type, label, value) in enumerate(steps):
        x = ctx.op(op_type, [x, ctx.scalar(label, value)],
                   ctx.outputs[0] if k == len(steps) - 1 else None, label)


@converter("Exp")
def _exp(ctx):
    unit, x = ctx.unit, ctx.inputs[0]
    if unit.inner_scale != 1:
        x = ctx.op("Mul", [x, ctx.scalar("inner_scale", unit.inner_scale)], label="inner")
    if unit.outer_scale == 1:
        ctx.op("Exp", [x], ctx.outputs[0])
    else:
        y = ctx.op("Exp", [x])
        ctx.op("Mul", [y, ctx.scalar("outer_scale", unit.outer_scale)], ctx.outputs[0], "outer")


@converter("Log")
def _log(ctx):
    unit, x = ctx.unit, ctx.inputs[0]
    if unit.scale != 1:
        x = ctx.op("Mul", [x, ctx.scalar("scale", unit.scale)], label="scale")
    if unit.shift != 0:
        x = ctx.op("Add", [x, ctx.scalar("shift", unit.shift)], label="shift")
    if unit.base_scale == 1:
        ctx.op("Log", [x], ctx.outputs[0])
    else:
        y = ctx.op("Log", [x])
        ctx.op("Mul", [y, ctx.scalar("base_scale", unit.base_scale)], ctx.outputs[0], "base")


@converter("Threshold")
def _threshold(ctx):
    above = ctx.op("Greater", [ctx.inputs[0], ctx.scalar("threshold", ctx.unit.threshold)])
    ctx.op("Cast", [above], ctx.outputs[0], to=TensorProto.FLOAT)


@converter("Swish")
def _swish(ctx):
    x = ctx.inputs[0]
    scaled = x
    if ctx.unit.beta != 1:
        scaled = ctx.op("Mul", [x, ctx.scalar("beta", ctx.unit.beta)], label="beta")
    gate = ctx.op("Sigmoid", [scaled])
    ctx.op("Mul", [x, gate], ctx.outputs[0])


@converter("Clip")
def _clip(ctx):
    ctx.op("Clip", [ctx.inputs[0], ctx.scalar("min", ctx.unit.min),
                    ctx.scalar("max", ctx.unit.max)], ctx.outputs[0])


def _dropout_check(layer):
    if layer.phase == "TRAIN" and layer.param.dropout_param.dropout_ratio > 0:
        return ("Dropout in TRAIN draws random masks; export the TEST phase "
                "(--phase TEST), where it is the identity")
    return None


@converter("Dropout", check=_dropout_check)
def _dropout(ctx):
    ctx.identity(ctx.inputs[0], ctx.outputs[0])
