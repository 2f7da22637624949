"""`lrcn-activity-data` end to end on a tiny UCF-101-style tree (lrcn_apps.activity.prepare)."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lrcn_apps.activity.flow import decode_flow
from lrcn_apps.activity.lists import read_video_list
from lrcn_apps.activity.motion_dataset import (CLASSES, VideoSpec, make_scene, render_video,
                                           square_positions)
from lrcn_apps.activity.prepare import main
from lrcn_apps.activity.video_io import write_video

RIGHT_FAST = next(i for i, c in enumerate(CLASSES) if c.name == "MoveRightFast")
UP = next(i for i, c in enumerate(CLASSES) if c.name == "MoveUp")
SPECS = [VideoSpec(RIGHT_FAST, 1, 1), VideoSpec(RIGHT_FAST, 4, 1), VideoSpec(UP, 4, 2)]


def make_tree(root: Path) -> dict:
    """videos/Class/v_*.avi, classInd.txt, a labelled trainlist and an unlabelled testlist."""
    counts = {}
    for spec in SPECS:
        frames = render_video(spec)
        path = root / "videos" / spec.relative_path
        path.parent.mkdir(parents=True, exist_ok=True)
        write_video(path, frames)
        counts[spec.name] = len(frames)
    (root / "classInd.txt").write_text(
        "".join(f"{i + 1} {c.name}\n" for i, c in enumerate(CLASSES)))
    (root / "trainlist01.txt").write_text(
        f"{SPECS[1].relative_path} {RIGHT_FAST}\n{SPECS[2].relative_path} {UP}\n")
    (root / "testlist01.txt").write_text(f"{SPECS[0].relative_path}\n")
    return counts


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("ucf")
    return root, make_tree(root)


def base_args(root: Path, out: Path, *extra: str) -> list:
    return ["--videos", str(root / "videos"), "--split", str(root / "trainlist01.txt"),
            "--split", str(root / "testlist01.txt"), "--class-index", str(root / "classInd.txt"),
            "--out", str(out), "--quiet", "--flow-winsize", "7", "--flow-levels", "2", *extra]


@pytest.fixture(scope="module")
def prepared(tree, tmp_path_factory):
    root, counts = tree
    out = tmp_path_factory.mktemp("prep") / "prepared"
    assert main(base_args(root, out)) == 0
    return out, counts


def test_frame_and_flow_counts_and_names(prepared):
    out, counts = prepared
    for name, count in counts.items():
        frames = sorted(p.name for p in (out / "frames" / name).iterdir())
        flows = sorted(p.name for p in (out / "flow_images" / name).iterdir())
        assert frames == [f"{name}.{i:04d}.jpg" for i in range(1, count + 1)]
        assert flows == [f"{name}.{i:04d}.jpg" for i in range(1, count)]


def test_list_files(prepared):
    out, counts = prepared
    a, b, c = (spec.name for spec in SPECS)
    assert (out / "trainlist01_rgb.txt").read_text() == (
        f"frames/{b} {RIGHT_FAST} {counts[b]}\nframes/{c} {UP} {counts[c]}\n")
    assert (out / "trainlist01_flow.txt").read_text() == (
        f"flow_images/{b} {RIGHT_FAST} {counts[b] - 1}\nflow_images/{c} {UP} {counts[c] - 1}\n")
    # The test list has no labels: they come from classInd.txt.
    assert (out / "testlist01_rgb.txt").read_text() == f"frames/{a} {RIGHT_FAST} {counts[a]}\n"
    assert (out / "classInd.txt").read_text().startswith("1 MoveRightSlow\n")
    for entry in read_video_list(out / "testlist01_flow.txt"):
        assert len(list((out / entry.folder).iterdir())) == entry.num_frames


def test_flow_images_show_the_motion(prepared):
    out, _ = prepared
    spec = SPECS[1]  # MoveRightFast: +3 px per frame
    positions = square_positions(CLASSES[spec.label], make_scene(0, spec.group, spec.clip),
                                 (32, 32))
    flow_x = []
    for index in range(5):
        image = np.asarray(Image.open(out / "flow_images" / spec.name /
                                      f"{spec.name}.{index + 1:04d}.jpg"))
        y, x = positions[index]
        rows, cols = (y + np.arange(1, 5)) % 32, (x + np.arange(1, 5)) % 32
        flow_x.append(decode_flow(image)[..., 0][np.ix_(rows, cols)].mean())
    assert np.mean(flow_x) == pytest.approx(3.0, abs=0.6)


def test_resize_and_no_flow(tree, tmp_path):
    root, counts = tree
    out = tmp_path / "small"
    assert main(base_args(root, out, "--resize", "16x24", "--no-flow")) == 0
    assert not (out / "flow_images").exists()
    assert sorted(p.name for p in out.glob("*.txt")) == [
        "classInd.txt", "testlist01_rgb.txt", "trainlist01_rgb.txt"]
    name = SPECS[0].name
    with Image.open(out / "frames" / name / f"{name}.0001.jpg") as image:
        assert image.size == (24, 16)


def test_parallel_jobs_give_the_same_tree(tree, prepared, tmp_path):
    root, _ = tree
    serial, _ = prepared
    out = tmp_path / "parallel"
    assert main(base_args(root, out, "--jobs", "2")) == 0
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == sorted(str(p.relative_to(serial)) for p in serial.rglob("*") if p.is_file())
    assert all((out / f).read_bytes() == (serial / f).read_bytes() for f in files)


# --- errors ----------------------------------------------------------------------------------

def assert_failed_cleanly(capsys, out: Path, *fragments: str):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    # Progress lines may come first; the error itself is one line.
    errors = [line for line in err.splitlines() if line.startswith("lrcn-activity-data: error: ")]
    assert len(errors) == 1, err
    for fragment in fragments:
        assert fragment in errors[0], err
    assert not out.exists()
    # No temporary folder is left next to the output either.
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def test_bad_split_line(tree, tmp_path, capsys):
    root, _ = tree
    split = tmp_path / "bad.txt"
    split.write_text(f"{SPECS[1].relative_path} {RIGHT_FAST}\n{SPECS[2].relative_path} 4 x\n")
    out = tmp_path / "out"
    args = ["--videos", str(root / "videos"), "--split", str(split), "--out", str(out)]
    assert main(args) == 1
    assert_failed_cleanly(capsys, out, "bad.txt:2:", "expected 'Class/v_name.avi [label]'")


def test_label_contradicting_the_class_index(tree, tmp_path, capsys):
    root, _ = tree
    split = tmp_path / "wrong.txt"
    split.write_text(f"{SPECS[2].relative_path} {RIGHT_FAST}\n")
    out = tmp_path / "out"
    assert main(["--videos", str(root / "videos"), "--split", str(split), "--class-index",
                 str(root / "classInd.txt"), "--out", str(out)]) == 1
    assert_failed_cleanly(capsys, out, "wrong.txt:1:", "does not match class 'MoveUp'")


def test_missing_video_file(tree, tmp_path, capsys):
    root, _ = tree
    split = tmp_path / "missing.txt"
    split.write_text(f"{SPECS[1].relative_path} 2\nMoveUp/v_MoveUp_g09_c09.avi 5\n")
    out = tmp_path / "out"
    assert main(["--videos", str(root / "videos"), "--split", str(split), "--out",
                 str(out)]) == 1
    assert_failed_cleanly(capsys, out, "missing.txt:2:", "video file not found")


def test_unreadable_video_leaves_no_partial_tree(tree, tmp_path, capsys):
    root, _ = tree
    videos = tmp_path / "videos"
    (videos / "MoveUp").mkdir(parents=True)
    good = videos / SPECS[2].relative_path
    good.write_bytes((root / "videos" / SPECS[2].relative_path).read_bytes())
    broken = videos / "MoveUp" / "v_MoveUp_g05_c01.avi"
    broken.write_bytes(b"RIFF this is not a video")
    split = tmp_path / "split.txt"
    split.write_text(f"{SPECS[2].relative_path} {UP}\nMoveUp/v_MoveUp_g05_c01.avi {UP}\n")
    out = tmp_path / "out"
    assert main(["--videos", str(videos), "--split", str(split), "--out", str(out)]) == 1
    assert_failed_cleanly(capsys, out, "v_MoveUp_g05_c01.avi: cannot read video")


def test_single_frame_video_has_no_flow(tmp_path, capsys):
    videos = tmp_path / "videos" / "MoveUp"
    videos.mkdir(parents=True)
    write_video(videos / "v_one.avi", [np.zeros((16, 16, 3), np.uint8)])
    split = tmp_path / "split.txt"
    split.write_text("MoveUp/v_one.avi 0\n")
    out = tmp_path / "out"
    assert main(["--videos", str(tmp_path / "videos"), "--split", str(split),
                 "--out", str(out)]) == 1
    assert_failed_cleanly(capsys, out, "v_one.avi: has 1 frame; flow images need at least 2")


def test_existing_output_needs_overwrite(tree, tmp_path, capsys):
    root, counts = tree
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    assert main(base_args(root, out)) == 1
    err = capsys.readouterr().err
    assert "already exists (use --overwrite" in err and "Traceback" not in err
    assert main(base_args(root, out, "--overwrite", "--no-flow")) == 0
    assert not (out / "old.txt").exists() and (out / "trainlist01_rgb.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_missing_split_file(tree, tmp_path, capsys):
    root, _ = tree
    out = tmp_path / "out"
    assert main(["--videos", str(root), "--split", str(tmp_path / "nope.txt"),
                 "--out", str(out)]) == 1
    assert_failed_cleanly(capsys, out, "nope.txt: no such file")


@pytest.mark.parametrize("extra", [["--resize", "240"], ["--jobs", "0"], ["--jpeg-quality", "101"],
                                   ["--label-base", "2"]])
def test_usage_errors_exit_2(tmp_path, capsys, extra):
    with pytest.raises(SystemExit) as exit_info:
        main(["--videos", str(tmp_path), "--split", "a.txt", "--out", str(tmp_path / "o"),
              *extra])
    assert exit_info.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_help_shows_an_example(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "example" in capsys.readouterr().out
