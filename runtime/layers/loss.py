"""Loss layers (0-dim tops) and Accuracy, with Caffe's values, normalizers and gradients.

Where Caffe's backward is not the exact derivative of its forward (the FLT_MIN / 1e-20 clamps
before a log, ContrastiveLoss's 1e-4 in a denominator), the top carries Caffe's number from
the forward formula and Caffe's gradient from a surrogate expression (`_value_with_grad_of`).
Labels are floats cast to int as static_cast<int> does (truncation toward zero) and never
receive a gradient.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F

from compiler.paths import resolve_path
from lrcn_proto import caffe_pb2
from runtime.layers.base import CaffeLayer, LayerError
from runtime.layers.registry import register
from runtime.weights import read_blob_file

# float's smallest normal number: Caffe clamps probabilities to it before the log.
FLT_MIN = float(np.finfo(np.float32).tiny)
# Caffe's kLOG_THRESHOLD (loss_layer.hpp), the clamp of Multinomial/InfogainLoss.
LOG_THRESHOLD = 1e-20

_NORM = caffe_pb2.LossParameter


def _value_with_grad_of(value, surrogate):
    """A tensor equal to `value` whose gradient is the gradient of `surrogate`.

    surrogate - surrogate.detach() is exactly 0 for finite numbers, so the forward result
    is Caffe's value bit for bit."""
    return value.detach() + (surrogate - surrogate.detach())


def _normalization(layer_param, default):
    """The NormalizationMode in force: `normalization` when stated, else the legacy
    `normalize` (true: VALID, false: BATCH_SIZE), else the layer's `default`."""
    loss = layer_param.loss_param
    if loss.HasField("normalization"):
        return loss.normalization
    if loss.HasField("normalize"):
        return _NORM.VALID if loss.normalize else _NORM.BATCH_SIZE
    return default


def normalizes_by_valid_count(layer_param):
    """True when the loss divides by the number of labels that are not ignored (VALID with an
    ignore_label): on several ranks each divides by its own count, so their average is not
    exactly one process's over the combined batch (as in Caffe)."""
    return (layer_param.loss_param.HasField("ignore_label")
            and _normalization(layer_param, _NORM.VALID) == _NORM.VALID)


def _normalizer(mode, outer, inner, valid_count):
    """Caffe's get_normalizer, never below 1 (a batch with every label ignored gives 0 loss,
    not NaN). `valid_count` is a tensor so that no device sync is needed."""
    if mode == _NORM.VALID:
        return torch.clamp(valid_count, min=1)
    if mode == _NORM.FULL:
        return max(1, outer * inner)
    if mode == _NORM.BATCH_SIZE:
        return max(1, outer)
    if mode == _NORM.NONE:
        return 1
    raise ValueError(f"unknown normalization mode {mode}")


def _split_at_axis(x, axis):
    """(outer, classes, inner) sizes around the (compiled, canonical) class axis, and x viewed
    that way."""
    outer = math.prod(x.shape[:axis])
    inner = math.prod(x.shape[axis + 1:])
    return outer, x.shape[axis], inner, x.reshape(outer, x.shape[axis], inner)


def _log_softmax_over_classes(logits):
    """log_softmax over dim 1 of (outer, classes, inner) logits. With inner = 1 it runs over
    the last dim of a 2-D view: torch's kernel for a last dim is about 4x faster (measured
    on a (2000, 8801) LSTM LM's predictions)."""
    if logits.shape[2] == 1:
        return F.log_softmax(logits.squeeze(2), dim=1).unsqueeze(2)
    return F.log_softmax(logits, dim=1)


def _labels(label, outer, inner, ignore_label, device, layer):
    """Int labels as (outer, inner), the non-ignored mask, and labels safe to index with
    (ignored ones replaced by class 0, whose value is then masked out)."""
    if label.numel() != outer * inner:
        raise LayerError(layer, f"{label.numel()} labels for {outer * inner} predictions "
                                f"(outer {outer} x inner {inner})")
    label = label.detach().to(device).reshape(outer, inner).to(torch.int64)
    if ignore_label is None:
        valid = torch.ones_like(label, dtype=torch.bool)
    else:
        valid = label != ignore_label
    return label, valid, torch.where(valid, label, torch.zeros_like(label))


