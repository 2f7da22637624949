"""Split files, classInd.txt and prepared video lists (lrcn_apps.activity.lists)."""
from pathlib import Path

import pytest

from lrcn_apps.activity.errors import ActivityError
from lrcn_apps.activity.lists import (VideoListEntry, class_names_by_label, frame_file_name,
                                  frame_path, read_class_index, read_split_file, read_video_list,
                                  write_video_list)


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def test_class_index(tmp_path):
    path = write(tmp_path / "classInd.txt", "2 Archery\r\n1 ApplyEyeMakeup\r\n\r\n")
    classes = read_class_index(path)
    assert classes == {"ApplyEyeMakeup": 0, "Archery": 1}
    assert class_names_by_label(classes) == ["ApplyEyeMakeup", "Archery"]


@pytest.mark.parametrize("text, message", [
    ("1 A\n2\n", "classInd.txt:2: expected '<class number> <ClassName>'"),
    ("1 A\nx B\n", "classInd.txt:2: class number must be an integer"),
    ("0 A\n", "classInd.txt:1: class numbers start at 1"),
    ("1 A\n2 A\n", "classInd.txt:2: class 'A' listed twice"),
    ("", "classInd.txt: no classes listed"),
    ("1 A\n3 C\n", "classInd.txt: class numbers must be 1..2 without gaps"),
])
def test_class_index_errors(tmp_path, text, message):
    with pytest.raises(ActivityError) as error:
        read_class_index(write(tmp_path / "classInd.txt", text))
    assert message in str(error.value)


def test_split_file_with_labels_and_crlf(tmp_path):
    path = write(tmp_path / "trainlist01.txt", "Archery/v_Archery_g08_c01.avi 1\r\n\r\n"
                 "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c02.avi 0\r\n")
    entries = read_split_file(path)
    assert [(e.path, e.video, e.class_name, e.label, e.line) for e in entries] == [
        ("Archery/v_Archery_g08_c01.avi", "v_Archery_g08_c01", "Archery", 1, 1),
        ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c02.avi", "v_ApplyEyeMakeup_g08_c02",
         "ApplyEyeMakeup", 0, 3)]


def test_split_file_labels_from_class_index_and_one_based_labels(tmp_path):
    classes = {"ApplyEyeMakeup": 0, "Archery": 1}
    test_list = write(tmp_path / "testlist01.txt", "Archery/v_Archery_g01_c01.avi\n")
    assert read_split_file(test_list, classes)[0].label == 1
    official = write(tmp_path / "trainlist01.txt", "Archery/v_Archery_g08_c01.avi 2\n")
    assert read_split_file(official, classes, label_base=1)[0].label == 1


@pytest.mark.parametrize("text, classes, message", [
    ("A/v_a.avi 0 extra\n", None, "split.txt:1: expected 'Class/v_name.avi [label]'"),
    ("A/v_a.avi zero\n", None, "split.txt:1: label must be an integer, got 'zero'"),
    ("A/v_a.avi -1\n", None, "split.txt:1: label -1 is below 0"),
    ("A/v_a.avi\n", None, "split.txt:1: no label on this line"),
    ("\nC/v_c.avi\n", {"A": 0}, "split.txt:2: class 'C' is not in the class index"),
    ("A/v_a.avi 1\n", {"A": 0, "B": 1}, "split.txt:1: label 1 (0-based) does not match class 'A'"),
    ("v_a.avi\n", {"A": 0}, "split.txt:1: 'v_a.avi' has no class folder"),
    ("\n\n", None, "split.txt: no videos listed"),
])
def test_split_file_errors(tmp_path, text, classes, message):
    with pytest.raises(ActivityError) as error:
        read_split_file(write(tmp_path / "split.txt", text), classes)
    assert message in str(error.value)


def test_missing_split_file(tmp_path):
    with pytest.raises(ActivityError, match="nothing.txt: no such file"):
        read_split_file(tmp_path / "nothing.txt")


def test_video_list_round_trip_and_frame_names(tmp_path):
    entries = [VideoListEntry("frames/v_a", 3, 164), VideoListEntry("frames/v_b", 0, 16)]
    path = tmp_path / "train_rgb.txt"
    write_video_list(path, entries)
    assert path.read_text() == "frames/v_a 3 164\nframes/v_b 0 16\n"
    assert read_video_list(path) == entries
    assert frame_file_name("v_a", 0) == "v_a.0001.jpg"
    assert frame_file_name("v_a", 163) == "v_a.0164.jpg"
    assert frame_path(tmp_path, entries[0], 9) == tmp_path / "frames" / "v_a" / "v_a.0010.jpg"


@pytest.mark.parametrize("text, message", [
    ("frames/v_a 3\n", "list.txt:1: expected 'frame_folder label num_frames'"),
    ("frames/v_a 3 0\n", "list.txt:1: num_frames must be >= 1"),
    ("frames/v_a x 4\n", "list.txt:1: label must be an integer"),
])
def test_video_list_errors(tmp_path, text, message):
    with pytest.raises(ActivityError) as error:
        read_video_list(write(tmp_path / "list.txt", text))
    assert message in str(error.value)
