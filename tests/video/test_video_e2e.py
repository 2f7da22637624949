"""End to end on a slice of the bundled dataset: lrcn-video-data (bundled videos, the bundled
feature net), lrcn-train (a few iterations of solvers/s2vt_solver.prototxt's net), lrcn-describe
and lrcn-caption-eval."""

import json
import re

from runtime import cli as runtime_cli
from lrcn_apps.caption import metrics
from lrcn_apps.video import describe, prepare

from helpers import ROOT, run, write_lines

DATASET = ROOT + "/data/video_actions"


def sentences_of(split, videos):
    lines = open("%s/sentences_%s.txt" % (DATASET, split), encoding="utf-8").read().splitlines()
    return [line for line in lines if line.split("\t")[0] in videos]


def test_prepare_train_describe_evaluate(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)             # the nets name their data relative to here
    train = write_lines(tmp_path / "train.txt", sentences_of("train", {"vid1", "vid2", "vid3"}))
    test = write_lines(tmp_path / "test.txt", sentences_of("test", {"vid449", "vid450"}))
    assert run(prepare.main, [
        "--videos", DATASET + "/videos", "--sentences", "train=" + train,
        "--sentences", "val=" + test, "--sentences", "test=" + test,
        "--net", ROOT + "/nets/video_frame_features.prototxt", "--blob", "pool_frame",
        "--streams", "4", "--steps", "24", "--max-words", "12", "--out", "prepared"]) == 0

    net = open(ROOT + "/nets/s2vt.prototxt", encoding="utf-8").read()
    (tmp_path / "s2vt.prototxt").write_text(net.replace("data/video_actions/prepared/",
                                                        "prepared/"))
    solver = open(ROOT + "/solvers/s2vt_solver.prototxt", encoding="utf-8").read()
    solver = solver.replace('net: "nets/s2vt.prototxt"', 'net: "s2vt.prototxt"')
    solver = re.sub(r'snapshot_prefix: ".*"', 'snapshot_prefix: "snapshots/s2vt"', solver)
    solver = re.sub(r"test_iter: \d+", "test_iter: 1", solver)
    solver = re.sub(r"test_interval: \d+", "test_interval: 10", solver)
    solver = re.sub(r"display: \d+", "display: 10", solver)
    (tmp_path / "solver.prototxt").write_text(solver)
    assert run(runtime_cli.train_main, ["solver.prototxt", "--iterations", "20",
                                        "--no-progress"]) == 0
    log = capsys.readouterr().err
    losses = [float(x) for x in re.findall(r"Iteration \d+ \(.*\), loss = ([\d.e+-]+)", log)]
    assert losses[-1] < losses[0]

    # The vocabulary of this slice is smaller than the bundled one the nets are sized for:
    # pad it with unused words to the net's 24 (+ EOS).
    words = (tmp_path / "prepared" / "vocabulary.txt").read_text().split()
    vocabulary = write_lines(tmp_path / "vocabulary.txt",
                             words + ["unused%d" % i for i in range(24 - len(words))])
    results = tmp_path / "results.json"
    assert run(describe.main, [
        "--weights", "snapshots/s2vt_iter_20.caffemodel", "--net",
        ROOT + "/nets/s2vt_deploy.prototxt", "--vocabulary", vocabulary,
        "--features", "prepared/features.h5", "prepared/test_references.json",
        "--format", "coco", "-o", str(results), "--max-length", "12"]) == 0
    assert [r["image_id"] for r in json.loads(results.read_text())] == [449, 450]
    report = tmp_path / "scores.json"
    assert run(metrics.main, ["--results", str(results), "--annotations",
                              "prepared/test_references.json", "--tokenizer", "lrcn",
                              "--no-meteor", "--json", str(report)]) == 0
    scores = json.loads(report.read_text())["captions"]["scores"]
    assert {"Bleu_4", "CIDEr"} <= set(scores)
