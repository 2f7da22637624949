"""runtime.onnx_export and lrcn-export: ONNX models checked against runtime.Net in onnxruntime.

Every exported model passes onnx.checker (full_check) and is compared with runtime.Net on the
same random inputs, blob by blob (every top the net computes, not only the outputs), under the
criterion the exporter documents (RTOL relative, with a floor at FLOOR_FRACTION of each blob's
largest magnitude). Weights are drawn with a fan-in scale so that deep nets keep signal (Caffe's
default fillers make many corpus nets output a uniform softmax, which would check nothing).
"""

import math
import os
import re

import numpy as np
import pytest
import torch

import compiler
from runtime.net import Net

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

from runtime import onnx_export as ox  # noqa: E402  (needs onnx)
from runtime.export_cli import export_main  # noqa: E402


# ---------------------------------------------------------------------------------------------
# Helpers


def input_layer(shapes):
    """An Input layer with one top per {name: shape}."""
    tops = " ".join(f'top: "{name}"' for name in shapes)
    dims = " ".join("shape { " + " ".join(f"dim: {d}" for d in shape) + " }"
                    for shape in shapes.values())
    return f'layer {{ name: "input" type: "Input" {tops} input_param {{ {dims} }} }}\n'


def net_text(shapes, layers):
    return f'name: "t"\n{input_layer(shapes)}{layers}'


