"""LRCN clip sampling and batch layout (pure numpy; the data layer calls these).

Frame indices here are 0-based (frame index k is the file `v_X.{k+1:04d}.jpg`).

Training (after the original data layer, sequence_input_layer.py in LisaAnne/lisa-caffe-public
@lstm_video_deploy examples/LRCN_activity_recognition):
- Videos are visited in a fixed cyclic order, N per batch; a batch that runs past the end of
  the order wraps around to its beginning (the original does exactly this with the list-file
  order). Given no order, `TrainingClipSampler` shuffles, and reshuffles at every wrap.
- Start frame: uniform over every start whose clip fits, {0, ..., n - T}. The original draws
  `int(random() * (n - T) + 1 + 1)` as a 1-based frame number, i.e. 0-based starts
  {1, ..., n - T}: it never starts at the first frame (whose flow image it did not have,
  since its flow images were numbered from frame 2), and for n <= T it reads frames that do
  not exist (n = T: one past the end; n < T: numbers below 1), so it needs n >= T + 1.
  Here flow image k starts at frame k, so start 0 is valid for both streams.
- Videos shorter than the clip (n < T): start 0 and the last frame is repeated to fill the
  clip (frame indices min(t, n - 1)).
- Crop: ONE offset per clip, uniform over every offset that fits, y in {0, ..., H - h} and x in
  {0, ..., W - w} (the original's `int(random() * (H - h))` never reaches H - h).
- Mirror: ONE flag per clip, True with probability 1/2.
- Every clip is cropped. (In the original's processImageCrop the crop sits inside
  `if im_flip:`, so its un-mirrored clips were not cropped but squashed from 240x320 to
  227x227 by Transformer.preprocess; that looks accidental and is not reproduced.)
- The generator is consumed per clip in this order: start frame, crop y, crop x, mirror.

Batch layout (time-major, what the LSTM reads after Reshape to T x N): frame t of clip n is row
t * N + n of the (T * N) x C x H x W data blob; `label` repeats each clip's label at every row;
`clip_markers` (the LSTM's `cont`) is 0 on each clip's first frame (rows 0..N-1) and 1 elsewhere.

Test protocol (after classify_video.py in the same folder): clips of T frames every `stride`
frames, the last clip ending at the last frame; 10 crops per frame (4 corners + centre, then
their mirrors, in caffe.io.oversample's order).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from lrcn_apps.activity.flow import mirror_flow_image

CLIP_LENGTH = 16
TRAIN_CLIPS_PER_BATCH = 24
TEST_CLIPS_PER_BATCH = 3
TEST_STRIDE = 8
FRAME_SIZE = (240, 320)
CROP_SIZE = (227, 227)


# ---------------------------------------------------------------------------------------------
# Training clips

@dataclass(frozen=True)
class ClipSample:
    """One training clip: which video, which frames, where to crop, whether to mirror."""

    video: int
    frames: np.ndarray  # (T,) 0-based frame indices, non-decreasing
    crop_y: int
    crop_x: int
    mirror: bool


def clip_frame_indices(start: int, num_frames: int, clip_length: int = CLIP_LENGTH) -> np.ndarray:
    """Frames start, start+1, ... of one clip, the last frame repeated past the video's end."""
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got {num_frames}")
    if not 0 <= start < num_frames:
        raise ValueError(f"start {start} outside a video of {num_frames} frames")
    return np.minimum(np.arange(start, start + clip_length), num_frames - 1)


def sample_start_frame(num_frames: int, clip_length: int, rng: np.random.Generator) -> int:
    """Uniform over {0, ..., n - T}; 0 when the video is shorter than the clip."""
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got {num_frames}")
    last_start = max(num_frames - clip_length, 0)
    return int(rng.integers(0, last_start + 1))


def sample_crop_offset(frame_size: Sequence[int], crop_size: Sequence[int],
                       rng: np.random.Generator) -> tuple[int, int]:
    """(y, x) uniform over every crop position that fits inside the frame."""
    (height, width), (crop_h, crop_w) = frame_size, crop_size
    if crop_h > height or crop_w > width:
        raise ValueError(f"crop {crop_h}x{crop_w} larger than frame {height}x{width}")
    y = int(rng.integers(0, height - crop_h + 1))
    x = int(rng.integers(0, width - crop_w + 1))
    return y, x


def sample_clip(video: int, num_frames: int, rng: np.random.Generator,
                clip_length: int = CLIP_LENGTH, frame_size: Sequence[int] = FRAME_SIZE,
                crop_size: Sequence[int] = CROP_SIZE) -> ClipSample:
    """One training clip of `video`; draws start, crop y, crop x, mirror in that order."""
    start = sample_start_frame(num_frames, clip_length, rng)
    crop_y, crop_x = sample_crop_offset(frame_size, crop_size, rng)
    mirror = bool(rng.integers(0, 2))
    return ClipSample(video, clip_frame_indices(start, num_frames, clip_length),
                      crop_y, crop_x, mirror)


