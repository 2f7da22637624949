"""runtime.Net: pycaffe surface, torch-native use, sharing, and Caffe weight files."""

import numpy as np
import pytest
import torch

from compiler import CompileError
from lrcn_proto import caffe_pb2
from runtime.net import Net
from runtime.weights import array_to_blob

TINY = '''
name: "tiny"
layer { name: "in" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 4 dim: 3 dim: 8 dim: 8 } shape { dim: 4 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 5 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip" param { name: "w" }
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "ip_again" type: "InnerProduct" bottom: "pool" top: "ip2" param { name: "w" }
        inner_product_param { num_output: 3 bias_term: false } }
layer { name: "sum" type: "Eltwise" bottom: "ip" bottom: "ip2" top: "score" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "score" bottom: "label" top: "acc" }
'''


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.prototxt"
    path.write_text(TINY)
    return path


def inputs():
    rng = np.random.RandomState(0)
    return rng.randn(4, 3, 8, 8).astype(np.float32), np.array([0, 1, 2, 1], np.float32)


def test_pycaffe_surface(tiny):
    net = Net(tiny, phase="TRAIN", seed=3)
    assert net.inputs == ["data", "label"]
    assert set(net.outputs) == {"acc", "loss"}
    assert list(net.blobs) == ["data", "label", "conv", "pool", "ip", "ip2", "score", "loss",
                               "acc"]
    assert list(net.params) == ["conv", "ip", "ip_again"]
    x, y = inputs()
    net.blobs["data"].data[...] = x          # pycaffe's way of feeding
    net.blobs["label"].data[...] = y
    out = net()
    assert set(out) == {"acc", "loss"} and out["loss"].shape == ()
    assert net.blobs["conv"].data.min() >= 0      # the ReLU ran in place on "conv"
    assert net.blobs["pool"].data.shape == (4, 5, 3, 3)
    diffs = net.backward()
    # Like Caffe, input diffs are computed only with force_backward.
    assert diffs["data"].shape == (4, 3, 8, 8) and np.abs(diffs["data"]).sum() == 0
    assert np.abs(net.params["conv"][0].diff).sum() > 0


def test_force_backward_gives_input_diffs(tmp_path):
    path = tmp_path / "fb.prototxt"
    path.write_text("force_backward: true\n" + TINY)
    net = Net(path, phase="TRAIN", seed=3)
    x, y = inputs()
    net(data=x, label=y)
    diffs = net.backward()
    assert np.abs(diffs["data"]).sum() > 0
    assert np.all(diffs["label"] == 0)           # labels never get a gradient


def test_fed_tensors_match_the_pycaffe_buffers(tiny):
    net = Net(tiny, phase="TRAIN", seed=3)
    x, y = inputs()
    net.blobs["data"].data[...] = x
    net.blobs["label"].data[...] = y
    pycaffe = net()
    native = net(data=torch.from_numpy(x), label=torch.from_numpy(y))
    # The objective is .loss (loss_weight 1 here, so equal to the "loss" blob).
    assert native.loss.item() == pytest.approx(pycaffe["loss"].item())
    assert native["loss"].item() == pytest.approx(pycaffe["loss"].item())
    native.loss.backward()
    assert net.units[1].blobs[0].grad is not None


def test_shared_param_is_one_tensor_counted_once(tiny):
    net = Net(tiny, phase="TRAIN", seed=3)
    assert net.layer("ip").blobs[0] is net.layer("ip_again").blobs[0]
    names = [p.name for p in net.learnable_params()]
    assert names == ["conv/0", "conv/1", "w", "ip/1"]
    net.params["ip"][0].data[...] = 0.5      # pycaffe-style write through the shared view
    assert net.layer("ip_again").blobs[0][0, 0].item() == 0.5


def test_caffemodel_round_trip_is_bit_for_bit(tiny, tmp_path):
    net = Net(tiny, phase="TEST", seed=3)
    net.save(tmp_path / "a.caffemodel")
    again = Net(tiny, phase="TEST", seed=99, weights=str(tmp_path / "a.caffemodel"))
    again.save(tmp_path / "b.caffemodel")
    assert (tmp_path / "a.caffemodel").read_bytes() == (tmp_path / "b.caffemodel").read_bytes()
    for a, b in zip(net.parameters(), again.parameters()):
        assert torch.equal(a, b)


def test_state_dict_round_trip(tiny, tmp_path):
    net = Net(tiny, phase="TEST", seed=3)
    net.save(tmp_path / "w.pt")
    again = Net(tiny, phase="TEST", seed=5, weights=str(tmp_path / "w.pt"))
    for a, b in zip(net.parameters(), again.parameters()):
        assert torch.equal(a, b)