def randomize(net, seed=0):
    """Informative weights: N(0, 2 / fan_in) for matrices and kernels, N(0, 0.1) for vectors;
    BatchNorm statistics with a positive variance and scale factor 1."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer, unit in zip(net.compiled.layers, net.units):
            if layer.type == "BatchNorm":
                channels = unit.blobs[0].shape[0]
                unit.blobs[0].copy_(torch.randn(channels, generator=generator))
                unit.blobs[1].copy_(torch.rand(channels, generator=generator) + 0.5)
                unit.blobs[2].fill_(1.0)
                continue
            for blob in unit.blobs:
                if blob.dim() >= 2:
                    std = math.sqrt(2.0 / math.prod(blob.shape[1:]))
                else:
                    std = 0.1
                blob.copy_(torch.randn(blob.shape, generator=generator) * std)


def build(text, phase="TEST", input_shapes=None, seed=0, stages=()):
    document = compiler.load_text(text, "net", filename="test.prototxt")
    deploy = ox.load_deployable(document, phase=phase, stages=stages, input_shapes=input_shapes)
    net = Net(deploy.compiled, seed=seed)
    randomize(net, seed)
    return net


def export(net, **options):
    model = ox.export_model(net, **options)
    onnx.checker.check_model(model, full_check=True)
    return model


def assert_matches(model, net, steps=1, blobs=True, seed=0):
    diffs = ox.verify(model, net, seed=seed, steps=steps, blobs=blobs)
    assert diffs and all(d.passed for d in diffs), "\n" + ox.format_report(diffs)
    return diffs


def run_onnx(model, feeds):
    session = ox.onnx_session(model)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds)))


# ---------------------------------------------------------------------------------------------
# One tiny net per supported layer type (and per distinct parameter path)

IMG = {"data": (2, 3, 9, 8)}
SEQ = {"x": (3, 2, 4)}


def layer(name, type_, bottoms, tops, params=""):
    b = " ".join(f'bottom: "{x}"' for x in bottoms)
    t = " ".join(f'top: "{x}"' for x in tops)
    return f'layer {{ name: "{name}" type: "{type_}" {b} {t} {params} }}\n'


def one(type_, params="", shapes=IMG, bottoms=("data",), tops=("y",)):
    return shapes, layer("l", type_, bottoms, tops, params)


LAYER_CASES = {
    # vision
    "conv": one("Convolution", "convolution_param { num_output: 4 kernel_size: 3 stride: 2 "
                "pad: 1 }"),
    "conv_group_dilation_nobias": one(
        "Convolution", "convolution_param { num_output: 6 kernel_size: 3 dilation: 2 group: 3 "
        "bias_term: false }"),
    "conv_hw": one("Convolution", "convolution_param { num_output: 2 kernel_h: 3 kernel_w: 2 "
                   "stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0 }"),
    "conv_axis2_1d": one("Convolution", "convolution_param { num_output: 5 kernel_size: 3 "
                         "axis: 2 }", {"data": (2, 3, 4, 9)}),
    "conv_3d": one("Convolution", "convolution_param { num_output: 2 kernel_size: 2 }",
                   {"data": (1, 2, 4, 5, 3)}),
    "deconv": one("Deconvolution", "convolution_param { num_output: 4 kernel_size: 3 stride: 2 "
                  "pad: 1 }"),
    "deconv_group": one("Deconvolution", "convolution_param { num_output: 6 kernel_size: 2 "
                        "stride: 2 group: 3 }"),
    "pool_max_ceil": one("Pooling", "pooling_param { pool: MAX kernel_size: 3 stride: 2 }"),
    "pool_max_pad": one("Pooling", "pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 }"),
    "pool_max_k_lt_s": one("Pooling", "pooling_param { pool: MAX kernel_size: 2 stride: 3 }",
                           {"data": (1, 2, 8, 10)}),
    "pool_ave_pad": one("Pooling", "pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }"),
    "pool_ave_ceil": one("Pooling", "pooling_param { pool: AVE kernel_size: 3 stride: 2 }"),
    "pool_ave_hw": one("Pooling", "pooling_param { pool: AVE kernel_h: 2 kernel_w: 3 "
                       "stride_h: 1 stride_w: 2 pad_h: 1 pad_w: 1 }"),
    "pool_global_ave": one("Pooling", "pooling_param { pool: AVE global_pooling: true }"),
    "pool_global_max": one("Pooling", "pooling_param { pool: MAX global_pooling: true }"),
    "pool_stochastic_test": one("Pooling", "pooling_param { pool: STOCHASTIC kernel_size: 3 "
                                "stride: 2 }"),
    "lrn_across": one("LRN", "lrn_param { local_size: 5 alpha: 0.5 beta: 0.75 k: 2 }"),
    "lrn_within": one("LRN", "lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 "
                      "norm_region: WITHIN_CHANNEL }"),
    "ip": one("InnerProduct", "inner_product_param { num_output: 5 }"),
    "ip_axis2": one("InnerProduct", "inner_product_param { num_output: 5 axis: 2 }",
                    {"x": (3, 2, 4, 2)}, ("x",)),
    "ip_transpose_nobias": one("InnerProduct", "inner_product_param { num_output: 3 "
                               "transpose: true bias_term: false }", {"x": (4, 6)}, ("x",)),
    "embed": one("Embed", "embed_param { input_dim: 7 num_output: 4 }", {"w": (3, 2)}, ("w",)),
    "embed_nobias": one("Embed", "embed_param { input_dim: 9 num_output: 3 bias_term: false }",
                        {"w": (2, 3, 2)}, ("w",)),
    "batchnorm": one("BatchNorm"),
    "batchnorm_2d": one("BatchNorm", "", {"x": (5, 3)}, ("x",)),
    "batchnorm_batch_stats": one("BatchNorm", "batch_norm_param { use_global_stats: false }"),
    "scale_bias": one("Scale", "scale_param { bias_term: true }"),
    "scale_scalar": one("Scale", "scale_param { num_axes: 0 }"),
    "scale_axes": one("Scale", "scale_param { axis: 1 num_axes: 2 }"),
    "scale_bottom": one("Scale", "scale_param { axis: 0 }", {"data": (2, 3, 4, 4),
                                                             "s": (2, 3)}, ("data", "s")),
    "bias": one("Bias"),
    "bias_bottom": one("Bias", "bias_param { axis: 1 }", {"data": (2, 3, 4), "b": (3, 4)},
                       ("data", "b")),
    "mvn": one("MVN"),
    "mvn_across_mean_only": one("MVN", "mvn_param { across_channels: true "
                                "normalize_variance: false }"),
    "crop": one("Crop", "crop_param { axis: 2 offset: 1 offset: 2 }",
                {"data": (2, 3, 9, 8), "ref": (2, 3, 5, 4)}, ("data", "ref")),
    "spp": one("SPP", "spp_param { pyramid_height: 3 }"),
    "spp_ave_one_level": one("SPP", "spp_param { pyramid_height: 1 pool: AVE }"),
    # (Caffe refuses STOCHASTIC pooling with padding: the bins must divide the sides.)
    "spp_stochastic_test": one("SPP", "spp_param { pyramid_height: 2 pool: STOCHASTIC }",
                               {"data": (2, 3, 8, 8)}),
    "im2col": one("Im2col", "convolution_param { kernel_size: 3 stride: 2 pad: 1 dilation: 2 }"),
    "im2col_axis2_1d": one("Im2col", "convolution_param { kernel_size: 3 axis: 2 }",
                           {"data": (2, 3, 4, 9)}),
    "im2col_3d_hw": one("Im2col", "convolution_param { kernel_size: 2 kernel_size: 3 "
                        "kernel_size: 2 pad: 1 }", {"data": (1, 2, 4, 5, 3)}),
    # neurons
    "relu": one("ReLU"),
    "relu_leaky": one("ReLU", "relu_param { negative_slope: 0.1 }"),
    "prelu": one("PReLU"),
    "prelu_shared": one("PReLU", "prelu_param { channel_shared: true }"),
    "elu": one("ELU", "elu_param { alpha: 0.5 }"),
    "sigmoid": one("Sigmoid"),
    "tanh": one("TanH"),
    "absval": one("AbsVal"),
    "power": one("Power", "power_param { power: 2 scale: 0.5 shift: 3 }"),
    "power_sqrt": one("Power", "power_param { power: 0.5 scale: 0.5 shift: 6 }"),
    "power_constant": one("Power", "power_param { power: 3 scale: 0 shift: 2 }"),
    "exp": one("Exp"),
    "exp_base": one("Exp", "exp_param { base: 2 scale: 0.5 shift: 1 }"),
    "log": one("Log", "log_param { base: 10 scale: 0.5 shift: 6 }"),
    "bnll": one("BNLL"),
    "threshold": one("Threshold", "threshold_param { threshold: 0.2 }"),
    "dropout_test": one("Dropout", "dropout_param { dropout_ratio: 0.3 }"),
    "swish": one("Swish", "swish_param { beta: 1.5 }"),
    "clip": one("Clip", "clip_param { min: -0.5 max: 0.7 }"),
    # structural
    "reshape": one("Reshape", "reshape_param { shape { dim: 0 dim: -1 dim: 4 } }"),
    "reshape_axis": one("Reshape", "reshape_param { shape { dim: 6 dim: 2 } axis: 1 "
                        "num_axes: 1 }", {"data": (2, 12, 5)}),
    "flatten": one("Flatten", "flatten_param { axis: 1 end_axis: 2 }"),
    "slice_points": one("Slice", "slice_param { axis: 1 slice_point: 1 slice_point: 2 }",
                        tops=("a", "b", "c")),
    "slice_equal": one("Slice", "slice_param { axis: 2 }", {"data": (2, 3, 8)},
                       tops=("a", "b")),
    "slice_one": one("Slice", "slice_param { axis: 1 }", tops=("a",)),
    "concat": one("Concat", "concat_param { axis: 1 }", {"a": (2, 3, 4), "b": (2, 5, 4)},
                  ("a", "b")),
    "concat_one": one("Concat", "", {"a": (2, 3)}, ("a",)),
    "split": one("Split", "", tops=("a", "b")),
    "batch_reindex": one("BatchReindex", "", {"data": (4, 3, 2), "i": (6,)}, ("data", "i")),
    "eltwise_sum_coeff": one("Eltwise", "eltwise_param { operation: SUM coeff: 0.5 "
                             "coeff: -2 }", {"a": (2, 3), "b": (2, 3)}, ("a", "b")),
    "eltwise_prod": one("Eltwise", "eltwise_param { operation: PROD }",
                        {"a": (2, 3), "b": (2, 3), "c": (2, 3)}, ("a", "b", "c")),
    "eltwise_max": one("Eltwise", "eltwise_param { operation: MAX }",
                       {"a": (2, 3), "b": (2, 3), "c": (2, 3)}, ("a", "b", "c")),
    "eltwise_coeff_blob": one("Eltwise", "eltwise_param { operation: SUM coeff_blob: true }",
                              {"a": (2, 3, 4), "b": (2, 3, 4), "k": (2, 2)}, ("a", "b", "k")),
    "tile": one("Tile", "tile_param { axis: 1 tiles: 3 }"),
    "argmax_axis": one("ArgMax", "argmax_param { axis: 1 top_k: 2 }"),
    "argmax_axis_values": one("ArgMax", "argmax_param { axis: 3 top_k: 2 out_max_val: true }"),
    "argmax_flat": one("ArgMax", "argmax_param { top_k: 3 out_max_val: true }"),
    "argmax_flat_index": one("ArgMax", "", {"x": (4, 6)}, ("x",)),
    "reduction_sum": one("Reduction", "reduction_param { operation: SUM axis: 1 }"),
    "reduction_asum": one("Reduction", "reduction_param { operation: ASUM axis: 2 }"),
    "reduction_sumsq": one("Reduction", "reduction_param { operation: SUMSQ axis: -1 }"),
    "reduction_mean_all": one("Reduction", "reduction_param { operation: MEAN coeff: 2 }"),
    "softmax": one("Softmax"),
    "softmax_axis": one("Softmax", "softmax_param { axis: -1 }"),
    "parameter": ({"a": (2, 3)}, layer("p", "Parameter", (), ("p",),
                                       "parameter_param { shape { dim: 2 dim: 3 } }")
                  + layer("l", "Eltwise", ("a", "p"), ("y",))),
    # recurrent
    "lstm": one("LSTM", "recurrent_param { num_output: 5 }", {**SEQ, "cont": (3, 2)},
                ("x", "cont")),
    "lstm_static": one("LSTM", "recurrent_param { num_output: 5 }",
                       {"x": (3, 2, 2, 2), "cont": (3, 2), "s": (2, 3)}, ("x", "cont", "s")),
    "lstm_expose": one("LSTM", "recurrent_param { num_output: 5 expose_hidden: true }",
                       {**SEQ, "cont": (3, 2), "h0": (1, 2, 5), "c0": (1, 2, 5)},
                       ("x", "cont", "h0", "c0"), ("h", "hT", "cT")),
    "rnn": one("RNN", "recurrent_param { num_output: 5 }", {**SEQ, "cont": (3, 2)},
               ("x", "cont")),
    "rnn_static_expose": one("RNN", "recurrent_param { num_output: 4 expose_hidden: true }",
                             {**SEQ, "cont": (3, 2), "s": (2, 3), "h0": (1, 2, 4)},
                             ("x", "cont", "s", "h0"), ("o", "hT")),
    "lstm_unit": one("LSTMUnit", "", {"c_prev": (1, 2, 3), "gates": (1, 2, 12),
                                      "cont": (1, 2)}, ("c_prev", "gates", "cont"),
                     ("c", "h")),
}


def test_every_exportable_type_has_a_case():
    covered = set()
    for shapes, text in LAYER_CASES.values():
        covered.update(re.findall(r'type: "(\w+)"', text))
    assert set(ox.exportable_types()) - {"Input"} <= covered


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_layer_exports_with_caffe_semantics(case):
    shapes, layers = LAYER_CASES[case]
    net = build(net_text(shapes, layers))
    assert_matches(export(net), net)


@pytest.mark.parametrize("opset", [ox.MIN_OPSET, 18, ox.MAX_OPSET])
@pytest.mark.parametrize("case", ["mvn", "batchnorm_batch_stats", "reduction_mean_all",
                                  "slice_points", "pool_ave_pad", "embed", "lstm_static",
                                  "spp", "im2col_3d_hw", "batch_reindex"])
def test_opsets(case, opset):
    shapes, layers = LAYER_CASES[case]
    net = build(net_text(shapes, layers))
    model = export(net, opset=opset)
    assert model.opset_import[0].version == opset
    assert_matches(model, net)


def test_embed_padding_index_reads_a_zero_row_and_indices_truncate():
    shapes, layers = LAYER_CASES["embed_nobias"]
    net = build(net_text(shapes, layers))
    words = np.array([[[-1, 3], [8, 0], [2.7, -1]], [[5, 5], [-1, 1], [0.2, 7.9]]], np.float32)
    with torch.no_grad():
        expected = net.run({"w": torch.from_numpy(words)})["y"].numpy()
    actual = run_onnx(export(net), {"w": words})["y"]
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=0)
    assert not actual[words == -1].any()


def test_batch_reindex_truncates_and_repeats_indices_as_the_net():
    shapes, layers = LAYER_CASES["batch_reindex"]
    net = build(net_text(shapes, layers))
    feeds = {"data": np.random.default_rng(0).standard_normal((4, 3, 2)).astype(np.float32),
             "i": np.array([3, 0, 0, 2.7, 1, 3], np.float32)}
    expected = net(**{k: torch.from_numpy(v) for k, v in feeds.items()})["y"].numpy()
    np.testing.assert_array_equal(run_onnx(export(net), feeds)["y"], expected)


def test_argmax_ties_break_as_caffe():
    net = build(net_text({"x": (2, 6)}, layer("l", "ArgMax", ("x",), ("y",),
                                                "argmax_param { axis: 1 top_k: 3 }")))
    x = np.array([[1, 3, 3, 0, 3, 2], [5, 5, 1, 5, 0, 0]], np.float32)
    with torch.no_grad():
        expected = net.run({"x": torch.from_numpy(x)})["y"].numpy()
    actual = run_onnx(export(net), {"x": x})["y"]
    # Caffe: equal values by index descending.
    np.testing.assert_array_equal(expected, [[4, 2, 1], [3, 1, 0]])
    np.testing.assert_array_equal(actual, expected)


def test_max_pool_padding_never_wins():
    # All inputs negative: a zero-padded max pool would return 0 on the borders.
    net = build(net_text({"x": (1, 2, 5, 5)}, layer(
        "p", "Pooling", ("x",), ("y",), "pooling_param { pool: MAX kernel_size: 3 stride: 2 "
                                        "pad: 1 }")))
    x = -1 - np.random.default_rng(0).random((1, 2, 5, 5)).astype(np.float32)
    with torch.no_grad():
        expected = net.run({"x": torch.from_numpy(x)})["y"].numpy()
    actual = run_onnx(export(net), {"x": x})["y"]
    assert (actual < -1).all()
    np.testing.assert_array_equal(actual, expected)


# ---------------------------------------------------------------------------------------------
# Recurrent semantics


LSTM_NET = (input_layer({"x": (6, 3, 4), "cont": (6, 3), "s": (3, 5)})
            + layer("lstm1", "LSTM", ("x", "cont", "s"), ("h",),
                    "recurrent_param { num_output: 7 }")
            + layer("out", "InnerProduct", ("h",), ("y",),
                    "inner_product_param { num_output: 2 axis: 2 }"))


def test_lstm_cont_resets_mid_sequence_with_static_input():
    net = build(LSTM_NET)
    model = export(net)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 3, 4)).astype(np.float32)
    s = rng.standard_normal((3, 5)).astype(np.float32)
    cont = np.ones((6, 3), np.float32)
    cont[0] = 0
    cont[3, 0] = 0      # sequence 0 restarts at t = 3
    cont[2, 2] = 0      # sequence 2 restarts at t = 2
    with torch.no_grad():
        net.reset_state()
        expected = net.run({"x": torch.from_numpy(x), "cont": torch.from_numpy(cont),
                            "s": torch.from_numpy(s)})["y"].numpy()
    actual = run_onnx(model, {"x": x, "cont": cont, "s": s})["y"]
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)
    # A restart forgets everything before it: other inputs before t = 3 leave sequence 0's
    # outputs from t = 3 on unchanged (and change them before).
    x2 = x.copy()
    x2[:3, 0] = rng.standard_normal((3, 4))
    changed = run_onnx(model, {"x": x2, "cont": cont, "s": s})["y"]
    np.testing.assert_array_equal(changed[3:, 0], actual[3:, 0])
    assert not np.allclose(changed[:3, 0], actual[:3, 0])
    # The static input enters every step.
    s2 = s.copy()
    s2[1] += 1
    assert not np.allclose(run_onnx(model, {"x": x, "cont": cont, "s": s2})["y"][:, 1],
                           actual[:, 1])


LM_NET = (input_layer({"cont": (1, 3), "words": (1, 3), "image": (3, 6)})
          + layer("embed", "Embed", ("words",), ("e",),
                  "embed_param { input_dim: 11 num_output: 4 bias_term: false }")
          + layer("lstm1", "LSTM", ("e", "cont"), ("h1",), "recurrent_param { num_output: 5 }")
          + layer("lstm2", "LSTM", ("h1", "cont", "image"), ("h2",),
                  "recurrent_param { num_output: 6 }")
          + layer("predict", "InnerProduct", ("h2",), ("logits",),
                  "inner_product_param { num_output: 11 axis: 2 }")
          + layer("probs", "Softmax", ("logits",), ("probs",), "softmax_param { axis: 2 }"))


def test_step_export_carries_state_like_the_net():
    net = build(LM_NET)
    model = export(net, step=True)
    names = {i.name for i in model.graph.input}
    assert names == {"cont", "words", "image", "lstm1.h0", "lstm1.c0", "lstm2.h0", "lstm2.c0"}
    assert [o.name for o in model.graph.output] == ["probs", "lstm1.hT", "lstm1.cT",
                                                    "lstm2.hT", "lstm2.cT"]
    rng = np.random.default_rng(2)
    steps = 5
    words = rng.integers(0, 11, (steps, 3)).astype(np.float32)
    cont = np.ones((steps, 3), np.float32)
    cont[0] = 0
    cont[2, 1] = 0      # sequence 1 restarts at step 2
    image = rng.standard_normal((3, 6)).astype(np.float32)
    session = ox.onnx_session(model)
    out_names = [o.name for o in session.get_outputs()]
    states = {name: np.zeros((1, 3, 5 if "lstm1" in name else 6), np.float32)
              for name in names if "." in name}
    onnx_probs, net_probs = [], []
    net.reset_state()
    for t in range(steps):
        feeds = {"cont": cont[t:t + 1], "words": words[t:t + 1], "image": image}
        results = dict(zip(out_names, session.run(None, {**feeds, **states})))
        states = {name: results[name[:-1] + "T"] for name in states}
        onnx_probs.append(results["probs"])
        with torch.no_grad():
            net_probs.append(net.run({k: torch.from_numpy(v) for k, v in feeds.items()})
                             ["probs"].numpy())
    onnx_probs, net_probs = np.concatenate(onnx_probs), np.concatenate(net_probs)
    np.testing.assert_allclose(onnx_probs, net_probs, rtol=1e-4, atol=1e-7)
    # One T = 5 call of the same net (same weights) gives the same probabilities.
    long_net = build(LM_NET, input_shapes={"cont": (steps, 3), "words": (steps, 3)})
    long_net.share_weights_from(net)
    with torch.no_grad():
        whole = long_net.run({"cont": torch.from_numpy(cont), "words": torch.from_numpy(words),
                              "image": torch.from_numpy(image)})["probs"].numpy()
    np.testing.assert_allclose(onnx_probs, whole, rtol=1e-4, atol=1e-7)
    # And verify's chained calls agree too, blob by blob.
    assert_matches(model, net, steps=3)


def test_step_export_needs_a_recurrent_layer():
    net = build(net_text(*LAYER_CASES["relu"]))
    with pytest.raises(compiler.CompileError, match="no LSTM / RNN layer"):
        ox.export_model(net, step=True)


# ---------------------------------------------------------------------------------------------
# Naming


def test_names_follow_the_prototxt():
    text = net_text({"data": (1, 2, 6, 6)},
                    layer("conv1", "Convolution", ("data",), ("conv1",),
                          "convolution_param { num_output: 3 kernel_size: 3 }")
                    + layer("relu1", "ReLU", ("conv1",), ("conv1",))
                    + layer("pool1", "Pooling", ("conv1",), ("pool1",),
                            "pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }"))
    model = export(build(text))
    nodes = {node.name: node for node in model.graph.node}
    # In place: the last version of a blob has its name, earlier ones name@k.
    assert list(nodes["conv1"].output) == ["conv1@0"]
    assert list(nodes["relu1"].input) == ["conv1@0"] and list(nodes["relu1"].output) == ["conv1"]
    assert list(nodes["conv1"].input) == ["data", "conv1/weight", "conv1/bias"]
    # A layer needing several nodes names them "<layer>/<part>"; its top keeps the blob name.
    pool_nodes = [n for n in model.graph.node if n.name.startswith("pool1/")]
    assert len(pool_nodes) > 1 and pool_nodes[-1].output[0] == "pool1"
    assert "relu1" in nodes["relu1"].doc_string and "test.prototxt:" in nodes["relu1"].doc_string
    assert [o.name for o in model.graph.output] == ["pool1"]
    # Shapes are on every edge.
    assert {v.name for v in model.graph.value_info} >= {"conv1@0", "conv1"}


def test_input_rewritten_in_place_keeps_its_name():
    text = net_text({"data": (2, 3)}, layer("scale", "Power", ("data",), ("data",),
                                            "power_param { scale: 2 }")
                    + layer("act", "TanH", ("data",), ("y",)))
    net = build(text)
    model = export(net)
    assert [i.name for i in model.graph.input] == ["data"]
    assert list(model.graph.node[0].output) == ["data@1"]
    assert_matches(model, net)


# ---------------------------------------------------------------------------------------------
# Train nets: the data-free part


TRAIN_NET = """name: "train"
layer { name: "data" type: "Data" top: "data" top: "label"
        data_param { source: "missing_lmdb" batch_size: 4 backend: LMDB } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        inner_product_param { num_output: 6 } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "drop1" type: "Dropout" bottom: "ip1" top: "ip1"
        dropout_param { dropout_ratio: 0.5 } }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param { num_output: 3 } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy"
        include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""


