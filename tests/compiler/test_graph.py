"""compile_net: versioned blobs, the layer graph, located errors, shared params, loss weights."""

import networkx as nx
import pytest

from compiler import CompileError, compile_net, load_text, parse_text
from compiler.graph import AUTOMATIC_TOP, blob_counts
from compiler.shapes import supported_types
from lrcn_proto import caffe_pb2

FILE = "net.prototxt"
INPUT = ('layer { name: "in" type: "Input" top: "data" '
         'input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }')
INPUTS = ('layer { name: "in" type: "Input" top: "data" top: "label" input_param { '
          'shape { dim: 2 dim: 3 dim: 8 dim: 8 } shape { dim: 2 } } }')


def net_text(*lines):
    return "\n".join(lines) + "\n"


def compile_text(text, **kwargs):
    return compile_net(load_text(text, "net", FILE), **kwargs)


def error_of(text, **kwargs):
    with pytest.raises(CompileError) as caught:
        compile_text(text, **kwargs)
    return caught.value


def where(text, line, token, occurrence=1):
    """(line, col) of the `occurrence`-th `token` on 1-based line `line` of `text`."""
    line_text = text.splitlines()[line - 1]
    col = -1
    for _ in range(occurrence):
        col = line_text.index(token, col + 1)
    return (line, col + 1)


def assert_error_at(error, text, line, token, occurrence=1):
    assert error.file == FILE
    assert (error.line, error.col) == where(text, line, token, occurrence)


# --- versioned blobs and the graph ----------------------------------------------------------------

IN_PLACE = net_text(
    INPUT,
    'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "h" '
    'inner_product_param { num_output: 5 } }',
    'layer { name: "relu" type: "ReLU" bottom: "h" top: "h" }',
    'layer { name: "drop" type: "Dropout" bottom: "h" top: "h" }',
    'layer { name: "out" type: "InnerProduct" bottom: "h" top: "out" '
    'inner_product_param { num_output: 2 } }')


def test_in_place_layers_produce_new_versions():
    net = compile_text(IN_PLACE)
    relu, drop, out = net.layer("relu"), net.layer("drop"), net.layer("out")
    assert (relu.bottoms, relu.tops) == (["h"], ["h@1"])
    assert (drop.bottoms, drop.tops) == (["h@1"], ["h@2"])
    assert out.bottoms == ["h@2"]
    assert (relu.bottom_names, relu.top_names) == (["h"], ["h"])
    assert net.latest == {"data": "data", "h": "h@2", "out": "out"}
    assert net.blobs == {"data": (2, 3, 8, 8), "h": (2, 5), "h@1": (2, 5), "h@2": (2, 5),
                         "out": (2, 2)}
    assert net.inputs == ["data"] and net.outputs == ["out"]


def test_graph_runs_bottom_layer_top_and_is_acyclic():
    net = compile_text(IN_PLACE)
    graph = net.graph
    assert nx.is_directed_acyclic_graph(graph)
    layer_nodes = [node for node in graph if node[0] == "layer"]
    assert layer_nodes == [("layer", name) for name in ("in", "ip", "relu", "drop", "out")]
    assert list(graph.predecessors(("layer", "relu"))) == [("blob", "h")]
    assert list(graph.successors(("layer", "relu"))) == [("blob", "h@1")]
    assert graph.nodes[("blob", "h@1")]["shape"] == (2, 5)
    assert graph.nodes[("blob", "h@1")]["name"] == "h"
    assert graph.nodes[("layer", "relu")]["type"] == "ReLU"
    assert list(nx.topological_sort(graph))[0] == ("layer", "in")


FAN_OUT = net_text(
    INPUT,
    'layer { name: "a" type: "ReLU" bottom: "data" top: "a" }',
    'layer { name: "b" type: "Sigmoid" bottom: "data" top: "b" }',
    'layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "sum" }',
    'layer { name: "twice" type: "Eltwise" bottom: "a" bottom: "a" top: "twice" }')