def weights_file(path, layers):
    message = caffe_pb2.NetParameter()
    for name, blobs in layers:
        layer = message.layer.add(name=name)
        layer.blobs.extend(blobs)
    path.write_bytes(message.SerializeToString())
    return str(path)


def test_copy_from_matches_by_name_keeps_missing_and_ignores_extra(tiny, tmp_path):
    net = Net(tiny, phase="TEST", seed=3)
    conv_before = net.layer("conv").blobs[0].detach().clone()
    w = np.arange(3 * 45, dtype=np.float32).reshape(3, 45)
    path = weights_file(tmp_path / "w.caffemodel", [
        ("ip", [array_to_blob(w), array_to_blob(np.ones(3))]),
        ("not_in_net", [array_to_blob(np.ones(7))])])
    net.copy_from(path)
    assert np.array_equal(net.params["ip"][0].data, w)
    assert torch.equal(net.layer("conv").blobs[0], conv_before)


def test_copy_from_reads_legacy_4d_blobs_and_double_data(tiny, tmp_path):
    net = Net(tiny, phase="TEST", seed=3)
    legacy = caffe_pb2.BlobProto(num=1, channels=1, height=3, width=45)
    legacy.double_data.extend(np.linspace(0, 1, 135).tolist())
    bias = caffe_pb2.BlobProto(num=1, channels=1, height=1, width=3)
    bias.data.extend([1, 2, 3])
    net.copy_from(weights_file(tmp_path / "old.caffemodel", [("ip", [legacy, bias])]))
    assert net.params["ip"][0].data[2, 44] == pytest.approx(1.0)
    assert net.params["ip"][1].data.tolist() == [1, 2, 3]


def test_copy_from_shape_mismatch_names_layer_and_both_shapes(tiny, tmp_path):
    net = Net(tiny, phase="TEST", seed=3)
    path = weights_file(tmp_path / "bad.caffemodel", [
        ("ip", [array_to_blob(np.zeros((4, 45))), array_to_blob(np.zeros(3))])])
    with pytest.raises(CompileError) as caught:
        net.copy_from(path)
    assert "layer 'ip' blob 0: shape mismatch" in caught.value.message
    assert "[4, 45]" in caught.value.message and "[3, 45]" in caught.value.message


def test_corrupt_and_text_weights_files_are_clean_errors(tiny, tmp_path):
    net = Net(tiny, phase="TEST", seed=3)
    text = tmp_path / "net.caffemodel"
    text.write_text(TINY)
    with pytest.raises(CompileError) as caught:
        net.copy_from(text)
    assert "not a Caffe .caffemodel" in caught.value.message
    with pytest.raises(CompileError):
        net.copy_from(tmp_path / "missing.caffemodel")


def test_missing_input_is_a_clear_error(tiny):
    net = Net(tiny, phase="TEST", seed=3)
    with pytest.raises(CompileError) as caught:
        net.run({"data": torch.zeros(4, 3, 8, 8)})
    assert "label" in caught.value.message


def test_unknown_shapes_need_input_shapes(tmp_path):
    path = tmp_path / "py.prototxt"
    path.write_text('layer { name: "i" type: "Input" top: "x" }\n'
                    'layer { name: "r" type: "ReLU" bottom: "x" top: "y" }\n')
    with pytest.raises(CompileError) as caught:
        Net(path)
    assert "input_shapes" in caught.value.hint
    net = Net(path, input_shapes={"x": (2, 3)})
    assert net(x=-torch.ones(2, 3))["y"].sum() == 0


def test_in_place_chain_keeps_no_intermediate_copies(tiny):
    net = Net(tiny, phase="TRAIN", seed=3)
    x, y = inputs()
    net.run({"data": torch.from_numpy(x), "label": torch.from_numpy(y)})
    assert "conv" not in net._values            # the pre-ReLU version was released
    assert "conv@1" in net._values               # the version net.blobs["conv"] shows


def test_reorder_state_follows_streams():
    text = '''
    layer { name: "in" type: "Input" top: "x" top: "cont"
            input_param { shape { dim: 1 dim: 3 dim: 2 } shape { dim: 1 dim: 3 } } }
    layer { name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" top: "h"
            recurrent_param { num_output: 4 weight_filler { type: "uniform" min: -1 max: 1 } } }
    '''
    from compiler import parse_text
    net = Net(parse_text(text, "net"), seed=1)
    net(x=torch.randn(1, 3, 2), cont=torch.zeros(1, 3))
    net.reorder_state([2, 2, 0])
    same_input = torch.randn(1, 1, 2).expand(1, 3, 2)
    h = net(x=same_input, cont=torch.ones(1, 3))["h"]
    assert torch.equal(h[0, 0], h[0, 1])         # both continue stream 2
    assert not torch.equal(h[0, 0], h[0, 2])
