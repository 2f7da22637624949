"""S2VT's stream layout (lrcn_apps/video/streams.py, lrcn-video-data)."""

import json
import os

import h5py
import numpy as np
import pytest

from compiler import parse_text
from runtime.net import Net
from lrcn_apps.video import prepare
from lrcn_apps.video.features import read_features
from lrcn_apps.video.recogniser import label_vectors
from lrcn_apps.video.streams import s2vt_steps

from helpers import FEATURE_NET, TUPLES, run, write_frame_folders, write_lines


def test_one_pair_is_written_as_s2vt_writes_it():
    streams, kept = s2vt_steps(3, [5, 6], 8)
    assert kept == 3
    assert streams == {"cont_sentence": [0, 1, 1, 1, 1, 1, 0, 0],
                       "input_sentence": [0, 0, 0, 0, 5, 6, 0, 0],
                       "target_sentence": [-1, -1, -1, 5, 6, 0, -1, -1],
                       "stage_indicator": [0, 0, 0, 1, 1, 1, 1, 1]}


def test_frames_are_cut_first_when_the_pair_is_too_long():
    streams, kept = s2vt_steps(10, [5, 6, 7], 8)
    assert kept == 4                                        # 8 - (3 words + EOS)
    assert streams["cont_sentence"] == [0] + [1] * 7
    assert streams["target_sentence"] == [-1] * 4 + [5, 6, 7, 0]
    long_sentence, kept = s2vt_steps(2, list(range(1, 30)), 10)
    # A sentence that alone does not fit is cut to T - 2 words, leaving one frame.
    assert kept == 1 and long_sentence["target_sentence"] == [-1] + list(range(1, 9)) + [0]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """lrcn-video-data over 3 frame-folder videos, 2 sentences each: 2 streams x 20 steps,
    files of 7 rows (so batches straddle files, as S2VT's 1000-row files do)."""
    root = tmp_path_factory.mktemp("video_data")
    videos = root / "videos"
    lines = write_frame_folders(str(videos))
    out = root / "prepared"
    assert run(prepare.main, [
        "--videos", str(videos), "--sentences", "train=" + write_lines(root / "s.txt", lines),
        "--net", FEATURE_NET, "--blob", "pool_frame", "--streams", "2", "--steps", "20",
        "--max-words", "10", "--rows-per-file", "7", "--out", str(out)]) == 0
    return out


def test_every_batch_holds_one_video_per_stream(prepared):
    features = read_features(str(prepared / "features.h5"))
    order = [line.split("\t") for line in
             (prepared / "s2vt" / "train_vidid_order.txt").read_text().splitlines()]
    assert len(order) == 6                                    # 6 pairs = 3 batches of 2
    net = Net(parse_text(
        'layer { name: "data" type: "HDF5Data" top: "cont_sentence" top: "input_sentence" '
        'top: "target_sentence" top: "stage_indicator" top: "frame_fc7" hdf5_data_param { '
        'source: "%s" batch_size: 20 } }'
        % (prepared / "s2vt" / "train_batches" / "hdf5_chunk_list.txt")), phase="TRAIN")
    assert len((prepared / "s2vt" / "train_batches" / "hdf5_chunk_list.txt")
               .read_text().split()) == 9                     # 60 rows in files of 7
    for batch in range(3):
        blobs = {name: value.numpy() for name, value in net.run().items()}
        for stream in range(2):
            video, words, frames, _ = order[batch * 2 + stream]
            words = int(words)
            # One pair (12 frames + 8 words + EOS > 20 steps) loses its last frame.
            expected, frames = s2vt_steps(int(frames), [0] * words, 20)
            for name in ("cont_sentence", "stage_indicator"):
                np.testing.assert_array_equal(blobs[name][:, stream], expected[name])
            target = blobs["target_sentence"][:, stream]
            inputs = blobs["input_sentence"][:, stream]
            assert (target[:frames] == -1).all() and target[frames + words] == 0
            assert (target[frames + words + 1:] == -1).all()
            np.testing.assert_array_equal(inputs[frames + 1:frames + words + 1],
                                          target[frames:frames + words])
            assert (inputs[:frames + 1] == 0).all() and (inputs[frames + words + 1:] == 0).all()
            np.testing.assert_allclose(blobs["frame_fc7"][:frames, stream],
                                       features[video][:frames])
            assert not blobs["frame_fc7"][frames:, stream].any()


def test_mean_pool_rows_follow_the_sentence_streams(prepared):
    features = read_features(str(prepared / "features.h5"))
    order = [line.split("\t")[0] for line in
             (prepared / "s2vt" / "train_vidid_order.txt").read_text().splitlines()]
    with h5py.File(prepared / "meanpool" / "train_mean" / "batch_0.h5", "r") as means:
        np.testing.assert_allclose(means["mean_fc7"][...],
                                   [features[video].mean(axis=0) for video in order], rtol=1e-6)
    with h5py.File(prepared / "meanpool" / "train_sentences" / "batch_0.h5", "r") as sentences:
        assert sentences["cont_sentence"].shape == (30, 2)


