"""Tiny video datasets for the video-description tests."""

import os

import numpy as np
from PIL import Image

from lrcn_apps.video import synthetic_dataset
from lrcn_apps.video.synthetic_dataset import VideoTuple

TUPLES = [VideoTuple("red square", "approaches", "green circle"),
          VideoTuple("blue circle", "leaves", "yellow square"),
          VideoTuple("red circle", "circles clockwise", "green square")]


def write_frame_folders(root, count=3, seed=0):
    """`count` videos as frame folders root/vid<k>/frame_<t>.png; returns their sentences
    as S2VT lines."""
    lines = []
    for number in range(1, count + 1):
        video_tuple = TUPLES[(number - 1) % len(TUPLES)]
        folder = os.path.join(root, "vid%d" % number)
        os.makedirs(folder)
        for t, frame in enumerate(synthetic_dataset.render_video(video_tuple, seed, number)):
            Image.fromarray(frame).save(os.path.join(folder, "frame_%03d.png" % t))
        lines.extend("vid%d\t%s" % (number, s) for s in video_tuple.sentences()[:2])
    return lines


def write_lines(path, lines):
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in lines))
    return str(path)


def run(main, argv):
    try:
        return main(argv)
    except SystemExit as done:
        return done.code


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FEATURE_NET = os.path.join(ROOT, "nets", "video_frame_features.prototxt")
