"""Caffe's update rules and lr policies against NumPy transcriptions of sgd_solver.cpp & co."""

import math

import numpy as np
import pytest
import torch

from lrcn_proto import caffe_pb2
from runtime.updates import (UPDATE_RULES, clip_gradients, learning_rate, regularize)


def solver(**fields):
    return caffe_pb2.SolverParameter(**fields)


# --- learning-rate policies -------------------------------------------------------------------

@pytest.mark.parametrize("fields, iteration, expected", [
    (dict(lr_policy="fixed", base_lr=0.1), 1234, 0.1),
    (dict(lr_policy="step", base_lr=0.01, gamma=0.5, stepsize=100), 99, 0.01),
    (dict(lr_policy="step", base_lr=0.01, gamma=0.5, stepsize=100), 100, 0.005),
    (dict(lr_policy="step", base_lr=0.01, gamma=0.5, stepsize=100), 250, 0.0025),
    (dict(lr_policy="exp", base_lr=0.1, gamma=0.99), 10, 0.1 * 0.99 ** 10),
    (dict(lr_policy="inv", base_lr=0.01, gamma=1e-4, power=0.75), 500,
     0.01 * (1 + 1e-4 * 500) ** -0.75),
    (dict(lr_policy="poly", base_lr=0.1, power=2, max_iter=1000), 250, 0.1 * 0.75 ** 2),
    (dict(lr_policy="sigmoid", base_lr=0.1, gamma=-0.01, stepsize=300), 100,
     0.1 / (1 + math.exp(0.01 * (100 - 300)))),
])
def test_lr_policies(fields, iteration, expected):
    # Solver fields are float32 in caffe.proto, as in Caffe: compare at float32 precision.
    rate, _ = learning_rate(solver(**fields), iteration, 0)
    assert rate == pytest.approx(expected, rel=1e-6)


def test_multistep_moves_one_step_per_call_and_keeps_position():
    param = solver(lr_policy="multistep", base_lr=1.0, gamma=0.1, stepvalue=[3, 5])
    step, rates = 0, []
    for iteration in range(7):
        rate, step = learning_rate(param, iteration, step)
        rates.append(rate)
    assert rates == pytest.approx([1, 1, 1, 0.1, 0.1, 0.01, 0.01])
    # Resuming at iteration 6 with the stored step continues exactly.
    assert learning_rate(param, 6, 2) == (pytest.approx(0.01), 2)


# --- NumPy references of ComputeUpdateValue ---------------------------------------------------

def numpy_rule(kind, p, g, hist, rate, it):
    # p is the SolverParameter: its float32 field values are what Caffe computes with.
    m, m2, delta, decay = p.momentum, p.momentum2, p.delta, p.rms_decay
    if kind == "SGD":
        hist[0] = rate * g + m * hist[0]
        return hist[0].copy()
    if kind == "Nesterov":
        old = hist[0].copy()
        hist[0] = rate * g + m * hist[0]
        return (1 + m) * hist[0] - m * old
    if kind == "AdaGrad":
        hist[0] = hist[0] + g * g
        return rate * g / (np.sqrt(hist[0]) + delta)
    if kind == "RMSProp":
        hist[0] = (1 - decay) * g * g + decay * hist[0]
        return rate * g / (np.sqrt(hist[0]) + delta)
    if kind == "AdaDelta":
        hist[0] = (1 - m) * g * g + m * hist[0]
        step = g * np.sqrt((hist[1] + delta) / (hist[0] + delta))
        hist[1] = (1 - m) * step * step + m * hist[1]
        return rate * step
    if kind == "Adam":
        t = it + 1
        corr = math.sqrt(1 - m2 ** t) / (1 - m ** t)
        hist[0] = (1 - m) * g + m * hist[0]
        hist[1] = (1 - m2) * g * g + m2 * hist[1]
        return rate * corr * hist[0] / (np.sqrt(hist[1]) + delta)
    raise AssertionError(kind)


SETTINGS = {
    "SGD": dict(momentum=0.9), "Nesterov": dict(momentum=0.9),
    "AdaGrad": dict(momentum=0.0, delta=1e-6), "RMSProp": dict(momentum=0.0, rms_decay=0.95,
                                                               delta=1e-6),
    "AdaDelta": dict(momentum=0.95, delta=1e-6), "Adam": dict(momentum=0.9, momentum2=0.999,
                                                              delta=1e-8),
}


@pytest.mark.parametrize("kind", sorted(UPDATE_RULES))
def test_update_rule_matches_numpy_over_steps_with_lr_change(kind):
    settings = SETTINGS[kind]
    param = solver(type=kind, **settings)
    rule = UPDATE_RULES[kind](param)
    rng = np.random.default_rng(3)
    weights = rng.normal(size=(4, 5))
    torch_weights = torch.tensor(weights)
    history = [torch.zeros(4, 5, dtype=torch.float64) for _ in range(rule.histories)]
    np_history = [np.zeros((4, 5)) for _ in range(rule.histories)]
    for it in range(6):
        g = rng.normal(size=(4, 5))
        rate = 0.1 if it < 3 else 0.02          # an lr change under momentum
        update = rule.update(torch.tensor(g), history, rate, it)
        torch_weights -= update
        weights = weights - numpy_rule(kind, param, g, np_history, rate, it)
        np.testing.assert_allclose(torch_weights.numpy(), weights, rtol=1e-12, atol=1e-12)
        for ours, reference in zip(history, np_history):
            np.testing.assert_allclose(ours.numpy(), reference, rtol=1e-12, atol=1e-14)


def test_sgd_differs_from_pytorch_sgd_after_an_lr_change():
    # Caffe: v = lr*g + mu*v ; PyTorch: v = mu*v + g, w -= lr*v. Equal until lr changes.
    rule = UPDATE_RULES["SGD"](solver(momentum=0.9))
    history = [torch.zeros(1, dtype=torch.float64)]
    g = torch.ones(1, dtype=torch.float64)
    rule.update(g, history, 1.0, 0)
    caffe_second = float(rule.update(g, history, 0.1, 1))
    pytorch_v = 0.9 * 1.0 + 1.0
    assert caffe_second == pytest.approx(0.1 + 0.9 * 1.0)
    assert caffe_second != pytest.approx(0.1 * pytorch_v)


def test_clip_gradients_scales_by_global_norm_only_when_exceeded():
    a, b = torch.tensor([3.0, 0.0]), torch.tensor([[0.0, 4.0]])
    norm = clip_gradients([a, b], 10.0)
    assert norm == pytest.approx(5.0) and a.tolist() == [3.0, 0.0]
    norm = clip_gradients([a, b], 2.5)
    assert norm == pytest.approx(5.0)   # measured before scaling
    assert a.tolist() == pytest.approx([1.5, 0.0]) and b[0].tolist() == pytest.approx([0.0, 2.0])
    assert clip_gradients([a], -1) is None


def test_regularization_l1_l2_with_decay_mult():
    w = torch.tensor([-2.0, 0.0, 3.0])
    d = torch.zeros(3)
    regularize(d, w, 0.1, 2.0, "L2")
    assert d.tolist() == pytest.approx([-0.4, 0.0, 0.6])
    d = torch.zeros(3)
    regularize(d, w, 0.1, 2.0, "L1")
    assert d.tolist() == pytest.approx([-0.2, 0.0, 0.2])
    d = torch.ones(3)
    regularize(d, w, 0.1, 0.0, "L2")
    assert d.tolist() == [1.0, 1.0, 1.0]
