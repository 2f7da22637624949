"""lrcn-caption-data end to end on a tiny COCO-format dataset (lrcn_apps.caption.prepare)."""

import json
import os

import h5py
import numpy as np
import pytest

from lrcn_apps.caption import prepare
from lrcn_apps.caption.text import Vocabulary, tokenize

TRAIN_CAPTIONS = {
    1: ["A red circle.", "a red circle on the left"],
    2: ["A blue square.", "a blue square on the right"],
    3: ["A red square.", "a red square, small"],
}
VAL_CAPTIONS = {4: ["A blue circle.", "a blue thing"]}


def write_coco(path, captions, first_annotation_id=1):
    images = [{"id": image_id, "file_name": "im_%d.png" % image_id} for image_id in captions]
    annotations = []
    for image_id, texts in captions.items():
        for text in texts:
            annotations.append({"image_id": image_id, "id": first_annotation_id + len(annotations),
                                "caption": text})
    path.write_text(json.dumps({"images": images, "annotations": annotations}))


@pytest.fixture
def dataset(tmp_path, monkeypatch):
    """A tiny dataset in tmp_path, which is also the working directory."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "images").mkdir()
    for image_id in list(TRAIN_CAPTIONS) + list(VAL_CAPTIONS):
        (tmp_path / "images" / ("im_%d.png" % image_id)).write_bytes(b"not read")
    write_coco(tmp_path / "train.json", TRAIN_CAPTIONS)
    write_coco(tmp_path / "val.json", VAL_CAPTIONS, first_annotation_id=100)
    return tmp_path


def base_arguments(*extra):
    return ["--captions", "train=train.json", "--captions", "val=val.json",
            "--images", "images", "--max-words", "5", "--streams", "2", "--min-count", "2",
            "--out", "out"] + list(extra)


def read_h5(path):
    with h5py.File(path, "r") as h5_file:
        return {name: h5_file[name][...] for name in h5_file}


def leftovers(folder):
    return [name for name in os.listdir(folder) if ".tmp-" in name]


def test_aligned_outputs_by_hand(dataset, capsys):
    assert prepare.main(base_arguments("--no-shuffle")) == 0
    out = dataset / "out"
    vocabulary = Vocabulary.load(str(out / "vocabulary.txt"))
    # Train counts: a 6, red 4, square 4, blue 2, circle 2, left/on/right/the 2 ... min 2.
    assert vocabulary.words[:4] == ["<unk>", "a", "red", "square"]
    assert "small" not in vocabulary and "thing" not in vocabulary
    folder = out / "train_aligned_5_batches"
    assert (folder / "hdf5_chunk_list.txt").read_text() == \
        "out/train_aligned_5_batches/batch_0.h5\n"
    arrays = read_h5(str(folder / "batch_0.h5"))
    # 6 train pairs in file order, 2 streams -> 3 batches of 5 x 2.
    assert arrays["input_sentence"].shape == (15, 2)
    index = vocabulary.net_index
    first = [index(word) for word in ("a", "red", "circle")]
    second = [index(word) for word in ("a", "red", "circle", "on")]  # cut at 5 steps
    np.testing.assert_array_equal(arrays["cont_sentence"][:5].T,
                                  [[0, 1, 1, 1, 0], [0, 1, 1, 1, 1]])
    np.testing.assert_array_equal(arrays["input_sentence"][:5].T,
                                  [[0] + first + [-1], [0] + second])
    np.testing.assert_array_equal(arrays["target_sentence"][:5].T,
                                  [first + [0, -1], second + [index("the")]])
    image_lines = (folder / "image_list.with_dummy_labels.txt").read_text().splitlines()
    assert image_lines == ["images/im_1.png 0", "images/im_1.png 0", "images/im_2.png 0",
                           "images/im_2.png 0", "images/im_3.png 0", "images/im_3.png 0"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["splits"]["train"]["aligned"]["truncated"] == 3
    assert summary["net_vocabulary_size"] == len(vocabulary) + 1
    assert leftovers(dataset) == []
    assert "train: 3 images, 6 captions" in capsys.readouterr().out


def test_shuffled_streams_stay_aligned_with_the_image_list(dataset):
    assert prepare.main(base_arguments("--unaligned")) == 0
    out = dataset / "out"
    vocabulary = Vocabulary.load(str(out / "vocabulary.txt"))
    folder = out / "train_aligned_5_batches"
    arrays = read_h5(str(folder / "batch_0.h5"))
    image_lines = (folder / "image_list.with_dummy_labels.txt").read_text().splitlines()
    num_streams, steps = 2, 5
    for line_number, line in enumerate(image_lines):
        batch, stream = divmod(line_number, num_streams)
        image_id = int(line.split()[0].split("_")[1].split(".")[0])
        words = arrays["input_sentence"][batch * steps + 1:(batch + 1) * steps, stream]
        decoded = vocabulary.decode([int(w) for w in words if w >= 0] + [0])
        expected = [[w if w in vocabulary else "<unk>" for w in tokenize(c)][:steps - 1]
                    for c in TRAIN_CAPTIONS[image_id]]
        assert decoded in expected
    unaligned = read_h5(str(out / "train_unaligned_batches" / "batch_0.h5"))
    assert unaligned["cont_sentence"].shape[0] % steps == 0
    assert int((unaligned["cont_sentence"] == 0).sum() -
               (unaligned["input_sentence"] == -1).sum()) == 6  # one start per sentence


def test_val_split_reuses_the_train_vocabulary_and_pads_with_a_duplicate(dataset):
    assert prepare.main(base_arguments()) == 0
    out = dataset / "out"
    val = read_h5(str(out / "val_aligned_5_batches" / "batch_0.h5"))
    assert val["input_sentence"].shape == (5, 2)
    references = json.loads((out / "val_references.json").read_text())
    assert references["images"] == [{"id": 4, "file_name": "im_4.png"}]
    assert [a["caption"] for a in references["annotations"]] == VAL_CAPTIONS[4]
    assert [a["id"] for a in references["annotations"]] == [100, 101]


def test_split_id_files(dataset):
    write_coco(dataset / "all.json", {**TRAIN_CAPTIONS, **VAL_CAPTIONS})
    (dataset / "train.txt").write_text("3\n1\n2\n")
    (dataset / "test.txt").write_text("4\n")
    code = prepare.main(["--captions", "all.json", "--images", "images",
                         "--split-ids", "train=train.txt", "--split-ids", "test=test.txt",
                         "--streams", "2", "--min-count", "1", "--no-shuffle", "--out", "o"])
    assert code == 0
    lines = (dataset / "o" / "train_aligned_20_batches" /
             "image_list.with_dummy_labels.txt").read_text().splitlines()
    assert lines[0] == "images/im_3.png 0"
    assert (dataset / "o" / "test_references.json").exists()


def test_random_split_rule(dataset):
    write_coco(dataset / "all.json", {**TRAIN_CAPTIONS, **VAL_CAPTIONS})
    code = prepare.main(["--captions", "all.json", "--images", "images",
                         "--split", "train=0.75,val=0.25", "--streams", "2",
                         "--min-count", "1", "--out", "o"])
    assert code == 0
    summary = json.loads((dataset / "o" / "summary.json").read_text())
    assert summary["splits"]["train"]["images"] == 3
    assert summary["splits"]["val"]["images"] == 1


def assert_one_error_line(capsys, *fragments):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("lrcn-caption-data: error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


def test_malformed_json_is_a_user_error(dataset, capsys):
    (dataset / "train.json").write_text('{"images": [}')
    assert prepare.main(base_arguments()) == 1
    assert_one_error_line(capsys, "train.json:1:", "not valid JSON")
    assert not (dataset / "out").exists() and leftovers(dataset) == []


def test_annotation_with_unknown_image_id_is_a_user_error(dataset, capsys):
    document = json.loads((dataset / "train.json").read_text())
    document["annotations"][2]["image_id"] = 99
    (dataset / "train.json").write_text(json.dumps(document))
    assert prepare.main(base_arguments()) == 1
    assert_one_error_line(capsys, "train.json", "annotations[2]", "image id 99")
    assert not (dataset / "out").exists()


def test_missing_image_file_is_a_user_error_unless_allowed(dataset, capsys):
    (dataset / "images" / "im_2.png").unlink()
    assert prepare.main(base_arguments()) == 1
    assert_one_error_line(capsys, "images/im_2.png", "image id 2", "--allow-missing-images")
    assert prepare.main(base_arguments("--allow-missing-images")) == 0
    summary = json.loads((dataset / "out" / "summary.json").read_text())
    assert summary["splits"]["train"]["images"] == 2


def test_caption_without_words_is_a_user_error(dataset, capsys):
    document = json.loads((dataset / "val.json").read_text())
    document["annotations"][1]["caption"] = " . "
    (dataset / "val.json").write_text(json.dumps(document))
    assert prepare.main(base_arguments()) == 1
    assert_one_error_line(capsys, "val.json", "annotations[1]", "image id 4", "no words")


def test_bad_split_id_line_names_file_and_line(dataset, capsys):
    (dataset / "ids.txt").write_text("1\nseven\n")
    code = prepare.main(["--captions", "train.json", "--images", "images",
                         "--split-ids", "train=ids.txt", "--out", "o"])
    assert code == 1
    assert_one_error_line(capsys, "ids.txt:2:", "'seven'")


def test_existing_output_needs_overwrite_and_is_replaced_whole(dataset, capsys):
    (dataset / "out").mkdir()
    (dataset / "out" / "stale.txt").write_text("old")
    assert prepare.main(base_arguments()) == 1
    assert_one_error_line(capsys, "already exists", "--overwrite")
    assert prepare.main(base_arguments("--overwrite")) == 0
    assert not (dataset / "out" / "stale.txt").exists()
    assert (dataset / "out" / "vocabulary.txt").exists()
    assert leftovers(dataset) == []


@pytest.mark.parametrize("arguments", [
    ["--captions", "train.json", "--images", "images", "--out", "o"],  # no split given
    ["--captions", "val=val.json", "--images", "images", "--out", "o"],  # no train, no vocab
    ["--captions", "train=train.json", "--images", "a", "--images", "b", "--images", "c",
     "--out", "o"],
    base_arguments("--streams", "0"),
    ["--captions", "train=train.json", "--images", "images", "--split", "train=2",
     "--out", "o"],
])
def test_bad_usage_exits_2(dataset, arguments):
    with pytest.raises(SystemExit) as exit_info:
        prepare.main(arguments)
    assert exit_info.value.code == 2


def test_help_shows_an_example(capsys):
    with pytest.raises(SystemExit) as exit_info:
        prepare.main(["--help"])
    assert exit_info.value.code == 0
    assert "examples:" in capsys.readouterr().out