def test_train_net_exports_its_data_free_part():
    document = compiler.load_text(TRAIN_NET, "net", filename="train.prototxt")
    with pytest.raises(compiler.CompileError, match=r"--input-shape data="):
        ox.load_deployable(document)
    deploy = ox.load_deployable(document, input_shapes={"data": (4, 1, 5, 5), "label": (4,)})
    assert deploy.compiled.inputs == ["data"] and deploy.compiled.outputs == ["ip2"]
    assert any("dropped loss layer 'loss'" in n for n in deploy.notes)
    assert any("dropped metric layer 'accuracy'" in n for n in deploy.notes)
    net = Net(deploy.compiled)
    randomize(net)
    model = export(net)
    assert [i.name for i in model.graph.input] == ["data"]
    assert [o.name for o in model.graph.output] == ["ip2"]
    assert_matches(model, net)


def test_train_phase_dropout_is_refused_with_its_location():
    document = compiler.load_text(TRAIN_NET, "net", filename="train.prototxt")
    with pytest.raises(compiler.CompileError) as error:
        ox.load_deployable(document, phase="TRAIN",
                           input_shapes={"data": (4, 1, 5, 5), "label": (4,)})
    assert str(error.value).startswith("train.prototxt:7:1: ")
    assert "'drop1' (Dropout) cannot be exported" in str(error.value)


