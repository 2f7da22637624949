"""A Python loss layer (pycaffe's pyloss.EuclideanLossLayer pattern; its module is written to the
working directory, which is on PYTHONPATH as Caffe needs) in a linear-regression net:
its loss and gradients checked against NumPy, then trained with SGDSolver."""
import numpy as np

import caffe

with open("pyloss.py", "w") as f:
    f.write('''
import caffe
import numpy as np


class EuclideanLossLayer(caffe.Layer):
    def setup(self, bottom, top):
        if len(bottom) != 2:
            raise Exception("Need two inputs to compute distance.")
        self.scale = float(self.param_str or 1)

    def reshape(self, bottom, top):
        if bottom[0].count != bottom[1].count:
            raise Exception("Inputs must have the same dimension.")
        self.diff = np.zeros_like(bottom[0].data, dtype=np.float32)
        top[0].reshape(1)

    def forward(self, bottom, top):
        self.diff[...] = bottom[0].data - bottom[1].data
        top[0].data[...] = self.scale * np.sum(self.diff ** 2) / bottom[0].num / 2.

    def backward(self, top, propagate_down, bottom):
        for i in range(2):
            if not propagate_down[i]:
                continue
            sign = 1 if i == 0 else -1
            bottom[i].diff[...] = self.scale * sign * self.diff / bottom[i].num
''')

with open("linreg.prototxt", "w") as f:
    f.write('''name: "LinearRegression"
layer { type: "Input" name: "x" top: "x" input_param { shape { dim: 10 dim: 3 } } }
layer { type: "Input" name: "y" top: "y" input_param { shape { dim: 10 dim: 2 } } }
layer { type: "InnerProduct" name: "ip" bottom: "x" top: "ip"
  inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
layer { type: "Python" name: "loss" bottom: "ip" bottom: "y" top: "loss"
  python_param { module: "pyloss" layer: "EuclideanLossLayer" param_str: "2" }
  loss_weight: 1 }
''')
with open("solver.prototxt", "w") as f:
    f.write('net: "linreg.prototxt"\nbase_lr: 0.1\nlr_policy: "fixed"\nmomentum: 0.5\n'
            'max_iter: 100\ndisplay: 0\nsnapshot_prefix: "linreg"\n')

rng = np.random.RandomState(1)
x = rng.randn(10, 3).astype(np.float32)
true_w = np.array([[1.0, -2.0, 0.5], [0.0, 3.0, 1.0]], np.float32)
y = x @ true_w.T + 0.25

net = caffe.Net("linreg.prototxt", caffe.TRAIN)
assert net.layers[3].type == "Python" and isinstance(net.layers[3], caffe.Layer)
assert net.layers[3].scale == 2.0        # the layer object is the user's own instance
net.blobs["x"].data[...] = x
net.blobs["y"].data[...] = y
loss = net.forward()["loss"].item()
w, b = net.params["ip"][0].data.copy(), net.params["ip"][1].data.copy()
prediction = x @ w.T + b
np.testing.assert_allclose(loss, 2 * np.sum((prediction - y) ** 2) / 10 / 2, rtol=1e-5)
net.backward()
dip = 2 * (prediction - y) / 10
np.testing.assert_allclose(net.blobs["ip"].diff, dip, rtol=1e-5, atol=1e-7)
np.testing.assert_allclose(net.params["ip"][0].diff, dip.T @ x, rtol=1e-5, atol=1e-6)
np.testing.assert_allclose(net.params["ip"][1].diff, dip.sum(0), rtol=1e-5, atol=1e-6)
np.testing.assert_allclose(net.blobs["x"].diff, 0)   # an input needs no backward by default

solver = caffe.SGDSolver("solver.prototxt")
solver.net.blobs["x"].data[...] = x
solver.net.blobs["y"].data[...] = y
solver.solve()
assert solver.iter == 100
np.testing.assert_allclose(solver.net.params["ip"][0].data, true_w, atol=1e-2)
np.testing.assert_allclose(solver.net.params["ip"][1].data, [0.25, 0.25], atol=1e-2)
assert solver.net.forward()["loss"].item() < 1e-4
print("OK")