def test_fan_out_is_recorded_and_outputs_are_unread_blobs():
    net = compile_text(FAN_OUT)
    assert net.graph.nodes[("blob", "data")]["consumers"] == ["a", "b"]
    assert net.graph.nodes[("blob", "a")]["consumers"] == ["sum", "twice"]
    # The same blob read twice is one edge that lists both bottom positions.
    assert net.graph.edges[("blob", "a"), ("layer", "twice")]["indices"] == [0, 1]
    assert net.outputs == ["sum", "twice"]


def test_a_layer_may_overwrite_a_blob_only_in_place():
    text = net_text(INPUT,
                    'layer { name: "a" type: "ReLU" bottom: "data" top: "x" }',
                    'layer { name: "b" type: "ReLU" bottom: "data" top: "x" }')
    error = error_of(text)
    assert error.message == "layer 'b' (ReLU): top 'x' is already produced by layer 'a' (line 2)"
    assert_error_at(error, text, 3, "top:")


def test_repeated_weightless_layer_names_get_distinct_keys():
    net = compile_text(net_text(INPUT,
                                'layer { name: "act" type: "ReLU" bottom: "data" top: "a" }',
                                'layer { name: "act" type: "TanH" bottom: "a" top: "b" }'))
    assert [layer.key for layer in net.layers] == ["in", "act", "act@1"]
    assert net.layer("act@1").type == "TanH"
    assert ("layer", "act@1") in net.graph


def test_same_name_in_different_phases_is_fine():
    text = net_text(
        'layer { name: "fc" type: "Input" top: "data" include { phase: TRAIN } '
        'input_param { shape { dim: 4 dim: 3 } } }',
        'layer { name: "fc" type: "Input" top: "data" include { phase: TEST } '
        'input_param { shape { dim: 1 dim: 3 } } }')
    assert compile_text(text, phase="TEST").blobs["data"] == (1, 3)


# --- located errors ------------------------------------------------------------------------------

def test_unknown_layer_type_suggests_the_closest():
    text = net_text(INPUT, 'layer { name: "c" type: "Convolutoin" bottom: "data" top: "c" }')
    error = error_of(text)
    assert error.message == "layer 'c': unknown layer type 'Convolutoin'"
    assert error.hint == "did you mean 'Convolution' or 'Deconvolution'?"
    assert_error_at(error, text, 2, "type:")


def test_missing_bottom_suggests_known_blobs():
    text = net_text(INPUT, 'layer { name: "r" type: "Eltwise" bottom: "data" bottom: "dta" '
                           'top: "r" }')
    error = error_of(text)
    assert error.message == "layer 'r' (Eltwise): bottom 'dta' is not produced by any earlier layer"
    assert error.hint == "did you mean 'data'?"
    assert_error_at(error, text, 2, "bottom:", occurrence=2)


def test_missing_bottom_names_the_layer_the_net_state_left_out():
    text = net_text(INPUT,
                    'layer { name: "t" type: "ReLU" bottom: "data" top: "t" '
                    'include { phase: TEST } }',
                    'layer { name: "u" type: "ReLU" bottom: "t" top: "u" }')
    error = error_of(text, phase="TRAIN")
    assert error.hint == ("layer 't' (line 2) produces it but is not selected in this NetState "
                          "(TRAIN, stages none, level 0)")
    assert_error_at(error, text, 3, "bottom:")


def test_missing_bottom_names_a_later_producer():
    text = net_text(INPUT,
                    'layer { name: "u" type: "ReLU" bottom: "t" top: "u" }',
                    'layer { name: "t" type: "ReLU" bottom: "data" top: "t" }')
    assert error_of(text).hint == ("layer 't' (line 3) produces it, but after this layer; "
                                   "layers run in file order")


