"""The visual recogniser of LRCN's TACoS-style video description (the paper's CRF, here a
small LSTM over the frames) and the label vectors its outputs become.

Training data (lrcn-video-data --tuples FILE, ``recogniser/<split>_batches/``): one video per
stream, T = the longest video's frame count, frames from step 0, then zero padding::

    cont       [0] + [1] * (F - 1) + [0] * pad
    frame_fc7  the F frame features, then zero vectors
    subject / action / object   -1 (ignored) except at the video's last frame: its label

``recogniser/slots.json`` lists each slot's labels (sorted; label k = position k).
The tuples file has ``video<TAB>subject<TAB>action<TAB>object`` lines (the bundled
data/video_actions/tuples.txt; TACoS's annotations give such tuples).

lrcn-video-recognise runs a trained recogniser (nets/video_recogniser_deploy.prototxt) on
every video of a features file and writes three features files of label vectors, in the joint
label space (subject labels, then action labels, then object labels; 12 values here):

    labels_sequence.h5   3 "frames" per video, one-hot each: slot k's most probable label
                         (variant (a): an LSTM reads them one per step)
    labels_max.h5        1 vector: the three one-hots concatenated (variant (b))
    labels_probs.h5      1 vector: the three probability vectors concatenated (variant (c))

lrcn-video-data --features takes any of them like frame features.
"""

import argparse
import os
import sys

import numpy as np
import torch

import compiler
from compiler.errors import CompileError
from runtime import threads
from runtime.net import Net
from lrcn_apps.caption import streams as caption_streams
from lrcn_apps.caption.coco import DataError, load_json
from lrcn_apps.cli import run_reporting_errors
from lrcn_apps.generation import describe, load_weights
from lrcn_apps.video.features import read_features, write_features
from lrcn_apps.video.streams import RowWriter

SLOTS = ("subject", "action", "object")
PROGRAM = "lrcn-video-recognise"


def read_tuples(path):
    """{video: (subject, action, object)}; DataError names the file and line."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError("%s: cannot read: %s" % (path, error)) from None
    tuples = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 4 or not all(field.strip() for field in fields):
            raise DataError("%s:%d: expected 'video<TAB>subject<TAB>action<TAB>object', "
                            "found %r" % (path, number, line))
        tuples[fields[0].strip()] = tuple(field.strip() for field in fields[1:])
    if not tuples:
        raise DataError("%s: no tuples" % path)
    return tuples


def slot_labels(tuples):
    return {slot: sorted({t[k] for t in tuples.values()}) for k, slot in enumerate(SLOTS)}


def write_recogniser_split(videos, tuples, slots, features, num_streams, rng, directory,
                           listed):
    """One split's recogniser streams (module docstring) for the videos of the split."""
    missing = [video for video in videos if video not in tuples]
    if missing:
        raise DataError("no tuple for video(s) %s" % ", ".join(missing[:5]))
    arranged, _ = caption_streams.arrange_aligned(videos, num_streams, rng)
    steps = max(len(features[video]) for video in videos)
    dim = features[videos[0]].shape[1]
    writer = RowWriter(directory, listed, steps * num_streams)
    for first in range(0, len(arranged), num_streams):
        batch = {"cont": np.zeros((steps, num_streams), np.float32),
                 "frame_fc7": np.zeros((steps, num_streams, dim), np.float32)}
        batch.update({slot: np.full((steps, num_streams), -1, np.float32) for slot in SLOTS})
        for stream, video in enumerate(arranged[first:first + num_streams]):
            frames = features[video]
            batch["cont"][1:len(frames), stream] = 1
            batch["frame_fc7"][:len(frames), stream] = frames
            for k, slot in enumerate(SLOTS):
                batch[slot][len(frames) - 1, stream] = slots[slot].index(tuples[video][k])
        writer.append(batch)
    writer.close()
    return steps


class Recogniser:
    """A trained recogniser deploy net: frame features -> one probability vector per slot."""

    def __init__(self, deploy_net, weights):
        try:
            self.net = Net(compiler.load_file(deploy_net, "net"), phase="TEST")
        except CompileError as error:
            raise DataError(describe(error)) from None
        outputs = ["%s_probs" % slot for slot in SLOTS]
        if not {"cont", "frame_fc7"} <= set(self.net.inputs) \
                or not set(outputs) <= set(self.net.outputs):
            raise DataError("%s: a recogniser takes cont and frame_fc7 and produces %s"
                            % (deploy_net, ", ".join(outputs)))
        load_weights([self.net], weights, ())
        self.net.eval()

    @torch.no_grad()
    def __call__(self, videos):
        """[(F, D) features] -> (N, S) probabilities of each slot at each video's last frame.

        One step per call for all videos at once, right-aligned: the steps before a shorter
        video's first frame carry cont 0, which resets the LSTM, so its last step is its own."""
        longest = max(len(frames) for frames in videos)
        padded = np.zeros((longest, len(videos), videos[0].shape[1]), np.float32)
        starts = torch.as_tensor([longest - len(frames) for frames in videos])
        for stream, frames in enumerate(videos):
            padded[longest - len(frames):, stream] = frames
        self.net.reset_state()
        for t in range(longest):
            outputs = self.net(cont=(t > starts).float()[None],
                               frame_fc7=torch.as_tensor(padded[t:t + 1]))
        return [outputs["%s_probs" % slot][0].double().numpy() for slot in SLOTS]


