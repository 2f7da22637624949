"""Video files in and out (imageio v2 API with the imageio-ffmpeg plugin), frame resizing."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from compiler.extras import require
from lrcn_apps.activity.errors import ActivityError


def first_line(error: BaseException) -> str:
    """imageio's ffmpeg errors append pages of ffmpeg's stderr; the first line says what failed."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def read_video_frames(path: str | os.PathLike, fps: float | None = None) -> np.ndarray:
    """All frames of a video as (n, H, W, 3) uint8 RGB; `fps` resamples like ffmpeg's -r.

    Any failure of the decoder becomes one ActivityError naming the file.
    """
    imageio = require("imageio.v2", "reading and writing videos")
    require("imageio_ffmpeg", "reading and writing videos")

    path = str(path)
    if not os.path.isfile(path):
        raise ActivityError("no such video file", path)
    options = {} if fps is None else {"fps": fps}
    try:
        reader = imageio.get_reader(path, format="FFMPEG", **options)
        try:
            frames = [np.asarray(frame)[..., :3] for frame in reader]
        finally:
            reader.close()
    # imageio and ffmpeg report a broken file with several exception types (OSError,
    # RuntimeError, IndexError...); at this boundary they all mean "cannot decode this file".
    except Exception as error:  # noqa: BLE001
        raise ActivityError(f"cannot read video ({first_line(error)})", path) from None
    if not frames:
        raise ActivityError("video has no frames", path)
    return np.stack(frames).astype(np.uint8, copy=False)


def write_video(path: str | os.PathLike, frames: Sequence[np.ndarray] | np.ndarray,
                fps: float = 25.0, crf: int = 14) -> None:
    """Write RGB uint8 frames as H.264 (4:4:4 chroma, so small coloured objects stay sharp).

    crf is x264's constant-quality setting (0 lossless, 51 worst); a single encoder thread
    keeps the output byte-identical from run to run.
    """
    imageio = require("imageio.v2", "reading and writing videos")
    require("imageio_ffmpeg", "reading and writing videos")

    writer = imageio.get_writer(
        str(path), format="FFMPEG", fps=fps, codec="libx264", pixelformat="yuv444p",
        macro_block_size=1, quality=None, ffmpeg_log_level="error",
        ffmpeg_params=["-crf", str(crf), "-threads", "1", "-preset", "veryslow"])
    try:
        for frame in frames:
            writer.append_data(np.ascontiguousarray(frame, dtype=np.uint8))
    finally:
        writer.close()


def parse_size(text: str) -> tuple[int, int]:
    """'240x320' -> (240, 320): HEIGHTxWIDTH, both positive."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(part.isdigit() for part in parts):
        raise ValueError(f"expected HEIGHTxWIDTH such as 240x320, got '{text}'")
    height, width = int(parts[0]), int(parts[1])
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive, got '{text}'")
    return height, width


def resize_frame(frame: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Resize one (H, W, 3) frame to size = (height, width).

    Area averaging when shrinking (no aliasing), bilinear when enlarging.
    """
    cv2 = require("cv2", "resizing video frames")

    height, width = size
    if frame.shape[:2] == (height, width):
        return frame
    shrinking = height * width < frame.shape[0] * frame.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(frame, (width, height), interpolation=interpolation)


def resize_frames(frames: np.ndarray, size: Sequence[int] | None) -> np.ndarray:
    if size is None:
        return frames
    return np.stack([resize_frame(frame, size) for frame in frames])
