"""WindowData (window_data_layer.cpp): the window file read as Caffe reads it, batches equal to
a NumPy transcription of Caffe's load_batch loop (OpenCV's own resize for the warp), and one
located error for every kind of damaged window file.

The fixture images are drawn here with Pillow; every window is larger than the crop, so each
warp shrinks and the project's resize equals OpenCV's bit for bit.
"""

import math

import numpy as np
import pytest
from PIL import Image

import compiler
from compiler.errors import CompileError
from runtime import prefetch
from runtime.net import Net

cv2 = pytest.importorskip("cv2")

CROP = 11
# (image size (height, width), windows (class, overlap, x1, y1, x2, y2)).
IMAGES = [
    ((40, 50), [(1, 0.9, 5, 5, 30, 30), (0, 0.1, 0, 0, 20, 39), (2, 0.4, 1, 1, 20, 20),
                (3, 0.7, 30, 12, 49, 39)]),
    ((36, 28), [(2, 0.55, 0, 0, 27, 35), (5, 0.2, 10, 3, 26, 20), (1, 0.3, 2, 2, 17, 17)]),
]
FG_THRESHOLD, BG_THRESHOLD = 0.5, 0.35


def write_fixture(folder, images=IMAGES, extra=""):
    rng = np.random.default_rng(0)
    lines = []
    for index, ((height, width), windows) in enumerate(images):
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
            folder / f"im{index}.png")
        lines += [f"# {index}", f"im{index}.png", "3", str(height), str(width),
                  str(len(windows))]
        lines += [" ".join(str(v) for v in window) for window in windows]
    (folder / "windows.txt").write_text("\n".join(lines) + "\n" + extra)
    return folder / "windows.txt"


def net_text(folder, batch_size=8, transform="", window=""):
    return (f'layer {{ name: "win" type: "WindowData" top: "data" top: "label" '
            f'transform_param {{ crop_size: {CROP} {transform} }} '
            f'window_data_param {{ source: "{folder}/windows.txt" root_folder: "{folder}/" '
            f'batch_size: {batch_size} fg_threshold: {FG_THRESHOLD} '
            f'bg_threshold: {BG_THRESHOLD} {window} }} }}\n')


def build(folder, seed=3, **options):
    return Net(compiler.load_text(net_text(folder, **options), "net", str(folder / "n.prototxt")),
               phase="TRAIN", seed=seed)


def write_mean(folder, height, width):
    from lrcn_proto import caffe_pb2
    mean = np.random.default_rng(1).uniform(0, 255, (3, height, width)).astype(np.float32)
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend([1, 3, height, width])
    blob.data.extend(mean.ravel())
    (folder / "mean.binaryproto").write_bytes(blob.SerializeToString())
    return mean


# --- Caffe's loop, transcribed ---------------------------------------------------------------

def c_round(x):
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


