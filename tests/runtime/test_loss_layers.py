"""Loss layers and Accuracy against NumPy transcriptions of Caffe's Forward_cpu/Backward_cpu
loops, plus float64 gradcheck where Caffe's gradient is the exact derivative."""

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

from runtime.layers import loss
from compiler.errors import CompileError
from runtime.weights import write_blob_file
from support import compiled_layer

FLT_MIN = np.finfo(np.float32).tiny


def make(cls, type_name, params="", bottoms=("x", "label"), tops=("loss",), phase="TRAIN",
         shapes=()):
    """The unit, compiled for bottoms of `shapes` (units that read a compiled axis need them)."""
    text = (f'layer {{ name: "l" type: "{type_name}" '
            + "".join(f'bottom: "{b}" ' for b in bottoms)
            + "".join(f'top: "{t}" ' for t in tops) + f"{params} }}")
    layer = compiled_layer(text, shapes, [], [], phase)
    return cls(layer, torch.Generator().manual_seed(0))


def rand(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64)


def value_and_grad(layer, x, *rest):
    x = x.clone().requires_grad_(True)
    out = layer(x, *rest)[0]
    assert out.dim() == 0
    out.backward()
    return out.item(), x.grad.numpy()


# ---- SoftmaxWithLoss ----

def softmax_loss_reference(x, label, axis, ignore_label, mode):
    """Caffe's SoftmaxWithLossLayer forward/backward loops (master) in NumPy."""
    outer = int(np.prod(x.shape[:axis]))
    inner = int(np.prod(x.shape[axis + 1:]))
    classes = x.shape[axis]
    logits = x.reshape(outer, classes, inner)
    e = np.exp(logits - logits.max(1, keepdims=True))
    prob = e / e.sum(1, keepdims=True)
    labels = label.reshape(outer, inner)
    total, count = 0.0, 0
    diff = prob.copy()
    for i in range(outer):
        for j in range(inner):
            value = int(labels[i, j])
            if ignore_label is not None and value == ignore_label:
                diff[i, :, j] = 0
                continue
            total -= np.log(max(prob[i, value, j], FLT_MIN))
            diff[i, value, j] -= 1
            count += 1
    normalizer = {"FULL": outer * inner, "VALID": count, "BATCH_SIZE": outer,
                  "NONE": 1}[mode]
    normalizer = max(1.0, normalizer)
    return total / normalizer, (diff / normalizer).reshape(x.shape)


# A hand-made (N=2, C=3, H=4) case with class axis 1, two ignored positions (-1).
HAND_X = np.array([
    [[1.0, -0.5, 2.0, 0.0], [0.3, 0.2, -1.0, 1.5], [-2.0, 0.7, 0.1, 0.4]],
    [[0.9, 1.1, -0.3, 2.2], [-1.2, 0.0, 0.6, -0.8], [0.5, -0.4, 1.3, 0.2]],
])
HAND_LABEL = np.array([[0, 2, -1, 1], [1, -1, 2.7, 0]])  # 2.7 casts to 2, as static_cast<int>


@pytest.mark.parametrize("mode, loss_param", [
    ("VALID", "loss_param { ignore_label: -1 }"),
    ("VALID", "loss_param { ignore_label: -1 normalization: VALID }"),
    ("FULL", "loss_param { ignore_label: -1 normalization: FULL }"),
    ("BATCH_SIZE", "loss_param { ignore_label: -1 normalization: BATCH_SIZE }"),
    ("NONE", "loss_param { ignore_label: -1 normalization: NONE }"),
    ("BATCH_SIZE", "loss_param { ignore_label: -1 normalize: false }"),
    ("VALID", "loss_param { ignore_label: -1 normalize: true }"),
    ("FULL", "loss_param { ignore_label: -1 normalization: FULL normalize: false }"),
])
def test_softmax_loss_normalizations_on_a_hand_made_case(mode, loss_param):
    layer = make(loss.SoftmaxWithLoss, "SoftmaxWithLoss", loss_param, shapes=[(2, 3, 4), (2, 4)])
    value, grad = value_and_grad(layer, torch.tensor(HAND_X), torch.tensor(HAND_LABEL))
    ref_value, ref_grad = softmax_loss_reference(HAND_X, HAND_LABEL, 1, -1, mode)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-15)
    # Ignored positions get no gradient at all.
    assert not grad[0, :, 2].any() and not grad[1, :, 1].any()


