"""Nets, data and a 2-process runner for the distributed tests (CPU, gloo).

Worker functions live here (importable by name) because the processes are spawned.
"""

import datetime
import json
import multiprocessing
import os
import traceback

import h5py
import numpy as np

JOIN_TIMEOUT_S = 240       # a hung test fails instead of hanging the suite
GROUP_TIMEOUT_S = 60       # every collective gives up after this


# --- row data: an MLP with shared and frozen params -------------------------------------------

ROW_NET = '''name: "rows"
layer { name: "data" type: "HDF5Data" top: "x" top: "y"
  hdf5_data_param { source: "{list}" batch_size: {batch} } }
layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "h1"
  inner_product_param { num_output: 6 weight_filler { type: "gaussian" std: 0.3 }
                        bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "h1" top: "h1" }
layer { name: "ip2" type: "InnerProduct" bottom: "h1" top: "h2"
  param { name: "shared_w" } param { name: "shared_b" }
  inner_product_param { num_output: 6 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "tanh2" type: "TanH" bottom: "h2" top: "h2" }
layer { name: "ip3" type: "InnerProduct" bottom: "h2" top: "h3"
  param { name: "shared_w" } param { name: "shared_b" }
  inner_product_param { num_output: 6 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "frozen" type: "InnerProduct" bottom: "h3" top: "h4"
  param { lr_mult: 0 } param { lr_mult: 0 }
  inner_product_param { num_output: 6 weight_filler { type: "gaussian" std: 0.3 }
                        bias_filler { type: "gaussian" std: 0.1 } } }
layer { name: "ip5" type: "InnerProduct" bottom: "h4" top: "score"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "y" top: "loss" }
'''

# (name, solver lines): every acceptance configuration of issue 14.
SOLVER_CASES = [
    ("sgd_momentum", 'type: "SGD" momentum: 0.9 weight_decay: 0.01'),
    ("nesterov", 'type: "Nesterov" momentum: 0.9 weight_decay: 0.01'),
    ("adagrad", 'type: "AdaGrad" weight_decay: 0.01'),
    ("adam", 'type: "Adam" momentum: 0.9 momentum2: 0.999'),
    ("iter_size_clip_l1", 'type: "SGD" momentum: 0.9 iter_size: 2 clip_gradients: 0.5 '
                          'weight_decay: 0.01 regularization_type: "L1"'),
]


def _write(path, text):
    """Both ranks write the same files: each replaces it whole, so none reads a torn one."""
    temporary = f"{path}.{os.getpid()}"
    with open(temporary, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)


