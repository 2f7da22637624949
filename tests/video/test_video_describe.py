"""lrcn-describe's step-wise decoding against the unrolled training nets, and its errors."""

import json
import os

import numpy as np
import pytest
import torch

import compiler
from lrcn_proto import caffe_pb2
from runtime.net import Net
from lrcn_apps.caption.text import Vocabulary
from lrcn_apps.video import describe
from lrcn_apps.video.describe import VideoDescriber
from lrcn_apps.video.features import write_features
from lrcn_apps.video.streams import s2vt_pair

from helpers import ROOT, run

NETS = os.path.join(ROOT, "nets")
VOCABULARY = Vocabulary(["<unk>"] + ["w%d" % i for i in range(23)])      # 25 net indices
FEATURE_DIM = 192


def with_inputs(net_file, shapes):
    """The training net with its HDF5Data layers replaced by Input layers of these shapes."""
    message = compiler.load_file(net_file, "net").message
    kept = [layer for layer in message.layer if layer.type != "HDF5Data"]
    del message.layer[:]
    for name, shape in shapes.items():
        layer = message.layer.add(name=name, type="Input", top=[name])
        layer.input_param.shape.add(dim=shape)
    message.layer.extend(kept)
    return message


def trained_like_weights(tmp_path, net_file, stages, shapes):
    """Seeded filler weights of the training net (TEST phase), saved as a .caffemodel."""
    torch.manual_seed(0)
    net = Net(with_inputs(net_file, shapes), phase="TEST", stages=stages)
    with torch.no_grad():
        for params in net.params.values():
            for blob in params:     # larger than the fillers, so that the state matters
                blob.data[...] = np.random.default_rng(len(blob.data.shape)).uniform(
                    -0.3, 0.3, blob.data.shape)
    path = str(tmp_path / ("weights_%s.caffemodel" % "_".join(stages)))
    net.save(path)
    return net, path


def videos(count, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(int(rng.integers(3, 8)), FEATURE_DIM)).astype(np.float32)
            for _ in range(count)]


def unrolled_logits(net, feed):
    """The training net's (T, V) logits of stream 0 (predict feeds the loss: not an output)."""
    net.reset_state()
    with torch.no_grad():
        net.run(feed, keep_all=True)
    return torch.as_tensor(net.blobs["predict"].data[:, 0], dtype=torch.float64)


def forced_log_probs(describer, clips, words):
    """(words + 1, videos, V): the deploy net's log-probs at each word step, teacher-forced."""
    with torch.no_grad():
        return np.stack([log_p.numpy() for _, log_p in describer._forced(
            clips, torch.as_tensor([words + [0]] * len(clips)))])


@pytest.mark.parametrize("stages", [("factored", "2-layer"), ("unfactored", "1-layer"),
                                    ("unfactored", "2-layer")])
def test_step_wise_s2vt_reproduces_the_unrolled_logits(tmp_path, stages):
    steps, words = 16, [3, 7, 1, 12]
    shapes = {"cont_sentence": [steps, 1], "input_sentence": [steps, 1],
              "target_sentence": [steps, 1], "stage_indicator": [steps, 1],
              "frame_fc7": [steps, 1, FEATURE_DIM]}
    unrolled, weights = trained_like_weights(tmp_path, os.path.join(NETS, "s2vt.prototxt"),
                                             stages, shapes)
    describer = VideoDescriber(os.path.join(NETS, "s2vt_deploy.prototxt"), weights, VOCABULARY,
                               stages)
    # Three videos of different lengths in one batch (right-aligned) and the first alone.
    clips = videos(3)
    batch = forced_log_probs(describer, clips, words)
    for row, frames in enumerate(clips):
        pair, _ = s2vt_pair(frames, words, steps)
        feed = {name: torch.as_tensor(values)[:, None] for name, values in pair.items()}
        logits = unrolled_logits(unrolled, feed)
        expected = torch.log_softmax(logits, dim=1)[len(frames):len(frames) + len(words) + 1]
        got = torch.as_tensor(batch[:, row])
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    single = describer.score(clips[:1], [words])[0]
    assert single == pytest.approx(describer.score(clips, [words] * 3)[0], rel=1e-6)


