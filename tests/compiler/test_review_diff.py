"""lrcn-diff: semantic differences between two nets (or solvers), and its git driver mode."""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from compiler.review_cli import diff_main

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BASE = '''name: "review"
layer { name: "input" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } shape { dim: 2 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        param { lr_mult: 1 } param { lr_mult: 2 }
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "pool1" top: "ip"
        inner_product_param { num_output: 5 } }
layer { name: "aux" type: "InnerProduct" bottom: "pool1" top: "aux"
        inner_product_param { num_output: 3 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss"
        include { phase: TRAIN } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy"
        include { phase: TEST } }
'''

# The same net: fields in another order, other layout and comments, `aux` before `ip` (both
# only read pool1) and `accuracy` before `loss` (both only read ip and label).
REORDERED = '''# a comment
name:"review"
layer {
  top: "data"  top: "label"   type: "Input"   name: "input"
  input_param { shape: { dim: [2, 3, 8, 8] } shape { dim: 2 } }
}
layer { convolution_param { kernel_size: 3 num_output: 4 }
  name: 'conv1' param { lr_mult: 1.0 } param { lr_mult: 2 } top: "conv1" bottom: "data"
  type: "Convolution" }
layer { top: "conv1" bottom: "conv1" name: "relu1" type: "ReLU" }
layer { pooling_param { stride: 2 kernel_size: 2 pool: MAX } name: "pool1" type: "Pooling"
        top: "pool1" bottom: "conv1" }
layer { name: "aux" type: "InnerProduct" bottom: "pool1" top: "aux"
        inner_product_param { num_output: 3 } }   # moved up
layer { name: "ip" type: "InnerProduct" bottom: "pool1" top: "ip"
        inner_product_param { num_output: 5 } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy"
        include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss"
        include { phase: TRAIN } }
'''

# BASE in the legacy forms Caffe still reads: net-level input fields, V1 `layers`, blobs_lr.
V1_FORM = '''name: "review"
input: "data"
input_shape { dim: 2 dim: 3 dim: 8 dim: 8 }
input: "label"
input_shape { dim: 2 }
layers { name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1" blobs_lr: 1 blobs_lr: 2
         convolution_param { num_output: 4 kernel_size: 3 } }
layers { name: "relu1" type: RELU bottom: "conv1" top: "conv1" }
layers { name: "pool1" type: POOLING bottom: "conv1" top: "pool1"
         pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layers { name: "ip" type: INNER_PRODUCT bottom: "pool1" top: "ip"
         inner_product_param { num_output: 5 } }
layers { name: "aux" type: INNER_PRODUCT bottom: "pool1" top: "aux"
         inner_product_param { num_output: 3 } }
layers { name: "loss" type: SOFTMAX_LOSS bottom: "ip" bottom: "label" top: "loss"
         include { phase: TRAIN } }
layers { name: "accuracy" type: ACCURACY bottom: "ip" bottom: "label" top: "accuracy"
         include { phase: TEST } }
'''

# BASE in TRAIN, by hand (FLOP convention of compiler/layer_types/common.py):
#   conv1 (2,4,6,6): 4*27+4 = 112 params, 2*288*27 + 288 = 15840 FLOPs; relu1 288;
#   pool1 (2,4,3,3): 72 outputs * 4 = 288; ip: 5*36+5 = 185 params, 2*2*36*5 + 10 = 730;
#   aux: 3*36+3 = 111 params, 2*2*36*3 + 6 = 438; loss: 3*10 + 2*2 = 34.
#   Total 408 params, 17618 FLOPs; in TEST accuracy (10 compares) replaces loss: 17594.


def run_diff(capsys, tmp_path, old_text, new_text, *options, names=("a", "b")):
    old, new = tmp_path / f"{names[0]}.prototxt", tmp_path / f"{names[1]}.prototxt"
    old.write_text(old_text)
    new.write_text(new_text)
    with pytest.raises(SystemExit) as exit_info:
        diff_main([str(old), str(new), *options])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def lines(text):
    return textwrap.dedent(text).lstrip("\n")


def test_reordered_and_reformatted_file_is_no_change(capsys, tmp_path):
    for phase in ("TRAIN", "TEST"):
        assert run_diff(capsys, tmp_path, BASE, REORDERED, "--phase", phase) == (0, "", "")


