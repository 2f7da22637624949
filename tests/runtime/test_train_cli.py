"""lrcn-train end to end: a small classifier on generated data trains to a stated accuracy,
its log reads with Caffe's tools/extra/parse_log.py rules, and every option and user error
behaves like `caffe train`.

The data: three well separated 2-D Gaussian blobs, written as HDF5 train and test sets; the
net: InnerProduct-ReLU-InnerProduct with SoftmaxWithLoss (and Accuracy in TEST). One training
run of 300 iterations takes a few seconds and is shared by the tests that only read its
results (the `trained` fixture); runs that change options are short.
"""

import contextlib
import csv
import datetime
import io
import os
import re
import select
import shutil
import signal
import subprocess
import time
from collections import OrderedDict

import h5py
import numpy as np
import pytest

from lrcn_proto import caffe_pb2
from runtime import cli, gemm
from runtime.weights import array_to_blob
from support import as_a_terminal_starts_it, wait_past_python_start_up

CENTERS = np.array([[0.0, 3.0], [3.0, -2.0], [-3.0, -2.0]], np.float32)
MAX_ITER = 300
TARGET_ACCURACY = 0.9

NET = '''name: "blobs"
layer { name: "data" type: "HDF5Data" top: "data" top: "label" include { phase: TRAIN }
        hdf5_data_param { source: "train.txt" batch_size: 30 shuffle: true } }
layer { name: "data" type: "HDF5Data" top: "data" top: "label" include { phase: TEST }
        hdf5_data_param { source: "test.txt" batch_size: 100 } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        inner_product_param { num_output: 16 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
layer { name: "accuracy" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy"
        include { phase: TEST } }
layer { name: "train_accuracy" type: "Accuracy" bottom: "ip2" bottom: "label"
        top: "train_accuracy" include { phase: TRAIN stage: "monitor" } }
'''

SOLVER = '''net: "net.prototxt"
test_iter: 3
test_interval: 100
base_lr: 0.1
momentum: 0.9
weight_decay: 0.0005
lr_policy: "step"
gamma: 0.5
stepsize: 100
display: 50
max_iter: {max_iter}
snapshot: 100
snapshot_prefix: "blobs"
random_seed: 7
solver_mode: CPU
'''


def write_blobs(path, rows, seed):
    rng = np.random.default_rng(seed)
    label = rng.integers(0, len(CENTERS), rows)
    data = CENTERS[label] + 0.6 * rng.standard_normal((rows, 2)).astype(np.float32)
    with h5py.File(path, "w") as handle:
        handle["data"] = data.astype(np.float32)
        handle["label"] = label.astype(np.float32)


def make_problem(folder, max_iter=MAX_ITER, net=NET):
    write_blobs(folder / "train.h5", 600, seed=1)
    write_blobs(folder / "test.h5", 300, seed=2)
    (folder / "train.txt").write_text("train.h5\n")
    (folder / "test.txt").write_text("test.h5\n")
    (folder / "net.prototxt").write_text(net)
    solver = folder / "solver.prototxt"
    solver.write_text(SOLVER.format(max_iter=max_iter))
    return solver


