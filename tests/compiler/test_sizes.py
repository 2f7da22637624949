"""Sizes are checked before memory is touched: a net whose blobs cannot fit is one located error
naming the layer and the bytes (lrcn-check, lrcn-show and runtime.Net alike), the estimate is
printed, and parsing keeps its memory within a small multiple of the file size."""

import tracemalloc

import pytest
import torch
from PIL import Image

from compiler import CompileError, compile_net, load_text
from compiler.cli import check_main
from compiler.sizes import LIMIT_VARIABLE, memory_limit
from runtime.net import Net

INPUT = 'layer { name: "in" type: "Input" top: "data" input_param { shape { %s } } }\n'

# (net text, words of the error) with the limit at 1 GiB; each names the layer that crosses it.
OVERSIZED = [
    (INPUT % "dim: 2 dim: 4" + 'layer { name: "fc" type: "InnerProduct" bottom: "data" '
     'top: "fc" inner_product_param { num_output: 4294967295 } }\n',
     "2:1: layer 'fc' (InnerProduct): learnable blob of shape (4294967295, 4) would hold "
     "17,179,869,180 values (64.0 GiB); Caffe's limit is 2,147,483,647 values per blob"),
    (INPUT % "dim: 1000000 dim: 1000000",
     "1:1: layer 'in' (Input): top 'data' of shape (1000000, 1000000) would hold "
     "1,000,000,000,000 values (3.6 TiB)"),
    ('layer { name: "rows" type: "DummyData" top: "x" dummy_data_param { shape { '
     'dim: 400000000 dim: 2 } } }\n',
     "1:1: layer 'rows' (DummyData): the net needs 3,200,000,000 bytes (3.0 GiB) of float32 "
     "memory up to this layer (parameters 0 B, activations 3.0 GiB), more than the "
     "1,073,741,824 bytes (1.0 GiB) of LRCN_MEMORY_LIMIT=1G"),
    (INPUT % "dim: 64 dim: 1024" + ''.join(
        f'layer {{ name: "fc{i}" type: "InnerProduct" bottom: "{"data" if i == 0 else i - 1}" '
        f'top: "{i}" inner_product_param {{ num_output: 16384 }} }}\n' for i in range(8)),
     "layer 'fc1' (InnerProduct): the net needs 1,149,632,512 bytes (1.1 GiB)"),
]


@pytest.fixture
def one_gib(monkeypatch):
    monkeypatch.setenv(LIMIT_VARIABLE, "1G")


@pytest.mark.parametrize("text, words", OVERSIZED, ids=["num_output", "input", "dummy", "deep"])
def test_oversized_nets_are_one_located_error(one_gib, tmp_path, capsys, text, words):
    path = tmp_path / "big.prototxt"
    path.write_text(text)
    with pytest.raises(SystemExit) as caught:
        check_main([str(path)])
    err = capsys.readouterr().err
    assert caught.value.code == 1
    assert err.startswith(f"{path}:") and words in err.splitlines()[0], err
    with pytest.raises(CompileError) as raised:
        Net(path, phase="TRAIN")      # refused while compiling, before any allocation
    assert words in str(raised.value)


def test_image_data_resized_beyond_the_limit_is_refused(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    (tmp_path / "list.txt").write_text("a.png 0\n")
    text = (f'layer {{ name: "images" type: "ImageData" top: "data" top: "label" '
            f'image_data_param {{ source: "{tmp_path / "list.txt"}" root_folder: "{tmp_path}/" '
            f'batch_size: 1 new_height: 100000 new_width: 100000 }} }}\n')
    with pytest.raises(CompileError) as caught:
        compile_net(load_text(text, "net", "images.prototxt"))
    assert caught.value.line == 1
    assert "layer 'images' (ImageData): top 'data' of shape (1, 3, 100000, 100000) would hold " \
           "30,000,000,000 values" in caught.value.message


def test_the_limit_can_be_raised_or_lifted(monkeypatch):
    text = OVERSIZED[2][0]
    monkeypatch.setenv(LIMIT_VARIABLE, "4G")
    assert compile_net(load_text(text, "net")).memory == (0, 3_200_000_000)
    monkeypatch.setenv(LIMIT_VARIABLE, "unlimited")
    assert memory_limit()[0] is None
    monkeypatch.setenv(LIMIT_VARIABLE, "lots")
    with pytest.raises(CompileError, match="LRCN_MEMORY_LIMIT='lots' is not a size"):
        compile_net(load_text(text, "net"))


def test_a_stride_beyond_the_input_pools_without_padding_to_the_stride():
    # Windows that start past the input hold nothing: Caffe gives -FLT_MAX (MAX), 0 (AVE).
    text = INPUT % "dim: 1 dim: 1 dim: 8 dim: 8" + (
        'layer { name: "p" type: "Pooling" bottom: "data" top: "p" '
        'pooling_param { pool: POOL kernel_size: 2 stride: 2147483648 } }\n')
    x = torch.arange(64.0).reshape(1, 1, 8, 8)
    for pool, empty in (("MAX", -3.4028234663852886e38), ("AVE", 0.0)):
        net = Net(load_text(text.replace("POOL", pool), "net"))
        top = net(data=x)["p"]
        first = 9.0 if pool == "MAX" else 4.5
        assert top.tolist() == [[[[first, empty], [empty, empty]]]]


def _peak_bytes(function):
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_parsing_a_long_string_costs_a_few_bytes_per_character():
    # A 2 MB string literal used to cost ~300 bytes per character (a regex frame each).
    text = 'name: "' + "x" * 2_000_000 + '"\n'
    load_text("name: 'warm-up'", "net")           # the grammar tables are built once
    peak = _peak_bytes(lambda: load_text(text, "net"))
    assert peak < 10 * len(text), peak / len(text)


def test_parsing_many_layers_stays_within_a_small_multiple_of_the_file():
    layer = ('layer {\n  name: "relu%d"\n  type: "ReLU"\n  bottom: "x"\n  top: "x"\n'
             '  # a comment\n}\n')
    # About 1 MB (some seconds: tracemalloc slows parsing several times over;
    # bench/bench_parse_memory.py measures a 50 MB file in a process of its own).
    text = INPUT % "dim: 2" + "".join(layer % i for i in range(12_000))
    load_text("name: 'warm-up'", "net")
    peak = _peak_bytes(lambda: load_text(text, "net"))
    # Measured 14.0 bytes per byte of this dense layout (52 before, about 170 before that):
    # the Document keeps the syntax tree with its comments (one object per field, the field
    # and its scalar in one) and finds positions in it. tracemalloc sees Python objects only,
    # not the protobuf message (upb's own memory, about 8 bytes per byte more).
    assert peak < 19 * len(text), peak / len(text)
