"""lrcn-convert-imageset and lrcn-compute-mean: LMDB round trips, Caffe's key format, mean
values, and their error handling (exit 1 with one message, exit 2 on bad usage)."""

import os

import lmdb
import numpy as np
import pytest
from PIL import Image

from compiler import data_sources
from lrcn_proto import caffe_pb2
from runtime.data_tools import compute_mean_main, convert_imageset_main
from runtime.transform import DataTransformer, decode_image, resize_bilinear


@pytest.fixture
def images(tmp_path):
    """Four 6 x 5 RGB PNGs of random pixels under images/, listed as 'name label'."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for index in range(4):
        Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)).save(
            folder / f"p{index}.png")
        lines.append(f"p{index}.png {10 + index}")
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(lines) + "\n")
    return f"{folder}/", str(listing)


def records(path):
    env = lmdb.open(path, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            return [(key.decode(), caffe_pb2.Datum.FromString(value))
                    for key, value in txn.cursor()]
    finally:
        env.close()


def test_convert_imageset_writes_raw_datums_in_caffe_layout(tmp_path, images):
    root, listing = images
    db = str(tmp_path / "db")
    assert convert_imageset_main([root, listing, db]) == 0
    stored = records(db)
    assert [key for key, _ in stored] == [f"{i:08d}_p{i}.png" for i in range(4)]
    for index, (_, datum) in enumerate(stored):
        assert (datum.channels, datum.height, datum.width, datum.label) == (3, 6, 5, 10 + index)
        pixels = np.frombuffer(datum.data, np.uint8).reshape(3, 6, 5)
        expected = decode_image(f"{root}p{index}.png").transpose(2, 0, 1)   # CHW, BGR
        assert np.array_equal(pixels, expected)
    assert not [name for name in os.listdir(tmp_path) if ".partial-" in name]


def test_convert_imageset_resize_gray_shuffle_and_encoded(tmp_path, images):
    root, listing = images
    assert convert_imageset_main([root, listing, str(tmp_path / "small"), "--resize_height",
                                  "3", "--resize_width", "4", "--gray"]) == 0
    datum = records(str(tmp_path / "small"))[0][1]
    assert (datum.channels, datum.height, datum.width) == (1, 3, 4)
    expected = resize_bilinear(decode_image(f"{root}p0.png", color=False), 3, 4)
    assert np.frombuffer(datum.data, np.uint8).tolist() == expected.ravel().tolist()

    assert convert_imageset_main([root, listing, str(tmp_path / "mixed"), "--shuffle",
                                  "--seed", "3"]) == 0
    keys = [key for key, _ in records(str(tmp_path / "mixed"))]
    order = np.random.default_rng(3).permutation(4)
    # Keys count the shuffled position; LMDB keeps them sorted, i.e. in shuffled order.
    assert keys == [f"{i:08d}_p{order[i]}.png" for i in range(4)]

    assert convert_imageset_main([root, listing, str(tmp_path / "enc"), "--encoded"]) == 0
    datum = records(str(tmp_path / "enc"))[1][1]
    assert datum.encoded and datum.data == open(f"{root}p1.png", "rb").read()
    assert convert_imageset_main([root, listing, str(tmp_path / "jpg"), "--encoded",
                                  "--encode_type", "jpg", "--resize_height", "4",
                                  "--resize_width", "4"]) == 0
    datum = records(str(tmp_path / "jpg"))[0][1]
    assert datum.encoded and datum.data[:2] == b"\xff\xd8"
    assert data_sources.image_header(bytes(datum.data)).height == 4


def test_compute_mean_round_trip(tmp_path, images, capsys):
    root, listing = images
    db, mean_file = str(tmp_path / "db"), str(tmp_path / "mean.binaryproto")
    assert convert_imageset_main([root, listing, db]) == 0
    assert compute_mean_main([db, mean_file]) == 0
    stack = np.stack([decode_image(f"{root}p{i}.png").transpose(2, 0, 1).astype(np.float32)
                      for i in range(4)])
    expected = stack.sum(0, dtype=np.float32) / np.float32(4)
    mean = data_sources.read_blob_proto(mean_file)
    assert mean.shape == (1, 3, 6, 5) and np.array_equal(mean[0], expected)
    printed = capsys.readouterr().out
    assert "Number of channels: 3" in printed
    assert f"mean_value channel [0]: {expected[0].mean():g}" in printed
    # The mean file drives a transformer: the mean image minus itself is zero.
    param = caffe_pb2.TransformationParameter(mean_file=mean_file)
    out = DataTransformer(param, "TEST")(expected.round().astype(np.uint8), None, "CHW")
    assert np.abs(out).max() <= 0.5


def test_convert_imageset_errors(tmp_path, images, capsys):
    root, listing = images
    assert convert_imageset_main([root, str(tmp_path / "none.txt"), str(tmp_path / "a")]) == 1
    assert "image list file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.txt"
    bad.write_text("p0.png 0\np9.png 1\n")
    assert convert_imageset_main([root, str(bad), str(tmp_path / "b")]) == 1
    message = capsys.readouterr().err
    assert message.startswith(f"{bad}:2: image not found: {root}p9.png")
    assert "Traceback" not in message
    assert not os.path.exists(tmp_path / "b")
    assert not [name for name in os.listdir(tmp_path) if ".partial-" in name]
    assert convert_imageset_main([root, str(bad), str(tmp_path / "c"), "--skip_bad"]) == 0
    assert len(records(str(tmp_path / "c"))) == 1
    assert "1 unreadable skipped" in capsys.readouterr().err
    assert convert_imageset_main([root, listing, str(tmp_path / "c")]) == 1
    assert "already exists" in capsys.readouterr().err
    assert convert_imageset_main([root, listing, str(tmp_path / "c"), "--overwrite"]) == 0
    assert len(records(str(tmp_path / "c"))) == 4
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "images" / "tiny.png")
    uneven = tmp_path / "uneven.txt"
    uneven.write_text("p0.png 0\ntiny.png 1\n")
    assert convert_imageset_main([root, str(uneven), str(tmp_path / "d"), "--check_size"]) == 1
    assert f"{uneven}:2: image" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        convert_imageset_main([root])
    assert usage.value.code == 2


def test_compute_mean_errors(tmp_path, images, capsys):
    root, listing = images
    assert compute_mean_main([str(tmp_path / "nothing")]) == 1
    assert "LMDB not found" in capsys.readouterr().err
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "images" / "tiny.png")
    uneven = tmp_path / "uneven.txt"
    uneven.write_text("p0.png 0\ntiny.png 1\n")
    assert convert_imageset_main([root, str(uneven), str(tmp_path / "db")]) == 0
    assert compute_mean_main([str(tmp_path / "db"), str(tmp_path / "m.binaryproto")]) == 1
    assert "the first record was (3, 6, 5)" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "m.binaryproto")


def test_help_shows_an_example(capsys):
    for main in (convert_imageset_main, compute_mean_main):
        with pytest.raises(SystemExit) as done:
            main(["--help"])
        assert done.value.code == 0
        assert "example:" in capsys.readouterr().out
