"""Exact resume: N iterations straight vs N/2, then a resume in a separate process, give the
same logged losses and a byte-identical final .caffemodel, for the bundled caption net, a net
with Dropout, and an LSTM language model on LRCN's unaligned streams (sentences run across
batch boundaries with cont 1, so the h / c the LSTM carries between batches must be saved).

The straight runs are lrcn-train in this process; the resumes are lrcn-train in one child
process (one torch import for all three), each from the straight run's middle snapshot.
"""

import json
import os
import pathlib
import re
import subprocess
import sys

import h5py
import numpy as np
import pytest

from support import train_in_process

ROOT = pathlib.Path(__file__).resolve().parents[2]
UNALIGNED_LIST = "data/caption_shapes/prepared/train_unaligned_batches/hdf5_chunk_list.txt"
LOSS_LINE = re.compile(r"\] Iteration (\d+)(?: \(.*\))?, loss = (\S+)")

LANGUAGE_MODEL = f'''name: "unaligned_lm"
layer {{ name: "data" type: "HDF5Data"
  top: "cont_sentence" top: "input_sentence" top: "target_sentence"
  hdf5_data_param {{ source: "{UNALIGNED_LIST}" batch_size: 16 }} }}
layer {{ name: "embed" type: "Embed" bottom: "input_sentence" top: "embedded"
  embed_param {{ input_dim: 48 num_output: 12 bias_term: false
                weight_filler {{ type: "uniform" min: -0.08 max: 0.08 }} }} }}
layer {{ name: "lstm" type: "LSTM" bottom: "embedded" bottom: "cont_sentence" top: "lstm"
  recurrent_param {{ num_output: 12 weight_filler {{ type: "uniform" min: -0.08 max: 0.08 }}
                    bias_filler {{ type: "constant" value: 0 }} }} }}
layer {{ name: "predict" type: "InnerProduct" bottom: "lstm" top: "predict"
  inner_product_param {{ num_output: 48 axis: 2
                        weight_filler {{ type: "uniform" min: -0.08 max: 0.08 }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "predict" bottom: "target_sentence"
  top: "loss" loss_param {{ ignore_label: -1 }} softmax_param {{ axis: 2 }} }}
'''

DROPOUT_NET = '''name: "dropout"
layer { name: "data" type: "HDF5Data" top: "data" top: "label"
  hdf5_data_param { source: "LIST" batch_size: 10 shuffle: true } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  inner_product_param { num_output: 16 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "drop" type: "Dropout" bottom: "ip1" top: "ip1" dropout_param { dropout_ratio: 0.5 } }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
'''

SMALL_SOLVER = '''net: "{net}"
base_lr: 0.05
momentum: 0.9
lr_policy: "fixed"
clip_gradients: 5
average_loss: 3
display: 1
max_iter: {max_iter}
snapshot: {snapshot}
snapshot_prefix: "{prefix}"
random_seed: 11
solver_mode: CPU
'''


def caption_solver(folder, max_iter, snapshot):
    """solvers/caption_solver.prototxt cut short: display every iteration, one test pass per
    test net mid-run (test nets keep data positions of their own)."""
    text = (ROOT / "solvers" / "caption_solver.prototxt").read_text()
    for pattern, value in [(r"max_iter: \d+", f"max_iter: {max_iter}"),
                           (r"snapshot: \d+", f"snapshot: {snapshot}"),
                           (r"display: \d+", "display: 1"),
                           (r"test_interval: \d+", f"test_interval: {max_iter - 1}"),
                           (r"test_iter: \d+", "test_iter: 1"),
                           (r'snapshot_prefix: ".*"', f'snapshot_prefix: "{folder}/caption"')]:
        text = re.sub(pattern, value, text)
    path = folder / "solver.prototxt"
    path.write_text(text)
    return path