def _ignore_label(message):
    return message.ignore_label if message.HasField("ignore_label") else None


@register("SoftmaxWithLoss")
class SoftmaxWithLoss(CaffeLayer):
    """-log(max(softmax(x)[label], FLT_MIN)) summed over non-ignored positions, divided by
    the normalizer (default VALID). Classes lie on softmax_param.axis; outer = product of the
    dims before it, inner = product after it (LRCN: axis 2 over (T, N, V)).

    Gradient (Caffe's): (softmax - onehot) / normalizer at non-ignored positions, 0 elsewhere,
    also where the clamp was active. The optional second top is the softmax; as in Caffe no
    gradient flows back from it.
    """

    no_grad_bottoms = (1,)

    def __init__(self, layer, rng):
        super().__init__(layer, rng)
        self.axis = layer.attrs.axis
        self.ignore_label = _ignore_label(self.param.loss_param)
        self.normalization = _normalization(self.param, _NORM.VALID)

    def forward(self, x, label):
        outer, _, inner, logits = _split_at_axis(x, self.axis)
        _, valid, safe = _labels(label, outer, inner, self.ignore_label, x.device, self.layer)
        mask = valid.to(x.dtype)
        index = safe.unsqueeze(1)
        # One pass over the logits (a vocabulary layer's are the largest blob of an LSTM LM):
        # the picked probabilities are exp of the picked log-probabilities.
        picked_log_prob = _log_softmax_over_classes(logits).gather(1, index).squeeze(1)
        picked_prob = picked_log_prob.detach().exp()
        value = -(torch.log(torch.clamp(picked_prob, min=FLT_MIN)) * mask).sum()
        surrogate = -(picked_log_prob * mask).sum()
        loss = _value_with_grad_of(value, surrogate)
        loss = loss / _normalizer(self.normalization, outer, inner, mask.sum())
        if len(self.layer.tops) > 1:
            return loss, F.softmax(logits.detach(), dim=1).reshape(x.shape)
        return (loss,)


@register("SigmoidCrossEntropyLoss")
class SigmoidCrossEntropyLoss(CaffeLayer):
    """Cross-entropy of sigmoid(x) against targets in [0, 1], Caffe's stable form
    -(x * (t - [x >= 0]) - log(1 + exp(x - 2x[x >= 0]))), summed over elements whose target
    (cast to int) is not ignore_label, divided by the normalizer: BATCH_SIZE (= shape[0])
    unless `normalization` or `normalize` says otherwise. Gradient: (sigmoid(x) - t) / norm.
    """

    no_grad_bottoms = (1,)

    def __init__(self, layer, rng):
        super().__init__(layer, rng)
        self.ignore_label = _ignore_label(self.param.loss_param)
        self.normalization = _normalization(self.param, _NORM.BATCH_SIZE)

    def forward(self, x, target):
        if target.numel() != x.numel():
            raise LayerError(self.layer, "inputs must have the same count")
        target = target.detach().to(x.device).reshape(x.shape).to(x.dtype)
        if self.ignore_label is None:
            mask = torch.ones_like(x)
        else:
            mask = (target.to(torch.int64) != self.ignore_label).to(x.dtype)
        positive = (x.detach() >= 0).to(x.dtype)
        value = -((x * (target - positive)
                   - torch.log(1 + torch.exp(x - 2 * x * positive))) * mask).sum()
        # The library form's gradient is sigmoid(x) - t everywhere, x == 0 included.
        surrogate = (F.binary_cross_entropy_with_logits(x, target, reduction="none")
                     * mask).sum()
        outer = x.shape[0] if x.dim() else 1
        inner = x.numel() // max(outer, 1)
        loss = _value_with_grad_of(value, surrogate)
        return (loss / _normalizer(self.normalization, outer, inner, mask.sum()),)


@register("EuclideanLoss")
class EuclideanLoss(CaffeLayer):
    """sum((a - b)^2) / shape[0] / 2; both bottoms get a gradient (+diff and -diff)."""

    def forward(self, a, b):
        if a.numel() != b.numel():
            raise LayerError(self.layer, "inputs must have the same count")
        diff = a - b.reshape(a.shape)
        return ((diff * diff).sum() / a.shape[0] / 2,)


