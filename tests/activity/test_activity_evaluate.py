"""Video-level test protocol, fusion and `lrcn-activity-eval` (lrcn_apps.activity.evaluate)."""
import json

import numpy as np
import pytest

from lrcn_apps.activity.evaluate import (accuracy, average_frame_probabilities, fuse, main, predict,
                                     save_video_probabilities)


def test_average_over_crops_then_frames_of_all_clips():
    clip_a = np.array([[[1.0, 0.0], [0.0, 1.0]],    # frame 0, two crops -> (0.5, 0.5)
                       [[1.0, 0.0], [1.0, 0.0]]])   # frame 1 -> (1, 0)
    clip_b = np.array([[0.0, 1.0], [0.0, 1.0]])     # no crop axis: frames (0, 1), (0, 1)
    # Frames (0.5, 0.5), (1, 0), (0, 1), (0, 1) -> (0.375, 0.625).
    assert average_frame_probabilities([clip_a, clip_b]).tolist() == [0.375, 0.625]


def test_fusion_weights():
    rgb, flow = np.array([[0.6, 0.4]]), np.array([[0.2, 0.8]])
    assert fuse(rgb, flow, 0.5) == pytest.approx(np.array([[0.4, 0.6]]))
    # 1/3 * 0.6 + 2/3 * 0.2 = 1/3; 1/3 * 0.4 + 2/3 * 0.8 = 2/3.
    assert fuse(rgb, flow, 1 / 3) == pytest.approx(np.array([[1 / 3, 2 / 3]]))
    assert fuse(rgb, flow, 1.0).tolist() == rgb.tolist()
    with pytest.raises(ValueError):
        fuse(rgb, flow, 1.5)


def test_accuracy_overall_and_per_class():
    labels = np.array([0, 0, 1, 2])
    probabilities = np.array([[0.8, 0.1, 0.1],    # -> 0, right
                              [0.2, 0.7, 0.1],    # -> 1, wrong
                              [0.1, 0.8, 0.1],    # -> 1, right
                              [0.3, 0.4, 0.3]])   # -> 1, wrong
    assert predict(probabilities).tolist() == [0, 1, 1, 1]
    result = accuracy(labels, probabilities)
    assert (result.correct, result.total, result.accuracy) == (2, 4, 0.5)
    assert result.per_class_accuracy.tolist() == [0.5, 1.0, 0.0]
    assert result.mean_class_accuracy == 0.5


def test_class_without_videos_is_left_out_of_the_mean():
    result = accuracy(np.array([0, 0]), np.array([[0.9, 0.1, 0.0], [0.1, 0.9, 0.0]]))
    assert np.isnan(result.per_class_accuracy[1]) and np.isnan(result.per_class_accuracy[2])
    assert result.mean_class_accuracy == 0.5


# --- command line ----------------------------------------------------------------------------

IDS = ["v_a1", "v_a2", "v_b1", "v_b2"]
LABELS = [0, 0, 1, 1]
# RGB gets v_a1, v_b1 right; flow gets v_a1, v_a2, v_b2; with p = 1/2 all four are right.
RGB = np.array([[0.9, 0.1], [0.45, 0.55], [0.2, 0.8], [0.6, 0.4]])
FLOW = np.array([[0.6, 0.4], [0.7, 0.3], [0.7, 0.3], [0.1, 0.9]])


@pytest.fixture
def prob_files(tmp_path):
    rgb, flow = tmp_path / "rgb.npz", tmp_path / "flow.npz"
    save_video_probabilities(rgb, IDS, LABELS, RGB, ["ClassA", "ClassB"])
    order = [3, 1, 0, 2]  # the flow file lists the videos in another order
    save_video_probabilities(flow, [IDS[i] for i in order], [LABELS[i] for i in order],
                             FLOW[order])
    return rgb, flow


def test_cli_table_and_json(prob_files, tmp_path, capsys):
    rgb, flow = prob_files
    out = tmp_path / "eval.json"
    assert main(["--rgb", str(rgb), "--flow", str(flow), "--per-class", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "ClassA" in table and "fusion p=0.500" in table and "fusion p=0.333" in table
    report = json.loads(out.read_text())
    by_model = {r["model"]: r for r in report["results"]}
    assert by_model["RGB"]["correct"] == 2 and by_model["flow"]["correct"] == 3
    assert by_model["fusion p=0.500"]["accuracy"] == 1.0
    # p = 1/2: v_b1 gets (0.2 + 0.7) / 2 = 0.45 for class A -> right;
    # p = 1/3: it gets 0.2 / 3 + 2 * 0.7 / 3 = 0.533 for class A -> wrong.
    assert by_model["fusion p=0.333"]["correct"] == 3
    assert by_model["RGB"]["per_class_accuracy"] == {"ClassA": 0.5, "ClassB": 0.5}
    assert report["videos"] == 4 and report["class_names"] == ["ClassA", "ClassB"]


def test_cli_single_stream_and_custom_fusion(prob_files, capsys):
    rgb, flow = prob_files
    assert main(["--flow", str(flow)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("flow") and "3/4" in line for line in lines)
    assert main(["--rgb", str(rgb), "--flow", str(flow), "--fusion", "0.9"]) == 0
    assert "fusion p=0.900" in capsys.readouterr().out


def assert_one_error_line(capsys, *fragments):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err


def test_cli_missing_file(tmp_path, capsys):
    assert main(["--rgb", str(tmp_path / "none.npz")]) == 1
    assert_one_error_line(capsys, "none.npz: no such file")


def test_cli_not_an_npz(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_text("hello")
    assert main(["--rgb", str(bad)]) == 1
    assert_one_error_line(capsys, "bad.npz: not a readable .npz file")


def test_cli_missing_arrays(tmp_path, capsys):
    path = tmp_path / "partial.npz"
    np.savez(path, probabilities=RGB)
    assert main(["--rgb", str(path)]) == 1
    assert_one_error_line(capsys, "missing array(s) video_ids, labels")


def test_cli_rows_must_be_probabilities(tmp_path, capsys):
    path = tmp_path / "scores.npz"
    save_video_probabilities(path, IDS, LABELS, RGB * 3)
    assert main(["--rgb", str(path)]) == 1
    assert_one_error_line(capsys, "sum to 3", "v_a1")


def test_cli_label_out_of_range(tmp_path, capsys):
    path = tmp_path / "labels.npz"
    save_video_probabilities(path, IDS, [0, 0, 1, 2], RGB)
    assert main(["--rgb", str(path)]) == 1
    assert_one_error_line(capsys, "labels must be in 0..1")


def test_cli_streams_must_cover_the_same_videos(prob_files, tmp_path, capsys):
    rgb, _ = prob_files
    other = tmp_path / "other.npz"
    save_video_probabilities(other, IDS[:3] + ["v_c9"], LABELS, FLOW)
    assert main(["--rgb", str(rgb), "--flow", str(other)]) == 1
    assert_one_error_line(capsys, "other.npz", "v_b2")


def test_cli_streams_must_agree_on_labels(prob_files, tmp_path, capsys):
    rgb, _ = prob_files
    other = tmp_path / "other.npz"
    save_video_probabilities(other, IDS, [0, 1, 1, 1], FLOW)
    assert main(["--rgb", str(rgb), "--flow", str(other)]) == 1
    assert_one_error_line(capsys, "v_a2", "label 1")


@pytest.mark.parametrize("argv", [[], ["--rgb", "a.npz", "--fusion", "0.5"],
                                  ["--rgb", "a.npz", "--flow", "b.npz", "--fusion", "1.5"]])
def test_cli_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_cli_help_shows_an_example(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "example:" in capsys.readouterr().out
