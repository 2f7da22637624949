"""Stream packing against hand-computed layouts (lrcn_apps.caption.streams)."""

import random

import h5py
import numpy as np
import pytest

from lrcn_apps.caption import streams


def test_sentence_steps_bos_words_eos():
    assert streams.sentence_steps([5, 6, 7]) == {
        "cont_sentence": [0, 1, 1, 1],
        "input_sentence": [0, 5, 6, 7],
        "target_sentence": [5, 6, 7, 0],
    }


def test_aligned_sentence_is_padded_with_zero_and_minus_one():
    assert streams.aligned_sentence_steps([5, 6], max_words=5) == {
        "cont_sentence": [0, 1, 1, 0, 0],
        "input_sentence": [0, 5, 6, -1, -1],
        "target_sentence": [5, 6, 0, -1, -1],
    }


def test_aligned_sentence_is_cut_to_max_words_losing_its_eos():
    assert streams.aligned_sentence_steps([5, 6, 7, 8], max_words=3) == {
        "cont_sentence": [0, 1, 1],
        "input_sentence": [0, 5, 6],
        "target_sentence": [5, 6, 7],
    }


def test_pack_aligned_two_batches_of_two_streams():
    sentences = [[5], [6, 7], [8, 9, 10, 11], []]
    packed = streams.pack_aligned(sentences, num_streams=2, max_words=4)
    assert packed.num_batches == 2 and packed.num_streams == 2
    for array in packed.arrays.values():
        assert array.dtype == np.float32 and array.shape == (8, 2)
    # Batch 0 = sentences 0 (stream 0) and 1 (stream 1); batch 1 = sentences 2 and 3.
    np.testing.assert_array_equal(packed.arrays["cont_sentence"], [
        [0, 0], [1, 1], [0, 1], [0, 0],
        [0, 0], [1, 0], [1, 0], [1, 0]])
    np.testing.assert_array_equal(packed.arrays["input_sentence"], [
        [0, 0], [5, 6], [-1, 7], [-1, -1],
        [0, 0], [8, -1], [9, -1], [10, -1]])
    np.testing.assert_array_equal(packed.arrays["target_sentence"], [
        [5, 6], [0, 7], [-1, 0], [-1, -1],
        [8, 0], [9, -1], [10, -1], [11, -1]])
    np.testing.assert_array_equal(packed.batch(1)["input_sentence"],
                                  packed.arrays["input_sentence"][4:8])


def test_pack_aligned_wants_whole_batches():
    with pytest.raises(ValueError):
        streams.pack_aligned([[5], [6], [7]], num_streams=2, max_words=3)


def test_arrange_aligned_pads_with_distinct_duplicates():
    items = ["a", "b", "c", "d", "e"]
    arranged, duplicates = streams.arrange_aligned(items, 4, random.Random(0), shuffle=False)
    assert duplicates == 3 and len(arranged) == 8
    assert arranged[:5] == items
    assert len(set(arranged[5:])) == 3 and set(arranged[5:]) <= set(items)


def test_arrange_aligned_cycles_when_the_split_is_smaller_than_a_batch():
    arranged, duplicates = streams.arrange_aligned(["a", "b"], 5, random.Random(0))
    assert duplicates == 3 and sorted(arranged).count("a") >= 2
    assert sorted(set(arranged)) == ["a", "b"]


def test_arrange_aligned_exact_multiple_only_shuffles():
    items = list(range(10))
    arranged, duplicates = streams.arrange_aligned(items, 5, random.Random(1))
    assert duplicates == 0 and sorted(arranged) == items and arranged != items


def test_unaligned_streams_take_sentences_as_they_free_up():
    # Lengths with BOS/EOS: 2, 3, 2. Stream 0 gets s0 (rows 0-1) then s2 (rows 2-3);
    # stream 1 gets s1 (rows 0-2); rows are padded to whole batches of T = 3.
    packed = streams.pack_unaligned([[5], [6, 7], [8]], num_streams=2, steps_per_batch=3)
    assert packed.num_batches == 2
    np.testing.assert_array_equal(packed.arrays["cont_sentence"].T, [
        [0, 1, 0, 1, 0, 0],
        [0, 1, 1, 0, 0, 0]])
    np.testing.assert_array_equal(packed.arrays["input_sentence"].T, [
        [0, 5, 0, 8, -1, -1],
        [0, 6, 7, -1, -1, -1]])
    np.testing.assert_array_equal(packed.arrays["target_sentence"].T, [
        [5, 0, 8, 0, -1, -1],
        [6, 7, 0, -1, -1, -1]])


def test_unaligned_sentence_continues_across_the_batch_boundary_with_cont_one():
    packed = streams.pack_unaligned([[5, 6, 7, 8]], num_streams=1, steps_per_batch=2)
    assert packed.batch(1)["cont_sentence"][:, 0].tolist() == [1, 1]
    assert packed.batch(2)["target_sentence"][:, 0].tolist() == [0, -1]


def test_unaligned_placement_order_is_time_then_stream():
    assert streams.unaligned_placements([3, 1, 1, 1], num_streams=2) == [
        (0, 0), (1, 0), (1, 1), (1, 2)]


def test_hdf5_files_hold_whole_batches_and_the_list_names_them(tmp_path, monkeypatch):
    packed = streams.pack_aligned([[5], [6, 7], [8], [9]], num_streams=2, max_words=3)
    folder = tmp_path / "out" / "train_aligned_3_batches"
    folder.mkdir(parents=True)
    listed = streams.write_hdf5_streams(packed, str(folder), "out/train_aligned_3_batches",
                                        batches_per_file=1)
    assert listed == ["out/train_aligned_3_batches/batch_0.h5",
                      "out/train_aligned_3_batches/batch_1.h5"]
    assert (folder / streams.HDF5_LIST_NAME).read_text().splitlines() == listed
    with h5py.File(str(folder / "batch_1.h5"), "r") as h5_file:
        assert sorted(h5_file) == sorted(streams.STREAM_NAMES)
        assert h5_file["input_sentence"].dtype == np.float32
        np.testing.assert_array_equal(h5_file["input_sentence"][...], [[0, 0], [8, 9], [-1, -1]])
    monkeypatch.chdir(tmp_path)  # list paths are relative to the working directory
    read_back = streams.read_hdf5_streams(str(folder / streams.HDF5_LIST_NAME), 3)
    for name in streams.STREAM_NAMES:
        np.testing.assert_array_equal(read_back.arrays[name], packed.arrays[name])


def test_image_list_has_one_dummy_labelled_line_per_sentence(tmp_path):
    path = tmp_path / streams.IMAGE_LIST_NAME
    streams.write_image_list(str(path), ["im/a.png", "im/b.png", "im/a.png"])
    assert path.read_text() == "im/a.png 0\nim/b.png 0\nim/a.png 0\n"
