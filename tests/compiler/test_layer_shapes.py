"""Declarations of the compute layers (compiler/layer_types/) against hand-computed Caffe shapes.

Every expected shape below is worked out from the Caffe source's arithmetic, not from running
the rule; where Caffe and PyTorch disagree the comment shows both.
"""

import pytest

import compiler
from compiler.errors import CompileError
from compiler.layer_types import declaration, declared_types
from compiler.shapes import ShapeContext, infer_layer


def make_layer(type_name, body="", bottoms=1, tops=1):
    """One `layer { ... }` built from text, with bottoms b0.. and tops t0.. ."""
    blobs = [f'bottom: "b{i}"' for i in range(bottoms)] + [f'top: "t{i}"' for i in range(tops)]
    text = f'layer {{ name: "l" type: "{type_name}" {" ".join(blobs)} {body} }}'
    return compiler.parse_text(text, "net").layer[0]


def infer(type_name, body, *bottom_shapes, tops=1, phase="TRAIN"):
    """Check the blob counts and apply the declared rule (one shape per named top)."""
    layer = make_layer(type_name, body, len(bottom_shapes), tops)
    return infer_layer(layer, bottom_shapes, ShapeContext(phase=phase))


def fails(match, type_name, body, *bottom_shapes, tops=1):
    with pytest.raises(CompileError, match=match) as caught:
        infer(type_name, body, *bottom_shapes, tops=tops)
    return caught.value


def test_every_rule_of_this_module_is_registered():
    mine = {name for name in declared_types()
            if declaration(name).rule.__module__.startswith("compiler.layer_types.")}
    assert mine == {
        "AbsVal", "Accuracy", "ArgMax", "BNLL", "BatchNorm", "BatchReindex", "Bias", "Clip",
        "Concat", "ContrastiveLoss", "Convolution", "Crop", "Deconvolution", "Dropout", "ELU",
        "Eltwise", "Embed", "EuclideanLoss", "Exp", "Filter", "Flatten", "HingeLoss", "Im2col",
        "InfogainLoss", "InnerProduct", "Input", "LRN", "LSTM", "LSTMUnit", "Log", "MVN",
        "MultinomialLogisticLoss", "PReLU", "Parameter", "Pooling", "Power", "RNN", "ReLU",
        "Reduction", "Reshape", "SPP", "Scale", "Sigmoid", "SigmoidCrossEntropyLoss", "Silence",
        "Slice", "Softmax", "SoftmaxWithLoss", "Split", "Swish", "TanH", "Threshold", "Tile"}


# ---------------------------------------------------------------------------------------------
# The CaffeNet chain
# ---------------------------------------------------------------------------------------------

def test_caffenet_conv1_pool1_chain():
    conv1 = infer("Convolution", "convolution_param { num_output: 96 kernel_size: 11 stride: 4 }",
                  (10, 3, 227, 227))
    # (227 - 11) / 4 + 1 = 55
    assert conv1.top_shapes == [(10, 96, 55, 55)]
    assert conv1.param_shapes == [(96, 3, 11, 11), (96,)]
    outputs = 10 * 96 * 55 * 55
    assert conv1.flops == 2 * 3 * 11 * 11 * outputs + outputs
    relu1 = infer("ReLU", "", (10, 96, 55, 55))
    assert relu1.top_shapes == [(10, 96, 55, 55)] and relu1.flops == outputs
    pool1 = infer("Pooling", "pooling_param { pool: MAX kernel_size: 3 stride: 2 }",
                  (10, 96, 55, 55))
    # ceil((55 - 3) / 2) + 1 = 26 + 1 = 27
    assert pool1.top_shapes == [(10, 96, 27, 27)]
    assert pool1.flops == 10 * 96 * 27 * 27 * 9
    norm1 = infer("LRN", "lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 }", (10, 96, 27, 27))
    assert norm1.top_shapes == [(10, 96, 27, 27)]


def test_caffenet_conv2_to_fc6():
    conv2 = infer("Convolution", "convolution_param { num_output: 256 pad: 2 kernel_size: 5 "
                                 "group: 2 }", (10, 96, 27, 27))
    # (27 + 4 - 5) / 1 + 1 = 27; weight (256, 96 / 2, 5, 5)
    assert conv2.top_shapes == [(10, 256, 27, 27)]
    assert conv2.param_shapes == [(256, 48, 5, 5), (256,)]
    pool2 = infer("Pooling", "pooling_param { kernel_size: 3 stride: 2 }", (10, 256, 27, 27))
    assert pool2.top_shapes == [(10, 256, 13, 13)]          # ceil(24 / 2) + 1 = 13
    pool5 = infer("Pooling", "pooling_param { kernel_size: 3 stride: 2 }", (10, 256, 13, 13))
    assert pool5.top_shapes == [(10, 256, 6, 6)]            # ceil(10 / 2) + 1 = 6
    fc6 = infer("InnerProduct", "inner_product_param { num_output: 4096 }", (10, 256, 6, 6))
    assert fc6.top_shapes == [(10, 4096)]
    assert fc6.param_shapes == [(4096, 9216), (4096,)]
    assert fc6.flops == 2 * 10 * 9216 * 4096 + 10 * 4096


# ---------------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------------

def pool_hw(body, height, width=None):
    width = height if width is None else width
    return infer("Pooling", f"pooling_param {{ {body} }}", (1, 1, height, width)).top_shapes[0][2:]


def test_pooling_ceil_without_pad():
    # H=13, k=3, s=2, p=0: ceil((13 - 3) / 2) + 1 = 5 + 1 = 6
    assert pool_hw("kernel_size: 3 stride: 2", 13) == (6, 6)
    # H=6, k=3, s=2: ceil(3 / 2) + 1 = 2 + 1 = 3 (PyTorch's default floor mode gives 2)
    assert pool_hw("kernel_size: 3 stride: 2", 6) == (3, 3)


def test_pooling_ceil_with_pad_and_the_drop_rule():
    # H=6, k=3, s=2, p=1: ceil((6 + 2 - 3) / 2) + 1 = ceil(2.5) + 1 = 4;
    # drop rule: (4 - 1) * 2 = 6 >= 6 + 1 = 7? no, so 4 stays.
    assert pool_hw("kernel_size: 3 stride: 2 pad: 1", 6) == (4, 4)
    # H=5, k=2, s=2, p=1: ceil((5 + 2 - 2) / 2) + 1 = ceil(2.5) + 1 = 4;
    # drop rule: (4 - 1) * 2 = 6 >= 5 + 1 = 6: the last window starts in the padding -> 3.
    assert pool_hw("kernel_size: 2 stride: 2 pad: 1", 5) == (3, 3)