def test_v1_form_equals_current_form(capsys, tmp_path):
    assert run_diff(capsys, tmp_path, V1_FORM, BASE) == (0, "", "")


def test_changed_num_output_with_shapes_and_parameter_counts(capsys, tmp_path):
    changed = BASE.replace("num_output: 4", "num_output: 6")
    status, out, _ = run_diff(capsys, tmp_path, BASE, changed)
    assert status == 1
    # conv1 -> 6 channels: pool1 (2,6,3,3), so ip has 54 inputs (5*54+5 = 275 params) and
    # aux 3*54+3 = 165; FLOPs 23760 + 432 + 432 + 1090 + 654 + 34 = 26402.
    assert out == lines('''
        ~ net
            total params (TRAIN): 408 -> 608
            total FLOPs (TRAIN): 17,618 -> 26,402
        ~ layer conv1 (Convolution)
            convolution_param.num_output: 4 -> 6
            top conv1 shape: 2x4x6x6 -> 2x6x6x6
            params: 112 -> 168
        ~ layer relu1 (ReLU)
            top conv1 shape: 2x4x6x6 -> 2x6x6x6
        ~ layer pool1 (Pooling)
            top pool1 shape: 2x4x3x3 -> 2x6x3x3
        ~ layer ip (InnerProduct)
            params: 185 -> 275
        ~ layer aux (InnerProduct)
            params: 111 -> 165
        ''')


def test_removed_layer(capsys, tmp_path):
    removed = BASE.replace('''layer { name: "aux" type: "InnerProduct" bottom: "pool1" top: "aux"
        inner_product_param { num_output: 3 } }
''', "")
    status, out, _ = run_diff(capsys, tmp_path, BASE, removed)
    assert status == 1
    assert out == lines('''
        ~ net
            total params (TRAIN): 408 -> 297
            total FLOPs (TRAIN): 17,618 -> 17,180
        - layer aux (InnerProduct): [pool1] -> [aux]
        ''')


def test_added_layer_shows_its_wiring_and_rules(capsys, tmp_path):
    added = BASE + ('layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" '
                    'include { phase: TEST } }\n')
    status, out, _ = run_diff(capsys, tmp_path, BASE, added, "--phase", "TEST")
    assert status == 1
    assert out == lines('''
        ~ net
            total FLOPs (TEST): 17,594 -> 17,624
        + layer prob (Softmax): [ip] -> [prob], include [{phase: TEST}]
        ''')


def test_rewired_bottom(capsys, tmp_path):
    rewired = BASE.replace('bottom: "pool1" top: "aux"', 'bottom: "conv1" top: "aux"')
    status, out, _ = run_diff(capsys, tmp_path, BASE, rewired)
    assert status == 1
    # aux now reads conv1 (2,4,6,6): 3*144+3 = 435 params, 2*2*144*3 + 6 = 1734 FLOPs.
    assert out == lines('''
        ~ net
            total params (TRAIN): 408 -> 732
            total FLOPs (TRAIN): 17,618 -> 18,914
        ~ layer aux (InnerProduct)
            bottom: [pool1] -> [conv1]
            params: 111 -> 435
        ''')


def test_changed_stage_rule(capsys, tmp_path):
    staged = BASE.replace('top: "loss"\n        include { phase: TRAIN }',
                          'top: "loss"\n        include { phase: TRAIN stage: "weighted" }')
    status, out, _ = run_diff(capsys, tmp_path, BASE, staged, "--phase", "TEST")
    assert status == 1
    assert out == lines('''
        ~ layer loss (SoftmaxWithLoss)
            include: [{phase: TRAIN}] -> [{phase: TRAIN, stage: [weighted]}]
        ''')