# ---------------------------------------------------------------------------------------------
# lrcn-export


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_cli_export_and_check(tmp_path, capsys):
    net_file = write(tmp_path, "lm.prototxt", LM_NET)
    out = str(tmp_path / "lm.onnx")
    with pytest.raises(SystemExit) as done:
        export_main([net_file, "-o", out, "--check", "--step"])
    printed = capsys.readouterr().out
    assert done.value.code == 0, printed
    assert "check passed" in printed and "probs" in printed
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    assert "lstm2.c0" in {i.name for i in model.graph.input}


def test_cli_check_fails_on_a_wrong_conversion(tmp_path, capsys, monkeypatch):
    # A Sigmoid exported as Tanh must fail the check (exit 1), not pass quietly.
    monkeypatch.setitem(ox.registry._CONVERTERS, "Sigmoid",
                        ox.registry._Converter(ox.neuron._simple("Tanh")))
    shapes, layers = LAYER_CASES["sigmoid"]
    net_file = write(tmp_path, "s.prototxt", net_text(shapes, layers))
    with pytest.raises(SystemExit) as done:
        export_main([net_file, "-o", str(tmp_path / "s.onnx"), "--check"])
    captured = capsys.readouterr()
    assert done.value.code == 1
    assert "FAIL" in captured.out and "check failed" in captured.err