def test_pooling_drop_rule_needs_padding_caffe_differs_from_pytorch():
    # H=6, k=1, s=2, p=0: ceil((6 - 1) / 2) + 1 = 3 + 1 = 4. Caffe applies the drop rule only
    # with padding, so 4 stays; PyTorch's ceil_mode drops it ((4 - 1) * 2 = 6 >= 6) -> 3.
    assert pool_hw("kernel_size: 1 stride: 2", 6) == (4, 4)


def test_pooling_drop_rule_applies_to_both_axes_when_either_is_padded():
    # h: k=3, s=2, p=1 on 6: ceil(5 / 2) + 1 = 4; (4 - 1) * 2 = 6 >= 7? no -> 4.
    # w: k=1, s=2, p=0 on 6: ceil(5 / 2) + 1 = 4; the layer has padding (pad_h), so the rule runs
    #    for w too: (4 - 1) * 2 = 6 >= 6 + 0 -> 3.
    body = "kernel_h: 3 kernel_w: 1 stride: 2 pad_h: 1 pad_w: 0"
    assert pool_hw(body, 6) == (4, 3)


def test_pooling_floor_round_mode():
    # H=6, k=3, s=2: floor(3 / 2) + 1 = 1 + 1 = 2 (ceil would give 3)
    assert pool_hw("kernel_size: 3 stride: 2 round_mode: FLOOR", 6) == (2, 2)
    # H=6, k=3, s=2, p=1: floor(5 / 2) + 1 = 3; drop rule: (3 - 1) * 2 = 4 >= 7? no -> 3
    assert pool_hw("kernel_size: 3 stride: 2 pad: 1 round_mode: FLOOR", 6) == (3, 3)


def test_pooling_rectangular_kernel_stride_pad():
    # h: ceil((7 + 2 - 3) / 3) + 1 = 2 + 1 = 3; (3 - 1) * 3 = 6 >= 8? no -> 3
    # w: ceil((9 + 0 - 2) / 1) + 1 = 8
    body = "kernel_h: 3 kernel_w: 2 stride_h: 3 stride_w: 1 pad_h: 1 pad_w: 0"
    assert pool_hw(body, 7, 9) == (3, 8)


def test_global_pooling():
    result = infer("Pooling", "pooling_param { pool: AVE global_pooling: true }", (2, 8, 7, 5))
    assert result.top_shapes == [(2, 8, 1, 1)]
    assert result.flops == 2 * 8 * 7 * 5


def test_max_pooling_may_have_a_mask_top():
    result = infer("Pooling", "pooling_param { kernel_size: 2 stride: 2 }", (1, 3, 4, 4), tops=2)
    assert result.top_shapes == [(1, 3, 2, 2), (1, 3, 2, 2)]
    fails("needs exactly 1 top, has 2", "Pooling", "pooling_param { pool: AVE kernel_size: 2 }",
          (1, 3, 4, 4), tops=2)


def test_pooling_errors():
    error = fails(r"pad_h \(3\) must be smaller than kernel_h \(3\)", "Pooling",
                  "pooling_param { kernel_size: 3 pad: 3 }", (1, 1, 9, 9))
    assert "PyTorch" in error.hint
    fails("has no kernel size", "Pooling", "pooling_param { stride: 2 }", (1, 1, 9, 9))
    fails("both kernel_h and kernel_w", "Pooling", "pooling_param { kernel_h: 2 }", (1, 1, 9, 9))
    fails("not both", "Pooling", "pooling_param { kernel_size: 2 kernel_h: 2 kernel_w: 2 }",
          (1, 1, 9, 9))
    fails("filter size cannot be specified", "Pooling",
          "pooling_param { global_pooling: true kernel_size: 2 }", (1, 1, 9, 9))
    fails("only pad = 0 and stride = 1", "Pooling",
          "pooling_param { global_pooling: true stride: 2 }", (1, 1, 9, 9))
    fails("only for average and max", "Pooling",
          "pooling_param { pool: STOCHASTIC kernel_size: 3 pad: 1 }", (1, 1, 9, 9))
    fails("must have 4 axes", "Pooling", "pooling_param { kernel_size: 2 }", (1, 9, 9))
    fails("pad OR pad_h and pad_w", "Pooling", "pooling_param { kernel_size: 3 pad_h: 1 }",
          (1, 1, 9, 9))
    fails("does not fit", "Pooling", "pooling_param { kernel_size: 5 stride: 2 round_mode: "
                                     "FLOOR }", (1, 1, 2, 2))
    fails("needs exactly 1 bottom, has 2", "Pooling", "pooling_param { kernel_size: 2 }",
          (1, 1, 4, 4), (1, 1, 4, 4))


# ---------------------------------------------------------------------------------------------
# Convolution and Deconvolution
# ---------------------------------------------------------------------------------------------

def test_grouped_convolution():
    result = infer("Convolution", "convolution_param { num_output: 12 kernel_size: 3 group: 4 "
                                  "bias_term: false }", (2, 8, 10, 10))
    assert result.top_shapes == [(2, 12, 8, 8)]
    assert result.param_shapes == [(12, 2, 3, 3)]          # in channels per group: 8 / 4
    assert result.flops == 2 * (2 * 3 * 3) * (2 * 12 * 8 * 8)


def test_dilated_convolution():
    # kernel extent 2 * (3 - 1) + 1 = 5: (10 + 2 * 1 - 5) / 1 + 1 = 8
    result = infer("Convolution", "convolution_param { num_output: 4 kernel_size: 3 dilation: 2 "
                                  "pad: 1 }", (1, 3, 10, 10))
    assert result.top_shapes == [(1, 4, 8, 8)]
    assert result.param_shapes == [(4, 3, 3, 3), (4,)]


def test_convolution_h_w_fields():
    # h: (9 + 2 - 3) / 2 + 1 = 5; w: (12 + 4 - 5) / 1 + 1 = 12
    result = infer("Convolution", "convolution_param { num_output: 6 kernel_h: 3 kernel_w: 5 "
                                  "stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 2 }", (1, 4, 9, 12))
    assert result.top_shapes == [(1, 6, 5, 12)]
    assert result.param_shapes == [(6, 4, 3, 5), (6,)]


