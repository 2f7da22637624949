"""Malformed input: each case pins the error's line, column and wording."""

import random

import pytest

from compiler import CompileError, load_file, parse_text

# (text, line, col, words the message must contain, words the hint must contain or None)
CASES = [
    # --- syntax
    ('a: 1.5.3', 1, 4, "malformed value '1.5.3'", "numbers are written"),
    ('a: 12abc', 1, 4, "malformed value '12abc'", None),
    ('name: ', 1, 1, "field 'name' has no value", "write `name: value`"),
    ('name', 1, 1, "field 'name' has no value", None),
    ('layer { name "x" }', 1, 14, "expected ':' or '{' after field name 'name', found string \"x\"",
     "write `name: value`"),
    ('layer { name: }', 1, 15, "expected a value, found '}'", None),
    ('layer { name: "x" ', 1, 7, "unterminated '{': opened at line 1, column 7 and never closed",
     "the file ends at line 1"),
    ('name: "x"\nlayer {\n  name: "a"\n', 2, 7, "unterminated '{': opened at line 2, column 7",
     "the file ends at line 4"),
    ("layer { bottom: 'a\n}", 1, 17, "unterminated string: the ' opened here", "close it with '"),
    ('name: "abc', 1, 7, 'unterminated string: the " opened here', None),
    ('layer {\n  name: "x" }\n}', 3, 1, "'}' without a matching '{'", None),
    ('layer { name: "a" >', 1, 19, "'>' does not match the '{' opened at line 1, column 7",
     "close it with '}'"),
    ('layer [', 1, 7, "unterminated '['", None),
    ('a {' * 20000, 1, 303, "nesting deeper than 100 levels", None),
    ('\x01', 1, 1, "unexpected character U+0001", None),
    ('layer { name: "x" @ }', 1, 19, "unexpected character '@'", None),
    ('layer { name: "x" ; ; }', 1, 21, "extra separator ';'", None),
    ('5', 1, 1, "expected a field name, found '5'", None),
    ('layer { "x" }', 1, 9, "expected a field name, found string \"x\"", None),
    ('layer { bottom: "a\\qb" }', 1, 19, "bad string escape: unknown escape '\\q'", None),
    ('layer { bottom: "\\x" }', 1, 18, "bad string escape: \\x needs hex digits", None),
    ('name: "\\U00110000"', 1, 8, "bad string escape: \\U00110000 is beyond Unicode", None),
    ('name: "ok \\UFFFFFFFF"', 1, 11, "\\UFFFFFFFF is beyond Unicode", None),
    # --- schema
    ('layer { num_ouput: 5 }', 1, 9, "unknown field 'num_ouput' in LayerParameter", None),
    ('layer { convolution_param { num_ouput: 5 } }', 1, 29,
     "unknown field 'num_ouput' in ConvolutionParameter", "did you mean 'num_output'?"),
    ('layer { kernel_size: 3 }', 1, 9, "unknown field 'kernel_size' in LayerParameter",
     "'kernel_size' is a field of convolution_param"),
    ('nmae: "net"', 1, 1, "unknown field 'nmae' in NetParameter", "did you mean 'name'?"),
    ('layer { convolution_param { num_output: -5 } }', 1, 41,
     "-5 is out of range for 'num_output'", None),
    ('layer { convolution_param { num_output: 5000000000 } }', 1, 41,
     "5000000000 is out of range for 'num_output' (a non-negative integer (uint32): "
     "0 .. 4294967295)", None),
    ('layer { convolution_param { axis: 3000000000 } }', 1, 35,
     "3000000000 is out of range for 'axis' (an integer (int32)", None),
    ('layer { convolution_param { num_output: 1.5 } }', 1, 41,
     "'num_output' takes a non-negative integer (uint32), found number 1.5",
     "holds whole numbers only"),
    ('layer { convolution_param { num_output: "5" } }', 1, 41,
     "'num_output' takes a non-negative integer (uint32), found string \"5\"", None),
    ('layer { convolution_param { bias_term: yes } }', 1, 40,
     "'bias_term' takes true or false, found identifier yes", "write true or false"),
    ('layer { pooling_param { pool: MAXX } }', 1, 31,
     "MAXX is not a value of 'pool' (PoolMethod); allowed: MAX, AVE, STOCHASTIC",
     "did you mean 'MAX'?"),
    ('layer { pooling_param { pool: "MAX" } }', 1, 31,
     "\"MAX\" is not a value of 'pool' (PoolMethod)", "without quotes: pool: MAX"),
    ('layer { pooling_param { pool: 7 } }', 1, 31, "7 is not a value of 'pool'", None),
    ('layer { include { phase: TRIAN } }', 1, 26, "TRIAN is not a value of 'phase' (Phase); "
     "allowed: TRAIN, TEST", "did you mean 'TRAIN'?"),
    ('layer { name: "a" name: "b" }', 1, 19, "field 'name' is given twice; LayerParameter has "
     "only one", "the first is at line 1, column 9"),
    ('layer { convolution_param { } convolution_param { } }', 1, 31,
     "field 'convolution_param' is given twice", None),
    ('layer { name: ["a", "b"] }', 1, 9, "'name' is not a repeated field, so it cannot take a "
     "[list]", None),
    ('layer { convolution_param: 5 }', 1, 28, "'convolution_param' is a message "
     "(ConvolutionParameter), not a value", "write `convolution_param { ... }`"),
    ('layer { name { } }', 1, 9, "'name' takes a string, not a message block", None),
    ('layer { name: x }', 1, 15, "'name' takes a string, found identifier x", 'quote it: name: "x"'),
    ('layer { type: 5 }', 1, 15, "'type' takes a string, found number 5", None),
    ('layer { loss_weight: 0x10 }', 1, 22, "'loss_weight' takes a number (float), found number "
     "0x10", None),
    ('layer { loss_weight: infinite }', 1, 22, "'loss_weight' takes a number (float), found "
     "identifier infinite", None),
    ('layer {\n  bottom: "data"\n  top: "conv1"\n  convolution_param {\n    stride: two\n  }\n}',
     5, 13, "'stride' takes a non-negative integer (uint32), found identifier two", None),
    ('layer { bottom: "\\xff" }', 1, 17, "'bottom' is not valid UTF-8 text", None),
]


