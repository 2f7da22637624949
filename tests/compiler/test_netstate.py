"""NetState layer selection (Caffe's FilterNet / StateMeetsRule) and a solver's net states
(Solver::InitTrainNet / InitTestNets)."""

import pytest

from compiler import CompileError, filter_net, load_text, parse_text, solver_net_states
from compiler.netstate import candidate_states, net_state, state_meets_rule
from lrcn_proto import caffe_pb2

RULES_NET = '''
layer { name: "always" }
layer { name: "train" include { phase: TRAIN } }
layer { name: "test" include { phase: TEST } }
layer { name: "not_test" exclude { phase: TEST } }
layer { name: "stage_a" include { stage: "a" } }
layer { name: "a_and_b" include { stage: "a" stage: "b" } }
layer { name: "a_or_b" include { stage: "a" } include { stage: "b" } }
layer { name: "not_a" include { not_stage: "a" } }
layer { name: "exclude_a" exclude { stage: "a" } }
layer { name: "level_1_up" include { min_level: 1 } }
layer { name: "level_to_1" include { max_level: 1 } }
layer { name: "level_1_2" include { min_level: 1 max_level: 2 } }
layer { name: "train_a" include { phase: TRAIN stage: "a" } }
layer { name: "exclude_test_b" exclude { phase: TEST stage: "b" } }
'''

COMMON = {"always", "level_to_1"}


@pytest.mark.parametrize("phase, stages, level, expected", [
    ("TRAIN", (), 0, COMMON | {"train", "not_test", "not_a", "exclude_a", "exclude_test_b"}),
    ("TEST", (), 0, COMMON | {"test", "not_a", "exclude_a", "exclude_test_b"}),
    ("TRAIN", ("a",), 0, COMMON | {"train", "not_test", "stage_a", "a_or_b", "train_a",
                                   "exclude_test_b"}),
    ("TRAIN", ("a", "b"), 0, COMMON | {"train", "not_test", "stage_a", "a_and_b", "a_or_b",
                                       "train_a", "exclude_test_b"}),
    ("TEST", ("b",), 0, COMMON | {"test", "a_or_b", "not_a", "exclude_a"}),
    ("TEST", ("a",), 0, COMMON | {"test", "stage_a", "a_or_b", "exclude_test_b"}),
    ("TRAIN", (), 1, COMMON | {"train", "not_test", "not_a", "exclude_a", "level_1_up",
                               "level_1_2", "exclude_test_b"}),
    ("TRAIN", (), 2, {"always", "train", "not_test", "not_a", "exclude_a", "level_1_up",
                      "level_1_2", "exclude_test_b"}),
    ("TRAIN", (), 3, {"always", "train", "not_test", "not_a", "exclude_a", "level_1_up",
                      "exclude_test_b"}),
    ("TEST", ("c",), -1, COMMON | {"test", "not_a", "exclude_a", "exclude_test_b"}),
])
def test_rule_table_selects_caffes_layers(phase, stages, level, expected):
    net = parse_text(RULES_NET, "net")
    selected = filter_net(net, phase, stages, level)
    assert {layer.name for layer in selected.net.layer} == expected


def test_selection_keeps_file_order_and_original_indices():
    net = parse_text(RULES_NET, "net")
    selected = filter_net(net, "TEST", ("b",), 0)
    names = [layer.name for layer in net.layer]
    assert [names[i] for i in selected.indices] == [layer.name for layer in selected.net.layer]
    assert selected.indices == sorted(selected.indices)
    assert selected.net.state.phase == caffe_pb2.TEST


def rule(**fields):
    return caffe_pb2.NetStateRule(**fields)


def state(phase=caffe_pb2.TRAIN, stages=(), level=0):
    return caffe_pb2.NetState(phase=phase, stage=list(stages), level=level)


@pytest.mark.parametrize("the_rule, the_state, meets", [
    (rule(), state(), True),
    (rule(phase=caffe_pb2.TEST), state(), False),
    (rule(phase=caffe_pb2.TRAIN), state(), True),
    (rule(min_level=2), state(level=2), True),
    (rule(min_level=2), state(level=1), False),
    (rule(max_level=0), state(level=1), False),
    (rule(max_level=0), state(level=-5), True),
    (rule(stage=["a", "b"]), state(stages=["b", "a", "c"]), True),
    (rule(stage=["a", "b"]), state(stages=["a"]), False),
    (rule(not_stage=["a", "b"]), state(stages=["c"]), True),
    (rule(not_stage=["a", "b"]), state(stages=["b"]), False),
    (rule(stage=["a"], not_stage=["b"]), state(stages=["a", "b"]), False),
])
def test_state_meets_rule(the_rule, the_state, meets):
    assert state_meets_rule(the_state, the_rule) is meets