def test_convolution_repeated_per_axis_values_and_nd():
    # 3 spatial axes: d (5 + 0 - 1) / 1 + 1 = 5; h (6 + 2 - 3) / 2 + 1 = 3 (integer division of
    # 5 / 2); w (7 + 2 - 3) / 1 + 1 = 7
    result = infer("Convolution", "convolution_param { num_output: 8 kernel_size: 1 "
                                  "kernel_size: 3 kernel_size: 3 pad: 0 pad: 1 pad: 1 stride: 1 "
                                  "stride: 2 stride: 1 }", (2, 3, 5, 6, 7))
    assert result.top_shapes == [(2, 8, 5, 3, 7)]
    assert result.param_shapes == [(8, 3, 1, 3, 3), (8,)]


def test_convolution_axis_and_several_bottoms():
    # axis 2: channels 3, the axes before it are kept, spatial (9 - 3) / 1 + 1 = 7
    result = infer("Convolution", "convolution_param { num_output: 5 kernel_size: 3 axis: 2 }",
                   (4, 2, 3, 9, 9))
    assert result.top_shapes == [(4, 2, 5, 7, 7)]
    assert result.param_shapes == [(5, 3, 3, 3), (5,)]
    two = infer("Convolution", "convolution_param { num_output: 5 kernel_size: 1 }",
                (1, 3, 4, 4), (1, 3, 4, 4), tops=2)
    assert two.top_shapes == [(1, 5, 4, 4), (1, 5, 4, 4)]
    assert two.flops == 2 * (2 * 3 * 16 * 5 + 16 * 5)


def test_convolution_errors():
    error = fails("has no kernel size", "Convolution", "convolution_param { num_output: 4 }",
                  (1, 3, 8, 8))
    assert "kernel_size" in error.hint
    fails(r"num_output \(10\) must be divisible by group \(3\)", "Convolution",
          "convolution_param { num_output: 10 kernel_size: 3 group: 3 }", (1, 6, 8, 8))
    fails(r"input channels \(8\) must be divisible by group \(3\)", "Convolution",
          "convolution_param { num_output: 9 kernel_size: 3 group: 3 }", (1, 8, 8, 8))
    fails("num_output must be positive", "Convolution", "convolution_param { kernel_size: 3 }",
          (1, 3, 8, 8))
    fails("kernel size must be positive", "Convolution",
          "convolution_param { num_output: 4 kernel_h: 3 }", (1, 3, 8, 8))
    fails("given 2 times; 3 spatial axes", "Convolution",
          "convolution_param { num_output: 4 kernel_size: 3 kernel_size: 3 }", (1, 3, 8, 8, 8))
    fails("only be used for 2-D", "Convolution",
          "convolution_param { num_output: 4 kernel_h: 3 kernel_w: 3 }", (1, 3, 8, 8, 8))
    fails("not both", "Convolution",
          "convolution_param { num_output: 4 kernel_size: 3 kernel_h: 3 kernel_w: 3 }",
          (1, 3, 8, 8))
    fails(r"axis -5 is out of range for the 4-D bottom", "Convolution",
          "convolution_param { num_output: 4 kernel_size: 3 axis: -5 }", (1, 3, 8, 8))
    fails("kernel must fit|output size would be", "Convolution",
          "convolution_param { num_output: 4 kernel_size: 5 }", (1, 3, 3, 3))
    fails("same shape", "Convolution", "convolution_param { num_output: 4 kernel_size: 1 }",
          (1, 3, 4, 4), (1, 3, 5, 5), tops=2)
    fails("needs one top per bottom, has 2 bottoms and 1 top", "Convolution",
          "convolution_param { num_output: 4 kernel_size: 1 }", (1, 3, 4, 4), (1, 3, 4, 4))


