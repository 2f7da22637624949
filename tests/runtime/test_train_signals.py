"""lrcn-train in this process: a second SIGINT / SIGTERM during the snapshot the first one
asked for stops at once keeping the last complete set, and --log-csv neither truncates on a
failed start nor forgets the first run's rows on a resume. (SIGTERM like SIGINT and Ctrl-C
during start-up are tested on the installed script in test_train_cli.py.)"""

import csv
import io
import os
import signal
import time

import pytest

from compiler import files
from compiler.files import TEMPORARY_SUFFIX
from support import tiny_solver, train_in_process as train


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

    def snapshot_set(pairs, *options):
        write_set(pairs, *options)
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
