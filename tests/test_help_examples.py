"""Every example in every lrcn-* tool's --help runs, as written, in a fresh folder holding the
repository's nets, solvers and data plus the files the examples name (deploy.prototxt, a
weights file, a few images, COCO-style, UCF-101-style and MSVD-style layouts of the bundled
data, a stand-in for VGG-16).

The examples run in one workspace in the order of EXECUTION_ORDER, so a later example may use
what an earlier one wrote (lrcn-compute-mean reads the LMDB lrcn-convert-imageset wrote). The
full run takes many minutes (it trains, prepares the activity and video data, captions and
describes): it is marked long; the fast test runs the compiler tools' examples.
"""

import configparser
import contextlib
import importlib
import io
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Producers before consumers.
EXECUTION_ORDER = [
    "lrcn-check", "lrcn-fmt", "lrcn-show", "lrcn-diff", "lrcn-draw",
    "lrcn-convert-imageset", "lrcn-compute-mean",
    "lrcn-train", "lrcn-test", "lrcn-time", "lrcn-export",
    "lrcn-caption-data", "lrcn-caption", "lrcn-caption-retrieval", "lrcn-caption-eval",
    "lrcn-caption-bundle", "lrcn-caption-onnx",
    "lrcn-activity-data", "lrcn-activity-score", "lrcn-activity-eval",
    "lrcn-video-data", "lrcn-video-recognise", "lrcn-describe",
]
COMPILER_TOOLS = EXECUTION_ORDER[:5]
# GNU diff's convention: 1 means "the files differ".
ALLOWED_STATUS = {"lrcn-diff": (0, 1)}

DEPLOY = '''name: "deploy"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 3 dim: 32 dim: 32 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 5 stride: 2
                            weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool1" top: "fc"
        inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
'''

# A stand-in for VGG-16's deploy net (lrcn-video-data's MSVD example): an fc7 over 32 x 32 frames.
VGG_STAND_IN = '''name: "VGG_ILSVRC_16_layers"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 10 dim: 3 dim: 32 dim: 32 } } }
layer { name: "fc7" type: "InnerProduct" bottom: "data" top: "fc7"
        inner_product_param { num_output: 16 weight_filler { type: "xavier" } } }
'''

# A train net whose data file is not at hand: its data shape comes from --input-shape.
TRAIN = '''name: "train"
layer { name: "data" type: "HDF5Data" top: "data" top: "label"
        hdf5_data_param { source: "not_here/train_list.txt" batch_size: 20 } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 5 stride: 2
                            weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "fc" type: "InnerProduct" bottom: "conv1" top: "fc"
        inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
'''


def entry_points():
    """{tool: (module, function)} from setup.cfg."""
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    tools = {}
    for line in config["options.entry_points"]["console_scripts"].strip().splitlines():
        name, target = (part.strip() for part in line.split("="))
        module, function = target.split(":")
        tools[name] = (module, function)
    return tools


def help_text(tool):
    module, function = entry_points()[tool]
    main = getattr(importlib.import_module(module), function)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    return out.getvalue()


def examples(text):
    """The commands under the 'example(s)...:' headings of a --help text: indented lines,
    comment lines skipped, backslash continuations joined (bash reads the rest)."""
    commands, inside, pending = [], False, None
    for line in text.splitlines():
        if re.match(r"^examples?\b.*:\s*$", line):
            inside = True
            continue
        if not inside:
            continue
        if pending is not None:
            pending += "\n" + line
        elif line and not line[0].isspace():
            inside = False
            continue
        elif line.strip() and not line.strip().startswith("#"):
            pending = line.strip()
        if pending is not None and not pending.endswith("\\"):
            commands.append(pending)
            pending = None
    return commands


def test_every_tool_has_examples_and_is_in_the_run_order():
    assert sorted(EXECUTION_ORDER) == sorted(entry_points())
    for tool in EXECUTION_ORDER:
        found = examples(help_text(tool))
        assert found, f"{tool} --help has no example"
        assert all(command.startswith(("lrcn-", "python -m", "git ")) for command in found), \
            found