def test_vocabulary_features_and_references(prepared):
    words = (prepared / "vocabulary.txt").read_text().split()
    assert words[0] == "<unk>" and "approaches" in words
    references = json.loads((prepared / "train_references.json").read_text())
    assert [image["id"] for image in references["images"]] == [1, 2, 3]
    assert len(references["annotations"]) == 6
    assert read_features(str(prepared / "features.h5"))["vid1"].shape[1] == 192
    summary = json.loads((prepared / "summary.json").read_text())
    assert summary["splits"]["train"]["batches"] == 3
    assert summary["splits"]["train"]["frames_truncated"] == 1


def test_bad_inputs_get_one_clear_error(tmp_path, capsys, prepared):
    videos = tmp_path / "videos"
    lines = write_frame_folders(str(videos), count=1)
    good = write_lines(tmp_path / "good.txt", lines)
    common = ["--videos", str(videos), "--net", FEATURE_NET, "--blob", "pool_frame",
              "--out", str(tmp_path / "out")]
    cases = [
        (write_lines(tmp_path / "tabless.txt", ["vid1\tfine", "vid1 no tab here"]),
         "tabless.txt:2: expected 'video_id<TAB>sentence'"),
        (write_lines(tmp_path / "missing.txt", ["vid1\ta red square", "vid9\ta red square"]),
         "missing.txt:2: no video 'vid9'"),
        (write_lines(tmp_path / "bad.json", ['{"sentences": [{"video_id": "vid1"}]}']),
         "bad.json: sentences[0]: needs a 'video_id' and a non-empty 'caption'"),
        (write_lines(tmp_path / "noid.txt", ["clip\ta red square"]), "no trailing digits"),
    ]
    for path, message in cases:
        assert run(prepare.main, ["--sentences", "train=" + path] + common) == 1
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if "error" in line]
        assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, err
    assert not os.path.exists(tmp_path / "out")
    # An existing output is never replaced without --force.
    before = sorted(os.listdir(prepared))
    assert run(prepare.main, ["--sentences", "train=" + good, "--videos", str(videos), "--net",
                              FEATURE_NET, "--blob", "pool_frame", "--out", str(prepared)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert sorted(os.listdir(prepared)) == before
    # Usage errors exit 2.
    assert run(prepare.main, ["--sentences", "train=" + good, "--out", "x"]) == 2
    assert run(prepare.main, ["--sentences", "train=" + good, "--videos", str(videos), "--net",
                              FEATURE_NET, "--blob", "pool_frame", "--steps", "0",
                              "--out", "x"]) == 2


def test_recogniser_streams_label_each_video_at_its_last_frame(tmp_path, prepared):
    tuples = write_lines(tmp_path / "tuples.txt", [
        "vid%d\t%s\t%s\t%s" % (n + 1, t.subject, t.action, t.object)
        for n, t in enumerate(TUPLES)])
    out = tmp_path / "with_tuples"
    sentences = write_lines(tmp_path / "s.txt", [
        "vid%d\t%s" % (n + 1, t.sentences()[0]) for n, t in enumerate(TUPLES)])
    assert run(prepare.main, ["--features", str(prepared / "features.h5"), "--sentences",
                              "train=" + sentences, "--tuples", tuples, "--streams", "2",
                              "--out", str(out)]) == 0
    slots = json.loads((out / "recogniser" / "slots.json").read_text())
    features = read_features(str(prepared / "features.h5"))
    with h5py.File(out / "recogniser" / "train_batches" / "batch_0.h5", "r") as data:
        steps = max(len(v) for v in features.values())
        assert data["cont"].shape == (2 * steps, 2)            # 3 videos + 1 duplicate
        seen = set()
        for batch in range(2):
            for stream in range(2):
                rows = slice(batch * steps, (batch + 1) * steps)
                labelled = np.flatnonzero(data["action"][rows, stream] >= 0)
                assert len(labelled) == 1
                frames = int(labelled[0]) + 1
                video = next(v for v, f in features.items()
                             if len(f) == frames and np.allclose(
                                 data["frame_fc7"][rows, stream][:frames], f))
                number = int(video[3:]) - 1
                assert slots["action"][int(data["action"][rows, stream][frames - 1])] \
                    == TUPLES[number].action
                np.testing.assert_array_equal(data["cont"][rows, stream][:frames],
                                              [0] + [1] * (frames - 1))
                seen.add(video)
        assert seen == {"vid1", "vid2", "vid3"}


def test_label_vectors_of_the_tacos_variants():
    sequence, best, probs = label_vectors([np.array([0.1, 0.9]), np.array([0.6, 0.3, 0.1])])
    np.testing.assert_array_equal(sequence, [[0, 1, 0, 0, 0], [0, 0, 1, 0, 0]])
    np.testing.assert_array_equal(best, [[0, 1, 1, 0, 0]])
    np.testing.assert_allclose(probs, [[0.1, 0.9, 0.6, 0.3, 0.1]])


def test_bad_tuples_are_named_by_line(tmp_path, capsys, prepared):
    tuples = write_lines(tmp_path / "tuples.txt", ["vid1\ta\tb\tc", "vid2\tonly two"])
    sentences = write_lines(tmp_path / "s.txt", ["vid1\ta red square"])
    assert run(prepare.main, ["--features", str(prepared / "features.h5"), "--sentences",
                              "train=" + sentences, "--tuples", tuples,
                              "--out", str(tmp_path / "out")]) == 1
    assert "tuples.txt:2: expected 'video<TAB>subject<TAB>action<TAB>object'" \
        in capsys.readouterr().err