def test_the_nets_own_state_keeps_its_stages_but_loses_phase_and_level():
    # Caffe's Net(file, phase, level, stages): set phase, set level, ADD stages.
    net = parse_text('state { phase: TEST level: 3 stage: "from-file" }', "net")
    built = net_state(net, "TRAIN", ("given",), 1)
    assert (built.phase, built.level, list(built.stage)) == (caffe_pb2.TRAIN, 1,
                                                             ["from-file", "given"])


def test_include_and_exclude_together_is_a_located_error():
    net = parse_text('layer { name: "x" include { phase: TRAIN } exclude { stage: "a" } }',
                     "net")
    with pytest.raises(CompileError) as caught:
        filter_net(net, "TRAIN", locate=lambda index: ("n.prototxt", 7 + index, 3))
    error = caught.value
    assert (error.file, error.line, error.col) == ("n.prototxt", 7, 3)
    assert error.message == "layer 'x' has both include and exclude rules"


def test_unknown_phase_is_refused():
    with pytest.raises(CompileError, match="unknown phase 'DEPLOY'"):
        filter_net(parse_text("", "net"), "DEPLOY")


# --- candidate states for checking a net file alone -------------------------------------------

VARIANT_NET = '''
layer { name: "data" type: "Input" top: "x" input_param { shape { dim: 1 } } }
layer { name: "frozen" type: "ReLU" bottom: "x" top: "y" include { stage: "freeze" } }
layer { name: "free" type: "ReLU" bottom: "x" top: "y" exclude { stage: "freeze" } }
layer { name: "small" type: "ReLU" bottom: "y" top: "z" include { stage: "small" } }
layer { name: "big" type: "ReLU" bottom: "y" top: "z" include { stage: "big" } }
layer { name: "out" type: "ReLU" bottom: "z" top: "out" }
layer { name: "only_test" type: "ReLU" bottom: "x" top: "t" include { phase: TEST } }
'''


def stage_sets(net, phase):
    return [sorted(s.stage) for s in candidate_states(net, phase).states]


def test_candidates_complete_stage_sets_that_pick_no_variant():
    net = parse_text(VARIANT_NET, "net")
    # No stages and "freeze" alone select neither "small" nor "big": the first producer of
    # the missing "z" adds its stage.
    assert stage_sets(net, "TRAIN") == [["small"], ["freeze", "small"], ["big"]]
    assert candidate_states(net, "TRAIN").unusable_reason is None


def test_a_bottom_nobody_produces_is_left_for_the_compiler_to_report():
    net = parse_text('layer { name: "a" type: "ReLU" bottom: "typo" top: "b" }', "net")
    assert stage_sets(net, "TRAIN") == [[]]


def test_a_net_meant_for_the_other_phase_has_no_candidates_and_says_why():
    net = parse_text('''
        layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 } } }
        layer { name: "r" type: "Reshape" bottom: "x" top: "y" include { phase: TEST } }
        layer { name: "use" type: "ReLU" bottom: "y" top: "z" }''', "net")
    train = candidate_states(net, "TRAIN")
    assert train.states == []
    assert train.unusable_reason == "bottom 'y' is produced only in TEST (by layer 'r')"
    assert stage_sets(net, "TEST") == [[]]


# --- solver net states ---------------------------------------------------------------------------

NET_FILE = '''
name: "tiny"
state { stage: "from-net" level: 1 }
layer { name: "data" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "train_only" type: "ReLU" bottom: "x" top: "y" include { phase: TRAIN } }
'''


