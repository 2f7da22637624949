"""The committed synthetic shapes dataset: regenerates identically, its captions follow its
scenes, and the committed prepared streams are what data/caption_shapes/README.md's command
produces (lrcn_apps.caption.shapes_dataset, lrcn_apps.caption.prepare)."""

import json
import os

import h5py
import numpy as np
import pytest
from PIL import Image

from lrcn_apps.caption import prepare, shapes_dataset, streams
from lrcn_apps.caption.text import Vocabulary, tokenize

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(REPO, "data", "caption_shapes")
PREPARED = os.path.join(DATA, "prepared")
SPLITS = ("train", "val", "test")
MAX_WORDS, NUM_STREAMS = 16, 50


def load_split(directory, split):
    with open(os.path.join(directory, "captions_%s.json" % split), encoding="utf-8") as f:
        return json.load(f)


def pixels(path):
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("shapes"))
    shapes_dataset.generate(out)
    return out


def test_dataset_regenerates_identically(regenerated):
    for split in SPLITS:
        committed = load_split(DATA, split)
        assert load_split(regenerated, split) == committed
        for image in committed["images"]:
            np.testing.assert_array_equal(
                pixels(os.path.join(regenerated, "images", image["file_name"])),
                pixels(os.path.join(DATA, "images", image["file_name"])),
                err_msg=image["file_name"])


def test_split_sizes_and_five_captions_per_image():
    sizes = {split: len(load_split(DATA, split)["images"]) for split in SPLITS}
    assert sizes == dict(shapes_dataset.DEFAULT_SPLITS)
    for split in SPLITS:
        document = load_split(DATA, split)
        per_image = {}
        for annotation in document["annotations"]:
            per_image[annotation["image_id"]] = per_image.get(annotation["image_id"], 0) + 1
        assert set(per_image.values()) == {shapes_dataset.CAPTIONS_PER_IMAGE}


def test_captions_name_the_objects_in_the_image():
    document = load_split(DATA, "train")
    scenes = {image["id"]: image["scene"] for image in document["images"]}
    for annotation in document["annotations"]:
        tokens = tokenize(annotation["caption"])
        for item in scenes[annotation["image_id"]]["objects"]:
            assert item["color"] in tokens and item["shape"] in tokens, annotation


def test_vocabulary_keeps_every_template_word():
    vocabulary = Vocabulary.load(os.path.join(PREPARED, "vocabulary.txt"))
    assert shapes_dataset.template_words() <= set(vocabulary.words)


def test_no_caption_is_cut_at_the_chosen_max_words():
    longest = max(len(tokenize(a["caption"])) for split in SPLITS
                  for a in load_split(DATA, split)["annotations"])
    assert longest + 1 <= MAX_WORDS


def test_committed_streams_match_their_image_lists(monkeypatch):
    monkeypatch.chdir(REPO)  # list files hold paths relative to the repository root
    vocabulary = Vocabulary.load(os.path.join(PREPARED, "vocabulary.txt"))
    document = load_split(DATA, "train")
    by_file = {image["file_name"]: image["id"] for image in document["images"]}
    captions = {}
    for annotation in document["annotations"]:
        captions.setdefault(annotation["image_id"], []).append(tokenize(annotation["caption"]))
    folder = os.path.join(PREPARED, "train_aligned_%d_batches" % MAX_WORDS)
    packed = streams.read_hdf5_streams(os.path.join(folder, streams.HDF5_LIST_NAME), MAX_WORDS)
    with open(os.path.join(folder, streams.IMAGE_LIST_NAME), encoding="utf-8") as list_file:
        image_lines = list_file.read().splitlines()
    assert len(image_lines) == packed.num_batches * NUM_STREAMS == len(captions) * 5
    for line_number, line in enumerate(image_lines):
        path, label = line.split(" ")
        assert label == "0" and os.path.isfile(path)
        batch, stream = divmod(line_number, NUM_STREAMS)
        inputs = packed.batch(batch)["input_sentence"][:, stream]
        words = vocabulary.decode([int(index) for index in inputs[1:] if index >= 0] + [0])
        assert words in captions[by_file[os.path.basename(path)]]


def test_committed_prepared_output_is_reproduced_by_the_readme_command(tmp_path,
                                                                       monkeypatch):
    monkeypatch.chdir(REPO)
    out = os.path.join(str(tmp_path), "prepared")
    arguments = ["--captions", "train=data/caption_shapes/captions_train.json",
                 "--captions", "val=data/caption_shapes/captions_val.json",
                 "--captions", "test=data/caption_shapes/captions_test.json",
                 "--images", "data/caption_shapes/images",
                 "--max-words", str(MAX_WORDS), "--streams", str(NUM_STREAMS), "--unaligned",
                 "--out", out]
    with open(os.path.join(DATA, "README.md"), encoding="utf-8") as readme:
        readme_text = " ".join(readme.read().replace("\\\n", " ").split())
    assert " ".join(arguments[:-1]) in readme_text
    assert prepare.main(arguments) == 0
    committed_files = sorted(os.path.relpath(os.path.join(root, name), PREPARED)
                             for root, _, names in os.walk(PREPARED) for name in names)
    produced_files = sorted(os.path.relpath(os.path.join(root, name), out)
                            for root, _, names in os.walk(out) for name in names)
    assert produced_files == committed_files
    for relative in committed_files:
        committed, produced = os.path.join(PREPARED, relative), os.path.join(out, relative)
        if relative.endswith(".h5"):
            with h5py.File(committed, "r") as a, h5py.File(produced, "r") as b:
                assert sorted(a) == sorted(b)
                for name in a:
                    np.testing.assert_array_equal(a[name][...], b[name][...])
        elif relative.endswith(streams.HDF5_LIST_NAME):
            # Same files, listed under the temporary --out instead of the committed folder.
            with open(committed) as a, open(produced) as b:
                committed_lines, produced_lines = a.read().split(), b.read().split()
            assert all(line.startswith("data/caption_shapes/prepared/")
                       for line in committed_lines)
            assert [line.split("/")[-2:] for line in committed_lines] == \
                [line.split("/")[-2:] for line in produced_lines]
        else:
            with open(committed, "rb") as a, open(produced, "rb") as b:
                assert a.read() == b.read(), relative