def caffe_batch(folder, rng, batch_size, fg_fraction=0.25, context_pad=0, square=False,
                mirror=False, mean=None, mean_values=None, scale=1.0):
    """WindowDataLayer::load_batch over IMAGES as written, flat top_data and all."""
    fg, bg = [], []
    for index, (_, windows) in enumerate(IMAGES):
        for label, overlap, x1, y1, x2, y2 in windows:
            if overlap >= FG_THRESHOLD:
                fg.append((index, label, x1, y1, x2, y2))
            elif overlap < BG_THRESHOLD:
                bg.append((index, 0, x1, y1, x2, y2))
    f32 = np.float32
    top = np.zeros(batch_size * 3 * CROP * CROP, np.float32)
    labels = np.zeros(batch_size, np.float32)
    num_fg = int(f32(batch_size) * f32(fg_fraction))
    item = 0
    for is_fg, count in ((0, batch_size - num_fg), (1, num_fg)):
        for _ in range(count):
            pool = fg if is_fg else bg
            image_index, label, x1, y1, x2, y2 = pool[int(rng.integers(2 ** 32)) % len(pool)]
            do_mirror = mirror and int(rng.integers(2 ** 32)) % 2 == 1
            img = cv2.imread(str(folder / f"im{image_index}.png"), cv2.IMREAD_COLOR)
            size_w = size_h = CROP
            pad_w = pad_h = 0
            if context_pad > 0 or square:
                context_scale = f32(CROP) / f32(CROP - 2 * context_pad)
                half_h, half_w = f32(y2 - y1 + 1) / f32(2.0), f32(x2 - x1 + 1) / f32(2.0)
                cx, cy = f32(x1) + half_w, f32(y1) + half_h
                if square:
                    if half_h > half_w:
                        half_w = half_h
                    else:
                        half_h = half_w
                x1 = c_round(float(cx - half_w * context_scale))
                x2 = c_round(float(cx + half_w * context_scale))
                y1 = c_round(float(cy - half_h * context_scale))
                y2 = c_round(float(cy + half_h * context_scale))
                unclipped_h, unclipped_w = y2 - y1 + 1, x2 - x1 + 1
                px1, py1 = max(0, -x1), max(0, -y1)
                px2, py2 = max(0, x2 - img.shape[1] + 1), max(0, y2 - img.shape[0] + 1)
                x1, x2, y1, y2 = x1 + px1, x2 - px2, y1 + py1, y2 - py2
                sx, sy = f32(CROP) / f32(unclipped_w), f32(CROP) / f32(unclipped_h)
                size_w = c_round(float(f32(x2 - x1 + 1) * sx))
                size_h = c_round(float(f32(y2 - y1 + 1) * sy))
                px1, px2 = c_round(float(f32(px1) * sx)), c_round(float(f32(px2) * sx))
                py1 = c_round(float(f32(py1) * sy))
                pad_h, pad_w = py1, (px2 if do_mirror else px1)
                if pad_h + size_h > CROP:
                    size_h = CROP - pad_h
                if pad_w + size_w > CROP:
                    size_w = CROP - pad_w
            warped = cv2.resize(img[y1:y2 + 1, x1:x2 + 1], (size_w, size_h),
                                interpolation=cv2.INTER_LINEAR)
            if do_mirror:
                warped = cv2.flip(warped, 1)
            mean_off = (mean.shape[2] - CROP) // 2 if mean is not None else 0
            for h in range(warped.shape[0]):
                for w in range(warped.shape[1]):
                    for c in range(3):
                        index = ((item * 3 + c) * CROP + h + pad_h) * CROP + w + pad_w
                        pixel = f32(warped[h, w, c])
                        if mean is not None:
                            m = mean[c, h + mean_off + pad_h, w + mean_off + pad_w]
                            top[index] = (pixel - m) * f32(scale)
                        elif mean_values is not None:
                            top[index] = (pixel - f32(mean_values[c])) * f32(scale)
                        else:
                            top[index] = pixel * f32(scale)
            labels[item] = label
            item += 1
    return top.reshape(batch_size, 3, CROP, CROP), labels