def test_cli_weights_become_initializers(tmp_path, capsys):
    shapes, layers = LAYER_CASES["ip"]
    net_file = write(tmp_path, "ip.prototxt", net_text(shapes, layers))
    net = Net(net_file)
    randomize(net, seed=5)
    weights = str(tmp_path / "ip.caffemodel")
    net.save(weights)
    out = str(tmp_path / "ip.onnx")
    with pytest.raises(SystemExit) as done:
        export_main([net_file, "--weights", weights, "-o", out, "--check"])
    assert done.value.code == 0, capsys.readouterr()
    initializers = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(out).graph.initializer}
    np.testing.assert_array_equal(initializers["l/weight"], net.params["l"][0].data)
    np.testing.assert_array_equal(initializers["l/bias"], net.params["l"][1].data)


@pytest.mark.parametrize("net_text_, batch", [
    (net_text({"data": (2, 1, 8, 8)},
              layer("conv", "Convolution", ("data",), ("conv",),
                    "convolution_param { num_output: 3 kernel_size: 3 }")
              + layer("pool", "Pooling", ("conv",), ("pool",),
                      "pooling_param { pool: AVE kernel_size: 2 stride: 2 pad: 1 }")
              + layer("flat", "Flatten", ("pool",), ("flat",))
              + layer("ip", "InnerProduct", ("flat",), ("ip",),
                      "inner_product_param { num_output: 4 }")
              + layer("norm", "MVN", ("ip",), ("norm",))), 5),
    (LM_NET, 4),
    (net_text({"data": (2, 2, 7, 6)},
              layer("cols", "Im2col", ("data",), ("cols",),
                    "convolution_param { kernel_size: 3 stride: 2 pad: 1 }")
              + layer("spp", "SPP", ("cols",), ("spp",), "spp_param { pyramid_height: 2 }")), 3),
])
def test_cli_dynamic_batch(tmp_path, capsys, net_text_, batch):
    net_file = write(tmp_path, "net.prototxt", net_text_)
    out = str(tmp_path / "net.onnx")
    with pytest.raises(SystemExit) as done:
        export_main([net_file, "-o", out, "--dynamic-batch", "--check"])
    printed = capsys.readouterr().out
    assert done.value.code == 0, printed
    assert "check (batch + 1)" in printed
    model = onnx.load(out)
    for value in list(model.graph.input) + list(model.graph.output):
        assert ox.BATCH_DIM in [d.dim_param for d in value.type.tensor_type.shape.dim]
    # Any batch size runs.
    feeds = {}
    for value in model.graph.input:
        dims = [batch if d.dim_param else d.dim_value for d in value.type.tensor_type.shape.dim]
        feeds[value.name] = np.ones(dims, np.float32)
    outputs = run_onnx(model, feeds)
    assert all(batch in o.shape for o in outputs.values())