@register("ContrastiveLoss")
class ContrastiveLoss(CaffeLayer):
    """Pairs (a_i, b_i) with similarity labels y_i (int cast, non-zero = similar), d_i the
    Euclidean distance: similar pairs add d^2, dissimilar ones max(margin - d, 0)^2
    (legacy_version: max(margin - d^2, 0)); the sum is divided by 2N.

    Caffe's gradient for a dissimilar pair is -(margin - d) / (d + 1e-4) * (a - b) / N (the
    1e-4 keeps it finite at d == 0); that is what flows here, not the exact derivative.
    """

    no_grad_bottoms = (2,)

    def __init__(self, layer, rng):
        super().__init__(layer, rng)
        p = self.param.contrastive_loss_param
        self.margin, self.legacy = float(p.margin), p.legacy_version

    def forward(self, a, b, y):
        num = a.shape[0]
        diff = (a - b).reshape(num, -1)
        dist_sq = (diff * diff).sum(1)
        similar = y.detach().to(a.device).reshape(-1).to(torch.int64) != 0
        if self.legacy:
            # relu's gradient is 0 at margin == d^2, matching Caffe's `mdist > 0` test.
            dissimilar = torch.relu(self.margin - dist_sq)
            return (torch.where(similar, dist_sq, dissimilar).sum() / num / 2,)
        dist = torch.sqrt(dist_sq.detach())
        mdist = self.margin - dist
        value = torch.where(similar, dist_sq.detach(), torch.clamp(mdist, min=0) ** 2)
        # d(dist_sq / 2)/da = (a - b), so weighting it by Caffe's beta reproduces its diff.
        beta = torch.where(mdist > 0, -mdist / (dist + 1e-4), torch.zeros_like(dist))
        surrogate = torch.where(similar, dist_sq, beta * dist_sq)
        return (_value_with_grad_of(value.sum(), surrogate.sum()) / num / 2,)


@register("HingeLoss")
class HingeLoss(CaffeLayer):
    """One-vs-all hinge: t_ij = -x_ij for the label class, x_ij otherwise; h = max(0, 1 + t);
    L1: sum(h) / N, L2: sum(h^2) / N (N = shape[0], classes = the rest flattened)."""

    no_grad_bottoms = (1,)

    def __init__(self, layer, rng):
        super().__init__(layer, rng)
        self.norm = self.param.hinge_loss_param.norm

    def forward(self, x, label):
        num = x.shape[0]
        flat = x.reshape(num, -1)
        label = label.detach().to(x.device).reshape(-1).to(torch.int64)
        sign = torch.ones_like(flat).scatter(1, label.unsqueeze(1), -1.0)
        # relu passes no gradient where 1 + t == 0, as Caffe's sign(0) == 0.
        margin = torch.relu(1 + flat * sign)
        if self.norm == caffe_pb2.HingeLossParameter.L2:
            return ((margin * margin).sum() / num,)
        return (margin.sum() / num,)


@register("MultinomialLogisticLoss")
class MultinomialLogisticLoss(CaffeLayer):
    """-sum_i log(max(p_i[label_i], 1e-20)) / N over probabilities p (N = shape[0]); the
    gradient at the label entry is -1 / max(p, 1e-20) / N, also where the clamp is active."""

    no_grad_bottoms = (1,)

    def forward(self, prob, label):
        num = prob.shape[0]
        flat = prob.reshape(num, -1)
        label = label.detach().to(prob.device).reshape(-1).to(torch.int64)
        picked = flat.gather(1, label.unsqueeze(1)).squeeze(1)
        clamped = torch.clamp(picked, min=LOG_THRESHOLD)
        value = -torch.log(clamped).sum()
        surrogate = -(picked / clamped.detach()).sum()
        return (_value_with_grad_of(value, surrogate) / num,)


