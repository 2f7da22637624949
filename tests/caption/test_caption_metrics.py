"""Caption metrics against pycocoevalcap's own scorers, and LRCN's retrieval metrics
(lrcn_apps.caption.metrics)."""

import contextlib
import io
import json

import numpy as np
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from lrcn_apps.caption import metrics

needs_java = pytest.mark.skipif(not metrics.java_available(), reason="java not found")

REFERENCES = {
    1: ["A red circle on the left.", "There is a small red circle, on the left side",
        "a little red circle at the left"],
    2: ["Two shapes: a blue square and a green cross.", "a blue square left of a green cross"],
    3: ["The triangle is big and yellow", "A large yellow triangle in the middle."],
}
RESULTS = {1: "A red circle on the left.", 2: "a blue square and a red cross",
           3: "a large yellow triangle at the top"}


def direct_scores(gts, res):
    """pycocoevalcap's scorers called directly, as COCOEvalCap does."""
    with contextlib.redirect_stdout(io.StringIO()):
        bleu, _ = Bleu(4).compute_score(gts, res)
    scores = {"Bleu_%d" % (n + 1): value for n, value in enumerate(bleu)}
    scores["ROUGE_L"] = Rouge().compute_score(gts, res)[0]
    scores["CIDEr"] = Cider().compute_score(gts, res)[0]
    return scores


def test_compute_scores_equals_the_scorers_on_fixed_tokenized_input():
    gts = {1: ["a red circle on the left", "a small red circle"],
           2: ["a blue square above a green cross", "two shapes a blue square and a cross"]}
    res = {1: ["a red circle at the left"], 2: ["a blue square above a red cross"]}
    ours = metrics.compute_scores(gts, res, meteor=False)
    assert set(ours) == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"}
    for name, value in direct_scores(gts, res).items():
        assert ours[name] == pytest.approx(value, abs=1e-12)


def test_lrcn_tokenizer_path_drops_ptb_punctuation():
    assert metrics.lrcn_tokenize_for_scoring("Two shapes: a blue square, a cross.") == \
        "two shapes a blue square a cross"
    gts = {key: [metrics.lrcn_tokenize_for_scoring(c) for c in value]
           for key, value in REFERENCES.items()}
    res = {key: [metrics.lrcn_tokenize_for_scoring(value)] for key, value in RESULTS.items()}
    scores, used = metrics.evaluate_captions(REFERENCES, RESULTS, tokenizer="lrcn",
                                             meteor=False)
    assert used == "lrcn"
    for name, value in direct_scores(gts, res).items():
        assert scores[name] == pytest.approx(value, abs=1e-12)


def test_without_java_auto_falls_back_and_says_so(monkeypatch):
    monkeypatch.setattr(metrics, "java_available", lambda: False)
    notes = []
    scores, used = metrics.evaluate_captions(REFERENCES, RESULTS, tokenizer="auto",
                                             meteor=True, notes=notes)
    assert used == "lrcn" and "METEOR" not in scores
    assert any("java not found" in note and "LRCN's tokenizer" in note for note in notes)
    assert "METEOR skipped: java not found" in notes


@needs_java
def test_ptb_path_equals_the_scorers_on_ptb_tokens():
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in REFERENCES.items()})
    res = tokenizer.tokenize({k: [{"caption": v}] for k, v in RESULTS.items()})
    scores, used = metrics.evaluate_captions(REFERENCES, RESULTS, tokenizer="ptb",
                                             meteor=False)
    assert used == "ptb"
    for name, value in direct_scores(gts, res).items():
        assert scores[name] == pytest.approx(value, abs=1e-12)


@needs_java
def test_meteor_runs_where_java_is_present():
    gts = {1: ["a red circle on the left"], 2: ["a blue square"]}
    scores = metrics.compute_scores(gts, {1: ["a red circle on the left"], 2: ["a cross"]})
    assert 0.0 < scores["METEOR"] < 1.0


# ---------------------------------------------------------------------------- retrieval

def test_retrieval_on_a_hand_made_score_matrix():
    # 3 images, 4 captions; captions 0, 1 belong to image 0, caption 2 to image 1,
    # caption 3 to image 2. Ties inside a column are exact (same value, same normaliser).
    log_p = np.log(np.array([
        [0.50, 0.10, 0.20, 0.30],
        [0.25, 0.10, 0.05, 0.30],
        [0.25, 0.40, 0.35, 0.30],
    ]))
    caption_image = np.array([0, 0, 1, 2])
    result = metrics.retrieval_metrics(log_p, caption_image, recall_at=(1, 2))
    # Caption -> image (0-indexed ranks): c0 ranks image 0 first (0); c1 ranks image 2,
    # then images 0 and 1 tied in index order (1); c2 ranks images 2, 0, 1 (2); c3 ties all
    # three and its image 2 comes last (2). Ranks 0, 1, 2, 2.
    c2i = result["caption_to_image"]
    assert c2i["R@1"] == pytest.approx(1 / 4) and c2i["R@2"] == pytest.approx(2 / 4)
    assert c2i["median_rank"] == pytest.approx(2.5) and c2i["mean_rank"] == pytest.approx(2.25)
    # Image -> caption on p / column mean (column means 1/3, .2, .2, .3):
    # image 0: [1.5, .5, 1, 1]   -> its caption c0 first (0);
    # image 1: [.75, .5, .25, 1] -> order c3, c0, c1, c2: its caption c2 last (3);
    # image 2: [.75, 2, 1.75, 1] -> order c1, c2, c3, c0: its caption c3 third (2).
    i2c = result["image_to_caption"]
    assert i2c["R@1"] == pytest.approx(1 / 3) and i2c["R@2"] == pytest.approx(1 / 3)
    assert i2c["median_rank"] == 3 and i2c["mean_rank"] == pytest.approx(8 / 3)
    assert i2c["queries"] == 3 and c2i["queries"] == 4