def test_dynamic_batch_sizes_are_expressions_in_n():
    text = net_text({"x": (3, 2, 4), "cont": (3, 2), "extra": (1, 4)},
                    layer("lstm", "LSTM", ("x", "cont"), ("h",),
                          "recurrent_param { num_output: 4 }")
                    + layer("rows", "Reshape", ("h",), ("rows",),
                            "reshape_param { shape { dim: -1 dim: 4 } }")
                    + layer("cat", "Concat", ("rows", "extra"), ("cat",),
                            "concat_param { axis: 0 }"))
    deploy = ox.load_deployable(compiler.load_text(text, "net"))
    assert ox.input_batch_axes(deploy.compiled) == {"x": 1, "cont": 1, "extra": 0}
    with pytest.raises(compiler.CompileError, match="different batch sizes"):
        ox.batch_axes(deploy.compiled)
    deploy = ox.load_deployable(compiler.load_text(text, "net"), input_shapes={"extra": (2, 4)})
    dynamic = ox.batch_axes(deploy.compiled)
    assert dynamic.dim("h") == (1, "N")
    assert dynamic.dim("rows") == (0, "3*N")
    assert dynamic.dim("cat") == (0, "4*N")
    net = Net(deploy.compiled)
    randomize(net)
    model = export(net, dynamic=dynamic)
    outputs = run_onnx(model, {"x": np.ones((3, 5, 4), np.float32),
                               "cont": np.ones((3, 5), np.float32),
                               "extra": np.ones((5, 4), np.float32)})
    assert outputs["cat"].shape == (20, 4)