@register("InfogainLoss")
class InfogainLoss(CaffeLayer):
    """Caffe master's InfogainLoss: softmax over infogain_loss_param.axis, then
    -sum_l H[label, l] * log(max(p_l, 1e-20)) over non-ignored positions / normalizer
    (loss_param.normalization; the legacy `normalize` is rejected, as in Caffe).

    H (C x C) is the third bottom when given, else the BlobProto file `source`. Gradient
    (Caffe's): p * rowsum(H)[label] - H[label]; none to labels or H. Optional second top:
    the softmax, without gradient.
    """

    no_grad_bottoms = (1, 2)

    def __init__(self, layer, rng):
        super().__init__(layer, rng)
        p = self.param.infogain_loss_param
        if self.param.loss_param.HasField("normalize"):
            raise LayerError(layer, "loss_param.normalize is deprecated for InfogainLoss; use "
                                    "normalization")
        self.axis = layer.attrs.axis
        self.ignore_label = _ignore_label(self.param.loss_param)
        self.normalization = self.param.loss_param.normalization
        infogain = None
        if len(layer.bottoms) < 3:
            if not p.source:
                raise LayerError(layer, "InfogainLoss needs a third bottom or "
                                        "infogain_loss_param.source")
            location = getattr(layer, "location", None)
            naming_file = location[0] if isinstance(location, tuple) else None
            path = resolve_path(p.source, naming_file, "infogain matrix", location)
            infogain = torch.from_numpy(np.asarray(read_blob_file(path), dtype=np.float32))
        # Not a Caffe blob (never saved in a .caffemodel), but moves with the module.
        self.register_buffer("infogain", infogain, persistent=False)

    def forward(self, x, label, infogain=None):
        outer, classes, inner, logits = _split_at_axis(x, self.axis)
        _, valid, safe = _labels(label, outer, inner, self.ignore_label, x.device, self.layer)
        h = (infogain if infogain is not None else self.infogain).detach()
        if h.numel() != classes * classes:
            raise LayerError(self.layer, f"infogain matrix has {h.numel()} entries, need "
                                         f"{classes} x {classes}")
        h = h.to(device=x.device, dtype=x.dtype).reshape(classes, classes)
        # Row H[label] for every position, laid out like the logits: (outer, C, inner).
        rows = h[safe].permute(0, 2, 1) * valid.to(x.dtype).unsqueeze(1)
        prob = F.softmax(logits, dim=1)
        value = -(rows * torch.log(torch.clamp(prob, min=LOG_THRESHOLD))).sum()
        surrogate = -(rows * F.log_softmax(logits, dim=1)).sum()
        loss = _value_with_grad_of(value, surrogate)
        loss = loss / _normalizer(self.normalization, outer, inner, valid.sum().to(x.dtype))
        if len(self.layer.tops) > 1:
            return loss, prob.detach().reshape(x.shape)
        return (loss,)


@register("Accuracy")
class Accuracy(CaffeLayer):
    """Share of non-ignored positions whose label is a hit (0-dim top; 0 when every label is
    ignored). Caffe master's rule: a hit when fewer than top_k OTHER classes score >= the
    true class's score, so a tie with the true score counts against it. The optional second
    top holds per-class accuracy (hits / occurrences; 0 for absent classes). No gradient."""

    no_grad_bottoms = (0, 1)

    def __init__(self, layer, rng):
        super().__init__(layer, rng)
        p = self.param.accuracy_param
        self.top_k, self.axis = p.top_k, layer.attrs.axis
        self.ignore_label = _ignore_label(p)

    def forward(self, x, label):
        outer, classes, inner, scores = _split_at_axis(x.detach(), self.axis)
        if self.top_k > classes:
            raise LayerError(self.layer, f"top_k {self.top_k} exceeds the {classes} classes")
        _, valid, safe = _labels(label, outer, inner, self.ignore_label, x.device, self.layer)
        true_score = scores.gather(1, safe.unsqueeze(1))
        # The true class itself is among the >= scores, hence the - 1.
        better = (scores >= true_score).sum(1) - 1
        hit = ((better < self.top_k) & valid).to(x.dtype)
        count = valid.sum().to(x.dtype)
        accuracy = torch.where(count > 0, hit.sum() / torch.clamp(count, min=1),
                               torch.zeros_like(count))
        if len(self.layer.tops) < 2:
            return (accuracy,)
        flat = safe.reshape(-1)
        occurrences = torch.zeros(classes, dtype=x.dtype, device=x.device)
        occurrences.scatter_add_(0, flat, valid.reshape(-1).to(x.dtype))
        hits = torch.zeros(classes, dtype=x.dtype, device=x.device)
        hits.scatter_add_(0, flat, hit.reshape(-1))
        per_class = torch.where(occurrences > 0, hits / torch.clamp(occurrences, min=1),
                                torch.zeros_like(hits))
        return accuracy, per_class
