"""`lrcn-activity-score` (python -m lrcn_apps.activity.run_eval): run a trained activity net over the
test videos with LRCN's protocol and write the per-video probabilities `lrcn-activity-eval` reads.

The protocol (classify_video.py in LisaAnne/lisa-caffe-public@lstm_video_deploy, and
lrcn_apps.activity.evaluate): every test video is cut into clips of T = 16 frames starting every 8
frames (the last clip ends on the last frame); every frame is cropped 10 ways (4 corners and the
centre, and their mirrors); the net's softmax is averaged over the crops of a frame, then over
all frames of all clips of the video.

The net file provides both what to read and how to run:
- its TEST data layer (a VideoData layer selected by `--stage` plus "test-on-test") gives the
  list of test videos, the frame size, the mean / scale and is_flow;
- its "deploy" stage (`--stage` plus "deploy") replaces the data layer by an Input layer:
  data (T * N, 3, h, w) and, for LRCN, clip_markers (T * N); its "probs" top is the softmax.
  N columns are filled per forward pass, each column one (clip, crop) pair; the single-frame
  net reads the same columns frame by frame.

Crops: `--crops 10` (the paper), 5 (no mirrors) or 1 (centre). The default, `auto`, is 10 when
the data layer mirrors (transform_param.mirror: true) and 5 otherwise: a net trained without
mirroring has never seen mirrored frames (and on the bundled motion dataset a mirrored clip
shows the mirrored class: MoveLeft for MoveRight).

Example:
    python -m lrcn_apps.activity.run_eval --net nets/lrcn_activity.prototxt --stage rgb \\
        --weights runs/activity/lrcn_rgb_iter_1500.caffemodel \\
        --out runs/activity/lrcn_rgb_test_probs.npz
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from runtime import threads

PROG = "lrcn-activity-score"
DATA_STAGE = "test-on-test"
DEPLOY_STAGE = "deploy"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Score test videos with a trained LRCN activity net (clips of 16 frames\n"
                    "every 8 frames, crops averaged) and write per-video class probabilities\n"
                    "(.npz) for lrcn-activity-eval.",
        epilog="example:\n"
               f"  {PROG} --net nets/lrcn_activity.prototxt --stage rgb \\\n"
               "      --weights runs/activity/lrcn_rgb_iter_1500.caffemodel \\\n"
               "      --out runs/activity/lrcn_rgb_test_probs.npz\n"
               f"  {PROG} --net nets/lrcn_activity.prototxt --stage flow \\\n"
               "      --weights runs/activity/lrcn_flow_iter_1500.caffemodel \\\n"
               "      --out runs/activity/lrcn_flow_test_probs.npz",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--net", required=True, help="net .prototxt with a TEST VideoData layer "
                        "and a 'deploy' stage")
    parser.add_argument("--weights", required=True, help="trained weights (.caffemodel)")
    parser.add_argument("--stage", action="append", default=[],
                        help="net stage(s) selecting the stream, e.g. rgb or flow (repeatable "
                             "or comma-separated)")
    parser.add_argument("--out", required=True, type=Path, help="output .npz")
    parser.add_argument("--list", help="video list to score instead of the data layer's "
                        "source (`frame_folder label num_frames` lines)")
    parser.add_argument("--clip-length", type=int, default=16, metavar="T",
                        help="frames per test clip (default 16)")
    parser.add_argument("--stride", type=int, default=8,
                        help="frames between test clip starts (default 8)")
    parser.add_argument("--crops", choices=("auto", "1", "5", "10"), default="auto",
                        help="crops per frame: 10 (corners + centre, mirrored too), 5, 1 "
                             "(centre); auto: 10 if the data layer mirrors, else 5")
    parser.add_argument("--repeat-tail", action="store_true",
                        help="classify_video.py's clip positions exactly (the last clip "
                             "counted again for every stride position past it)")
    parser.add_argument("--max-videos", type=int, metavar="K",
                        help="score only the first K videos of the list (quick checks)")
    parser.add_argument("--gpu", help="CUDA device number")
    parser.add_argument("--quiet", action="store_true")
    threads.add_argument(parser)
    return parser


def stages_of(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(s for value in values for s in value.split(",") if s)


def test_data_layer(net_path: str, stages: tuple[str, ...]):
    """The VideoData layer of the net's TEST phase for these stages (+ test-on-test)."""
    import compiler
    from compiler.errors import CompileError

    from lrcn_apps.activity import video_shapes
    compiled = compiler.compile_net(net_path, "TEST", stages + (DATA_STAGE,))
    layers = [layer for layer in compiled.layers if layer.type == video_shapes.LAYER_TYPE]
    if not layers:
        raise CompileError(f"no {video_shapes.LAYER_TYPE} layer in the TEST phase with stages "
                           f"{', '.join(stages + (DATA_STAGE,))}", net_path,
                           hint="the test videos, mean and frame size come from it")
    return layers[0]


def crop_table(mode: str, mirror: bool, frame_size, crop_size) -> np.ndarray:
    """(crops, 3) rows (y, x, mirror) in caffe.io.oversample's order."""
    from lrcn_apps.activity.clips import ten_crop_offsets
    table = ten_crop_offsets(frame_size, crop_size)
    count = (10 if mirror else 5) if mode == "auto" else int(mode)
    if count == 1:
        return table[4:5]
    return table[:count]


