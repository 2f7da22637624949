"""Clip sampling, time-major layout, test-protocol clips, 10-crop (lrcn_apps.activity.clips)."""
import numpy as np
import pytest

from lrcn_apps.activity.clips import (ClipSample, TrainingClipSampler, batch_frame_table,
                                  batch_video_indices, clip_frame_indices, clip_major_to_time_major,
                                  clip_markers, crop_frame, evaluation_clip_frames,
                                  evaluation_clip_starts, frame_labels, merge_time_major,
                                  sample_clip, sample_crop_offset, sample_start_frame,
                                  sample_training_batch, split_time_major,
                                  ten_crop_offsets, time_major_row, time_major_to_clip_major)
from lrcn_apps.activity.flow import encode_flow


# --- training clips --------------------------------------------------------------------------

def test_clip_frame_indices():
    assert clip_frame_indices(5, 30, 16).tolist() == list(range(5, 21))
    # A 10-frame video fills a 16-frame clip by repeating its last frame.
    assert clip_frame_indices(0, 10, 16).tolist() == list(range(10)) + [9] * 6
    with pytest.raises(ValueError):
        clip_frame_indices(10, 10, 16)


def test_start_frame_range():
    rng = np.random.default_rng(0)
    assert {sample_start_frame(16, 16, rng) for _ in range(50)} == {0}
    assert {sample_start_frame(17, 16, rng) for _ in range(200)} == {0, 1}
    assert {sample_start_frame(20, 16, rng) for _ in range(500)} == {0, 1, 2, 3, 4}
    assert {sample_start_frame(7, 16, rng) for _ in range(50)} == {0}


def test_crop_offset_range_includes_both_ends():
    rng = np.random.default_rng(0)
    offsets = {sample_crop_offset((4, 6), (3, 3), rng) for _ in range(500)}
    assert offsets == {(y, x) for y in range(2) for x in range(4)}
    assert sample_crop_offset((240, 320), (240, 320), rng) == (0, 0)
    with pytest.raises(ValueError):
        sample_crop_offset((10, 10), (11, 10), rng)


def test_clip_draws_start_then_crop_y_then_crop_x_then_mirror():
    clip = sample_clip(7, 40, np.random.default_rng(123), 16, (240, 320), (227, 227))
    replay = np.random.default_rng(123)
    start = int(replay.integers(0, 40 - 16 + 1))
    crop_y = int(replay.integers(0, 240 - 227 + 1))
    crop_x = int(replay.integers(0, 320 - 227 + 1))
    mirror = bool(replay.integers(0, 2))
    assert clip.video == 7
    assert clip.frames.tolist() == list(range(start, start + 16))
    assert (clip.crop_y, clip.crop_x, clip.mirror) == (crop_y, crop_x, mirror)


def test_batch_video_indices_wrap_like_the_original_layer():
    order = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    videos, cursor = batch_video_indices(order, 8, 4)
    assert videos.tolist() == [1, 0, 9, 8] and cursor == 2
    videos, cursor = batch_video_indices(order, 0, 4)
    assert videos.tolist() == [9, 8, 7, 6] and cursor == 4


def test_sample_training_batch_one_clip_per_video_in_order():
    clips = sample_training_batch([20, 30, 40], [2, 0, 2], np.random.default_rng(5),
                                  clip_length=4, frame_size=(8, 8), crop_size=(6, 6))
    assert [clip.video for clip in clips] == [2, 0, 2]
    for clip, count in zip(clips, [40, 20, 40]):
        assert clip.frames.tolist() == list(range(clip.frames[0], clip.frames[0] + 4))
        assert 0 <= clip.frames[0] <= count - 4
        assert 0 <= clip.crop_y <= 2 and 0 <= clip.crop_x <= 2


def test_sampler_with_given_order_cycles_through_it():
    sampler = TrainingClipSampler([20] * 5, np.random.default_rng(0), clips_per_batch=3,
                                  clip_length=4, frame_size=(8, 8), crop_size=(8, 8),
                                  video_order=[4, 2, 0, 1, 3])
    batches = [[clip.video for clip in sampler.next_batch()] for _ in range(3)]
    assert batches == [[4, 2, 0], [1, 3, 4], [2, 0, 1]]


def test_shuffling_sampler_visits_every_video_once_per_epoch():
    sampler = TrainingClipSampler([20] * 6, np.random.default_rng(0), clips_per_batch=4,
                                  clip_length=4, frame_size=(8, 8), crop_size=(8, 8))
    seen = [clip.video for _ in range(3) for clip in sampler.next_batch()]  # two epochs
    assert sorted(seen[:6]) == list(range(6)) and sorted(seen[6:]) == list(range(6))


# --- time-major layout -----------------------------------------------------------------------

def test_clip_markers_zero_on_first_frame_rows():
    # T = 3, N = 2: rows (t, n) = (0,0) (0,1) (1,0) (1,1) (2,0) (2,1).
    assert clip_markers(3, 2).tolist() == [0, 0, 1, 1, 1, 1]
    markers = clip_markers(16, 24)
    assert markers.shape == (384,) and markers.dtype == np.float32
    assert np.flatnonzero(markers == 0).tolist() == list(range(24))


