"""The `caffe` package's calls one by one: errors, refused calls, caffe.io conversions, NetSpec,
caffe.draw, reshape, HDF5 weights, MemoryData, forward_all."""

import shutil
import sys
import warnings

import h5py
import numpy as np
import pytest
import torch

import caffe
import caffe.draw
from caffe import layers as L, params as P
from caffe.proto import caffe_pb2
from compiler.errors import CompileError

NET = """name: "small"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 3 dim: 2 dim: 5 dim: 5 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 2 kernel_size: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
  pooling_param { pool: AVE kernel_size: 3 } }
layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip"
  inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.5 } } }
"""


@pytest.fixture
def net_file(tmp_path):
    path = tmp_path / "small.prototxt"
    path.write_text(NET)
    return str(path)


@pytest.fixture
def net(net_file):
    return caffe.Net(net_file, caffe.TEST)


# --- construction and arguments ------------------------------------------------------------

def test_net_constructor_errors_name_the_problem(net_file, tmp_path):
    with pytest.raises(CompileError, match="Could not open file") as error:
        caffe.Net(str(tmp_path / "absent.prototxt"), caffe.TEST)
    assert "absent.prototxt" in str(error.value)
    with pytest.raises(CompileError, match="absent.caffemodel"):
        caffe.Net(net_file, caffe.TEST, weights=str(tmp_path / "absent.caffemodel"))
    with pytest.raises(ValueError, match="caffe.TRAIN or caffe.TEST"):
        caffe.Net(net_file, 7)
    with pytest.raises(TypeError, match="caffe.Net"):
        caffe.Net(net_file)


def test_unknown_layer_and_blob_names_are_clear(net):
    with pytest.raises(ValueError, match="forward\\(start=...\\): no layer named 'nope'"):
        net.forward(start="nope")
    with pytest.raises(KeyError, match="no blob named 'nope'"):
        net.forward(blobs=["nope"])
    with pytest.raises(ValueError, match="must be exactly the net's inputs"):
        net.forward(image=np.zeros((3, 2, 5, 5)))


def test_structure_matches_pycaffe(net):
    assert net._layer_names == ["data", "conv", "pool", "ip"]
    assert net._blob_names == ["data", "conv", "pool", "ip"]
    assert net._inputs == [0] and net._outputs == [3]
    assert list(net.layer_dict) == net._layer_names
    assert list(net.params) == ["conv", "ip"]
    assert net.blob_loss_weights["ip"] == 0
    assert net.layers[1].blobs[0].shape == (2, 2, 3, 3) and net.layers[1].blobs[1].count == 2
    assert "Convolution" in caffe.layer_type_list()


def test_param_blobs_cannot_be_reshaped(net):
    with pytest.raises(caffe.UnsupportedError, match="reshaping a learnable blob"):
        net.params["ip"][0].reshape(1, 2)


# --- reshape, forward_all, weights -----------------------------------------------------------

def test_reshape_recomputes_blob_shapes(net):
    net.blobs["data"].reshape(6, 2, 5, 5)
    net.reshape()
    assert net.blobs["ip"].data.shape == (6, 4)
    x = np.random.RandomState(0).randn(6, 2, 5, 5).astype(np.float32)
    assert net.forward(data=x)["ip"].shape == (6, 4)
    net.blobs["data"].reshape(6, 2, 8, 8)
    with pytest.raises(CompileError, match="Net.reshape\\(\\): layer 'ip'"):
        net.reshape()


def test_forward_all_pads_the_last_batch_and_drops_the_padding(net):
    x = np.random.RandomState(1).randn(7, 2, 5, 5).astype(np.float32)
    everything = net.forward_all(data=x)["ip"]
    assert everything.shape == (7, 4)
    one_batch = net.forward(data=x[3:6])["ip"]
    np.testing.assert_allclose(everything[3:6], one_batch, rtol=1e-6)


def test_hdf5_weights_use_caffes_layout(net, net_file, tmp_path):
    path = str(tmp_path / "w.h5")
    net.save_hdf5(path)
    with h5py.File(path) as handle:
        assert sorted(handle["data"]) == ["conv", "data", "ip", "pool"]
        np.testing.assert_array_equal(handle["data/ip/0"][()], net.params["ip"][0].data)
    other = caffe.Net(net_file, caffe.TEST)
    other.copy_from(path)
    np.testing.assert_array_equal(other.params["conv"][0].data, net.params["conv"][0].data)


