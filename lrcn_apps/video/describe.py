"""lrcn-describe: sentences for videos from a trained S2VT, mean-pool or TACoS-style net.

The deploy net runs one time step for N streams per call and carries the LSTM state between
calls (nets/s2vt_deploy.prototxt, nets/video_meanpool_deploy.prototxt,
nets/video_tacos_deploy.prototxt). Its inputs say how a video enters:

- S2VT (``frames_fc7``, ``stage_indicator``): the frames are read first, one step each (cont 0
  at the first frame, then 1; word 0; stage 0), then the words are decoded with a zero frame,
  stage 1 and cont 1, the first word step feeding word 0, as the authors' s2vt_captioner.py
  does. Videos of different lengths share a batch right-aligned: a shorter video's steps before
  its first frame are fed with cont 0, which resets the LSTMs, so its state when its first frame
  arrives is exactly the state it would have alone;
- static input (``mean_fc7``): the mean of the frame features (or the recogniser's label vector
  for the TACoS-style decoders) is the LSTMs' static input at every word step; the first word
  step feeds cont 0 and word 0, as lrcn-caption does.

Decoding (greedy, beam search, sampling) is lrcn_apps.generation's, shared with lrcn-caption.
"""

import argparse
import json
import os
import sys

import numpy as np
import torch

import compiler
from compiler.errors import CompileError
from runtime import threads
from lrcn_apps.caption.coco import DataError, load_json
from lrcn_apps.caption.generate import check_positive, device_from, write_output
from lrcn_apps.caption.text import Vocabulary, VocabularyError
from lrcn_apps.cli import run_reporting_errors
from lrcn_apps.generation import (StepDecoder, add_decoding_arguments, build_step_net,
                              check_decoding_arguments, decode_batch, describe, load_weights)
from lrcn_apps.video.features import FrameFeatures, find_video, read_features, read_frames
from lrcn_apps.video.sentences import video_numbers

PROGRAM = "lrcn-describe"
DEFAULT_NET = "nets/s2vt_deploy.prototxt"
DEFAULT_STAGES = ("factored", "2-layer")
DEFAULT_BATCH_SIZE = 64
CONT, WORD_INPUT, LOGITS = "cont_sentence", "input_sentence", "predict"
FRAME_INPUT, STAGE_INPUT, STATIC_INPUT = "frames_fc7", "stage_indicator", "mean_fc7"

EXAMPLES = """\
examples:
  # S2VT on the bundled test split (features from lrcn-video-data), COCO JSON for evaluation
  lrcn-describe --weights runs/video/s2vt_iter_3000.caffemodel \\
      --features data/video_actions/prepared/features.h5 \\
      data/video_actions/prepared/test_references.json --format coco -o s2vt_test.json
  lrcn-caption-eval --results s2vt_test.json \\
      --annotations data/video_actions/prepared/test_references.json

  # the mean-pool model, beam search of width 3
  lrcn-describe --net nets/video_meanpool_deploy.prototxt \\
      --weights runs/video/meanpool_iter_3000.caffemodel --beam 3 \\
      --features data/video_actions/prepared/features.h5 vid449 vid450

  # video files, features computed on the fly with the net that made the training features
  lrcn-describe --weights runs/video/s2vt_iter_3000.caffemodel \\
      --feature-net nets/video_frame_features.prototxt --feature-blob pool_frame \\
      data/video_actions/videos/vid449.avi data/video_actions/videos/vid450.avi

inputs: video files or frame folders (with --feature-net), video ids (with --features), or a
COCO references JSON whose images' file_name are video ids (lrcn-video-data writes them).
exit status: 0 success, 1 a problem with an input file, 2 bad usage.
"""


