"""Solver callbacks feeding each iteration's batch and reading gradients before the update
(checked against Adam's rule), get_solver and the solver classes, test nets, and
snapshot / restore resuming to the same weights."""
import os

import numpy as np

import caffe

with open("net.prototxt", "w") as f:
    f.write('''name: "regression"
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 8 dim: 4 } } }
layer { name: "y" type: "Input" top: "y" input_param { shape { dim: 8 dim: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip"
  inner_product_param { num_output: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "y" top: "loss" }
''')
SOLVER = '''net: "net.prototxt"
type: "%s"
base_lr: 0.05
momentum: 0.9
momentum2: 0.999
lr_policy: "fixed"
max_iter: 40
display: 0
random_seed: 7
snapshot_prefix: "snap/reg"
test_iter: 1
test_interval: 20
'''
with open("adam.prototxt", "w") as f:
    f.write(SOLVER % "Adam")
with open("sgd.prototxt", "w") as f:
    f.write(SOLVER % "SGD")

rng = np.random.RandomState(0)
X = rng.randn(80, 4).astype(np.float32)
Y = (X @ np.array([[1.0], [-1.0], [0.5], [2.0]], np.float32)).astype(np.float32)


def attach(solver, events=None):
    def on_start():
        i = solver.iter % 10
        solver.net.blobs["x"].data[...] = X[8 * i:8 * i + 8]
        solver.net.blobs["y"].data[...] = Y[8 * i:8 * i + 8]
        if events is not None:
            events.append(("start", solver.iter))

    def on_gradients_ready():
        if events is not None:
            events.append(("gradients", solver.iter,
                           solver.net.params["ip"][0].data.copy(),
                           solver.net.params["ip"][0].diff.copy()))
    solver.add_callback(on_start, on_gradients_ready)


assert isinstance(caffe.get_solver("adam.prototxt"), caffe.AdamSolver)
assert isinstance(caffe.get_solver("sgd.prototxt"), caffe.SGDSolver)
os.makedirs("snap", exist_ok=True)

solver = caffe.AdamSolver("sgd.prototxt")       # the class decides the rule, as in Caffe
events = []
attach(solver, events)
solver.step(1)
assert [e[:2] for e in events] == [("start", 0), ("gradients", 0)]
_, _, w0, g0 = events[1]
x0, y0 = X[:8], Y[:8]
grad = ((x0 @ w0.T - y0) / 8).T @ x0     # EuclideanLoss: sum of squares / 2N
np.testing.assert_allclose(g0, grad, rtol=1e-4, atol=1e-6)
m, v = 0.1 * g0, 0.001 * g0 ** 2
step = 0.05 * np.sqrt(1 - 0.999) / (1 - 0.9) * m / (np.sqrt(v) + 1e-8)
np.testing.assert_allclose(solver.net.params["ip"][0].data, w0 - step, rtol=1e-4, atol=1e-6)

solver.step(19)
assert solver.iter == 20 and len(events) == 40
solver.snapshot()
assert os.path.exists("snap/reg_iter_20.caffemodel")
assert os.path.exists("snap/reg_iter_20.solverstate")
solver.step(20)                      # tests at iteration 20 first
test_loss = float(solver.test_nets[0].blobs["loss"].data)
assert np.isfinite(test_loss)
final = solver.net.params["ip"][0].data.copy()
first_loss = float(((X[:8] @ w0.T - Y[:8]) ** 2).sum() / 16)
assert float(solver.net.blobs["loss"].data) < 0.1 * first_loss

resumed = caffe.AdamSolver("sgd.prototxt")
attach(resumed)
resumed.restore("snap/reg_iter_20.solverstate")
assert resumed.iter == 20
resumed.step(20)
np.testing.assert_array_equal(resumed.net.params["ip"][0].data, final)
np.testing.assert_allclose(resumed.lr, 0.05)
print("OK")
