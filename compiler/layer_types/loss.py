"""Declarations of the loss layers and Accuracy (a loss top is a scalar: shape ())."""

from lrcn_proto import caffe_pb2

from ..shapes import LayerShapes, count
from . import LOSS, METRIC, BlobCounts, declare
from .common import AxisAttrs, _axis, _error, _legacy_dim, _shape_text, _span

_HINGE = caffe_pb2.HingeLossParameter

# A loss layer written without a top gets one from Caffe (AutoTopBlobs).
_LOSS_COUNTS = BlobCounts(2, 2, 1, 1, auto_tops=True)


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
# Losses and Accuracy (the loss top is a scalar: shape ())
# ---------------------------------------------------------------------------------------------

@declare("SoftmaxWithLoss", counts=BlobCounts(2, 2, 1, 2, auto_tops=True), traits={LOSS})
def softmax_loss_rule(layer, bottoms, context):
    _check_loss_first_dims(layer, bottoms)
    data, label = bottoms
    axis = _axis(layer, data, layer.softmax_param.axis)
    outer, inner = _check_label_count(layer, data, label, axis, "softmax axis")
    # Softmax over every score, then a log and an accumulate per labelled position.
    return LayerShapes([(), data], [], 3 * count(data) + 2 * outer * inner, AxisAttrs(axis))


@declare("SigmoidCrossEntropyLoss", counts=_LOSS_COUNTS, traits={LOSS})
def sigmoid_cross_entropy_loss_rule(layer, bottoms, context):
    _check_loss_first_dims(layer, bottoms)
    scores, targets = bottoms
    if count(scores) != count(targets):
        raise _error(layer, f"inputs must have the same count: {_shape_text(scores)} vs "
                            f"{_shape_text(targets)}")
    # Sigmoid output (3) + the stable log-loss formula (about 6) per element.
    return LayerShapes([()], [], 9 * count(scores))


@declare("EuclideanLoss", counts=_LOSS_COUNTS, traits={LOSS})
def euclidean_loss_rule(layer, bottoms, context):
    _check_loss_first_dims(layer, bottoms)
    a, b = bottoms
    if _span(a, 1) != _span(b, 1):
        raise _error(layer, f"inputs must have the same dimension: {_shape_text(a)} vs "
                            f"{_shape_text(b)}")
    return LayerShapes([()], [], 3 * count(a))   # subtract, square, sum


@declare("HingeLoss", counts=_LOSS_COUNTS, traits={LOSS})
def hinge_loss_rule(layer, bottoms, context):
    _check_loss_first_dims(layer, bottoms)
    squared = layer.hinge_loss_param.norm == _HINGE.L2
    return LayerShapes([()], [], (3 + squared) * count(bottoms[0]))


@declare("InfogainLoss", counts=BlobCounts(2, 3, 1, 2, auto_tops=True), traits={LOSS})
def infogain_loss_rule(layer, bottoms, context):
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
    return LayerShapes([(), data], [], 6 * count(data), AxisAttrs(axis))


@declare("MultinomialLogisticLoss", counts=_LOSS_COUNTS, traits={LOSS})
def multinomial_logistic_loss_rule(layer, bottoms, context):
    _check_loss_first_dims(layer, bottoms)
    label = bottoms[1]
    if any(_legacy_dim(layer, label, i) != 1 for i in (1, 2, 3)):
        raise _error(layer, f"the label must hold one value per example (shape (N,) or "
                            f"(N, 1, 1, 1)), got {_shape_text(label)}")
    return LayerShapes([()], [], 2 * label[0])


@declare("ContrastiveLoss", counts=BlobCounts(3, 3, 1, 1, auto_tops=True), traits={LOSS})
def contrastive_loss_rule(layer, bottoms, context):
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


@declare("Accuracy", counts=BlobCounts(2, 2, 1, 2), traits={METRIC})
def accuracy_rule(layer, bottoms, context):
    param = layer.accuracy_param
    scores, label = bottoms
    if count(label) == 0 or param.top_k > count(scores) // count(label):
        raise _error(layer, f"top_k ({param.top_k}) must be at most the number of classes "
                            f"({count(scores) // max(count(label), 1)})")
    axis = _axis(layer, scores, param.axis)
    _check_label_count(layer, scores, label, axis, "axis")
    # A scalar accuracy, then (optionally) one accuracy per class.
    return LayerShapes([(), (scores[axis],)], [], count(scores), AxisAttrs(axis))
