"""Sentence streams in LRCN's HDF5 layout (JD examples/coco_caption/hdf5_sequence_generator.py
and coco_to_hdf5_data.py).

One sentence of L words (net indices w1..wL, see lrcn_apps.caption.text) becomes L + 1 steps::

    cont_sentence    0   1   1  ...  1      cont = 0 starts a new sentence (LSTM state reset)
    input_sentence   0   w1  w2 ...  wL     0 = BOS input at t = 0 (same index as EOS)
    target_sentence  w1  w2  w3 ...  0      0 = EOS
    padding step: cont 0, input -1, target -1   (-1 = SoftmaxWithLoss ignore_label)

Each HDF5 file holds three float32 datasets ``cont_sentence``, ``input_sentence`` and
``target_sentence`` of shape (rows, N): row = time step, column = stream. Caffe's HDF5Data with
``batch_size: T`` reads T consecutive rows, i.e. one T x N (time-major) batch, and moves through
the files of the list file in order (no shuffle). Every file holds a whole number of batches
(rows = T * batches), so a batch never straddles two files. The list file (``source`` of
HDF5Data) names one .h5 file per line. The datasets are gzip-compressed with the shuffle
filter by default (both standard HDF5 filters that Caffe's HDF5 library reads); the original
stored uncompressed float64 plus datasets no net reads (cont, buffer_size,
stage_indicators, hashed_image_path), which are not written here.

ALIGNED layout (the captioning nets; ``<split>_aligned_<T>_batches/``)
    T = max_words. Every sentence is cut to its first T steps (a sentence of L >= T words then
    has no EOS target) and padded to exactly T steps. Sentence k of the arranged list sits in
    batch b = k // N, stream n = k % N, rows b*T .. b*T + T - 1 of the concatenated files; so
    batch b holds sentences b*N .. b*N + N - 1 and every stream starts a new sentence (cont 0)
    at the first row of every batch. The image list (ImageData ``source``, ``batch_size: N``,
    no shuffle) has one line ``<image path> 0`` per sentence in the same order: line b*N + n is
    the image of stream n in batch b, so ImageData's batch b matches HDF5Data's batch b.
    0 is a dummy label (the original wrote a hash of the path there; no net reads it).

UNALIGNED layout (language-model pre-training; ``<split>_unaligned_batches/``)
    Sentences are never truncated or padded. They are packed back to back in N streams: at
    every time step, in stream order, each stream whose sentence has ended takes the next
    sentence of the list, as the original generator does. A sentence can run across a batch
    boundary; its later steps carry cont 1, which tells Caffe's recurrent layers to continue
    from the hidden state the previous batch ended with. Streams that run out of sentences are
    padded; the rows are padded up to a multiple of T (the original cut its last chunk at the
    last used row instead, leaving HDF5Data to wrap around mid-batch). No image list: the
    sentences of a batch do not belong to one image per stream.

Sentence order: the (image, caption) pairs are shuffled with a seeded generator, as the
original does for every split. For the aligned layout the number of pairs must be a multiple
of N (ImageData and HDF5Data must wrap around at the same time); the original adds randomly
chosen duplicate pairs before shuffling, and so does ``arrange_aligned``. It draws the
duplicates without replacement (cycling only when a split has fewer than N pairs), so each
pair appears once, or twice for at most N - 1 of them; with replacement (the original's
``random.randint``) a pair could appear three times.
"""

import heapq
import os

import h5py
import numpy as np

STREAM_NAMES = ("cont_sentence", "input_sentence", "target_sentence")
PAD_VALUES = {"cont_sentence": 0, "input_sentence": -1, "target_sentence": -1}
DEFAULT_MAX_WORDS = 20
DEFAULT_NUM_STREAMS = 100
# The original's chunks were 100000 rows, i.e. 5000 batches of T = 20.
DEFAULT_BATCHES_PER_FILE = 5000
HDF5_LIST_NAME = "hdf5_chunk_list.txt"
IMAGE_LIST_NAME = "image_list.with_dummy_labels.txt"


def sentence_steps(net_indices):
    """The unpadded, untruncated steps of one sentence: name -> list of L + 1 values."""
    words = [int(index) for index in net_indices]
    return {
        "cont_sentence": [0] + [1] * len(words),
        "input_sentence": [0] + words,
        "target_sentence": words + [0],
    }


def aligned_sentence_steps(net_indices, max_words):
    """The steps of one sentence cut to ``max_words`` and padded to exactly ``max_words``."""
    steps = sentence_steps(net_indices)
    aligned = {}
    for name, values in steps.items():
        values = values[:max_words]
        aligned[name] = values + [PAD_VALUES[name]] * (max_words - len(values))
    return aligned


def arrange_aligned(items, num_streams, rng, shuffle=True):
    """Pad ``items`` with random duplicates to a multiple of ``num_streams``, then shuffle.

    Returns (arranged list, number of duplicates added). ``rng`` is a ``random.Random``.
    """
    items = list(items)
    if not items:
        return items, 0
    shortfall = -len(items) % num_streams
    duplicates = []
    while len(duplicates) < shortfall:
        # Without replacement per round: every pair at most once more unless N exceeds the split.
        take = min(len(items), shortfall - len(duplicates))
        duplicates.extend(items[index] for index in rng.sample(range(len(items)), take))
    arranged = items + duplicates
    if shuffle:
        rng.shuffle(arranged)
    return arranged, shortfall


def arrange_unaligned(items, rng, shuffle=True):
    """The unaligned layout uses every pair exactly once, shuffled like the original."""
    items = list(items)
    if shuffle:
        rng.shuffle(items)
    return items


