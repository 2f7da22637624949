"""Caffe's learning-rate policies and per-parameter update rules (sgd_solver.cpp and friends).

Each rule is written as Caffe computes it, in Caffe's order, on one parameter's accumulated
gradient `diff` (already clipped, normalized by iter_size and regularized). It returns the
update that is then subtracted from the weights (Caffe's Blob::Update: data -= diff) and
mutates the rule's history tensors in place; the update may be a history tensor itself, so a
caller reads it and never changes it. Histories are listed in Caffe's .solverstate order.
"""

import math

import torch


def learning_rate(solver, iteration, current_step):
    """(rate, current_step) for the pre-increment iteration, like SGDSolver::GetLearningRate.

    current_step is the multistep position Caffe keeps (and stores in .solverstate): it moves
    at most one step per call. The policy names and their fields' checks are
    compiler.validate.LR_POLICIES, run before any work.
    """
    policy = solver.lr_policy
    base = solver.base_lr
    if policy == "fixed":
        return base, current_step
    if policy == "step":
        step = iteration // solver.stepsize
        return base * _power(solver.gamma, step), step
    if policy == "exp":
        return base * _power(solver.gamma, iteration), current_step
    if policy == "inv":
        return base * _power(1 + solver.gamma * iteration, -solver.power), current_step
    if policy == "multistep":
        if (current_step < len(solver.stepvalue)
                and iteration >= solver.stepvalue[current_step]):
            current_step += 1
        return base * _power(solver.gamma, current_step), current_step
    if policy == "poly":
        return base * _power(1.0 - iteration / solver.max_iter, solver.power), current_step
    if policy == "sigmoid":
        return base / (1.0 + _exp(-solver.gamma * (iteration - solver.stepsize))), \
            current_step
    raise ValueError(f"unknown lr_policy {policy!r}")


def _power(base, exponent):
    # C's pow overflows to inf where math.pow raises: a rate Caffe computes as inf stays inf.
    try:
        return math.pow(base, exponent)
    except OverflowError:
        return math.inf


def _exp(value):
    try:
        return math.exp(value)
    except OverflowError:
        return math.inf


class UpdateRule:
    """One solver type's ComputeUpdateValue. `histories` = number of Caffe history sets."""
    histories = 1

    def __init__(self, solver):
        self.solver = solver

    def update(self, diff, history, local_rate, iteration):
        raise NotImplementedError


class SGD(UpdateRule):
    def update(self, diff, history, local_rate, iteration):
        (h,) = history
        h.mul_(self.solver.momentum).add_(diff, alpha=local_rate)
        # The history is the update (Caffe copies it into diff); the caller only reads it, so
        # no copy (0.4 ms of the main job's ~50 ms step).
        return h


class Nesterov(UpdateRule):
    def update(self, diff, history, local_rate, iteration):
        (h,) = history
        momentum = self.solver.momentum
        previous = h.clone()
        h.mul_(momentum).add_(diff, alpha=local_rate)
        # Step back along the old momentum, then over-step along the new one.
        return h * (1 + momentum) - previous * momentum


class AdaGrad(UpdateRule):
    def update(self, diff, history, local_rate, iteration):
        (h,) = history
        h.add_(diff * diff)
        return local_rate * diff / (h.sqrt() + self.solver.delta)


class RMSProp(UpdateRule):
    def update(self, diff, history, local_rate, iteration):
        (h,) = history
        decay = self.solver.rms_decay
        h.mul_(decay).add_(diff * diff, alpha=1 - decay)
        return local_rate * diff / (h.sqrt() + self.solver.delta)


class AdaDelta(UpdateRule):
    histories = 2

    def update(self, diff, history, local_rate, iteration):
        gradients, updates = history
        momentum, delta = self.solver.momentum, self.solver.delta
        gradients.mul_(momentum).add_(diff * diff, alpha=1 - momentum)
        step = diff * ((updates + delta) / (gradients + delta)).sqrt()
        updates.mul_(momentum).add_(step * step, alpha=1 - momentum)
        return local_rate * step


class Adam(UpdateRule):
    histories = 2

    def update(self, diff, history, local_rate, iteration):
        m, v = history
        beta1, beta2 = self.solver.momentum, self.solver.momentum2
        t = iteration + 1
        correction = math.sqrt(1 - math.pow(beta2, t)) / (1 - math.pow(beta1, t))
        m.mul_(beta1).add_(diff, alpha=1 - beta1)
        v.mul_(beta2).add_(diff * diff, alpha=1 - beta2)
        return (local_rate * correction) * m / (v.sqrt() + self.solver.delta)


UPDATE_RULES = {"SGD": SGD, "Nesterov": Nesterov, "AdaGrad": AdaGrad, "RMSProp": RMSProp,
                "AdaDelta": AdaDelta, "Adam": Adam}


def clip_gradients(diffs, threshold):
    """Scale every diff by threshold / global L2 norm when that norm exceeds the threshold.
    Returns the norm (None when clipping is off, as with Caffe's default -1)."""
    if threshold < 0:
        return None
    if not diffs:
        return 0.0
    # Caffe's sumsq_diff: one float dot product per blob (BLAS, fast); the blobs' sums are
    # added in double here (Caffe adds them in float), all in one host sync.
    sums = torch.stack([torch.dot(d.reshape(-1), d.reshape(-1)) for d in diffs])
    norm = math.sqrt(float(sums.double().sum()))
    if norm > threshold:
        torch._foreach_mul_(diffs, threshold / norm)
    return norm


def regularize(diff, weights, weight_decay, decay_mult, kind):
    """Add Caffe's L2 (decay * w) or L1 (decay * sign(w)) term to one diff."""
    local_decay = weight_decay * decay_mult
    if local_decay == 0:
        return
    if kind == "L2":
        diff.add_(weights, alpha=local_decay)
    elif kind == "L1":
        diff.add_(torch.sign(weights), alpha=local_decay)
    else:
        raise ValueError(f"unknown regularization type {kind!r}")
