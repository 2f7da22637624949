"""runtime.Net as a torch.nn.Module: forward and hooks, train / eval mode, state_dict keys by
layer name, data layers replaced by fed tensors, torch.compile without graph breaks."""

import os

import h5py
import numpy as np
import pytest
import torch
import torch._dynamo

from runtime.net import Net

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")

NET = '''
name: "module"
layer { name: "in" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 8 dim: 3 dim: 6 dim: 6 } shape { dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "bn" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "drop" type: "Dropout" bottom: "conv1" top: "conv1"
        dropout_param { dropout_ratio: 0.5 } }
layer { name: "ip" type: "InnerProduct" bottom: "conv1" top: "score"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }
'''


@pytest.fixture
def net_file(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(NET)
    return path


def feed():
    generator = torch.Generator().manual_seed(0)
    return {"data": torch.randn(8, 3, 6, 6, generator=generator),
            "label": torch.tensor([0, 1, 2, 1, 0, 2, 1, 0], dtype=torch.float32)}


def test_forward_is_the_call_and_hooks_run(net_file):
    net = Net(net_file, phase="TEST", seed=1)
    seen = []
    net.register_forward_pre_hook(lambda module, args, kwargs: seen.append(sorted(kwargs)),
                                  with_kwargs=True)
    net.register_forward_hook(lambda module, args, kwargs, out: seen.append(sorted(out)),
                              with_kwargs=True)
    net.layer("ip").register_forward_hook(lambda module, args, out: seen.append(out[0].shape))
    outputs = net(**feed())
    assert torch.equal(outputs["loss"], net.forward(**feed())["loss"])
    assert seen[:3] == [["data", "label"], torch.Size([8, 3]), ["loss"]]


def test_a_net_starts_in_the_mode_of_its_phase(net_file):
    assert Net(net_file, phase="TRAIN").training
    assert all(unit.training for unit in Net(net_file, phase="TRAIN").units)
    test_net = Net(net_file, phase="TEST")
    assert not test_net.training and not any(unit.training for unit in test_net.units)


def test_eval_turns_dropout_and_batch_statistics_off(net_file):
    train, test = Net(net_file, phase="TRAIN", seed=1), Net(net_file, phase="TEST", seed=1)
    test.load_state_dict(train.state_dict())
    train.eval()
    # The TRAIN net in eval mode computes what the TEST net computes: no dropout, BatchNorm
    # from its running statistics.
    assert torch.equal(train(**feed())["loss"], test(**feed())["loss"])
    assert torch.equal(train(**feed())["loss"], train(**feed())["loss"])


def test_train_mode_on_a_test_net_drops_units_and_updates_statistics(net_file):
    net = Net(net_file, phase="TEST", seed=1)
    net.train()
    before = net.layer("bn").blobs[2].clone()
    first, second = net(**feed())["loss"], net(**feed())["loss"]
    assert not torch.equal(first, second)                  # fresh dropout masks
    assert not torch.equal(net.layer("bn").blobs[2], before)   # running sums moved


def test_state_dict_keys_name_layers_and_blobs(net_file):
    net = Net(net_file, phase="TRAIN", seed=1)
    assert list(net.state_dict()) == ["conv1.0", "conv1.1", "bn.0", "bn.1", "bn.2", "ip.0",
                                      "ip.1"]
    other = Net(net_file, phase="TRAIN", seed=2)
    assert other.load_state_dict(net.state_dict()) is not None
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), other.parameters()))


def test_state_dict_inside_another_module_keeps_its_prefix(net_file):
    outer = torch.nn.Sequential()
    outer.add_module("caffe", Net(net_file, phase="TEST", seed=1))
    assert list(outer.state_dict())[:2] == ["caffe.conv1.0", "caffe.conv1.1"]
    fresh = torch.nn.Sequential()
    fresh.add_module("caffe", Net(net_file, phase="TEST", seed=2))
    fresh.load_state_dict(outer.state_dict())
    assert torch.equal(fresh.caffe.layer("ip").blobs[0], outer.caffe.layer("ip").blobs[0])


def test_load_state_dict_names_missing_keys_by_layer(net_file):
    net = Net(net_file, phase="TEST", seed=1)
    state = net.state_dict()
    del state["ip.1"]
    with pytest.raises(RuntimeError, match="ip.1"):
        net.load_state_dict(state)
    assert net.load_state_dict(state, strict=False).missing_keys == ["ip.1"]


def test_save_and_load_a_pt_file_by_layer_keys(net_file, tmp_path):
    net = Net(net_file, phase="TEST", seed=1)
    net.save(tmp_path / "w.pt")
    saved = torch.load(tmp_path / "w.pt", weights_only=True)
    assert "conv1.0" in saved
    again = Net(net_file, phase="TEST", seed=2, weights=str(tmp_path / "w.pt"))
    assert torch.equal(again.layer("conv1").blobs[0], net.layer("conv1").blobs[0])


def test_fed_tops_replace_a_data_layer(tmp_path):
    with h5py.File(tmp_path / "a.h5", "w") as handle:
        handle["data"] = np.full((4, 5), 7, np.float32)
        handle["label"] = np.ones(4, np.float32)
    (tmp_path / "list.txt").write_text(f"{tmp_path / 'a.h5'}\n")
    path = tmp_path / "data.prototxt"
    path.write_text(f'''
layer {{ name: "data" type: "HDF5Data" top: "data" top: "label"
        hdf5_data_param {{ source: "{tmp_path / 'list.txt'}" batch_size: 4 }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "score"
        inner_product_param {{ num_output: 2 }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }}
''')
    net = Net(path, phase="TRAIN")
    seen = []
    net.layer("ip").register_forward_hook(lambda module, args, out: seen.append(args[0]))
    net(data=torch.ones(4, 5), label=torch.zeros(4))
    assert torch.equal(seen[-1], torch.ones(4, 5))           # the fed batch, not the file's
    net()
    assert torch.equal(seen[-1], torch.full((4, 5), 7.0))    # unfed: the layer reads its file


def graph_breaks(net, tensors):
    torch._dynamo.reset()
    try:
        return torch._dynamo.explain(net)(**tensors).graph_break_count
    finally:
        torch._dynamo.reset()


def test_torch_compile_has_no_graph_breaks_and_matches_eager(net_file):
    net = Net(net_file, phase="TEST", seed=1)
    assert graph_breaks(net, feed()) == 0
    torch._dynamo.reset()
    compiled = torch.compile(net, backend="eager")
    assert torch.allclose(compiled(**feed())["loss"], net(**feed())["loss"])
    torch._dynamo.reset()


def caption_feed(net):
    shapes = {name: net.compiled.blobs[name] for name in net.inputs}
    return {name: torch.ones(shape) if name == "cont_sentence" else torch.zeros(shape)
            for name, shape in shapes.items()}


def test_caption_word_step_net_compiles_without_graph_breaks():
    net = Net(os.path.join(ROOT, "nets", "lrcn_caption_deploy.prototxt"),
              stages=("word", "factored", "2-layer"))
    assert graph_breaks(net, caption_feed(net)) == 0


@pytest.mark.slow
def test_bundled_train_net_compiles_without_graph_breaks_with_its_data_fed():
    net = Net(os.path.join(ROOT, "nets", "lrcn_caption.prototxt"), phase="TRAIN",
              stages=("factored", "2-layer"))
    tensors = {}
    for layer in net.compiled.layers:
        if not layer.bottoms:
            for name, shape in zip(layer.top_names, layer.top_shapes):
                tensors[name] = torch.ones(shape) if "cont" in name else torch.zeros(shape)
    assert graph_breaks(net, tensors) == 0
