"""`lrcn-activity-data`: video files -> LRCN's frame folders, flow images and video lists.

Output folder (every path in a list file is relative to the output folder):

    OUT/frames/v_X/v_X.0001.jpg ...          every frame of video v_X (1-based, 4 digits)
    OUT/flow_images/v_X/v_X.0001.jpg ...     flow image i = flow from frame i to i + 1 (n - 1)
    OUT/<split>_rgb.txt                      `frames/v_X label num_frames` per video
    OUT/<split>_flow.txt                     `flow_images/v_X label num_flow_images` per video
    OUT/classInd.txt                         a copy of the class index, when one was given

<split> is the split file's name without its extension (trainlist01.txt -> trainlist01_rgb.txt);
the list lines keep the split file's order. A video named in several split files is extracted
once. Flow is Farneback flow between consecutive (resized) frames, encoded as in
lrcn_apps.activity.flow, and computed from the decoded frames before JPEG compression.

The whole tree is written into a temporary folder next to OUT and renamed to OUT at the end, so
a failed or interrupted run leaves no partial output (and an existing OUT is only replaced,
with --overwrite, once the new tree is complete).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from compiler.extras import MissingExtra
from lrcn_apps.activity.errors import ActivityError
from lrcn_apps.activity.flow import FarnebackParams, video_flow_images
from lrcn_apps.activity.lists import (SplitEntry, VideoListEntry, frame_file_name,
                                  read_class_index, read_split_file, write_video_list)
from lrcn_apps.activity.video_io import parse_size, read_video_frames, resize_frames

PROG = "lrcn-activity-data"
FRAMES_DIR = "frames"
FLOW_DIR = "flow_images"


@dataclass(frozen=True)
class PrepareOptions:
    videos: Path
    out: Path
    splits: tuple[Path, ...]
    class_index: Path | None = None
    label_base: int = 0
    size: tuple[int, int] | None = None
    fps: float | None = None
    flow: bool = True
    flow_params: FarnebackParams = field(default_factory=FarnebackParams)
    jpeg_quality: int = 95
    jobs: int = 1
    overwrite: bool = False


@dataclass(frozen=True)
class VideoJob:
    """One video to extract: where it is and what it is called."""

    name: str          # frame folder name, v_X
    source: Path       # the video file


@dataclass
class PrepareSummary:
    videos: int
    frames: int
    flow_images: int
    lists: dict[str, int]   # list file name -> number of lines


# ---------------------------------------------------------------------------------------------
# Planning: which videos, which lists

def read_splits(options: PrepareOptions) -> dict[Path, list[SplitEntry]]:
    class_index = None if options.class_index is None else read_class_index(options.class_index)
    return {split: read_split_file(split, class_index, options.label_base)
            for split in options.splits}


def unique_videos(splits: dict[Path, list[SplitEntry]], videos_root: Path) -> list[VideoJob]:
    """Each video once; the same name with another path or label is an error at its line."""
    seen: dict[str, tuple[SplitEntry, Path]] = {}
    jobs = []
    for split, entries in splits.items():
        for entry in entries:
            if entry.video in seen:
                first, first_split = seen[entry.video]
                if first.path != entry.path or first.label != entry.label:
                    raise ActivityError(
                        f"video '{entry.video}' is also listed as '{first.path}' label "
                        f"{first.label} at {first_split}:{first.line}", str(split), entry.line)
                continue
            seen[entry.video] = (entry, split)
            source = videos_root / entry.path
            if not source.is_file():
                raise ActivityError(f"video file not found: {source}", str(split), entry.line)
            jobs.append(VideoJob(entry.video, source))
    return jobs


def list_stems(splits: Sequence[Path]) -> list[str]:
    stems = [split.stem for split in splits]
    for stem in set(stems):
        if stems.count(stem) > 1:
            raise ActivityError(f"two split files are named '{stem}'; their lists would collide")
    return stems


# ---------------------------------------------------------------------------------------------
# Extracting one video

def save_jpeg(image: np.ndarray, path: Path, quality: int) -> None:
    from PIL import Image

    Image.fromarray(image).save(path, format="JPEG", quality=quality)


def extract_video(job: VideoJob, staging: Path, options: PrepareOptions) -> tuple[str, int]:
    """Write one video's frames (and flow images) under `staging`; returns (name, num_frames)."""
    frames = resize_frames(read_video_frames(job.source, options.fps), options.size)
    if options.flow and len(frames) < 2:
        raise ActivityError(f"has {len(frames)} frame; flow images need at least 2",
                            str(job.source))
    frame_folder = staging / FRAMES_DIR / job.name
    frame_folder.mkdir(parents=True)
    for index, frame in enumerate(frames):
        save_jpeg(frame, frame_folder / frame_file_name(job.name, index), options.jpeg_quality)
    if options.flow:
        flow_folder = staging / FLOW_DIR / job.name
        flow_folder.mkdir(parents=True)
        for index, image in enumerate(video_flow_images(frames, options.flow_params)):
            save_jpeg(image, flow_folder / frame_file_name(job.name, index), options.jpeg_quality)
    return job.name, len(frames)


