"""lrcn-train on several processes as a user runs it: --nproc 2 (gloo), a rank killed, a rank
hung, SIGTERM on the launcher, resuming a 2-rank snapshot."""

import glob
import os
import signal
import subprocess
import sys
import time

import pytest

from distributed_support import row_solver, write_rows

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds ranks through /proc")

DEADLINE_S = 180


def _start(solver, *options):
    env = dict(os.environ, LRCN_DATA_WORKERS="0", OMP_NUM_THREADS="1")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return subprocess.Popen([sys.executable, "-c", "from runtime.cli import train_main; "
                             "train_main()", solver, "--no-progress", *options],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _long_solver(folder, snapshot=3, display=0):
    write_rows(str(folder))
    return row_solver(str(folder), "long", 'type: "SGD" momentum: 0.9', batch=4,
                      max_iter=100000, extra=f"snapshot: {snapshot}", display=display)


def _wait_for(pattern, process):
    deadline = time.monotonic() + DEADLINE_S
    while not glob.glob(pattern):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no snapshot appeared"
        time.sleep(0.2)


def _rank_pid(launcher, rank):
    """The pid of the launcher's worker with RANK=rank."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
            if parent != launcher.pid:
                continue
            with open(f"/proc/{entry}/environ", "rb") as handle:
                environment = handle.read().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environment:
            return int(entry)
    raise AssertionError(f"rank {rank} not found")


def _complete_sets(folder):
    """Every .solverstate left has its .caffemodel and .lrcn; no temporaries remain."""
    states = glob.glob(str(folder / "long_iter_*.solverstate"))
    for state in states:
        assert os.path.exists(state + ".lrcn")
        assert os.path.exists(state.replace(".solverstate", ".caffemodel"))
    leftovers = [name for name in os.listdir(folder) if ".tmp" in name or name.startswith(".")]
    assert not leftovers, leftovers
    return sorted(states, key=lambda path: int(path.rsplit("_", 1)[1].split(".")[0]))


def test_a_killed_rank_ends_the_run_with_one_message(tmp_path):
    solver = _long_solver(tmp_path)
    launcher = _start(solver, "--nproc", "2")
    try:
        _wait_for(str(tmp_path / "long_iter_3.solverstate"), launcher)
        os.kill(_rank_pid(launcher, 1), signal.SIGKILL)
        _, stderr = launcher.communicate(timeout=DEADLINE_S)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 1
    assert stderr.count("rank 1 was killed by signal SIGKILL") == 1, stderr
    assert "Traceback" not in stderr and "rank 0:" not in stderr
    assert _complete_sets(tmp_path)


@pytest.mark.slow
def test_sigterm_snapshots_once_stops_every_rank_and_resumes(tmp_path):
    solver = _long_solver(tmp_path, snapshot=1000, display=1)
    launcher = _start(solver, "--nproc", "2", "--log-csv", str(tmp_path / "log.csv"))
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not os.path.exists(tmp_path / "log.csv") or \
                os.path.getsize(tmp_path / "log.csv") == 0:
            assert time.monotonic() < deadline and launcher.poll() is None
            time.sleep(0.2)
        time.sleep(1)
        launcher.send_signal(signal.SIGTERM)
        _, stderr = launcher.communicate(timeout=DEADLINE_S)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 0, stderr
    assert stderr.count("Snapshotting solver state") == 1, stderr
    assert "Optimization stopped early." in stderr
    (state,) = _complete_sets(tmp_path)
    stopped_at = int(state.rsplit("_", 1)[1].split(".")[0])
    resumed = _start(solver, "--nproc", "2", "--snapshot", state,
                     "--iterations", str(stopped_at + 2))
    _, stderr = resumed.communicate(timeout=DEADLINE_S)
    assert resumed.returncode == 0, stderr
    assert "Optimization Done." in stderr


@pytest.mark.slow
def test_a_hung_rank_stops_the_others_after_the_timeout(tmp_path):
    solver = _long_solver(tmp_path)
    launcher = _start(solver, "--nproc", "2", "--timeout", "5")
    try:
        _wait_for(str(tmp_path / "long_iter_3.solverstate"), launcher)
        hung = _rank_pid(launcher, 1)
        os.kill(hung, signal.SIGSTOP)
        _, stderr = launcher.communicate(timeout=DEADLINE_S)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 1
    assert stderr.count("rank 0: rank 0: lost the other ranks") == 0
    assert stderr.count("lost the other ranks") == 1, stderr
    assert "Traceback" not in stderr
    assert _complete_sets(tmp_path)


def test_bad_options_are_usage_errors(tmp_path):
    solver = _long_solver(tmp_path)
    for options in (["--nproc", "0"], ["--nproc", "2", "--gpu", "0,1"],
                    ["--nproc", "2", "--timeout", "-1"]):
        process = _start(solver, *options)
        _, stderr = process.communicate(timeout=DEADLINE_S)
        assert process.returncode == 2, (options, stderr)
        assert "Traceback" not in stderr


def test_a_workers_error_reaches_the_user_once_with_its_rank(tmp_path):
    solver = tmp_path / "solver.prototxt"
    solver.write_text(f'net: "{tmp_path / "missing.prototxt"}"\nbase_lr: 0.1\n'
                      'lr_policy: "fixed"\nmax_iter: 2\nsolver_mode: CPU\n')
    process = _start(str(solver), "--nproc", "2")
    _, stderr = process.communicate(timeout=DEADLINE_S)
    assert process.returncode == 1
    assert stderr.count("net file not found") == 1, stderr
    assert stderr.startswith(("rank 0: ", "rank 1: ")) and "Traceback" not in stderr
