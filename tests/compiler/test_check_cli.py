"""lrcn-check: nets compile in every phase they are meant for, solvers with their nets' states;
`FILE: ok` or a located error, exit status 0 / 1 / 2."""

import os

import pytest

from compiler.cli import check_main

GOOD_NET = '''name: "good"
layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 2 dim: 4 } } }
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc"
  inner_product_param { num_output: 3 } }
layer { name: "drop" type: "Dropout" bottom: "fc" top: "fc" include { phase: TRAIN } }
'''

# The bottom typo only bites in TEST, where the layer is selected.
TEST_TYPO_NET = '''layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 2 } } }
layer { name: "r" type: "ReLU" bottom: "dtaa" top: "r" include { phase: TEST } }
'''

# Two variants picked by stage: without one of them the net does not connect, but it is fine.
VARIANT_NET = '''layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 5 } } }
layer { name: "small" type: "ReLU" bottom: "x" top: "y" include { stage: "small" } }
layer { name: "big" type: "TanH" bottom: "x" top: "y" include { stage: "big" } }
layer { name: "out" type: "Sigmoid" bottom: "y" top: "out" }
'''

DEPLOY_ONLY_NET = '''layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 10 } } }
layer { name: "r" type: "Reshape" bottom: "x" top: "y" include { phase: TEST }
  reshape_param { shape { dim: 5 dim: 2 } } }
layer { name: "out" type: "ReLU" bottom: "y" top: "out" }
'''

# Data files absent: the shapes stay unknown, which is not an error for check.
MISSING_DATA_NET = '''layer { name: "d" type: "Data" top: "data" top: "label"
  data_param { source: "no_such_lmdb" batch_size: 4 backend: LMDB } }
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc"
  inner_product_param { num_output: 3 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
'''


def run_check(*paths):
    with pytest.raises(SystemExit) as caught:
        check_main([str(path) for path in paths])
    return caught.value.code


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def write(name, text):
        path = tmp_path / name
        path.write_text(text)
        return path
    return write


def test_good_net_is_ok(files, capsys):
    path = files("good.prototxt", GOOD_NET)
    assert run_check(path) == 0
    out, err = capsys.readouterr()
    # Input 2x4 and fc 2x3 (Dropout works in place): 14 values; fc's weights and bias: 15.
    assert out == (f"{path}: ok\n  memory: 116 B (params 60 B + activations 56 B, float32, "
                   "forward) in TRAIN, stages none, level 0\n") and err == ""


def test_an_error_in_the_test_phase_is_located_and_says_which_state(files, capsys):
    path = files("typo.prototxt", TEST_TYPO_NET)
    assert run_check(path) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (f"{path}:2:32: layer 'r' (ReLU): bottom 'dtaa' is not produced by any "
                   "earlier layer\n"
                   "  hint: did you mean 'data'?; compiled in TEST, stages none, level 0\n")


def test_nets_split_into_stage_variants_are_ok(files, capsys):
    path = files("variants.prototxt", VARIANT_NET)
    assert run_check(path) == 0
    assert capsys.readouterr().out == (f"{path}: ok\n  memory: 120 B (params 0 B + activations "
                                       "120 B, float32, forward) in TRAIN, stages small, "
                                       "level 0\n")


def test_a_net_for_one_phase_is_ok_with_a_note(files, capsys):
    path = files("deploy.prototxt", DEPLOY_ONLY_NET)
    assert run_check(path) == 0
    assert capsys.readouterr().out == (f"{path}: ok\n  note: TRAIN not checked: bottom 'y' is "
                                       "produced only in TEST (by layer 'r')\n"
                                       "  memory: 120 B (params 0 B + activations 120 B, "
                                       "float32, forward) in TEST, stages none, level 0\n")


def test_unknown_data_shapes_are_not_errors(files, capsys):
    path = files("lmdb.prototxt", MISSING_DATA_NET)
    assert run_check(path) == 0
    assert capsys.readouterr().out == (f"{path}: ok\n  memory: ? (some shapes are unknown until "
                                       "the data is read)\n")


def test_shape_errors_are_reported(files, capsys):
    path = files("bad_shape.prototxt", GOOD_NET.replace("num_output: 3", "num_output: 0"))
    assert run_check(path) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{path}:3:1: layer 'fc' (InnerProduct): ")
    assert "compiled in TRAIN, stages none, level 0" in err


def test_solver_compiles_each_net_with_its_state(files, capsys):
    files("net.prototxt", VARIANT_NET)
    good = files("good_solver.prototxt", 'net: "net.prototxt"\nlr_policy: "fixed"\n'
                                         'train_state { stage: "small" }\n'
                                         'test_iter: 1\ntest_state { stage: "big" }\n'
                                         'test_interval: 10\n')
    # A stage set that picks no variant: Caffe would fail to build the test net.
    bad = files("bad_solver.prototxt", 'net: "net.prototxt"\nlr_policy: "fixed"\n'
                                       'train_state { stage: "small" }\n'
                                       'test_iter: 1\ntest_state { stage: "other" }\n'
                                       'test_interval: 10\n')
    assert run_check(good, bad) == 1
    out, err = capsys.readouterr()
    assert out.startswith(f"{good}: ok\n  memory: ") and "in TRAIN, stages small" in out
    assert err.startswith("net.prototxt:4:37: layer 'out' (Sigmoid): bottom 'y' is not "
                          "produced by any earlier layer\n")
    assert err.rstrip().endswith("hint: layer 'small' (line 2) produces it but is not selected "
                                 "in this NetState (TEST, stages other, level 0); compiled as "
                                 "the solver's test0 net (TEST, stages other, level 0)")


def test_solver_errors_are_located_in_the_solver(files, capsys):
    path = files("solver.prototxt", 'base_lr: 0.1\ntrain_net: "missing.prototxt"\n'
                                    'lr_policy: "fixed"\n')
    assert run_check(path) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{path}:2:1: net file not found: missing.prototxt\n  hint: tried ")


def test_every_file_is_checked_and_any_error_fails(files, capsys):
    good = files("good.prototxt", GOOD_NET)
    bad = files("typo.prototxt", TEST_TYPO_NET)
    assert run_check(bad, good) == 1
    out, err = capsys.readouterr()
    assert out.startswith(f"{good}: ok\n  memory: 116 B ")
    assert err.count("is not produced by any earlier layer") == 1


def test_parse_errors_still_fail(files, capsys):
    path = files("broken.prototxt", 'layer { name: "x" typo: 1 }\n')
    assert run_check(path) == 1
    assert "unknown field 'typo'" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys):
    assert run_check() == 2
    assert "usage: lrcn-check" in capsys.readouterr().err


def test_lrcn_corpus_files_check(corpus_dir, capsys, monkeypatch):
    monkeypatch.chdir(os.path.join(corpus_dir, "lrcn_activity"))
    caption_net = os.path.join(corpus_dir, "lrcn_caption", "lrcn.prototxt")
    assert run_check(caption_net, "lstm_solver_RGB.prototxt", "deploy_lstm.prototxt") == 0
    out = capsys.readouterr().out
    unknown = "  memory: ? (some shapes are unknown until the data is read)\n"
    assert out == (f"{caption_net}: ok\n{unknown}lstm_solver_RGB.prototxt: ok\n{unknown}"
                   "deploy_lstm.prototxt: ok\n"
                   "  note: TRAIN not checked: bottom 'fc6-reshape' is produced only in TEST "
                   "(by layer 'reshape-data')\n"
                   "  memory: 1.8 GiB (params 249.6 MiB + activations 1.5 GiB, float32, forward) "
                   "in TEST, stages none, level 0\n")
