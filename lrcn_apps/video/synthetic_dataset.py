"""A tiny synthetic video-description dataset whose sentences need the ORDER of the frames.

Every video (32 x 32 RGB, 8-12 frames, 25 fps) shows a stationary object and a moving subject
on a dark grainy background. Its sentences name three things:

- the subject: a red or blue square or circle (8 px), the thing that moves;
- the object: a green or yellow square or circle, standing still near the centre;
- the action, one of two pairs of time-reversed motions:
  "approaches" / "leaves" (a straight line towards / away from the object) and
  "circles ... clockwise" / "anticlockwise" (one full loop around it).

The two actions of a pair visit the same positions, one in the reverse order of the other (a
loop starts and ends at the same angle and visits evenly spaced angles), so the MEAN of the
frames is the same for both: a model that averages frame features (the mean-pool baseline) can
tell the pair but not which of the two, while one that reads the frames in order (S2VT) can.

Each video has three reference sentences (paraphrases of the same tuple), S2VT's
``vid<TAB>sentence`` form: ``sentences_train.txt`` (vid1-vid384), ``sentences_val.txt``
(vid385-vid448) and ``sentences_test.txt`` (vid449-vid512), one video of each of the 64
(subject, action, object) tuples in val and test and six in train. ``tuples.txt`` holds the
tuple of every video (``vid<TAB>subject<TAB>action<TAB>object``), the labels the TACoS-style
recogniser is trained on. Regenerate (byte-identical) with

    python -m lrcn_apps.video.synthetic_dataset --out data/video_actions --overwrite
"""

import argparse
import itertools
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lrcn_apps.activity.video_io import write_video

FRAME_SIZE = 32
SHAPE_SIZE = 8
FRAME_COUNT_RANGE = (8, 12)            # inclusive
FPS = 25.0
SUBJECT_COLOURS = {"red": (220, 40, 40), "blue": (60, 90, 240)}
OBJECT_COLOURS = {"green": (40, 200, 60), "yellow": (235, 220, 40)}
SHAPES = ("square", "circle")
ACTIONS = ("approaches", "leaves", "circles clockwise", "circles anticlockwise")
# Videos per tuple in each split; 64 tuples.
SPLITS = (("train", 6), ("val", 1), ("test", 1))
PARAPHRASES = {
    "approaches": ("{s} approaches {o}", "{s} moves towards {o}", "{s} comes closer to {o}"),
    "leaves": ("{s} leaves {o}", "{s} moves away from {o}", "{s} goes away from {o}"),
    "circles clockwise": ("{s} circles {o} clockwise", "{s} goes round {o} clockwise",
                          "{s} moves clockwise around {o}"),
    "circles anticlockwise": ("{s} circles {o} anticlockwise",
                              "{s} goes round {o} anticlockwise",
                              "{s} moves anticlockwise around {o}"),
}
FAR, NEAR, LOOP_RADIUS = 13.0, 6.0, 9.0
DATASET_ENTRIES = ("videos", "sentences_train.txt", "sentences_val.txt", "sentences_test.txt",
                   "tuples.txt")


@dataclass(frozen=True)
class VideoTuple:
    subject: str     # "red square"
    action: str      # one of ACTIONS
    object: str      # "green circle"

    def sentences(self):
        fill = {"s": "a " + self.subject, "o": "the " + self.object}
        return [template.format(**fill) for template in PARAPHRASES[self.action]]


def all_tuples():
    subjects = ["%s %s" % pair for pair in itertools.product(SUBJECT_COLOURS, SHAPES)]
    objects = ["%s %s" % pair for pair in itertools.product(OBJECT_COLOURS, SHAPES)]
    return [VideoTuple(s, a, o) for s, a, o in itertools.product(subjects, ACTIONS, objects)]


def dataset_videos():
    """[(video id, split, VideoTuple)] in id order: vid1.. train, then val, then test."""
    videos = []
    for split, copies in SPLITS:
        for _ in range(copies):
            for video_tuple in all_tuples():
                videos.append(("vid%d" % (len(videos) + 1), split, video_tuple))
    return videos


def subject_path(action, num_frames, angle, rng):
    """(num_frames, 2) subject centres relative to the object, in (y, x) pixels."""
    if action in ("approaches", "leaves"):
        radii = np.linspace(FAR, NEAR, num_frames)
        if action == "leaves":
            radii = radii[::-1]
        return np.stack([radii * np.sin(angle), radii * np.cos(angle)], axis=1)
    # Evenly spaced angles over one loop, so both directions visit the same positions
    # (image y points down: increasing angle turns clockwise on screen).
    sign = 1.0 if action == "circles clockwise" else -1.0
    angles = angle + sign * 2.0 * np.pi * np.arange(num_frames) / num_frames
    return LOOP_RADIUS * np.stack([np.sin(angles), np.cos(angles)], axis=1)


