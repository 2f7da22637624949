"""The scripts in bench/ run against the current code, at small sizes where they take sizes.

Benchmarks are not timed here (their numbers are measured by hand, see bench/README.md); these
tests keep a bench from breaking unnoticed until the next person needs its numbers."""

import importlib.util
import os
import re
import subprocess
import sys

import pytest
import torch
from google.protobuf import text_format

from lrcn_proto import caffe_pb2
from runtime.net import Net

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
    bench_train = _bench_train()
    found = bench_train.workloads(torch.Generator().manual_seed(0))
    assert len(found) == 5
    for name, (ours, reference, flops) in found.items():
        assert flops is None or flops > 0, name
        ours()
        reference()
    bench_train.caffe_lm_products()()


def _bench_train():
    spec = importlib.util.spec_from_file_location(
        "bench_train", os.path.join(ROOT, "bench", "bench_train.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_train_gives_real_caffe_the_same_nets_with_an_input_layer_for_data():
    bench_train = _bench_train()
    nets = bench_train.caffe_nets()
    assert set(nets) == {"CaffeNet train step", bench_train.PAPER_LM, bench_train.MAIN_JOB_NET}
    text, extra = nets[bench_train.MAIN_JOB_NET]
    assert extra == ["-phase", "TRAIN", "-stage", "factored,2-layer"]
    ours = Net(os.path.join(ROOT, "nets", "lrcn_caption.prototxt"), phase="TRAIN",
               stages=("factored", "2-layer"))
    message = caffe_pb2.NetParameter()
    text_format.Parse(text, message)
    assert [layer.type for layer in message.layer].count("Input") == 1
    assert not {"ImageData", "HDF5Data"} & {layer.type for layer in message.layer}
    as_caffe = Net(message, phase="TRAIN", stages=("factored", "2-layer"))
    # The same layers after the data, fed tops of the same names and shapes.
    assert as_caffe.layer_names[1:] == [name for name, layer in
                                        zip(ours.layer_names, ours.compiled.layers)
                                        if layer.bottoms]
    fed = {name: shape for layer in ours.compiled.layers if not layer.bottoms
           for name, shape in zip(layer.top_names, layer.top_shapes)}
    (inputs,) = [layer for layer in as_caffe.compiled.layers if not layer.bottoms]
    assert dict(zip(inputs.top_names, inputs.top_shapes)) == fed


def test_bench_train_reads_caffe_times_log_and_alternates_with_our_steps(tmp_path):
    bench_train = _bench_train()
    log = ("I1203 caffe.cpp:408] Average Forward pass: 44.7223 ms.\n"
           "I1203 caffe.cpp:410] Average Backward pass: 56.1353 ms.\n"
           "I1203 caffe.cpp:412] Average Forward-Backward: 101 ms.\n")
    assert bench_train.caffe_time_ms(log) == pytest.approx(100.8576)
    with pytest.raises(ValueError, match="Average Forward/Backward pass"):
        bench_train.caffe_time_ms("F1203 Check failed: ...")
    # A stand-in for the caffe binary: prints the log lines `caffe time` would, to stderr.
    fake = tmp_path / "caffe"
    fake.write_text("#!/bin/sh\necho \"$@\" >> \"$0.calls\"\n"
                    "echo 'Average Forward pass: 2.5 ms.' >&2\n"
                    "echo 'Average Backward pass: 1.5 ms.' >&2\n")
    fake.chmod(0o755)
    steps = []
    found = {bench_train.PAPER_LM: (lambda: steps.append(1), None, None)}
    compared = bench_train.caffe_comparison(str(fake), found, reps=2, iterations=3)
    assert list(compared) == [bench_train.PAPER_LM]
    caffe_ms, ours_ms = compared[bench_train.PAPER_LM]
    assert caffe_ms == pytest.approx(4.0) and ours_ms >= 0
    assert len(steps) == 2 * (1 + 3)          # a warm-up and 3 timed steps per round
    calls = (tmp_path / "caffe.calls").read_text().splitlines()
    assert len(calls) == 2 and all(call.startswith("time -model ") and
                                   call.endswith("-iterations 3") for call in calls)
    # An executable file that is no program is one error (main() reports it and exits 1).
    not_a_program = tmp_path / "not_caffe"
    not_a_program.write_text("not a program\n")
    not_a_program.chmod(0o755)
    with pytest.raises(ValueError, match="cannot run"):
        bench_train.caffe_comparison(str(not_a_program), found, reps=1, iterations=1)