@pytest.mark.parametrize("text, line, col, message, hint", CASES,
                         ids=[f"case{i}" for i in range(len(CASES))])
def test_error_is_located_and_worded(text, line, col, message, hint):
    with pytest.raises(CompileError) as caught:
        parse_text(text, "net", "bad.prototxt")
    error = caught.value
    assert (error.file, error.line, error.col) == ("bad.prototxt", line, col), str(error)
    assert message in error.message, str(error)
    if hint is not None:
        assert error.hint is not None and hint in error.hint, str(error)
    assert str(error).startswith(f"bad.prototxt:{line}:{col}: ")


def test_solver_field_errors_are_located():
    with pytest.raises(CompileError) as caught:
        parse_text("base_lr: 0.1\nlr_polcy: \"step\"\n", "solver", "s.prototxt")
    assert (caught.value.line, caught.value.col) == (2, 1)
    assert "unknown field 'lr_polcy' in SolverParameter" in caught.value.message
    assert "did you mean 'lr_policy'?" in caught.value.hint


def test_binary_file_is_one_clean_error(tmp_path):
    path = tmp_path / "weights.caffemodel"
    path.write_bytes(b"\n\x05conv1\x12\x00\xff\xfe\x00binary")
    with pytest.raises(CompileError) as caught:
        load_file(path)
    assert caught.value.message.startswith("not a text file")
    assert (caught.value.line, caught.value.col) == (2, 8)   # the NUL after "\n\x05conv1\x12"
    assert "weights, not definitions" in caught.value.hint


def test_missing_file_is_one_clean_error(tmp_path):
    with pytest.raises(CompileError) as caught:
        load_file(tmp_path / "nope.prototxt")
    assert "cannot read file" in caught.value.message
    assert caught.value.file.endswith("nope.prototxt")


def test_deep_but_legal_nesting_is_not_an_error():
    # Depth 100 is exactly the limit protobuf's own parser allows.
    with pytest.raises(CompileError) as caught:
        parse_text("layer { " * 100 + "}" * 100, "net")
    assert "unknown field 'layer' in LayerParameter" in caught.value.message


def _soup(rng):
    pieces = ['layer', '{', '}', ':', '"s"', "'t'", '-', '1', '0x1F', '1e-4', '.5', 'inf', '[',
              ']', ',', ';', '<', '>', '#c\n', '\n', ' ', 'name', 'bottom', 'TRAIN', '"\\n"',
              'convolution_param', 'num_output', '\x00', '\xff', 'é', '"', "'", '\\']
    return "".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))


def test_fuzzed_input_gives_compile_errors_only():
    rng = random.Random(1701)
    for _ in range(1500):
        text = _soup(rng)
        try:
            parse_text(text, None, "fuzz.prototxt")
        except CompileError as error:
            assert error.line is None or error.line >= 1
            str(error)


def test_fuzzed_bytes_give_compile_errors_only(tmp_path):
    rng = random.Random(7)
    path = tmp_path / "fuzz.prototxt"
    for _ in range(300):
        path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randint(0, 64))))
        try:
            load_file(path)
        except CompileError as error:
            str(error)


def test_the_largest_code_point_is_still_a_character():
    assert parse_text('name: "\\U0010FFFF"', "net").name == "\U0010FFFF"
