"""The bundled video dataset's generator (lrcn_apps/video/synthetic_dataset.py)."""

import os

import numpy as np

from lrcn_apps.video import synthetic_dataset as dataset
from lrcn_apps.video.sentences import read_sentences

from helpers import ROOT


def test_time_reversed_actions_visit_the_same_positions():
    """The claim the dataset is built on: the mean of the frames cannot tell the actions of a
    pair apart, their order can."""
    rng = np.random.default_rng(0)
    for frames in range(*dataset.FRAME_COUNT_RANGE):
        towards = dataset.subject_path("approaches", frames, 0.7, rng)
        away = dataset.subject_path("leaves", frames, 0.7, rng)
        np.testing.assert_allclose(towards[::-1], away)
        clockwise = dataset.subject_path("circles clockwise", frames, 0.7, rng)
        anticlockwise = dataset.subject_path("circles anticlockwise", frames, 0.7, rng)
        np.testing.assert_allclose(clockwise.mean(axis=0), anticlockwise.mean(axis=0),
                                   atol=1e-9)
        assert not np.allclose(clockwise, anticlockwise)
    first = dataset.VideoTuple("red square", "approaches", "green circle")
    second = dataset.VideoTuple("red square", "leaves", "green circle")
    a, b = dataset.render_video(first, 0, 7), dataset.render_video(second, 0, 7)
    assert len(a) == len(b)
    np.testing.assert_array_equal(a, b[::-1])               # the same frames, reversed
    np.testing.assert_array_equal(a, dataset.render_video(first, 0, 7))   # deterministic


def test_bundled_sentences_match_the_generator():
    videos = dataset.dataset_videos()
    assert len(videos) == 512
    for split in ("train", "val", "test"):
        sentences = read_sentences(os.path.join(ROOT, "data", "video_actions",
                                                "sentences_%s.txt" % split))
        expected = [(video, text) for video, name, video_tuple in videos if name == split
                    for text in video_tuple.sentences()]
        assert [(s.video, s.text) for s in sentences] == expected


def test_json_sentences_in_msr_vtt_form(tmp_path):
    path = tmp_path / "videodatainfo.json"
    path.write_text('{"videos": [], "sentences": [{"video_id": "video7", "caption": "a man '
                    'sings", "sen_id": 3}, {"video_id": "video7", "caption": "someone sings"}]}')
    sentences = read_sentences(str(path))
    assert [(s.video, s.text) for s in sentences] == [("video7", "a man sings"),
                                                      ("video7", "someone sings")]
