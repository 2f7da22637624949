"""Video-description streams in S2VT's HDF5 layout, and the mean-pool layout.

S2VT (vsubhashini/caffe@recurrent, examples/s2vt/framefc7_stream_text_to_hdf5_data.py): one
video of F frames with a sentence of W words (net indices, 0 = EOS) takes exactly T steps::

    cont_sentence    [0] + [1] * (F + W) + [0] * pad
    input_sentence   [0] * F + [0] + words + [0] * pad
    target_sentence  [-1] * F + words + [0] + [-1] * pad        (-1: ignore_label)
    stage_indicator  [0] * F + [1] * (W + 1 + pad)
    frame_fc7        the F frame features, then zero vectors

with pad = T - (F + W + 1). When that is negative the FRAMES are cut (F = T - (W + 1)); a
sentence that alone does not fit is first cut to min(20, T - 2) words (S2VT: 20 words).
Streams are filled as S2VT's writer fills them: the pairs (shuffled, padded with duplicates to a
multiple of N) go to the N columns in order, so rows b*T .. b*T + T - 1 of column n hold pair
b*N + n: one T-step batch of HDF5Data is exactly one video per stream. The rows run on through
files of ``rows_per_file`` rows (S2VT: 1000) named ``batch_<k>.h5``, listed in
``hdf5_chunk_list.txt``; HDF5Data reads rows across file boundaries, so a batch may straddle two
files as in the original. The datasets are float32 (the original wrote float64, and also the
encoder-decoder streams cont_img, cont_sen, encoder_to_decoder, inv_stage_indicator and
cont / buffer_size, which no S2VT net reads).

Mean-pool (vsubhashini/caffe@recurrent examples/youtube/poolmean.prototxt): the sentence
streams are LRCN's aligned caption layout (lrcn_apps.caption.streams, T_words steps per batch) and
``mean_fc7`` (the mean of the video's frame features) lives in its own file list, one row per
stream: HDF5Data with ``batch_size: N`` reads rows b*N .. b*N + N - 1, the videos of batch b.
"""

import os

import h5py
import numpy as np

from lrcn_apps.caption import streams as caption_streams

S2VT_STREAMS = ("cont_sentence", "input_sentence", "target_sentence", "stage_indicator")
FRAMES = "frame_fc7"
MEAN_FEATURES = "mean_fc7"
DEFAULT_ROWS_PER_FILE = 1000
S2VT_MAX_SENTENCE = 20
LIST_NAME = caption_streams.HDF5_LIST_NAME


def s2vt_steps(num_frames, words, steps):
    """The four integer streams of one (video, sentence) pair and the number of frames kept."""
    words = [int(word) for word in words]
    if len(words) + 1 > steps:
        words = words[:min(S2VT_MAX_SENTENCE, steps - 2)]
    pad = steps - (num_frames + len(words) + 1)
    if pad < 0:
        num_frames, pad = steps - (len(words) + 1), 0
    return {
        "cont_sentence": [0] + [1] * (num_frames + len(words)) + [0] * pad,
        "input_sentence": [0] * num_frames + [0] + words + [0] * pad,
        "target_sentence": [-1] * num_frames + words + [0] + [-1] * pad,
        "stage_indicator": [0] * num_frames + [1] * (len(words) + 1 + pad),
    }, num_frames


def s2vt_pair(frames, words, steps):
    """name -> (T,) stream or (T, D) frame features of one pair, and whether frames were cut."""
    streams, kept = s2vt_steps(len(frames), words, steps)
    features = np.zeros((steps, frames.shape[1]), dtype=np.float32)
    features[:kept] = frames[:kept]
    streams = {name: np.asarray(values, dtype=np.float32) for name, values in streams.items()}
    streams[FRAMES] = features
    return streams, kept < len(frames)


class RowWriter:
    """Appends time-major rows (T, N, ...) to ``batch_<k>.h5`` files of ``rows_per_file`` rows
    and writes the list file naming them as ``listed_directory/batch_<k>.h5``."""

    def __init__(self, directory, listed_directory, rows_per_file=DEFAULT_ROWS_PER_FILE):
        self.directory, self.listed = directory, listed_directory
        self.rows_per_file = rows_per_file
        self.pending = {}
        self.pending_rows = 0
        self.paths = []

    def append(self, rows):
        for name, values in rows.items():
            self.pending.setdefault(name, []).append(values)
        self.pending_rows += len(next(iter(rows.values())))
        while self.pending_rows >= self.rows_per_file:
            self._flush(self.rows_per_file)

    def close(self):
        if self.pending_rows:
            self._flush(self.pending_rows)
        caption_streams.write_lines(os.path.join(self.directory, LIST_NAME), self.paths)
        return self.paths

    def _flush(self, count):
        joined = {name: np.concatenate(parts) for name, parts in self.pending.items()}
        name = "batch_%d.h5" % len(self.paths)
        with h5py.File(os.path.join(self.directory, name), "w") as out:
            for key, values in joined.items():
                out.create_dataset(key, data=values[:count], compression="gzip", shuffle=True)
        self.paths.append(caption_streams._join_listed(self.listed, name))
        self.pending = {key: [values[count:]] for key, values in joined.items()}
        self.pending_rows -= count


def write_s2vt(pairs, frames_of, num_streams, steps, writer):
    """Write arranged (video id, net-index words) pairs (a multiple of N) in S2VT's layout;
    ``frames_of(video id)`` gives its (F, D) features. Returns the number of pairs whose
    frames were cut."""
    truncated = 0
    for first in range(0, len(pairs), num_streams):
        batch = [s2vt_pair(frames_of(video), words, steps)
                 for video, words in pairs[first:first + num_streams]]
        truncated += sum(cut for _, cut in batch)
        writer.append({name: np.stack([streams[name] for streams, _ in batch], axis=1)
                       for name in batch[0][0]})
    writer.close()
    return truncated


def write_mean_pool(pairs, frames_of, num_streams, max_words, sentence_dir, mean_dir,
                    listed_sentence_dir, listed_mean_dir, batches_per_file):
    """The mean-pool layout of arranged pairs: aligned sentence streams plus ``mean_fc7``."""
    packed = caption_streams.pack_aligned([words for _, words in pairs], num_streams,
                                          max_words)
    caption_streams.write_hdf5_streams(packed, sentence_dir, listed_sentence_dir,
                                       batches_per_file)
    writer = RowWriter(mean_dir, listed_mean_dir, batches_per_file * num_streams)
    for video, _ in pairs:
        writer.append({MEAN_FEATURES: frames_of(video).mean(axis=0, dtype=np.float64)
                       .astype(np.float32)[None]})
    writer.close()
