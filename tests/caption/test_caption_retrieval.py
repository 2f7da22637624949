"""LRCN's retrieval experiment (lrcn_apps/caption/retrieval.py): the score matrix from
Captioner.score and the metrics of lrcn_apps.caption.metrics over it.

The Markov-chain models come from test_caption_generate (pytest puts this folder on sys.path).
"""

import json
import os

import numpy as np
import pytest
import torch

from lrcn_apps.caption import metrics, retrieval
from lrcn_apps.caption.coco import DataError
from lrcn_apps.caption.generate import Captioner
from lrcn_apps.caption.text import EOS_INDEX
from runtime.net import Net
from test_caption_generate import (DEPLOY, IMAGES, REPO, TRAIN_NET, V, VOCABULARY,
                                   program_markov, random_features, random_table, run_main)

TEST_CAPTIONS = os.path.join(REPO, "data", "caption_shapes", "captions_test.json")


@pytest.fixture(scope="module")
def captioner():
    return Captioner(DEPLOY, None, VOCABULARY)


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    """A .caffemodel saved by the TRAINING net (its fillers: an untrained model)."""
    path = str(tmp_path_factory.mktemp("weights") / "lrcn_caption_iter_0.caffemodel")
    Net(TRAIN_NET, phase="TEST", stages=("factored", "2-layer", "test-on-val")).save(path)
    return path


def write_split(path, images, captions):
    """A COCO caption file: images [(id, file_name)], captions [(image_id, text)]."""
    path.write_text(json.dumps({
        "images": [{"id": image_id, "file_name": name} for image_id, name in images],
        "annotations": [{"image_id": image_id, "id": 100 + index, "caption": text}
                        for index, (image_id, text) in enumerate(captions)]}))
    return str(path)


def test_split_rows_follow_the_file_and_skip_uncaptioned_images(tmp_path):
    path = write_split(tmp_path / "split.json",
                       [(5, "a.png"), (6, "b.png"), (7, "c.png")],
                       [(7, "a red circle"), (5, "a blue square"), (7, "red circle")])
    notes = []
    split = retrieval.load_split(path, image_root="root", notes=notes)
    assert [item.path for item in split.items] == [os.path.join("root", "a.png"),
                                                   os.path.join("root", "c.png")]
    assert [item.image_id for item in split.items] == [5, 7]
    assert split.captions == ["a red circle", "a blue square", "red circle"]
    assert split.caption_image.tolist() == [1, 0, 1]
    assert split.caption_ids == [100, 101, 102]
    assert notes == ["1 image(s) without captions left out"]
    first = retrieval.load_split(path, max_images=1)
    assert ([item.image_id for item in first.items], first.captions) == ([5], ["a blue square"])
    assert first.items[0].path == os.path.join(str(tmp_path), "a.png")


def test_score_matrix_holds_every_pair_whatever_the_batch(captioner):
    program_markov(captioner, random_table(), image_scale=0.1)
    features = random_features(4)
    token_lists = [[5, 9], [], [12, 3, 3, 7], [30], [2, 2]]
    expected = np.array([[captioner.score(features[i:i + 1], [token_lists[j]])[0]
                          for j in range(len(token_lists))] for i in range(len(features))])
    for batch_size in (1, 7, 100):
        log_p = retrieval.score_matrix(captioner, features, token_lists, batch_size)
        assert log_p.shape == (4, 5)
        # float32 matmuls round differently for another stream count: ~1e-6.
        np.testing.assert_allclose(log_p, expected, rtol=1e-5)


def test_a_model_that_reads_the_image_retrieves_perfectly(captioner):
    # Feature m (one-hot) makes word 10 + m likely first; every word is then followed by EOS.
    table = np.zeros((V, V))
    table[:, EOS_INDEX] = 30.0
    table[EOS_INDEX] = 0.0
    table[EOS_INDEX, EOS_INDEX] = -30.0
    images = 5
    program_markov(captioner, table, image_words={m: 10 + m for m in range(images)})
    features = torch.eye(images, 128)
    token_lists = [[10 + m] for m in range(images)] * 2        # two captions per image
    caption_image = np.array(list(range(images)) * 2)
    log_p = retrieval.score_matrix(captioner, features, token_lists, batch_size=8)
    assert np.all(np.argmax(log_p, axis=0) == caption_image)
    report = metrics.retrieval_metrics(log_p, caption_image)
    for direction in ("caption_to_image", "image_to_caption"):
        assert report[direction]["R@1"] == 1.0
        assert report[direction]["median_rank"] == 1


