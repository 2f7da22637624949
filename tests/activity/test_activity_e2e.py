"""End to end on a tiny motion dataset: train the single-frame and LRCN nets a few iterations
with the project's solvers (lrcn-train: the VideoData layer is a registered plugin
registered), initialise LRCN from the single-frame snapshot, score the test
videos with the paper's protocol (lrcn-activity-score) and evaluate RGB, flow and their fusion
(lrcn-activity-eval).

The dataset is rendered in memory (lrcn_apps.activity.motion_dataset.render_video, no ffmpeg) and
written in lrcn-activity-data's layout: frames/, flow_images/, the four lists and classInd.txt.
The net and solver files are the repository's, with their paths pointed at it and the schedule
cut to a few iterations. The tools run in this process (their entry points' main functions).
"""
import json
import os

import numpy as np
import pytest
from google.protobuf import text_format

from lrcn_proto import caffe_pb2
from lrcn_apps.activity import motion_dataset
from lrcn_apps.activity.flow import FarnebackParams, video_flow_images
from lrcn_apps.activity.lists import VideoListEntry, frame_file_name, write_video_list
from lrcn_apps.activity.prepare import save_jpeg

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PREPARED = "data/activity_motion/prepared/"
ITERATIONS = 3


def write_video(root, spec):
    frames = motion_dataset.render_video(spec)
    for folder, images in (("frames", list(frames)),
                           ("flow_images", list(video_flow_images(
                               frames, FarnebackParams(winsize=7, levels=2))))):
        target = root / folder / spec.name
        target.mkdir(parents=True)
        for index, image in enumerate(images):
            save_jpeg(image, target / frame_file_name(spec.name, index), 95)
    return len(frames)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("motion")
    splits = {"trainlist01": [motion_dataset.VideoSpec(label, 4, 1) for label in range(8)],
              "testlist01": [motion_dataset.VideoSpec(label, 1, 1) for label in range(8)]}
    for split, specs in splits.items():
        counts = [write_video(root, spec) for spec in specs]
        write_video_list(root / f"{split}_rgb.txt", [
            VideoListEntry(f"frames/{s.name}", s.label, n) for s, n in zip(specs, counts)])
        write_video_list(root / f"{split}_flow.txt", [
            VideoListEntry(f"flow_images/{s.name}", s.label, n - 1)
            for s, n in zip(specs, counts)])
    (root / "classInd.txt").write_text(motion_dataset.class_index_text())
    return root


def localise(tmp, dataset, net_name):
    """The repository's net with its data paths pointed at the tiny dataset."""
    text = open(os.path.join(ROOT, "nets", net_name)).read()
    assert PREPARED in text
    path = tmp / net_name
    path.write_text(text.replace(PREPARED, f"{dataset}/"))
    return path


def short_solver(tmp, dataset, solver_name, prefix):
    """The repository's solver, its net localised and its schedule cut to a few iterations."""
    solver = caffe_pb2.SolverParameter()
    text_format.Parse(open(os.path.join(ROOT, "solvers", solver_name)).read(), solver)
    solver.net = str(localise(tmp, dataset, os.path.basename(solver.net)))
    solver.max_iter = ITERATIONS
    solver.snapshot = ITERATIONS
    solver.snapshot_prefix = str(tmp / prefix)
    solver.test_interval = ITERATIONS
    solver.test_initialization = False
    del solver.test_iter[:]
    solver.test_iter.extend([1] * len(solver.test_state))
    solver.display = 1
    solver.solver_mode = caffe_pb2.SolverParameter.CPU
    path = tmp / solver_name
    path.write_text(text_format.MessageToString(solver))
    return path


def tool(main, *args):
    """Run a command-line entry point in this process; it must exit with status 0."""
    try:
        status = main(list(args))
    except SystemExit as done:
        status = done.code
    assert status in (0, None), f"{main.__module__} {' '.join(args)} exited with {status}"


def test_train_score_evaluate(tmp_path, dataset, capsys):
    from runtime.cli import train_main
    from lrcn_apps.activity import evaluate, run_eval

    # Single-frame RGB, then LRCN RGB initialised from it (the paper's recipe).
    tool(train_main, str(short_solver(tmp_path, dataset, "activity_single_frame_rgb.prototxt",
                                      "sf_rgb")), "--no-progress")
    single_frame = tmp_path / f"sf_rgb_iter_{ITERATIONS}.caffemodel"
    assert single_frame.is_file()
    capsys.readouterr()
    tool(train_main, str(short_solver(tmp_path, dataset, "activity_lrcn_rgb.prototxt",
                                      "lrcn_rgb")), "--weights", str(single_frame),
         "--no-progress")
    log = capsys.readouterr().err
    assert "Finetuning from" in log and "Test net output" in log
    # LRCN flow from scratch (a few iterations: the point is the plumbing).
    tool(train_main, str(short_solver(tmp_path, dataset, "activity_lrcn_flow.prototxt",
                                      "lrcn_flow")), "--no-progress")

    outputs = {}
    for stream in ("rgb", "flow"):
        outputs[stream] = tmp_path / f"lrcn_{stream}_probs.npz"
        tool(run_eval.main, "--net", str(tmp_path / "lrcn_activity.prototxt"), "--stage", stream,
             "--weights", str(tmp_path / f"lrcn_{stream}_iter_{ITERATIONS}.caffemodel"),
             "--out", str(outputs[stream]), "--quiet")
        with np.load(outputs[stream]) as archive:
            assert archive["probabilities"].shape == (8, 8)
            np.testing.assert_allclose(archive["probabilities"].sum(1), 1.0, atol=1e-6)
            assert sorted(archive["labels"].tolist()) == list(range(8))
            assert archive["class_names"][0] == "MoveRightSlow"
    report = tmp_path / "eval.json"
    tool(evaluate.main, "--rgb", str(outputs["rgb"]), "--flow", str(outputs["flow"]),
         "--json", str(report))
    models = [entry["model"] for entry in json.loads(report.read_text())["results"]]
    assert models == ["RGB", "flow", "fusion p=0.500", "fusion p=0.333"]
