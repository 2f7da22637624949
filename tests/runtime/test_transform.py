"""runtime.transform: decoding (BGR, gray, EXIF), OpenCV's bilinear resize, the fork's
min_height / min_width, and Caffe's DataTransformer (mean, scale, crop, mirror, flow)."""

import numpy as np
import pytest
from PIL import Image

from compiler import data_sources
from compiler.errors import CompileError
from lrcn_proto import caffe_pb2
from runtime.transform import (DataTransformer, DecodedImages, bgr_to_gray, decode_image,
                               read_image, resize_bilinear)


def transform_param(**fields):
    mean_value = fields.pop("mean_value", ())
    param = caffe_pb2.TransformationParameter(**fields)
    param.mean_value.extend(mean_value)
    return param


def chw_ramp(channels=3, height=6, width=8):
    """A CHW uint8 image whose value encodes (c, h, w): 100*c + 10*h + w."""
    c, h, w = np.meshgrid(np.arange(channels), np.arange(height), np.arange(width),
                          indexing="ij")
    return (100 * c + 10 * h + w).astype(np.uint8)


def write_mean(path, mean):
    blob = caffe_pb2.BlobProto(num=1, channels=mean.shape[0], height=mean.shape[1],
                               width=mean.shape[2])
    blob.data.extend(mean.ravel().tolist())
    path.write_bytes(blob.SerializeToString())
    return str(path)


# --- decoding ------------------------------------------------------------------------------

def test_colour_images_decode_in_bgr_order(tmp_path):
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 0] = (10, 20, 200)                 # red 10, green 20, blue 200
    Image.fromarray(rgb).save(tmp_path / "pixel.png")
    image = decode_image(str(tmp_path / "pixel.png"))
    assert image.shape == (2, 3, 3)
    assert tuple(image[0, 0]) == (200, 20, 10)   # channel 0 is blue


def test_gray_decode_uses_opencv_weights(tmp_path):
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb).save(tmp_path / "rgb.bmp")
    # PNG: libpng's 15-bit weights (9797, 19234, 3737), truncated.
    png = decode_image(str(tmp_path / "rgb.png"), color=False)
    assert png.shape == (1, 3, 1)
    assert png[0, :, 0].tolist() == [(9797 * 255) >> 15, (19234 * 255) >> 15,
                                     (3737 * 255) >> 15]
    # Other formats: cvtColor BGR2GRAY, 14-bit weights, rounded.
    bmp = decode_image(str(tmp_path / "rgb.bmp"), color=False)
    assert bmp[0, :, 0].tolist() == [(4899 * 255 + 8192) >> 14, (9617 * 255 + 8192) >> 14,
                                     (1868 * 255 + 8192) >> 14]
    assert bgr_to_gray(np.array([[[0, 0, 255]]], np.uint8))[0, 0, 0] == 76


def test_gray_image_decodes_to_three_equal_channels_in_colour(tmp_path):
    Image.fromarray(np.full((4, 5), 77, np.uint8)).save(tmp_path / "gray.png")
    image = decode_image(str(tmp_path / "gray.png"))
    assert image.shape == (4, 5, 3) and (image == 77).all()
    assert decode_image(str(tmp_path / "gray.png"), color=None).shape == (4, 5, 1)


def test_rgba_drops_alpha_in_colour_and_keeps_it_unchanged(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :] = (1, 2, 3, 4)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    assert decode_image(str(tmp_path / "alpha.png"))[0, 0].tolist() == [3, 2, 1]
    assert decode_image(str(tmp_path / "alpha.png"), color=None)[0, 0].tolist() == [3, 2, 1, 4]


def test_exif_orientation_is_applied(tmp_path):
    picture = Image.fromarray(np.zeros((4, 10, 3), np.uint8))
    exif = picture.getexif()
    exif[0x0112] = 6                             # rotate 90 degrees on display
    picture.save(tmp_path / "rotated.jpg", exif=exif)
    assert decode_image(str(tmp_path / "rotated.jpg")).shape == (10, 4, 3)
    header = data_sources.image_header(str(tmp_path / "rotated.jpg"))
    assert (header.height, header.width) == (10, 4)