def test_field_paths_into_repeated_messages_and_presence(capsys, tmp_path):
    changed = BASE.replace("param { lr_mult: 1 } param { lr_mult: 2 }",
                           "param { lr_mult: 1 decay_mult: 0 } param { lr_mult: 2.5 }")
    changed = changed.replace("pool: MAX kernel_size: 2", "pool: AVE kernel_size: 2")
    status, out, _ = run_diff(capsys, tmp_path, BASE, changed, "--phase", "TEST")
    assert status == 1
    assert out == lines('''
        ~ layer conv1 (Convolution)
            param[0].decay_mult: (unset) -> 0
            param[1].lr_mult: 2 -> 2.5
        ~ layer pool1 (Pooling)
            pooling_param.pool: MAX -> AVE
        ''')


def test_a_move_that_changes_what_a_layer_reads_is_reported(capsys, tmp_path):
    # pool1 now reads conv1 before relu1 rewrites it in place.
    block = ('layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }\n')
    pool = '''layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
'''
    moved = BASE.replace(block + pool, pool + block)
    assert moved != BASE
    status, out, _ = run_diff(capsys, tmp_path, BASE, moved, "--phase", "TEST")
    assert status == 1
    assert out == lines('''
        ~ layer pool1 (Pooling)
            moved: now runs before relu1 (was after; both use blob conv1)
        ''')


def test_net_level_fields(capsys, tmp_path):
    changed = BASE.replace('name: "review"', 'name: "review2"\nforce_backward: true')
    status, out, _ = run_diff(capsys, tmp_path, BASE, changed, "--phase", "TEST")
    assert (status, out) == (1, lines('''
        ~ net
            name: review -> review2
            force_backward: (unset) -> true
        '''))


def test_input_shape_change_shows_on_the_input_layer(capsys, tmp_path):
    changed = V1_FORM.replace("input_shape { dim: 2 dim: 3 dim: 8 dim: 8 }",
                              "input_shape { dim: 2 dim: 3 dim: 10 dim: 10 }")
    status, out, _ = run_diff(capsys, tmp_path, V1_FORM, changed, "--phase", "TEST")
    assert status == 1
    # pool1 becomes (2,4,4,4): ip 5*64+5 = 325 params, aux 3*64+3 = 195.
    assert "    total params (TEST): 408 -> 632\n" in out
    assert lines('''
        ~ layer input (Input)
            input_param.shape[0].dim: [2, 3, 8, 8] -> [2, 3, 10, 10]
            top data shape: 2x3x8x8 -> 2x3x10x10
        ''') in out


def test_a_side_that_does_not_compile_is_noted(capsys, tmp_path):
    broken = BASE.replace('bottom: "pool1" top: "ip"', 'bottom: "pool9" top: "ip"')
    status, out, _ = run_diff(capsys, tmp_path, BASE, broken, "--phase", "TEST")
    assert status == 1
    first, note, hint, *rest = out.splitlines()
    assert first.startswith(f"! {tmp_path / 'b.prototxt'}:10:") and \
        first.endswith("layer 'ip' (InnerProduct): bottom 'pool9' is not produced by any "
                       "earlier layer")
    assert note == ("    (does not compile in TEST, so its shapes and parameter counts are not "
                    "compared)")
    assert hint == "    hint: did you mean 'pool1'?"
    assert rest == ["~ layer ip (InnerProduct)", "    bottom: [pool1] -> [pool9]"]


def test_solvers_compare_field_by_field_after_upgrade(capsys, tmp_path):
    old = 'net: "train.prototxt"\nbase_lr: 0.01\nsolver_type: SGD\nmomentum: 0.9\n'
    new = 'type: "SGD"\nmomentum: 0.9\nnet: "train.prototxt"\nbase_lr: 0.001\n'
    status, out, _ = run_diff(capsys, tmp_path, old, new, names=("a_solver", "b_solver"))
    assert (status, out) == (1, "~ solver\n    base_lr: 0.01 -> 0.001\n")
    equal = run_diff(capsys, tmp_path, old, old.replace("solver_type: SGD", 'type: "SGD"'))
    assert equal == (0, "", "")


def test_colour_only_when_asked_or_on_a_terminal(capsys, tmp_path):
    changed = BASE.replace('name: "review"', 'name: "other"')
    _, plain, _ = run_diff(capsys, tmp_path, BASE, changed)      # captured: not a terminal
    assert "\033[" not in plain
    _, coloured, _ = run_diff(capsys, tmp_path, BASE, changed, "--color", "always")
    assert coloured.startswith("\033[33m~ net\033[0m\n    name: review -> other\n")