def test_memory_data_layer_takes_input_arrays(tmp_path):
    path = tmp_path / "memory.prototxt"
    path.write_text('layer { name: "m" type: "MemoryData" top: "data" top: "label" '
                    'memory_data_param { batch_size: 2 channels: 1 height: 2 width: 2 } }')
    net = caffe.Net(str(path), caffe.TEST)
    data = np.arange(16, dtype=np.float32).reshape(4, 1, 2, 2)
    net.set_input_arrays(data, np.arange(4, dtype=np.float32))
    net.forward()
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data, data[2:])
    np.testing.assert_array_equal(net.blobs["label"].data, [2, 3])


# --- parameters on a GPU: host copies written back (exercised here by forcing copies) -------

@pytest.fixture
def host_copies(monkeypatch):
    """Parameter arrays behave as on a GPU: copies, not the tensors' memory."""
    monkeypatch.setattr(caffe.pycaffe.HostCopies, "shares_memory", staticmethod(lambda t: False))


def test_host_copies_are_written_back_before_the_next_forward(net, host_copies):
    ones = np.ones((3, 2, 5, 5), np.float32)
    assert net.forward(data=ones)["ip"].any()
    weights = net.params["ip"][0].data
    assert not np.shares_memory(weights, net.layers[3].blobs[0]._tensor.detach().numpy())
    weights[...] = 0
    assert net.params["ip"][0].data is weights        # the same copy until written back
    assert not net.forward(data=ones)["ip"].any()     # the zeros reached the tensor (no bias)
    np.testing.assert_array_equal(net.layers[3].blobs[0]._tensor.detach().numpy(), 0)
    weights[...] = 1                                   # too late: written back already
    assert not net.forward(data=ones)["ip"].any()
    np.testing.assert_array_equal(net.params["ip"][0].data, 0)


def test_host_copies_edited_in_callbacks_reach_the_update(tmp_path, host_copies):
    (tmp_path / "net.prototxt").write_text(
        'layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 4 dim: 2 } } }\n'
        'layer { name: "y" type: "Input" top: "y" input_param { shape { dim: 4 dim: 1 } } }\n'
        'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip" inner_product_param '
        '{ num_output: 1 weight_filler { type: "constant" value: 0.5 } } }\n'
        'layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "y" top: "loss" }\n')
    (tmp_path / "solver.prototxt").write_text(
        f'net: "{tmp_path / "net.prototxt"}"\nbase_lr: 0.1\nlr_policy: "fixed"\n'
        'max_iter: 1\ndisplay: 0\nsnapshot_prefix: "unused"\n')
    solver = caffe.SGDSolver(str(tmp_path / "solver.prototxt"))
    solver.net.blobs["x"].data[...] = 1
    solver.net.blobs["y"].data[...] = 3

    def freeze_bias():
        solver.net.params["ip"][1].diff[...] = 0
    solver.add_callback(lambda: None, freeze_bias)
    solver.step(1)
    np.testing.assert_array_equal(solver.net.params["ip"][1].data, [0])
    # d loss / d w = (2 x 0.5 - 3) x 1 = -2 per weight, so w = 0.5 + 0.1 x 2
    np.testing.assert_allclose(solver.net.params["ip"][0].data, [[0.7, 0.7]], rtol=1e-6)


# --- mode and refused calls ------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_set_mode_gpu_without_cuda_warns_and_runs_on_the_cpu(net_file):
    try:
        with pytest.warns(RuntimeWarning, match="caffe.set_mode_gpu\\(\\): no CUDA"):
            caffe.set_mode_gpu()
        net = caffe.Net(net_file, caffe.TEST)
        assert net.forward()["ip"].shape == (3, 4)
    finally:
        caffe.set_mode_cpu()


@pytest.mark.parametrize("call, name", [
    (lambda: caffe.set_solver_count(2), "caffe.set_solver_count"),
    (lambda: caffe.set_solver_rank(1), "caffe.set_solver_rank"),
    (lambda: caffe.set_multiprocess(True), "caffe.set_multiprocess"),
    (lambda: caffe.NCCL(None, ""), "caffe.NCCL"),
    (lambda: caffe.Detector("a", "b"), "caffe.Detector"),
    (lambda: caffe.Layer().blobs.add_blob(2, 3), "Layer.blobs.add_blob"),
    (lambda: caffe.io.resize_image(np.zeros((4, 4, 3)), (2, 2), interp_order=3),
     "interp_order=3"),
])
def test_refused_calls_name_the_call(call, name):
    with pytest.raises(caffe.UnsupportedError, match=name.replace("(", "\\(")):
        call()