def test_example_parser_joins_continuations_and_skips_comments():
    text = ("usage: x\n\nexamples:\n  # a comment\n  lrcn-a one \\\n      two\n\n"
            "  lrcn-b   # trailing\nexit status: 0\n  lrcn-not-an-example\n")
    assert examples(text) == ["lrcn-a one \\\n      two", "lrcn-b   # trailing"]


def _copy_repository_files(workspace):
    # Without the activity and video data a checkout may have prepared already: the examples
    # make them.
    def generated(directory, names):
        prepared_here = os.path.basename(directory) in ("activity_motion", "video_actions")
        return ["prepared"] if prepared_here else []
    for folder in ("nets", "solvers", "data"):
        shutil.copytree(os.path.join(ROOT, folder), workspace / folder, ignore=generated)


def _caption_sets(workspace):
    """COCO-style files over a few bundled images: captions.json + images/ (one annotation
    file) and data/coco/ (train2014 / val2014 with LRCN's split id files)."""
    def subset(split, count):
        with open(os.path.join(ROOT, f"data/caption_shapes/captions_{split}.json")) as handle:
            data = json.load(handle)
        images = data["images"][:count]
        ids = {image["id"] for image in images}
        return dict(data, images=images,
                    annotations=[a for a in data["annotations"] if a["image_id"] in ids])

    def write(data, json_path, image_folder):
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(data))
        image_folder.mkdir(parents=True, exist_ok=True)
        for image in data["images"]:
            shutil.copy(os.path.join(ROOT, "data/caption_shapes/images", image["file_name"]),
                        image_folder / image["file_name"])
        return [image["id"] for image in data["images"]]

    write(subset("val", 10), workspace / "captions.json", workspace / "images")
    coco = workspace / "data" / "coco"
    train_ids = write(subset("train", 12), coco / "annotations/captions_train2014.json",
                      coco / "images/train2014")
    val_ids = write(subset("val", 8), coco / "annotations/captions_val2014.json",
                    coco / "images/val2014")
    for split, ids in (("train", train_ids), ("val", val_ids[:4]), ("test", val_ids[4:])):
        (coco / f"coco2014_cocoid.{split}.txt").write_text("".join(f"{i}\n" for i in ids))


def _imageset(workspace):
    """images/cat/001.jpg ... and train.txt, as lrcn-convert-imageset's example names them."""
    from PIL import Image
    lines = []
    for label, (name, colour) in enumerate((("cat", (200, 30, 30)), ("dog", (30, 30, 200)))):
        (workspace / "images" / name).mkdir(parents=True)
        for index in range(3):
            Image.new("RGB", (40, 30), colour).save(workspace / "images" / name / f"00{index}.jpg")
            lines.append(f"{name}/00{index}.jpg {label}\n")
    (workspace / "train.txt").write_text("".join(lines))


def _ucf101_layout(workspace):
    """UCF-101's folder names over three bundled motion videos (labels 1-based)."""
    os.symlink(workspace / "data" / "activity_motion" / "videos", workspace / "UCF-101")
    lists = workspace / "ucfTrainTestlist"
    lists.mkdir()
    motion = workspace / "data" / "activity_motion"
    train = (motion / "trainlist01.txt").read_text().splitlines()[:2]
    lists.joinpath("trainlist01.txt").write_text(
        "".join(f"{path} {int(label) + 1}\n" for path, label in (line.split() for line in train)))
    test = (motion / "testlist01.txt").read_text().splitlines()[:1]
    lists.joinpath("testlist01.txt").write_text("".join(f"{line}\n" for line in test))
    shutil.copy(motion / "classInd.txt", lists / "classInd.txt")


