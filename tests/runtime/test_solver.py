"""runtime.Solver against a NumPy transcription of Caffe's Solver::Step / SGDSolver on a net
whose gradients have a closed form, plus snapshots, resume and the lrcn-train tool."""

import math
import os

import h5py
import numpy as np
import pytest
import torch

from runtime.solver import Solver
from runtime.updates import learning_rate

B, D, K, ROWS = 4, 3, 2, 12

# z = (x W^T + b) + x W^T (W shared by "ip" and "ip_twin") + x F^T (F frozen: lr_mult 0)
# loss = EuclideanLoss(z, y) = sum((z - y)^2) / (2 B)
NET = '''
name: "linear"
layer { name: "data" type: "HDF5Data" top: "x" top: "y"
        hdf5_data_param { source: "LIST" batch_size: 4 } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "a"
        param { name: "W" lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 }
                              bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "ip_twin" type: "InnerProduct" bottom: "x" top: "c"
        param { name: "W" lr_mult: 1 decay_mult: 1 }
        inner_product_param { num_output: 2 bias_term: false } }
layer { name: "frozen" type: "InnerProduct" bottom: "x" top: "e" param { lr_mult: 0 }
        inner_product_param { num_output: 2 bias_term: false
                              weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "c" bottom: "e" top: "z" }
layer { name: "loss" type: "EuclideanLoss" bottom: "z" bottom: "y" top: "loss" }
'''


@pytest.fixture
def problem(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(ROWS, D)).astype(np.float32)
    y = rng.normal(size=(ROWS, K)).astype(np.float32)
    with h5py.File(tmp_path / "data.h5", "w") as handle:
        handle["x"], handle["y"] = x, y
    (tmp_path / "list.txt").write_text(str(tmp_path / "data.h5") + "\n")
    (tmp_path / "net.prototxt").write_text(NET.replace("LIST", str(tmp_path / "list.txt")))
    return tmp_path, x, y


def write_solver(folder, **fields):
    lines = [f'net: "{folder / "net.prototxt"}"', f'snapshot_prefix: "{folder / "snap"}"',
             "random_seed: 5", "snapshot_after_train: false"]
    fields.setdefault("display", 0)
    for key, value in fields.items():
        if isinstance(value, (list, tuple)):
            lines += [f"{key}: {v}" for v in value]
        else:
            lines.append(f"{key}: {value}" if not isinstance(value, str)
                         else f'{key}: "{value}"')
    path = folder / "solver.prototxt"
    path.write_text("\n".join(lines) + "\n")
    return path


def numpy_training(solver, W, b, F, x, y, iterations):
    """Caffe's Step on the linear net, in float64 NumPy: returns W, b after `iterations`."""
    p = solver.param
    hW, hb = np.zeros((2,) + W.shape), np.zeros((2,) + b.shape)
    step, batch = 0, 0
    for it in range(iterations):
        gW, gb = np.zeros_like(W), np.zeros_like(b)
        for _ in range(p.iter_size):
            rows = [(batch * B + r) % ROWS for r in range(B)]
            batch += 1
            xb, yb = x[rows].astype(np.float64), y[rows].astype(np.float64)
            z = xb @ W.T + b + xb @ W.T + xb @ F.T
            dz = (z - yb) / B
            gW += 2 * dz.T @ xb       # both layers sharing W contribute
            gb += dz.sum(0)
        gF = np.zeros_like(F)         # lr_mult 0: Caffe computes no diff for F
        if p.clip_gradients >= 0:
            norm = math.sqrt((gW ** 2).sum() + (gb ** 2).sum() + (gF ** 2).sum())
            if norm > p.clip_gradients:
                gW, gb = gW * p.clip_gradients / norm, gb * p.clip_gradients / norm
        gW, gb = gW / p.iter_size, gb / p.iter_size
        decay = p.weight_decay
        gW = gW + (decay * W if p.regularization_type == "L2" else decay * np.sign(W))
        rate, step = learning_rate(p, it, step)
        W = W - reference_update(p, gW, hW, rate * 1, it)
        b = b - reference_update(p, gb, hb, rate * 2, it)
    return W, b


def reference_update(p, g, h, rate, it):
    m = p.momentum
    if p.type == "SGD":
        h[0] = rate * g + m * h[0]
        return h[0].copy()
    if p.type == "Nesterov":
        old = h[0].copy()
        h[0] = rate * g + m * h[0]
        return (1 + m) * h[0] - m * old
    if p.type == "AdaGrad":
        h[0] += g * g
        return rate * g / (np.sqrt(h[0]) + p.delta)
    if p.type == "RMSProp":
        h[0] = (1 - p.rms_decay) * g * g + p.rms_decay * h[0]
        return rate * g / (np.sqrt(h[0]) + p.delta)
    if p.type == "AdaDelta":
        h[0] = (1 - m) * g * g + m * h[0]
        s = g * np.sqrt((h[1] + p.delta) / (h[0] + p.delta))
        h[1] = (1 - m) * s * s + m * h[1]
        return rate * s
    if p.type == "Adam":
        t = it + 1
        corr = math.sqrt(1 - p.momentum2 ** t) / (1 - m ** t)
        h[0] = (1 - m) * g + m * h[0]
        h[1] = (1 - p.momentum2) * g * g + p.momentum2 * h[1]
        return rate * corr * h[0] / (np.sqrt(h[1]) + p.delta)
    raise AssertionError(p.type)


