"""One validation before any work: `lrcn-check SOLVER` and `lrcn-train SOLVER` report the same
located errors for every bad solver, and lrcn-check no longer passes what training rejects."""

import math
import re
import signal

import pytest

from compiler.cli import check_main
from compiler.validate import FILLER_TYPES, LR_POLICIES
from compiler.upgrade import SOLVER_TYPES
from lrcn_proto import caffe_pb2
from runtime import cli as runtime_cli
from runtime.fillers import _FILLERS
from runtime.updates import UPDATE_RULES, learning_rate

NET = '''name: "tiny"
layer { name: "data" type: "DummyData" top: "x" top: "y"
  dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 }
                     data_filler { type: "gaussian" } } }
layer { name: "fc" type: "InnerProduct" bottom: "x" top: "fc"
  inner_product_param { num_output: 2 weight_filler { type: "FILLER" } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "fc" bottom: "y" top: "loss" }
'''

GOOD = '''net: "net.prototxt"
base_lr: 0.01
max_iter: 2
display: 0
snapshot_after_train: false
'''

# (extra solver lines from line 6 on, filler of fc, message, line:col of the error)
BAD_SOLVERS = [
    ('lr_policy: "inv"\ngamma: -1\npower: 0.75\n', "xavier",
     'lr_policy "inv" needs gamma >= 0, got -1', "7:1"),
    ('lr_policy: "step"\n', "xavier", 'lr_policy "step" needs stepsize > 0, got 0', "6:1"),
    ('lr_policy: "sigmoid"\ngamma: 0.1\nstepsize: 0\n', "xavier",
     'lr_policy "sigmoid" needs stepsize > 0, got 0', "8:1"),
    ('lr_policy: "multistep"\ngamma: -0.5\nstepvalue: 1\n', "xavier",
     'lr_policy "multistep" needs gamma >= 0', "7:1"),
    ('lr_policy: "cosine"\n', "xavier", "unknown lr_policy 'cosine'", "6:1"),
    ('type: "Adamm"\n', "xavier", "unknown solver type 'Adamm'", "6:1"),
    ('iter_size: 0\n', "xavier", "iter_size must be at least 1, got 0", "6:1"),
    ('average_loss: 0\n', "xavier", "average_loss must be at least 1, got 0", "6:1"),
    ('regularization_type: "L3"\n', "xavier", "unknown regularization_type 'L3'", "6:1"),
    ('type: "AdaGrad"\nmomentum: 0.9\n', "xavier", "momentum cannot be used with AdaGrad",
     "7:1"),
    ('solver_type: RMSPROP\nrms_decay: 1\n', "xavier", "rms_decay should lie between 0 and 1",
     "7:1"),
    ('type: "Adam"\nmomentum: 1\n', "xavier", "Adam's momentum must be in [0, 1), got 1",
     "7:1"),
    ('test_iter: 0\ntest_interval: 1\n', "xavier", "test_iter must be at least 1, got 0",
     "6:1"),
    ('snapshot_prefix: "blocker/snaps/run"\n', "xavier",
     "cannot write snapshots: 'blocker' is a file, not a directory", "6:1"),
    ('', "bogus", "layer 'fc' (InnerProduct): inner_product_param.weight_filler: unknown "
     "filler type 'bogus'", "net.prototxt:6:55"),
    ('', "bilinear", "the bilinear filler needs a 4-D blob with square kernels, got shape "
     "(2, 3)", "net.prototxt:6:55"),
]


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "blocker").write_text("a file where the snapshot directory would go\n")
    saved = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGHUP)}
    yield tmp_path
    for number, handler in saved.items():
        signal.signal(number, handler)


def _write(folder, extra, filler):
    (folder / "net.prototxt").write_text(NET.replace("FILLER", filler))
    # The extra lines start at line 6; a fixed rate unless they choose a policy.
    policy = "" if "lr_policy" in extra else 'lr_policy: "fixed"\n'
    path = folder / "solver.prototxt"
    path.write_text(GOOD + extra + policy)
    return path


def _run(main, argv, capsys):
    with pytest.raises(SystemExit) as caught:
        main(argv)
    out, err = capsys.readouterr()
    return caught.value.code, err


@pytest.mark.parametrize("extra, filler, message, place", BAD_SOLVERS,
                         ids=[case[2][:40] for case in BAD_SOLVERS])
def test_check_and_train_give_the_same_located_error(folder, capsys, extra, filler, message,
                                                     place):
    path = _write(folder, extra, filler)
    check_code, check_err = _run(check_main, [str(path)], capsys)
    train_code, train_err = _run(runtime_cli.train_main, [str(path), "--no-progress"], capsys)
    assert (check_code, train_code) == (1, 1), (check_err, train_err)
    location = place if ".prototxt" in place else f"{path}:{place}"
    first = check_err.splitlines()[0]
    assert first.startswith(f"{location}: ") and message in first, check_err
    # lrcn-check names the state a net error was found in; the error itself is the same.
    # lrcn-train's own log lines (glog's "I1202 ..." prefix) may come before it.
    train_errors = [line for line in train_err.splitlines() if not re.match(r"I\d{4} ", line)]
    assert train_errors[0] == first, (check_err, train_err)
    assert "Traceback" not in train_err + check_err


def test_every_problem_of_a_solver_is_reported_at_once(folder, capsys):
    path = _write(folder, 'lr_policy: "inv"\ngamma: -1\niter_size: 0\ntype: "SDG"\n', "xavier")
    code, err = _run(check_main, [str(path)], capsys)
    assert code == 1
    assert [line.split(": ", 1)[0] for line in err.splitlines() if not line.startswith(" ")] \
        == [f"{path}:7:1", f"{path}:8:1", f"{path}:9:1"]


def test_check_reports_a_missing_snapshot_directory_and_train_creates_it(folder, capsys):
    path = _write(folder, 'snapshot_prefix: "runs/new/tiny"\nsnapshot: 1\n', "xavier")
    code, _ = _run(check_main, [str(path)], capsys)
    assert code == 0
    assert not (folder / "runs").exists()
    capsys.readouterr()
    code, err = _run(runtime_cli.train_main, [str(path), "--no-progress"], capsys)
    assert code == 0, err
    assert (folder / "runs" / "new" / "tiny_iter_2.caffemodel").exists()


def test_check_prints_the_snapshot_directory_note(folder, capsys):
    path = _write(folder, 'snapshot_prefix: "runs/new/tiny"\n', "xavier")
    with pytest.raises(SystemExit):
        check_main([str(path)])
    out = capsys.readouterr().out
    assert "note: snapshot directory 'runs/new' does not exist yet; lrcn-train creates it" in out


def test_the_runtime_implements_exactly_the_validated_names():
    assert set(UPDATE_RULES) == set(SOLVER_TYPES.values())
    assert set(_FILLERS) == set(FILLER_TYPES)


@pytest.mark.parametrize("policy, fields", [
    ("exp", dict(gamma=10.0)),
    ("inv", dict(gamma=1.0, power=-1000.0)),
    ("sigmoid", dict(gamma=1.0, stepsize=100000)),
])
def test_rates_that_overflow_are_infinite_or_zero_as_in_caffe(policy, fields):
    # C's pow / exp overflow to inf where Python's math raises.
    param = caffe_pb2.SolverParameter(lr_policy=policy, base_lr=0.1, max_iter=10, **fields)
    assert policy in LR_POLICIES
    rate, _ = learning_rate(param, 5000, 0)
    assert math.isinf(rate) or rate == 0.0