def lrcn_train(argv, capsys):
    """train_main in-process: (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as exited:
        cli.train_main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return exited.value.code, out, err


# --- Caffe's tools/extra/parse_log.py (and extract_seconds.py), as they read a log -----------

ITERATION = re.compile(r'Iteration (\d+)')
TRAIN_OUTPUT = re.compile(r'Train net output #(\d+): (\S+) = ([\.\deE+-]+)')
TEST_OUTPUT = re.compile(r'Test net output #(\d+): (\S+) = ([\.\deE+-]+)')
LEARNING_RATE = re.compile(r'lr = ([-+]?[0-9]*\.?[0-9]+([eE]?[-+]?[0-9]+)?)')


def extract_datetime_from_line(line, year):
    # Expected format: I0210 13:39:22.381027 25210 solver.cpp:204] Iteration 100, lr = 0.00992
    fields = line.strip().split()
    month, day = int(fields[0][1:3]), int(fields[0][3:5])
    timestamp = fields[1]
    dot = timestamp.rfind('.')
    hour, minute, second = (int(x) for x in timestamp[:dot].split(':'))
    return datetime.datetime(year, month, day, hour, minute, second, int(timestamp[dot + 1:]))


def parse_log(text):
    """parse_log.parse_log: (train rows, test rows), each an OrderedDict with NumIters,
    Seconds, LearningRate and one column per output."""
    year = datetime.date.today().year
    lines = text.splitlines()
    start = next(extract_datetime_from_line(line, year) for line in lines if 'Solving' in line)
    rows = {"train": [], "test": []}
    current = {"train": None, "test": None}
    iteration, learning_rate = -1, float('NaN')
    for line in lines:
        match = ITERATION.search(line)
        if match:
            iteration = float(match.group(1))
        if iteration == -1:
            continue
        try:
            seconds = (extract_datetime_from_line(line, year) - start).total_seconds()
        except (ValueError, IndexError):
            continue
        match = LEARNING_RATE.search(line)
        if match:
            learning_rate = float(match.group(1))
        for kind, regex in (("train", TRAIN_OUTPUT), ("test", TEST_OUTPUT)):
            row, done = current[kind], rows[kind]
            match = regex.search(line)
            if match:
                if not row or row['NumIters'] != iteration:
                    if row:
                        done.append(row)
                    row = OrderedDict([('NumIters', iteration), ('Seconds', seconds),
                                       ('LearningRate', learning_rate)])
                row[match.group(2)] = float(match.group(3))
            if row and len(done) >= 1 and len(row) == len(done[0]):
                done.append(row)
                row = None
            current[kind] = row
    for done in rows.values():
        # fix_initial_nan_learning_rate: the first row comes before the first "lr =" line.
        if len(done) > 1:
            done[0]['LearningRate'] = done[1]['LearningRate']
    return rows["train"], rows["test"]


# --- one full training run, shared --------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Train the blobs classifier to MAX_ITER in-process with --log-csv; keep what it wrote."""
    folder = tmp_path_factory.mktemp("trained")
    solver = make_problem(folder)
    saved = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGHUP)}
    previous = os.getcwd()
    os.chdir(folder)
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr), \
                pytest.raises(SystemExit) as exited:
            cli.train_main([str(solver), "--log-csv", "log.csv"])
    finally:
        os.chdir(previous)
        for number, handler in saved.items():
            signal.signal(number, handler)
    return {"folder": folder, "code": exited.value.code, "stdout": stdout.getvalue(),
            "log": stderr.getvalue()}


def test_training_reaches_the_stated_test_accuracy(trained):
    assert trained["code"] == 0
    assert trained["stdout"] == ""           # Caffe logs to stderr only
    assert "Traceback" not in trained["log"]
    _, test_rows = parse_log(trained["log"])
    final = test_rows[-1]
    assert final["NumIters"] == MAX_ITER
    assert final["accuracy"] >= TARGET_ACCURACY
    assert test_rows[0]["accuracy"] < 0.8     # it learned: the untrained net is worse
    assert "Optimization Done." in trained["log"]


def test_log_reads_with_caffe_parse_log(trained):
    train_rows, test_rows = parse_log(trained["log"])
    # display 50; the final "Iteration 300, loss = " line has no output lines under it, so
    # parse_log's train rows end at 250, as with Caffe's own logs.
    assert [row["NumIters"] for row in train_rows] == [0, 50, 100, 150, 200, 250]
    assert all(set(row) == {"NumIters", "Seconds", "LearningRate", "loss"} for row in train_rows)
    # test_initialization (default true): tests at 0, every test_interval, and after training.
    assert [row["NumIters"] for row in test_rows] == [0, 100, 200, 300]
    assert all({"accuracy", "loss"} <= set(row) for row in test_rows)
    # lr_policy step: base_lr 0.1 halves every 100 iterations. A row takes the last "lr ="
    # logged before it, as parse_log does (the lr line follows the outputs of its iteration).
    lr_by_iteration = {int(m.group(1)): float(m.group(2)) for m in re.finditer(
        r"Iteration (\d+), lr = ([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)", trained["log"])}
    assert lr_by_iteration == {0: 0.1, 50: 0.1, 100: 0.05, 150: 0.05, 200: 0.025, 250: 0.025}
    assert [row["LearningRate"] for row in train_rows] == [0.1, 0.1, 0.1, 0.05, 0.05, 0.025]
    assert all(row["Seconds"] >= 0 for row in train_rows)
    losses = [row["loss"] for row in train_rows]
    assert losses[-1] < losses[0]
    assert re.search(r"Iteration 300, loss = [\d.eE+-]+", trained["log"])


def test_log_lines_have_glog_prefix(trained):
    lines = trained["log"].splitlines()
    glog = re.compile(r"^I\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ \S+\] ")
    assert lines and all(glog.match(line) for line in lines)