def test_get_pydot_graph_without_pydot_names_the_call(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydot", None)
    with pytest.raises(caffe.UnsupportedError, match="caffe.draw.get_pydot_graph"):
        caffe.draw.get_pydot_graph(caffe_pb2.NetParameter(), "LR")


def test_timer_measures_milliseconds():
    timer = caffe.Timer()
    timer.start()
    timer.stop()
    assert 0 <= timer.ms < 60_000


# --- caffe.io --------------------------------------------------------------------------------

def test_blobproto_round_trip_and_legacy_shape():
    array = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    blob = caffe.io.array_to_blobproto(array, diff=-array)
    assert list(blob.shape.dim) == [2, 3, 4]
    np.testing.assert_array_equal(caffe.io.blobproto_to_array(blob), array)
    np.testing.assert_array_equal(caffe.io.blobproto_to_array(blob, return_diff=True), -array)
    legacy = caffe_pb2.BlobProto(num=1, channels=2, height=1, width=3, data=range(6))
    assert caffe.io.blobproto_to_array(legacy).shape == (1, 2, 1, 3)
    arrays = caffe.io.blobprotovector_str_to_arraylist(
        caffe.io.arraylist_to_blobprotovector_str([array, array[0]]))
    assert [a.shape for a in arrays] == [(2, 3, 4), (3, 4)]


def test_datum_round_trips():
    pixels = np.random.RandomState(0).randint(0, 256, (3, 4, 5)).astype(np.uint8)
    datum = caffe.io.array_to_datum(pixels, label=7)
    assert datum.label == 7 and datum.data == pixels.tobytes()
    np.testing.assert_array_equal(caffe.io.datum_to_array(datum), pixels)
    floats = pixels.astype(np.float32) / 3
    np.testing.assert_allclose(caffe.io.datum_to_array(caffe.io.array_to_datum(floats)), floats,
                               rtol=1e-6)
    with pytest.raises(ValueError, match="3-d"):
        caffe.io.array_to_datum(pixels[0])


def test_encoded_datum_decodes_to_bgr(tmp_path):
    from PIL import Image
    rgb = np.random.RandomState(2).randint(0, 256, (4, 5, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "x.png")
    datum = caffe_pb2.Datum(data=(tmp_path / "x.png").read_bytes(), encoded=True)
    np.testing.assert_array_equal(caffe.io.datum_to_array(datum),
                                  rgb[:, :, ::-1].transpose(2, 0, 1))


def test_resize_image_is_bilinear_with_aligned_pixel_centres():
    cv2 = pytest.importorskip("cv2")
    image = np.random.RandomState(3).rand(7, 9, 3).astype(np.float32)
    for dims in [(14, 20), (4, 5), (7, 9)]:
        expected = cv2.resize(image, (dims[1], dims[0]), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_allclose(caffe.io.resize_image(image, dims), expected, atol=1e-5)
    nearest = caffe.io.resize_image(image, (14, 18), interp_order=0)
    np.testing.assert_array_equal(nearest, image.repeat(2, axis=0).repeat(2, axis=1))
    five = np.random.RandomState(4).rand(3, 3, 5)      # any channel count
    assert caffe.io.resize_image(five, (6, 6)).shape == (6, 6, 5)


def test_transformer_resizes_an_elementwise_mean(net):
    transformer = caffe.io.Transformer({"data": net.blobs["data"].data.shape})
    transformer.set_mean("data", np.ones((2, 10, 10)) * 3)
    np.testing.assert_allclose(transformer.mean["data"], np.full((2, 5, 5), 3.0))
    with pytest.raises(ValueError, match="Mean channels"):
        transformer.set_mean("data", np.ones(3))
    with pytest.raises(KeyError, match="not one of the net inputs"):
        transformer.set_raw_scale("image", 255)


# --- NetSpec -----------------------------------------------------------------------------------

def test_netspec_routes_keywords_like_pycaffe():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 3]))
    n.ip = L.InnerProduct(n.data, num_output=4, param=[dict(lr_mult=1), dict(lr_mult=2)],
                          weight_filler=dict(type="xavier"))
    n.loss = L.Python(n.ip, n.ip, module="pyloss", layer="Loss", loss_weight=1,
                      include=dict(phase=caffe.TRAIN))
    n.pool = L.Pooling(n.data, pool=P.Pooling.MAX, kernel_size=1)
    net = n.to_proto()
    ip = net.layer[1]
    assert ip.inner_product_param.num_output == 4 and [p.lr_mult for p in ip.param] == [1, 2]
    loss = net.layer[2]
    assert (loss.python_param.module, loss.python_param.layer) == ("pyloss", "Loss")
    assert list(loss.loss_weight) == [1.0] and loss.include[0].phase == caffe.TRAIN
    assert net.layer[3].pooling_param.pool == caffe_pb2.PoolingParameter.MAX