class Scorer:
    """Runs the deploy net over (video, clip, crop) columns, N per forward pass."""

    def __init__(self, net, clip_length, transform, source):
        import torch

        self.torch = torch
        self.net = net
        inputs = {layer.tops[i]: layer.top_shapes[i] for layer in net.compiled.layers
                  if layer.type == "Input" for i in range(len(layer.tops))}
        if "data" not in inputs:
            raise ValueError("the deploy net has no Input top 'data'")
        rows = inputs["data"][0]
        if rows % clip_length:
            raise ValueError(f"the deploy net's data has {rows} rows, not a multiple of the "
                             f"clip length {clip_length}")
        self.T, self.N = clip_length, rows // clip_length
        self.crop = tuple(inputs["data"][2:])
        self.markers = "clip_markers" in inputs
        self.transform = transform
        self.source = source

    def run(self, columns):
        """columns: [(video, frames (T,), y, x, mirror)] (at most N) -> (T, len, C) probs."""
        from lrcn_apps.activity.clips import clip_markers
        torch = self.torch
        data = np.zeros((self.T, self.N, 3) + self.crop, np.float32)
        for n, (video, frames, y, x, mirror) in enumerate(columns):
            data[:, n] = self.transform(self.source.clip(video, frames), y, x, mirror)
        for n in range(len(columns), self.N):       # pad a last, partial batch
            data[:, n] = data[:, 0]
        feed = {"data": torch.from_numpy(data.reshape((self.T * self.N,) + data.shape[2:]))}
        if self.markers:
            feed["clip_markers"] = torch.from_numpy(clip_markers(self.T, self.N))
        with torch.no_grad():
            probs = self.net(**feed)["probs"].detach().cpu().double().numpy()
        probs = probs.reshape(self.T, self.N, -1)
        return probs[:, :len(columns)]


def score(args) -> dict:
    from runtime.net import Net
    from lrcn_apps.activity.clips import evaluation_clip_frames
    from lrcn_apps.activity.evaluate import average_frame_probabilities, save_video_probabilities
    from lrcn_apps.activity.video_layer import ClipTransform, VideoSource

    stages = stages_of(args.stage)
    layer = test_data_layer(args.net, stages)
    param = type(layer.param)()
    param.CopyFrom(layer.param)
    if args.list:
        param.video_data_param.source = os.path.abspath(args.list)
        param.video_data_param.root_folder = ""
    file = layer.location[0] if layer.location else args.net
    source = VideoSource(param, file, tuple(layer.location or (file, None, None)))
    transform = ClipTransform(param, "TEST", file, tuple(layer.location or (file, None, None)))
    net = Net(args.net, weights=args.weights, phase="TEST", stages=stages + (DEPLOY_STAGE,))
    if args.gpu is not None:
        net.to(f"cuda:{int(args.gpu)}")
    scorer = Scorer(net, args.clip_length, transform, source)
    frame_size = source.size or source.frame_size()
    if transform.crop_size(frame_size) != scorer.crop:
        raise ValueError(f"the deploy net takes {scorer.crop} crops but the data layer gives "
                         f"{transform.crop_size(frame_size)}")
    crops = crop_table(args.crops, transform.mirror, frame_size, scorer.crop)

    videos = list(range(len(source)))[:args.max_videos]
    columns = []                                  # (video, clip index, crop index, column)
    for video in videos:
        clips = evaluation_clip_frames(int(source.frame_counts[video]), args.clip_length,
                                       args.stride, args.repeat_tail)
        for c, frames in enumerate(clips):
            for k, (y, x, mirror) in enumerate(crops):
                columns.append((video, c, k, (video, frames, int(y), int(x), bool(mirror))))
    per_video = {video: {} for video in videos}   # video -> clip -> (T, crops, C)
    started = time.perf_counter()
    for begin in range(0, len(columns), scorer.N):
        chunk = columns[begin:begin + scorer.N]
        probs = scorer.run([column for *_, column in chunk])
        for n, (video, c, k, _) in enumerate(chunk):
            clip = per_video[video].setdefault(c, np.zeros((args.clip_length, len(crops),
                                                            probs.shape[2])))
            clip[:, k] = probs[:, n]
        if not args.quiet and (begin // scorer.N) % 50 == 0:
            print(f"{PROG}: {begin + len(chunk)}/{len(columns)} clip crops", file=sys.stderr)
    probabilities = np.stack([average_frame_probabilities([per_video[v][c]
                                                           for c in sorted(per_video[v])])
                              for v in videos])
    labels = source.labels[videos]
    names = class_names(source.list_file, probabilities.shape[1])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_video_probabilities(args.out, [source.name(v) for v in videos], labels, probabilities,
                             names)
    accuracy = float(np.mean(np.argmax(probabilities, axis=1) == labels))
    return {"videos": len(videos), "columns": len(columns), "crops": len(crops),
            "accuracy": accuracy, "seconds": time.perf_counter() - started}


def class_names(list_file: str, count: int):
    """Class names from classInd.txt beside the list (lrcn-activity-data copies it there)."""
    from lrcn_apps.activity.errors import ActivityError
    from lrcn_apps.activity.lists import class_names_by_label, read_class_index
    path = Path(list_file).with_name("classInd.txt")
    if not path.is_file():
        return None
    try:
        names = class_names_by_label(read_class_index(path))
    except ActivityError:
        return None
    return names if len(names) == count else None


def main(argv: Sequence[str] | None = None) -> int:
    from compiler.errors import CompileError
    from lrcn_apps.activity.errors import ActivityError

    args = build_parser().parse_args(argv)
    threads.configure(args.threads)
    if args.clip_length < 1 or args.stride < 1:
        print(f"{PROG}: error: --clip-length and --stride must be positive", file=sys.stderr)
        return 2
    try:
        result = score(args)
    except (CompileError, ActivityError, ValueError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    print(f"{PROG}: {result['videos']} videos, {result['columns']} clip crops "
          f"({result['crops']} crops per frame) in {result['seconds']:.1f} s; video accuracy "
          f"{100 * result['accuracy']:.2f}% -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