class VideoDescriber(StepDecoder):
    """A trained video-description net split into its step-wise word net; the context of a
    batch is a list of (frames, D) feature arrays, one per video."""

    def __init__(self, deploy_net=DEFAULT_NET, weights=None, vocabulary=None,
                 stages=DEFAULT_STAGES, device="cpu"):
        self.device = torch.device(device)
        self.stages = tuple(stages)
        self.vocabulary = (vocabulary if isinstance(vocabulary, Vocabulary)
                           else Vocabulary.load(vocabulary))
        document = compiler.load_file(deploy_net, "net")
        self.word_net = build_step_net(document, self.stages, LOGITS)
        inputs = set(self.word_net.inputs)
        self.reads_frames = {FRAME_INPUT, STAGE_INPUT} <= inputs
        needed = {CONT, WORD_INPUT} | ({FRAME_INPUT, STAGE_INPUT} if self.reads_frames
                                       else {STATIC_INPUT})
        if not needed <= inputs or LOGITS not in self.word_net.outputs:
            raise DataError("%s: with stages %s the net must take %s (S2VT) or %s (static "
                            "input) and produce %r; it takes %s" % (
                                deploy_net, ",".join(self.stages),
                                ", ".join((CONT, WORD_INPUT, FRAME_INPUT, STAGE_INPUT)),
                                ", ".join((CONT, WORD_INPUT, STATIC_INPUT)), LOGITS,
                                ", ".join(self.word_net.inputs) or "nothing"))
        compiled = self.word_net.compiled
        classes = compiled.blobs[compiled.latest[LOGITS]][-1]
        if classes != self.vocabulary.net_size:
            raise DataError("%s: predict has %d outputs but the vocabulary has %d words + EOS "
                            "= %d: wrong vocabulary file?" % (deploy_net, classes,
                                                              len(self.vocabulary),
                                                              self.vocabulary.net_size))
        feature_input = FRAME_INPUT if self.reads_frames else STATIC_INPUT
        self.feature_dim = compiled.blobs[feature_input][-1]
        if weights:
            load_weights([self.word_net], weights, self.stages)
        self.word_net.to(self.device)
        self.word_net.eval()

    def _repeat(self, context, copies):
        return [video for video in context for _ in range(copies)]

    def _check(self, context):
        for frames in context:
            if frames.ndim != 2 or frames.shape[1] != self.feature_dim or not len(frames):
                raise DataError("features of shape %s: the net takes (frames, %d)"
                                % (frames.shape, self.feature_dim))

    def _start(self, context):
        self._check(context)
        self.word_net.reset_state()
        if self.reads_frames:
            return self._encode(context)
        static = torch.as_tensor(np.stack([frames.mean(axis=0, dtype=np.float64)
                                           for frames in context]),
                                 dtype=torch.float32, device=self.device)
        return lambda words, first: self._word_step(words, {STATIC_INPUT: static},
                                                    cont=0.0 if first else 1.0)

    def _encode(self, context):
        """Feed every video's frames (right-aligned, module docstring); returns the word step."""
        count, longest = len(context), max(len(frames) for frames in context)
        starts = torch.as_tensor([longest - len(frames) for frames in context],
                                 device=self.device)
        padded = np.zeros((longest, count, self.feature_dim), dtype=np.float32)
        for stream, frames in enumerate(context):
            padded[longest - len(frames):, stream] = frames
        padded = torch.as_tensor(padded, device=self.device)
        zeros = torch.zeros((1, count), device=self.device)
        for t in range(longest):
            self.word_net(**{FRAME_INPUT: padded[t:t + 1], CONT: (t > starts).float()[None],
                             WORD_INPUT: zeros, STAGE_INPUT: zeros[..., None]})
        decoding = {FRAME_INPUT: torch.zeros((1, count, self.feature_dim), device=self.device),
                    STAGE_INPUT: torch.ones((1, count, 1), device=self.device)}
        return lambda words, first: self._word_step(words, decoding, cont=1.0)

    def _word_step(self, words, inputs, cont):
        n = words.shape[0]
        outputs = self.word_net(**{CONT: torch.full((1, n), cont, device=self.device),
                                   WORD_INPUT: words.reshape(1, n).to(torch.float32), **inputs})
        return torch.log_softmax(outputs[LOGITS].reshape(n, -1).double(), dim=1)


# ------------------------------------------------------------------------------ inputs

def collect_videos(arguments, features_file, video_root):
    """Positional inputs -> [(video id, path or None)]; None: look the id up in --features."""
    videos = []
    for argument in arguments:
        if argument.lower().endswith(".json") and os.path.isfile(argument):
            document = load_json(argument)
            images = document.get("images") if isinstance(document, dict) else None
            if not isinstance(images, list) or not images:
                raise DataError("%s: expected a COCO JSON with a non-empty 'images' list"
                                % argument)
            for index, image in enumerate(images):
                name = image.get("file_name") if isinstance(image, dict) else None
                if not isinstance(name, str) or not name:
                    raise DataError("%s: images[%d]: needs a 'file_name' (the video id)"
                                    % (argument, index))
                videos.append((name, None if features_file else
                               os.path.join(video_root or os.path.dirname(argument), name)))
        elif os.path.exists(argument):
            if features_file:
                raise DataError("%s: a video file, but --features gives the features: name "
                                "the video ids instead (or use --feature-net)" % argument)
            name = os.path.splitext(os.path.basename(os.path.normpath(argument)))[0]
            videos.append((name, argument))
        elif features_file:
            videos.append((argument, None))
        else:
            raise DataError("%s: no such video file or folder" % argument)
    return videos


def video_features(videos, args):
    """{video id: (frames, D)} for the inputs, from --features or the feature net."""
    if args.features:
        stored = read_features(args.features)
        missing = [name for name, _ in videos if name not in stored]
        if missing:
            raise DataError("%s: no features for video(s) %s"
                            % (args.features, ", ".join(missing[:5])))
        return {name: stored[name] for name, _ in videos}
    net = FrameFeatures(args.feature_net, args.feature_blob, args.feature_weights,
                        tuple(args.feature_stage or ()), device_from(args.gpu, PROGRAM))
    features = {}
    for name, path in videos:
        if not os.path.exists(path):
            # A references JSON names video ids: find the file or frame folder of each.
            path = find_video(os.path.dirname(path), name)
        features[name] = net(read_frames(path, args.every))
    return features


