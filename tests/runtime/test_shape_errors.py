"""An in-place layer that changes its blob's shape, an empty blob Caffe's fillers refuse, and a
unit failing on its inputs: each is one CompileError at the layer, never a torch traceback."""

import pytest
import torch

from compiler import CompileError, load_text
from runtime.net import Net

INPUT = 'layer { name: "in" type: "Input" top: "x" input_param { shape { %s } } }\n'

IN_PLACE = [
    ('layer { name: "fc" type: "InnerProduct" bottom: "x" top: "x" '
     'inner_product_param { num_output: 3 } }', "dim: 2 dim: 4", 53,
     "layer 'fc' (InnerProduct): computes 'x' in place but changes its shape from (2, 4) to "
     "(2, 3)"),
    ('layer { name: "r" type: "Reshape" bottom: "x" top: "x" '
     'reshape_param { shape { dim: 8 } } }', "dim: 2 dim: 4", 47,
     "layer 'r' (Reshape): computes 'x' in place but changes its shape from (2, 4) to (8,)"),
    ('layer { name: "c" type: "Convolution" bottom: "x" top: "x" '
     'convolution_param { num_output: 1 kernel_size: 3 } }', "dim: 1 dim: 1 dim: 5 dim: 5", 51,
     "changes its shape from (1, 1, 5, 5) to (1, 1, 3, 3)"),
    ('layer { name: "p" type: "Pooling" bottom: "x" top: "x" '
     'pooling_param { kernel_size: 2 stride: 2 } }', "dim: 1 dim: 1 dim: 4 dim: 4", 47,
     "changes its shape from (1, 1, 4, 4) to (1, 1, 2, 2)"),
]


@pytest.mark.parametrize("layer, dims, col, words", IN_PLACE, ids=["ip", "reshape", "conv",
                                                                   "pool"])
def test_an_in_place_layer_that_changes_the_shape_is_refused(layer, dims, col, words):
    with pytest.raises(CompileError) as caught:
        Net(load_text(INPUT % dims + layer + "\n", "net", "n.prototxt"))
    assert (caught.value.file, caught.value.line, caught.value.col) == ("n.prototxt", 2, col)
    assert words in caught.value.message
    assert caught.value.hint == "give the top a name of its own"


def test_in_place_layers_that_keep_the_shape_still_work():
    net = Net(load_text(INPUT % "dim: 2 dim: 4" + 'layer { name: "r" type: "ReLU" bottom: "x" '
                        'top: "x" }\n', "net"))
    net.zero_inputs()
    assert tuple(net.run()["x"].shape) == (2, 4)


@pytest.mark.parametrize("text, words", [
    (INPUT % "dim: 2 dim: 0" + 'layer { name: "fc" type: "InnerProduct" bottom: "x" top: "y" '
     'inner_product_param { num_output: 3 } }\n',
     "layer 'fc' (InnerProduct): learnable blob 0 of shape (3, 0) is empty, and Caffe's "
     "fillers refuse an empty blob"),
    ('layer { name: "d" type: "DummyData" top: "x" dummy_data_param { shape { dim: 0 dim: 3 } '
     '} }\n', "layer 'd' (DummyData): top 'x' of shape (0, 3) is empty"),
])
def test_empty_blobs_that_caffe_fills_are_refused(text, words):
    with pytest.raises(CompileError) as caught:
        Net(load_text(text, "net", "n.prototxt"))
    assert words in caught.value.message and caught.value.line is not None


def test_a_unit_failing_on_its_input_is_located():
    # An empty batch: the compiler allows it (so does Caffe's Input), the unit cannot run it.
    net = Net(load_text(INPUT % "dim: 0 dim: 4" + 'layer { name: "fc" type: "InnerProduct" '
                        'bottom: "x" top: "y" inner_product_param { num_output: 3 } }\n',
                        "net", "n.prototxt"))
    net.zero_inputs()
    with pytest.raises(CompileError) as caught:
        net.run()
    assert str(caught.value).startswith("n.prototxt:2:1: layer 'fc' (InnerProduct): ")


def test_a_unit_refusing_its_parameters_is_located():
    text = INPUT % "dim: 2 dim: 4" + ('layer { name: "d" type: "Dropout" bottom: "x" top: "y" '
                                      'dropout_param { dropout_ratio: 1.5 } }\n')
    with pytest.raises(CompileError) as caught:
        Net(load_text(text, "net", "n.prototxt"), phase="TRAIN")
    assert str(caught.value).startswith("n.prototxt:2:1: layer 'd' (Dropout): dropout_ratio")


def test_a_unit_refusing_its_input_reads_like_a_compile_error():
    # The unit's own refusal (LayerError), not torch's: one format, file:line:col first.
    net = Net(load_text(INPUT % "dim: 2 dim: 3" + 'layer { name: "e" type: "Embed" '
                        'bottom: "x" top: "y" embed_param { num_output: 4 input_dim: 5 } }\n',
                        "net", "n.prototxt"))
    with pytest.raises(CompileError) as caught:
        net.run({"x": torch.full((2, 3), 7.0)})
    assert str(caught.value).startswith("n.prototxt:2:1: layer 'e' (Embed): index 7.0 is "
                                        "outside [0, 5)")
    assert isinstance(caught.value, ValueError)