def test_decode_errors_name_the_list_line(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(CompileError) as caught:
        decode_image(str(tmp_path / "broken.jpg"), where=("list.txt", 7))
    assert str(caught.value).startswith("list.txt:7: cannot decode image")
    with pytest.raises(data_sources.MissingSource, match="image not found"):
        decode_image(str(tmp_path / "absent.jpg"), where=("list.txt", 8))


# --- resizing ------------------------------------------------------------------------------

def test_bilinear_resize_matches_opencv_arithmetic():
    # OpenCV INTER_LINEAR, [0, 255] to 4 columns: sample points -0.25 (clamped), 0.25, 0.75,
    # 1.25 (clamped) -> 0, 63.75, 191.25, 255, rounded in 11-bit fixed point to 64 and 191.
    row = np.array([[[0], [255]]], np.uint8)
    assert resize_bilinear(row, 1, 4)[0, :, 0].tolist() == [0, 64, 191, 255]
    # Halving averages 2 x 2 blocks.
    block = np.array([[0, 10, 100, 100], [20, 30, 50, 50]], np.uint8)[:, :, None]
    assert resize_bilinear(block, 1, 2)[0, :, 0].tolist() == [15, 75]
    same = np.zeros((3, 3, 3), np.uint8)
    assert resize_bilinear(same, 3, 3) is same


def test_read_image_warps_to_new_size(tmp_path):
    Image.fromarray(np.zeros((30, 50, 3), np.uint8)).save(tmp_path / "a.png")
    assert read_image(str(tmp_path / "a.png"), 16, 24).shape == (16, 24, 3)
    assert read_image(str(tmp_path / "a.png"), is_color=False).shape == (30, 50, 1)


@pytest.mark.parametrize("size, minimum, expected", [
    ((100, 200), (227, 227), (227, 454)),      # height falls shorter: height -> 227
    ((300, 100), (227, 227), (681, 227)),      # width falls shorter: width -> 227
    ((240, 320), (227, 227), (240, 320)),      # already large enough: unchanged
    ((100, 150), (0, 0), (100, 150)),          # off
    ((3, 7), (10, 10), (10, 23)),              # int(10 * 7 / 3 + 0.5) = 23
])
def test_fork_min_size(size, minimum, expected):
    assert data_sources.fork_min_size(*size, *minimum) == expected


def test_read_image_applies_min_size(tmp_path):
    Image.fromarray(np.zeros((100, 200, 3), np.uint8)).save(tmp_path / "small.png")
    image = read_image(str(tmp_path / "small.png"), min_height=227, min_width=227)
    assert image.shape == (227, 454, 3)


# --- the transformer -----------------------------------------------------------------------

def test_mean_values_and_scale_are_exact():
    image = chw_ramp()
    transformer = DataTransformer(transform_param(scale=0.5, mean_value=[1, 2, 3]), "TEST")
    out = transformer(image, None, "CHW")
    expected = (image.astype(np.float32) - np.array([1, 2, 3], np.float32)[:, None, None]) \
        * np.float32(0.5)
    assert out.dtype == np.float32 and np.array_equal(out, expected)


def test_one_mean_value_serves_every_channel():
    image = chw_ramp()
    out = DataTransformer(transform_param(mean_value=[7]), "TEST")(image, None, "CHW")
    assert np.array_equal(out, image.astype(np.float32) - 7)


def test_mean_file_is_subtracted_pixel_by_pixel_before_cropping(tmp_path):
    image = chw_ramp(3, 6, 8)
    mean = np.random.default_rng(0).random((3, 6, 8)).astype(np.float32) * 50
    path = write_mean(tmp_path / "mean.binaryproto", mean)
    transformer = DataTransformer(transform_param(mean_file=path, crop_size=4, scale=2),
                                  "TEST")
    out = transformer(image, None, "CHW")
    # Centre crop of a 6 x 8 image to 4: rows 1..4, columns 2..5.
    expected = (image[:, 1:5, 2:6].astype(np.float32) - mean[:, 1:5, 2:6]) * np.float32(2)
    assert np.array_equal(out, expected)


def test_test_phase_crop_is_centred():
    image = chw_ramp(1, 7, 9)
    out = DataTransformer(transform_param(crop_size=3), "TEST")(image, None, "CHW")
    # h_off = (7 - 3) // 2 = 2, w_off = (9 - 3) // 2 = 3
    assert out[0, 0, 0] == 10 * 2 + 3
    assert np.array_equal(out[0], image[0, 2:5, 3:6])


def test_train_crop_is_random_and_reproducible():
    image = chw_ramp(1, 7, 9)
    transformer = DataTransformer(transform_param(crop_size=3), "TRAIN")
    offsets = set()
    for seed in range(40):
        out = transformer(image, np.random.default_rng(seed), "CHW")
        again = transformer(image, np.random.default_rng(seed), "CHW")
        assert np.array_equal(out, again)
        # Caffe's draw order: row offset, then column offset, each uniform in [0, size - crop].
        draws = np.random.default_rng(seed)
        h_off, w_off = int(draws.integers(5)), int(draws.integers(7))
        assert np.array_equal(out[0], image[0, h_off:h_off + 3, w_off:w_off + 3])
        offsets.add((h_off, w_off))
    assert len(offsets) > 10


@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
def test_mirror_is_random_in_both_phases(phase):
    image = chw_ramp()
    transformer = DataTransformer(transform_param(mirror=True), phase)
    seen = set()
    for seed in range(20):
        out = transformer(image, np.random.default_rng(seed), "CHW")
        mirrored = bool(np.random.default_rng(seed).integers(2))   # the first draw
        expected = image[:, :, ::-1] if mirrored else image
        assert np.array_equal(out, expected.astype(np.float32))
        seen.add(mirrored)
    assert seen == {True, False}


def test_mirror_with_crop_draws_the_coin_first():
    image = chw_ramp(1, 6, 6)
    transformer = DataTransformer(transform_param(mirror=True, crop_size=4), "TRAIN")
    out = transformer(image, np.random.default_rng(3), "CHW")
    draws = np.random.default_rng(3)
    mirrored, h_off, w_off = bool(draws.integers(2)), int(draws.integers(3)), \
        int(draws.integers(3))
    window = image[0, h_off:h_off + 4, w_off:w_off + 4]
    assert np.array_equal(out[0], window[:, ::-1] if mirrored else window)


def test_flow_mirror_inverts_the_x_channel_before_the_mean():
    # Flow images hold x = 16 * flow + 128 in red, i.e. BGR channel 2; the fork mirrors it as
    # 255 - value (data_transformer.cpp of lisa-caffe-public).
    image = chw_ramp()
    param = transform_param(mirror=True, flow=True, mean_value=[128, 128, 128])
    transformer = DataTransformer(param, "TEST")
    seeds = {bool(np.random.default_rng(s).integers(2)): s for s in range(10)}
    mirrored = transformer(image, np.random.default_rng(seeds[True]), "CHW")
    plain = transformer(image, np.random.default_rng(seeds[False]), "CHW")
    source = image.astype(np.float32)
    assert np.array_equal(plain, source - 128)
    assert np.array_equal(mirrored[:2], (source[:2] - 128)[:, :, ::-1])
    assert np.array_equal(mirrored[2], ((255 - source[2]) - 128)[:, ::-1])


def test_a_drawn_choice_applies_to_several_frames():
    # A clip reader draws one crop and mirror per clip and applies it to every frame.
    transformer = DataTransformer(transform_param(crop_size=4, mirror=True), "TRAIN")
    choice = transformer.draw(np.random.default_rng(8), 6, 8)
    mirrored, h_off, w_off = choice
    for frame in (chw_ramp(3, 6, 8), 255 - chw_ramp(3, 6, 8)):
        window = frame[:, h_off:h_off + 4, w_off:w_off + 4].astype(np.float32)
        expected = window[:, :, ::-1] if mirrored else window
        assert np.array_equal(transformer.apply(frame, choice, "CHW"), expected)
    assert DataTransformer(transform_param(crop_size=4), "TEST").draw(None, 6, 8) == (False, 1, 2)


@pytest.mark.parametrize("layout", ["HWC", "CHW"])
def test_a_batch_is_transformed_as_each_of_its_inputs_alone(tmp_path, layout):
    # Data layers transform a batch in one pass (apply_batch); every value must be the one
    # Caffe's formula gives each input on its own: crop and mirror drawn per input, the mean
    # file cut (and mirrored) with each, the flow rule, the scale.
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, (3, 6, 8), dtype=np.uint8) for _ in range(7)]
    mean = rng.random((3, 6, 8)).astype(np.float32) * 50
    param = transform_param(mean_file=write_mean(tmp_path / "mean.binaryproto", mean),
                            crop_size=4, mirror=True, flow=True, scale=0.25)
    transformer = DataTransformer(param, "TRAIN")
    inputs = [image if layout == "CHW" else image.transpose(1, 2, 0) for image in images]
    draws = np.random.default_rng(11)
    choices = [transformer.choose(data, draws, layout) for data in inputs]
    batch = transformer.apply_batch(inputs, choices, layout)
    assert batch.shape == (7, 3, 4, 4) and batch.dtype == np.float32
    assert {mirrored for mirrored, _, _ in choices} == {True, False}
    for image, (mirrored, h_off, w_off), out in zip(images, choices, batch):
        window = image[:, h_off:h_off + 4, w_off:w_off + 4].astype(np.float32)
        if mirrored:
            window[2] = 255 - window[2]
        expected = (window - mean[:, h_off:h_off + 4, w_off:w_off + 4]) * np.float32(0.25)
        assert np.array_equal(out, expected[:, :, ::-1] if mirrored else expected)