def _msvd_layout(workspace):
    """MSVD's names (YouTubeClips/vid<N>.avi, S2VT's sentence files, a VGG-16 deploy net and
    its weights) over four bundled videos and a small stand-in net."""
    from runtime.net import Net
    videos = workspace / "data" / "video_actions" / "videos"
    (workspace / "YouTubeClips").mkdir()
    for number in (1, 2, 3, 4):
        os.symlink(videos / f"vid{number}.avi", workspace / "YouTubeClips" / f"vid{number}.avi")
    sentences = (workspace / "data" / "video_actions" / "sentences_train.txt").read_text()
    lines = [line for line in sentences.splitlines() if line.split("\t")[0] in
             ("vid1", "vid2", "vid3", "vid4")]
    (workspace / "sents_train.txt").write_text(
        "".join(f"{line}\n" for line in lines if not line.startswith("vid4\t")))
    (workspace / "sents_val.txt").write_text(
        "".join(f"{line}\n" for line in lines if line.startswith("vid4\t")))
    (workspace / "VGG_ILSVRC_16_layers_deploy.prototxt").write_text(VGG_STAND_IN)
    Net(str(workspace / "VGG_ILSVRC_16_layers_deploy.prototxt"), phase="TEST").save(
        workspace / "VGG_ILSVRC_16_layers.caffemodel")


def _weights(workspace):
    """The weights files the examples name, with the fillers' values (the examples show how
    to call the tools; training is lrcn-train's example)."""
    from runtime.net import Net
    (workspace / "runs" / "caption").mkdir(parents=True)
    (workspace / "runs" / "activity").mkdir(parents=True)
    (workspace / "runs" / "video").mkdir(parents=True)
    video = ("factored", "2-layer")
    caption = "nets/lrcn_caption.prototxt"
    saves = [("deploy.prototxt", "TEST", (), "model.caffemodel"),
             (caption, "TRAIN", ("factored", "2-layer"),
              "runs/caption/lrcn_caption_iter_2000.caffemodel"),
             (caption, "TRAIN", ("unfactored", "1-layer"), "one_layer.caffemodel"),
             ("nets/lrcn_activity.prototxt", "TEST", ("rgb", "deploy"),
              "runs/activity/lrcn_rgb_iter_1500.caffemodel"),
             ("nets/lrcn_activity.prototxt", "TEST", ("flow", "deploy"),
              "runs/activity/lrcn_flow_iter_1500.caffemodel"),
             ("nets/s2vt_deploy.prototxt", "TEST", video, "runs/video/s2vt_iter_3000.caffemodel"),
             ("nets/video_meanpool_deploy.prototxt", "TEST", video,
              "runs/video/meanpool_iter_3000.caffemodel"),
             ("nets/video_recogniser_deploy.prototxt", "TEST", (),
              "runs/video/recogniser_iter_1000.caffemodel")]
    for net_file, phase, stages, weights in saves:
        Net(str(workspace / net_file), phase=phase, stages=stages).save(workspace / weights)


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    _copy_repository_files(tmp_path)
    (tmp_path / "deploy.prototxt").write_text(DEPLOY)
    (tmp_path / "train.prototxt").write_text(TRAIN)
    for side, outputs in (("old", 10), ("new", 12)):
        (tmp_path / side).mkdir()
        (tmp_path / side / "train.prototxt").write_text(
            TRAIN.replace("num_output: 10", f"num_output: {outputs}"))
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, timeout=60)
    monkeypatch.chdir(tmp_path)     # data paths in the nets resolve from here, as for a user
    return tmp_path


def run_examples(tools, workspace):
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    ran = 0
    for tool in tools:
        for command in examples(help_text(tool)):
            result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", command],
                                    cwd=workspace, env=env, capture_output=True, text=True,
                                    timeout=600)
            assert result.returncode in ALLOWED_STATUS.get(tool, (0,)), (
                f"{tool} example failed ({result.returncode}):\n{command}\n{result.stderr[-3000:]}")
            ran += 1
    return ran


def test_the_compiler_tools_examples_run(workspace):
    assert run_examples(COMPILER_TOOLS, workspace) >= 10


@pytest.mark.long
def test_every_help_example_runs(workspace):
    _caption_sets(workspace)
    _imageset(workspace)
    _ucf101_layout(workspace)
    _msvd_layout(workspace)
    _weights(workspace)
    assert run_examples(EXECUTION_ORDER, workspace) >= 45