def draw_shape(frame, centre, shape, colour):
    """Paint a SHAPE_SIZE square or disc centred at (y, x), clipped to the frame."""
    ys, xs = np.mgrid[0:frame.shape[0], 0:frame.shape[1]]
    dy, dx = ys + 0.5 - centre[0], xs + 0.5 - centre[1]
    half = SHAPE_SIZE / 2.0
    if shape == "square":
        mask = (np.abs(dy) <= half) & (np.abs(dx) <= half)
    else:
        mask = dy * dy + dx * dx <= half * half
    frame[mask] = colour


def render_video(video_tuple, seed, number):
    """(n, 32, 32, 3) uint8 frames; a pure function of (tuple, seed, video number)."""
    rng = np.random.default_rng((seed, number))
    num_frames = int(rng.integers(FRAME_COUNT_RANGE[0], FRAME_COUNT_RANGE[1] + 1))
    object_centre = FRAME_SIZE / 2.0 + rng.uniform(-2.0, 2.0, size=2)
    path = subject_path(video_tuple.action, num_frames, rng.uniform(0, 2 * np.pi), rng)
    background = np.clip(35.0 + rng.normal(0.0, 6.0, (FRAME_SIZE, FRAME_SIZE, 3)), 0, 255)
    subject_colour, subject_shape = video_tuple.subject.split()
    object_colour, object_shape = video_tuple.object.split()
    frames = np.empty((num_frames, FRAME_SIZE, FRAME_SIZE, 3), dtype=np.uint8)
    for t in range(num_frames):
        frame = background.copy()
        draw_shape(frame, object_centre, object_shape, OBJECT_COLOURS[object_colour])
        draw_shape(frame, object_centre + path[t], subject_shape,
                   SUBJECT_COLOURS[subject_colour])
        frames[t] = np.rint(frame).astype(np.uint8)
    return frames


def write_dataset(out, seed=0, overwrite=False, log=None):
    """Write videos/ and the sentence and tuple files into `out` (other files, such as its
    README, are left alone); built in a temporary folder and moved into place at the end."""
    out = Path(out)
    existing = [name for name in DATASET_ENTRIES if (out / name).exists()]
    if existing and not overwrite:
        raise FileExistsError("%s: already holds %s (use --overwrite)"
                              % (out, ", ".join(existing)))
    out.mkdir(parents=True, exist_ok=True)
    videos = dataset_videos()
    staging = Path(tempfile.mkdtemp(prefix=".video-dataset-", dir=out))
    try:
        (staging / "videos").mkdir()
        sentences = {split: [] for split, _ in SPLITS}
        tuples = []
        for number, (video_id, split, video_tuple) in enumerate(videos, start=1):
            write_video(staging / "videos" / (video_id + ".avi"),
                        render_video(video_tuple, seed, number), fps=FPS)
            sentences[split].extend("%s\t%s" % (video_id, s) for s in video_tuple.sentences())
            tuples.append("\t".join((video_id, video_tuple.subject, video_tuple.action,
                                     video_tuple.object)))
            if log is not None and (number % 64 == 0 or number == len(videos)):
                log("[%d/%d] %s" % (number, len(videos), video_id))
        for split, lines in sentences.items():
            (staging / ("sentences_%s.txt" % split)).write_text(
                "".join(line + "\n" for line in lines), encoding="utf-8")
        (staging / "tuples.txt").write_text("".join(line + "\n" for line in tuples),
                                            encoding="utf-8")
        for name in DATASET_ENTRIES:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            os.replace(staging / name, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return len(videos)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m lrcn_apps.video.synthetic_dataset",
        description="Write the synthetic video-description dataset (S2VT's sentence layout).",
        epilog="example:\n  python -m lrcn_apps.video.synthetic_dataset --out data/video_actions "
               "--overwrite", formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="dataset folder")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing dataset in --out")
    args = parser.parse_args(argv)
    try:
        count = write_dataset(args.out, args.seed, args.overwrite,
                              log=lambda text: print(text, file=sys.stderr))
    except (FileExistsError, OSError) as error:
        print("%s: error: %s" % (parser.prog, error), file=sys.stderr)
        return 1
    print("wrote %d videos to %s" % (count, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