def test_step_wise_mean_pool_reproduces_the_unrolled_logits(tmp_path):
    steps, words, stages = 8, [4, 2, 9], ("factored", "2-layer")
    shapes = {"mean_fc7": [1, FEATURE_DIM], "cont_sentence": [steps, 1],
              "input_sentence": [steps, 1], "target_sentence": [steps, 1]}
    unrolled, weights = trained_like_weights(
        tmp_path, os.path.join(NETS, "video_meanpool.prototxt"), stages, shapes)
    describer = VideoDescriber(os.path.join(NETS, "video_meanpool_deploy.prototxt"), weights,
                               VOCABULARY, stages)
    frames = videos(1)[0]
    inputs = np.zeros((steps, 1), np.float32)
    inputs[1:len(words) + 1, 0] = words
    cont = np.ones((steps, 1), np.float32)
    cont[0] = 0
    logits = unrolled_logits(unrolled, {
        "mean_fc7": torch.as_tensor(frames.mean(axis=0))[None],
        "cont_sentence": torch.as_tensor(cont), "input_sentence": torch.as_tensor(inputs),
        "target_sentence": torch.zeros(steps, 1)})
    expected = torch.log_softmax(logits, dim=1)[:len(words) + 1]
    got = forced_log_probs(describer, [frames], words)[:, 0]
    torch.testing.assert_close(torch.as_tensor(got), expected, rtol=1e-5, atol=1e-5)


@pytest.fixture
def describer_files(tmp_path):
    shapes = {"cont_sentence": [8, 1], "input_sentence": [8, 1], "target_sentence": [8, 1],
              "stage_indicator": [8, 1], "frame_fc7": [8, 1, FEATURE_DIM]}
    _, weights = trained_like_weights(tmp_path, os.path.join(NETS, "s2vt.prototxt"),
                                      ("factored", "2-layer"), shapes)
    vocabulary = tmp_path / "vocabulary.txt"
    VOCABULARY.save(str(vocabulary))
    features = tmp_path / "features.h5"
    write_features(str(features), {"vid%d" % (i + 7): v for i, v in enumerate(videos(3))})
    return ["--weights", weights, "--vocabulary", str(vocabulary), "--net",
            os.path.join(NETS, "s2vt_deploy.prototxt"), "--features", str(features)]


def test_describe_writes_text_and_coco_results(tmp_path, describer_files, capsys):
    assert run(describe.main, describer_files + ["vid7", "vid9", "--max-length", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["vid7", "vid9"]
    out = tmp_path / "results.json"
    for strategy in ([], ["--beam", "3"], ["--temperature", "2", "--samples", "3"]):
        assert run(describe.main, describer_files + ["vid7", "vid8", "--format", "coco", "-o",
                                                     str(out), "--max-length", "5"]
                   + strategy) == 0
        assert [r["image_id"] for r in json.loads(out.read_text())] == [7, 8]


def test_describe_bad_input_gets_one_clear_error(tmp_path, describer_files, capsys):
    wrong_vocabulary = tmp_path / "small.txt"
    Vocabulary(["<unk>", "a"]).save(str(wrong_vocabulary))
    bad_h5 = tmp_path / "bad.h5"
    bad_h5.write_text("not hdf5")
    cases = [
        (["vid99"], "no features for video(s) vid99"),
        (["vid7", "--vocabulary", str(wrong_vocabulary)], "wrong vocabulary file?"),
        (["vid7", "--weights", str(tmp_path / "none.caffemodel")], "weights file not found"),
        (["vid7", "--features", str(bad_h5)], "not an HDF5 features file"),
        (["vid7", "--net", os.path.join(NETS, "lrcn_caption_deploy.prototxt"), "--stage",
          "word,factored,2-layer"], "must take"),
    ]
    for extra, message in cases:
        assert run(describe.main, describer_files + extra) == 1
        err = capsys.readouterr().err
        assert err.count("error:") == 1 and message in err and "Traceback" not in err, err
    assert run(describe.main, describer_files + ["vid7", "--beam", "0"]) == 2
    assert run(describe.main, describer_files + ["vid7", "--samples", "2"]) == 2