def test_repeated_name_of_layers_with_weights_is_an_error():
    fc = ('layer { name: "fc" type: "InnerProduct" bottom: "data" top: "{top}" '
          'inner_product_param { num_output: 3 } }')
    text = net_text(INPUT, fc.replace("{top}", "f1"), fc.replace("{top}", "f2"))
    error = error_of(text)
    assert error.message == ("layer 'fc' (InnerProduct): the name 'fc' is already used by the "
                             "layer at line 2")
    assert (error.line, error.col) == (3, 1)


COUNT_CASES = [
    ('layer { name: "x" type: "InnerProduct" bottom: "data" bottom: "data" top: "x" '
     'inner_product_param { num_output: 2 } }',
     "layer 'x' (InnerProduct): needs exactly 1 bottom, has 2"),
    ('layer { name: "x" type: "Convolution" bottom: "data" bottom: "data" top: "x" '
     'convolution_param { num_output: 2 kernel_size: 3 } }',
     "layer 'x' (Convolution): needs one top per bottom, has 2 bottoms and 1 top"),
    ('layer { name: "x" type: "Silence" bottom: "data" top: "x" }',
     "layer 'x' (Silence): needs exactly 0 tops, has 1"),
    ('layer { name: "x" type: "Accuracy" bottom: "data" bottom: "label" top: "a" top: "b" '
     'top: "c" }', "layer 'x' (Accuracy): needs 1 to 2 tops, has 3"),
    ('layer { name: "x" type: "Eltwise" bottom: "data" top: "x" }',
     "layer 'x' (Eltwise): needs at least 2 bottoms, has 1"),
    ('layer { name: "x" type: "SoftmaxWithLoss" bottom: "data" bottom: "label" '
     'bottom: "label" top: "x" }', "layer 'x' (SoftmaxWithLoss): needs exactly 2 bottoms, has 3"),
    ('layer { name: "x" type: "LSTM" bottom: "data" top: "x" '
     'recurrent_param { num_output: 4 } }', "layer 'x' (LSTM): needs 2 to 3 bottoms, has 1"),
    ('layer { name: "x" type: "LSTM" bottom: "data" bottom: "label" bottom: "data" top: "x" '
     'recurrent_param { num_output: 4 expose_hidden: true } }',
     "layer 'x' (LSTM): needs 4 to 5 bottoms, has 3"),
    ('layer { name: "x" type: "LSTM" bottom: "data" bottom: "label" bottom: "data" '
     'bottom: "data" top: "x" recurrent_param { num_output: 4 expose_hidden: true } }',
     "layer 'x' (LSTM): needs exactly 3 tops, has 1"),
    ('layer { name: "x" type: "RNN" bottom: "data" bottom: "label" top: "x" top: "y" '
     'recurrent_param { num_output: 4 } }', "layer 'x' (RNN): needs exactly 1 top, has 2"),
    ('layer { name: "x" type: "Pooling" bottom: "data" top: "x" top: "mask" '
     'pooling_param { pool: AVE kernel_size: 2 } }',
     "layer 'x' (Pooling): needs exactly 1 top, has 2"),
    ('layer { name: "x" type: "Input" bottom: "data" top: "x" }',
     "layer 'x' (Input): needs exactly 0 bottoms, has 1"),
    ('layer { name: "x" type: "Slice" bottom: "data" }',
     "layer 'x' (Slice): needs at least 1 top, has 0"),
    ('layer { name: "x" type: "ImageData" top: "x" image_data_param { source: "a.txt" } }',
     "layer 'x' (ImageData): needs exactly 2 tops, has 1"),
]


@pytest.mark.parametrize("layer, message", COUNT_CASES)
def test_wrong_number_of_bottoms_or_tops(layer, message):
    error = error_of(net_text(INPUTS, layer))
    assert error.message == message
    assert (error.line, error.col) == (2, 1)