class PackedStreams:
    """Three (rows, N) float32 arrays plus the batch length T (rows per HDF5Data batch)."""

    def __init__(self, arrays, steps_per_batch):
        self.arrays = arrays
        self.steps_per_batch = steps_per_batch
        rows, _ = arrays["cont_sentence"].shape
        if rows % steps_per_batch:
            raise ValueError("%d rows are not whole batches of %d" % (rows, steps_per_batch))

    @property
    def num_rows(self):
        return self.arrays["cont_sentence"].shape[0]

    @property
    def num_streams(self):
        return self.arrays["cont_sentence"].shape[1]

    @property
    def num_batches(self):
        return self.num_rows // self.steps_per_batch

    def batch(self, batch_index):
        """name -> the T x N array HDF5Data delivers as batch ``batch_index``."""
        start = batch_index * self.steps_per_batch
        return {name: array[start:start + self.steps_per_batch]
                for name, array in self.arrays.items()}


def _padded_arrays(num_rows, num_streams):
    return {name: np.full((num_rows, num_streams), PAD_VALUES[name], dtype=np.float32)
            for name in STREAM_NAMES}


def pack_aligned(sentences, num_streams, max_words):
    """ALIGNED layout of a list of net-index sentences whose length is a multiple of N."""
    if len(sentences) % num_streams:
        raise ValueError("%d sentences do not fill batches of %d streams; arrange_aligned "
                         "pads them" % (len(sentences), num_streams))
    num_batches = len(sentences) // num_streams
    arrays = _padded_arrays(num_batches * max_words, num_streams)
    for sentence_index, sentence in enumerate(sentences):
        batch_index, stream = divmod(sentence_index, num_streams)
        first_row = batch_index * max_words
        for name, values in aligned_sentence_steps(sentence, max_words).items():
            arrays[name][first_row:first_row + max_words, stream] = values
    return PackedStreams(arrays, max_words)


def unaligned_placements(sentence_lengths, num_streams):
    """(stream, first row) of each sentence when streams take the next sentence as they free
    up, earliest row first and lower stream first within a row (the original's loop order)."""
    free_at = [(0, stream) for stream in range(num_streams)]
    placements = []
    for length in sentence_lengths:
        row, stream = heapq.heappop(free_at)
        placements.append((stream, row))
        heapq.heappush(free_at, (row + length, stream))
    return placements


def pack_unaligned(sentences, num_streams, steps_per_batch):
    """UNALIGNED layout: sentences back to back per stream, rows padded to whole batches."""
    all_steps = [sentence_steps(sentence) for sentence in sentences]
    lengths = [len(steps["cont_sentence"]) for steps in all_steps]
    placements = unaligned_placements(lengths, num_streams)
    used_rows = max((row + length for (_, row), length in zip(placements, lengths)), default=0)
    num_rows = -(-used_rows // steps_per_batch) * steps_per_batch
    arrays = _padded_arrays(num_rows, num_streams)
    for steps, (stream, row), length in zip(all_steps, placements, lengths):
        for name, values in steps.items():
            arrays[name][row:row + length, stream] = values
    return PackedStreams(arrays, steps_per_batch)


def write_hdf5_streams(packed, directory, listed_directory, batches_per_file,
                       compression="gzip"):
    """Write ``batch_<k>.h5`` files of at most ``batches_per_file`` batches into ``directory``
    and the list file naming them as ``listed_directory/batch_<k>.h5`` (the path HDF5Data will
    open, relative to Caffe's working directory). Returns the listed paths."""
    rows_per_file = batches_per_file * packed.steps_per_batch
    listed_paths = []
    for file_index, first_row in enumerate(range(0, packed.num_rows, rows_per_file)):
        file_name = "batch_%d.h5" % file_index
        with h5py.File(os.path.join(directory, file_name), "w") as h5_file:
            for name in STREAM_NAMES:
                rows = packed.arrays[name][first_row:first_row + rows_per_file]
                # The shuffle filter (built into libhdf5, as gzip is into every usual
                # build) groups the float bytes so that gzip finds the repeats.
                h5_file.create_dataset(name, data=rows, compression=compression,
                                       shuffle=compression is not None)
        listed_paths.append(_join_listed(listed_directory, file_name))
    write_lines(os.path.join(directory, HDF5_LIST_NAME), listed_paths)
    return listed_paths


def read_hdf5_streams(list_path, steps_per_batch):
    """Read back the files named by a list file into one PackedStreams (tests, inspection).
    Relative paths in the list resolve against the current directory, as in Caffe."""
    with open(list_path, encoding="utf-8") as list_file:
        paths = [line.strip() for line in list_file if line.strip()]
    parts = {name: [] for name in STREAM_NAMES}
    for path in paths:
        with h5py.File(path, "r") as h5_file:
            for name in STREAM_NAMES:
                parts[name].append(h5_file[name][...])
    arrays = {name: np.concatenate(chunks, axis=0) for name, chunks in parts.items()}
    return PackedStreams(arrays, steps_per_batch)


def write_image_list(path, image_paths):
    """ImageData list: ``<image path> 0`` per sentence, in aligned stream order."""
    write_lines(path, ["%s 0" % image_path for image_path in image_paths])


def write_lines(path, lines):
    with open(path, "w", encoding="utf-8", newline="\n") as out_file:
        for line in lines:
            out_file.write(line + "\n")


def _join_listed(directory, file_name):
    # List files use "/" whatever the platform, like the original's '%s/batch_%d.h5'.
    return file_name if directory in ("", ".") else directory.rstrip("/") + "/" + file_name