def test_deconvolution():
    # 2 * (7 - 1) + 4 - 2 * 1 = 14; weight (C_in, num_output / group, k, k)
    result = infer("Deconvolution", "convolution_param { num_output: 8 kernel_size: 4 stride: 2 "
                                    "pad: 1 group: 2 }", (1, 16, 7, 7))
    assert result.top_shapes == [(1, 8, 14, 14)]
    assert result.param_shapes == [(16, 4, 4, 4), (8,)]
    assert result.flops == 2 * (16 * 7 * 7) * (8 // 2) * 16 + 8 * 14 * 14
    # dilation: extent 2 * (3 - 1) + 1 = 5: 1 * (5 - 1) + 5 - 0 = 9
    dilated = infer("Deconvolution", "convolution_param { num_output: 2 kernel_size: 3 "
                                     "dilation: 2 bias_term: false }", (1, 3, 5, 5))
    assert dilated.top_shapes == [(1, 2, 9, 9)]
    assert dilated.param_shapes == [(3, 2, 3, 3)]


# ---------------------------------------------------------------------------------------------
# LRN and elementwise layers
# ---------------------------------------------------------------------------------------------

def test_lrn():
    across = infer("LRN", "lrn_param { local_size: 5 }", (2, 8, 3, 3))
    assert across.top_shapes == [(2, 8, 3, 3)] and across.flops == 2 * 8 * 9 * (5 + 5)
    within = infer("LRN", "lrn_param { local_size: 3 norm_region: WITHIN_CHANNEL }", (2, 8, 3, 3))
    assert within.flops == 2 * 8 * 9 * (9 + 5)
    fails("odd values for local_size", "LRN", "lrn_param { local_size: 4 }", (2, 8, 3, 3))
    fails("must have 4 axes", "LRN", "", (2, 8, 3))


@pytest.mark.parametrize("type_name, body, per_element", [
    ("ReLU", "", 1), ("ReLU", "relu_param { negative_slope: 0.1 }", 2), ("ELU", "", 3),
    ("Sigmoid", "", 3), ("TanH", "", 1), ("AbsVal", "", 1), ("Power", "", 3), ("Exp", "", 3),
    ("Log", "", 3), ("BNLL", "", 3), ("Threshold", "", 1),
    ("Clip", "clip_param { min: -1 max: 1 }", 2), ("Swish", "", 5), ("Dropout", "", 2)])
def test_elementwise_layers_keep_the_shape(type_name, body, per_element):
    result = infer(type_name, body, (20, 100, 7))
    assert result.top_shapes == [(20, 100, 7)]
    assert result.param_shapes == []
    assert result.flops == per_element * 20 * 100 * 7


def test_elementwise_layer_checks():
    fails("base must be strictly positive", "Exp", "exp_param { base: 0 }", (2, 3))
    fails("base must be strictly positive", "Log", "log_param { base: -2 }", (2, 3))
    assert infer("Exp", "exp_param { base: 2 }", (2, 3)).top_shapes == [(2, 3)]
    with pytest.raises(CompileError, match="in-place"):
        layer = compiler.parse_text('layer { name: "a" type: "AbsVal" bottom: "x" top: "x" }',
                                    "net").layer[0]
        infer_layer(layer, [(2, 3)], ShapeContext())
    fails(r"dropout_ratio must be in \[0, 1\)", "Dropout", "dropout_param { dropout_ratio: 1 }",
          (2, 3))
    fails("above max", "Clip", "clip_param { min: 1 max: 0 }", (2, 3))
    fails("needs exactly 1 bottom, has 2", "ReLU", "", (2, 3), (2, 3))


def test_dropout_is_a_copy_at_test():
    assert infer("Dropout", "dropout_param { dropout_ratio: 0.9 }", (384, 4096),
                 phase="TEST").flops == 0


def test_prelu():
    result = infer("PReLU", "", (2, 16, 5, 5))
    assert result.top_shapes == [(2, 16, 5, 5)]
    assert result.param_shapes == [(16,)]
    # channel_shared: prelu_layer.cpp makes a 0-axis blob (vector<int>(0)), one value
    shared = infer("PReLU", "prelu_param { channel_shared: true }", (2, 16, 5, 5))
    assert shared.param_shapes == [()]
    fails("at least 2 axes", "PReLU", "", (16,))


# ---------------------------------------------------------------------------------------------
# InnerProduct and Embed
# ---------------------------------------------------------------------------------------------

def test_inner_product_axis_2():
    result = infer("InnerProduct", "inner_product_param { num_output: 8801 axis: 2 }",
                   (20, 100, 1000))
    assert result.top_shapes == [(20, 100, 8801)]
    assert result.param_shapes == [(8801, 1000), (8801,)]
    assert result.flops == 2 * 2000 * 1000 * 8801 + 2000 * 8801


def test_inner_product_transpose_and_no_bias():
    result = infer("InnerProduct", "inner_product_param { num_output: 10 transpose: true "
                                   "bias_term: false }", (4, 3, 2, 2))
    assert result.top_shapes == [(4, 10)]
    assert result.param_shapes == [(12, 10)]                # (K, N) with transpose
    assert result.flops == 2 * 4 * 12 * 10


def test_inner_product_negative_axis_and_errors():
    result = infer("InnerProduct", "inner_product_param { num_output: 5 axis: -1 }", (2, 3, 4))
    assert result.top_shapes == [(2, 3, 5)] and result.param_shapes == [(5, 4), (5,)]
    error = fails("num_output must be positive", "InnerProduct", "", (2, 3))
    assert "inner_product_param" in error.hint
    fails("axis 3 is out of range", "InnerProduct",
          "inner_product_param { num_output: 5 axis: 3 }", (2, 3, 4))


def test_embed():
    result = infer("Embed", "embed_param { input_dim: 8801 num_output: 1000 bias_term: false }",
                   (20, 100))
    assert result.top_shapes == [(20, 100, 1000)]
    assert result.param_shapes == [(8801, 1000)]
    assert result.flops == 0
    biased = infer("Embed", "embed_param { input_dim: 10 num_output: 4 }", (3,))
    assert biased.top_shapes == [(3, 4)]
    assert biased.param_shapes == [(10, 4), (4,)]
    fails("input_dim must be positive", "Embed", "embed_param { num_output: 4 }", (3,))


# ---------------------------------------------------------------------------------------------
# Reshape, Flatten, Slice, Concat, Split, Silence, Tile, Crop
# ---------------------------------------------------------------------------------------------

def reshape(dims, bottom, extra=""):
    body = " ".join(f"dim: {d}" for d in dims)
    return infer("Reshape", f"reshape_param {{ shape {{ {body} }} {extra} }}", bottom).top_shapes[0]


def test_reshape():
    assert reshape([16, 24, 4096], (384, 4096)) == (16, 24, 4096)
    assert reshape([0, -1], (2, 3, 4, 5)) == (2, 60)               # 0 copies 2; 120 / 2 = 60
    assert reshape([-1, 0, 5], (6, 4, 5)) == (6, 4, 5)             # 120 / (4 * 5) = 6
    # axis 1, num_axes 2 replace (3, 4) by (12,)
    assert reshape([12], (2, 3, 4, 5), "axis: 1 num_axes: 2") == (2, 12, 5)
    # axis -1 means after the last axis: append a 1
    assert reshape([1], (2, 3), "axis: -1") == (2, 3, 1)
    # num_axes 0 inserts
    assert reshape([1], (2, 3), "axis: 1 num_axes: 0") == (2, 1, 3)
    # -1 with axis: 2 * 3 * ? * 5 = 120 -> 4 (the kept axes count)
    assert reshape([-1], (2, 3, 4, 5), "axis: 2 num_axes: 1") == (2, 3, 4, 5)


def test_reshape_errors():
    fails("multiple -1", "Reshape", "reshape_param { shape { dim: -1 dim: -1 } }", (2, 3))
    error = fails(r"bottom count \(30.*divisible by the product of the specified dimensions "
                  r"\(4\)", "Reshape", "reshape_param { shape { dim: -1 dim: 4 } }", (2, 3, 5))
    assert error.hint is None
    error = fails(r"output count \(7.*must match input count \(6", "Reshape",
                  "reshape_param { shape { dim: 7 } }", (2, 3))
    assert "-1" in error.hint
    fails("no corresponding axis", "Reshape", "reshape_param { shape { dim: 0 dim: 0 } }", (6,))
    fails("out of range", "Reshape", "reshape_param { shape { dim: 6 } axis: 3 }", (2, 3))
    fails("end_axis", "Reshape", "reshape_param { shape { dim: 6 } num_axes: 3 }", (2, 3))


def test_flatten():
    assert infer("Flatten", "", (2, 3, 4, 5)).top_shapes == [(2, 60)]
    assert infer("Flatten", "flatten_param { axis: 2 }", (2, 3, 4, 5)).top_shapes == [(2, 3, 20)]
    assert infer("Flatten", "flatten_param { axis: 1 end_axis: 2 }",
                 (2, 3, 4, 5)).top_shapes == [(2, 12, 5)]
    fails("comes before", "Flatten", "flatten_param { axis: 2 end_axis: 1 }", (2, 3, 4, 5))
    with pytest.raises(CompileError, match="in-place"):
        layer = compiler.parse_text('layer { name: "f" type: "Flatten" bottom: "x" top: "x" }',
                                    "net").layer[0]
        infer_layer(layer, [(2, 3)], ShapeContext())


def test_slice_even_and_with_points():
    even = infer("Slice", "slice_param { axis: 2 }", (20, 100, 6), tops=2)
    assert even.top_shapes == [(20, 100, 3), (20, 100, 3)]
    points = infer("Slice", "slice_param { slice_point: 2 slice_point: 5 }", (10, 8), tops=3)
    assert points.top_shapes == [(10, 2), (10, 3), (10, 3)]
    negative = infer("Slice", "slice_param { axis: -1 slice_point: 1 }", (4, 3), tops=2)
    assert negative.top_shapes == [(4, 1), (4, 2)]
    legacy = infer("Slice", "slice_param { slice_dim: 0 }", (4, 3), tops=4)
    assert legacy.top_shapes == [(1, 3)] * 4


def test_slice_errors():
    fails("evenly divide", "Slice", "slice_param { axis: 1 }", (2, 7), tops=2)
    fails("inside \\(0, 8\\)", "Slice", "slice_param { slice_point: 9 }", (10, 8), tops=2)
    fails("increase strictly", "Slice", "slice_param { slice_point: 5 slice_point: 3 }",
          (10, 8), tops=3)
    fails("2 slice_points need 3 tops, got 2", "Slice",
          "slice_param { slice_point: 2 slice_point: 5 }", (10, 8), tops=2)
    fails("slice_dim 2 out of range", "Slice", "slice_param { slice_dim: 2 }", (4, 3), tops=2)


def test_concat():
    assert infer("Concat", "", (2, 3, 4), (2, 5, 4)).top_shapes == [(2, 8, 4)]
    assert infer("Concat", "concat_param { axis: -1 }", (2, 3, 4), (2, 3, 1),
                 (2, 3, 2)).top_shapes == [(2, 3, 7)]
    assert infer("Concat", "concat_param { concat_dim: 0 }", (2, 3), (1, 3)).top_shapes == \
        [(3, 3)]
    fails("same shape except at the concat axis 1", "Concat", "", (2, 3, 4), (2, 5, 5))
    fails("same shape except", "Concat", "", (2, 3, 4), (2, 3))


def test_split_and_silence():
    assert infer("Split", "", (2, 3), tops=3).top_shapes == [(2, 3)] * 3
    silence = infer("Silence", "", (2, 3), (4,), tops=0)
    assert silence.top_shapes == [] and silence.flops == 0
    fails("needs exactly 0 tops, has 1", "Silence", "", (2, 3))


def test_tile():
    assert infer("Tile", "tile_param { tiles: 3 }", (2, 3, 4)).top_shapes == [(2, 9, 4)]
    assert infer("Tile", "tile_param { axis: -1 tiles: 2 }", (2, 3)).top_shapes == [(2, 6)]
    fails("number of tiles must be specified", "Tile", "", (2, 3))


def test_crop():
    result = infer("Crop", "crop_param { axis: 2 offset: 5 }", (1, 21, 44, 44), (1, 3, 34, 34))
    assert result.top_shapes == [(1, 21, 34, 34)]
    per_axis = infer("Crop", "crop_param { axis: 1 offset: 0 offset: 3 offset: 4 }",
                     (1, 21, 44, 44), (1, 21, 34, 30))
    assert per_axis.top_shapes == [(1, 21, 34, 30)]
    # no offset: crop from 0; axes before `axis` keep the data's size even when larger
    assert infer("Crop", "crop_param { axis: 1 }", (2, 21, 44, 44),
                 (1, 3, 34, 34)).top_shapes == [(2, 3, 34, 34)]
    fails("crop for dimension 2 is out of bounds: size 34 at offset 12 in 44", "Crop",
          "crop_param { offset: 12 }", (1, 21, 44, 44), (1, 3, 34, 34))
    fails("must be 1 or equal", "Crop", "crop_param { offset: 1 offset: 2 offset: 3 }",
          (1, 21, 44, 44), (1, 3, 34, 34))


# ---------------------------------------------------------------------------------------------
# Eltwise, Scale, Bias, BatchNorm, MVN
# ---------------------------------------------------------------------------------------------

def test_eltwise():
    result = infer("Eltwise", "eltwise_param { coeff: 1 coeff: -1 }", (2, 3), (2, 3))
    assert result.top_shapes == [(2, 3)]
    assert result.flops == 6 + 2 * 6
    assert infer("Eltwise", "eltwise_param { operation: MAX }", (2, 3), (2, 3),
                 (2, 3)).flops == 2 * 6
    fails(r"bottom 0 is \(2, 3\), bottom 1 is \(3, 2\)", "Eltwise", "", (2, 3), (3, 2))
    fails("one coefficient per input bottom", "Eltwise", "eltwise_param { coeff: 1 }",
          (2, 3), (2, 3))
    fails("only takes coefficients for summation", "Eltwise",
          "eltwise_param { operation: PROD coeff: 1 coeff: 2 }", (2, 3), (2, 3))
    fails("needs at least 2 bottoms, has 1", "Eltwise", "", (2, 3))


def test_eltwise_coeff_blob_of_the_activity_fork():
    # The last bottom holds coefficients: axis 0 = number of inputs, then the inputs' leading axes.
    result = infer("Eltwise", "eltwise_param { coeff_blob: true }", (4, 3), (4, 3), (2, 4))
    assert result.top_shapes == [(4, 3)]
    fails("axis 0", "Eltwise", "eltwise_param { coeff_blob: true }", (4, 3), (4, 3), (3, 4))
    fails("must match", "Eltwise", "eltwise_param { coeff_blob: true }", (4, 3), (4, 3), (2, 5))
    fails("only implemented for operation: SUM", "Eltwise",
          "eltwise_param { coeff_blob: true operation: MAX }", (4, 3), (4, 3), (2, 4))


def test_scale_learned():
    assert infer("Scale", "", (2, 3, 4, 5)).param_shapes == [(3,)]
    assert infer("Scale", "scale_param { bias_term: true }", (2, 3, 4, 5)).param_shapes == \
        [(3,), (3,)]
    assert infer("Scale", "scale_param { axis: 1 num_axes: 2 }", (2, 3, 4, 5)).param_shapes == \
        [(3, 4)]
    assert infer("Scale", "scale_param { num_axes: -1 }", (2, 3, 4, 5)).param_shapes == \
        [(3, 4, 5)]
    assert infer("Scale", "scale_param { num_axes: 0 }", (2, 3, 4, 5)).param_shapes == [()]
    assert infer("Scale", "scale_param { axis: -1 }", (2, 3, 4, 5)).param_shapes == [(5,)]
    fails("extends past", "Scale", "scale_param { axis: 2 num_axes: 3 }", (2, 3, 4, 5))


def test_scale_with_a_second_bottom():
    result = infer("Scale", "", (2, 3, 4, 5), (3, 4))
    assert result.top_shapes == [(2, 3, 4, 5)] and result.param_shapes == []
    # With bias_term, scale_layer.cpp's inner Bias layer learns a blob shaped like bottom 1's
    # span of bottom 0 (num_axes = bottom 1's axis count), even with two bottoms.
    biased = infer("Scale", "scale_param { bias_term: true }", (2, 3, 4, 5), (3, 4))
    assert biased.param_shapes == [(3, 4)]
    # a scalar second bottom applies anywhere (Caffe uses axis 0)
    assert infer("Scale", "scale_param { axis: 3 }", (2, 3, 4, 5), ()).param_shapes == []
    fails(r"bottom shape\[2\] = 4 and scale shape\[1\] = 5", "Scale", "", (2, 3, 4, 5), (3, 5))


def test_bias():
    assert infer("Bias", "", (2, 3, 4)).param_shapes == [(3,)]
    assert infer("Bias", "bias_param { axis: 0 num_axes: 2 }", (2, 3, 4)).param_shapes == \
        [(2, 3)]
    two = infer("Bias", "", (2, 3, 4), (3, 4))
    assert two.top_shapes == [(2, 3, 4)] and two.param_shapes == [] and two.flops == 24
    fails("dimension mismatch", "Bias", "", (2, 3, 4), (4,))


def test_batch_norm():
    result = infer("BatchNorm", "", (2, 16, 5, 5))
    assert result.top_shapes == [(2, 16, 5, 5)]
    assert result.param_shapes == [(16,), (16,), (1,)]
    count = 2 * 16 * 25
    assert result.flops == 5 * count                                   # batch statistics
    assert infer("BatchNorm", "", (2, 16, 5, 5), phase="TEST").flops == 2 * count
    assert infer("BatchNorm", "batch_norm_param { use_global_stats: true }",
                 (2, 16, 5, 5)).flops == 2 * count
    fails("at least 2 axes", "BatchNorm", "", (16,))


def test_mvn():
    assert infer("MVN", "", (2, 3, 4, 4)).top_shapes == [(2, 3, 4, 4)]
    assert infer("MVN", "mvn_param { normalize_variance: false }", (2, 3)).flops == 2 * 6
    fails("at most 4 axes", "MVN", "", (1, 2, 3, 4, 5))


# ---------------------------------------------------------------------------------------------
# Softmax, ArgMax, Reduction
# ---------------------------------------------------------------------------------------------

def test_softmax():
    result = infer("Softmax", "softmax_param { axis: 2 }", (1, 5, 8801))
    assert result.top_shapes == [(1, 5, 8801)] and result.flops == 3 * 5 * 8801
    fails("axis 3 is out of range", "Softmax", "softmax_param { axis: 3 }", (1, 5, 8801))


def test_argmax():
    assert infer("ArgMax", "", (10, 1000)).top_shapes == [(10, 1, 1)]
    assert infer("ArgMax", "argmax_param { top_k: 5 out_max_val: true }",
                 (10, 1000)).top_shapes == [(10, 2, 5)]
    assert infer("ArgMax", "", (10, 5, 3, 3)).top_shapes == [(10, 1, 1, 1)]
    assert infer("ArgMax", "argmax_param { axis: 1 top_k: 3 }", (10, 1000)).top_shapes == \
        [(10, 3)]
    assert infer("ArgMax", "argmax_param { axis: -1 out_max_val: true }",
                 (20, 1, 8801)).top_shapes == [(20, 1, 1)]
    fails(r"top_k \(4\) must be at most the dimension of axis 1 \(3\)", "ArgMax",
          "argmax_param { axis: 1 top_k: 4 }", (10, 3))
    fails("flattened instance", "ArgMax", "argmax_param { top_k: 7 }", (10, 3, 2))


def test_reduction():
    assert infer("Reduction", "", (2, 3, 4)).top_shapes == [()]
    assert infer("Reduction", "reduction_param { axis: 1 }", (2, 3, 4)).top_shapes == [(2,)]
    result = infer("Reduction", "reduction_param { operation: SUMSQ axis: -1 }", (2, 3, 4))
    assert result.top_shapes == [(2, 3)] and result.flops == 2 * 24 + 6


# ---------------------------------------------------------------------------------------------
# Losses and Accuracy
# ---------------------------------------------------------------------------------------------

def test_softmax_with_loss_axis_2():
    result = infer("SoftmaxWithLoss", "softmax_param { axis: 2 } loss_param { ignore_label: -1 }",
                   (20, 100, 8801), (20, 100))
    assert result.top_shapes == [()]
    assert result.flops == 3 * 20 * 100 * 8801 + 2 * 2000
    both = infer("SoftmaxWithLoss", "softmax_param { axis: 2 }", (20, 100, 8801), (20, 100),
                 tops=2)
    assert both.top_shapes == [(), (20, 100, 8801)]


def test_softmax_with_loss_label_count_error():
    # default axis 1: 20 x 8801 positions, but 2000 labels
    error = fails(r"number of labels \(2000.*must match number of predictions \(20 x 8801",
                  "SoftmaxWithLoss", "", (20, 100, 8801), (20, 100))
    assert "(20, 8801)" in error.hint
    fails("same first dimension", "SoftmaxWithLoss", "", (20, 10), (21,))
    fails("needs exactly 2 bottoms, has 1", "SoftmaxWithLoss", "", (20, 10))


def test_a_loss_without_a_top_is_accepted():
    # Caffe adds the loss top itself (AutoTopBlobs)
    assert infer("SoftmaxWithLoss", "", (20, 10), (20,), tops=0).top_shapes == []


def test_other_losses():
    assert infer("SigmoidCrossEntropyLoss", "", (8, 5), (8, 5)).top_shapes == [()]
    fails("same count", "SigmoidCrossEntropyLoss", "", (8, 5), (8, 4))
    euclid = infer("EuclideanLoss", "", (8, 5), (8, 5, 1))
    assert euclid.top_shapes == [()] and euclid.flops == 3 * 40
    fails("same dimension", "EuclideanLoss", "", (8, 5), (8, 4))
    assert infer("HingeLoss", "hinge_loss_param { norm: L2 }", (8, 5), (8,)).flops == 4 * 40
    info = infer("InfogainLoss", "", (8, 5), (8,), (5, 5), tops=2)
    assert info.top_shapes == [(), (8, 5)]
    fails("5 x 5", "InfogainLoss", "", (8, 5), (8,), (4, 4))
    fails("source must be specified", "InfogainLoss", "", (8, 5), (8,))
    assert infer("InfogainLoss", 'infogain_loss_param { source: "H.binaryproto" }',
                 (8, 5), (8,)).top_shapes == [()]
    assert infer("MultinomialLogisticLoss", "", (8, 5), (8, 1, 1, 1)).top_shapes == [()]
    fails("one value per example", "MultinomialLogisticLoss", "", (8, 5), (8, 2))
    assert infer("ContrastiveLoss", "", (8, 5), (8, 5), (8,)).top_shapes == [()]
    fails("same channels", "ContrastiveLoss", "", (8, 5), (8, 4), (8,))
    fails(r"bottom 2 \(8, 2\) must be \(N, 1, 1, 1\)", "ContrastiveLoss", "",
          (8, 5), (8, 5), (8, 2))


def test_accuracy():
    result = infer("Accuracy", "accuracy_param { axis: 2 }", (20, 100, 8801), (20, 100), tops=2)
    assert result.top_shapes == [(), (8801,)]
    assert infer("Accuracy", "accuracy_param { top_k: 5 }", (10, 1000), (10,)).top_shapes == [()]
    fails("top_k .* must be at most the number of classes", "Accuracy",
          "accuracy_param { top_k: 11 }", (10, 10), (10,))
    fails("must match number of predictions", "Accuracy", "", (20, 100, 8801), (20, 100))


# ---------------------------------------------------------------------------------------------
# Input and Parameter
# ---------------------------------------------------------------------------------------------

def test_input():
    one = infer("Input", "input_param { shape { dim: 1 dim: 100 } }", tops=2)
    assert one.top_shapes == [(1, 100), (1, 100)]
    each = infer("Input", "input_param { shape { dim: 1 dim: 100 } shape { dim: 100 dim: 1000 } }",
                 tops=2)
    assert each.top_shapes == [(1, 100), (100, 1000)]
    assert infer("Input", "", tops=1).top_shapes == [None]
    fails("once per top blob", "Input",
          "input_param { shape { dim: 1 } shape { dim: 2 } }", tops=3)
    fails("negative dimension", "Input", "input_param { shape { dim: -1 } }")
    fails("needs exactly 0 bottoms, has 1", "Input", "input_param { shape { dim: 1 } }", (1,))


def test_parameter():
    result = infer("Parameter", "parameter_param { shape { dim: 3 dim: 4 } }")
    assert result.top_shapes == [(3, 4)] and result.param_shapes == [(3, 4)]


# ---------------------------------------------------------------------------------------------
# LSTM, RNN, LSTMUnit
# ---------------------------------------------------------------------------------------------

def test_lstm_params_in_caffe_order():
    result = infer("LSTM", "recurrent_param { num_output: 256 }", (16, 24, 4096), (16, 24))
    assert result.top_shapes == [(16, 24, 256)]
    # W_xc (4H, D), b_c (4H,), W_hc (4H, H)
    assert result.param_shapes == [(1024, 4096), (1024,), (1024, 256)]


def test_lstm_with_static_input():
    result = infer("LSTM", "recurrent_param { num_output: 1000 }",
                   (20, 100, 1000), (20, 100), (100, 1000))
    assert result.top_shapes == [(20, 100, 1000)]
    assert result.param_shapes == [(4000, 1000), (4000,), (4000, 1000), (4000, 1000)]
    # D and Ds from the axes after 1 (x) and after 0 (x_static) respectively
    odd = infer("LSTM", "recurrent_param { num_output: 5 }", (3, 2, 4, 6), (3, 2), (2, 7, 1))
    assert odd.param_shapes == [(20, 24), (20,), (20, 7), (20, 5)]


def test_lstm_expose_hidden():
    body = "recurrent_param { num_output: 8 expose_hidden: true }"
    result = infer("LSTM", body, (5, 3, 4), (5, 3), (1, 3, 8), (1, 3, 8), tops=3)
    assert result.top_shapes == [(5, 3, 8), (1, 3, 8), (1, 3, 8)]      # h, h_T, c_T
    assert result.param_shapes == [(32, 4), (32,), (32, 8)]
    static = infer("LSTM", body, (5, 3, 4), (5, 3), (3, 6), (1, 3, 8), (1, 3, 8), tops=3)
    assert static.param_shapes == [(32, 4), (32,), (32, 6), (32, 8)]
    fails(r"exposed hidden state \(bottom 3\) must have shape \(1, 3, 8\)", "LSTM", body,
          (5, 3, 4), (5, 3), (1, 3, 8), (1, 3, 7), tops=3)
    fails("needs 4 to 5 bottoms, has 2", "LSTM", body, (5, 3, 4), (5, 3), tops=3)
    fails("needs exactly 3 tops, has 1", "LSTM", body, (5, 3, 4), (5, 3), (1, 3, 8), (1, 3, 8))


def test_lstm_flops():
    # T=2, N=3, D=4, H=5 (4H = 20):
    #   x transform 2 * 2 * 3 * 20 * 4 = 960, bias 2 * 3 * 20 = 120
    #   per step: W_hc 2 * 3 * 20 * 5 = 600, cont 3 * 5 = 15, gate sum 3 * 20 = 60,
    #             gate math 10 * 3 * 5 = 150 -> 825, two steps 1650
    result = infer("LSTM", "recurrent_param { num_output: 5 }", (2, 3, 4), (2, 3))
    assert result.flops == 960 + 120 + 1650
    # + static (Ds = 6): once 2 * 3 * 20 * 6 = 720, and one more summand per step 2 * 60
    static = infer("LSTM", "recurrent_param { num_output: 5 }", (2, 3, 4), (2, 3), (3, 6))
    assert static.flops == 960 + 120 + 1650 + 720 + 120


def test_lstm_errors():
    body = "recurrent_param { num_output: 8 }"
    error = fails(r"cont \(bottom 1\) must have exactly 2 axes \(T, N\) = \(5, 3\), got \(5,\)",
                  "LSTM", body, (5, 3, 4), (5,))
    assert "0/1" in error.hint
    fails(r"got \(5, 2\)", "LSTM", body, (5, 3, 4), (5, 2))
    fails("at least 3 axes", "LSTM", body, (5, 3), (5, 3))
    fails(r"x_static \(bottom 2\) must have shape \(N, features...\) with N = 3", "LSTM", body,
          (5, 3, 4), (5, 3), (4, 6))
    fails("num_output must be positive", "LSTM", "", (5, 3, 4), (5, 3))
    fails("needs 2 to 3 bottoms, has 4", "LSTM", body, (5, 3, 4), (5, 3), (3, 2), (3, 2))


def test_rnn():
    result = infer("RNN", "recurrent_param { num_output: 6 }", (4, 2, 3), (4, 2))
    assert result.top_shapes == [(4, 2, 6)]
    # W_xh, b_h, W_hh, W_ho, b_o
    assert result.param_shapes == [(6, 3), (6,), (6, 6), (6, 6), (6,)]
    static = infer("RNN", "recurrent_param { num_output: 6 }", (4, 2, 3), (4, 2), (2, 5))
    assert static.param_shapes == [(6, 3), (6,), (6, 5), (6, 6), (6, 6), (6,)]
    exposed = infer("RNN", "recurrent_param { num_output: 6 expose_hidden: true }",
                    (4, 2, 3), (4, 2), (1, 2, 6), tops=2)
    assert exposed.top_shapes == [(4, 2, 6), (1, 2, 6)]                # o, h_T
    # T=4, N=2, D=3, H=6: x 2*4*2*6*3 = 288 + 48; per step 12 + 144 + 12 + 12 + 144 + 24 = 348
    assert result.flops == 288 + 48 + 4 * 348


def test_lstm_unit():
    result = infer("LSTMUnit", "", (1, 3, 8), (1, 3, 32), (1, 3), tops=2)
    assert result.top_shapes == [(1, 3, 8), (1, 3, 8)]
    assert result.param_shapes == [] and result.flops == 10 * 24
    fails(r"4 \* H = 32 channels", "LSTMUnit", "", (1, 3, 8), (1, 3, 30), (1, 3), tops=2)
    fails(r"cont \(bottom 2\) must have shape \(1, N\)", "LSTMUnit", "",
          (1, 3, 8), (1, 3, 32), (1, 4), tops=2)


# ---------------------------------------------------------------------------------------------
# Error presentation
# ---------------------------------------------------------------------------------------------

def test_errors_name_the_layer_and_carry_no_location():
    error = fails("Convolution layer 'l'", "Convolution", "convolution_param { num_output: 4 }",
                  (1, 3, 8, 8))
    assert error.file is None and error.line is None
    assert "hint: " in str(error)


# ---------------------------------------------------------------------------------------------
# SPP, Im2col, Filter, BatchReindex: the attributes their units and converters read
# ---------------------------------------------------------------------------------------------

def test_spp_resolves_each_level_as_a_pooling():
    # SPPLayer::GetPoolingParam on 7 x 6: level i has 2^i bins, kernel ceil(size / bins),
    # pad (kernel * bins - size + 1) / 2, stride = kernel; Pooling's ceil and drop rules give
    # the bins. Level 1: kernel (4, 3), pad (1, 0): h ceil(5 / 4) + 1 = 3, the third window
    # starts at 8 >= 7 + 1, dropped: 2; w (6 - 3) / 3 + 1 = 2. Level 2: kernel (2, 2), pad
    # (1, 1): h ceil(7 / 2) + 1 = 5, dropped to 4; w 6 / 2 + 1 = 4.
    shapes = infer("SPP", "spp_param { pyramid_height: 3 pool: MAX }", (2, 3, 7, 6))
    levels = shapes.attrs.levels
    assert [level.pooling.kernel for level in levels] == [(7, 6), (4, 3), (2, 2)]
    assert [level.pooling.stride for level in levels] == [(7, 6), (4, 3), (2, 2)]
    assert [level.pooling.pad for level in levels] == [(0, 0), (1, 0), (1, 1)]
    assert [level.top_shape for level in levels] == [(2, 3, 1, 1), (2, 3, 2, 2), (2, 3, 4, 4)]
    assert shapes.top_shapes == [(2, 3 * (1 + 4 + 16))]


def test_im2col_resolves_the_convolution_geometry():
    # kernel_h / kernel_w and pad are read as Convolution reads them; stride and dilation take
    # Caffe's defaults (1). Output: (9 + 2 - 2) / 1 + 1 = 10, (7 + 2 - 3) / 1 + 1 = 7.
    shapes = infer("Im2col", "convolution_param { kernel_h: 2 kernel_w: 3 pad: 1 }",
                   (2, 4, 9, 7))
    attrs = shapes.attrs
    assert (attrs.axis, attrs.kernel, attrs.stride, attrs.pad, attrs.dilation,
            attrs.output_size) == (1, (2, 3), (1, 1), (1, 1), (1, 1), (10, 7))
    assert shapes.top_shapes == [(2, 4 * 6, 10, 7)]


def test_filter_and_batch_reindex_counts():
    shapes = infer("Filter", "", (5, 3), (5, 2, 2), (5, 1), tops=2)
    assert shapes.attrs.num_filtered == 2 and shapes.top_shapes == [(5, 3), (5, 2, 2)]
    shapes = infer("BatchReindex", "", (6, 3), (4,))
    assert shapes.attrs.num_rows == 6 and shapes.top_shapes == [(4, 3)]
