"""lrcn-test and lrcn-time (Caffe's `caffe test` and `caffe time`): what they print, checked
against runtime.Net run by hand on the same data, and their error paths."""

import re
import shutil
import subprocess

import h5py
import numpy as np
import pytest
import torch

from lrcn_proto import caffe_pb2
from runtime import cli
from runtime.net import Net
from runtime.weights import array_to_blob

ROWS, BATCH, FEATURES, CLASSES = 12, 4, 5, 3
BATCHES = ROWS // BATCH

# The loss top is named "xent" with loss_weight 2 so lrcn-test's "(* 2 = ... loss)" shows; a
# Softmax branch gives an output with BATCH x CLASSES values per batch.
NET = f'''name: "scored"
layer {{ name: "data" type: "HDF5Data" top: "data" top: "label"
        hdf5_data_param {{ source: "list.txt" batch_size: {BATCH} }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param {{ num_output: {CLASSES}
                              weight_filler {{ type: "gaussian" std: 1 }} }} }}
layer {{ name: "relu" type: "ReLU" bottom: "ip" top: "hidden" }}
layer {{ name: "ip2" type: "InnerProduct" bottom: "hidden" top: "score"
        inner_product_param {{ num_output: {CLASSES}
                              weight_filler {{ type: "gaussian" std: 1 }} }} }}
layer {{ name: "xent" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "xent"
        loss_weight: 2 }}
layer {{ name: "accuracy" type: "Accuracy" bottom: "score" bottom: "label" top: "accuracy" }}
layer {{ name: "prob" type: "Softmax" bottom: "score" top: "prob" }}
'''


@pytest.fixture
def scored(tmp_path, monkeypatch):
    """The net, its HDF5 data (12 rows: 3 batches of 4) and a .caffemodel for it."""
    rng = np.random.default_rng(3)
    with h5py.File(tmp_path / "rows.h5", "w") as handle:
        handle["data"] = rng.standard_normal((ROWS, FEATURES)).astype(np.float32)
        handle["label"] = rng.integers(0, CLASSES, ROWS).astype(np.float32)
    (tmp_path / "list.txt").write_text("rows.h5\n")
    (tmp_path / "net.prototxt").write_text(NET)
    monkeypatch.chdir(tmp_path)
    # Weights unlike the filler's, so a run that ignored --weights would not match.
    weights = Net("net.prototxt", phase="TEST", seed=11)
    weights.save("w.caffemodel")
    return tmp_path


def run_tool(main, argv, capsys):
    with pytest.raises(SystemExit) as exited:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return exited.value.code, out, err


def messages(log):
    """The text after glog's `I.... file.py] ` prefix, one per line."""
    return [re.sub(r"^I\d{4} [\d:.]+ +\d+ \S+\] ", "", line) for line in log.splitlines()]


def by_hand(weights, batches):
    """Each batch's outputs from runtime.Net driven pycaffe-style."""
    net = Net("net.prototxt", phase="TEST", weights=weights)
    return [{name: value.detach().double().numpy().reshape(-1)
             for name, value in net().items()} for _ in range(batches)]


# --- lrcn-test ------------------------------------------------------------------------------

def test_lrcn_test_prints_each_batch_and_the_means(scored, capsys):
    code, out, err = run_tool(cli.test_main, ["net.prototxt", "--weights", "w.caffemodel",
                                              "--iterations", BATCHES], capsys)
    assert code == 0, err
    lines = messages(err)
    expected = by_hand("w.caffemodel", BATCHES)
    for batch, outputs in enumerate(expected):
        for name in ("accuracy", "xent", "prob"):
            printed = [float(m.group(1)) for m in (re.fullmatch(
                rf"Batch {batch}, {name} = ([-+\d.eE]+|nan|inf)", line) for line in lines) if m]
            # Every value of the output, in order (prob: BATCH x CLASSES of them).
            np.testing.assert_allclose(printed, outputs[name], rtol=1e-5, atol=1e-6)
    means = {name: np.mean([outputs[name] for outputs in expected], axis=0)
             for name in ("accuracy", "xent", "prob")}
    final = {}
    for line in lines:
        match = re.fullmatch(r"(accuracy|xent|prob) = ([-+\d.eE]+)(.*)", line)
        if match:
            final.setdefault(match.group(1), []).append((float(match.group(2)), match.group(3)))
    for name, mean in means.items():
        np.testing.assert_allclose([v for v, _ in final[name]], mean, rtol=1e-5, atol=1e-6)
    # Caffe marks a loss output with its weight: "xent = 1.2 (* 2 = 2.4 loss)".
    (value, suffix), = final["xent"]
    weighted = re.fullmatch(r" \(\* 2 = ([-+\d.eE]+) loss\)", suffix)
    assert weighted and float(weighted.group(1)) == pytest.approx(2 * value, rel=1e-5)
    assert all(suffix == "" for _, suffix in final["accuracy"] + final["prob"])
    assert out == ""