def extract_all(jobs: list[VideoJob], staging: Path, options: PrepareOptions,
                progress: Callable[[str], None]) -> dict[str, int]:
    """Extract every video (in worker processes with jobs > 1); returns name -> num_frames."""
    counts: dict[str, int] = {}
    if options.jobs == 1:
        for job in jobs:
            name, count = extract_video(job, staging, options)
            counts[name] = count
            progress(name)
        return counts
    with ProcessPoolExecutor(max_workers=options.jobs) as pool:
        pending = {pool.submit(extract_video, job, staging, options) for job in jobs}
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for future in done:
                if future.exception() is not None:
                    for other in pending:
                        other.cancel()
                    raise future.exception()
                name, count = future.result()
                counts[name] = count
                progress(name)
    return counts


# ---------------------------------------------------------------------------------------------
# The whole run

def make_progress(total: int, quiet: bool) -> tuple[Callable[[str], None], Callable[[], None]]:
    """(tick, close): a tqdm bar on a terminal, else a log line every ~5% of the videos."""
    if quiet:
        return (lambda name: None), (lambda: None)
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=total, unit="video", file=sys.stderr)
        return (lambda name: bar.update(1)), bar.close
    done = [0]
    every = max(1, total // 20)

    def tick(name: str) -> None:
        done[0] += 1
        if done[0] % every == 0 or done[0] == total:
            print(f"{PROG}: [{done[0]}/{total}] {name}", file=sys.stderr)
    return tick, (lambda: None)


def write_lists(staging: Path, splits: dict[Path, list[SplitEntry]], counts: dict[str, int],
                flow: bool) -> dict[str, int]:
    written = {}
    for stem, entries in zip(list_stems(list(splits)), splits.values()):
        rgb = [VideoListEntry(f"{FRAMES_DIR}/{e.video}", e.label, counts[e.video])
               for e in entries]
        write_video_list(staging / f"{stem}_rgb.txt", rgb)
        written[f"{stem}_rgb.txt"] = len(rgb)
        if flow:
            flows = [VideoListEntry(f"{FLOW_DIR}/{e.video}", e.label, counts[e.video] - 1)
                     for e in entries]
            write_video_list(staging / f"{stem}_flow.txt", flows)
            written[f"{stem}_flow.txt"] = len(flows)
    return written


def publish(staging: Path, out: Path) -> None:
    """Rename the finished tree to `out`, replacing an old one only after the new one is whole."""
    if not out.exists():
        os.replace(staging, out)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.replace(out, retired / out.name)
    os.replace(staging, out)
    shutil.rmtree(retired, ignore_errors=True)


def prepare_dataset(options: PrepareOptions, quiet: bool = False) -> PrepareSummary:
    splits = read_splits(options)
    list_stems(list(splits))
    jobs = unique_videos(splits, options.videos)
    out = options.out
    if out.exists() and not out.is_dir():
        raise ActivityError("exists and is not a folder", str(out))
    if out.exists() and not options.overwrite:
        raise ActivityError("already exists (use --overwrite to replace it)", str(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        tick, close = make_progress(len(jobs), quiet)
        try:
            counts = extract_all(jobs, staging, options, tick)
        finally:
            close()
        written = write_lists(staging, splits, counts, options.flow)
        if options.class_index is not None:
            shutil.copyfile(options.class_index, staging / "classInd.txt")
        publish(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    frames = sum(counts.values())
    return PrepareSummary(len(jobs), frames, frames - len(jobs) if options.flow else 0, written)


# ---------------------------------------------------------------------------------------------
# Command line

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Extract video frames and LRCN flow images into frames/ and flow_images/\n"
                    "folders and write the video list files the LRCN data layer reads\n"
                    "(`frame_folder label num_frames` per line, paths relative to --out).",
        epilog="example (the synthetic motion dataset):\n"
               f"  {PROG} --videos data/activity_motion/videos \\\n"
               "      --split data/activity_motion/trainlist01.txt \\\n"
               "      --split data/activity_motion/testlist01.txt \\\n"
               "      --class-index data/activity_motion/classInd.txt \\\n"
               "      --out data/activity_motion/prepared --flow-winsize 7 --flow-levels 2\n"
               "example (UCF-101, official 1-based trainlist):\n"
               f"  {PROG} --videos UCF-101 --split ucfTrainTestlist/trainlist01.txt \\\n"
               "      --split ucfTrainTestlist/testlist01.txt \\\n"
               "      --class-index ucfTrainTestlist/classInd.txt --label-base 1 \\\n"
               "      --resize 240x320 --jobs 2 --out ucf101",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", required=True, type=Path, metavar="DIR",
                        help="folder the split files' paths are relative to (Class/v_X.avi)")
    parser.add_argument("--split", required=True, action="append", type=Path, dest="splits",
                        metavar="FILE",
                        help="split file with `Class/v_X.avi [label]` lines; repeat for several")
    parser.add_argument("--class-index", type=Path, metavar="FILE",
                        help="classInd.txt (`1 ClassName` lines): labels for lines without one, "
                             "and a check of those with one")
    parser.add_argument("--label-base", type=int, choices=(0, 1), default=0,
                        help="first label number in the split files (default 0, LRCN's lists; "
                             "1 for UCF-101's official trainlists)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="output folder (created)")
    parser.add_argument("--resize", type=size_argument, metavar="HxW",
                        help="resize every frame to HEIGHTxWIDTH, e.g. 240x320 (default: keep)")
    parser.add_argument("--fps", type=positive_float,
                        help="resample videos to this frame rate (default: every frame)")
    parser.add_argument("--no-flow", dest="flow", action="store_false",
                        help="extract RGB frames only")
    parser.add_argument("--flow-winsize", type=positive_int, default=FarnebackParams.winsize,
                        metavar="N",
                        help=f"Farneback window size (default {FarnebackParams.winsize})")
    parser.add_argument("--flow-levels", type=positive_int, default=FarnebackParams.levels,
                        metavar="N",
                        help=f"Farneback pyramid levels (default {FarnebackParams.levels})")
    parser.add_argument("--jpeg-quality", type=jpeg_quality, default=95, metavar="Q",
                        help="JPEG quality of frames and flow images, 1-100 (default 95)")
    parser.add_argument("--jobs", type=positive_int, default=1, metavar="N",
                        help="videos extracted in parallel (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    return parser


def size_argument(text: str) -> tuple[int, int]:
    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got '{text}'") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got '{text}'")
    return value


def jpeg_quality(text: str) -> int:
    value = positive_int(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"JPEG quality is 1-100, got {value}")
    return value


def options_from_args(args: argparse.Namespace) -> PrepareOptions:
    return PrepareOptions(
        videos=args.videos, out=args.out, splits=tuple(args.splits),
        class_index=args.class_index, label_base=args.label_base, size=args.resize,
        fps=args.fps, flow=args.flow,
        flow_params=FarnebackParams(winsize=args.flow_winsize, levels=args.flow_levels),
        jpeg_quality=args.jpeg_quality, jobs=args.jobs, overwrite=args.overwrite)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = prepare_dataset(options_from_args(args), quiet=args.quiet)
    except (ActivityError, MissingExtra) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # disk full, permissions: name the file, skip the traceback
        where = f"{error.filename}: " if error.filename else ""
        print(f"{PROG}: error: {where}{error.strerror or error}", file=sys.stderr)
        return 1
    lists = ", ".join(f"{name} ({count})" for name, count in summary.lists.items())
    print(f"{PROG}: {summary.videos} videos, {summary.frames} frames, "
          f"{summary.flow_images} flow images -> {args.out}; lists: {lists}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
