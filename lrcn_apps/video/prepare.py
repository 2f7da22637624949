"""lrcn-video-data: videos + sentences -> frame features and S2VT / mean-pool HDF5 streams.

Outputs in --out (written into a temporary folder and moved into place at the end; an existing
--out is replaced only with --force):

    features.h5                    one (frames, D) dataset per video (lrcn-describe --features)
    vocabulary.txt                 <unk> first, then the train words (net index = line - 1 + 1)
    <split>_references.json        COCO caption references (video id digits = image id)
    s2vt/<split>_batches/          S2VT's layout: batch_<k>.h5 + hdf5_chunk_list.txt
    s2vt/<split>_vidid_order.txt   video, words, frames, total per stream in stream order
    meanpool/<split>_sentences/    the mean-pool model's sentence streams (T_words x N)
    meanpool/<split>_mean/         its mean_fc7 rows, one per stream
    recogniser/                    with --tuples: the recogniser's streams and slots.json
                                   (lrcn_apps.video.recogniser)
    summary.json

The stream layouts are lrcn_apps.video.streams'. Paths in the list files are --out joined with the
folder, as the nets name them from the working directory (the repository root for the bundled
nets).
"""

import argparse
import json
import os
import sys

import numpy as np

from lrcn_apps.caption import streams as caption_streams
from lrcn_apps.caption.coco import DataError, reference_document
from lrcn_apps.caption.prepare import listed_path, publish_atomically, split_rng
from lrcn_apps.caption.text import Vocabulary, VocabularyError, build_vocabulary, tokenize
from lrcn_apps.cli import run_reporting_errors
from lrcn_apps.video import recogniser, streams
from lrcn_apps.video.features import (FrameFeatures, find_video, read_features, read_frames,
                                  write_features)
from lrcn_apps.video.sentences import read_sentences, video_numbers

PROGRAM = "lrcn-video-data"
DEFAULT_STREAMS = 32
DEFAULT_STEPS = 80
DEFAULT_MAX_WORDS = 20
DEFAULT_SEED = 3          # S2VT's random.seed(3)

EXAMPLES = """\
examples:
  # the bundled dataset, features = the frames average-pooled to 8 x 8 (a net without weights)
  lrcn-video-data --videos data/video_actions/videos \\
      --sentences train=data/video_actions/sentences_train.txt \\
      --sentences val=data/video_actions/sentences_val.txt \\
      --sentences test=data/video_actions/sentences_test.txt \\
      --net nets/video_frame_features.prototxt --blob pool_frame \\
      --streams 32 --steps 24 --max-words 12 --out data/video_actions/prepared

  # MSVD with VGG-16 fc7 (a deploy net and its weights), every 10th frame, S2VT's sizes
  lrcn-video-data --videos YouTubeClips --sentences train=sents_train.txt \\
      --sentences val=sents_val.txt --net VGG_ILSVRC_16_layers_deploy.prototxt \\
      --weights VGG_ILSVRC_16_layers.caffemodel --blob fc7 --every 10 --out msvd

inputs: sentences as S2VT's 'video_id<TAB>sentence' lines or MSR-VTT style JSON
({"sentences": [{"video_id", "caption"}]}); a video is --videos/<id>.<ext> (any format ffmpeg
reads) or a folder --videos/<id>/ of frame images. --features FILE reuses a features.h5.
exit status: 0 success, 1 a problem with an input file, 2 bad usage.
"""


