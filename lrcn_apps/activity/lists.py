"""The text files around an LRCN activity dataset.

Split files (UCF-101 style, read by `lrcn-activity-data`), one video per line:

    ClassName/v_ClassName_g08_c01.avi 3      path relative to the videos folder, 0-based label
    ClassName/v_ClassName_g01_c01.avi        no label: taken from classInd.txt by class folder

Labels are 0-based as in LRCN's own lists (ucf101_split1_trainVideos.txt); the official UCF-101
trainlistNN.txt files number classes from 1 (read them with label_base=1), and its testlistNN.txt
files carry no labels at all (give the class index). Blank lines and CRLF endings are fine.

classInd.txt: `1 ApplyEyeMakeup` lines, 1-based class numbers (0-based label = number - 1).

Video list files (written by `lrcn-activity-data`, read by the data layer), one video per line:

    frames/v_ClassName_g08_c01 3 164

i.e. `frame_folder label num_frames`: the folder relative to the list file's own folder, the
0-based label, and how many images the folder holds, named `<folder name>.0001.jpg`,
`<folder name>.0002.jpg`, ... (1-based, 4 digits). Flow lists name `flow_images/...` folders
with one image fewer than the video has frames.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable

from lrcn_apps.activity.errors import ActivityError

FRAME_EXTENSION = ".jpg"


def read_text_lines(path: str | os.PathLike) -> list[str]:
    """The file's lines without line endings; a missing or undecodable file is an ActivityError."""
    try:
        with open(path, "r", encoding="utf-8") as handle:
            return handle.read().splitlines()
    except FileNotFoundError:
        raise ActivityError("no such file", str(path)) from None
    except IsADirectoryError:
        raise ActivityError("is a folder, expected a file", str(path)) from None
    except UnicodeDecodeError as error:
        raise ActivityError(f"not UTF-8 text ({error.reason})", str(path)) from None
    except OSError as error:
        raise ActivityError(f"cannot read ({error.strerror})", str(path)) from None


def parse_int(text: str, what: str, path: str, line: int) -> int:
    try:
        return int(text)
    except ValueError:
        raise ActivityError(f"{what} must be an integer, got '{text}'", path, line) from None


# ---------------------------------------------------------------------------------------------
# classInd.txt

def read_class_index(path: str | os.PathLike) -> dict[str, int]:
    """classInd.txt -> {class name: 0-based label}, in file order."""
    path = str(path)
    classes: dict[str, int] = {}
    for number, text in enumerate(read_text_lines(path), start=1):
        fields = text.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise ActivityError(f"expected '<class number> <ClassName>', got '{text.strip()}'",
                                path, number)
        index = parse_int(fields[0], "class number", path, number)
        if index < 1:
            raise ActivityError(f"class numbers start at 1, got {index}", path, number)
        name = fields[1]
        if name in classes:
            raise ActivityError(f"class '{name}' listed twice", path, number)
        if index - 1 in classes.values():
            raise ActivityError(f"class number {index} listed twice", path, number)
        classes[name] = index - 1
    if not classes:
        raise ActivityError("no classes listed", path)
    if sorted(classes.values()) != list(range(len(classes))):
        raise ActivityError(f"class numbers must be 1..{len(classes)} without gaps", path)
    return classes


def class_names_by_label(class_index: dict[str, int]) -> list[str]:
    """[name of label 0, name of label 1, ...]; a gap in the numbering is an error."""
    names = sorted(class_index, key=class_index.__getitem__)
    labels = [class_index[name] for name in names]
    if labels != list(range(len(labels))):
        raise ActivityError(f"class numbers are not 1..{len(labels)} without gaps")
    return names


# ---------------------------------------------------------------------------------------------
# Split files

@dataclass(frozen=True)
class SplitEntry:
    """One line of a split file."""

    path: str             # as written, relative to the videos folder: "Class/v_X.avi"
    video: str            # the frame folder name: "v_X"
    class_name: str | None
    label: int            # 0-based
    line: int


def video_name(relative_path: str) -> str:
    """'Class/v_X.avi' -> 'v_X' (the name of the video's frame folder and frame files)."""
    return PurePosixPath(relative_path.replace("\\", "/")).stem