def generate(describer, videos, features, args):
    generator = torch.Generator(device=describer.device).manual_seed(args.seed)
    captions = []
    names = [name for name, _ in videos]
    for first in range(0, len(names), args.batch_size):
        context = [features[name] for name in names[first:first + args.batch_size]]
        if args.blind:
            context = [np.zeros_like(frames) for frames in context]
        captions.extend(decode_batch(describer, context, args, generator))
    return captions


def format_output(describer, videos, captions, output_format):
    if output_format == "coco":
        numbers = video_numbers(dict.fromkeys(name for name, _ in videos))
        return json.dumps([{"image_id": numbers[name], "caption": describer.text(caption)}
                           for (name, _), caption in zip(videos, captions)], indent=1) + "\n"
    return "".join("%s\t%s\n" % (name, describer.sentence(caption))
                   for (name, _), caption in zip(videos, captions))


# ------------------------------------------------------------------------------ command line

def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROGRAM, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Describe videos with a trained S2VT / mean-pool / TACoS-style net "
                    "(greedy, beam search or sampling).")
    parser.add_argument("inputs", nargs="+", metavar="VIDEO|ID|JSON")
    model = parser.add_argument_group("model")
    model.add_argument("--weights", required=True, metavar="CAFFEMODEL",
                       help="trained weights (a snapshot of the training net)")
    model.add_argument("--net", default=DEFAULT_NET, metavar="PROTOTXT",
                       help="step-wise deploy net (default %(default)s)")
    model.add_argument("--stage", action="append", metavar="STAGE[,STAGE]",
                       help="the variant's stages, as trained (default %s)"
                            % ",".join(DEFAULT_STAGES))
    model.add_argument("--vocabulary", default="data/video_actions/prepared/vocabulary.txt",
                       metavar="FILE", help="vocabulary file (default %(default)s)")
    model.add_argument("--gpu", type=int, metavar="ID", help="run on CUDA device ID")
    model.add_argument("--blind", action="store_true",
                       help="zero the video features: the blind baseline of the same model")
    features = parser.add_argument_group("features (one of --features / --feature-net)")
    features.add_argument("--features", metavar="H5", help="features.h5 of lrcn-video-data")
    features.add_argument("--feature-net", metavar="PROTOTXT",
                          help="compute frame features with this net")
    features.add_argument("--feature-blob", metavar="NAME", help="its features blob")
    features.add_argument("--feature-weights", metavar="CAFFEMODEL", help="its weights")
    features.add_argument("--feature-stage", action="append", metavar="STAGE")
    features.add_argument("--every", type=int, default=1, metavar="K",
                          help="use every K-th frame (default %(default)s)")
    add_decoding_arguments(parser, "video")
    io = parser.add_argument_group("input and output")
    io.add_argument("--video-root", metavar="DIR",
                    help="folder of a references JSON's videos (default: the JSON's folder)")
    io.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="B")
    io.add_argument("--format", choices=("text", "coco"), default="text",
                    help="text: 'video<TAB>sentence' lines; coco: results JSON for "
                         "lrcn-caption-eval (default %(default)s)")
    io.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    threads.add_argument(parser)
    return parser


def check_arguments(parser, args):
    check_decoding_arguments(parser, args)
    check_positive(parser, args, ("batch_size", "every"))
    if bool(args.features) == bool(args.feature_net):
        parser.error("give one of --features and --feature-net")
    if args.feature_net and not args.feature_blob:
        parser.error("--feature-net needs --feature-blob")


def run(args):
    stages = tuple(s for value in (args.stage or [",".join(DEFAULT_STAGES)])
                   for s in value.split(",") if s)
    for path, what in ((args.weights, "weights file"), (args.net, "deploy net"),
                       (args.vocabulary, "vocabulary file")):
        if not os.path.isfile(path):
            raise DataError("%s: %s not found" % (path, what))
    videos = collect_videos(args.inputs, args.features, args.video_root)
    try:
        describer = VideoDescriber(args.net, args.weights, args.vocabulary, stages,
                                   device_from(args.gpu, PROGRAM))
    except CompileError as error:
        raise DataError(describe(error)) from None
    except VocabularyError as error:
        raise DataError(str(error)) from None
    captions = generate(describer, videos, video_features(videos, args), args)
    write_output(format_output(describer, videos, captions, args.format), args.output)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    check_arguments(parser, args)
    threads.configure(args.threads)
    return run_reporting_errors(PROGRAM, run, args)


if __name__ == "__main__":
    sys.exit(main())
