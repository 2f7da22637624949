"""lrcn-draw: the layer graph as valid DOT, and as SVG through Graphviz when it is installed."""

import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ElementTree

import pytest

from compiler.review import dot_quote
from compiler.review_cli import draw_main

# An in-place ReLU, a blob read twice, names that need quoting and a quote in a name.
NET = r'''name: "draw \"me\""
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv/1 x" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_h: 3 kernel_w: 5 stride: 2 group: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: AVE kernel_size: 2 } }
layer { name: "sum" type: "Eltwise" bottom: "pool1" bottom: "pool1" top: "sum" }
layer { name: "ip" type: "InnerProduct" bottom: "sum" top: "ip"
        inner_product_param { num_output: 5 } }
'''
LAYER_NAMES = ["data", "conv/1 x", "relu1", "pool1", "sum", "ip"]

QUOTED = r'"(?:[^"\\]|\\.)*"'
NODE = re.compile(rf'^  ({QUOTED}) \[(.*)\];$')
EDGE = re.compile(rf'^  ({QUOTED}) -> ({QUOTED});$')


def unquote(text):
    return re.sub(r'\\(.)', r'\1', text[1:-1])


def parse_dot(text):
    """Nodes {id: attribute text} and edges [(from, to)] of the one-statement-per-line DOT
    net_to_dot writes; fails on any line it does not recognise."""
    lines = text.splitlines()
    assert re.fullmatch(rf'digraph {QUOTED} \{{', lines[0]) and lines[-1] == "}"
    nodes, edges = {}, []
    for line in lines[1:-1]:
        if line.startswith(("  graph [", "  node [")):
            continue
        node, edge = NODE.match(line), EDGE.match(line)
        assert node or edge, f"not a node or edge statement: {line!r}"
        if node:
            nodes[unquote(node.group(1))] = node.group(2)
        else:
            edges.append((unquote(edge.group(1)), unquote(edge.group(2))))
    return nodes, edges


def label_of(attributes):
    match = re.search(rf'label=({QUOTED})', attributes)
    return match.group(1)[1:-1]


def run_draw(capsys, *argv):
    with pytest.raises(SystemExit) as exit_info:
        draw_main([str(a) for a in argv])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


