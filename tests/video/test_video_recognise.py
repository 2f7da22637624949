"""lrcn-video-recognise: the recogniser's step-wise deploy net over many videos at once."""

import os

import h5py
import numpy as np

from lrcn_apps.video import recogniser
from lrcn_apps.video.features import write_features
from lrcn_apps.video.recogniser import Recogniser

from helpers import ROOT, run
from test_video_describe import trained_like_weights, videos

NETS = os.path.join(ROOT, "nets")


def test_batched_recognition_equals_one_video_at_a_time_and_writes_label_vectors(
        tmp_path, capsys):
    shapes = {"cont": [12, 1], "frame_fc7": [12, 1, 192], "subject": [12, 1],
              "action": [12, 1], "object": [12, 1]}
    _, weights = trained_like_weights(tmp_path, os.path.join(NETS, "video_recogniser.prototxt"),
                                      ("test-on-val",), shapes)
    model = Recogniser(os.path.join(NETS, "video_recogniser_deploy.prototxt"), weights)
    clips = videos(4)
    together = model(clips)
    for row, clip in enumerate(clips):
        alone = model([clip])
        for slot in range(3):
            np.testing.assert_allclose(together[slot][row], alone[slot][0], rtol=1e-5)
    features = tmp_path / "features.h5"
    write_features(str(features), {"vid%d" % (n + 1): clip for n, clip in enumerate(clips)})
    tuples = tmp_path / "tuples.txt"
    tuples.write_text("".join("vid%d\ts%d\ta%d\to%d\n" % (n + 1, n, n, n) for n in range(4)))
    argv = ["--net", os.path.join(NETS, "video_recogniser_deploy.prototxt"), "--weights",
            weights, "--features", str(features), "--tuples", str(tuples), "--out",
            str(tmp_path / "labels")]
    assert run(recogniser.main, argv) == 0
    assert "recogniser accuracy over 4 videos" in capsys.readouterr().out
    with h5py.File(tmp_path / "labels" / "labels_probs.h5", "r") as probs:
        assert probs["vid1"].shape == (1, 12)              # 4 + 4 + 4 labels
        np.testing.assert_allclose(np.asarray(probs["vid1"]).sum(), 3.0, rtol=1e-5)
    with h5py.File(tmp_path / "labels" / "labels_sequence.h5", "r") as sequence:
        assert sequence["vid2"].shape == (3, 12)
    assert run(recogniser.main, argv) == 1                # never overwritten without --force
    assert "pass --force" in capsys.readouterr().err
    tuples.write_text("vid1\tred\tleaves\tbox\n")
    assert run(recogniser.main, argv + ["--force"]) == 1
    assert "predicts 4 subject labels but the slots list 1" in capsys.readouterr().err
