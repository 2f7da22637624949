"""The scripts in bench/ run against the current code, at small sizes where they take sizes.

Benchmarks are not timed here (their numbers are measured by hand, see bench/README.md); these
tests keep a bench from breaking unnoticed until the next person needs its numbers."""

import importlib.util
import os
import re
import subprocess
import sys

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def run_bench(script, *argv, timeout=240):
    """stdout of bench/<script> run from the repository root; fails on a non-zero exit."""
    result = subprocess.run([sys.executable, os.path.join("bench", script), *map(str, argv)],
                            cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_bench_lstm_paths_agree_at_a_small_size():
    out = run_bench("bench_lstm.py", "--T", 4, "--N", 3, "--D", 8, "--H", 6, "--Ds", 5,
                    "--reps", 1, "--warmup", 0, "--device", "cpu")
    for variant in ("plain", "fused", "nn.LSTM", "plain + static", "fused + static"):
        assert f"| {variant} " in out, out
    differences = re.findall(r"max \|h_plain - h_[\w.]+\| = ([-+.e\d]+)", out)
    assert len(differences) == 2 and all(float(d) < 1e-5 for d in differences), out


def test_bench_parse_reads_a_folder_of_nets():
    out = run_bench("bench_parse.py", "--corpus", "nets", "--repeat", 1)
    count = len([name for name in os.listdir(os.path.join(ROOT, "nets"))
                 if name.endswith(".prototxt")])
    assert f"corpus total ({count} files)" in out, out


def test_bench_parse_memory_at_a_small_size():
    out = run_bench("bench_parse_memory.py", "--megabytes", 1, "--layers", "10,20")
    assert "compile time per layer" in out and re.search(r"20 layers +\S+ ms per layer", out), out


def test_bench_loader_at_a_small_size():
    out = run_bench("bench_loader.py", "--images", 4, "--batches", 2, "--rounds", 1)
    rows = re.findall(r"^\| +(\d) \|", out, re.MULTILINE)
    assert rows == ["0", "1", "2"], out


def test_bench_distributed_at_a_small_size():
    out = run_bench("bench_distributed.py", "--vocab", 20, "--hidden", 8, "--streams", 4,
                    "--iters", 2, "--warmup", 1, "--device", "cpu")
    assert "1 process" in out and "2 processes" in out, out


def test_bench_compile_finds_no_graph_break_in_a_deploy_net():
    out = run_bench("bench_compile.py", "--breaks-only", "--only", "caption deploy word")
    assert re.search(r"^caption deploy word +0$", out, re.MULTILINE), out


def test_fuzz_script_runs_a_few_mutants():
    out = run_bench("fuzz.py", "--mutants", 5)
    assert "5 mutants" in out and "0 tracebacks" in out, out


def test_bench_train_steps_run_once():
    """bench_train.py has no small sizes (its nets are the issue's timing nets): its workloads
    are built and each side's step runs once, in process."""
    spec = importlib.util.spec_from_file_location(
        "bench_train", os.path.join(ROOT, "bench", "bench_train.py"))
    bench_train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_train)
    found = bench_train.workloads(torch.Generator().manual_seed(0))
    assert len(found) == 5
    for name, (ours, reference, flops) in found.items():
        assert flops is None or flops > 0, name
        ours()
        reference()
    bench_train.caffe_lm_products()()