def test_hwc_input_gives_chw_output():
    hwc = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    out = DataTransformer(transform_param(), "TEST")(hwc)
    assert out.shape == (3, 2, 3)
    assert np.array_equal(out, hwc.transpose(2, 0, 1).astype(np.float32))


def test_float_data_is_transformed_too():
    data = np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 3, 4)
    out = DataTransformer(transform_param(scale=3), "TEST")(data, None, "CHW")
    assert np.array_equal(out, data * np.float32(3))


def test_transformer_checks(tmp_path):
    with pytest.raises(CompileError, match="mean_file and mean_value"):
        DataTransformer(transform_param(mean_file="m.binaryproto", mean_value=[1]), "TEST")
    with pytest.raises(CompileError, match="force_color and force_gray"):
        DataTransformer(transform_param(force_color=True, force_gray=True), "TEST")
    with pytest.raises(CompileError, match="2 mean_value entries for a 3-channel"):
        DataTransformer(transform_param(mean_value=[1, 2]), "TEST")(chw_ramp(), None, "CHW")
    with pytest.raises(CompileError, match="crop_size 10 is larger than the 6 x 8"):
        DataTransformer(transform_param(crop_size=10), "TEST")(chw_ramp(), None, "CHW")
    path = write_mean(tmp_path / "small.binaryproto", np.zeros((3, 2, 2), np.float32))
    with pytest.raises(CompileError, match="mean file is 3 x 2 x 2 but the image is 3 x 6 x 8"):
        DataTransformer(transform_param(mean_file=path), "TEST")(chw_ramp(), None, "CHW")
    with pytest.raises(data_sources.MissingSource, match="mean file not found"):
        DataTransformer(transform_param(mean_file=str(tmp_path / "none.binaryproto")), "TEST")
    (tmp_path / "junk.binaryproto").write_bytes(b"\x07\x07\x07")
    with pytest.raises(CompileError, match="not a BlobProto"):
        DataTransformer(transform_param(mean_file=str(tmp_path / "junk.binaryproto")), "TEST")