def small_solver(folder, net_text, max_iter, snapshot):
    (folder / "net.prototxt").write_text(net_text)
    path = folder / "solver.prototxt"
    path.write_text(SMALL_SOLVER.format(net=folder / "net.prototxt", max_iter=max_iter,
                                        snapshot=snapshot, prefix=folder / "run"))
    return path


def dropout_solver(folder, max_iter, snapshot):
    rng = np.random.default_rng(0)
    with h5py.File(folder / "blobs.h5", "w") as handle:
        handle["data"] = rng.standard_normal((40, 4)).astype(np.float32)
        handle["label"] = rng.integers(0, 3, 40).astype(np.float32)
    (folder / "list.txt").write_text(f"{folder / 'blobs.h5'}\n")
    return small_solver(folder, DROPOUT_NET.replace("LIST", str(folder / "list.txt")),
                        max_iter, snapshot)


def language_model_solver(folder, max_iter, snapshot):
    return small_solver(folder, LANGUAGE_MODEL, max_iter, snapshot)


NETS = {"caption": (caption_solver, 4, "caption"),
        "dropout": (dropout_solver, 8, "run"),
        "unaligned_lm": (language_model_solver, 6, "run")}


def logged_losses(log, since):
    return [(int(i), value) for i, value in LOSS_LINE.findall(log) if int(i) >= since]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{net: (straight log, resumed log, folder, N)} after the straight runs here and the
    resumes in one child process."""
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.chdir(ROOT)          # the bundled nets name their data from the repository root
    straight, jobs = {}, []
    try:
        for name, (make_solver, max_iter, prefix) in NETS.items():
            folder = tmp_path_factory.mktemp(name)
            solver = make_solver(folder, max_iter, max_iter // 2)
            code, log = train_in_process([solver, "--no-progress"])
            assert code == 0, log
            straight[name] = (log, folder, max_iter)
            resumed_folder = folder / "resumed"
            resumed_folder.mkdir()
            resumed_solver = resumed_folder / "solver.prototxt"
            resumed_solver.write_text(solver.read_text().replace(
                f'snapshot_prefix: "{folder}/{prefix}"',
                f'snapshot_prefix: "{resumed_folder}/{prefix}"'))
            state = folder / f"{prefix}_iter_{max_iter // 2}.solverstate"
            jobs.append([str(resumed_solver), "--snapshot", str(state), "--no-progress"])
    finally:
        monkeypatch.undo()
    logs = run_train_in_child(jobs)
    return {name: (straight[name][0], logs[index], straight[name][1], straight[name][2],
                   NETS[name][2])
            for index, name in enumerate(NETS)}


CHILD = '''
import contextlib, io, json, sys
import torch
torch.set_num_threads(1)
from runtime import cli
logs = []
for argv in json.loads(sys.argv[1]):
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            cli.train_main(argv)
        except SystemExit as exited:
            code = exited.code
    logs.append((code, stderr.getvalue()))
print(json.dumps(logs))
'''


def run_train_in_child(jobs):
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(jobs)], cwd=ROOT, text=True,
                          capture_output=True, timeout=300, env=environment)
    assert done.returncode == 0, done.stderr
    logs = json.loads(done.stdout)
    for code, log in logs:
        assert code == 0, log
    return [log for _, log in logs]


@pytest.mark.parametrize("name", list(NETS))
def test_resume_in_another_process_logs_the_same_losses(runs, name):
    straight, resumed, _, max_iter, _ = runs[name]
    half = max_iter // 2
    expected = logged_losses(straight, half)
    assert [i for i, _ in expected][:1] == [half] and expected[-1][0] == max_iter
    assert logged_losses(resumed, half) == expected


@pytest.mark.parametrize("name", list(NETS))
def test_resume_in_another_process_ends_with_the_same_weights(runs, name):
    _, _, folder, max_iter, prefix = runs[name]
    final = f"{prefix}_iter_{max_iter}.caffemodel"
    assert (folder / "resumed" / final).read_bytes() == (folder / final).read_bytes()
