"""Snapshots taken during training are written on a background thread: training goes on while
the disk flushes them, step() returns with them on disk, and a failed write is one clean error
(lrcn-train: exit 1), never lost."""

import errno
import os
import threading

import pytest
import torch

from compiler import files
from compiler.errors import CompileError
from runtime.solver import Solver
from support import tiny_solver, train_in_process


def quiet(_):
    pass


@pytest.fixture
def held_disk(monkeypatch):
    """fsync blocks until release() (a disk that takes its time); returns (release, blocked)."""
    released, blocked = threading.Event(), threading.Event()
    real_fsync = os.fsync

    def slow_fsync(fd):
        blocked.set()
        assert released.wait(timeout=20), "the disk was never released"
        real_fsync(fd)
    monkeypatch.setattr(files.os, "fsync", slow_fsync)
    return released, blocked


def test_training_goes_on_while_a_snapshot_is_written(tmp_path, held_disk):
    released, blocked = held_disk
    solver = Solver(str(tiny_solver(tmp_path, max_iter=6, snapshot=2)), log=quiet)
    seen_while_writing = []

    def after_iteration(solver, outputs):
        if solver.iter == 3:
            # The snapshot of iteration 2 is still being flushed: nothing renamed yet.
            assert blocked.wait(timeout=20)
            assert not (tmp_path / "tiny_iter_2.caffemodel").exists()
            seen_while_writing.append(solver.iter)
            released.set()
    solver.callbacks.append(after_iteration)
    solver.step(6)
    assert seen_while_writing == [3]
    for iteration in (2, 4, 6):              # step() returns with every snapshot on disk
        for suffix in (".caffemodel", ".solverstate", ".solverstate.lrcn"):
            assert (tmp_path / f"tiny_iter_{iteration}{suffix}").exists()


def test_background_snapshots_resume_as_synchronous_ones(tmp_path):
    background = Solver(str(tiny_solver(tmp_path, max_iter=4, snapshot=2)), log=quiet)
    background.step(4)
    resumed = Solver(str(tiny_solver(tmp_path, max_iter=4, snapshot=0)), log=quiet)
    resumed.restore(str(tmp_path / "tiny_iter_2.solverstate"))
    resumed.step(2)
    for a, b in zip(background.net.learnable_params(), resumed.net.learnable_params()):
        assert torch.equal(a.tensor, b.tensor)


def full_disk(monkeypatch):
    def no_space(target, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(files, "_write_temporary", no_space)


def test_a_failed_background_write_stops_training_with_one_error(tmp_path, monkeypatch):
    full_disk(monkeypatch)
    solver = Solver(str(tiny_solver(tmp_path, max_iter=6, snapshot=2)), log=quiet)
    with pytest.raises(CompileError, match="No space left on device") as raised:
        solver.step(6)
    assert raised.value.file.endswith("tiny_iter_2.caffemodel")
    assert solver.iter <= 4            # found at the next iteration or snapshot, not at the end


def test_lrcn_train_reports_a_failed_background_write_and_exits_1(tmp_path, monkeypatch):
    full_disk(monkeypatch)
    status, stderr = train_in_process([tiny_solver(tmp_path, max_iter=6, snapshot=2)])
    assert status == 1
    assert "No space left on device" in stderr and "tiny_iter_2.caffemodel" in stderr
    assert "Traceback" not in stderr