def test_snapshots_are_named_like_caffe(trained):
    folder = trained["folder"]
    for iteration in (100, 200, 300):
        for suffix in ("caffemodel", "solverstate"):
            assert (folder / f"blobs_iter_{iteration}.{suffix}").is_file()
    assert not (folder / "blobs_iter_0.caffemodel").exists()
    state = caffe_pb2.SolverState()
    state.ParseFromString((folder / "blobs_iter_300.solverstate").read_bytes())
    assert state.iter == 300 and state.learned_net.endswith("blobs_iter_300.caffemodel")
    model = caffe_pb2.NetParameter()
    model.ParseFromString((folder / "blobs_iter_300.caffemodel").read_bytes())
    shapes = {layer.name: [tuple(b.shape.dim) for b in layer.blobs]
              for layer in model.layer if layer.blobs}
    assert shapes == {"ip1": [(16, 2), (16,)], "ip2": [(3, 16), (3,)]}


def test_log_csv_holds_every_logged_scalar(trained):
    with open(trained["folder"] / "log.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["iteration", "phase", "name", "value"]
    rows = [(int(i), phase, name, float(value)) for i, phase, name, value in rows[1:]]
    train_iterations = sorted({i for i, phase, name, _ in rows if phase == "train"})
    assert train_iterations == [0, 50, 100, 150, 200, 250]
    assert {name for _, phase, name, _ in rows if phase == "train"} == {"smoothed_loss", "loss"}
    tests = {(i, name): value for i, phase, name, value in rows if phase == "test0"}
    assert sorted({i for i, _ in tests}) == [0, 100, 200, 300]
    # The CSV and the log agree (the log rounds to 6 significant digits).
    _, test_rows = parse_log(trained["log"])
    for row in test_rows:
        iteration = int(row["NumIters"])
        assert tests[(iteration, "accuracy")] == pytest.approx(row["accuracy"], rel=1e-5)
        assert tests[(iteration, "loss")] == pytest.approx(row["loss"], rel=1e-5)


# --- options ------------------------------------------------------------------------------

def test_solver_flag_iterations_and_stage(tmp_path, monkeypatch, capsys, restore_signals):
    solver = make_problem(tmp_path)
    # parse_log keeps a row once a second one shows the columns are complete: display twice.
    solver.write_text(solver.read_text().replace("display: 50", "display: 10"))
    monkeypatch.chdir(tmp_path)
    code, _, log = lrcn_train([f"--solver={solver}", "--iterations", "20", "--stage",
                               "monitor"], capsys)
    assert code == 0, log
    train_rows, _ = parse_log(log)
    # --stage monitor selects the TRAIN-only Accuracy layer: a second train output.
    assert set(train_rows[0]) == {"NumIters", "Seconds", "LearningRate", "loss",
                                  "train_accuracy"}
    assert re.search(r"Train net output #1: train_accuracy = ", log)
    # --iterations replaces max_iter: training stops at 20 and snapshots there
    # (snapshot_after_train), with no snapshot of the solver's own 100.
    assert [row["NumIters"] for row in train_rows] == [0, 10]
    assert "Iteration 20, loss = " in log and "Iteration 21" not in log
    assert (tmp_path / "blobs_iter_20.caffemodel").is_file()
    assert not (tmp_path / "blobs_iter_100.caffemodel").exists()


@pytest.mark.skipif(not gemm.cpu_has_bfloat16(), reason="this CPU has no bfloat16 instructions")
def test_precision_bfloat16_trains_close_to_float32(tmp_path, monkeypatch, capsys,
                                                   restore_signals):
    solver = make_problem(tmp_path)
    solver.write_text(solver.read_text().replace("display: 50", "display: 10"))
    monkeypatch.chdir(tmp_path)
    losses = {}
    try:
        for name in ("float32", "bfloat16"):
            code, _, log = lrcn_train([solver, "--iterations", "20", "--precision", name],
                                      capsys)
            assert code == 0, log
            losses[name] = [float(v) for v in re.findall(r"Iteration \d+ .*loss = (\S+)", log)]
    finally:
        gemm.set_precision("float32")
    assert len(losses["bfloat16"]) == len(losses["float32"]) == 2     # iterations 0 and 10
    assert losses["bfloat16"] != losses["float32"]                 # it did change the products
    np.testing.assert_allclose(losses["bfloat16"], losses["float32"], rtol=0.05, atol=0.01)


def test_without_stage_the_staged_layer_is_absent(tmp_path, monkeypatch, capsys,
                                                  restore_signals):
    solver = make_problem(tmp_path)
    monkeypatch.chdir(tmp_path)
    code, _, log = lrcn_train([solver, "--iterations", "1"], capsys)
    assert code == 0, log
    assert "train_accuracy" not in log


def test_weights_are_loaded_by_layer_name(trained, tmp_path, monkeypatch, capsys,
                                          restore_signals):
    """The trained ip1/ip2 and a layer the net does not have, in one .caffemodel: with
    --iterations 0 the test at iteration 0 already scores like the trained net."""
    source = caffe_pb2.NetParameter()
    source.ParseFromString((trained["folder"] / "blobs_iter_300.caffemodel").read_bytes())
    weights = caffe_pb2.NetParameter(name="other")
    unrelated = weights.layer.add(name="conv_not_in_this_net", type="Convolution")
    unrelated.blobs.append(array_to_blob(np.ones((4, 1, 3, 3), np.float32)))
    for layer in reversed(source.layer):    # order does not matter, names do
        if layer.blobs:
            weights.layer.add().CopyFrom(layer)
    (tmp_path / "init.caffemodel").write_bytes(weights.SerializeToString())
    solver = make_problem(tmp_path)
    monkeypatch.chdir(tmp_path)
    code, _, log = lrcn_train([solver, "--weights", "init.caffemodel", "--iterations", "0"],
                              capsys)
    assert code == 0, log
    assert "Finetuning from init.caffemodel" in log
    # One test, at iteration 0 (parse_log would wait for a second row to keep it).
    scores = {m.group(2): float(m.group(3)) for m in TEST_OUTPUT.finditer(log)}
    assert "Iteration 0, Testing net (#0)" in log
    assert scores["accuracy"] >= TARGET_ACCURACY
    assert not (tmp_path / "blobs_iter_1.caffemodel").exists()


def test_snapshot_resume_continues_to_max_iter_bit_identically(trained, tmp_path, monkeypatch,
                                                                capsys, restore_signals):
    for name in os.listdir(trained["folder"]):
        if name.startswith("blobs_iter_200.") or name.endswith((".h5", ".txt", ".prototxt")):
            shutil.copy(trained["folder"] / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    code, _, log = lrcn_train(["solver.prototxt", "--snapshot", "blobs_iter_200.solverstate"],
                              capsys)
    assert code == 0, log
    iterations = {int(m.group(1)) for m in re.finditer(r"Iteration (\d+)", log)}
    assert min(iterations) == 200 and max(iterations) == MAX_ITER
    # The .lrcn sidecar restores the random streams and data positions: the resumed run ends
    # with exactly the weights of the uninterrupted one.
    assert ((tmp_path / "blobs_iter_300.caffemodel").read_bytes()
            == (trained["folder"] / "blobs_iter_300.caffemodel").read_bytes())


# --- errors -------------------------------------------------------------------------------

def assert_one_clean_error(code, err, *fragments):
    assert code == 1
    assert "Traceback" not in err
    # Everything but Caffe's log lines is the error: one message (and its hint line).
    message = [line for line in err.splitlines() if not re.match(r"^I\d{4} ", line)]
    assert message and not message[0].startswith(" ")
    assert all(line.startswith("  hint: ") for line in message[1:]), message
    for fragment in fragments:
        assert fragment in message[0], message


def test_missing_solver_file_is_one_clean_error(tmp_path, capsys, restore_signals):
    code, _, err = lrcn_train([tmp_path / "no_such_solver.prototxt"], capsys)
    assert_one_clean_error(code, err, "no_such_solver.prototxt")


def test_typo_in_the_net_file_is_located(tmp_path, monkeypatch, capsys, restore_signals):
    solver = make_problem(tmp_path, net=NET.replace("num_output: 3", "num_outptu: 3"))
    line = 1 + next(i for i, text in enumerate(NET.splitlines()) if "num_output: 3" in text)
    monkeypatch.chdir(tmp_path)
    code, _, err = lrcn_train([solver], capsys)
    assert_one_clean_error(code, err, f"net.prototxt:{line}:", "num_outptu")
    assert "num_output" in err               # the hint suggests the field meant


def test_weights_with_a_wrong_shape_are_one_clean_error(tmp_path, monkeypatch, capsys,
                                                        restore_signals):
    wrong = caffe_pb2.NetParameter()
    layer = wrong.layer.add(name="ip1", type="InnerProduct")
    layer.blobs.extend([array_to_blob(np.zeros((8, 2), np.float32)),
                        array_to_blob(np.zeros(8, np.float32))])
    (tmp_path / "wrong.caffemodel").write_bytes(wrong.SerializeToString())
    solver = make_problem(tmp_path)
    monkeypatch.chdir(tmp_path)
    code, _, err = lrcn_train([solver, "--weights", "wrong.caffemodel"], capsys)
    assert_one_clean_error(code, err, "wrong.caffemodel", "ip1", "shape mismatch", "[8, 2]",
                           "[16, 2]")


@pytest.mark.parametrize("argv", [[], ["solver.prototxt", "--weights", "a.caffemodel",
                                       "--snapshot", "a.solverstate"]],
                         ids=["no-solver", "weights-and-snapshot"])
def test_bad_usage_exits_2(argv, capsys, restore_signals):
    code, out, err = lrcn_train(argv, capsys)
    assert code == 2
    assert err.startswith("usage: lrcn-train") and "Traceback" not in err


# --- the installed console script -----------------------------------------------------------

def run_installed(argv, cwd, **kwargs):
    executable = shutil.which("lrcn-train")
    if executable is None:
        pytest.skip("lrcn-train is not installed (pip install -e .)")
    # One OpenMP thread, as in-process (see one_intra_op_thread).
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([executable, *map(str, argv)], cwd=cwd, text=True, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=as_a_terminal_starts_it, **kwargs)


def test_installed_lrcn_train_user_error_exit_status(tmp_path):
    process = run_installed(["missing_solver.prototxt"], tmp_path)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 1
    assert out == "" and "Traceback" not in err and "missing_solver.prototxt" in err


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_stop_signal_snapshots_and_exits_cleanly(tmp_path, stop):
    """Caffe's SIGINT default (stop): finish the iteration, snapshot, exit 0. SIGTERM (what
    `timeout`, `docker stop` and schedulers send) does the same."""
    make_problem(tmp_path, max_iter=10 ** 7)
    solver = tmp_path / "solver.prototxt"
    solver.write_text(solver.read_text().replace("display: 50", "display: 1"))
    process = run_installed(["solver.prototxt", "--no-progress"], tmp_path)
    seen = []
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([process.stderr], [], [], deadline - time.monotonic())
            line = process.stderr.readline() if ready else ""
            if not line:
                break
            seen.append(line)
            if re.search(r"Iteration [1-9]\d* \(.*\), loss = ", line):
                break
        assert any("loss = " in line for line in seen), "".join(seen)
        process.send_signal(stop)
        out, rest = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    err = "".join(seen) + rest
    assert process.returncode == 0, err
    assert out == "" and "Traceback" not in err
    assert f"{stop.name}: snapshotting and stopping" in err
    assert "Optimization stopped early." in err
    snapshot = re.search(r"Snapshotting to binary proto file (\S+_iter_(\d+)\.caffemodel)", err)
    assert snapshot, err
    stopped_at = int(snapshot.group(2))
    assert stopped_at > 0
    for suffix in (".caffemodel", ".solverstate", ".solverstate.lrcn"):
        assert (tmp_path / f"blobs_iter_{stopped_at}{suffix}").is_file()


def test_ctrl_c_lost_in_a_destructor_during_start_up_still_stops(
        tmp_path, monkeypatch, capsys, restore_signals, ctrl_c_lost_during_start_up):
    monkeypatch.chdir(tmp_path)
    solver = make_problem(tmp_path)
    code, out, err = lrcn_train([solver, "--no-progress", "--log-csv", "log.csv"], capsys)
    assert (code, out) == (130, "")
    assert err.strip() == "interrupted"
    assert not (tmp_path / "log.csv").exists() and not list(tmp_path.glob("*.caffemodel"))


def test_ctrl_c_lost_during_start_up_starts_no_worker(tmp_path, monkeypatch, capsys,
                                                     restore_signals,
                                                     ctrl_c_lost_during_start_up):
    from runtime import launch
    started = []
    monkeypatch.setattr(launch, "launch", lambda *args, **kwargs: started.append(args) or 0)
    monkeypatch.chdir(tmp_path)
    code, out, err = lrcn_train([make_problem(tmp_path), "--nproc", "2"], capsys)
    assert (code, out, err.strip(), started) == (130, "", "interrupted", [])


@pytest.mark.parametrize("delay", [0.0, 1.5])
def test_ctrl_c_during_start_up_exits_130_without_a_traceback(tmp_path, delay):
    make_problem(tmp_path, max_iter=10 ** 7)
    process = run_installed(["solver.prototxt", "--no-progress"], tmp_path)
    try:
        wait_past_python_start_up(process)       # a Ctrl-C before that is Python's business
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert "Traceback" not in err
    if "Solving blobs" in err:                    # training had started: snapshot and stop
        assert process.returncode == 0, err
    else:
        assert process.returncode == 130 and err.strip().endswith("interrupted"), err