def write_rows(folder, rows=48, features=5, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    path = os.path.join(folder, "rows.h5")
    with h5py.File(path, "w") as handle:
        handle["x"] = rng.normal(size=(rows, features)).astype(np.float32)
        handle["y"] = rng.integers(0, classes, size=rows).astype(np.float32)
    listing = os.path.join(folder, "rows.txt")
    with open(listing, "w") as handle:
        handle.write(path + "\n")
    return listing


def row_solver(folder, name, lines, batch, max_iter=6, extra="", display=0):
    """A solver file over ROW_NET reading `batch` rows per pass."""
    net = os.path.join(folder, f"{name}_b{batch}.prototxt")
    _write(net, ROW_NET.replace("{list}", os.path.join(folder, "rows.txt"))
           .replace("{batch}", str(batch)))
    solver = os.path.join(folder, f"{name}_b{batch}_solver.prototxt")
    _write(solver, f'net: "{net}"\nbase_lr: 0.05\nlr_policy: "fixed"\nmax_iter: {max_iter}\n'
           f'display: {display}\naverage_loss: 1\nrandom_seed: 7\nsolver_mode: CPU\n'
           f'snapshot_prefix: "{os.path.join(folder, name)}"\n{lines}\n{extra}\n')
    return solver


# --- sequence streams: an LSTM language model -------------------------------------------------

LM_NET = '''name: "lm"
layer { name: "data" type: "HDF5Data" top: "cont" top: "input" top: "target"
  hdf5_data_param { source: "{list}" batch_size: 5 } }
layer { name: "embed" type: "Embed" bottom: "input" top: "embedded"
  embed_param { input_dim: 7 num_output: 4 bias_term: false
                weight_filler { type: "uniform" min: -0.5 max: 0.5 } } }
layer { name: "lstm" type: "LSTM" bottom: "embedded" bottom: "cont" top: "h"
  recurrent_param { num_output: 5 weight_filler { type: "uniform" min: -0.4 max: 0.4 }
                    bias_filler { type: "constant" value: 0 } } }
layer { name: "predict" type: "InnerProduct" bottom: "h" top: "predict"
  inner_product_param { num_output: 7 axis: 2 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "predict" bottom: "target" top: "loss"
  loss_param { normalization: BATCH_SIZE } softmax_param { axis: 2 } }
'''


def write_streams(folder, steps=40, streams=4, vocabulary=7, seed=1):
    """LRCN's layout: rows are time steps, columns are streams; sentences of random lengths
    (cont 0 at each start) run on without padding, so the LSTM state carries across batches."""
    rng = np.random.default_rng(seed)
    cont = (rng.random((steps, streams)) > 0.2).astype(np.float32)
    cont[0] = 0
    words = rng.integers(0, vocabulary, size=(steps + 1, streams)).astype(np.float32)
    path = os.path.join(folder, "streams.h5")
    with h5py.File(path, "w") as handle:
        handle["cont"] = cont
        handle["input"] = words[:-1]
        handle["target"] = words[1:]
    listing = os.path.join(folder, "streams.txt")
    with open(listing, "w") as handle:
        handle.write(path + "\n")
    return listing


def lm_solver(folder, max_iter=6, extra="", prefix=None):
    net = os.path.join(folder, "lm.prototxt")
    _write(net, LM_NET.replace("{list}", os.path.join(folder, "streams.txt")))
    prefix = prefix or os.path.join(folder, "lm")
    solver = f"{prefix}_solver.prototxt"
    _write(solver, f'net: "{net}"\nbase_lr: 0.1\nmomentum: 0.9\nlr_policy: "fixed"\n'
           f'max_iter: {max_iter}\ndisplay: 0\naverage_loss: 1\nrandom_seed: 5\n'
           f'clip_gradients: 1\nsolver_mode: CPU\nsnapshot_prefix: "{prefix}"\n{extra}\n')
    return solver


# --- running ----------------------------------------------------------------------------------

def train(solver_file, world=None, iterations=None, resume=None):
    """Train; return (per-iteration losses as rank 0 logs them, final weights by name)."""
    import torch
    from runtime.solver import Solver
    solver = Solver(solver_file, world=world, log=lambda line: None)
    losses = []
    solver.callbacks.append(lambda s, outputs: losses.append(s.smoothed_loss))
    if resume:
        solver.restore(resume)
    solver.step(iterations if iterations is not None else solver.param.max_iter - solver.iter)
    with torch.no_grad():
        weights = {p.name: p.tensor.detach().double().numpy().tolist()
                   for p in solver.learnable}
    return losses, weights, solver


def _worker(rank, size, init_file, out_dir, job):
    import torch
    import torch.distributed as dist
    torch.set_num_threads(1)
    result = {"rank": rank}
    try:
        dist.init_process_group("gloo", init_method="file://" + init_file, rank=rank,
                                world_size=size,
                                timeout=datetime.timedelta(seconds=GROUP_TIMEOUT_S))
        from runtime.distributed import World
        result.update(job(World()))
    except BaseException as error:   # reported to the test, which fails with it
        result["error"] = "".join(traceback.format_exception(error))
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as handle:
        json.dump(result, handle)
    if dist.is_initialized():
        dist.destroy_process_group()


def run_ranks(tmp_path, job, size=2):
    """Run job(world) -> dict on `size` gloo processes; return their dicts in rank order."""
    context = multiprocessing.get_context("spawn")
    init_file = str(tmp_path / "rendezvous")
    processes = [context.Process(target=_worker, args=(rank, size, init_file, str(tmp_path),
                                                       job))
                 for rank in range(size)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(JOIN_TIMEOUT_S)
    for process in processes:
        if process.is_alive():
            process.kill()
            raise AssertionError("a rank did not finish in time")
    results = []
    for rank in range(size):
        with open(tmp_path / f"rank{rank}.json") as handle:
            result = json.load(handle)
        assert "error" not in result, f"rank {rank}:\n{result['error']}"
        results.append(result)
    return results
