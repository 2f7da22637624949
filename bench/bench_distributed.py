"""Training throughput on 1 and 2 processes (runtime.Solver with a World), same global batch.

An LSTM language model of captioning's shape (vocabulary --vocab, embedding and LSTM --hidden,
T = 20 steps, --streams parallel streams in LRCN's HDF5 layout) trains with SGD + momentum and
clipping. One process reads all the streams; 2 ranks split them by stream (each keeps half),
so both runs do the same work per iteration and compute the same updates: the difference is
the parallelism minus the cost of the gradient all-reduce. Each configuration runs a warm-up,
then --iters timed iterations; the table gives iterations/s and tokens (steps x streams)/s.

    python bench/bench_distributed.py                 # CPU (gloo), 1 thread per process
    python bench/bench_distributed.py --device cuda   # NCCL, one GPU per rank (needs 2)

On a machine with 2 cores shared with other work, expect no speed-up: say how loaded it was.
"""

import argparse
import datetime
import json
import multiprocessing
import os
import sys
import tempfile
import time

import h5py
import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

NET = '''name: "bench_lm"
layer {{ name: "data" type: "HDF5Data" top: "cont" top: "input" top: "target"
  hdf5_data_param {{ source: "{list}" batch_size: 20 }} }}
layer {{ name: "embed" type: "Embed" bottom: "input" top: "embedded"
  embed_param {{ input_dim: {vocab} num_output: {hidden} bias_term: false
                weight_filler {{ type: "uniform" min: -0.08 max: 0.08 }} }} }}
layer {{ name: "lstm" type: "LSTM" bottom: "embedded" bottom: "cont" top: "h"
  recurrent_param {{ num_output: {hidden} weight_filler {{ type: "uniform" min: -0.08 max: 0.08 }}
                    bias_filler {{ type: "constant" value: 0 }} }} }}
layer {{ name: "predict" type: "InnerProduct" bottom: "h" top: "predict"
  inner_product_param {{ num_output: {vocab} axis: 2
                         weight_filler {{ type: "uniform" min: -0.08 max: 0.08 }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "predict" bottom: "target" top: "loss"
  loss_param {{ normalization: BATCH_SIZE }} softmax_param {{ axis: 2 }} }}
'''


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--vocab", type=int, default=2000)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    return parser.parse_args()


def write_problem(folder, args):
    rng = np.random.default_rng(0)
    steps = 20 * (args.iters + args.warmup + 2)
    words = rng.integers(0, args.vocab, size=(steps + 1, args.streams)).astype(np.float32)
    cont = (rng.random((steps, args.streams)) > 0.05).astype(np.float32)
    with h5py.File(os.path.join(folder, "lm.h5"), "w") as handle:
        handle["cont"], handle["input"], handle["target"] = cont, words[:-1], words[1:]
    with open(os.path.join(folder, "lm.txt"), "w") as handle:
        handle.write(os.path.join(folder, "lm.h5") + "\n")
    with open(os.path.join(folder, "net.prototxt"), "w") as handle:
        handle.write(NET.format(list=os.path.join(folder, "lm.txt"), vocab=args.vocab,
                                hidden=args.hidden))
    solver = os.path.join(folder, "solver.prototxt")
    with open(solver, "w") as handle:
        handle.write(f'net: "{os.path.join(folder, "net.prototxt")}"\nbase_lr: 0.1\n'
                     'momentum: 0.9\nlr_policy: "fixed"\nclip_gradients: 10\ndisplay: 0\n'
                     f'max_iter: 1000000\nrandom_seed: 1\nsolver_mode: CPU\n'
                     f'snapshot_prefix: "{os.path.join(folder, "bench")}"\n')
    return solver


def measure(solver_file, args, world=None):
    """Seconds for args.iters iterations after args.warmup, timed on every rank alike."""
    import torch
    from runtime.solver import Solver
    device = None
    if args.device == "cuda":
        device = torch.device("cuda", world.rank if world is not None else 0)
    solver = Solver(solver_file, device=device, world=world, log=lambda line: None)
    solver.step(args.warmup)
    if args.device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    solver.step(args.iters)
    if args.device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _rank(rank, size, init_file, solver_file, args, out_file):
    import torch
    import torch.distributed as dist
    torch.set_num_threads(args.threads)
    backend = "nccl" if args.device == "cuda" else "gloo"
    if args.device == "cuda":
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, init_method="file://" + init_file, rank=rank,
                            world_size=size, timeout=datetime.timedelta(seconds=600))
    from runtime.distributed import World
    world = World(device=torch.device("cuda", rank) if args.device == "cuda" else None)
    seconds = measure(solver_file, args, world)
    if rank == 0:
        with open(out_file, "w") as handle:
            json.dump({"seconds": seconds}, handle)
    dist.destroy_process_group()


def run_ranks(size, solver_file, args, folder):
    context = multiprocessing.get_context("spawn")
    init_file = os.path.join(folder, f"rendezvous{size}")
    out_file = os.path.join(folder, f"result{size}.json")
    processes = [context.Process(target=_rank, args=(rank, size, init_file, solver_file, args,
                                                     out_file)) for rank in range(size)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(1200)
        if process.exitcode != 0:
            raise SystemExit(f"a rank failed (exit status {process.exitcode})")
    with open(out_file) as handle:
        return json.load(handle)["seconds"]


def main():
    args = parse_args()
    import torch
    if args.device == "cuda" and torch.cuda.device_count() < 2:
        raise SystemExit("--device cuda needs 2 GPUs")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        solver_file = write_problem(folder, args)
        rows = [("1 process", args.streams, measure(solver_file, args))]
        rows.append(("2 processes", args.streams // 2, run_ranks(2, solver_file, args, folder)))
    tokens = 20 * args.streams * args.iters
    print(f"LSTM LM: vocabulary {args.vocab}, hidden {args.hidden}, T 20, {args.streams} "
          f"streams per iteration, {args.device}, {args.threads} thread(s) per process, "
          f"{os.cpu_count()} CPUs")
    print(f"{'run':<12} {'streams/rank':>12} {'iter/s':>8} {'tokens/s':>10} {'speed-up':>9}")
    base = rows[0][2]
    for name, streams, seconds in rows:
        print(f"{name:<12} {streams:>12} {args.iters / seconds:>8.2f} {tokens / seconds:>10.0f} "
              f"{base / seconds:>9.2f}")


if __name__ == "__main__":
    main()
