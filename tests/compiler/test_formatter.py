"""lrcn-fmt's canonical layout, comment handling and command-line behaviour."""

import subprocess
import sys

import pytest

from compiler import load_text
from compiler.cli import fmt_main
from compiler.formatter import format_document

MESSY = '''# A net
name:"tiny"   # trailing
layer: {
  top: 'ip'   bottom: ["data"]; type: "InnerProduct" name: "ip"
  inner_product_param < num_output: 0x0A bias_term: t >
  # about params
  param { lr_mult: 1e-1 }
  param { lr_mult: 2. }
  # end of layer
}  # after layer
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss"
  loss_param { normalization: VALID } include { phase: TRAIN } }
# the end
'''

CANONICAL = '''# A net
name: "tiny"  # trailing
layer {
  name: "ip"
  type: "InnerProduct"
  bottom: "data"
  top: "ip"
  # about params
  param {
    lr_mult: 1e-1
  }
  param {
    lr_mult: 2.
  }
  inner_product_param {
    num_output: 0x0A
    bias_term: true
  }
  # end of layer
}  # after layer
layer {
  name: "loss"
  type: "SoftmaxWithLoss"
  bottom: "ip"
  bottom: "label"
  top: "loss"
  include {
    phase: TRAIN
  }
  loss_param {
    normalization: VALID
  }
}
# the end
'''


def test_canonical_layout():
    assert format_document(load_text(MESSY, "net")) == CANONICAL


def test_canonical_text_is_a_fixed_point():
    assert format_document(load_text(CANONICAL, "net")) == CANONICAL


def test_enum_given_as_number_is_written_by_name():
    text = format_document(load_text("layer { pooling_param { pool: 1 } }", "net"))
    assert "pool: AVE" in text


def test_strings_are_requoted_and_joined():
    text = format_document(load_text("name: 'a\"b' \"c\"", "net"))
    assert text == 'name: "a\\"bc"\n'


def test_in_place_check_and_diff(tmp_path, capsys):
    path = tmp_path / "net.prototxt"
    path.write_text(MESSY)
    with pytest.raises(SystemExit) as exit_check:
        fmt_main(["--check", str(path)])
    assert exit_check.value.code == 1
    assert "would reformat" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_diff:
        fmt_main(["--diff", str(path)])
    assert exit_diff.value.code == 0
    assert "+  name: \"ip\"" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_inplace:
        fmt_main(["-i", str(path)])
    assert exit_inplace.value.code == 0
    assert path.read_text() == CANONICAL
    with pytest.raises(SystemExit) as exit_clean:
        fmt_main(["--check", str(path)])
    assert exit_clean.value.code == 0


def test_bad_file_is_not_touched(tmp_path, capsys):
    path = tmp_path / "bad.prototxt"
    path.write_text('layer { name: "x" ')
    with pytest.raises(SystemExit) as exit_info:
        fmt_main(["-i", str(path)])
    assert exit_info.value.code == 1
    assert path.read_text() == 'layer { name: "x" '
    err = capsys.readouterr().err
    assert f"{path}:1:7: unterminated '{{'" in err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == [path]   # no temporary file left behind


def test_console_script_usage_error_exits_2():
    result = subprocess.run([sys.executable, "-c", "from compiler.cli import fmt_main; fmt_main()",
                             "--bogus"], capture_output=True, text=True)
    assert result.returncode == 2