def run_and_compare(problem, iterations=6, **fields):
    folder, x, y = problem
    solver = Solver(write_solver(folder, **fields), log=lambda line: None)
    W0 = solver.net.params["ip"][0].data.astype(np.float64).copy()
    b0 = solver.net.params["ip"][1].data.astype(np.float64).copy()
    F = solver.net.params["frozen"][0].data.astype(np.float64).copy()
    solver.step(iterations)
    W, b = numpy_training(solver, W0, b0, F, x, y, iterations)
    np.testing.assert_allclose(solver.net.params["ip"][0].data, W, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(solver.net.params["ip"][1].data, b, rtol=2e-5, atol=2e-6)
    np.testing.assert_array_equal(solver.net.params["frozen"][0].data, F.astype(np.float32))
    return solver


# An lr change under momentum at iteration 3 (step policy), iter_size 2, clipping that really
# clips, L2 and L1 with decay_mult, a shared W and a frozen F.
COMMON = dict(base_lr=0.05, lr_policy="step", gamma=0.5, stepsize=3, iter_size=2,
              clip_gradients=1.5, weight_decay=0.01)


@pytest.mark.parametrize("kind, extra", [
    ("SGD", dict(momentum=0.9)), ("Nesterov", dict(momentum=0.9)),
    ("AdaGrad", dict(delta=1e-6)), ("RMSProp", dict(rms_decay=0.9, delta=1e-6)),
    ("AdaDelta", dict(momentum=0.9, delta=1e-6, base_lr=1.0)),
    ("Adam", dict(momentum=0.9, momentum2=0.999, delta=1e-8)),
])
@pytest.mark.parametrize("regularization", ["L2", "L1"])
def test_every_solver_type_matches_caffe_equations(problem, kind, extra, regularization):
    fields = dict(COMMON, type=kind, regularization_type=regularization, **extra)
    run_and_compare(problem, **fields)


@pytest.mark.parametrize("policy", [
    dict(lr_policy="fixed"), dict(lr_policy="exp", gamma=0.9),
    dict(lr_policy="inv", gamma=0.1, power=0.75), dict(lr_policy="multistep", gamma=0.3,
                                                       stepvalue=[2, 4]),
    dict(lr_policy="poly", power=1.5, max_iter=10), dict(lr_policy="sigmoid", gamma=0.5,
                                                         stepsize=3),
])
def test_every_lr_policy_in_the_loop(problem, policy):
    run_and_compare(problem, base_lr=0.05, momentum=0.9, **policy)


def test_clipping_is_logged_when_it_clips(problem):
    folder, _, _ = problem
    lines = []
    solver = Solver(write_solver(folder, base_lr=0.01, lr_policy="fixed", clip_gradients=0.01,
                                 display=1),
                    log=lines.append)
    solver.step(1)
    assert any(line.startswith("Gradient clipping: scaling down gradients") for line in lines)
    assert any(line.startswith("Iteration 0, lr = 0.01") for line in lines)


def losses_of(solver, iterations):
    seen = []
    solver.callbacks.append(lambda s, outputs: seen.append(outputs.loss.item()))
    solver.step(iterations)
    return seen


def test_snapshot_and_resume_reproduce_the_uninterrupted_run(problem):
    folder, _, _ = problem
    fields = dict(base_lr=0.05, momentum=0.9, type="Adam", momentum2=0.999, lr_policy="multistep",
                  gamma=0.5, stepvalue=[3], delta=1e-8)
    straight = losses_of(Solver(write_solver(folder, **fields), log=lambda _: None), 8)
    first = Solver(write_solver(folder, **fields), log=lambda _: None)
    part = losses_of(first, 5)
    model, state = first.snapshot()
    assert os.path.basename(model) == "snap_iter_5.caffemodel"
    assert os.path.basename(state) == "snap_iter_5.solverstate"
    resumed = Solver(write_solver(folder, **fields), log=lambda _: None)
    resumed.restore(state)
    assert resumed.iter == 5 and resumed.current_step == first.current_step
    rest = losses_of(resumed, 3)
    assert part + rest == straight            # exactly, not approximately


def test_solverstate_is_caffe_readable(problem):
    from lrcn_proto import caffe_pb2
    folder, _, _ = problem
    solver = Solver(write_solver(folder, base_lr=0.05, lr_policy="fixed", momentum=0.9),
                    log=lambda _: None)
    solver.step(2)
    _, state_file = solver.snapshot()
    state = caffe_pb2.SolverState()
    state.ParseFromString(open(state_file, "rb").read())
    assert state.iter == 2 and state.learned_net.endswith("snap_iter_2.caffemodel")
    assert len(state.history) == len(solver.learnable)


def test_every_corpus_solver_loads_with_notes(corpus_dir):
    import pathlib
    import compiler
    from compiler.validate import LR_POLICIES
    from runtime.solver import solver_notes
    from runtime.updates import UPDATE_RULES
    solvers = sorted(pathlib.Path(corpus_dir).rglob("*solver*.prototxt"))
    assert len(solvers) >= 25
    for path in solvers:
        param = compiler.upgrade(compiler.load_file(path, "solver").message)
        assert param.type in UPDATE_RULES, path
        assert param.lr_policy in LR_POLICIES, path
        for note in solver_notes(param):
            assert ":" in note
