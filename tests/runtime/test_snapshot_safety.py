"""Resume files a user is handed: nothing in them runs code, and a snapshot set whose files do
not belong together (or a damaged .solverstate) is refused with one clear error."""

import io
import os
import pathlib
import pickle
import shutil
import stat

import numpy as np
import pytest
import torch

from lrcn_proto import caffe_pb2
from support import tiny_solver, train_in_process as train


class Payload:
    """Unpickling this creates the file named by `marker`: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


@pytest.fixture
def snapshot(tmp_path, restore_signals):
    """A finished tiny run: (solver file, its iteration-2 .solverstate)."""
    solver = tiny_solver(tmp_path)
    code, log = train([solver, "--no-progress", "--iterations", "2"])
    assert code == 0, log
    return solver, tmp_path / "tiny_iter_2.solverstate"


def plain_pickle(path, marker):
    path.write_bytes(pickle.dumps(Payload(marker)))


def torch_pickle(path, marker):
    torch.save({"iter": 2, "torch_rng": Payload(marker)}, path)


def numpy_object_array(path, marker):
    with open(path, "wb") as handle:
        np.savez(handle, **{"state.json": np.array([Payload(marker)], dtype=object)})


@pytest.mark.parametrize("plant", [plain_pickle, torch_pickle, numpy_object_array])
def test_a_pickle_planted_beside_a_snapshot_never_runs(snapshot, tmp_path, plant):
    solver, state = snapshot
    marker = tmp_path / "code_ran"
    plant(pathlib.Path(str(state) + ".lrcn"), marker)
    assert not marker.exists()
    code, log = train([solver, "--snapshot", state, "--no-progress"])
    assert not marker.exists(), "code in the planted file ran"
    assert code == 1 and "Traceback" not in log
    assert "tiny_iter_2.solverstate.lrcn: " in log and "resume-state file" in log


def test_a_negative_iteration_is_refused(snapshot):
    solver, state = snapshot
    message = caffe_pb2.SolverState()
    message.ParseFromString(state.read_bytes())
    message.iter = -5
    state.write_bytes(message.SerializeToString())
    code, log = train([solver, "--snapshot", state, "--no-progress"])
    assert code == 1 and "Traceback" not in log
    assert "tiny_iter_2.solverstate: the solver state's iteration is negative (-5)" in log


@pytest.mark.parametrize("swapped", [".caffemodel", ".solverstate.lrcn"])
def test_a_set_with_a_file_of_another_snapshot_is_refused(tmp_path, restore_signals, swapped):
    solver = tiny_solver(tmp_path)
    code, log = train([solver, "--no-progress"])
    assert code == 0, log
    newer, older = tmp_path / "tiny_iter_4", tmp_path / "tiny_iter_2"
    suffix = swapped
    shutil.copy(f"{newer}{suffix}", f"{older}{suffix}")
    code, log = train([solver, "--snapshot", f"{older}.solverstate", "--no-progress"])
    assert code == 1 and "Traceback" not in log
    assert "the snapshot set is incomplete or mixed" in log


def test_the_resume_state_holds_arrays_and_json_only(snapshot):
    _, state = snapshot
    with np.load(f"{state}.lrcn", allow_pickle=False) as archive:
        assert "state.json" in archive.files
        assert all(archive[name].dtype != object for name in archive.files)


def test_snapshot_files_honour_the_umask(tmp_path, restore_signals):
    previous = os.umask(0o027)
    try:
        solver = tiny_solver(tmp_path)
        code, log = train([solver, "--no-progress", "--iterations", "2"])
    finally:
        os.umask(previous)
    assert code == 0, log
    for suffix in (".caffemodel", ".solverstate", ".solverstate.lrcn"):
        mode = stat.S_IMODE(os.stat(tmp_path / f"tiny_iter_2{suffix}").st_mode)
        assert mode == 0o640, (suffix, oct(mode))


@pytest.mark.parametrize("damage", [
    lambda state: state.pop("torch_rng"),
    lambda state: state.update(torch_rng="not a generator state"),
    lambda state: state["loss_window"].update(start="x"),
    lambda state: state["nets"][0]["layers"].update(drop={"cpu": torch.zeros(3)}),
], ids=["missing", "wrong-type", "bad-window", "bad-layer-state"])
def test_a_damaged_resume_state_with_matching_digests_is_one_clean_error(snapshot, damage):
    from runtime import run_state
    solver, state = snapshot
    sidecar = pathlib.Path(f"{state}.lrcn")
    content = run_state.read(sidecar)
    content["nets"][0]["layers"].setdefault("drop", {})
    damage(content)
    sidecar.write_bytes(run_state.encode(content))
    code, log = train([solver, "--snapshot", state, "--no-progress"])
    assert code == 1 and "Traceback" not in log, log
    assert "tiny_iter_2.solverstate.lrcn: damaged resume-state file" in log