def test_to_proto_names_unnamed_layers_by_type():
    top = L.ReLU(L.InnerProduct(L.Input(shape=dict(dim=[1, 2])), num_output=3), in_place=True)
    net = caffe.to_proto(top)
    assert [(layer.name, list(layer.top)) for layer in net.layer] == [
        ("Input1", ["Input1"]), ("InnerProduct1", ["InnerProduct1"]),
        ("ReLU1", ["InnerProduct1"])]


def test_netspec_errors_name_the_layer_and_field():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 2]))
    n.up = L.Deconvolution(n.data, num_output=3)
    with pytest.raises(AttributeError, match="layers.Deconvolution\\(num_output=...\\)"):
        n.to_proto()
    with pytest.raises(TypeError, match="input 0 is not a Top"):
        L.ReLU("data")
    with pytest.raises(AttributeError, match="has no constant 'MAXIMUM'"):
        P.Pooling.MAXIMUM


# --- caffe.draw ----------------------------------------------------------------------------------

def test_draw_writes_dot_filtered_by_phase(tmp_path):
    net = caffe_pb2.NetParameter(name="drawn")
    conv = net.layer.add(name="conv", type="Convolution", bottom=["data"], top=["conv"])
    conv.convolution_param.num_output = 8
    conv.convolution_param.kernel_size.append(5)
    net.layer.add(name="relu", type="ReLU", bottom=["conv"], top=["conv"])
    only_test = net.layer.add(name="acc", type="Accuracy", bottom=["conv"], top=["acc"])
    only_test.include.add(phase=caffe.TEST)
    text = caffe.draw.draw_net(net, "TB", ext="raw", phase=caffe.TRAIN).decode()
    assert '"conv_Convolution"' in text and "kernel size: 5" in text
    assert '"conv_Convolution" -> "conv_blob" [label="8"]' in text
    assert "#90EE90" in text                      # the in-place ReLU
    assert "acc" not in text
    caffe.draw.draw_net_to_file(net, str(tmp_path / "net.dot"))
    assert "acc_Accuracy" in (tmp_path / "net.dot").read_text()
    if shutil.which("dot") is None:
        with pytest.raises(CompileError, match="needs Graphviz's dot, which is not installed"):
            caffe.draw.draw_net_to_file(net, str(tmp_path / "net.png"))


def test_python_layer_base_class():
    layer = caffe.Layer()
    assert layer.type == "Python" and len(layer.blobs) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        caffe.set_mode_cpu()


# --- the adapter computes what the runtime computes ------------------------------------------

def test_layer_by_layer_passes_equal_the_runtime_on_the_captioner():
    """LRCN's factored captioner (HDF5 streams, Embed, LSTMs with static input, a loss):
    caffe.Net's forward/backward layer by layer gives runtime.Net's loss and gradients."""
    import pathlib

    import runtime.net
    path = str(pathlib.Path(__file__).parents[2] / "nets" / "lrcn_caption.prototxt")
    stages = ["factored", "2-layer"]
    adapter = caffe.Net(path, caffe.TRAIN, stages=stages)
    reference = runtime.net.Net(path, phase="TRAIN", stages=stages)
    outputs = adapter.forward()
    adapter.backward()
    expected = reference.forward_backward()
    for name, value in outputs.items():
        np.testing.assert_allclose(value, expected[name].detach().numpy(), rtol=1e-6)
    assert len(adapter.params) == 8
    for name, blobs in adapter.params.items():
        for index, blob in enumerate(blobs):
            np.testing.assert_allclose(blob.diff, reference.layer(name).blobs[index].grad,
                                       rtol=1e-5, atol=1e-7)


def test_set_random_seed_decides_the_fillers(net_file, monkeypatch):
    monkeypatch.setitem(caffe._caffe._settings, "seed", None)
    caffe.set_random_seed(11)
    first = caffe.Net(net_file, caffe.TEST).params["ip"][0].data.copy()
    again = caffe.Net(net_file, caffe.TEST).params["ip"][0].data
    caffe.set_random_seed(12)
    other = caffe.Net(net_file, caffe.TEST).params["ip"][0].data
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_get_solver_reports_an_unknown_type_in_the_file(net_file, tmp_path):
    path = tmp_path / "solver.prototxt"
    path.write_text(f'net: "{net_file}"\ntype: "Momentum"\nbase_lr: 0.1\nlr_policy: "fixed"\n')
    with pytest.raises(CompileError, match="unknown solver type 'Momentum'") as error:
        caffe.get_solver(str(path))
    assert error.value.file == str(path) and error.value.line == 2