def test_max_pooling_may_have_a_mask_top():
    net = compile_text(net_text(INPUT, 'layer { name: "p" type: "Pooling" bottom: "data" '
                                       'top: "p" top: "mask" pooling_param { kernel_size: 2 '
                                       'stride: 2 } }'))
    assert net.layer("p").top_shapes == [(2, 3, 4, 4), (2, 3, 4, 4)]


def test_every_supported_type_has_blob_counts():
    for name in supported_types():
        counts = blob_counts(caffe_pb2.LayerParameter(type=name))
        assert counts is not None or name == "Python"


def test_propagate_down_must_match_the_bottoms():
    text = net_text(INPUTS, 'layer { name: "l" type: "EuclideanLoss" bottom: "data" '
                            'bottom: "data" top: "l" propagate_down: true }')
    error = error_of(text)
    assert error.message == "layer 'l' (EuclideanLoss): 1 propagate_down value for 2 bottoms"
    assert_error_at(error, text, 2, "propagate_down:")


def test_loss_weight_must_match_the_tops():
    text = net_text(INPUTS,
                    'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
                    'inner_product_param { num_output: 4 } }',
                    'layer { name: "l" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" '
                    'top: "l" top: "prob" loss_weight: 1 }')
    error = error_of(text)
    assert error.message == "layer 'l' (SoftmaxWithLoss): 1 loss_weight value for 2 tops"
    assert_error_at(error, text, 3, "loss_weight:")


def test_include_and_exclude_on_one_layer_is_located():
    text = net_text(INPUT, 'layer { name: "r" type: "ReLU" bottom: "data" top: "r" '
                           'include { phase: TRAIN } exclude { stage: "x" } }')
    error = error_of(text)
    assert error.message == "layer 'r' has both include and exclude rules"
    assert (error.line, error.col) == (2, 1)


def test_shape_rule_errors_are_located_and_name_the_layer_once():
    text = net_text(INPUT, 'layer { name: "conv1" type: "Convolution" bottom: "data" '
                           'top: "conv1" convolution_param { num_output: 4 } }')
    error = error_of(text)
    assert error.message == "layer 'conv1' (Convolution): has no kernel size"
    assert error.hint
    assert (error.file, error.line, error.col) == (FILE, 2, 1)


def test_too_many_param_specs():
    text = net_text(INPUT, 'layer { name: "r" type: "ReLU" bottom: "data" top: "r" '
                           'param { lr_mult: 1 } }')
    error = error_of(text)
    assert error.message == "layer 'r' (ReLU): 1 param spec for 0 learnable blobs"
    assert_error_at(error, text, 2, "param")


# --- parameters: specs, sharing ---------------------------------------------------------------

def shared_net(first_params, second_params, second_ip="num_output: 4"):
    return net_text(
        INPUT,
        f'layer {{ name: "fc1" type: "InnerProduct" bottom: "data" top: "fc1" {first_params} '
        'inner_product_param { num_output: 4 } }',
        f'layer {{ name: "fc2" type: "InnerProduct" bottom: "data" top: "fc2" {second_params} '
        f'inner_product_param {{ {second_ip} }} }}')


def test_shared_params_form_groups_and_count_once():
    net = compile_text(shared_net('param { name: "w" lr_mult: 2 } param { name: "b" }',
                                  'param { name: "w" } param { name: "b" decay_mult: 0 }'))
    fc1, fc2 = net.layer("fc1"), net.layer("fc2")
    assert net.share_groups["w"] == [("fc1", 0), ("fc2", 0)]
    assert net.share_groups["b"] == [("fc1", 1), ("fc2", 1)]
    assert fc1.share_keys == ["w", "b"]
    # One tensor, one multiplier each: the first stated in the group, whoever states it.
    assert [s.lr_mult for s in fc2.param_specs] == [2, 1]
    assert [s.decay_mult for s in fc1.param_specs] == [1, 0]
    assert fc1.params == fc2.params == 4 * 192 + 4
    assert net.total_params() == 4 * 192 + 4


