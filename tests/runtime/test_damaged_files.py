"""Weight and resume files: every file Caffe writes loads, and a damaged one (truncated,
overwritten, random bytes, impossible shapes) is one CompileError naming the file."""

import random

import numpy as np
import pytest

from compiler import CompileError
from lrcn_proto import caffe_pb2
from runtime import weights as weight_files
from runtime.net import Net
from runtime.solver import Solver

NET = '''name: "small"
layer { name: "data" type: "DummyData" top: "x" top: "y"
  dummy_data_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } shape { dim: 2 dim: 3 }
                     data_filler { type: "gaussian" } } }
layer { name: "conv" type: "Convolution" bottom: "x" top: "conv"
  convolution_param { num_output: 2 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "prelu" type: "PReLU" bottom: "conv" top: "conv" prelu_param { channel_shared: true } }
layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc"
  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "fc" bottom: "y" top: "loss" }
'''


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text(
        f'net: "{tmp_path / "net.prototxt"}"\nbase_lr: 0.01\nlr_policy: "fixed"\nmax_iter: 2\n'
        f'snapshot_prefix: "{tmp_path / "snap"}"\nrandom_seed: 3\ntype: "Adam"\n')
    return tmp_path


def test_a_zero_axis_blob_as_caffe_writes_it_loads(folder):
    # Caffe's Blob::ToProto adds no shape field for a 0-axis blob (PReLU's shared slope).
    net = Net(folder / "net.prototxt", phase="TRAIN")
    message = net.to_proto()
    slope = next(layer for layer in message.layer if layer.name == "prelu").blobs[0]
    slope.ClearField("shape")
    slope.data[:] = [0.375]
    path = folder / "caffe.caffemodel"
    path.write_bytes(message.SerializeToString())
    net.copy_from(path)
    assert net.params["prelu"][0].data.shape == ()
    assert float(net.params["prelu"][0].data) == 0.375


@pytest.mark.parametrize("fields, words", [
    (dict(shape=caffe_pb2.BlobShape(dim=[2 ** 62, 4]), data=[0.0] * 8), "needs 2**64"),
    (dict(shape=caffe_pb2.BlobShape(dim=[2 ** 63 - 1, 2 ** 63 - 1]), data=[0.0]), "holds 1 values"),
    (dict(num=-1, channels=-4, height=1, width=1, data=[0.0] * 4), "negative dimension"),
    (dict(shape=caffe_pb2.BlobShape(dim=[1] * 33), data=[1.0]), "33 axes"),
    (dict(data=[1.0, 2.0]), "holds 2 values but its shape [] needs 1"),
])
def test_impossible_blob_shapes_are_one_error_naming_the_file(tmp_path, fields, words):
    path = tmp_path / "mean.binaryproto"
    path.write_bytes(caffe_pb2.BlobProto(**fields).SerializeToString())
    with pytest.raises(CompileError) as caught:
        weight_files.read_blob_file(path)
    assert caught.value.file == str(path)
    assert words.replace("2**64", str(2 ** 64)) in caught.value.message


def _damaged(data, rng):
    """Truncated, overwritten, inserted into, or plain random bytes."""
    kind = rng.randrange(4)
    if kind == 0:
        return data[:rng.randrange(len(data))]
    data = bytearray(data)
    if kind == 1:
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == 2:
        at = rng.randrange(len(data))
        data[at:at] = bytes([rng.randrange(256)]) * rng.randint(1, 10)
    else:
        data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))
    return bytes(data)


def test_damaged_weight_files_are_one_error_naming_the_file(folder):
    net = Net(folder / "net.prototxt", phase="TRAIN")
    good = folder / "good.caffemodel"
    net.save(good)
    original = good.read_bytes()
    rng = random.Random(12)
    path = folder / "damaged.caffemodel"
    errors = 0
    for _ in range(400):
        path.write_bytes(_damaged(original, rng))
        try:
            net.copy_from(path)
        except CompileError as error:
            assert error.file == str(path), str(error)
            errors += 1
    assert errors > 200   # most damage is detected; the rest parses as other valid weights


def test_damaged_solver_states_are_one_error_naming_the_file(folder):
    solver = Solver(str(folder / "solver.prototxt"), log=lambda line: None)
    solver.step(1)
    model_file, state_file = solver.snapshot()
    original = open(state_file, "rb").read()
    state = caffe_pb2.SolverState()
    state.ParseFromString(original)
    state.history[1].shape.dim[:] = [7]      # the conv bias history: 2 values, not 7
    state.history[1].data[:] = [0.0] * 7
    wrong = folder / "wrong.solverstate"
    wrong.write_bytes(state.SerializeToString())
    with pytest.raises(CompileError) as caught:
        solver.restore(str(wrong))
    assert caught.value.file == str(wrong)
    assert "history blob 1: shape mismatch: the file has [7], the net needs [2]" in str(
        caught.value)
    rng = random.Random(5)
    path = folder / "damaged.solverstate"
    for _ in range(150):
        path.write_bytes(_damaged(original, rng))
        try:
            solver.restore(str(path))
        except CompileError as error:
            assert error.file in (str(path), model_file), str(error)


def test_values_of_a_legacy_blob_fill_its_shape(tmp_path):
    path = tmp_path / "mean.binaryproto"
    blob = caffe_pb2.BlobProto(num=1, channels=2, height=1, width=2, data=[1, 2, 3, 4])
    path.write_bytes(blob.SerializeToString())
    np.testing.assert_array_equal(weight_files.read_blob_file(path),
                                  np.arange(1, 5, dtype=np.float32).reshape(1, 2, 1, 2))