def batch_video_indices(order: Sequence[int], cursor: int,
                        clips_per_batch: int) -> tuple[np.ndarray, int]:
    """The next `clips_per_batch` videos of a cyclic order from `cursor`, and the next cursor.

    Wraps around the end like the original layer: with 10 videos, cursor 8 and N = 4 the
    batch is order[8], order[9], order[0], order[1] and the next cursor is 2.
    """
    order = np.asarray(order, dtype=np.int64)
    if order.size == 0:
        raise ValueError("no videos to sample from")
    positions = (cursor + np.arange(clips_per_batch)) % order.size
    return order[positions], int((cursor + clips_per_batch) % order.size)


def sample_training_batch(frame_counts: Sequence[int], videos: Sequence[int],
                          rng: np.random.Generator, clip_length: int = CLIP_LENGTH,
                          frame_size: Sequence[int] = FRAME_SIZE,
                          crop_size: Sequence[int] = CROP_SIZE) -> list[ClipSample]:
    """One clip per entry of `videos` (indices into frame_counts), in batch order."""
    return [sample_clip(int(v), int(frame_counts[v]), rng, clip_length, frame_size, crop_size)
            for v in videos]


class TrainingClipSampler:
    """Stateful wrapper over the pure functions above: one call = one batch of N clips.

    With `video_order` given, that order is used every epoch (the original layer's behaviour,
    with the list file's order). Without it, the order is a permutation drawn from `rng`, and
    a fresh one is drawn each time the order is used up; a batch crossing that boundary takes
    the rest of the old order, then the start of the new one.
    """

    def __init__(self, frame_counts: Sequence[int], rng: np.random.Generator,
                 clips_per_batch: int = TRAIN_CLIPS_PER_BATCH, clip_length: int = CLIP_LENGTH,
                 frame_size: Sequence[int] = FRAME_SIZE, crop_size: Sequence[int] = CROP_SIZE,
                 video_order: Sequence[int] | None = None):
        self.frame_counts = np.asarray(frame_counts, dtype=np.int64)
        if self.frame_counts.size == 0:
            raise ValueError("no videos to sample from")
        self.rng = rng
        self.clips_per_batch = clips_per_batch
        self.clip_length = clip_length
        self.frame_size = tuple(frame_size)
        self.crop_size = tuple(crop_size)
        self.reshuffle = video_order is None
        if video_order is None:
            self.order = rng.permutation(self.frame_counts.size)
        else:
            self.order = np.asarray(video_order, dtype=np.int64)
        self.cursor = 0

    def next_videos(self) -> np.ndarray:
        """Video indices of the next batch, advancing (and, if shuffling, renewing) the order."""
        if not self.reshuffle:
            videos, self.cursor = batch_video_indices(self.order, self.cursor,
                                                      self.clips_per_batch)
            return videos
        videos = []
        while len(videos) < self.clips_per_batch:
            take = min(self.clips_per_batch - len(videos), self.order.size - self.cursor)
            videos.extend(self.order[self.cursor:self.cursor + take].tolist())
            self.cursor += take
            if self.cursor == self.order.size:
                self.order = self.rng.permutation(self.frame_counts.size)
                self.cursor = 0
        return np.asarray(videos, dtype=np.int64)

    def next_batch(self) -> list[ClipSample]:
        return sample_training_batch(self.frame_counts, self.next_videos(), self.rng,
                                     self.clip_length, self.frame_size, self.crop_size)


# ---------------------------------------------------------------------------------------------
# Time-major batch layout

def time_major_row(t: int, n: int, clips_per_batch: int) -> int:
    """Row of frame t of clip n in the (T * N) x ... data blob."""
    return t * clips_per_batch + n


def clip_markers(clip_length: int, clips_per_batch: int) -> np.ndarray:
    """(T * N,) float32 `cont`: 0 on every clip's first frame (t = 0), 1 elsewhere."""
    markers = np.ones((clip_length, clips_per_batch), dtype=np.float32)
    markers[0, :] = 0.0
    return markers.reshape(-1)


def frame_labels(clip_labels: Sequence[int], clip_length: int) -> np.ndarray:
    """(T * N,) labels: row t * N + n carries clip n's label."""
    return np.tile(np.asarray(clip_labels), clip_length)


