"""lrcn-show: the compiled layer table, and its stable YAML / JSON forms."""

import json
import os

import pytest
import yaml

from compiler.review_cli import show_main

# Shapes, parameter counts and FLOPs worked out by hand (FLOP convention of
# compiler/layer_types/common.py: a multiply-add is 2, a bias add 1, a ReLU 1 per element):
#   conv1: (2,3,8,8) * 4 filters 3x3 -> (2,4,6,6); params 4*3*3*3 + 4 = 112;
#          FLOPs 2 * 288 outputs * 27 + 288 bias = 15840
#   relu1: in place on 288 values -> 288 FLOPs
#   ip:    2 rows x 144 inputs -> 5; params 5*144 + 5 = 725; FLOPs 2*2*144*5 + 2*5 = 2890
TINY = '''name: "tiny"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "ip" type: "InnerProduct" bottom: "conv1" top: "ip"
        inner_product_param { num_output: 5 } }
'''

TINY_LAYERS = [
    {"name": "data", "type": "Input", "bottoms": [], "tops": ["data"],
     "top_shapes": [[2, 3, 8, 8]], "params": 0, "flops": 0},
    {"name": "conv1", "type": "Convolution", "bottoms": ["data"], "tops": ["conv1"],
     "top_shapes": [[2, 4, 6, 6]], "params": 112, "flops": 15840},
    {"name": "relu1", "type": "ReLU", "bottoms": ["conv1"], "tops": ["conv1"],
     "top_shapes": [[2, 4, 6, 6]], "params": 0, "flops": 288},
    {"name": "ip", "type": "InnerProduct", "bottoms": ["conv1"], "tops": ["ip"],
     "top_shapes": [[2, 5]], "params": 725, "flops": 2890},
]
# Memory, float32: 837 params (3348 B) + the tops data 384, conv1 288 (relu1 is in place), ip 10
# = 682 values (2728 B).
TINY_TOTALS = {"params": 837, "flops": 19018, "layers": 4, "memory_bytes": 6076}

PYTHON_DATA = '''layer { name: "data" type: "Python" top: "data"
        python_param { module: "my_layers" layer: "Loader" } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 5 } }
'''


def run_show(capsys, *argv):
    with pytest.raises(SystemExit) as exit_info:
        show_main([str(a) for a in argv])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.prototxt"
    path.write_text(TINY)
    return path


def test_json_has_the_hand_computed_shapes_params_and_flops(capsys, tiny):
    status, out, _ = run_show(capsys, tiny, "--format", "json")
    assert status == 0
    report = json.loads(out)
    assert list(report) == ["net", "phase", "stages", "level", "layers", "totals"]
    assert report["layers"] == TINY_LAYERS
    assert report["totals"] == TINY_TOTALS
    assert (report["net"], report["phase"], report["stages"], report["level"]) == \
        ("tiny", "TRAIN", [], 0)


def test_json_keeps_a_fixed_key_order_and_one_layer_per_line(capsys, tiny):
    _, out, _ = run_show(capsys, tiny, "--format", "json")
    layer_lines = [line for line in out.splitlines() if line.lstrip().startswith('{"name"')]
    assert len(layer_lines) == 4
    for line in layer_lines:
        assert list(json.loads(line.strip().rstrip(","))) == [
            "name", "type", "bottoms", "tops", "top_shapes", "params", "flops"]


def test_yaml_matches_json_and_keeps_key_order(capsys, tiny):
    _, out, _ = run_show(capsys, tiny, "--format", "yaml")
    report = yaml.safe_load(out)
    assert report["layers"] == TINY_LAYERS and report["totals"] == TINY_TOTALS
    assert list(report["layers"][1]) == list(TINY_LAYERS[1])
    # One layer per list item, shapes inline: a one-field change is a one-line text diff.
    assert "- name: conv1\n  type: Convolution\n  bottoms: [data]\n  tops: [conv1]\n" \
           "  top_shapes:\n  - [2, 4, 6, 6]\n  params: 112\n  flops: 15840\n" in out


def test_table_is_aligned_with_totals(capsys, tiny):
    status, out, _ = run_show(capsys, tiny)
    assert status == 0
    assert out == (
        "net tiny: phase TRAIN, stages none, level 0\n"
        "\n"
        "name   type          bottoms  tops   top shapes  params   FLOPs\n"
        "data   Input         -        data   2x3x8x8          0       0\n"
        "conv1  Convolution   data     conv1  2x4x6x6        112  15.84K\n"
        "relu1  ReLU          conv1    conv1  2x4x6x6          0     288\n"
        "ip     InnerProduct  conv1    ip     2x5            725   2.89K\n"
        "\n"
        "total: 4 layers, 837 params, 19.02 KFLOPs\n"
        "memory: 5.9 KiB (params 3.3 KiB + activations 2.7 KiB, float32, forward)\n")


