"""NetSpec LeNet generation, then training with SGDSolver (the pycaffe LeNet tutorial's flow),
on a small synthetic two-class problem written to HDF5 here."""
import h5py
import numpy as np

import caffe
from caffe import layers as L, params as P
from caffe.proto import caffe_pb2

rng = np.random.RandomState(0)
images = rng.rand(64, 1, 12, 12).astype(np.float32)
labels = (images[:, :, :, :6].mean(axis=(1, 2, 3)) > images[:, :, :, 6:].mean(axis=(1, 2, 3)))
with h5py.File("train.h5", "w") as f:
    f["data"], f["label"] = images, labels.astype(np.float32)
with open("train.txt", "w") as f:
    f.write("train.h5\n")


def lenet(source, batch_size):
    n = caffe.NetSpec()
    n.data, n.label = L.HDF5Data(batch_size=batch_size, source=source, ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=3, num_output=4,
                            weight_filler=dict(type="xavier"))
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.fc1 = L.InnerProduct(n.pool1, num_output=16, weight_filler=dict(type="xavier"))
    n.relu1 = L.ReLU(n.fc1, in_place=True)
    n.score = L.InnerProduct(n.relu1, num_output=2, weight_filler=dict(type="xavier"))
    n.loss = L.SoftmaxWithLoss(n.score, n.label)
    n.acc = L.Accuracy(n.score, n.label, include=dict(phase=caffe.TEST))
    return n.to_proto()


proto = lenet("train.txt", 64)
assert [l.name for l in proto.layer][:3] == ["data", "conv1", "pool1"]
assert proto.layer[4].top == ["fc1"] and proto.layer[4].bottom == ["fc1"]   # in place
assert proto.layer[2].pooling_param.pool == caffe_pb2.PoolingParameter.MAX
with open("lenet.prototxt", "w") as f:
    f.write(str(proto))

s = caffe_pb2.SolverParameter()
s.train_net = "lenet.prototxt"
s.test_net.append("lenet.prototxt")
s.test_iter.append(1)
s.test_interval = 1000
s.base_lr, s.momentum, s.weight_decay = 0.02, 0.9, 0.0005
s.lr_policy = "fixed"
s.max_iter = 200
s.display = 0
s.snapshot_prefix = "lenet"
with open("solver.prototxt", "w") as f:
    f.write(str(s))

caffe.set_mode_cpu()
caffe.set_random_seed(3)
solver = caffe.SGDSolver("solver.prototxt")
assert [k for k in solver.net.blobs] == ["data", "label", "conv1", "pool1", "fc1", "score",
                                         "loss"]
assert [(k, v[0].data.shape) for k, v in solver.net.params.items()] == [
    ("conv1", (4, 1, 3, 3)), ("fc1", (16, 100)), ("score", (2, 16))]

# One SGD step by hand: the whole data set is one batch, so every batch is the same and the
# first update is w - lr * (dL/dw + weight_decay * w) (the momentum history starts at zero).
net = solver.net
net.forward()
net.backward()
expected = {name: [b.data - s.base_lr * (b.diff + s.weight_decay * b.data) for b in blobs]
            for name, blobs in net.params.items()}
net.clear_param_diffs()
solver.step(1)
assert solver.iter == 1
for name, blobs in net.params.items():
    for blob, want in zip(blobs, expected[name]):
        np.testing.assert_allclose(blob.data, want, rtol=1e-5, atol=1e-6)

first_loss = float(net.blobs["loss"].data)
solver.step(150)
assert solver.iter == 151
last_loss = float(net.blobs["loss"].data)
assert last_loss < 0.5 * first_loss, (first_loss, last_loss)

test = solver.test_nets[0]
out = test.forward()
scores = test.blobs["score"].data
assert abs(float(out["acc"]) - float(np.mean(scores.argmax(1) == test.blobs["label"].data))) \
    < 1e-6
assert float(out["acc"]) > 0.9, out["acc"]
# The test net shares the train net's weights.
assert np.shares_memory(test.params["fc1"][0].data, net.params["fc1"][0].data)
print("OK")