@pytest.fixture
def net_file(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(NET)
    return path


def test_dot_is_well_formed_and_complete(capsys, tmp_path, net_file):
    out_path = tmp_path / "net.dot"
    status, _, err = run_draw(capsys, net_file, "-o", out_path, "--rankdir", "TB")
    assert (status, err) == (0, "")
    text = out_path.read_text()
    assert _braces_balance(text)
    assert 'rankdir="TB"' in text
    nodes, edges = parse_dot(text)
    assert {f"layer:{name}" for name in LAYER_NAMES} <= set(nodes)
    # One node per blob name: the in-place ReLU's conv1 version collapses into conv1.
    assert {n for n in nodes if n.startswith("blob:")} == {
        "blob:data", "blob:conv1", "blob:pool1", "blob:sum", "blob:ip"}
    for source, target in edges:
        assert source in nodes and target in nodes
    assert ("blob:conv1", "layer:relu1") in edges and ("layer:relu1", "blob:conv1") in edges
    assert edges.count(("blob:pool1", "layer:sum")) == 2      # Eltwise reads pool1 twice


def _braces_balance(text):
    # Braces inside quoted strings do not count; outside them they must pair up.
    outside = re.sub(QUOTED, '""', text)
    depth = 0
    for char in outside:
        depth += {"{": 1, "}": -1}.get(char, 0)
        assert depth >= 0
    return depth == 0


def test_labels_carry_names_types_key_params_and_shapes(capsys, net_file):
    # conv: 4 filters of 3 channels x 3x5 + 4 biases = 184; 8x8 input, stride 2 -> 3x2.
    _, out, _ = run_draw(capsys, net_file, "-o", "-")
    assert _braces_balance(out)
    nodes, _ = parse_dot(out)
    assert label_of(nodes["layer:conv/1 x"]) == \
        r"conv/1 x\n(Convolution)\nkernel 3x5, stride 2, pad 0\nnum_output 4\n184 params"
    assert label_of(nodes["layer:pool1"]) == r"pool1\n(Pooling)\nAVE kernel 2, stride 1, pad 0"
    assert label_of(nodes["layer:ip"]).startswith(r"ip\n(InnerProduct)\nnum_output 5")
    assert label_of(nodes["blob:conv1"]) == r"conv1\n2x4x3x2"
    assert 'fillcolor="#90EE90"' in nodes["layer:relu1"]          # in place: Caffe's colour
    assert 'shape="octagon"' in nodes["blob:data"] and 'shape="box"' in nodes["layer:data"]
    assert out.startswith('digraph "draw \\"me\\"" {')


def test_dot_quote_escapes_quotes_backslashes_and_newlines():
    assert dot_quote('a "b"\\c\nd') == r'"a \"b\"\\c\nd"'


def test_phase_and_stage_choose_what_is_drawn(capsys, tmp_path):
    path = tmp_path / "staged.prototxt"
    path.write_text(NET + 'layer { name: "probe" type: "ReLU" bottom: "ip" top: "ip" '
                          'include { stage: "debug" } }\n')
    _, out, _ = run_draw(capsys, path, "-o", "-")
    assert "layer:probe" not in parse_dot(out)[0]
    _, out, _ = run_draw(capsys, path, "-o", "-", "--phase", "TEST", "--stage", "debug")
    assert "layer:probe" in parse_dot(out)[0] and "draw \\\"me\\\" (TEST)" in out


def test_unknown_extension_is_a_user_error(capsys, net_file, tmp_path):
    status, _, err = run_draw(capsys, net_file, "-o", tmp_path / "net.jpg")
    assert status == 1
    assert err.startswith(f"{tmp_path / 'net.jpg'}: cannot tell the output format")


def test_missing_graphviz_is_a_clear_user_error(capsys, net_file, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    status, _, err = run_draw(capsys, net_file, "-o", tmp_path / "net.pdf")
    assert status == 1
    assert err == (f"{tmp_path / 'net.pdf'}: writing .pdf needs Graphviz's dot, which is not "
                   "installed: apt-get install graphviz (or brew / conda install graphviz); "
                   ".svg and .dot work without it\n")
    assert not (tmp_path / "net.pdf").exists()


def test_bad_usage_exits_2(capsys, net_file):
    assert run_draw(capsys, net_file)[0] == 2                         # no -o
    assert run_draw(capsys, net_file, "-o", "x.dot", "--rankdir", "UP")[0] == 2


needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is absent")


@needs_dot
def test_graphviz_accepts_the_dot(capsys, net_file):
    _, out, _ = run_draw(capsys, net_file, "-o", "-")
    result = subprocess.run(["dot", "-Tsvg"], input=out, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@needs_dot
def test_svg_output(capsys, net_file, tmp_path):
    out_path = tmp_path / "net.svg"
    status, _, err = run_draw(capsys, net_file, "-o", out_path)
    assert (status, err) == (0, "")
    root = ElementTree.parse(out_path).getroot()
    assert root.tag.endswith("svg")
    titles = {element.text for element in root.iter() if element.tag.endswith("title")}
    assert {f"layer:{name}" for name in LAYER_NAMES} <= titles
    assert [p for p in os.listdir(tmp_path) if p.startswith(".lrcn-")] == []   # no temp left


@needs_dot
def test_caffenet_draws(capsys, corpus_dir, tmp_path):
    path = os.path.join(corpus_dir, "bvlc", "models", "bvlc_reference_caffenet",
                        "deploy.prototxt")
    _, out, _ = run_draw(capsys, path, "-o", "-", "--phase", "TEST")
    nodes, edges = parse_dot(out)
    assert label_of(nodes["blob:prob"]) == r"prob\n10x1000"
    assert len([n for n in nodes if n.startswith("layer:")]) == 24
    result = subprocess.run(["dot", "-Tsvg"], input=out, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