def test_softmax_loss_normalizers_differ_as_expected():
    x, label = torch.tensor(HAND_X), torch.tensor(HAND_LABEL)
    values = {}
    for mode in ["VALID", "FULL", "BATCH_SIZE", "NONE"]:
        layer = make(loss.SoftmaxWithLoss, "SoftmaxWithLoss",
                     f"loss_param {{ ignore_label: -1 normalization: {mode} }}",
                     shapes=[(2, 3, 4), (2, 4)])
        values[mode] = layer(x, label)[0].item()
    # 6 valid of 8 positions, outer (batch) = 2.
    np.testing.assert_allclose(values["NONE"], 6 * values["VALID"])
    np.testing.assert_allclose(values["NONE"], 8 * values["FULL"])
    np.testing.assert_allclose(values["NONE"], 2 * values["BATCH_SIZE"])


def test_softmax_loss_on_time_major_sequences_axis_2():
    # LRCN: predictions (T, N, V) with softmax_param { axis: 2 }, labels (T, N), -1 = padding.
    x = rand(5, 3, 7)
    label = torch.tensor([[1, 4, 6], [0, 2, -1], [3, -1, -1], [5, -1, -1], [-1, -1, -1]],
                         dtype=torch.float64)
    layer = make(loss.SoftmaxWithLoss, "SoftmaxWithLoss",
                 "softmax_param { axis: 2 } loss_param { ignore_label: -1 }",
                 shapes=[(5, 3, 7), (5, 3)])
    value, grad = value_and_grad(layer, x, label)
    ref_value, ref_grad = softmax_loss_reference(x.numpy(), label.numpy(), 2, -1, "VALID")
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-15)
    assert not grad[4].any()


def test_softmax_loss_gradcheck_and_prob_top():
    layer = make(loss.SoftmaxWithLoss, "SoftmaxWithLoss",
                 "softmax_param { axis: -1 } loss_param { ignore_label: 0 }",
                 tops=("loss", "prob"), shapes=[(4, 2, 5), (4, 2)])
    x = rand(4, 2, 5).requires_grad_(True)
    label = torch.tensor([[0, 1], [2, 3], [4, 0], [1, 1]], dtype=torch.float64)
    assert gradcheck(lambda t: layer(t, label)[0], (x,), eps=1e-6, atol=1e-6)
    value, prob = layer(x, label)
    assert prob.shape == x.shape and not prob.requires_grad
    np.testing.assert_allclose(prob.sum(-1).numpy(), np.ones((4, 2)))


def test_softmax_loss_clamps_at_flt_min_with_caffe_gradient():
    for dtype in (torch.float32, torch.float64):
        layer = make(loss.SoftmaxWithLoss, "SoftmaxWithLoss", shapes=[(1, 2), (1,)])
        x = torch.tensor([[0.0, -200.0]], dtype=dtype, requires_grad=True)
        out = layer(x, torch.tensor([1.0]))[0]
        # float: p underflows to 0; double: p = e^-200 < FLT_MIN. Both clamp.
        np.testing.assert_allclose(out.item(), -np.log(np.float64(FLT_MIN)), rtol=1e-6)
        out.backward()
        # Caffe's gradient p - onehot, not the clamp's zero.
        np.testing.assert_allclose(x.grad.numpy(), [[1.0, -1.0]], atol=1e-7)


def test_softmax_loss_with_every_label_ignored_is_zero_not_nan():
    layer = make(loss.SoftmaxWithLoss, "SoftmaxWithLoss", "loss_param { ignore_label: -1 }",
                 shapes=[(2, 3), (2,)])
    value, grad = value_and_grad(layer, rand(2, 3), torch.tensor([-1.0, -1.0]))
    assert value == 0 and not grad.any()


def test_softmax_loss_label_count_must_match():
    with pytest.raises(CompileError, match="number of labels"):
        make(loss.SoftmaxWithLoss, "SoftmaxWithLoss", shapes=[(2, 3, 4), (2,)])
    layer = make(loss.SoftmaxWithLoss, "SoftmaxWithLoss", shapes=[(2, 3, 4), (2, 4)])
    with pytest.raises(ValueError, match="labels"):
        layer(rand(2, 3, 4), torch.zeros(2))