def test_lrcn_test_without_weights_uses_the_fillers(scored, capsys):
    # --model is Caffe's spelling; a different initialisation scores differently.
    code, _, err = run_tool(cli.test_main, ["--model=net.prototxt", "--iterations", 1], capsys)
    assert code == 0, err
    printed = [float(m.group(1)) for m in (re.fullmatch(r"Batch 0, xent = ([-+\d.eE]+)", line)
                                           for line in messages(err)) if m]
    assert len(printed) == 1
    assert printed[0] != pytest.approx(float(by_hand("w.caffemodel", 1)[0]["xent"][0]),
                                       rel=1e-3)


def test_lrcn_test_reports_an_output_named_loss_unweighted(scored, capsys):
    (scored / "net.prototxt").write_text(NET.replace('top: "xent"', 'top: "loss"'))
    code, _, err = run_tool(cli.test_main, ["net.prototxt", "--weights", "w.caffemodel",
                                            "--iterations", 1], capsys)
    assert code == 0, err
    raw = float(by_hand("w.caffemodel", 1)[0]["loss"][0])
    final = [m for m in (re.fullmatch(r"loss = ([-+\d.eE]+) \(\* 2 = ([-+\d.eE]+) loss\)", line)
                         for line in messages(err)) if m]
    assert len(final) == 1
    assert float(final[0].group(1)) == pytest.approx(raw, rel=1e-5)
    assert float(final[0].group(2)) == pytest.approx(2 * raw, rel=1e-5)


# --- lrcn-time ------------------------------------------------------------------------------

def test_lrcn_time_prints_the_per_layer_table_and_caffe_lines(scored, capsys):
    code, out, err = run_tool(cli.time_main, ["net.prototxt", "--iterations", 2], capsys)
    assert code == 0, err
    net = Net("net.prototxt", phase="TRAIN")
    table = out.strip().splitlines()
    header = table[0].split()
    assert header[:2] == ["layer", "type"] and "forward" in header and "backward" in header
    rows = {line.split()[0]: line.split() for line in table[1:-2]}
    assert list(rows) == net.layer_names
    for name, fields in rows.items():
        forward, backward = float(fields[-2]), float(fields[-1])
        assert forward >= 0 and backward >= 0
        assert fields[1] == net.layer(name).layer.type
    assert table[-2].split()[0] == "total"
    totals = [float(v) for v in table[-2].split()[1:]]
    assert totals == pytest.approx([sum(float(f[-2]) for f in rows.values()),
                                    sum(float(f[-1]) for f in rows.values())], abs=0.01)
    # The learnable layers ran a backward pass.
    assert float(rows["ip"][-1]) > 0
    log = messages(err)
    assert "Testing for 2 iterations." in log
    for name in net.layer_names:
        assert any(re.fullmatch(rf" *{re.escape(name)}\tforward: [\d.eE+-]+ ms\.", line)
                   for line in log), name
        assert any(re.fullmatch(rf" *{re.escape(name)}\tbackward: [\d.eE+-]+ ms\.", line)
                   for line in log), name
    for caption in ("Average Forward pass", "Average Backward pass",
                    "Average Forward-Backward", "Total Time"):
        assert any(re.fullmatch(rf"{caption}: [\d.eE+-]+ ms\.", line) for line in log), caption


def test_lrcn_time_counts_the_first_layers_weight_gradient(tmp_path, capsys):
    # conv1 reads the data (no gradient wanted there) but learns: its backward is the weight
    # gradient, about as costly as its forward. Caffe's table shows it; ~0 ms would hide it.
    (tmp_path / "first.prototxt").write_text(
        'layer { name: "x" type: "DummyData" top: "x" top: "y" dummy_data_param { '
        '  shape { dim: 4 dim: 3 dim: 64 dim: 64 } shape { dim: 4 dim: 2 } '
        '  data_filler { type: "gaussian" } } }\n'
        'layer { name: "conv1" type: "Convolution" bottom: "x" top: "conv1" '
        '  convolution_param { num_output: 32 kernel_size: 7 '
        '                      weight_filler { type: "gaussian" std: 0.01 } } }\n'
        'layer { name: "ip" type: "InnerProduct" bottom: "conv1" top: "ip" '
        '  inner_product_param { num_output: 2 } }\n'
        'layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "y" top: "loss" }\n')
    code, out, err = run_tool(cli.time_main, [tmp_path / "first.prototxt", "--iterations", 3],
                              capsys)
    assert code == 0, err
    conv1 = next(line.split() for line in out.splitlines() if line.startswith("conv1 "))
    forward, backward = float(conv1[-2]), float(conv1[-1])
    assert backward > 0.2 * forward, (forward, backward)