def split_class_name(relative_path: str) -> str | None:
    """'Class/v_X.avi' -> 'Class'; a bare file name has no class folder."""
    parts = PurePosixPath(relative_path.replace("\\", "/")).parts
    return parts[0] if len(parts) > 1 else None


def read_split_file(path: str | os.PathLike, class_index: dict[str, int] | None = None,
                    label_base: int = 0) -> list[SplitEntry]:
    """Parse a split file; labels are checked against the class index when one is given."""
    path = str(path)
    entries = []
    for number, text in enumerate(read_text_lines(path), start=1):
        fields = text.split()
        if not fields:
            continue
        if len(fields) > 2:
            raise ActivityError(f"expected 'Class/v_name.avi [label]', got '{text.strip()}'",
                                path, number)
        relative = fields[0]
        class_name = split_class_name(relative)
        label = split_line_label(fields, class_name, class_index, label_base, path, number)
        entries.append(SplitEntry(relative, video_name(relative), class_name, label, number))
    if not entries:
        raise ActivityError("no videos listed", path)
    return entries


def split_line_label(fields: list[str], class_name: str | None,
                     class_index: dict[str, int] | None, label_base: int,
                     path: str, line: int) -> int:
    """The 0-based label of one split line, from its label field or from the class index."""
    indexed = None
    if class_index is not None:
        if class_name is None:
            raise ActivityError(f"'{fields[0]}' has no class folder (expected Class/v_name.avi)",
                                path, line)
        if class_name not in class_index:
            raise ActivityError(f"class '{class_name}' is not in the class index", path, line)
        indexed = class_index[class_name]
    if len(fields) == 1:
        if indexed is None:
            raise ActivityError("no label on this line; give a class index (classInd.txt) "
                                "to take labels from the class folder", path, line)
        return indexed
    label = parse_int(fields[1], "label", path, line) - label_base
    if label < 0:
        raise ActivityError(f"label {fields[1]} is below {label_base}, the first label "
                            f"(labels are {label_base}-based here)", path, line)
    if indexed is not None and label != indexed:
        raise ActivityError(
            f"label {fields[1]} ({label_base}-based) does not match class '{class_name}', "
            f"which the class index numbers {indexed + label_base}", path, line)
    return label


# ---------------------------------------------------------------------------------------------
# Prepared video lists and frame files

@dataclass(frozen=True)
class VideoListEntry:
    """One line of a prepared video list: `frame_folder label num_frames`."""

    folder: str          # relative to the list file's folder, '/'-separated
    label: int
    num_frames: int


def frame_file_name(folder_name: str, index: int) -> str:
    """0-based frame index -> LRCN's 1-based, 4-digit file name: ('v_X', 0) -> 'v_X.0001.jpg'."""
    return f"{folder_name}.{index + 1:04d}{FRAME_EXTENSION}"


def frame_path(list_folder: str | os.PathLike, entry: VideoListEntry, index: int) -> Path:
    """Path of frame `index` (0-based) of a list entry, given the folder holding the list."""
    folder = Path(list_folder) / entry.folder
    return folder / frame_file_name(folder.name, index)


def format_video_list(entries: Iterable[VideoListEntry]) -> str:
    return "".join(f"{e.folder} {e.label} {e.num_frames}\n" for e in entries)


def write_video_list(path: str | os.PathLike, entries: Iterable[VideoListEntry]) -> None:
    Path(path).write_text(format_video_list(entries), encoding="utf-8")


def read_video_list(path: str | os.PathLike) -> list[VideoListEntry]:
    """Parse a prepared video list (see the module docstring)."""
    path = str(path)
    entries = []
    for number, text in enumerate(read_text_lines(path), start=1):
        fields = text.split()
        if not fields:
            continue
        if len(fields) != 3:
            raise ActivityError(f"expected 'frame_folder label num_frames', got '{text.strip()}'",
                                path, number)
        label = parse_int(fields[1], "label", path, number)
        num_frames = parse_int(fields[2], "num_frames", path, number)
        if label < 0:
            raise ActivityError(f"label must be >= 0, got {label}", path, number)
        if num_frames < 1:
            raise ActivityError(f"num_frames must be >= 1, got {num_frames}", path, number)
        entries.append(VideoListEntry(fields[0], label, num_frames))
    if not entries:
        raise ActivityError("no videos listed", path)
    return entries
