"""LRCN's caption tokenizer and vocabulary (JD examples/coco_caption/coco_to_hdf5_data.py).

Tokenizer
    ``re.split(r"(\\W+)", caption.strip())`` keeping the separators, lowercase every piece,
    drop the pieces that are empty after ``strip()``, then drop the last token when it is
    exactly ``"."``. Tokens are stripped (the original strips them when it counts and encodes
    them, which is the same thing). Two details follow the original to the letter:

    * the trailing-"." test looks at the piece *before* stripping, so ``"a cat."`` loses its
      period but ``"a cat ."`` keeps a final ``"."`` token (the piece there is ``" ."``);
    * ``\\W`` is ASCII-only (``re.ASCII``), as it was for the original's Python 2 ``unicode``
      strings without ``re.UNICODE``: ``"café"`` becomes ``"caf"``, ``"é"``.

    One deliberate difference: whitespace *inside* a punctuation token (``", ("``) is collapsed
    to single spaces, so that no token can hold a line break and break the one-word-per-line
    vocabulary file.

Vocabulary
    Counted over the train split's tokens only; words with count >= ``min_count`` (5), sorted
    by (-count, word). File index 0 is ``<unk>``; the vocabulary file holds one word per line in
    file-index order. The nets use net index = file index + 1, so net index 0 is EOS (and the
    BOS input at t = 0) and net index 1 is ``<unk>``; the nets' Embed ``input_dim`` and predict
    ``num_output`` are ``len(file words) + 1`` (8801 on COCO).
"""

import collections
import re

UNK = "<unk>"
EOS_INDEX = 0  # net index of end-of-sentence; also the input at the first time step
UNK_INDEX = 1  # net index of <unk> (file index 0 + 1)
DEFAULT_MIN_COUNT = 5

_SPLIT_REGEX = re.compile(r"(\W+)", re.ASCII)


def tokenize(caption):
    """Split a caption into LRCN's lowercase tokens (see the module docstring)."""
    pieces = [piece.lower() for piece in _SPLIT_REGEX.split(caption.strip())
              if piece.strip()]
    # The original compares the unstripped last piece with "." (so " ." survives).
    if pieces and pieces[-1] == ".":
        pieces = pieces[:-1]
    return [" ".join(piece.split()) for piece in pieces]


def count_words(token_lists):
    """Word -> count over an iterable of token lists."""
    counts = collections.Counter()
    for tokens in token_lists:
        counts.update(tokens)
    return counts


def build_vocabulary(token_lists, min_count=DEFAULT_MIN_COUNT):
    """The Vocabulary of the words seen at least ``min_count`` times, LRCN order."""
    counts = count_words(token_lists)
    ordered = sorted(counts, key=lambda word: (-counts[word], word))
    kept = [word for word in ordered if counts[word] >= min_count]
    return Vocabulary([UNK] + kept)


class VocabularyError(ValueError):
    """A vocabulary file that cannot be used; the message names the file and line."""


class Vocabulary:
    """File words (``words[0] == "<unk>"``) and the net-index encoding built on them."""

    def __init__(self, words):
        words = list(words)
        if not words or words[0] != UNK:
            raise ValueError("a vocabulary starts with %r" % UNK)
        self.words = words
        self._file_index = {}
        for index, word in enumerate(words):
            if word in self._file_index:
                raise ValueError("word %r appears twice in the vocabulary" % word)
            self._file_index[word] = index

    def __len__(self):
        """Number of file words, <unk> included (8800 on COCO)."""
        return len(self.words)

    def __contains__(self, word):
        return word in self._file_index

    @property
    def net_size(self):
        """Number of net indices: the file words plus EOS (Embed input_dim, predict num_output)."""
        return len(self.words) + 1

    def net_index(self, word):
        """Net index of a token; words outside the vocabulary map to <unk>."""
        return self._file_index.get(word, 0) + 1

    def encode_tokens(self, tokens):
        """Token list -> net indices (no EOS appended)."""
        return [self.net_index(token) for token in tokens]

    def encode(self, caption):
        """Caption text -> net indices (tokenized like LRCN, no EOS appended)."""
        return self.encode_tokens(tokenize(caption))

    def word(self, net_index):
        """Token for a net index other than EOS."""
        if not 1 <= net_index <= len(self.words):
            raise ValueError("net index %d is outside 1..%d" % (net_index, len(self.words)))
        return self.words[net_index - 1]

    def decode(self, net_indices):
        """Net indices -> tokens, stopping at (and dropping) the first EOS."""
        tokens = []
        for net_index in net_indices:
            net_index = int(net_index)
            if net_index == EOS_INDEX:
                break
            tokens.append(self.word(net_index))
        return tokens

    def decode_text(self, net_indices):
        """Net indices -> tokens joined by spaces, up to the first EOS (for evaluation)."""
        return " ".join(self.decode(net_indices))

    def sentence(self, net_indices):
        """Display form of captioner.py's ``sentence()``: first letter upper-cased, a final
        "." when the indices end with EOS and "..." when they stop without one (max length)."""
        net_indices = [int(index) for index in net_indices]
        ended = EOS_INDEX in net_indices
        text = self.decode_text(net_indices)
        if not text:
            return text
        text = text[0].upper() + text[1:]
        return text + ("." if ended else "...")

    def save(self, path):
        """Write one word per line, file-index order (the original's vocabulary.txt)."""
        with open(path, "w", encoding="utf-8", newline="\n") as vocab_file:
            for word in self.words:
                vocab_file.write(word + "\n")

    @classmethod
    def load(cls, path):
        """Read a vocabulary file; VocabularyError names the file and line of any problem."""
        with open(path, encoding="utf-8") as vocab_file:
            # captioner.py strips each line the same way.
            words = [line.strip() for line in vocab_file.read().splitlines()]
        while words and not words[-1]:
            words.pop()
        if not words:
            raise VocabularyError("%s: the vocabulary file is empty" % path)
        if words[0] != UNK:
            raise VocabularyError("%s:1: the first word must be %r, found %r"
                                  % (path, UNK, words[0]))
        seen = {}
        for line_number, word in enumerate(words, start=1):
            if not word:
                raise VocabularyError("%s:%d: empty line" % (path, line_number))
            if word in seen:
                raise VocabularyError("%s:%d: word %r already on line %d"
                                      % (path, line_number, word, seen[word]))
            seen[word] = line_number
        return cls(words)