def test_shared_weights_are_stored_once():
    shared = 'param { name: "w" } param { name: "b" } inner_product_param { num_output: 3 }'
    net = build(net_text({"a": (2, 4), "b": (2, 4)},
                         layer("ip_a", "InnerProduct", ("a",), ("ya",), shared)
                         + layer("ip_b", "InnerProduct", ("b",), ("yb",), shared)))
    model = export(net)
    assert [t.name for t in model.graph.initializer] == ["ip_a/weight", "ip_a/bias"]
    assert list(model.graph.node[1].input) == ["b", "ip_a/weight", "ip_a/bias"]
    assert_matches(model, net)


def test_cli_dynamic_batch_refused_where_a_reshape_fixes_it(tmp_path, capsys):
    net_file = write(tmp_path, "net.prototxt", net_text(
        {"data": (4, 3)}, layer("r", "Reshape", ("data",), ("r",),
                                "reshape_param { shape { dim: 2 dim: 6 } }")))
    with pytest.raises(SystemExit) as done:
        export_main([net_file, "-o", str(tmp_path / "n.onnx"), "--dynamic-batch"])
    assert done.value.code == 1
    assert "--dynamic-batch" in capsys.readouterr().err


@pytest.mark.parametrize("layer_text, message", [
    (layer("pool", "Pooling", ("data",), ("pool", "mask"),
           "pooling_param { pool: MAX kernel_size: 2 }"), "the MAX pooling mask top"),
    (layer("py", "Python", ("data",), ("py",), 'python_param { module: "m" layer: "L" }'),
     "a Python layer runs arbitrary Python code"),
])
def test_cli_unsupported_layer_is_one_located_error(tmp_path, capsys, layer_text, message):
    net_file = write(tmp_path, "bad.prototxt", net_text({"data": (1, 2, 4, 4)}, layer_text))
    with pytest.raises(SystemExit) as done:
        export_main([net_file, "-o", str(tmp_path / "bad.onnx")])
    assert done.value.code == 1
    error = capsys.readouterr().err.strip()
    name = re.search(r'name: "(\w+)"', layer_text).group(1)
    assert error.startswith(f"{net_file}:3:1: layer '{name}'"), error
    assert message in error
    assert not os.path.exists(tmp_path / "bad.onnx")


def test_filter_is_refused_with_its_reason(tmp_path, capsys):
    net_file = write(tmp_path, "filter.prototxt", net_text(
        {"data": (4, 3), "keep": (4,)}, layer("f", "Filter", ("data", "keep"), ("kept",))))
    with pytest.raises(SystemExit) as done:
        export_main([net_file, "-o", str(tmp_path / "f.onnx")])
    assert done.value.code == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"{net_file}:3:1: layer 'f' (Filter) cannot be exported to ONNX: "
                            "the number of rows it keeps depends on the selector's values"), error


def test_criterion_is_relative_to_the_largest_magnitude():
    expected = np.array([100.0, 1.0, 1e-6, -np.inf])
    within = ox.OutputDiff("y", (4,))
    # RTOL * max|net| = 1e-2 absolute, for large and near-zero values alike.
    within.update(expected + [0.9e-2, -0.9e-2, 0.9e-2, 0], expected)
    assert within.passed and within.max_rel == pytest.approx(0.9 * ox.RTOL)
    beyond = ox.OutputDiff("y", (4,))
    beyond.update(expected + [0, 0, 1.1e-2, 0], expected)
    assert not beyond.passed and beyond.max_abs == pytest.approx(1.1e-2)
    zeros = ox.OutputDiff("z", (2,))
    zeros.update(np.array([0.0, 1e-30]), np.zeros(2))
    assert not zeros.passed
    nan = ox.OutputDiff("n", (1,))
    nan.update(np.array([np.nan]), np.array([1.0]))
    assert not nan.passed


# ---------------------------------------------------------------------------------------------
# The corpus's deploy nets

# Reduced input shapes keep the file fast: random weights make any input size valid, and a
# smaller image shrinks fc6 (pool5 is 1 x 1) from 38M weights to 1M.
SMALL_IMAGE = {"data": (1, 3, 67, 67)}
DEPLOY_NETS = {
    "bvlc/examples/mnist/lenet.prototxt": {"data": (2, 1, 28, 28)},
    "bvlc/examples/cifar10/cifar10_quick.prototxt": {},
    "bvlc/examples/cifar10/cifar10_full.prototxt": {},
    "bvlc/examples/net_surgery/conv.prototxt": {},
    "bvlc/examples/siamese/mnist_siamese.prototxt": {"data": (2, 1, 28, 28)},
    "bvlc/examples/net_surgery/bvlc_caffenet_full_conv.prototxt": {"data": (1, 3, 227, 227)},
    "bvlc/models/bvlc_alexnet/deploy.prototxt": SMALL_IMAGE,
    "bvlc/models/bvlc_googlenet/deploy.prototxt": {"data": (1, 3, 224, 224)},
    "bvlc/models/bvlc_reference_caffenet/deploy.prototxt": SMALL_IMAGE,
    "bvlc/models/bvlc_reference_rcnn_ilsvrc13/deploy.prototxt": SMALL_IMAGE,
    "bvlc/models/finetune_flickr_style/deploy.prototxt": SMALL_IMAGE,
    "lrcn_activity/deploy_singleFrame.prototxt": SMALL_IMAGE,
    # The net's Reshape layers fix 160 frames = 16 steps x 10 clips.
    "lrcn_activity/deploy_lstm.prototxt": {"data": (160, 3, 51, 51)},
    "lrcn_caption/lstm_lm.deploy.prototxt": {},
    "lrcn_caption/lrcn_word_to_preds.deploy.prototxt": {
        "cont_sentence": (1, 2), "input_sentence": (1, 2), "image_features": (2, 1000)},
}
# Nets whose export takes several seconds at the input size they need (tens of millions of
# weights): run with the slow tests.
SLOW = {"bvlc/examples/net_surgery/bvlc_caffenet_full_conv.prototxt"}
# The reduced nets again at full image size (fc6 with its 38M weights), batch 1.
FULL_SIZE = ["bvlc/models/bvlc_alexnet/deploy.prototxt",
             "bvlc/models/bvlc_reference_caffenet/deploy.prototxt",
             "lrcn_activity/deploy_singleFrame.prototxt"]

