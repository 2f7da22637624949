"""LRCN flow-image encoding and Farneback flow (lrcn_apps.activity.flow)."""
import numpy as np
import pytest

from lrcn_apps.activity.flow import (QUANTISATION_ERROR, REPRESENTABLE_FLOW, compute_flow,
                                 decode_flow, encode_flow, mirror_flow_image,
                                 video_flow_images)


def one_pixel_flow(fx, fy):
    return np.array([[[fx, fy]]], dtype=np.float64)


def test_encoding_of_hand_computed_values():
    # x: 16 * 0.5 + 128 = 136; y: 16 * -1.25 + 128 = 108;
    # magnitude: 16 * sqrt(0.25 + 1.5625) + 128 = 149.54 -> 150.
    assert encode_flow(one_pixel_flow(0.5, -1.25))[0, 0].tolist() == [136, 108, 150]
    assert encode_flow(one_pixel_flow(0.0, 0.0))[0, 0].tolist() == [128, 128, 128]


def test_halves_round_up_like_matlab():
    # 16 * (1/32) + 128 = 128.5: MATLAB's uint8() gives 129 where numpy's round gives 128.
    assert encode_flow(one_pixel_flow(1 / 32, -1 / 32))[0, 0, :2].tolist() == [129, 128]


def test_saturation():
    # x and y clip to [0, 255]; the magnitude of (10, -10) is 16 * 14.14 + 128 -> min(.., 255).
    assert encode_flow(one_pixel_flow(10.0, -10.0))[0, 0].tolist() == [255, 0, 255]
    # The magnitude channel never goes below 128.
    assert encode_flow(one_pixel_flow(-0.01, 0.0))[0, 0, 2] == 128


def test_round_trip_within_quantisation():
    rng = np.random.default_rng(0)
    low, high = REPRESENTABLE_FLOW
    flow = rng.uniform(low, high, size=(20, 30, 2))
    decoded = decode_flow(encode_flow(flow))
    assert decoded.dtype == np.float32 and decoded.shape == flow.shape
    assert np.max(np.abs(decoded - flow)) <= QUANTISATION_ERROR + 1e-6


def test_out_of_range_flow_saturates_on_decode():
    decoded = decode_flow(encode_flow(one_pixel_flow(20.0, -20.0)))
    assert decoded[0, 0].tolist() == [REPRESENTABLE_FLOW[1], REPRESENTABLE_FLOW[0]]


def test_mirror_equals_encoding_of_the_mirrored_flow():
    rng = np.random.default_rng(1)
    flow = rng.uniform(-9.0, 9.0, size=(6, 7, 2))  # y and x saturate on the negative side
    flow[..., 0] = np.minimum(flow[..., 0], 7.9)     # x = 255 is ambiguous when negated
    mirrored_flow = flow[:, ::-1].copy()
    mirrored_flow[..., 0] *= -1
    assert np.array_equal(mirror_flow_image(encode_flow(flow)), encode_flow(mirrored_flow))


def test_mirror_of_saturated_flow_x():
    image = encode_flow(np.array([[[-9.0, 0.0], [9.0, 0.0]]]))
    assert image[0, :, 0].tolist() == [0, 255]
    # Columns swap; x = 0 (flow <= -8) becomes 255; x = 255 becomes 1 (flow_x of -7.94).
    assert mirror_flow_image(image)[0, :, 0].tolist() == [1, 255]


def test_shape_errors():
    with pytest.raises(ValueError):
        encode_flow(np.zeros((4, 4, 3)))
    with pytest.raises(ValueError):
        decode_flow(np.zeros((4, 4, 2)))


def smooth_texture(height=48, width=48, seed=0):
    import cv2

    rng = np.random.default_rng(seed)
    coarse = rng.random((8, 8)).astype(np.float32)
    return np.clip(255 * cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC),
                   0, 255).astype(np.uint8)


def test_farneback_recovers_a_global_shift():
    texture = smooth_texture()
    moved = np.roll(texture, shift=(-1, 2), axis=(0, 1))  # content moves up 1, right 2
    flow = compute_flow(texture, moved)
    interior = flow[12:-12, 12:-12].reshape(-1, 2).mean(axis=0)
    assert interior == pytest.approx([2.0, -1.0], abs=0.2)


def test_flow_image_i_is_the_flow_from_frame_i_to_i_plus_1():
    texture = smooth_texture(seed=3)
    rgb = np.repeat(texture[..., None], 3, axis=2)
    frames = [rgb, np.roll(rgb, 1, axis=1), np.roll(rgb, -1, axis=1)]  # +1 px, then -2 px
    images = list(video_flow_images(frames))
    assert len(images) == len(frames) - 1
    assert all(image.dtype == np.uint8 and image.shape == (48, 48, 3) for image in images)
    mean_x = [decode_flow(image)[12:-12, 12:-12, 0].mean() for image in images]
    assert mean_x == pytest.approx([1.0, -2.0], abs=0.25)