def test_unknown_shapes_print_as_question_marks_and_null(capsys, tmp_path):
    path = tmp_path / "python_data.prototxt"
    path.write_text(PYTHON_DATA)
    _, table, _ = run_show(capsys, path)
    assert "ip    InnerProduct  data     ip    ?                ?      ?" in table
    assert table.endswith("total: 2 layers, ? params, ? FLOPs\n"
                          "memory: ? (some shapes are unknown until the data is read)\n")
    _, out, _ = run_show(capsys, path, "--format", "json")
    report = json.loads(out)
    assert report["layers"][1]["top_shapes"] == [None]
    assert report["layers"][1]["params"] is None and report["layers"][1]["flops"] is None
    assert report["totals"] == {"params": None, "flops": None, "layers": 2,
                                "memory_bytes": None}


def test_input_shape_fills_in_what_the_compiler_cannot_know(capsys, tmp_path):
    path = tmp_path / "python_data.prototxt"
    path.write_text(PYTHON_DATA)
    _, out, _ = run_show(capsys, path, "--input-shape", "data=2,7", "--format", "json")
    ip = json.loads(out)["layers"][1]
    # 2 rows x 7 inputs -> 5: 7*5 + 5 params, 2*2*7*5 + 2*5 FLOPs.
    assert (ip["top_shapes"], ip["params"], ip["flops"]) == ([[2, 5]], 40, 150)


def test_phase_and_stage_select_layers(capsys, tmp_path):
    path = tmp_path / "staged.prototxt"
    path.write_text(TINY + 'layer { name: "extra" type: "ReLU" bottom: "ip" top: "ip" '
                           'include { phase: TEST stage: "debug" } }\n')
    _, out, _ = run_show(capsys, path, "--phase", "TEST", "--format", "json")
    assert [layer["name"] for layer in json.loads(out)["layers"]][-1] == "ip"
    _, out, _ = run_show(capsys, path, "--phase", "test", "--stage", "debug", "--format", "json")
    report = json.loads(out)
    assert [layer["name"] for layer in report["layers"]][-1] == "extra"
    assert (report["phase"], report["stages"]) == ("TEST", ["debug"])


def test_user_errors_exit_1_with_one_located_message(capsys, tmp_path):
    path = tmp_path / "broken.prototxt"
    path.write_text(TINY.replace('bottom: "conv1" top: "ip"', 'bottom: "conv9" top: "ip"'))
    status, out, err = run_show(capsys, path)
    assert status == 1 and out == ""
    # One message, at the line of the bad bottom (the column is compiler.graph's business).
    first_line = err.splitlines()[0]
    assert first_line.startswith(f"{path}:7:")
    assert first_line.endswith("layer 'ip' (InnerProduct): bottom 'conv9' is not produced by any "
                               "earlier layer")
    assert err.count(str(path)) == 1 and "Traceback" not in err


def test_a_solver_file_is_refused_with_a_hint(capsys, tmp_path):
    path = tmp_path / "solver.prototxt"
    path.write_text('net: "train.prototxt"\nbase_lr: 0.01\n')
    status, _, err = run_show(capsys, path)
    assert status == 1
    assert err == (f"{path}: this is a solver definition; lrcn-show reads net files\n"
                   "  hint: give it the net file the solver names (net: / train_net:)\n")


@pytest.mark.parametrize("argv", [["--format", "xml"], ["--input-shape", "data"],
                                  ["--input-shape", "data=2,x"], ["--phase", "VAL"]])
def test_bad_usage_exits_2(capsys, tiny, argv):
    status, _, err = run_show(capsys, tiny, *argv)
    assert status == 2 and "usage: lrcn-show" in err


def test_help_shows_an_example(capsys):
    status, out, _ = run_show(capsys, "--help")
    assert status == 0 and "example:\n  lrcn-show " in out


def test_caffenet_deploy(capsys, corpus_dir):
    path = os.path.join(corpus_dir, "bvlc", "models", "bvlc_reference_caffenet",
                        "deploy.prototxt")
    _, out, _ = run_show(capsys, path, "--phase", "TEST", "--format", "json")
    report = json.loads(out)
    by_name = {layer["name"]: layer for layer in report["layers"]}
    assert by_name["prob"]["top_shapes"] == [[10, 1000]]
    assert by_name["conv1"]["top_shapes"] == [[10, 96, 55, 55]]
    assert by_name["fc6"]["params"] == 256 * 6 * 6 * 4096 + 4096
    # CaffeNet's well-known learnable-parameter count.
    assert report["totals"]["params"] == 60_965_224
    _, table, _ = run_show(capsys, path, "--phase", "TEST")
    assert "total: 24 layers, 60.97M params (60,965,224), 14.52 GFLOPs" in table