def test_image_to_caption_uses_the_normalised_scores():
    # Caption 1 is likely under every image; unnormalised it would rank first for image 0.
    log_p = np.log(np.array([[0.3, 0.5], [0.01, 0.6]]))
    result = metrics.retrieval_metrics(log_p, np.array([0, 1]), recall_at=(1,))
    assert result["image_to_caption"]["R@1"] == 1.0


def test_normalisation_removes_a_per_caption_offset():
    rng = np.random.default_rng(0)
    log_p = rng.normal(-30.0, 4.0, size=(6, 12))
    caption_image = np.repeat(np.arange(6), 2)
    shifted = log_p + rng.normal(0.0, 50.0, size=(1, 12))
    assert metrics.retrieval_metrics(log_p, caption_image) == \
        metrics.retrieval_metrics(shifted, caption_image)


def test_normalisation_survives_very_small_probabilities():
    normalized = metrics.normalized_caption_scores(np.array([[-2000.0], [-2001.0]]))
    assert np.all(np.isfinite(normalized))
    assert normalized[0, 0] - normalized[1, 0] == pytest.approx(1.0)


@pytest.mark.parametrize("log_p, caption_image", [
    (np.zeros((2, 3)), np.array([0, 1])),       # one entry per caption
    (np.zeros((2, 2)), np.array([0, 2])),       # row out of range
    (np.zeros((3, 2)), np.array([0, 1])),       # image 2 has no caption
    (np.full((2, 2), np.nan), np.array([0, 1])),
])
def test_retrieval_input_errors(log_p, caption_image):
    with pytest.raises(ValueError):
        metrics.retrieval_metrics(log_p, caption_image)


# ---------------------------------------------------------------------------- command line

@pytest.fixture
def eval_files(tmp_path):
    annotations = {"images": [{"id": k, "file_name": "%d.png" % k} for k in REFERENCES],
                   "annotations": [{"image_id": k, "id": 10 * k + n, "caption": c}
                                   for k, v in REFERENCES.items() for n, c in enumerate(v)]}
    (tmp_path / "ann.json").write_text(json.dumps(annotations))
    results = [{"image_id": k, "caption": v} for k, v in RESULTS.items()]
    (tmp_path / "res.json").write_text(json.dumps(results))
    np.savez(str(tmp_path / "scores.npz"), log_p=np.log(np.eye(3) * 0.8 + 0.1),
             caption_image=np.arange(3))
    return tmp_path


def test_cli_prints_a_table_and_writes_json(eval_files, capsys):
    out_json = eval_files / "scores.json"
    code = metrics.main(["--results", str(eval_files / "res.json"),
                         "--annotations", str(eval_files / "ann.json"),
                         "--scores", str(eval_files / "scores.npz"),
                         "--tokenizer", "lrcn", "--no-meteor", "--json", str(out_json)])
    assert code == 0
    out = capsys.readouterr().out
    for label in ("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr", "caption->image", "image->caption",
                  "METEOR skipped: --no-meteor"):
        assert label in out
    report = json.loads(out_json.read_text())
    assert report["captions"]["images"] == 3
    assert report["retrieval"]["caption_to_image"]["R@1"] == 1.0


def test_cli_result_for_an_unknown_image_is_a_user_error(eval_files, capsys):
    (eval_files / "res.json").write_text(json.dumps([{"image_id": 9, "caption": "a"}]))
    code = metrics.main(["--results", str(eval_files / "res.json"),
                         "--annotations", str(eval_files / "ann.json"), "--tokenizer", "lrcn"])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "res.json: [0]: image id 9" in err[0]


def test_cli_bad_score_matrix_is_a_user_error(eval_files, capsys):
    np.savez(str(eval_files / "bad.npz"), log_p=np.zeros((2, 2)))
    assert metrics.main(["--scores", str(eval_files / "bad.npz")]) == 1
    assert "missing array(s) caption_image" in capsys.readouterr().err


@pytest.mark.parametrize("arguments", [[], ["--results", "r.json"], ["--tokenizer", "x"]])
def test_cli_bad_usage_exits_2(arguments):
    with pytest.raises(SystemExit) as exit_info:
        metrics.main(arguments)
    assert exit_info.value.code == 2