def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROGRAM, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Compute per-frame features of videos with a net and write S2VT's HDF5 "
                    "streams, the mean-pool streams, the vocabulary and COCO references.")
    inputs = parser.add_argument_group("inputs")
    inputs.add_argument("--sentences", action="append", required=True, metavar="SPLIT=FILE",
                        help="sentences of one split (repeatable; 'train' builds the "
                             "vocabulary)")
    inputs.add_argument("--videos", metavar="DIR", help="folder of video files / frame folders")
    inputs.add_argument("--features", metavar="H5",
                        help="precomputed features (a features.h5) instead of --videos/--net")
    inputs.add_argument("--tuples", metavar="FILE",
                        help="'video<TAB>subject<TAB>action<TAB>object' lines: also write the "
                             "recogniser's streams (TACoS-style variants)")
    inputs.add_argument("--vocabulary", metavar="FILE",
                        help="use this vocabulary instead of building one from 'train'")
    net = parser.add_argument_group("feature net (with --videos)")
    net.add_argument("--net", metavar="PROTOTXT", help="net with one Input layer (the frame)")
    net.add_argument("--blob", metavar="NAME", help="the features blob, e.g. fc7")
    net.add_argument("--weights", metavar="CAFFEMODEL", help="its weights")
    net.add_argument("--stage", action="append", default=[], metavar="STAGE",
                     help="stages of the feature net (repeatable)")
    net.add_argument("--every", type=int, default=1, metavar="K",
                     help="use every K-th frame (S2VT: 10; default %(default)s)")
    net.add_argument("--gpu", type=int, metavar="ID", help="run the net on CUDA device ID")
    inputs.add_argument("--blind", action="store_true",
                        help="zero every feature: data for the blind baseline (no visual input)")
    layout = parser.add_argument_group("layout")
    layout.add_argument("--streams", type=int, default=DEFAULT_STREAMS, metavar="N",
                        help="parallel streams per batch (default %(default)s)")
    layout.add_argument("--steps", type=int, default=DEFAULT_STEPS, metavar="T",
                        help="S2VT time steps per video, frames + words + 1 "
                             "(default %(default)s)")
    layout.add_argument("--max-words", type=int, default=DEFAULT_MAX_WORDS, metavar="T",
                        help="mean-pool sentence steps (default %(default)s)")
    layout.add_argument("--min-count", type=int, default=1,
                        help="keep train words seen at least this often (default %(default)s)")
    layout.add_argument("--rows-per-file", type=int, default=streams.DEFAULT_ROWS_PER_FILE,
                        help="S2VT rows per batch_<k>.h5 (default %(default)s)")
    layout.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help="seed for shuffling and duplicates (default %(default)s)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--force", "--overwrite", action="store_true",
                        help="replace --out if it exists")
    return parser