def test_needs_random_follows_caffe():
    assert not DataTransformer(transform_param(crop_size=3), "TEST").needs_random
    assert DataTransformer(transform_param(crop_size=3), "TRAIN").needs_random
    assert DataTransformer(transform_param(mirror=True), "TEST").needs_random


# --- decoded images kept in memory -----------------------------------------------------------

def cached_reads(tmp_path, least_recent, keys):
    """Read the files named by `keys` in order through a DecodedImages with room for two
    12-byte images; return the keys each read decoded, and the cache."""
    decoded = []
    for key in set(keys):
        (tmp_path / key).write_bytes(b"x")
    cache = DecodedImages(2 * 12, least_recent=least_recent)
    for key in keys:
        cache.read(key, str(tmp_path / key),
                   lambda key=key: decoded.append(key) or np.zeros((2, 2, 3), np.uint8))
    return decoded, cache


def test_decoded_images_keep_the_first_ones_read_by_default(tmp_path):
    decoded, cache = cached_reads(tmp_path, False, ["a", "b", "c", "a", "b", "c"])
    assert decoded == ["a", "b", "c", "c"]           # full after a, b: c is never kept
    assert cache.used == 24


def test_decoded_images_least_recent_gives_way(tmp_path):
    decoded, cache = cached_reads(tmp_path, True, ["a", "b", "a", "c", "a", "b"])
    assert decoded == ["a", "b", "c", "b"]           # c evicts b (a was used since), b evicts c
    assert cache.used == 24


def test_decoded_images_are_read_only_and_reread_once_edited(tmp_path):
    path = tmp_path / "a"
    path.write_bytes(b"x")
    cache = DecodedImages(1 << 20)
    first = cache.read("a", str(path), lambda: np.zeros(3, np.uint8))
    assert cache.read("a", str(path), lambda: np.ones(3, np.uint8)) is first
    with pytest.raises(ValueError):
        first[0] = 1
    path.write_bytes(b"xy")                          # new size: the kept copy is stale
    assert cache.read("a", str(path), lambda: np.ones(3, np.uint8)).tolist() == [1, 1, 1]
    assert cache.used == 3


def test_decoded_images_let_decode_report_a_missing_file(tmp_path):
    def decode():
        raise CompileError("not found")
    with pytest.raises(CompileError, match="not found"):
        DecodedImages(1 << 20).read("a", str(tmp_path / "absent"), decode)