# ---- SigmoidCrossEntropyLoss ----

def sigmoid_ce_reference(x, t, ignore_label, mode):
    flat_x, flat_t = x.reshape(-1), t.reshape(-1)
    total, count = 0.0, 0
    diff = 1 / (1 + np.exp(-flat_x)) - flat_t
    for i in range(flat_x.size):
        if ignore_label is not None and int(flat_t[i]) == ignore_label:
            diff[i] = 0
            continue
        v = flat_x[i]
        total -= v * (flat_t[i] - (v >= 0)) - np.log(1 + np.exp(v - 2 * v * (v >= 0)))
        count += 1
    outer = x.shape[0]
    normalizer = max(1.0, {"FULL": x.size, "VALID": count, "BATCH_SIZE": outer,
                           "NONE": 1}[mode])
    return total / normalizer, (diff / normalizer).reshape(x.shape)


@pytest.mark.parametrize("mode, params", [
    ("BATCH_SIZE", ""),
    ("VALID", "loss_param { ignore_label: -1 normalization: VALID }"),
    ("VALID", "loss_param { ignore_label: -1 normalize: true }"),
    ("FULL", "loss_param { normalization: FULL }"),
])
def test_sigmoid_cross_entropy(mode, params):
    layer = make(loss.SigmoidCrossEntropyLoss, "SigmoidCrossEntropyLoss", params,
                 shapes=[(3, 4), (3, 4)])
    x = rand(3, 4) * 5
    x[0, 0] = 0.0  # Caffe's gradient at 0 is sigmoid(0) - t
    x[0, 1] = 60.0
    x[0, 2] = -60.0
    target = torch.tensor([[0, 1, 0, 0.3], [1, 1, -1, 0], [0.5, -1, 1, 0]],
                          dtype=torch.float64)
    ignore = -1 if "ignore_label" in params else None
    if ignore is None:
        target[target < 0] = 0
    value, grad = value_and_grad(layer, x, target)
    ref_value, ref_grad = sigmoid_ce_reference(x.numpy(), target.numpy(), ignore, mode)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-15)


