"""Legacy forms -> current schema, as Caffe's upgrade_proto.cpp does it."""

import pytest

from compiler import CompileError, load_text, parse_text, upgrade

V1_NET = '''
name: "old"
input: "data"
input_dim: 10 input_dim: 3 input_dim: 32 input_dim: 32
layers {
  name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1"
  blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
  param: "w" param: "b"
  convolution_param { num_output: 8 kernel_size: 3 }
  include { phase: TRAIN }
}
layers { name: "cat" type: CONCAT bottom: "conv1" bottom: "conv1" top: "cat"
  concat_param { concat_dim: 1 } }
layers { name: "loss" type: SOFTMAX_LOSS bottom: "cat" bottom: "label" top: "loss" }
layers { name: "d" type: DATA top: "x" data_param { source: "db" mean_file: "m.binaryproto"
  crop_size: 227 mirror: true scale: 0.5 } }
'''


def test_v1_layers_become_current_layers():
    net = upgrade(parse_text(V1_NET, "net"))
    assert not net.layers and not net.input and not net.input_dim
    assert [l.name for l in net.layer] == ["input", "conv1", "cat", "loss", "d"]
    assert [l.type for l in net.layer] == ["Input", "Convolution", "Concat", "SoftmaxWithLoss",
                                           "Data"]
    conv = net.layer[1]
    assert [(p.name, p.lr_mult, p.decay_mult) for p in conv.param] == [("w", 1, 1), ("b", 2, 0)]
    assert conv.convolution_param.num_output == 8
    assert conv.include[0].phase == 0


def test_legacy_input_dims_become_an_input_layer_first():
    net = upgrade(parse_text(V1_NET, "net"))
    first = net.layer[0]
    assert list(first.top) == ["data"]
    assert list(first.input_param.shape[0].dim) == [10, 3, 32, 32]


def test_input_shape_form():
    net = upgrade(parse_text('input: "a" input_shape { dim: 2 dim: 5 } input: "b" '
                             'input_shape { dim: 7 } layer { name: "x" type: "ReLU" '
                             'bottom: "a" top: "a" }', "net"))
    assert [list(s.dim) for s in net.layer[0].input_param.shape] == [[2, 5], [7]]
    assert list(net.layer[0].top) == ["a", "b"]
    assert net.layer[1].name == "x"


# Net-level inputs that do not pair up: Caffe's Net::Init refused them (one input_shape per
# input, four input_dim per input, not both forms); each is one located error here.
BAD_INPUTS = [
    ('input: "a"\ninput: "b"\ninput_shape { dim: 1 dim: 2 }\n', 2, 1,
     "2 inputs but 1 input_shape"),
    ('input: "a"\ninput: "b"\ninput_dim: 1\ninput_dim: 2\ninput_dim: 3\ninput_dim: 4\n', 2, 1,
     "2 inputs need 8 input_dim values (4 each), found 4"),
    ('input: "a"\ninput_dim: 1\ninput_dim: 2\ninput_dim: 3\ninput_dim: 4\ninput_dim: 5\n', 6,
     1, "1 input needs 4 input_dim values (4 each), found 5"),
    ('input: "a"\ninput_shape { dim: 1 }\ninput_shape { dim: 2 }\n', 3, 1,
     "1 input but 2 input_shape"),
    ('input: "a"\ninput_shape { dim: 1 }\ninput_dim: 1\n', 3, 1,
     "both input_shape and input_dim"),
    ('input_shape { dim: 1 }\n', 1, 1, "input_shape without any input"),
]


@pytest.mark.parametrize("text, line, col, words", BAD_INPUTS)
def test_mismatched_legacy_inputs_are_located_errors(text, line, col, words):
    document = load_text(text + 'layer { name: "r" type: "ReLU" bottom: "a" top: "c" }\n',
                         "net", "in.prototxt")
    with pytest.raises(CompileError) as caught:
        upgrade(document.message, document)
    error = caught.value
    assert words in error.message, str(error)
    assert (error.file, error.line, error.col) == ("in.prototxt", line, col), str(error)


def test_concat_dim_and_slice_dim_become_axis():
    net = upgrade(parse_text(V1_NET, "net"))
    assert net.layer[2].concat_param.axis == 1
    assert not net.layer[2].concat_param.HasField("concat_dim")
    sliced = upgrade(parse_text('layer { type: "Slice" slice_param { slice_dim: 2 } }', "net"))
    assert sliced.layer[0].slice_param.axis == 2


def test_data_transformation_moves_into_transform_param():
    data = upgrade(parse_text(V1_NET, "net")).layer[4]
    assert data.transform_param.crop_size == 227 and data.transform_param.mirror
    assert data.transform_param.mean_file == "m.binaryproto" and data.transform_param.scale == 0.5
    assert not data.data_param.HasField("crop_size")


def test_window_data_keeps_its_own_scale():
    # window_data_layer.cpp reads window_data_param.scale (and not transform_param.scale).
    net = upgrade(parse_text('layer { type: "WindowData" window_data_param { scale: 0.5 '
                             'crop_size: 9 } }', "net"))
    assert net.layer[0].window_data_param.scale == 0.5
    assert not net.layer[0].transform_param.HasField("scale")
    assert net.layer[0].transform_param.crop_size == 9


def test_old_batch_norm_params_are_frozen():
    net = upgrade(parse_text('layer { type: "BatchNorm" param { lr_mult: 1 } param { lr_mult: 1 }'
                             ' param { lr_mult: 1 } }', "net"))
    assert [(p.lr_mult, p.decay_mult) for p in net.layer[0].param] == [(0, 0)] * 3


def test_upgrade_leaves_its_argument_alone():
    original = parse_text(V1_NET, "net")
    before = original.SerializeToString()
    upgrade(original)
    assert original.SerializeToString() == before


def test_mixing_layer_and_layers_is_located():
    document = load_text('layer { name: "a" }\nlayers { name: "b" }\n', "net", "mix.prototxt")
    with pytest.raises(CompileError) as caught:
        upgrade(document.message, document)
    assert (caught.value.file, caught.value.line, caught.value.col) == ("mix.prototxt", 2, 1)


def test_solver_type_enum_becomes_type_string():
    solver = upgrade(parse_text("base_lr: 0.1 solver_type: ADAGRAD", "solver"))
    assert solver.type == "AdaGrad" and not solver.HasField("solver_type")


def test_kind_is_guessed_from_content():
    assert load_text("base_lr: 0.01 net: 'x.prototxt'").kind == "solver"
    assert load_text("name: 'n' layer { }").kind == "net"
    assert load_text("").kind == "net"