@pytest.fixture
def solver_dir(tmp_path, monkeypatch):
    """A solver's directory; the working directory is elsewhere, so relative net paths must
    resolve beside the solver file."""
    (tmp_path / "net.prototxt").write_text(NET_FILE)
    (tmp_path / "test.prototxt").write_text(NET_FILE.replace("tiny", "tiny_test"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return tmp_path


def solver_doc(directory, text):
    path = directory / "solver.prototxt"
    path.write_text(text)
    return load_text(text, "solver", str(path))


def test_net_field_gives_train_net_and_one_test_net_per_test_iter(solver_dir):
    doc = solver_doc(solver_dir, '''net: "net.prototxt"
train_state { stage: "t" level: 4 }
test_iter: 5 test_state { stage: "on-train" }
test_iter: 7 test_state { stage: "on-val" }
test_interval: 10''')
    selections = solver_net_states(doc)
    assert [s.role for s in selections] == ["train", "test0", "test1"]
    assert all(s.source == str(solver_dir / "net.prototxt") for s in selections)
    train, test0, test1 = (s.state for s in selections)
    # Caffe's precedence: the role's phase, then the net's own state, then the solver's.
    assert (train.phase, list(train.stage), train.level) == (caffe_pb2.TRAIN,
                                                             ["from-net", "t"], 4)
    assert (test0.phase, list(test0.stage), test0.level) == (caffe_pb2.TEST,
                                                             ["from-net", "on-train"], 1)
    assert list(test1.stage) == ["from-net", "on-val"]
    role, source, the_state = selections[0]          # unpacks as (role, source, state)
    assert role == "train" and the_state is train
    assert selections[1].document is selections[0].document   # the file is read once


def test_train_net_and_test_net_files(solver_dir):
    doc = solver_doc(solver_dir, 'train_net: "net.prototxt" test_net: "test.prototxt" '
                                 'test_iter: 3 test_interval: 1')
    selections = solver_net_states(doc)
    assert [(s.role, s.source.rsplit("/", 1)[-1]) for s in selections] == [
        ("train", "net.prototxt"), ("test0", "test.prototxt")]
    assert selections[1].document.message.name == "tiny_test"


def test_test_nets_come_in_caffes_order(solver_dir):
    # test_net_param first, then test_net, then the generic net for the remaining test_iter.
    doc = solver_doc(solver_dir, '''net: "net.prototxt"
test_net_param { name: "inline" }
test_net: "test.prototxt"
test_iter: 1 test_iter: 1 test_iter: 1 test_interval: 1''')
    roles = [(s.role, s.document.message.name) for s in solver_net_states(doc)]
    assert roles == [("train", "tiny"), ("test0", "inline"), ("test1", "tiny_test"),
                     ("test2", "tiny")]


def test_inline_net_keeps_its_place_in_the_solver_file(solver_dir):
    doc = solver_doc(solver_dir, '''test_iter: 1
test_interval: 1
net_param {
  name: "inline"
  layer { name: "a" type: "ReLU" bottom: "x" top: "y" }
}''')
    selections = solver_net_states(doc)
    assert isinstance(selections[0].source, caffe_pb2.NetParameter)
    assert selections[0].document.locate(("layer", 0, "bottom", 0)) == (5, 34)
    assert selections[0].document.filename == str(solver_dir / "solver.prototxt")


def test_a_solver_path_is_read_for_its_nets(solver_dir):
    solver_doc(solver_dir, 'train_net: "net.prototxt"')
    (selection,) = solver_net_states(solver_dir / "solver.prototxt")
    assert selection.document.message.name == "tiny"


def test_a_bare_solver_message_works_without_locations():
    solver = parse_text('net_param { name: "n" }', "solver")
    (selection,) = solver_net_states(solver)
    assert selection.document is None and selection.source.name == "n"


@pytest.mark.parametrize("text, message, line", [
    ("base_lr: 0.1", "the solver names no train net", None),
    ('net: "net.prototxt"\ntrain_net: "net.prototxt"',
     "the solver names more than one train net (net, train_net)", 2),
    ('train_net: "net.prototxt"\ntest_net: "test.prototxt"\ntest_interval: 1',
     "test_iter must be given once per test net: 0 test_iter for 1 test net(s)", None),
    ('train_net: "net.prototxt"\ntest_iter: 2\ntest_interval: 1',
     "test_iter must be given once per test net: 1 test_iter for 0 test net(s)", 2),
    ('net: "net.prototxt"\ntest_iter: 2\ntest_state { }\ntest_state { }\ntest_state { }\n'
     'test_interval: 1',
     "test_state must be unspecified or given once per test net: 3 test_state for 1 test "
     "net(s)", 3),
    ('net: "net.prototxt"\ntest_iter: 2',
     "the solver has 1 test net(s) but test_interval is 0", None),
])
def test_solver_net_errors(solver_dir, text, message, line):
    with pytest.raises(CompileError) as caught:
        solver_net_states(solver_doc(solver_dir, text))
    assert caught.value.message == message
    assert caught.value.line == line
    assert caught.value.file == str(solver_dir / "solver.prototxt")


def test_a_missing_net_file_is_located_at_the_solver_field(solver_dir):
    with pytest.raises(CompileError) as caught:
        solver_net_states(solver_doc(solver_dir, 'base_lr: 1\nnet: "nowhere.prototxt"'))
    error = caught.value
    assert (error.line, error.col) == (2, 1)
    assert error.message == "net file not found: nowhere.prototxt"
    assert str(solver_dir / "nowhere.prototxt") in error.hint