CASES = {
    "warp": dict(transform="mean_value: 104 mean_value: 117 mean_value: 123",
                 reference=dict(mean_values=(104, 117, 123))),
    "context_mirror_mean_file": dict(transform="mirror: true", window="context_pad: 3",
                                     reference=dict(context_pad=3, mirror=True)),
    "square_scale_fg_half": dict(transform="mirror: true mean_value: 100",
                                 window='crop_mode: "square" context_pad: 2 scale: 0.5 '
                                        'fg_fraction: 0.5',
                                 reference=dict(square=True, context_pad=2, mirror=True,
                                                mean_values=(100,) * 3, scale=0.5,
                                                fg_fraction=0.5)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_batches_equal_caffes_loop(tmp_path, case):
    write_fixture(tmp_path)
    options = CASES[case]
    reference = dict(options["reference"])
    transform = options["transform"]
    if case == "context_mirror_mean_file":
        reference["mean"] = write_mean(tmp_path, 15, 15)
        transform += f' mean_file: "{tmp_path}/mean.binaryproto"'
    net = build(tmp_path, transform=transform, window=options.get("window", ""))
    unit = net.layer("win")
    for batch in range(3):
        out = net()
        expected_data, expected_labels = caffe_batch(
            tmp_path, prefetch.batch_rng(unit.seed, 0, batch), 8, **reference)
        np.testing.assert_array_equal(out["label"].numpy(), expected_labels)
        np.testing.assert_array_equal(out["data"].numpy(), expected_data)


def test_background_first_then_foreground(tmp_path):
    write_fixture(tmp_path)
    net = build(tmp_path, batch_size=20, window="fg_fraction: 0.3")
    labels = np.stack([net()["label"].numpy() for _ in range(4)])
    # 20 - int(20 * 0.3) background windows (class 5 among them, relabelled 0), then the
    # foreground windows' classes; class 2 at overlap 0.4 lies between the thresholds and is
    # dropped, but class 2 at 0.55 is foreground.
    assert (labels[:, :14] == 0).all()
    assert set(labels[:, 14:].ravel()) == {1, 2, 3}


def test_missing_window_file_is_located_at_the_layer(tmp_path):
    with pytest.raises(CompileError) as caught:
        build(tmp_path)
    assert caught.value.line == 1 and "windows.txt" in caught.value.message


def test_same_seed_same_batches_other_seed_other_batches(tmp_path):
    write_fixture(tmp_path)
    a = build(tmp_path, transform="mirror: true", window="context_pad: 1")()
    b = build(tmp_path, transform="mirror: true", window="context_pad: 1")()
    c = build(tmp_path, seed=4, transform="mirror: true", window="context_pad: 1")()
    assert np.array_equal(a["data"], b["data"]) and not np.array_equal(a["data"], c["data"])


def test_cache_images_gives_the_same_batches(tmp_path):
    write_fixture(tmp_path)
    plain = build(tmp_path, window="context_pad: 2")()["data"]
    cached = build(tmp_path, window="context_pad: 2 cache_images: true")()["data"]
    assert np.array_equal(plain, cached)


# --- damaged window files: one error naming the file and line ------------------------------

BAD_FILES = {
    "not_a_hash": ("% 0\nim0.png\n3 40 50 0\n", 1, "expected '# image_index'"),
    "index_not_int": ("# zero\n", 1, "the image index must be an integer, got 'zero'"),
    "index_out_of_order": ("# 1\nim0.png 3 40 50 0\n", 1, "image index 1 should be 0"),
    "gray_channels": ("# 0\nim0.png\n1 40 50\n0\n", 3, "channels must be 3"),
    "overlap_not_number": ("# 0\nim0.png\n3 40 50\n1\n1 high 0 0 9 9\n", 5,
                           "overlap must be a number, got 'high'"),
    "truncated": ("# 0\nim0.png\n3 40 50\n2\n1 0.9 0 0 20 20\n0 0.1 0 0\n", 6,
                  "window file ends where the window's x2 was expected"),
    "foreground_class_zero": ("# 0\nim0.png\n3 40 50\n1\n0 0.8 0 0 20 20\n", 5,
                              "needs a class above 0"),
    "empty_window": ("# 0\nim0.png\n3 40 50\n1\n1 0.8 20 0 10 20\n", 5, "is empty"),
    "no_background": ("# 0\nim0.png\n3 40 50\n1\n1 0.8 0 0 20 20\n", None,
                      "has no background window"),
    "empty": ("\n\n", None, "is empty"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_damaged_window_file_is_one_located_error(tmp_path, case):
    write_fixture(tmp_path)
    text, line, message = BAD_FILES[case]
    (tmp_path / "windows.txt").write_text(text)
    with pytest.raises(CompileError) as caught:
        build(tmp_path)
    error = caught.value
    assert error.file == str(tmp_path / "windows.txt") and error.line == line, str(error)
    assert message in error.message


def test_window_outside_its_image_names_its_line(tmp_path):
    images = [((20, 20), [(1, 0.9, 0, 0, 15, 15), (0, 0.0, 5, 5, 25, 19)])]
    write_fixture(tmp_path, images)
    net = build(tmp_path, batch_size=4, window="fg_fraction: 0")
    with pytest.raises(CompileError) as caught:
        net()
    assert caught.value.file == str(tmp_path / "windows.txt") and caught.value.line == 8
    assert "lies outside its 20 x 20 image" in caught.value.message


def test_missing_image_names_the_window_file_line(tmp_path):
    write_fixture(tmp_path)
    (tmp_path / "im1.png").unlink()
    net = build(tmp_path, batch_size=16, window="fg_fraction: 0.5")
    with pytest.raises(CompileError, match="image not found") as caught:
        net()
    assert caught.value.file == str(tmp_path / "windows.txt") and caught.value.line == 12


@pytest.mark.parametrize("window, message", [
    ('crop_mode: "sqare"', 'crop_mode must be "warp" or "square"'),
    ("fg_fraction: 1.5", "fg_fraction must be in [0, 1]"),
    ("context_pad: 6", "context_pad (6) leaves nothing"),
])
def test_compiler_refuses_settings_caffe_cannot_sample_with(tmp_path, window, message):
    with pytest.raises(CompileError) as caught:
        compiler.compile_net(compiler.load_text(net_text(tmp_path, window=window), "net",
                                                "n.prototxt"))
    assert message in caught.value.message and caught.value.line == 1