def test_evaluate_encodes_captions_and_scores_the_split(captioner, tmp_path):
    program_markov(captioner, random_table(), image_scale=0.1)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in captioner.image_net.parameters():
            parameter.normal_(0.0, 0.1, generator=generator)
    path = write_split(tmp_path / "split.json",
                       [(581, "test_000581.png"), (582, "test_000582.png")],
                       [(581, "A red triangle."), (582, "a blue zebra"), (581, "the square")])
    split = retrieval.load_split(path, image_root=IMAGES)
    report = retrieval.evaluate(captioner, split, batch_size=4)
    features = captioner.image_features(captioner.load_images([i.path for i in split.items]))
    vocabulary = captioner.vocabulary
    # "zebra" is not in the vocabulary: it is scored as <unk>.
    assert vocabulary.encode("a blue zebra")[-1] == 1
    expected = [[captioner.score(features[i:i + 1], [vocabulary.encode(text)])[0]
                 for text in split.captions] for i in range(2)]
    np.testing.assert_allclose(report["log_p"], expected, rtol=1e-5)
    assert report["retrieval"] == metrics.retrieval_metrics(report["log_p"],
                                                            split.caption_image)


def cli_args(snapshot):
    return ["--weights", snapshot, "--net", DEPLOY, "--vocabulary", VOCABULARY]


def test_cli_reports_and_saves_the_matrix_for_lrcn_caption_eval(snapshot, capsys, tmp_path):
    scores, report = tmp_path / "scores.npz", tmp_path / "retrieval.json"
    status, out, err = run_main(retrieval.main, cli_args(snapshot) + [
        "--annotations", TEST_CAPTIONS, "--image-root", IMAGES, "--max-images", "3",
        "--batch-size", "16", "--save-scores", str(scores), "--json", str(report)], capsys)
    assert status == 0, err
    assert "retrieval (3 images, 15 captions" in out
    with np.load(scores) as saved:
        log_p, caption_image = saved["log_p"], saved["caption_image"]
        assert saved["image_ids"].tolist() == [581, 582, 583]
    assert log_p.shape == (3, 15) and caption_image.tolist() == sorted([0, 1, 2] * 5)
    # One entry checked against the library directly.
    model = Captioner(DEPLOY, snapshot, VOCABULARY)
    features = model.image_features(model.load_images([os.path.join(IMAGES,
                                                                     "test_000582.png")]))
    first_caption = json.load(open(TEST_CAPTIONS))["annotations"][0]["caption"]
    assert log_p[1, 0] == pytest.approx(
        model.score(features, [model.vocabulary.encode(first_caption)])[0], rel=1e-5)
    # lrcn-caption-eval recomputes the same metrics from the saved matrix.
    again = tmp_path / "again.json"
    assert metrics.main(["--scores", str(scores), "--json", str(again)]) == 0
    capsys.readouterr()
    assert json.loads(again.read_text())["retrieval"] == \
        json.loads(report.read_text())["retrieval"]


def test_cli_errors_are_one_clear_message(snapshot, capsys, tmp_path):
    status, out, err = run_main(retrieval.main, cli_args(snapshot) + [
        "--annotations", str(tmp_path / "missing.json")], capsys)
    assert status == 1 and "missing.json: no such file" in err and "Traceback" not in err
    path = write_split(tmp_path / "split.json", [(1, "nowhere.png")], [(1, "a red circle")])
    status, out, err = run_main(retrieval.main, cli_args(snapshot) + [
        "--annotations", path], capsys)
    assert status == 1 and "nowhere.png" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as stop:
        retrieval.main(cli_args(snapshot) + ["--annotations", path, "--max-images", "0"])
    assert stop.value.code == 2


def test_load_split_refuses_a_split_without_captions(tmp_path):
    path = write_split(tmp_path / "split.json", [(1, "a.png")], [])
    with pytest.raises(DataError, match="no captioned images"):
        retrieval.load_split(path)