def parse_arguments(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    for option in ("streams", "steps", "max_words", "min_count", "rows_per_file", "every"):
        if getattr(args, option) < 1:
            parser.error("--%s must be at least 1" % option.replace("_", "-"))
    if args.steps < 3:
        parser.error("--steps must be at least 3 (a frame, a word and EOS)")
    if (args.features is None) == (args.videos is None):
        parser.error("give either --videos (with --net and --blob) or --features")
    if args.videos is not None and not (args.net and args.blob):
        parser.error("--videos needs --net and --blob (the feature net and its blob)")
    splits = {}
    for spec in args.sentences:
        name, equals, path = spec.partition("=")
        if not equals or not name or not path:
            parser.error("--sentences takes SPLIT=FILE, got %r" % spec)
        if name in splits:
            parser.error("split %r given twice" % name)
        splits[name] = path
    if "train" not in splits and args.vocabulary is None:
        parser.error("the vocabulary is built from the 'train' split: add one or pass "
                     "--vocabulary")
    args.splits = splits
    return args


def progress(message):
    print("%s: %s" % (PROGRAM, message), file=sys.stderr, flush=True)


def locate_videos(args, sentences):
    """{video id: file or frame folder}, naming the first sentence of a missing video."""
    paths = {}
    for split_sentences in sentences.values():
        for sentence in split_sentences:
            if sentence.video not in paths:
                try:
                    paths[sentence.video] = find_video(args.videos, sentence.video)
                except DataError as error:
                    raise DataError("%s: %s" % (sentence.where, error)) from None
    return paths


def compute_features(args, videos):
    """{video id: (F, D)} for every video ({id: path}), from --features or the feature net."""
    if args.features:
        features = read_features(args.features)
        missing = [video for video in videos if video not in features]
        if missing:
            raise DataError("%s: no features for video(s) %s" % (args.features,
                                                                  ", ".join(missing[:5])))
        return {video: features[video] for video in videos}
    device = "cpu" if args.gpu is None else "cuda:%d" % args.gpu
    net = FrameFeatures(args.net, args.blob, args.weights, tuple(args.stage), device)
    features = {}
    report_every = max(1, len(videos) // 10)
    for index, video in enumerate(videos, start=1):
        features[video] = net(read_frames(videos[video], args.every))
        if index % report_every == 0 or index == len(videos):
            progress("features of %d/%d videos" % (index, len(videos)))
    return features


def choose_vocabulary(args, sentences):
    if args.vocabulary:
        try:
            return Vocabulary.load(args.vocabulary)
        except (VocabularyError, OSError, UnicodeDecodeError) as error:
            raise DataError(str(error)) from None
    return build_vocabulary([tokenize(s.text) for s in sentences["train"]], args.min_count)


def write_split(name, split_sentences, features, vocabulary, args, work_dir):
    pairs = [(s.video, vocabulary.encode(s.text)) for s in split_sentences]
    arranged, duplicates = caption_streams.arrange_aligned(
        pairs, args.streams, split_rng(args.seed, name, "video"))
    frames_of = features.__getitem__
    s2vt_dir = os.path.join("s2vt", "%s_batches" % name)
    os.makedirs(os.path.join(work_dir, s2vt_dir))
    writer = streams.RowWriter(os.path.join(work_dir, s2vt_dir), listed_path(args.out, s2vt_dir),
                               args.rows_per_file)
    truncated = streams.write_s2vt(arranged, frames_of, args.streams, args.steps, writer)
    caption_streams.write_lines(
        os.path.join(work_dir, "s2vt", "%s_vidid_order.txt" % name),
        ["%s\t%d\t%d\t%d" % (video, len(words), len(features[video]),
                             len(words) + len(features[video])) for video, words in arranged])
    sentence_dir = os.path.join("meanpool", "%s_sentences" % name)
    mean_dir = os.path.join("meanpool", "%s_mean" % name)
    for folder in (sentence_dir, mean_dir):
        os.makedirs(os.path.join(work_dir, folder))
    streams.write_mean_pool(arranged, frames_of, args.streams, args.max_words,
                            os.path.join(work_dir, sentence_dir), os.path.join(work_dir, mean_dir),
                            listed_path(args.out, sentence_dir), listed_path(args.out, mean_dir),
                            caption_streams.DEFAULT_BATCHES_PER_FILE)
    write_references(name, split_sentences, work_dir)
    return {"sentences": len(pairs), "videos": len({s.video for s in split_sentences}),
            "batches": len(arranged) // args.streams, "duplicates": duplicates,
            "frames_truncated": truncated}


def write_references(name, split_sentences, work_dir):
    numbers = video_numbers(dict.fromkeys(s.video for s in split_sentences))
    images = [{"id": number, "file_name": video} for video, number in numbers.items()]
    annotations = [{"image_id": numbers[s.video], "caption": s.text} for s in split_sentences]
    document = reference_document(images, annotations, "video references, split %s" % name)
    with open(os.path.join(work_dir, "%s_references.json" % name), "w",
              encoding="utf-8") as out:
        json.dump(document, out, ensure_ascii=False, separators=(",", ":"))


def run(args):
    sentences = {name: read_sentences(path) for name, path in args.splits.items()}
    for split_sentences in sentences.values():
        video_numbers(dict.fromkeys(s.video for s in split_sentences))   # fail early
    videos = (locate_videos(args, sentences) if args.videos else
              dict.fromkeys(s.video for ss in sentences.values() for s in ss))
    vocabulary = choose_vocabulary(args, sentences)
    progress("%d videos, %d sentences, vocabulary of %d words (+ EOS)"
             % (len(videos), sum(map(len, sentences.values())), len(vocabulary)))
    tuples = recogniser.read_tuples(args.tuples) if args.tuples else None
    features = compute_features(args, videos)
    if args.blind:
        features = {video: np.zeros_like(values) for video, values in features.items()}
    dims = {values.shape[1] for values in features.values()}
    if len(dims) != 1:
        raise DataError("the videos' features differ in size: %s" % sorted(dims))

    def write_into(work_dir):
        write_features(os.path.join(work_dir, "features.h5"), features)
        vocabulary.save(os.path.join(work_dir, "vocabulary.txt"))
        os.makedirs(os.path.join(work_dir, "s2vt"))
        summary = {"feature_dim": dims.pop(), "vocabulary_words": len(vocabulary),
                   "net_vocabulary_size": vocabulary.net_size, "streams": args.streams,
                   "steps": args.steps, "max_words": args.max_words, "seed": args.seed,
                   "frames": [int(min(len(v) for v in features.values())),
                              int(max(len(v) for v in features.values()))],
                   "splits": {}}
        slots = recogniser.slot_labels(tuples) if tuples else None
        if slots:
            os.makedirs(os.path.join(work_dir, "recogniser"))
            with open(os.path.join(work_dir, "recogniser", "slots.json"), "w",
                      encoding="utf-8") as out:
                json.dump(slots, out, indent=1)
        for name, split_sentences in sentences.items():
            summary["splits"][name] = write_split(name, split_sentences, features,
                                                  vocabulary, args, work_dir)
            if slots:
                folder = os.path.join("recogniser", "%s_batches" % name)
                os.makedirs(os.path.join(work_dir, folder))
                summary["splits"][name]["recogniser_steps"] = recogniser.write_recogniser_split(
                    list(dict.fromkeys(s.video for s in split_sentences)), tuples, slots,
                    features, args.streams, split_rng(args.seed, name, "recogniser"),
                    os.path.join(work_dir, folder), listed_path(args.out, folder))
            progress("split %s: %s" % (name, json.dumps(summary["splits"][name])))
        with open(os.path.join(work_dir, "summary.json"), "w", encoding="utf-8") as out:
            json.dump(summary, out, indent=1, sort_keys=True)
            out.write("\n")
    publish_atomically(args.out, args.force, write_into)
    print("wrote %s" % args.out)


def main(argv=None):
    args = parse_arguments(argv)
    return run_reporting_errors(PROGRAM, run, args)


if __name__ == "__main__":
    sys.exit(main())
