"""lrcn-train and the signals a run receives, and the files the user had: SIGTERM snapshots
and stops like SIGINT, a second signal during that snapshot stops at once keeping the last
complete set, Ctrl-C during start-up exits 130 without a traceback, and --log-csv neither
truncates on a failed start nor forgets the first run's rows on a resume."""

import contextlib
import csv
import io
import os
import re
import select
import shutil
import signal
import subprocess
import time

import pytest

from compiler import files
from compiler.files import TEMPORARY_SUFFIX
from runtime import cli
from support import tiny_solver


def train(argv):
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as exited:
        cli.train_main([str(a) for a in argv])
    return exited.value.code, stderr.getvalue()


def lrcn_train_process(argv, cwd):
    executable = shutil.which("lrcn-train")
    if executable is None:
        pytest.skip("lrcn-train is not installed (pip install -e .)")
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([executable, *map(str, argv)], cwd=cwd, text=True, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def read_until(process, pattern, timeout=120):
    """stderr lines up to the first matching `pattern` (all of them if it never comes)."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stderr], [], [], deadline - time.monotonic())
        line = process.stderr.readline() if ready else ""
        if not line:
            break
        seen.append(line)
        if re.search(pattern, line):
            break
    return "".join(seen)


def test_sigterm_snapshots_and_stops_like_sigint(tmp_path):
    tiny_solver(tmp_path, max_iter=10 ** 9, snapshot=0)
    process = lrcn_train_process(["solver.prototxt", "--no-progress"], tmp_path)
    try:
        seen = read_until(process, r"Iteration [1-9]\d* \(.*\), loss = ")
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    log = seen + rest
    assert process.returncode == 0, log
    assert "SIGTERM: snapshotting and stopping" in log and "Optimization stopped early." in log
    stopped_at = int(re.search(r"tiny_iter_(\d+)\.caffemodel", log).group(1))
    for suffix in (".caffemodel", ".solverstate", ".solverstate.lrcn"):
        assert (tmp_path / f"tiny_iter_{stopped_at}{suffix}").is_file()


@pytest.mark.parametrize("second", [signal.SIGINT, signal.SIGTERM])
def test_a_second_signal_during_the_snapshot_stops_at_once(tmp_path, monkeypatch,
                                                          restore_signals, second):
    """The first signal arrives during the snapshot of iteration 4, so the run stops after
    iteration 5 with a snapshot; the second arrives while that snapshot is being written."""
    solver = tiny_solver(tmp_path, max_iter=10 ** 9, snapshot=2)
    sets = []
    write_temporary = files._write_temporary

    def writing(target, data):
        if len(sets) == 2 and target.endswith(".solverstate.lrcn"):
            os.kill(os.getpid(), second)          # the run's third snapshot: iteration 5
            time.sleep(1)                         # the handler runs long before this ends
        return write_temporary(target, data)

    def snapshot_set(pairs):
        write_set(pairs)
        sets.append(pairs[0][0])
        if len(sets) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
    write_set = files.write_files_atomically
    monkeypatch.setattr(files, "_write_temporary", writing)
    monkeypatch.setattr(files, "write_files_atomically", snapshot_set)
    code, log = train([solver, "--no-progress"])
    assert code == 130 and "Traceback" not in log, log
    assert "stopping now" in log and log.rstrip().endswith("interrupted")
    names = sorted(os.listdir(tmp_path))
    assert [n for n in names if n.startswith("tiny_iter_")] == [
        f"tiny_iter_{i}{suffix}" for i in (2, 4)
        for suffix in (".caffemodel", ".solverstate", ".solverstate.lrcn")]
    assert not [n for n in names if n.endswith(TEMPORARY_SUFFIX)]


@pytest.mark.parametrize("delay", [0.3, 1.5])
def test_ctrl_c_during_start_up_exits_130_without_a_traceback(tmp_path, delay):
    tiny_solver(tmp_path, max_iter=10 ** 9, snapshot=0)
    process = lrcn_train_process(["solver.prototxt", "--no-progress"], tmp_path)
    try:
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        _, log = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert "Traceback" not in log
    if "Solving tiny" in log:                     # training had started: snapshot and stop
        assert process.returncode == 0, log
    else:
        assert process.returncode == 130 and log.strip().endswith("interrupted"), log


def test_log_csv_is_left_alone_by_a_failed_start(tmp_path, restore_signals):
    table = tmp_path / "scalars.csv"
    table.write_text("keep me\n")
    code, log = train([tmp_path / "missing_solver.prototxt", "--log-csv", table])
    assert code == 1
    assert table.read_text() == "keep me\n"


def test_log_csv_appends_when_resuming(tmp_path, restore_signals):
    solver = tiny_solver(tmp_path, max_iter=4, snapshot=2)
    table = tmp_path / "scalars.csv"
    code, log = train([solver, "--no-progress", "--log-csv", table])
    assert code == 0, log
    first = table.read_text()
    code, log = train([solver, "--no-progress", "--log-csv", table,
                       "--snapshot", tmp_path / "tiny_iter_2.solverstate"])
    assert code == 0, log
    rows = list(csv.reader(io.StringIO(table.read_text())))
    assert table.read_text().startswith(first)
    assert rows.count(["iteration", "phase", "name", "value"]) == 1
    assert [int(r[0]) for r in rows[1:] if r[2] == "loss"] == [0, 1, 2, 3, 2, 3]