def test_trouble_exits_2_with_one_located_message(capsys, tmp_path):
    status, out, err = run_diff(capsys, tmp_path, BASE, BASE.replace("top: \"ip\"", "top: ip"))
    assert (status, out) == (2, "")
    assert err.startswith(f"{tmp_path / 'b.prototxt'}:10:") and err.count("\n") <= 2
    status, _, err = run_diff(capsys, tmp_path, BASE, 'base_lr: 0.1\nnet: "x.prototxt"\n')
    assert status == 2 and "cannot compare a net" in err
    with pytest.raises(SystemExit) as exit_info:
        diff_main([str(tmp_path / "a.prototxt"), str(tmp_path / "missing.prototxt")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith(f"{tmp_path / 'missing.prototxt'}: cannot read")


def test_bad_usage_exits_2(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        diff_main([str(tmp_path / "only-one.prototxt")])
    assert exit_info.value.code == 2
    assert "expected two files, A and B, got 1" in capsys.readouterr().err


# --- as git's diff driver --------------------------------------------------------------------

@pytest.fixture
def git_repo(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    repo.mkdir()
    environment = {**os.environ, "HOME": str(tmp_path), "GIT_CONFIG_NOSYSTEM": "1",
                   "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
                   "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
                   "PYTHONPATH": REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}

    def git(*argv):
        return subprocess.run(["git", *argv], cwd=repo, env=environment, capture_output=True,
                              text=True, check=True).stdout
    git("init", "-q")
    (repo / ".gitattributes").write_text("*.prototxt diff=lrcn\n")
    (repo / "net.prototxt").write_text(BASE)
    (repo / "solver.prototxt").write_text('net: "net.prototxt"\nbase_lr: 0.01\n')
    git("add", ".")
    git("commit", "-q", "-m", "base")
    return repo, git


def driver(*options):
    return " ".join([f'"{sys.executable}"', "-m", "compiler.review_cli", "diff", "--git",
                     *options])


def test_git_diff_driver_shows_semantic_changes(git_repo):
    repo, git = git_repo
    (repo / "net.prototxt").write_text(BASE.replace("num_output: 5", "num_output: 7"))
    (repo / "solver.prototxt").write_text('base_lr: 0.02\nnet: "net.prototxt"\n')
    out = git("-c", f"diff.lrcn.command={driver('--phase', 'TEST')}", "diff")
    assert out == lines('''
        diff --lrcn a/net.prototxt b/net.prototxt
        ~ net
            total params (TEST): 408 -> 482
            total FLOPs (TEST): 17,594 -> 17,890
        ~ layer ip (InnerProduct)
            inner_product_param.num_output: 5 -> 7
            top ip shape: 2x5 -> 2x7
            params: 185 -> 259
        diff --lrcn a/solver.prototxt b/solver.prototxt
        ~ solver
            base_lr: 0.01 -> 0.02
        ''')


def test_git_diff_driver_on_layout_only_change_added_file_and_broken_file(git_repo):
    repo, git = git_repo
    (repo / "net.prototxt").write_text(REORDERED)
    (repo / "new.prototxt").write_text('layer { name: "in" type: "Input" top: "x" '
                                       'input_param { shape { dim: 1 } } }\n')
    (repo / "solver.prototxt").write_text('base_lr: 0.01\nnet: "net.prototxt"\nbad {\n')
    git("add", "-N", "new.prototxt")
    out = git("-c", f"diff.lrcn.command={driver()}", "diff")
    sections = out.split("diff --lrcn ")
    assert sections[1] == ("a/net.prototxt b/net.prototxt\n"
                           "  (no semantic change: layout, comments or independent order only)\n")
    assert sections[2] == ("a/new.prototxt b/new.prototxt\n"
                           "+ layer in (Input): [] -> [x]\n")
    # A file that does not parse: the located error, then git's usual text diff, exit 0.
    broken = sections[3].splitlines()
    assert broken[0] == "a/solver.prototxt b/solver.prototxt"
    assert broken[1].startswith("! b/solver.prototxt:3:")
    assert "+bad {" in broken and "--- a/solver.prototxt" in broken
