"""The review tools on nets whose layers are chosen by stage, on empty nets, lrcn-fmt on
standard input, and the bundled nets and solvers kept lrcn-fmt clean."""

import glob
import io
import os
import sys

import pytest

from compiler.cli import fmt_main
from compiler.review_cli import diff_main, draw_main, show_main
from runtime.cli import time_main

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")

# Two variants chosen by stage, as LRCN's caption net chooses factored / unfactored.
STAGED = '''name: "staged"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 2 dim: 3 } } }
layer { name: "small" type: "InnerProduct" bottom: "data" top: "out"
        include { stage: "small" } inner_product_param { num_output: 2 } }
layer { name: "big" type: "InnerProduct" bottom: "data" top: "out"
        include { stage: "big" } inner_product_param { num_output: 8 } }
layer { name: "relu" type: "ReLU" bottom: "out" top: "out" }
'''

# Every layer needs a stage: with none, nothing is selected.
ONLY_STAGED = '''name: "only_staged"
layer { name: "data" type: "Input" top: "data" include { stage: "deploy" }
        input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" include { stage: "deploy" }
        inner_product_param { num_output: 2 } }
'''


def run(main, argv, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    out, err = capsys.readouterr()
    return exited.value.code, out, err


@pytest.fixture
def files(tmp_path):
    for name, text in (("staged", STAGED), ("only_staged", ONLY_STAGED),
                       ("empty", 'name: "empty"\n')):
        (tmp_path / f"{name}.prototxt").write_text(text)
    return tmp_path


@pytest.mark.parametrize("main, extra", [(show_main, []), (draw_main, ["-o", "-"]),
                                         (time_main, ["--iterations", "1"])])
def test_a_net_that_selects_no_layer_names_the_stage_sets(main, extra, files, capsys):
    code, out, err = run(main, [str(files / "only_staged.prototxt")] + extra, capsys)
    assert code == 1 and out == ""
    assert "no layer is selected in TRAIN, stages none, level 0" in err
    assert "pick a stage set with --stage: deploy" in err


@pytest.mark.parametrize("main, extra", [(show_main, []), (draw_main, ["-o", "-"]),
                                         (time_main, ["--iterations", "1"])])
def test_an_empty_net_is_an_error(main, extra, files, capsys):
    code, out, err = run(main, [str(files / "empty.prototxt")] + extra, capsys)
    assert code == 1 and out == ""
    assert err == f"{files / 'empty.prototxt'}: the net defines no layers\n"


def test_a_net_that_does_not_compile_without_stages_lists_them(files, capsys):
    code, _, err = run(show_main, [str(files / "staged.prototxt")], capsys)
    assert code == 1
    assert "layer 'relu' (ReLU): bottom 'out' is not produced by any earlier layer" in err
    assert "pick a stage set with --stage: small | big" in err


def test_stages_are_repeatable_and_comma_separated(files, capsys):
    one = run(show_main, [str(files / "only_staged.prototxt"), "--stage", "deploy,x",
                          "--format", "json"], capsys)
    two = run(show_main, [str(files / "only_staged.prototxt"), "--stage", "deploy",
                          "--stage", "x", "--format", "json"], capsys)
    assert one == two and one[0] == 0 and '"ip"' in one[1]


def test_with_no_stages_a_net_with_optional_stages_compiles_with_a_note(tmp_path, capsys):
    path = tmp_path / "optional.prototxt"
    path.write_text(STAGED.replace('include { stage: "small" } ', ""))
    code, out, err = run(show_main, [str(path)], capsys)
    assert code == 0 and "small" in out and "big" not in out
    assert err == "note: compiled with no stages; the net also defines the stage sets big\n"


def test_lrcn_diff_says_why_shapes_are_not_compared(files, capsys):
    changed = files / "changed.prototxt"
    changed.write_text(ONLY_STAGED.replace("num_output: 2", "num_output: 3"))
    code, out, _ = run(diff_main, [str(files / "only_staged.prototxt"), str(changed),
                                   "--color", "never"], capsys)
    assert code == 1
    assert "no layer is selected in TRAIN" in out
    assert "hint: this net chooses its layers by stage; pick a stage set with --stage: deploy" \
        in out
    code, out, _ = run(diff_main, [str(files / "only_staged.prototxt"), str(changed),
                                   "--color", "never", "--stage", "deploy"], capsys)
    assert code == 1 and not out.startswith("!") and "top ip shape: 2x2 -> 2x3" in out


def test_lrcn_fmt_reads_standard_input(monkeypatch, capsys):
    text = 'layer{name:"a" type:"ReLU"}'
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    code, out, err = run(fmt_main, ["-"], capsys)
    assert code == 0 and err == ""
    assert out == 'layer {\n  name: "a"\n  type: "ReLU"\n}\n'


def test_lrcn_fmt_stdin_errors_name_stdin_and_in_place_is_refused(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b'layer { nme: "a" }')))
    code, _, err = run(fmt_main, ["-"], capsys)
    assert code == 1 and err.startswith("<stdin>:1:9: unknown field 'nme'")
    code, _, err = run(fmt_main, ["-i", "-"], capsys)
    assert code == 2 and "standard input" in err


def test_bundled_nets_and_solvers_are_lrcn_fmt_clean(capsys):
    files = sorted(glob.glob(os.path.join(ROOT, "nets", "*.prototxt"))
                   + glob.glob(os.path.join(ROOT, "solvers", "*.prototxt")))
    assert files
    code, out, err = run(fmt_main, ["--check"] + files, capsys)
    assert (code, out, err) == (0, "", ""), f"run lrcn-fmt -i on: {out}{err}"


def test_lrcn_draw_svg_without_graphviz_is_drawn_in_python(files, capsys, monkeypatch):
    from xml.dom import minidom

    from compiler import review
    monkeypatch.setattr(review, "graphviz_available", lambda: False)
    out_file = files / "net.svg"
    code, _, err = run(draw_main, [str(files / "staged.prototxt"), "--stage", "big",
                                   "-o", str(out_file)], capsys)
    assert code == 0, err
    svg = minidom.parse(str(out_file))
    texts = [node.firstChild.data for node in svg.getElementsByTagName("text")]
    assert "staged (TRAIN)" in texts
    for expected in ("big", "(InnerProduct)", "relu", "data", "out", "2x8"):
        assert expected in texts
    # Input layer -> data -> big -> out, and the in-place relu: out -> relu -> out
    assert len(svg.getElementsByTagName("line")) == 5
    assert len(svg.getElementsByTagName("rect")) == 5     # 3 layers, 2 blobs


def test_lrcn_draw_png_without_graphviz_says_how_to_get_it(files, capsys, monkeypatch):
    import shutil
    monkeypatch.setattr(shutil, "which", lambda name: None)
    code, _, err = run(draw_main, [str(files / "staged.prototxt"), "--stage", "big",
                                   "-o", str(files / "net.png")], capsys)
    assert code == 1 and err.count("\n") == 1
    assert "needs Graphviz's dot, which is not installed: apt-get install graphviz" in err
    assert not (files / "net.png").exists()