_DATA_TYPES = re.compile(r'type:\s*"(Data|ImageData|HDF5Data|WindowData|MemoryData|DummyData|'
                         r'Python)"')


def corpus_deploy_nets(corpus_dir):
    """Deploy nets of the corpus: named deploy*.prototxt / *.deploy.prototxt, or net files fed
    by Input layers / net-level inputs with no data layer."""
    found = set()
    for root, _, files in os.walk(corpus_dir):
        for name in files:
            if not name.endswith(".prototxt") or "solver" in name:
                continue
            path = os.path.join(root, name)
            text = open(path, encoding="utf-8").read()
            named = name.startswith("deploy") or name.endswith(".deploy.prototxt")
            fed = re.search(r'type:\s*"Input"|^input:', text, re.M) and not _DATA_TYPES.search(
                text)
            if named or fed:
                found.add(os.path.relpath(path, corpus_dir).replace(os.sep, "/"))
    return found


def test_every_corpus_deploy_net_is_listed(corpus_dir):
    assert corpus_deploy_nets(corpus_dir) == set(DEPLOY_NETS)


@pytest.mark.parametrize("relative", [
    pytest.param(name, marks=[pytest.mark.slow] if name in SLOW else [])
    for name in sorted(DEPLOY_NETS)])
def test_corpus_deploy_net(corpus_dir, relative):
    path = os.path.join(corpus_dir, relative)
    deploy = ox.load_deployable(path, input_shapes=DEPLOY_NETS[relative])
    net = Net(deploy.compiled)
    randomize(net)
    assert_matches(export(net), net)


@pytest.mark.slow
@pytest.mark.parametrize("relative", FULL_SIZE)
def test_corpus_deploy_net_full_size(corpus_dir, relative):
    net = Net(os.path.join(corpus_dir, relative), input_shapes={"data": (1, 3, 227, 227)})
    randomize(net)
    assert_matches(export(net), net, blobs=False)


def check_dynamic_batch(deploy):
    """Export `deploy` with a symbolic batch; the one model must match runtime.Net at the
    compiled batch and at batch + 1 (a second net with the same weights)."""
    net = Net(deploy.compiled)
    randomize(net)
    model = export(net, dynamic=ox.batch_axes(deploy.compiled))
    session = ox.onnx_session(model)
    bigger = Net(ox.rebatch(deploy.compiled))
    bigger.share_weights_from(net)
    for run_net in (net, bigger):
        diffs = ox.verify(model, run_net, session=session)
        assert all(d.passed for d in diffs), "\n" + ox.format_report(diffs)
    return bigger


def test_corpus_language_model_train_net_with_a_dynamic_batch(corpus_dir):
    """LRCN's language model: its HDF5 data layer becomes the time-major inputs (T, N) whose
    batch axis is 1; the loss and its target_sentence go."""
    path = os.path.join(corpus_dir, "lrcn_caption/lstm_language_model.prototxt")
    shapes = {"cont_sentence": (3, 2), "input_sentence": (3, 2), "target_sentence": (3, 2)}
    deploy = ox.load_deployable(path, stages=("test-on-val",), input_shapes=shapes)
    assert deploy.compiled.inputs == ["cont_sentence", "input_sentence"]
    assert deploy.compiled.outputs == ["predict"]
    assert ox.input_batch_axes(deploy.compiled) == {"cont_sentence": 1, "input_sentence": 1}
    bigger = check_dynamic_batch(deploy)
    assert bigger.compiled.blobs["predict"] == (3, 3, 8801)


@pytest.mark.slow
def test_corpus_caption_train_net_with_a_dynamic_batch(corpus_dir):
    """LRCN's captioning net (factored, 2 layers): image and sentence data layers become
    inputs, batch axis 0 of the images and 1 of the time-major sentences."""
    path = os.path.join(corpus_dir, "lrcn_caption/lrcn.prototxt")
    shapes = {"data": (2, 3, 51, 51), "cont_sentence": (3, 2), "input_sentence": (3, 2),
              "target_sentence": (3, 2)}
    deploy = ox.load_deployable(path, stages=("test-on-val", "factored", "2-layer"),
                                input_shapes=shapes)
    assert deploy.compiled.inputs == ["data", "cont_sentence", "input_sentence"]
    assert deploy.compiled.outputs == ["predict"]
    assert ox.input_batch_axes(deploy.compiled) == {"data": 0, "cont_sentence": 1,
                                                    "input_sentence": 1}
    check_dynamic_batch(deploy)
