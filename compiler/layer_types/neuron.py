"""Declarations of the element-wise (Caffe "neuron") layers: one bottom, one top of its shape."""

from ..shapes import LayerShapes, count
from . import NEURON, ONE_IN_ONE_OUT, TIME_MAJOR_PASSTHROUGH, VALUE_PRESERVING, declare
from .common import _check_not_in_place, _error, _legacy_dim, _shape_text


# ---------------------------------------------------------------------------------------------
# Elementwise ("neuron") layers: one bottom, one top of the same shape
# ---------------------------------------------------------------------------------------------

def _elementwise(layer, bottoms, per_element):
    return LayerShapes([bottoms[0]], [], per_element * count(bottoms[0]))


@declare("ReLU", counts=ONE_IN_ONE_OUT, traits={NEURON, TIME_MAJOR_PASSTHROUGH})
def relu_rule(layer, bottoms, context):
    leaky = layer.relu_param.negative_slope != 0
    return _elementwise(layer, bottoms, 1 + leaky)   # max(x, 0); a negative_slope adds a multiply


@declare("PReLU", counts=ONE_IN_ONE_OUT, traits={NEURON, TIME_MAJOR_PASSTHROUGH})
def prelu_rule(layer, bottoms, context):
    bottom = bottoms[0]
    if len(bottom) < 2:
        raise _error(layer, f"the bottom must have at least 2 axes, got {_shape_text(bottom)}")
    # channel_shared: one slope as a 0-axis (scalar) blob, as prelu_layer.cpp creates it.
    slope = () if layer.prelu_param.channel_shared else (_legacy_dim(layer, bottom, 1),)
    return LayerShapes([bottom], [slope], 2 * count(bottom))   # max(x, 0) + a * min(x, 0)


@declare("ELU", counts=ONE_IN_ONE_OUT, traits={NEURON, TIME_MAJOR_PASSTHROUGH})
def elu_rule(layer, bottoms, context):
    return _elementwise(layer, bottoms, 3)   # alpha * (exp(x) - 1) on the negative side


@declare("Sigmoid", counts=ONE_IN_ONE_OUT, traits={NEURON, TIME_MAJOR_PASSTHROUGH})
def sigmoid_rule(layer, bottoms, context):
    return _elementwise(layer, bottoms, 3)   # 1 / (1 + exp(-x))


@declare("TanH", counts=ONE_IN_ONE_OUT, traits={NEURON, TIME_MAJOR_PASSTHROUGH})
def tanh_rule(layer, bottoms, context):
    return _elementwise(layer, bottoms, 1)


@declare("AbsVal", counts=ONE_IN_ONE_OUT, traits={NEURON, TIME_MAJOR_PASSTHROUGH})
def absval_rule(layer, bottoms, context):
    _check_not_in_place(layer)   # absval_layer.cpp: its backward needs the input
    return _elementwise(layer, bottoms, 1)


@declare("Power", counts=ONE_IN_ONE_OUT, traits={NEURON, TIME_MAJOR_PASSTHROUGH})
def power_rule(layer, bottoms, context):
    return _elementwise(layer, bottoms, 3)   # (shift + scale * x) ^ power


def _check_log_base(layer, param):
    # exp_layer.cpp / log_layer.cpp: base -1 means e; any other base must be positive.
    if param.base != -1 and param.base <= 0:
        raise _error(layer, f"base must be strictly positive, got {param.base:g}",
                     hint="use base: -1 for the natural base e")


@declare("Exp", counts=ONE_IN_ONE_OUT, traits={NEURON, TIME_MAJOR_PASSTHROUGH})
def exp_rule(layer, bottoms, context):
    _check_log_base(layer, layer.exp_param)
    return _elementwise(layer, bottoms, 3)   # base ^ (shift + scale * x)


@declare("Log", counts=ONE_IN_ONE_OUT, traits={NEURON, TIME_MAJOR_PASSTHROUGH})
def log_rule(layer, bottoms, context):
    _check_log_base(layer, layer.log_param)
    return _elementwise(layer, bottoms, 3)   # log_base(shift + scale * x)


@declare("BNLL", counts=ONE_IN_ONE_OUT, traits={NEURON, TIME_MAJOR_PASSTHROUGH})
def bnll_rule(layer, bottoms, context):
    return _elementwise(layer, bottoms, 3)   # log(1 + exp(x))


@declare("Threshold", counts=ONE_IN_ONE_OUT, traits={NEURON, TIME_MAJOR_PASSTHROUGH})
def threshold_rule(layer, bottoms, context):
    return _elementwise(layer, bottoms, 1)


@declare("Clip", counts=ONE_IN_ONE_OUT, traits={NEURON, TIME_MAJOR_PASSTHROUGH})
def clip_rule(layer, bottoms, context):
    param = layer.clip_param
    if param.min > param.max:
        raise _error(layer, f"clip_param min ({param.min:g}) is above max ({param.max:g})")
    return _elementwise(layer, bottoms, 2)   # max(min(x, max), min)


@declare("Swish", counts=ONE_IN_ONE_OUT, traits={NEURON, TIME_MAJOR_PASSTHROUGH})
def swish_rule(layer, bottoms, context):
    return _elementwise(layer, bottoms, 5)   # x * sigmoid(beta * x)


@declare("Dropout", counts=ONE_IN_ONE_OUT,
         traits={NEURON, TIME_MAJOR_PASSTHROUGH, VALUE_PRESERVING})
def dropout_rule(layer, bottoms, context):
    ratio = layer.dropout_param.dropout_ratio
    # The TRAIN scale is 1 / (1 - ratio): a ratio of 1 or more has no meaning.
    if not 0 <= ratio < 1:
        raise _error(layer, f"dropout_ratio must be in [0, 1), got {ratio:g}")
    per_element = 2 if context.phase == "TRAIN" else 0   # a mask compare and a scale; a copy
    return _elementwise(layer, bottoms, per_element)