def test_lrcn_time_times_a_deploy_net_with_input_layers(tmp_path, capsys):
    (tmp_path / "deploy.prototxt").write_text(
        'layer { name: "in" type: "Input" top: "data" '
        '        input_param { shape { dim: 2 dim: 5 } } }\n'
        'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
        '        inner_product_param { num_output: 3 } }\n')
    code, out, err = run_tool(cli.time_main, [tmp_path / "deploy.prototxt", "--iterations", 1],
                              capsys)
    assert code == 0, err
    assert any(line.split()[:1] == ["ip"] for line in out.splitlines())


# --- errors ---------------------------------------------------------------------------------

def assert_one_clean_error(code, err, *fragments):
    assert code == 1
    assert "Traceback" not in err
    message = [line for line in err.splitlines() if not re.match(r"^I\d{4} ", line)]
    assert message and all(line.startswith("  hint: ") for line in message[1:]), message
    for fragment in fragments:
        assert fragment in message[0], message


@pytest.mark.parametrize("main", [cli.test_main, cli.time_main], ids=["test", "time"])
def test_missing_net_file(main, tmp_path, capsys):
    code, _, err = run_tool(main, [tmp_path / "absent.prototxt", "--iterations", 1], capsys)
    assert_one_clean_error(code, err, "absent.prototxt")


@pytest.mark.parametrize("main", [cli.test_main, cli.time_main], ids=["test", "time"])
def test_weights_of_another_shape(main, scored, capsys):
    wrong = caffe_pb2.NetParameter()
    layer = wrong.layer.add(name="ip2", type="InnerProduct")
    layer.blobs.extend([array_to_blob(np.zeros((7, CLASSES), np.float32)),
                        array_to_blob(np.zeros(7, np.float32))])
    (scored / "wrong.caffemodel").write_bytes(wrong.SerializeToString())
    code, _, err = run_tool(main, ["net.prototxt", "--weights", "wrong.caffemodel",
                                   "--iterations", 1], capsys)
    assert_one_clean_error(code, err, "wrong.caffemodel", "'ip2'", "shape mismatch")


@pytest.mark.parametrize("main", [cli.test_main, cli.time_main], ids=["test", "time"])
def test_a_layer_type_typo_is_located(main, scored, capsys):
    (scored / "net.prototxt").write_text(NET.replace('type: "Softmax"', 'type: "SoftMax"'))
    line = 1 + next(i for i, text in enumerate(NET.splitlines()) if '"Softmax"' in text)
    code, _, err = run_tool(main, ["net.prototxt", "--iterations", 1], capsys)
    assert_one_clean_error(code, err, f"net.prototxt:{line}:", "SoftMax")
    assert "Softmax" in err                  # did-you-mean hint


@pytest.mark.parametrize("main", [cli.test_main, cli.time_main], ids=["test", "time"])
def test_no_net_is_bad_usage(main, capsys):
    code, _, err = run_tool(main, [], capsys)
    assert code == 2 and "usage:" in err


@pytest.mark.parametrize("main", [cli.test_main, cli.time_main], ids=["test", "time"])
def test_ctrl_c_lost_in_a_destructor_during_start_up_still_stops(
        main, scored, capsys, ctrl_c_lost_during_start_up):
    code, out, err = run_tool(main, ["net.prototxt", "--iterations", 1], capsys)
    assert (code, out, err.strip()) == (130, "", "interrupted")


def installed(tool):
    executable = shutil.which(tool)
    if executable is None:
        pytest.skip(f"{tool} is not installed (pip install -e .)")
    return executable


def test_installed_scripts_exit_statuses(scored):
    done = subprocess.run([installed("lrcn-test"), "net.prototxt", "--iterations", "1"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Batch 0, accuracy = " in done.stderr and "Traceback" not in done.stderr
    missing = subprocess.run([installed("lrcn-time"), "missing.prototxt"], capture_output=True,
                             text=True, timeout=300)
    assert missing.returncode == 1
    assert "missing.prototxt" in missing.stderr and "Traceback" not in missing.stderr
