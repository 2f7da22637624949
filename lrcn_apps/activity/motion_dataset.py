"""A tiny synthetic video dataset whose classes differ only in how things move.

Every video shows one bright square (6 x 6 pixels) on a static textured background (32 x 32
frames, 24-32 frames per video). The class decides only the square's per-frame displacement:

    MoveRightSlow  (+1, 0)     MoveLeftSlow   (-1, 0)
    MoveRightFast  (+3, 0)     MoveLeftFast   (-3, 0)
    MoveDown       (0, +2)     MoveUp         (0, -2)
    CircleClockwise      a square loop: right, down, left, up, 4 frames each at 2 px/frame
    CircleAnticlockwise  the same loop the other way: right, up, left, down

The frame is a torus (the square leaves on one side and comes back on the other), so with a
uniform start position the square's position in ANY frame is uniform over the frame for
every class. Background texture, start position, loop phase, square colour and video length
are drawn from a generator seeded by (seed, group, clip) only: videos with the same group and
clip number are identical in frame 0 across all eight classes. One RGB frame therefore carries
no class information at all (a single-frame RGB model is at chance), one flow image separates
direction and speed but not CircleClockwise from CircleAnticlockwise (the same four motions in
a different order) nor MoveUp/MoveDown from a loop's vertical sides; only the order of frames
tells those apart.

Layout, as UCF-101: videos/<Class>/v_<Class>_g<GG>_c<CC>.avi (H.264 in AVI, 25 fps), classInd.txt,
trainlist01.txt (groups 04-10, `Class/v_....avi label` with 0-based labels, LRCN's form) and
testlist01.txt (groups 01-03, `Class/v_....avi` without labels, UCF-101's form: labels come
from classInd.txt). Regenerate with

    python -m lrcn_apps.activity.motion_dataset --out data/activity_motion --overwrite
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from compiler.extras import MissingExtra, require

from lrcn_apps.activity.errors import ActivityError

FRAME_SIZE = (32, 32)
SQUARE_SIZE = 6
FRAME_COUNT_RANGE = (24, 32)  # inclusive
NUM_GROUPS = 10
CLIPS_PER_GROUP = 3
TEST_GROUPS = (1, 2, 3)  # like UCF-101 split 1, whose test set is groups 1-7 of 25
FPS = 25.0


@dataclass(frozen=True)
class MotionClass:
    """A class = a cycle of per-frame (dy, dx) displacements, repeated for the whole video."""

    name: str
    steps: tuple[tuple[int, int], ...]


def loop_steps(speed: int, side_frames: int, directions: Sequence[tuple[int, int]]):
    return tuple((dy * speed, dx * speed) for dy, dx in directions for _ in range(side_frames))


RIGHT, LEFT, DOWN, UP = (0, 1), (0, -1), (1, 0), (-1, 0)

CLASSES = (
    MotionClass("MoveRightSlow", ((0, 1),)),
    MotionClass("MoveLeftSlow", ((0, -1),)),
    MotionClass("MoveRightFast", ((0, 3),)),
    MotionClass("MoveLeftFast", ((0, -3),)),
    MotionClass("MoveDown", ((2, 0),)),
    MotionClass("MoveUp", ((-2, 0),)),
    # Image y points down, so right -> down -> left -> up turns clockwise on screen.
    MotionClass("CircleClockwise", loop_steps(2, 4, (RIGHT, DOWN, LEFT, UP))),
    MotionClass("CircleAnticlockwise", loop_steps(2, 4, (RIGHT, UP, LEFT, DOWN))),
)


@dataclass(frozen=True)
class VideoSpec:
    label: int   # index into CLASSES
    group: int   # 1-based, like UCF-101's gXX
    clip: int    # 1-based, like UCF-101's cXX

    @property
    def class_name(self) -> str:
        return CLASSES[self.label].name

    @property
    def name(self) -> str:
        return f"v_{self.class_name}_g{self.group:02d}_c{self.clip:02d}"

    @property
    def relative_path(self) -> str:
        return f"{self.class_name}/{self.name}.avi"


@dataclass(frozen=True)
class Scene:
    """Everything about a video but its class: shared by one (group, clip) across all classes."""

    background: np.ndarray   # (H, W, 3) float
    start: tuple[int, int]   # (y, x) of the square's top-left corner in frame 0
    phase: int               # where in its step cycle the motion starts
    colour: np.ndarray       # (3,) RGB
    num_frames: int


def dataset_specs(num_groups: int = NUM_GROUPS,
                  clips_per_group: int = CLIPS_PER_GROUP) -> list[VideoSpec]:
    return [VideoSpec(label, group, clip) for label in range(len(CLASSES))
            for group in range(1, num_groups + 1) for clip in range(1, clips_per_group + 1)]


def background_texture(rng: np.random.Generator, size: Sequence[int]) -> np.ndarray:
    """Smooth colour blobs plus fine static grain, values about 40..170 (darker than the square)."""
    cv2 = require("cv2", "generating the motion dataset")

    height, width = size
    coarse = rng.random((6, 6, 3)).astype(np.float32)
    smooth = np.clip(cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC), 0, 1)
    grain = rng.normal(0.0, 8.0, (height, width, 1))
    return np.clip(40.0 + 110.0 * smooth + grain, 0.0, 255.0)


def make_scene(seed: int, group: int, clip: int, size: Sequence[int] = FRAME_SIZE) -> Scene:
    """The class-independent part of a video, from a generator seeded by (seed, group, clip)."""
    rng = np.random.default_rng((seed, group, clip))
    background = background_texture(rng, size)
    start = (int(rng.integers(0, size[0])), int(rng.integers(0, size[1])))
    # The loop phase is drawn for every video so that all classes consume the same draws.
    phase = int(rng.integers(0, 16))
    colour = rng.uniform(210.0, 255.0, size=3)
    low, high = FRAME_COUNT_RANGE
    num_frames = int(rng.integers(low, high + 1))
    return Scene(background, start, phase, colour, num_frames)


def square_positions(motion: MotionClass, scene: Scene, size: Sequence[int]) -> np.ndarray:
    """(n, 2) top-left (y, x) of the square in every frame, wrapped onto the torus."""
    cycle = np.asarray(motion.steps, dtype=np.int64)
    step_index = (scene.phase + np.arange(scene.num_frames - 1)) % len(cycle)
    displacement = np.concatenate([np.zeros((1, 2), np.int64), np.cumsum(cycle[step_index], 0)])
    return (np.asarray(scene.start) + displacement) % np.asarray(size)


def draw_square(frame: np.ndarray, y: int, x: int, colour: np.ndarray, side: int) -> None:
    rows = (y + np.arange(side)) % frame.shape[0]
    cols = (x + np.arange(side)) % frame.shape[1]
    frame[np.ix_(rows, cols)] = colour


def render_video(spec: VideoSpec, seed: int = 0, size: Sequence[int] = FRAME_SIZE,
                 square: int = SQUARE_SIZE) -> np.ndarray:
    """(n, H, W, 3) uint8 frames of one video; the same arguments give the same frames."""
    scene = make_scene(seed, spec.group, spec.clip, size)
    frames = np.empty((scene.num_frames,) + tuple(size) + (3,), dtype=np.uint8)
    for t, (y, x) in enumerate(square_positions(CLASSES[spec.label], scene, size)):
        frame = scene.background.copy()
        draw_square(frame, int(y), int(x), scene.colour, square)
        frames[t] = np.rint(frame).astype(np.uint8)
    return frames


# ---------------------------------------------------------------------------------------------
# Writing the dataset

def class_index_text() -> str:
    return "".join(f"{label + 1} {motion.name}\n" for label, motion in enumerate(CLASSES))


def split_texts(specs: Sequence[VideoSpec]) -> tuple[str, str]:
    """(trainlist01.txt, testlist01.txt): train lines carry 0-based labels, test lines none."""
    train = "".join(f"{s.relative_path} {s.label}\n" for s in specs if s.group not in TEST_GROUPS)
    test = "".join(f"{s.relative_path}\n" for s in specs if s.group in TEST_GROUPS)
    return train, test


DATASET_ENTRIES = ("videos", "classInd.txt", "trainlist01.txt", "testlist01.txt")


def write_dataset(out: str | os.PathLike, seed: int = 0, num_groups: int = NUM_GROUPS,
                  clips_per_group: int = CLIPS_PER_GROUP, size: Sequence[int] = FRAME_SIZE,
                  overwrite: bool = False, log=None) -> dict:
    """Write videos/ and the three list files into `out`; returns dataset statistics.

    Everything is built in a temporary folder inside `out` and moved into place at the end, so
    an interrupted run leaves the previous dataset (or nothing) rather than half a tree. Other
    files in `out` (README.md) are left alone.
    """
    from lrcn_apps.activity.video_io import write_video

    out = Path(out)
    existing = [name for name in DATASET_ENTRIES if (out / name).exists()]
    if existing and not overwrite:
        raise ActivityError(f"already holds {', '.join(existing)} (use --overwrite)", str(out))
    out.mkdir(parents=True, exist_ok=True)
    specs = dataset_specs(num_groups, clips_per_group)
    staging = Path(tempfile.mkdtemp(prefix=".motion-dataset-", dir=out))
    try:
        frame_counts = []
        for number, spec in enumerate(specs, start=1):
            frames = render_video(spec, seed, size)
            frame_counts.append(len(frames))
            target = staging / "videos" / spec.relative_path
            target.parent.mkdir(parents=True, exist_ok=True)
            write_video(target, frames, fps=FPS)
            if log is not None and (number % 40 == 0 or number == len(specs)):
                log(f"[{number}/{len(specs)}] {spec.name}")
        train, test = split_texts(specs)
        (staging / "classInd.txt").write_text(class_index_text(), encoding="utf-8")
        (staging / "trainlist01.txt").write_text(train, encoding="utf-8")
        (staging / "testlist01.txt").write_text(test, encoding="utf-8")
        for name in DATASET_ENTRIES:
            replace_path(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    video_bytes = sum(p.stat().st_size for p in (out / "videos").rglob("*.avi"))
    return {
        "classes": len(CLASSES),
        "videos": len(specs),
        "train_videos": sum(s.group not in TEST_GROUPS for s in specs),
        "test_videos": sum(s.group in TEST_GROUPS for s in specs),
        "frames_per_video": (min(frame_counts), max(frame_counts)),
        "mean_frames": float(np.mean(frame_counts)),
        "frame_size": tuple(size),
        "video_bytes": video_bytes,
    }


def replace_path(source: Path, target: Path) -> None:
    """Move source onto target, removing whatever target was (a file or a folder)."""
    if target.is_dir():
        shutil.rmtree(target)
    elif target.exists():
        target.unlink()
    os.replace(source, target)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lrcn_apps.activity.motion_dataset",
        description="Write the synthetic motion-only activity dataset (UCF-101 layout).",
        epilog="example:\n  python -m lrcn_apps.activity.motion_dataset --out data/activity_motion "
               "--overwrite",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="dataset folder (videos/ and lists go here)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    parser.add_argument("--groups", type=int, default=NUM_GROUPS,
                        help=f"groups per class (default {NUM_GROUPS}; groups "
                             f"{', '.join(map(str, TEST_GROUPS))} are the test split)")
    parser.add_argument("--clips", type=int, default=CLIPS_PER_GROUP,
                        help=f"clips per group (default {CLIPS_PER_GROUP})")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing videos/ folder and list files")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.groups <= max(TEST_GROUPS) or args.clips < 1:
        parser.error(f"--groups must be above {max(TEST_GROUPS)} (the test groups) and "
                     "--clips at least 1")
    try:
        stats = write_dataset(args.out, args.seed, args.groups, args.clips,
                              overwrite=args.overwrite,
                              log=lambda text: print(text, file=sys.stderr))
    except (ActivityError, MissingExtra) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 1
    low, high = stats["frames_per_video"]
    print(f"{stats['classes']} classes, {stats['videos']} videos ({stats['train_videos']} train, "
          f"{stats['test_videos']} test), {low}-{high} frames of "
          f"{stats['frame_size'][0]}x{stats['frame_size'][1]}, {stats['video_bytes']} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