def test_sigmoid_cross_entropy_gradcheck():
    layer = make(loss.SigmoidCrossEntropyLoss, "SigmoidCrossEntropyLoss",
                 shapes=[(3, 4), (3, 4)])
    x = rand(3, 4).requires_grad_(True)
    target = torch.rand(3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert gradcheck(lambda t: layer(t, target)[0], (x,), eps=1e-6, atol=1e-6)


# ---- EuclideanLoss / ContrastiveLoss / HingeLoss ----

def test_euclidean_loss():
    layer = make(loss.EuclideanLoss, "EuclideanLoss", bottoms=("a", "b"),
                 shapes=[(4, 3), (4, 3)])
    a, b = rand(4, 3), rand(4, 3, seed=1)
    np.testing.assert_allclose(layer(a, b)[0].item(),
                               ((a - b) ** 2).sum().item() / 4 / 2, rtol=1e-12)
    assert gradcheck(lambda s, t: layer(s, t)[0],
                     (a.requires_grad_(True), b.requires_grad_(True)), eps=1e-6, atol=1e-6)


def contrastive_reference(a, b, y, margin, legacy):
    """Caffe's ContrastiveLossLayer loops: (loss, diff wrt a); the diff wrt b is its negative."""
    num = a.shape[0]
    diff = (a - b).reshape(num, -1)
    dist_sq = (diff ** 2).sum(1)
    total = 0.0
    grad = np.zeros_like(diff)
    alpha = 1.0 / num
    for i in range(num):
        if int(y[i]):
            total += dist_sq[i]
            grad[i] = alpha * diff[i]
        elif legacy:
            total += max(margin - dist_sq[i], 0.0)
            if margin - dist_sq[i] > 0:
                grad[i] = -alpha * diff[i]
        else:
            dist = np.sqrt(dist_sq[i])
            total += max(margin - dist, 0.0) ** 2
            mdist = margin - dist
            if mdist > 0:
                grad[i] = -alpha * mdist / (dist + 1e-4) * diff[i]
    return total / num / 2, grad.reshape(a.shape)


@pytest.mark.parametrize("legacy", [False, True])
def test_contrastive_loss_matches_caffe_including_its_1e_4(legacy):
    params = f"contrastive_loss_param {{ margin: 2 legacy_version: {str(legacy).lower()} }}"
    layer = make(loss.ContrastiveLoss, "ContrastiveLoss", params, bottoms=("a", "b", "y"),
                 shapes=[(6, 3, 1, 1), (6, 3, 1, 1), (6, 1, 1, 1)])
    a, b = rand(6, 3, 1, 1) * 0.6, rand(6, 3, 1, 1, seed=1) * 0.6
    b[5] = a[5]  # a dissimilar pair at distance 0: Caffe's gradient stays finite (zero diff)
    y = torch.tensor([1, 0, 1, 0, 0, 0], dtype=torch.float64).reshape(6, 1, 1, 1)
    a_leaf, b_leaf = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
    out = layer(a_leaf, b_leaf, y)[0]
    out.backward()
    ref_value, ref_grad = contrastive_reference(a.numpy(), b.numpy(), y.reshape(-1).numpy(),
                                                2.0, legacy)
    np.testing.assert_allclose(out.item(), ref_value, rtol=1e-12)
    np.testing.assert_allclose(a_leaf.grad.numpy(), ref_grad, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(b_leaf.grad.numpy(), -ref_grad, rtol=1e-10, atol=1e-15)
    if legacy:
        assert gradcheck(lambda s, t: layer(s, t, y[:5])[0],
                         (a[:5].clone().requires_grad_(True), b[:5].clone().requires_grad_(True)),
                         eps=1e-6, atol=1e-6)


def hinge_reference(x, label, norm):
    num = x.shape[0]
    flat = x.reshape(num, -1).copy()
    for i in range(num):
        flat[i, int(label[i])] *= -1
    margin = np.maximum(0, 1 + flat)
    value = margin.sum() / num if norm == "L1" else (margin ** 2).sum() / num
    grad = np.sign(margin) if norm == "L1" else 2 * margin
    for i in range(num):
        grad[i, int(label[i])] *= -1
    return value, (grad / num).reshape(x.shape)


@pytest.mark.parametrize("norm", ["L1", "L2"])
def test_hinge_loss(norm):
    layer = make(loss.HingeLoss, "HingeLoss", f"hinge_loss_param {{ norm: {norm} }}",
                 shapes=[(4, 5), (4,)])
    x = rand(4, 5)
    x[(x + 1).abs() < 0.05] += 0.1  # away from the hinge
    x[(x - 1).abs() < 0.05] += 0.1
    label = torch.tensor([0, 3, 4, 1], dtype=torch.float64)
    value, grad = value_and_grad(layer, x, label)
    ref_value, ref_grad = hinge_reference(x.numpy(), label.numpy(), norm)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-12)
    assert gradcheck(lambda t: layer(t, label)[0], (x.requires_grad_(True),), eps=1e-6,
                     atol=1e-6)


# ---- MultinomialLogisticLoss / InfogainLoss ----

def test_multinomial_logistic_loss_with_its_clamp():
    layer = make(loss.MultinomialLogisticLoss, "MultinomialLogisticLoss", shapes=[(3, 3), (3,)])
    prob = torch.tensor([[0.2, 0.5, 0.3], [0.0, 0.9, 0.1], [0.6, 0.3, 0.1]],
                        dtype=torch.float64)
    label = torch.tensor([1, 0, 2], dtype=torch.float64)
    value, grad = value_and_grad(layer, prob, label)
    picked = np.array([0.5, 1e-20, 0.1])
    np.testing.assert_allclose(value, -np.log(picked).sum() / 3, rtol=1e-12)
    expected = np.zeros((3, 3))
    expected[[0, 1, 2], [1, 0, 2]] = -1 / picked / 3
    np.testing.assert_allclose(grad, expected, rtol=1e-12)


def infogain_reference(x, label, h, axis, ignore_label, mode):
    outer = int(np.prod(x.shape[:axis]))
    inner = int(np.prod(x.shape[axis + 1:]))
    classes = x.shape[axis]
    logits = x.reshape(outer, classes, inner)
    e = np.exp(logits - logits.max(1, keepdims=True))
    prob = e / e.sum(1, keepdims=True)
    labels = label.reshape(outer, inner)
    total, count = 0.0, 0
    diff = np.zeros_like(prob)
    for i in range(outer):
        for j in range(inner):
            value = int(labels[i, j])
            if ignore_label is not None and value == ignore_label:
                continue
            for c in range(classes):
                total -= h[value, c] * np.log(max(prob[i, c, j], 1e-20))
                diff[i, c, j] = prob[i, c, j] * h[value].sum() - h[value, c]
            count += 1
    normalizer = max(1.0, {"FULL": outer * inner, "VALID": count, "BATCH_SIZE": outer,
                           "NONE": 1}[mode])
    return total / normalizer, (diff / normalizer).reshape(x.shape)


def test_infogain_loss_with_matrix_bottom():
    layer = make(loss.InfogainLoss, "InfogainLoss",
                 "infogain_loss_param { axis: 1 } loss_param { ignore_label: 2 }",
                 bottoms=("x", "label", "H"), shapes=[(3, 4, 2), (3, 2), (4, 4)])
    x = rand(3, 4, 2)
    label = torch.tensor([[0, 1], [2, 3], [3, 0]], dtype=torch.float64)
    h = torch.rand(4, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    value, grad = value_and_grad(layer, x, label, h)
    ref_value, ref_grad = infogain_reference(x.numpy(), label.numpy(), h.numpy(), 1, 2,
                                             "VALID")
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-15)
    assert gradcheck(lambda t: layer(t, label, h)[0], (x.requires_grad_(True),), eps=1e-6,
                     atol=1e-6)


def test_infogain_loss_reads_its_matrix_file(tmp_path):
    path = tmp_path / "H.binaryproto"
    h = np.eye(3, dtype=np.float32) * 2
    write_blob_file(str(path), h.reshape(1, 1, 3, 3))
    layer = make(loss.InfogainLoss, "InfogainLoss",
                 f'infogain_loss_param {{ source: "{path}" }} '
                 f'loss_param {{ normalization: BATCH_SIZE }}', shapes=[(4, 3), (4,)])
    x = rand(4, 3)
    label = torch.tensor([0, 2, 1, 1], dtype=torch.float64)
    ref_value, _ = infogain_reference(x.numpy(), label.numpy(), h.astype(np.float64), 1, None,
                                      "BATCH_SIZE")
    np.testing.assert_allclose(layer(x.float(), label)[0].item(), ref_value, rtol=1e-5)


def test_infogain_rejects_legacy_normalize():
    with pytest.raises(ValueError, match="normalize"):
        make(loss.InfogainLoss, "InfogainLoss", "loss_param { normalize: true }",
             bottoms=("x", "label", "H"), shapes=[(2, 3), (2,), (3, 3)])


# ---- Accuracy ----

def accuracy_reference(x, label, axis, top_k, ignore_label):
    """Caffe master's AccuracyLayer::Forward_cpu loop (num_better_predictions)."""
    outer = int(np.prod(x.shape[:axis]))
    inner = int(np.prod(x.shape[axis + 1:]))
    classes = x.shape[axis]
    data = x.reshape(outer, classes, inner)
    labels = label.reshape(outer, inner)
    hits, count = 0, 0
    per_hits, per_nums = np.zeros(classes), np.zeros(classes)
    for i in range(outer):
        for j in range(inner):
            value = int(labels[i, j])
            if ignore_label is not None and value == ignore_label:
                continue
            per_nums[value] += 1
            true_score = data[i, value, j]
            better = -1
            for k in range(classes):
                if better >= top_k:
                    break
                better += data[i, k, j] >= true_score
            if better < top_k:
                hits += 1
                per_hits[value] += 1
            count += 1
    per_class = np.where(per_nums > 0, per_hits / np.maximum(per_nums, 1), 0)
    return (hits / count if count else 0.0), per_class


def test_accuracy_ties_count_against_the_true_class():
    layer = make(loss.Accuracy, "Accuracy", tops=("acc",), shapes=[(3, 3), (3,)])
    x = torch.tensor([[0.5, 0.5, 0.0], [0.1, 0.7, 0.7], [0.2, 0.9, 0.3]])
    label = torch.tensor([0.0, 2.0, 1.0])
    # Rows 0 and 1 tie with another class: a miss at top_k 1 (Caffe master), whichever
    # index is larger. Row 2 is a clean hit.
    np.testing.assert_allclose(layer(x, label)[0].item(), 1 / 3)
    top2 = make(loss.Accuracy, "Accuracy", "accuracy_param { top_k: 2 }", tops=("acc",),
                shapes=[(3, 3), (3,)])
    assert top2(x, label)[0].item() == 1.0


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_accuracy_top_k_ignore_and_per_class_against_caffe_loop(top_k):
    layer = make(loss.Accuracy, "Accuracy",
                 f"accuracy_param {{ top_k: {top_k} axis: 2 ignore_label: -1 }}",
                 tops=("acc", "per_class"), shapes=[(4, 3, 5), (4, 3)])
    x = torch.randint(0, 3, (4, 3, 5), generator=torch.Generator().manual_seed(top_k))
    x = x.to(torch.float64)  # small integers: many ties
    label = torch.tensor([[0, 1, -1], [4, 4, 2], [3, -1, -1], [1, 0, 0]],
                         dtype=torch.float64)
    acc, per_class = layer(x, label)
    ref_acc, ref_per_class = accuracy_reference(x.numpy(), label.numpy(), 2, top_k, -1)
    assert acc.dim() == 0
    np.testing.assert_allclose(acc.item(), ref_acc)
    np.testing.assert_allclose(per_class.numpy(), ref_per_class)


def test_accuracy_with_every_label_ignored_is_zero():
    layer = make(loss.Accuracy, "Accuracy", "accuracy_param { ignore_label: 7 }",
                 tops=("acc",), shapes=[(2, 3), (2,)])
    assert layer(rand(2, 3), torch.tensor([7.0, 7.0]))[0].item() == 0.0


def test_accuracy_top_k_above_classes_is_an_error():
    with pytest.raises(CompileError, match="top_k"):
        make(loss.Accuracy, "Accuracy", "accuracy_param { top_k: 4 }", tops=("acc",),
             shapes=[(2, 3), (2,)])


def test_labels_are_declared_gradient_free():
    assert loss.SoftmaxWithLoss.no_grad_bottoms == (1,)
    assert loss.SigmoidCrossEntropyLoss.no_grad_bottoms == (1,)
    assert loss.ContrastiveLoss.no_grad_bottoms == (2,)
    assert loss.InfogainLoss.no_grad_bottoms == (1, 2)
    assert loss.Accuracy.no_grad_bottoms == (0, 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_losses_run_on_cuda():
    x = rand(5, 3, 7).cuda().requires_grad_(True)
    label = torch.randint(-1, 7, (5, 3), generator=torch.Generator().manual_seed(0)).double()
    layer = make(loss.SoftmaxWithLoss, "SoftmaxWithLoss",
                 "softmax_param { axis: 2 } loss_param { ignore_label: -1 }",
                 shapes=[(5, 3, 7), (5, 3)])
    out = layer(x, label.cuda())[0]
    out.backward()
    ref_value, ref_grad = softmax_loss_reference(x.detach().cpu().numpy(), label.numpy(), 2, -1,
                                                 "VALID")
    np.testing.assert_allclose(out.item(), ref_value, rtol=1e-10)
    np.testing.assert_allclose(x.grad.cpu().numpy(), ref_grad, rtol=1e-8, atol=1e-12)
    acc = make(loss.Accuracy, "Accuracy", "accuracy_param { axis: 2 ignore_label: -1 }",
               tops=("acc", "per"), shapes=[(5, 3, 7), (5, 3)])
    a, per = acc(x, label.cuda())
    ref_acc, ref_per = accuracy_reference(x.detach().cpu().numpy(), label.numpy(), 2, 1, -1)
    np.testing.assert_allclose(a.item(), ref_acc)
    np.testing.assert_allclose(per.cpu().numpy(), ref_per)


def test_registry_names():
    from runtime.layers.registry import unit_for
    for name in ["SoftmaxWithLoss", "SigmoidCrossEntropyLoss", "EuclideanLoss",
                 "ContrastiveLoss", "HingeLoss", "MultinomialLogisticLoss", "InfogainLoss",
                 "Accuracy"]:
        assert unit_for(name) is getattr(loss, name)
