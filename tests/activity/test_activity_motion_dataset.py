"""The synthetic motion-only dataset (lrcn_apps.activity.motion_dataset) and its committed copy."""
from pathlib import Path

import numpy as np
import pytest

from lrcn_apps.activity.errors import ActivityError
from lrcn_apps.activity.lists import read_class_index, read_split_file
from lrcn_apps.activity.motion_dataset import (CLASSES, FRAME_COUNT_RANGE, FRAME_SIZE, TEST_GROUPS,
                                           VideoSpec, main, make_scene, render_video,
                                           square_positions, write_dataset)
from lrcn_apps.activity.video_io import read_video_frames

DATASET = Path(__file__).resolve().parents[2] / "data" / "activity_motion"
CLASS_NAMES = [motion.name for motion in CLASSES]


def test_first_frame_is_identical_across_classes():
    videos = [render_video(VideoSpec(label, 5, 2)) for label in range(len(CLASSES))]
    assert all(np.array_equal(video[0], videos[0][0]) for video in videos)
    assert all(len(video) == len(videos[0]) for video in videos)
    # ...and the videos differ, though a loop can match a straight motion for a few frames.
    assert len({video.tobytes() for video in videos}) == len(CLASSES)


def test_rendering_is_deterministic_and_seeded():
    spec = VideoSpec(2, 3, 1)
    assert np.array_equal(render_video(spec, seed=0), render_video(spec, seed=0))
    assert not np.array_equal(render_video(spec, seed=0)[0], render_video(spec, seed=1)[0])


def test_frames_are_small_and_lengths_in_range():
    lengths = {make_scene(0, group, clip).num_frames for group in range(1, 11) for clip in (1, 2)}
    assert min(lengths) >= FRAME_COUNT_RANGE[0] and max(lengths) <= FRAME_COUNT_RANGE[1]
    video = render_video(VideoSpec(0, 1, 1))
    assert video.shape[1:] == FRAME_SIZE + (3,) and video.dtype == np.uint8


@pytest.mark.parametrize("name, step", [("MoveRightSlow", (0, 1)), ("MoveLeftFast", (0, -3)),
                                        ("MoveUp", (-2, 0)), ("MoveDown", (2, 0))])
def test_linear_motion_steps(name, step):
    scene = make_scene(0, 1, 1)
    positions = square_positions(CLASSES[CLASS_NAMES.index(name)], scene, FRAME_SIZE)
    expected = (np.asarray(scene.start) + np.outer(np.arange(len(positions)), step)) % 32
    assert np.array_equal(positions, expected)


@pytest.mark.parametrize("name, turn", [
    ("CircleClockwise", [(0, 2), (2, 0), (0, -2), (-2, 0)]),       # (dy, dx): right, down, ...
    ("CircleAnticlockwise", [(0, 2), (-2, 0), (0, -2), (2, 0)]),   # right, up, left, down
])
def test_loops_visit_the_same_motions_in_opposite_orders(name, turn):
    motion = CLASSES[CLASS_NAMES.index(name)]
    steps = np.asarray(motion.steps)
    assert np.array_equal(steps, np.repeat(turn, 4, axis=0))
    assert steps.sum(axis=0).tolist() == [0, 0]  # a closed loop of 16 frames


def test_start_positions_cover_the_frame():
    starts = np.array([make_scene(0, g, c).start for g in range(1, 41) for c in range(1, 4)])
    # Uniform starts on the torus make every frame's position uniform for every class.
    assert starts.min() >= 0 and starts.max() < 32
    assert len(np.unique(starts[:, 0] // 8)) == 4 and len(np.unique(starts[:, 1] // 8)) == 4


def test_write_small_dataset(tmp_path):
    stats = write_dataset(tmp_path, num_groups=4, clips_per_group=1)
    assert stats["videos"] == 4 * len(CLASSES)
    assert stats["test_videos"] == len(TEST_GROUPS) * len(CLASSES)
    assert len(list((tmp_path / "videos").rglob("*.avi"))) == stats["videos"]
    classes = read_class_index(tmp_path / "classInd.txt")
    assert list(classes) == CLASS_NAMES
    test = read_split_file(tmp_path / "testlist01.txt", classes)
    assert {entry.class_name for entry in test} == set(CLASS_NAMES)
    assert all(entry.video.split("_g")[1][:2] in {"01", "02", "03"} for entry in test)
    with pytest.raises(ActivityError, match="use --overwrite"):
        write_dataset(tmp_path, num_groups=4, clips_per_group=1)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".motion-dataset-")]


def test_cli_usage_error(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path), "--groups", "2"])
    assert exit_info.value.code == 2


@pytest.mark.skipif(not (DATASET / "classInd.txt").exists(), reason="dataset not generated")
def test_committed_dataset_is_consistent():
    classes = read_class_index(DATASET / "classInd.txt")
    assert list(classes) == CLASS_NAMES
    train = read_split_file(DATASET / "trainlist01.txt", classes)
    test = read_split_file(DATASET / "testlist01.txt", classes)
    assert len(train) == 168 and len(test) == 72
    assert not {e.video for e in train} & {e.video for e in test}
    for entry in train + test:
        assert (DATASET / "videos" / entry.path).is_file(), entry.path
    # The committed files decode to (nearly, the codec is lossy) what the generator renders.
    entry = test[0]
    spec = VideoSpec(classes[entry.class_name], int(entry.video[-6:-4]), int(entry.video[-2:]))
    assert spec.name == entry.video
    decoded = read_video_frames(DATASET / "videos" / entry.path)
    rendered = render_video(spec)
    assert decoded.shape == rendered.shape
    assert np.abs(decoded.astype(int) - rendered).mean() < 4.0