def split_time_major(blob: np.ndarray, clip_length: int) -> np.ndarray:
    """(T * N, ...) -> (T, N, ...); element [t, n] is row t * N + n."""
    blob = np.asarray(blob)
    if blob.shape[0] % clip_length:
        raise ValueError(f"{blob.shape[0]} rows are not a multiple of clip length {clip_length}")
    return blob.reshape((clip_length, blob.shape[0] // clip_length) + blob.shape[1:])


def merge_time_major(blob: np.ndarray) -> np.ndarray:
    """(T, N, ...) -> (T * N, ...), the inverse of split_time_major."""
    blob = np.asarray(blob)
    return blob.reshape((blob.shape[0] * blob.shape[1],) + blob.shape[2:])


def clip_major_to_time_major(blob: np.ndarray) -> np.ndarray:
    """(N, T, ...) clips side by side -> (T * N, ...) time-major rows."""
    return merge_time_major(np.swapaxes(np.asarray(blob), 0, 1))


def time_major_to_clip_major(blob: np.ndarray, clip_length: int) -> np.ndarray:
    """(T * N, ...) time-major rows -> (N, T, ...) one clip per entry."""
    return np.swapaxes(split_time_major(blob, clip_length), 0, 1)


def batch_frame_table(clips: Sequence[ClipSample]) -> tuple[np.ndarray, np.ndarray]:
    """(videos, frames), each (T * N,): which frame of which video goes to each data row."""
    frames = np.stack([clip.frames for clip in clips])                     # (N, T)
    videos = np.repeat([[clip.video] for clip in clips], frames.shape[1], axis=1)
    return clip_major_to_time_major(videos), clip_major_to_time_major(frames)


# ---------------------------------------------------------------------------------------------
# Test protocol

def evaluation_clip_starts(num_frames: int, clip_length: int = CLIP_LENGTH,
                           stride: int = TEST_STRIDE, repeat_tail: bool = False) -> np.ndarray:
    """0-based start frames of the test clips of one video.

    Starts 0, stride, 2 * stride, ... while the clip fits, then n - T for the last clip (the
    last T frames) unless it is already there: n = 100 -> 0, 8, ..., 80, 84. A video shorter
    than the clip has the single start 0 (its clip repeats the last frame, clip_frame_indices).

    repeat_tail=True reproduces classify_video.py exactly: one clip per stride position
    0, 8, ... < n, each position whose clip does not fit *strictly* inside the video
    (i + T >= n) taking the last T frames instead, so the final clip is counted several
    times in the average (n = 100 -> ..., 80, 84, 84; n = 16 -> 0, 0).
    """
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got {num_frames}")
    last_start = max(num_frames - clip_length, 0)
    if repeat_tail:
        positions = np.arange(0, num_frames, stride)
        return np.where(positions + clip_length < num_frames, positions, last_start)
    starts = np.arange(0, last_start + 1, stride)
    if starts[-1] != last_start:
        starts = np.append(starts, last_start)
    return starts


def evaluation_clip_frames(num_frames: int, clip_length: int = CLIP_LENGTH,
                           stride: int = TEST_STRIDE, repeat_tail: bool = False) -> np.ndarray:
    """(num_clips, T) 0-based frame indices of the test clips of one video."""
    starts = evaluation_clip_starts(num_frames, clip_length, stride, repeat_tail)
    return np.stack([clip_frame_indices(int(start), num_frames, clip_length) for start in starts])


def ten_crop_offsets(frame_size: Sequence[int], crop_size: Sequence[int]) -> np.ndarray:
    """(10, 3) int rows (y, x, mirror) in caffe.io.oversample's order.

    Rows 0-4: top-left, top-right, bottom-left, bottom-right, centre; rows 5-9: the same
    crops mirrored. The centre offset is floor((H - h) / 2), as oversample's int() cast of
    H/2 - h/2 gives (240x320 frames, 227 crops -> (6, 46)).
    """
    (height, width), (crop_h, crop_w) = frame_size, crop_size
    if crop_h > height or crop_w > width:
        raise ValueError(f"crop {crop_h}x{crop_w} larger than frame {height}x{width}")
    bottom, right = height - crop_h, width - crop_w
    corners_and_centre = [(0, 0), (0, right), (bottom, 0), (bottom, right),
                          (bottom // 2, right // 2)]
    rows = [(y, x, 0) for y, x in corners_and_centre] + [(y, x, 1) for y, x in corners_and_centre]
    return np.asarray(rows, dtype=np.int64)


def crop_frame(frame: np.ndarray, y: int, x: int, crop_size: Sequence[int],
               mirror: bool, is_flow: bool = False) -> np.ndarray:
    """(H, W, C) frame -> (h, w, C) crop at (y, x), flipped left-right when `mirror`.

    A mirrored flow image (is_flow=True) also has its flow_x negated (flow.mirror_flow_image).
    """
    crop_h, crop_w = crop_size
    if y < 0 or x < 0 or y + crop_h > frame.shape[0] or x + crop_w > frame.shape[1]:
        raise ValueError(f"crop {crop_h}x{crop_w} at ({y}, {x}) outside frame {frame.shape[:2]}")
    crop = frame[y:y + crop_h, x:x + crop_w]
    if not mirror:
        return crop
    return mirror_flow_image(crop) if is_flow else crop[:, ::-1]