def test_unshared_blobs_are_keyed_by_layer_and_index():
    net = compile_text(shared_net("", ""))
    assert net.layer("fc1").share_keys == ["fc1/0", "fc1/1"]
    assert net.share_groups["fc2/1"] == [("fc2", 1)]
    assert net.total_params() == 2 * (4 * 192 + 4)
    # Defaults are filled in for blobs without a param block.
    assert [(s.lr_mult, s.decay_mult) for s in net.layer("fc1").param_specs] == [(1, 1), (1, 1)]


def test_strict_sharing_needs_equal_shapes():
    text = shared_net('param { name: "w" }', 'param { name: "w" }', "num_output: 5")
    error = error_of(text)
    assert error.message == ("layer 'fc2' (InnerProduct): cannot share param 'w' owned by layer "
                             "'fc1' (line 2): shape mismatch: the owner's blob has shape "
                             "(4, 192), this layer's (5, 192)")
    assert_error_at(error, text, 3, "param")


def test_permissive_sharing_compares_counts():
    # transpose stores the weight as (K, N): same count, other shape.
    permissive = 'param { name: "w" share_mode: PERMISSIVE }'
    net = compile_text(shared_net('param { name: "w" }', permissive,
                                  "num_output: 4 transpose: true"))
    assert net.layer("fc2").param_shapes[0] == (192, 4)
    error = error_of(shared_net('param { name: "w" }', permissive, "num_output: 5"))
    assert error.message.endswith("count mismatch: the owner's blob has shape (4, 192) "
                                  "(768 values), this layer's (5, 192) (960 values)")
    with pytest.raises(CompileError, match="shape mismatch"):
        compile_text(shared_net('param { name: "w" }', 'param { name: "w" }',
                                "num_output: 4 transpose: true"))


@pytest.mark.parametrize("field", ["lr_mult", "decay_mult"])
def test_sharers_must_agree_on_multipliers(field):
    text = shared_net(f'param {{ name: "w" {field}: 2 }}', f'param {{ name: "w" {field}: 1 }}')
    error = error_of(text)
    assert error.message == (f"layer 'fc2' (InnerProduct): shared param 'w' has {field} 1 here "
                             f"but 2 in layer 'fc1' (line 2)")
    assert_error_at(error, text, 3, "param")


def test_batch_norm_statistics_are_not_learned():
    text = net_text(INPUT, 'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" }')
    specs = compile_text(text).layer("bn").param_specs
    assert [s.lr_mult for s in specs] == [0, 0, 0]
    text = net_text(INPUT, 'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" '
                           'param { lr_mult: 1 } }')
    error = error_of(text)
    assert error.message == ("layer 'bn' (BatchNorm): batch normalization statistics cannot be "
                             "learned, but param 0 has lr_mult 1")
    assert_error_at(error, text, 2, "param")


# --- loss weights -----------------------------------------------------------------------------

LOSSES = net_text(
    INPUTS,
    'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
    'inner_product_param { num_output: 4 } }',
    'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }',
    'layer { name: "loss2" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "l2" '
    'top: "prob" }',
    'layer { name: "acc" type: "Accuracy" bottom: "fc" bottom: "label" top: "acc" }',
    'layer { name: "half" type: "EuclideanLoss" bottom: "fc" bottom: "fc" top: "e" '
    'loss_weight: 0.5 }',
    'layer { name: "reg" type: "ReLU" bottom: "fc" top: "r" loss_weight: 2 }',
    'layer { name: "auto" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" }')


def test_loss_weight_defaults_and_explicit_values():
    net = compile_text(LOSSES)
    weights = {layer.name: layer.loss_weights for layer in net.layers}
    assert weights["fc"] == [0.0]
    assert weights["loss"] == [1.0]
    assert weights["loss2"] == [1.0, 0.0]
    assert weights["acc"] == [0.0]
    assert weights["half"] == [0.5]
    assert weights["reg"] == [2.0]
    assert [layer.name for layer in net.loss_layers()] == ["loss", "loss2", "half", "reg", "auto"]


