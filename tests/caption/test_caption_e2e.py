"""End-to-end smoke run of the main job on the bundled data: lrcn-train (a few iterations of
solvers/caption_solver.prototxt, snapshots in a temporary folder), lrcn-caption with the
snapshot, lrcn-caption-eval on the result."""

import json
import pathlib
import re

import pytest

from runtime import cli as runtime_cli
from lrcn_apps.caption import generate, metrics

ROOT = pathlib.Path(__file__).resolve().parents[2]


def run(main, argv):
    """A console-script main's exit status (some return it, some raise SystemExit)."""
    try:
        return main(argv)
    except SystemExit as done:
        return done.code


def test_train_caption_evaluate(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)          # the net's data paths are relative to the repository root
    solver = (ROOT / "solvers" / "caption_solver.prototxt").read_text()
    solver = re.sub(r'snapshot_prefix: ".*"', f'snapshot_prefix: "{tmp_path}/caption"', solver)
    solver = re.sub(r"test_interval: \d+", "test_interval: 10", solver)
    solver = re.sub(r"test_iter: \d+", "test_iter: 1", solver)
    solver = re.sub(r"display: \d+", "display: 10", solver)
    (tmp_path / "solver.prototxt").write_text(solver)

    assert run(runtime_cli.train_main, [str(tmp_path / "solver.prototxt"), "--iterations", "20",
                                        "--no-progress"]) == 0
    log = capsys.readouterr().err
    assert "Iteration 10, Testing net (#0)" in log and "Optimization Done." in log
    losses = [float(x) for x in re.findall(r"Iteration \d+ \(.*\), loss = ([\d.e+-]+)", log)]
    assert losses[-1] < losses[0]            # 20 iterations already lower the loss
    weights = tmp_path / "caption_iter_20.caffemodel"
    assert weights.exists() and (tmp_path / "caption_iter_20.solverstate").exists()

    results = tmp_path / "results.json"
    images = [f"data/caption_shapes/images/test_{i:06d}.png" for i in (581, 582, 583)]
    assert run(generate.main, ["--weights", str(weights), "--format", "coco", "-o", str(results),
                               "--max-length", "16", *images]) == 0
    captions = json.loads(results.read_text())
    assert [c["image_id"] for c in captions] == [581, 582, 583]

    report = tmp_path / "scores.json"
    assert run(metrics.main, ["--results", str(results), "--annotations",
                              "data/caption_shapes/prepared/test_references.json",
                              "--tokenizer", "lrcn", "--no-meteor", "--json", str(report)]) == 0
    scored = json.loads(report.read_text())["captions"]
    assert scored["images"] == 3
    assert {"Bleu_4", "CIDEr", "ROUGE_L"} <= set(scored["scores"])
    assert all(0 <= value <= 10 for value in scored["scores"].values())
