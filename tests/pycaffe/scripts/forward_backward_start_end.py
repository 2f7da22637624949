"""forward / backward over whole nets and slices (start=, end=), input and output diffs given
as keyword arguments, a blob read by two layers (its diff is the sum), net hooks, checked
against NumPy."""
import numpy as np

import caffe

NET = '''name: "fanout"
force_backward: true
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 3 } } }
%s
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.5 }
                        bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "relu" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2a" type: "InnerProduct" bottom: "ip1" top: "ip2a"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "ip2b" type: "InnerProduct" bottom: "ip1" top: "ip2b"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "sum" type: "Eltwise" bottom: "ip2a" bottom: "ip2b" top: "sum" }
%s
'''
with open("train.prototxt", "w") as f:
    f.write(NET % ('layer { name: "label" type: "Input" top: "label" '
                   'input_param { shape { dim: 4 } } }',
                   'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "sum" '
                   'bottom: "label" top: "loss" }'))
with open("deploy.prototxt", "w") as f:
    f.write(NET % ("", ""))

rng = np.random.RandomState(0)
x = rng.randn(4, 3).astype(np.float32)
label = np.array([0, 2, 1, 2], np.float32)

net = caffe.Net("train.prototxt", caffe.TRAIN)
assert net.inputs == ["data", "label"] and net.outputs == ["loss"]
seen = []
net.before_forward(lambda i: seen.append(("before", i)))
net.after_forward(lambda i: seen.append(("after", i)))
out = net.forward(data=x, label=label)
assert seen[:4] == [("before", 0), ("after", 0), ("before", 1), ("after", 1)]
assert len(seen) == 2 * len(net.layers)

W1, b1 = (p.data.astype(np.float64) for p in net.params["ip1"])
Wa, ba = (p.data.astype(np.float64) for p in net.params["ip2a"])
Wb, bb = (p.data.astype(np.float64) for p in net.params["ip2b"])
pre = x @ W1.T + b1
h = np.maximum(pre, 0)
s = h @ Wa.T + ba + h @ Wb.T + bb
p = np.exp(s - s.max(1, keepdims=True))
p /= p.sum(1, keepdims=True)
onehot = np.eye(3)[label.astype(int)]
np.testing.assert_allclose(out["loss"], -np.log(p[onehot > 0]).mean(), rtol=1e-5)
np.testing.assert_allclose(net.blobs["ip1"].data, h, rtol=1e-5, atol=1e-6)   # after ReLU

diffs = net.backward(diffs=["ip1", "sum"])
ds = (p - onehot) / 4
dh = ds @ Wa + ds @ Wb                       # ip1 feeds two layers: their diffs add up
dpre = dh * (pre > 0)
np.testing.assert_allclose(diffs["sum"], ds, rtol=1e-4, atol=1e-6)
np.testing.assert_allclose(diffs["ip1"], dpre, rtol=1e-4, atol=1e-6)   # after ReLU's backward
np.testing.assert_allclose(diffs["data"], dpre @ W1, rtol=1e-4, atol=1e-6)
assert np.all(diffs["label"] == 0)
np.testing.assert_allclose(net.params["ip1"][0].diff, dpre.T @ x, rtol=1e-4, atol=1e-6)
np.testing.assert_allclose(net.params["ip2a"][0].diff, ds.T @ h, rtol=1e-4, atol=1e-6)

# Parameter diffs accumulate over backward passes until cleared.
net.backward()
np.testing.assert_allclose(net.params["ip2a"][0].diff, 2 * ds.T @ h, rtol=1e-4, atol=1e-6)
net.clear_param_diffs()
assert not net.params["ip2a"][0].diff.any()

# Slices: forward to ip1, edit it, then forward from ip2a on.
net.forward(end="relu")
net.blobs["ip1"].data[...] = 1.0
rest = net.forward(start="ip2a")
ones = np.ones((4, 5))
s1 = ones @ Wa.T + ba + ones @ Wb.T + bb
p1 = np.exp(s1 - s1.max(1, keepdims=True))
p1 /= p1.sum(1, keepdims=True)
np.testing.assert_allclose(rest["loss"], -np.log(p1[onehot > 0]).mean(), rtol=1e-5)
only = net.forward(start="ip1", end="ip1")
assert list(only) == ["ip1"]
np.testing.assert_allclose(only["ip1"], pre, rtol=1e-5, atol=1e-6)   # before the ReLU runs

# backward over a slice: from the loss down to ip2a only, then the rest.
# ip1's diff is the sum Caffe's Split layer (right after relu) forms, so it is untouched
# until a backward pass reaches back past ip2a.
net.forward()
net.blobs["ip1"].diff[...] = 7.0
net.blobs["data"].diff[...] = 7.0
part = net.backward(end="ip2a")
assert sorted(part) == ["ip1"] and np.all(part["ip1"] == 7.0)
np.testing.assert_allclose(net.blobs["sum"].diff, ds, rtol=1e-4, atol=1e-6)
assert np.all(net.blobs["data"].diff == 7.0)
rest = net.backward(start="ip2b")
np.testing.assert_allclose(rest["data"], dpre @ W1, rtol=1e-4, atol=1e-6)

# A deploy net: diffs of the output given by keyword (the saliency pattern).
deploy = caffe.Net("deploy.prototxt", caffe.TEST)
deploy.share_with(net)
assert deploy.outputs == ["sum"]
top = rng.randn(4, 3).astype(np.float32)
deploy.forward(data=x)
grad = deploy.backward(sum=top)["data"]
dtop_h = (top @ Wa + top @ Wb) * (pre > 0)
np.testing.assert_allclose(grad, dtop_h @ W1, rtol=1e-4, atol=1e-6)
try:
    deploy.forward(data=x[:2])
except ValueError as error:
    assert "batch" in str(error)
else:
    raise AssertionError("a wrongly sized input was accepted")
print("OK")
