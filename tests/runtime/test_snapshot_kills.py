"""kill -9 at random moments of a run that snapshots every iteration: every .solverstate left
is a complete set that resumes, killed snapshots leave no temporaries once a run starts again,
and the chain of killed and resumed runs ends exactly where an uninterrupted run does.

The runs are forked from this process (torch is imported once), each resuming from the newest
.solverstate the previous ones left, as a cluster job restarted after a node failure would.
"""

import multiprocessing
import os
import random
import re
import signal
import time

import pytest
import torch

from compiler.files import TEMPORARY_SUFFIX
from runtime.solver import Solver
from support import tiny_solver

KILLS = 15


def quiet(_):
    pass


def train_until_killed(solver_file, resume):
    torch.set_num_threads(1)
    solver = Solver(str(solver_file), log=quiet)
    solver.solve(resume)


def newest_state(folder):
    states = [(int(m.group(1)), name) for name in os.listdir(folder)
              if (m := re.fullmatch(r"tiny_iter_(\d+)\.solverstate", name))]
    return str(folder / max(states)[1]) if states else None


def temporaries(folder):
    return [name for name in os.listdir(folder) if name.endswith(TEMPORARY_SUFFIX)]


def wait_for_a_new_snapshot(folder, previous, child, timeout=60):
    deadline = time.monotonic() + timeout
    while newest_state(folder) == previous:
        assert child.is_alive(), "the run ended before its first snapshot"
        assert time.monotonic() < deadline, "no snapshot within a minute"
        time.sleep(0.01)


@pytest.fixture(scope="module")
def killed_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kills")
    solver_file = tiny_solver(folder, max_iter=10 ** 9, snapshot=1)
    context = multiprocessing.get_context("fork")
    chooser = random.Random(12)
    for kill in range(KILLS):
        resume = newest_state(folder)
        child = context.Process(target=train_until_killed, args=(solver_file, resume))
        child.start()
        # Kill at a random moment once this run has snapshotted (building the net and
        # restoring take a while): with a snapshot every iteration, mostly during a write.
        wait_for_a_new_snapshot(folder, resume, child)
        time.sleep(chooser.uniform(0, 0.1))
        os.kill(child.pid, signal.SIGKILL)
        child.join(30)
        assert child.exitcode == -signal.SIGKILL, f"run {kill} ended on its own"
    return folder, solver_file


def test_every_set_left_after_kills_resumes(killed_runs):
    folder, solver_file = killed_runs
    states = sorted(name for name in os.listdir(folder) if name.endswith(".solverstate"))
    # Every run left at least the set the fixture waited for; on a disk that takes seconds
    # to flush a snapshot, the kill comes before the next, so exactly that one.
    assert len(states) >= KILLS
    solver = Solver(str(solver_file), log=quiet)
    for name in states:
        base = name[:-len(".solverstate")]
        assert os.path.exists(folder / f"{base}.caffemodel")
        assert os.path.exists(folder / f"{name}.lrcn"), f"{name} lost its resume state"
        solver.restore(str(folder / name))       # refuses an incomplete or mixed set
        assert f"tiny_iter_{solver.iter}.solverstate" == name


def test_a_new_start_removes_the_temporaries_of_killed_snapshots(killed_runs):
    folder, solver_file = killed_runs
    solver = Solver(str(solver_file), log=quiet)
    solver.param.max_iter = 0
    solver.solve()
    assert temporaries(folder) == []


def test_the_killed_chain_ends_where_a_straight_run_does(killed_runs, tmp_path):
    folder, solver_file = killed_runs
    resumed = Solver(str(solver_file), log=quiet)
    resumed.restore(newest_state(folder))
    stop = resumed.iter + 2
    resumed.param.snapshot = 0
    resumed.step(2)
    straight = Solver(str(tiny_solver(tmp_path, max_iter=stop, snapshot=0)), log=quiet)
    straight.step(stop)
    for a, b in zip(resumed.net.learnable_params(), straight.net.learnable_params()):
        assert torch.equal(a.tensor, b.tensor)