def label_vectors(probabilities):
    """Slot probability vectors -> (sequence (3, S), max (1, S), probs (1, S)) in the joint
    label space."""
    sizes = [len(p) for p in probabilities]
    offsets = np.cumsum([0] + sizes[:-1])
    sequence = np.zeros((len(sizes), sum(sizes)), np.float32)
    for k, (offset, probs) in enumerate(zip(offsets, probabilities)):
        sequence[k, offset + int(np.argmax(probs))] = 1
    joint = np.concatenate(probabilities).astype(np.float32)
    return sequence, sequence.sum(axis=0, keepdims=True), joint[None]


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog=PROGRAM, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run a trained recogniser over every video of a features file and write "
                    "the TACoS-style label vectors (sequence of max labels, max labels, "
                    "probabilities).",
        epilog="example:\n  lrcn-video-recognise --weights runs/video/recogniser_iter_1000."
               "caffemodel \\\n      --features data/video_actions/prepared/features.h5 "
               "--tuples data/video_actions/tuples.txt \\\n      --out "
               "data/video_actions/prepared/labels\n\nexit status: 0 success, 1 a problem "
               "with an input file, 2 bad usage.")
    parser.add_argument("--net", default="nets/video_recogniser_deploy.prototxt")
    parser.add_argument("--weights", required=True, metavar="CAFFEMODEL")
    parser.add_argument("--features", required=True, metavar="H5")
    parser.add_argument("--tuples", metavar="FILE",
                        help="true tuples: report the recogniser's accuracy per slot")
    parser.add_argument("--slots", metavar="JSON", help="slot labels (default: from --tuples)")
    parser.add_argument("--out", required=True, metavar="DIR")
    parser.add_argument("--force", action="store_true", help="replace existing outputs")
    threads.add_argument(parser)
    args = parser.parse_args(argv)
    threads.configure(args.threads)
    if not (args.tuples or args.slots):
        parser.error("give --tuples or --slots (the slot labels)")
    return run_reporting_errors(PROGRAM, run, args)


OUTPUTS = ("labels_sequence.h5", "labels_max.h5", "labels_probs.h5")


def run(args):
    existing = [name for name in OUTPUTS if os.path.exists(os.path.join(args.out, name))]
    if existing and not args.force:
        raise DataError("%s: already holds %s; pass --force to replace"
                        % (args.out, ", ".join(existing)))
    tuples = read_tuples(args.tuples) if args.tuples else None
    if args.slots:
        slots = load_json(args.slots)
    else:
        slots = slot_labels(tuples)
    features = read_features(args.features)
    recogniser = Recogniser(args.net, args.weights)
    outputs = {name: {} for name in OUTPUTS}
    correct = {slot: [] for slot in SLOTS}
    names = list(features)
    slot_probs = recogniser([features[video] for video in names])
    for slot, probs in zip(SLOTS, slot_probs):
        if probs.shape[1] != len(slots.get(slot, ())):
            raise DataError("%s: the recogniser predicts %d %s labels but the slots list %d"
                            % (args.net, probs.shape[1], slot, len(slots.get(slot, ()))))
    for row, video in enumerate(names):
        probabilities = [probs[row] for probs in slot_probs]
        for name, vectors in zip(OUTPUTS, label_vectors(probabilities)):
            outputs[name][video] = vectors
        if tuples and video in tuples:
            for k, slot in enumerate(SLOTS):
                correct[slot].append(slots[slot][int(np.argmax(probabilities[k]))]
                                     == tuples[video][k])
    os.makedirs(args.out, exist_ok=True)
    for name, vectors in outputs.items():
        write_features(os.path.join(args.out, name), vectors)
    if tuples:
        print("recogniser accuracy over %d videos: %s" % (len(correct["subject"]), ", ".join(
            "%s %.1f%%" % (slot, 100.0 * np.mean(hits)) for slot, hits in correct.items())))
    print("wrote %s" % ", ".join(os.path.join(args.out, name) for name in OUTPUTS))


if __name__ == "__main__":
    sys.exit(main())
