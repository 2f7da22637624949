"""compiler.deploy: the deployable part of a net and the net at another batch size, as
NetParameter rewrites compiled again (no torch)."""

import pytest

import compiler
from compiler.deploy import deployable, input_batch_axes, rebatch
from compiler.errors import CompileError

TRAIN_NET = '''name: "small"
layer { name: "data" type: "DummyData" top: "x" top: "label"
  dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip"
  inner_product_param { num_output: 5 } }
layer { name: "relu" type: "ReLU" bottom: "ip" top: "ip" }
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
'''


def compile_text(text, **options):
    return compiler.compile_net(compiler.load_text(text, "net", filename="small.prototxt"),
                                **options)


def test_a_train_net_deploys_as_inputs_and_predictions():
    deploy = deployable(compile_text(TRAIN_NET, phase="TEST"))
    net = deploy.compiled
    assert [(layer.name, layer.type) for layer in net.layers] == [
        ("data", "Input"), ("ip", "InnerProduct"), ("relu", "ReLU")]
    assert net.inputs == ["x"] and net.outputs == ["ip"]
    assert net.layer("data").top_shapes == [(4, 3)]
    assert net.layer("ip").param_shapes == [(5, 3), (5,)]
    # The rewritten definition is an ordinary NetParameter: it compiles to the same net.
    again = compiler.compile_net(deploy.net, phase="TEST", outputs=net.outputs)
    assert [layer.top_shapes for layer in again.layers] == \
        [layer.top_shapes for layer in net.layers]
    assert any("dropped loss layer 'loss'" in note for note in deploy.notes)
    assert any("dropped metric layer 'acc'" in note for note in deploy.notes)
    assert any("pruned input 'label'" in note for note in deploy.notes)


def test_the_deployed_layers_keep_their_places_in_the_file():
    deploy = deployable(compile_text(TRAIN_NET, phase="TEST"))
    assert deploy.compiled.layer("ip").location == ("small.prototxt", 4, 1)


def test_rebatch_compiles_the_net_again_with_a_larger_batch():
    net = deployable(compile_text(TRAIN_NET, phase="TEST")).compiled
    assert input_batch_axes(net) == {"x": 0}
    bigger = rebatch(net, extra=2)
    assert bigger.layer("ip").top_shapes == [(6, 5)]
    assert bigger.outputs == net.outputs


def test_rebatch_refuses_a_net_that_fixes_its_batch_at_the_layer():
    text = '''layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 4 dim: 6 } } }
layer { name: "r" type: "Reshape" bottom: "x" top: "y"
  reshape_param { shape { dim: 4 dim: 2 dim: 3 } } }
'''
    net = deployable(compile_text(text, phase="TEST")).compiled
    with pytest.raises(CompileError, match="does not take another batch size") as caught:
        rebatch(net)
    assert (caught.value.file, caught.value.line) == ("small.prototxt", 2)


def test_chosen_outputs_must_be_blobs_of_the_net():
    with pytest.raises(CompileError, match="output 'nope' is not a blob of the net"):
        compile_text(TRAIN_NET, outputs=["nope"])
    assert compile_text(TRAIN_NET, outputs=["ip", "x"]).outputs == ["ip", "x"]