def test_a_loss_layer_without_a_top_gets_caffes_anonymous_one():
    net = compile_text(LOSSES)
    auto = net.layer("auto")
    assert auto.tops == [AUTOMATIC_TOP] and auto.loss_weights == [1.0]
    assert net.blobs[AUTOMATIC_TOP] == ()
    # Caffe keeps it out of the outputs and out of reach of later bottoms.
    assert AUTOMATIC_TOP not in net.outputs
    error = error_of(LOSSES + 'layer { name: "x" type: "ReLU" bottom: "(automatic)" top: "x" }\n')
    assert error.message == ("layer 'x' (ReLU): bottom '(automatic)' is not produced by any "
                             "earlier layer")


# --- unknown shapes, sources, phases -------------------------------------------------------------

PYTHON_DATA = net_text(
    'layer { name: "py" type: "Python" top: "data" top: "label" '
    'python_param { module: "m" layer: "L" } }',
    'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
    'inner_product_param { num_output: 4 } }')


def test_unknown_data_shapes_propagate_as_none():
    net = compile_text(PYTHON_DATA)
    fc = net.layer("fc")
    assert net.layer("py").top_shapes == [None, None]
    assert fc.bottom_shapes == [None] and fc.top_shapes == [None]
    assert fc.param_shapes is None and fc.params is None and fc.flops is None
    assert net.total_params() is None and net.total_flops() is None


def test_input_shapes_fill_in_unknown_tops():
    net = compile_text(PYTHON_DATA, input_shapes={"data": (5, 7), "label": [5]})
    assert net.layer("py").top_shapes == [(5, 7), (5,)]
    assert net.layer("fc").param_shapes == [(4, 7), (4,)]
    assert net.total_params() == 32
    assert net.total_flops() == net.layer("fc").flops > 0


def test_legacy_v1_layers_and_net_inputs_keep_their_locations():
    text = net_text('input: "data"',
                    'input_dim: 2 input_dim: 3 input_dim: 8 input_dim: 8',
                    'layers { name: "r" type: RELU bottom: "data" top: "r" }',
                    'layers { name: "s" type: SIGMOID bottom: "dta" top: "s" }')
    error = error_of(text)
    assert_error_at(error, text, 4, "bottom:")
    net = compile_text(text.replace('"dta"', '"r"'))
    assert [(layer.name, layer.index, layer.location[1]) for layer in net.layers] == [
        ("input", 0, 1), ("r", 1, 3), ("s", 2, 4)]


def test_sources_path_message_and_state(tmp_path):
    path = tmp_path / "in_place.prototxt"
    path.write_text(IN_PLACE)
    from_path = compile_net(str(path))
    assert from_path.source_file == str(path)
    assert from_path.layer("relu").location == (str(path), 3, 1)
    from_message = compile_net(parse_text(IN_PLACE, "net"))
    assert from_message.layer("relu").location == (None, None, None)
    assert from_message.blobs == from_path.blobs
    given = caffe_pb2.NetState(phase=caffe_pb2.TEST, stage=["a"], level=2)
    stated = compile_net(str(path), state=given)
    assert (stated.phase, stated.stages, stated.level) == ("TEST", ("a",), 2)


def test_a_solver_document_is_refused():
    solver = load_text('net: "x.prototxt"', "solver", "s.prototxt")
    with pytest.raises(CompileError, match="this is a solver definition, not a net"):
        compile_net(solver)


def test_layers_inherit_the_net_phase_unless_they_set_their_own():
    net = compile_text(net_text(INPUT, 'layer { name: "d" type: "Dropout" bottom: "data" '
                                       'top: "d" phase: TEST }'), phase="TRAIN")
    assert net.phase == "TRAIN"
    assert [layer.phase for layer in net.layers] == ["TRAIN", "TEST"]
    assert net.layer("in").param.phase == caffe_pb2.TRAIN