def test_frame_labels_repeat_per_time_step():
    assert frame_labels([5, 9], 3).tolist() == [5, 9, 5, 9, 5, 9]


def test_time_major_row():
    assert time_major_row(0, 0, 24) == 0
    assert time_major_row(1, 0, 24) == 24
    assert time_major_row(2, 5, 24) == 53


def test_split_and_merge_time_major_against_hand_computed_rows():
    rows = np.arange(6)[:, None, None, None] * np.ones((6, 3, 2, 2))  # (T*N, C, H, W), row id
    split = split_time_major(rows, clip_length=3)                      # T = 3, N = 2
    assert split.shape == (3, 2, 3, 2, 2)
    assert split[0, 0, 0, 0, 0] == 0 and split[0, 1, 0, 0, 0] == 1
    assert split[1, 0, 0, 0, 0] == 2 and split[2, 1, 0, 0, 0] == 5
    assert np.array_equal(merge_time_major(split), rows)
    with pytest.raises(ValueError):
        split_time_major(rows, clip_length=4)


def test_clip_major_conversion_matches_the_original_reordering_loop():
    frames, buffer_size = 4, 3
    clip_major = np.arange(frames * buffer_size) * 10          # old_idx = clip * T + t
    expected = np.empty_like(clip_major)
    for t in range(frames):                                    # the original layer's loop
        for clip in range(buffer_size):
            expected[t * buffer_size + clip] = clip_major[clip * frames + t]
    converted = clip_major_to_time_major(clip_major.reshape(buffer_size, frames))
    assert np.array_equal(converted, expected)
    assert np.array_equal(time_major_to_clip_major(converted, frames).reshape(-1), clip_major)


def test_batch_frame_table():
    clips = [ClipSample(7, np.array([3, 4, 5]), 0, 0, False),
             ClipSample(2, np.array([0, 1, 1]), 0, 0, True)]
    videos, frames = batch_frame_table(clips)
    assert videos.tolist() == [7, 2, 7, 2, 7, 2]
    assert frames.tolist() == [3, 0, 4, 1, 5, 1]


# --- test protocol ---------------------------------------------------------------------------

@pytest.mark.parametrize("num_frames, starts", [
    (16, [0]),
    (17, [0, 1]),
    (24, [0, 8]),
    (100, [0, 8, 16, 24, 32, 40, 48, 56, 64, 72, 80, 84]),
    (10, [0]),
])
def test_evaluation_clip_starts(num_frames, starts):
    assert evaluation_clip_starts(num_frames, 16, 8).tolist() == starts


@pytest.mark.parametrize("num_frames, starts", [
    (16, [0, 0]),
    (17, [0, 1, 1]),
    (24, [0, 8, 8]),
    (100, [0, 8, 16, 24, 32, 40, 48, 56, 64, 72, 80, 84, 84]),
])
def test_evaluation_clip_starts_like_classify_video(num_frames, starts):
    assert evaluation_clip_starts(num_frames, 16, 8, repeat_tail=True).tolist() == starts


def test_evaluation_clip_frames_pad_short_videos_with_the_last_frame():
    frames = evaluation_clip_frames(10, 16, 8)
    assert frames.tolist() == [list(range(10)) + [9] * 6]
    frames = evaluation_clip_frames(24, 16, 8)
    assert frames.shape == (2, 16)
    assert frames[1].tolist() == list(range(8, 24))


# --- 10-crop ---------------------------------------------------------------------------------

def test_ten_crop_offsets_for_lrcn_sizes():
    # corners: 240 - 227 = 13, 320 - 227 = 93; centre: int(120 - 113.5), int(160 - 113.5).
    expected = [(0, 0), (0, 93), (13, 0), (13, 93), (6, 46)]
    rows = ten_crop_offsets((240, 320), (227, 227)).tolist()
    assert rows == [[y, x, 0] for y, x in expected] + [[y, x, 1] for y, x in expected]


def test_ten_crop_centre_with_odd_margins():
    # int(33 / 2 - 28 / 2) = int(2.5) = 2; int(40 / 2 - 28 / 2) = 6.
    assert ten_crop_offsets((33, 40), (28, 28))[4].tolist() == [2, 6, 0]
    with pytest.raises(ValueError):
        ten_crop_offsets((20, 20), (21, 10))


def test_crop_frame_and_mirror():
    frame = np.arange(4 * 5).reshape(4, 5, 1)
    assert crop_frame(frame, 1, 2, (2, 3), False)[..., 0].tolist() == [[7, 8, 9], [12, 13, 14]]
    assert crop_frame(frame, 1, 2, (2, 3), True)[..., 0].tolist() == [[9, 8, 7], [14, 13, 12]]
    with pytest.raises(ValueError):
        crop_frame(frame, 3, 0, (2, 3), False)


def test_mirrored_flow_crop_negates_flow_x():
    flow = np.zeros((3, 3, 2))
    flow[..., 0] = 1.5   # everything moves right
    crop = crop_frame(encode_flow(flow), 0, 0, (2, 2), True, is_flow=True)
    assert np.all(crop[..., 0] == 128 - 24) and np.all(crop[..., 1] == 128)
