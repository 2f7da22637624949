"""LRCN's tokenizer and vocabulary (lrcn_apps.caption.text)."""

import pytest

from lrcn_apps.caption.text import EOS_INDEX, UNK, UNK_INDEX, Vocabulary, VocabularyError, \
    build_vocabulary, tokenize


@pytest.mark.parametrize("caption, tokens", [
    ("A man, riding a horse.", ["a", "man", ",", "riding", "a", "horse"]),
    ("  Spaces   everywhere.  ", ["spaces", "everywhere"]),
    ("It's here!", ["it", "'", "s", "here", "!"]),
    ("no period at the end", ["no", "period", "at", "the", "end"]),
    ("two periods..", ["two", "periods", ".."]),
    ("Dogs!.", ["dogs", "!."]),  # the last piece is "!.", not "."
    ("mid. sentence.", ["mid", ".", "sentence"]),
    ("", []),
    (".", []),
])
def test_tokenize_like_coco_to_hdf5_data(caption, tokens):
    assert tokenize(caption) == tokens


def test_space_before_final_period_keeps_it_like_the_original():
    # The original tests the unstripped piece " ." against ".", so the period stays.
    assert tokenize("a cat .") == ["a", "cat", "."]


def test_word_characters_are_ascii_like_python2():
    assert tokenize("Café au lait.") == ["caf", "é", "au", "lait"]


def test_whitespace_inside_a_punctuation_token_is_collapsed():
    assert tokenize("a ,\n\n( b") == ["a", ", (", "b"]


def test_vocabulary_order_is_count_then_word_with_unk_first():
    sentences = [["b", "a", "c"], ["a", "c", "d"], ["c", "a", "b"], ["e"]]
    # counts: a 3, c 3, b 2, d 1, e 1
    vocabulary = build_vocabulary(sentences, min_count=1)
    assert vocabulary.words == [UNK, "a", "c", "b", "d", "e"]


def test_vocabulary_threshold_keeps_words_seen_exactly_min_count_times():
    sentences = [["often"]] * 5 + [["rare"]] * 4
    assert build_vocabulary(sentences).words == [UNK, "often"]
    assert build_vocabulary(sentences, min_count=4).words == [UNK, "often", "rare"]


def test_net_indices_shift_file_indices_by_one():
    vocabulary = Vocabulary([UNK, "a", "dog"])
    assert vocabulary.net_size == 4
    assert vocabulary.net_index("a") == 2
    assert vocabulary.net_index("dog") == 3
    assert vocabulary.net_index("cat") == UNK_INDEX == 1
    assert vocabulary.encode("A cat, a dog.") == [2, 1, 1, 2, 3]


def test_decode_stops_at_eos():
    vocabulary = Vocabulary([UNK, "a", "dog"])
    assert vocabulary.decode([2, 3, EOS_INDEX, 2]) == ["a", "dog"]
    assert vocabulary.decode_text([2, 1, 3]) == "a <unk> dog"
    with pytest.raises(ValueError):
        vocabulary.decode([2, 4])


def test_sentence_display_form_follows_captioner_py():
    vocabulary = Vocabulary([UNK, "a", "dog"])
    assert vocabulary.sentence([2, 3, 0]) == "A dog."
    assert vocabulary.sentence([2, 3]) == "A dog..."
    assert vocabulary.sentence([0]) == ""


def test_vocabulary_file_round_trip(tmp_path):
    path = tmp_path / "vocabulary.txt"
    vocabulary = Vocabulary([UNK, "a", ",", "dog"])
    vocabulary.save(str(path))
    assert path.read_text() == "<unk>\na\n,\ndog\n"
    assert Vocabulary.load(str(path)).words == vocabulary.words


@pytest.mark.parametrize("text, message", [
    ("a\nb\n", ":1: the first word must be '<unk>'"),
    ("<unk>\na\na\n", ":3: word 'a' already on line 2"),
    ("<unk>\n\na\n", ":2: empty line"),
    ("", "the vocabulary file is empty"),
])
def test_vocabulary_file_errors_name_the_line(tmp_path, text, message):
    path = tmp_path / "vocabulary.txt"
    path.write_text(text)
    with pytest.raises(VocabularyError) as error:
        Vocabulary.load(str(path))
    assert message in str(error.value)
    assert str(path) in str(error.value)
