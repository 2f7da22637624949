"""Data layer units: Caffe's record order (HDF5 files and rows, image lists, wrap-around,
shuffles), exact pixel values, the aligned caption layout, Python layers, prefetching and
every bad-data error."""

import importlib.util
import os
import subprocess
import sys
import textwrap
import threading
import time

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from compiler import data_sources
from compiler.errors import CompileError
from runtime import prefetch
from runtime.layers.registry import unit_for
from support import compiled_layer


def build(text, seed=1, phase="TRAIN", top_shapes=(), bottom_shapes=()):
    layer = compiled_layer(text, bottom_shapes, top_shapes, phase=phase)
    return unit_for(layer.type)(layer, torch.Generator().manual_seed(seed))


def batches(unit, count):
    return [[t.numpy().copy() for t in unit()] for _ in range(count)]


def write_h5(path, **datasets):
    with h5py.File(path, "w") as handle:
        for name, values in datasets.items():
            handle[name] = np.asarray(values)
    return str(path)


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def hdf5_layer(source, batch_size, shuffle=False, tops=("data", "label")):
    top_text = " ".join(f'top: "{top}"' for top in tops)
    return (f'layer {{ name: "h5" type: "HDF5Data" {top_text} hdf5_data_param {{ '
            f'source: "{source}" batch_size: {batch_size} shuffle: {str(shuffle).lower()} }} }}')


def image_layer(source, batch_size, extra="", transform=""):
    return (f'layer {{ name: "images" type: "ImageData" top: "data" top: "label" '
            f'transform_param {{ {transform} }} '
            f'image_data_param {{ source: "{source}" batch_size: {batch_size} {extra} }} }}')


@pytest.fixture
def two_h5_files(tmp_path):
    """a.h5 holds rows 0..4, b.h5 rows 5..7; `data` row r is [r, 10 r], `label` is r."""
    rows_a, rows_b = np.arange(5.0), np.arange(5.0, 8.0)
    write_h5(tmp_path / "a.h5", data=np.stack([rows_a, 10 * rows_a], 1).astype(np.float32),
             label=rows_a.astype(np.float32))
    write_h5(tmp_path / "b.h5", data=np.stack([rows_b, 10 * rows_b], 1).astype(np.float32),
             label=rows_b.astype(np.float64))
    return write_lines(tmp_path / "list.txt", [str(tmp_path / "a.h5"), str(tmp_path / "b.h5")])


def make_images(tmp_path, count, size=(12, 16), prefix="img"):
    """PNG images whose every pixel of image i is RGB (i, 100 + i, 200 - i); list lines
    'name i' (label i)."""
    lines = []
    for index in range(count):
        rgb = np.empty(size + (3,), np.uint8)
        rgb[...] = (index, 100 + index, 200 - index)
        name = f"{prefix}{index}.png"
        Image.fromarray(rgb).save(tmp_path / name)
        lines.append(f"{name} {index}")
    return write_lines(tmp_path / f"{prefix}_list.txt", lines)


# --- HDF5Data ------------------------------------------------------------------------------

def test_hdf5_rows_continue_across_files_and_wrap(two_h5_files):
    unit = build(hdf5_layer(two_h5_files, 3))
    labels = [b[1].tolist() for b in batches(unit, 5)]
    assert labels == [[0, 1, 2], [3, 4, 5], [6, 7, 0], [1, 2, 3], [4, 5, 6]]
    data = batches(build(hdf5_layer(two_h5_files, 3)), 1)[0][0]
    assert data.dtype == np.float32 and data.tolist() == [[0, 0], [1, 10], [2, 20]]
    assert unit.top_shapes() == [(3, 2), (3,)]


def test_hdf5_list_entries_resolve_beside_the_list_file(tmp_path, monkeypatch):
    folder = tmp_path / "chunks"
    folder.mkdir()
    write_h5(folder / "only.h5", x=np.arange(4, dtype=np.float32))
    write_lines(folder / "list.txt", ["only.h5"])
    monkeypatch.chdir(tmp_path)
    unit = build(hdf5_layer("chunks/list.txt", 2, tops=("x",)))
    assert [b[0].tolist() for b in batches(unit, 3)] == [[0, 1], [2, 3], [0, 1]]


def test_hdf5_shuffle_is_reproducible_and_keeps_files_together(two_h5_files):
    first = [b[1].tolist() for b in batches(build(hdf5_layer(two_h5_files, 4, True), 5), 6)]
    again = [b[1].tolist() for b in batches(build(hdf5_layer(two_h5_files, 4, True), 5), 6)]
    other = [b[1].tolist() for b in batches(build(hdf5_layer(two_h5_files, 4, True), 6), 6)]
    assert first == again and first != other
    for epoch in range(3):          # 8 rows = 2 batches per pass over the data
        rows = first[2 * epoch] + first[2 * epoch + 1]
        assert sorted(rows) == list(range(8))
        # Caffe reads one file at a time: a pass is one file's rows then the other's.
        files = [row >= 5 for row in rows]
        assert files == sorted(files) or files == sorted(files, reverse=True)
    assert first[0] + first[1] != first[2] + first[3]       # each pass reshuffled


def test_hdf5_rejects_transform_param(two_h5_files):
    text = hdf5_layer(two_h5_files, 2).replace("hdf5_data_param", "transform_param { } "
                                                                   "hdf5_data_param")
    with pytest.raises(CompileError, match="does not transform data"):
        build(text)


def test_hdf5_errors_name_the_file_and_line(tmp_path, two_h5_files):
    with pytest.raises(data_sources.MissingSource, match="HDF5 list file not found"):
        build(hdf5_layer(str(tmp_path / "none.txt"), 2))
    empty = write_lines(tmp_path / "empty.txt", [])
    with pytest.raises(CompileError, match="lists no HDF5 files"):
        build(hdf5_layer(empty, 2))
    missing = write_lines(tmp_path / "missing.txt", [str(tmp_path / "a.h5"), "gone.h5"])
    with pytest.raises(CompileError) as caught:
        build(hdf5_layer(missing, 2))
    assert str(caught.value).startswith(f"{missing}:2: HDF5 file not found: gone.h5")
    with pytest.raises(CompileError) as caught:
        build(hdf5_layer(two_h5_files, 2, tops=("data", "labels")))
    assert "has no dataset 'labels'" in str(caught.value)
    assert "the file holds: data, label" in str(caught.value)
    (tmp_path / "junk.h5").write_bytes(b"this is not hdf5" * 10)
    corrupt = write_lines(tmp_path / "corrupt.txt", [str(tmp_path / "junk.h5")])
    with pytest.raises(CompileError) as caught:
        build(hdf5_layer(corrupt, 2))
    assert str(caught.value).startswith(f"{corrupt}:1: cannot read HDF5 file")
    write_h5(tmp_path / "wide.h5", data=np.zeros((3, 5), np.float32),
             label=np.zeros(3, np.float32))
    mixed = write_lines(tmp_path / "mixed.txt", [str(tmp_path / "a.h5"),
                                                 str(tmp_path / "wide.h5")])
    with pytest.raises(CompileError) as caught:
        build(hdf5_layer(mixed, 2))
    assert str(caught.value).startswith(f"{mixed}:2: HDF5 file")
    assert "row shapes data (5,)" in str(caught.value) and "(line 1) has data (2,)" in \
        str(caught.value)
    write_h5(tmp_path / "ints.h5", data=np.zeros((3, 2), np.int32), label=np.zeros(3))
    integers = write_lines(tmp_path / "ints.txt", [str(tmp_path / "ints.h5")])
    with pytest.raises(CompileError, match="holds int32 data"):
        build(hdf5_layer(integers, 2))
    write_h5(tmp_path / "uneven.h5", data=np.zeros((3, 2), np.float32),
             label=np.zeros(4, np.float32))
    uneven = write_lines(tmp_path / "uneven.txt", [str(tmp_path / "uneven.h5")])
    with pytest.raises(CompileError, match="different numbers of rows"):
        build(hdf5_layer(uneven, 2))


def test_hdf5_skip_bad_records_drops_unreadable_files(tmp_path, two_h5_files, caplog):
    (tmp_path / "junk.h5").write_bytes(b"junk" * 50)
    listing = write_lines(tmp_path / "some_bad.txt",
                          [str(tmp_path / "junk.h5"), str(tmp_path / "b.h5")])
    with prefetch.options(skip_bad_records=True):
        unit = build(hdf5_layer(listing, 2))
    assert unit.bad_records.count == 1
    assert "skipping an unreadable record (1 skipped so far)" in caplog.text
    assert [b[1].tolist() for b in batches(unit, 2)] == [[5, 6], [7, 5]]


# --- ImageData -----------------------------------------------------------------------------

def test_image_data_list_order_labels_and_bgr(tmp_path):
    listing = make_images(tmp_path, 3)
    unit = build(image_layer(listing, 2, f'root_folder: "{tmp_path}/"'), phase="TEST")
    (data, labels), (data2, labels2) = batches(unit, 2)
    assert data.shape == (2, 3, 12, 16) and labels.tolist() == [0, 1]
    # Channel 0 is blue (200 - i), 1 green (100 + i), 2 red (i).
    assert data[1, :, 0, 0].tolist() == [199, 101, 1]
    assert labels2.tolist() == [2, 0]                     # wraps to the first line
    assert data2[0, 0, 0, 0] == 198
    assert unit.top_shapes() == [(2, 3, 12, 16), (2,)]


def test_image_data_resize_gray_and_crop(tmp_path):
    listing = make_images(tmp_path, 2, size=(20, 30))
    root = f'root_folder: "{tmp_path}/"'
    warped = build(image_layer(listing, 2, root + " new_height: 8 new_width: 10"))
    assert warped()[0].shape == (2, 3, 8, 10)
    gray = build(image_layer(listing, 1, root + " is_color: false"))
    value = gray()[0]
    assert value.shape == (1, 1, 20, 30)
    assert value[0, 0, 0, 0] == (9797 * 0 + 19234 * 100 + 3737 * 200) >> 15
    centred = build(image_layer(listing, 1, root, "crop_size: 5 mean_value: 1 scale: 2"),
                    phase="TEST")
    assert centred()[0][0, :, 0, 0].tolist() == [(200 - 1) * 2, (100 - 1) * 2, (0 - 1) * 2]


def test_image_data_min_size_from_the_fork(tmp_path):
    listing = make_images(tmp_path, 1, size=(10, 20))
    unit = build(image_layer(listing, 1, f'root_folder: "{tmp_path}/" min_height: 15 '
                                         'min_width: 15'))
    assert unit()[0].shape == (1, 3, 15, 30)
    assert unit.top_shapes() == [(1, 3, 15, 30), (1,)]


def test_image_data_shuffle_and_rand_skip_are_reproducible(tmp_path):
    listing = make_images(tmp_path, 5)
    text = image_layer(listing, 5, f'root_folder: "{tmp_path}/" shuffle: true')
    runs = [[b[1].tolist() for b in batches(build(text, seed), 3)] for seed in (3, 3, 4)]
    assert runs[0] == runs[1] and runs[0] != runs[2]
    for epoch in runs[0]:
        assert sorted(epoch) == [0, 1, 2, 3, 4]           # one pass per batch here
    assert runs[0][0] != runs[0][1]                       # reshuffled at each wrap
    skipping = build(image_layer(listing, 2, f'root_folder: "{tmp_path}/" rand_skip: 5'), 9)
    skip = int(prefetch.batch_rng(prefetch.layer_seed(torch.Generator().manual_seed(9),
                                                      "images"), 2).integers(5))
    assert skipping()[1].tolist() == [skip % 5, (skip + 1) % 5]


def test_image_data_train_randomness_is_per_batch_and_reproducible(tmp_path):
    listing = make_images(tmp_path, 4, size=(8, 8))
    text = image_layer(listing, 4, f'root_folder: "{tmp_path}/"', "crop_size: 4 mirror: true")
    first, again = batches(build(text, 11), 3), batches(build(text, 11), 3)
    for a, b in zip(first, again):
        assert np.array_equal(a[0], b[0])


def test_image_data_errors_name_the_list_line(tmp_path):
    listing = make_images(tmp_path, 3)
    root = f'root_folder: "{tmp_path}/"'
    with pytest.raises(data_sources.MissingSource, match="image list file not found"):
        build(image_layer(str(tmp_path / "none.txt"), 1, root))
    empty = write_lines(tmp_path / "empty.txt", [])
    with pytest.raises(CompileError, match="lists no images"):
        build(image_layer(empty, 1, root))
    no_label = write_lines(tmp_path / "no_label.txt", ["img0.png 0", "img1.png"])
    with pytest.raises(CompileError) as caught:
        build(image_layer(no_label, 1, root))
    assert str(caught.value).startswith(f"{no_label}:2: expected 'path label'")
    bad_label = write_lines(tmp_path / "bad_label.txt", ["img0.png zero"])
    with pytest.raises(CompileError, match=":1: label 'zero' is not an integer"):
        build(image_layer(bad_label, 1, root))
    gone = write_lines(tmp_path / "gone.txt", ["img0.png 0", "img1.png 1", "lost.png 2"])
    unit = build(image_layer(gone, 2, root), phase="TEST")
    unit()                                              # lines 1 and 2 are fine
    with pytest.raises(CompileError) as caught:
        unit()
    assert str(caught.value).startswith(f"{gone}:3: image not found: {tmp_path}/lost.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    broken = write_lines(tmp_path / "broken.txt", ["broken.png 0"])
    with pytest.raises(CompileError) as caught:
        build(image_layer(broken, 1, root))()
    assert str(caught.value).startswith(f"{broken}:1: cannot")
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(tmp_path / "odd.png")
    mixed = write_lines(tmp_path / "mixed.txt", ["img0.png 0", "odd.png 1"])
    with pytest.raises(CompileError) as caught:
        build(image_layer(mixed, 2, root))()
    assert str(caught.value).startswith(f"{mixed}:2: image odd.png gives a 3 x 5 x 5 blob")
    # Images of several sizes share a batch when the crop gives them one size.
    cropped = build(image_layer(mixed, 2, root, "crop_size: 4 mirror: true"))()[0]
    assert tuple(cropped.shape) == (2, 3, 4, 4) and cropped[1].max() == 0
    assert cropped[0, :, 0, 0].tolist() == [200, 100, 0]


def test_image_data_missing_trailing_slash_is_hinted(tmp_path):
    listing = make_images(tmp_path, 1)
    with pytest.raises(CompileError) as caught:
        build(image_layer(listing, 1, f'root_folder: "{tmp_path}"'))()
    assert "lacks a trailing '/'" in str(caught.value)


def test_image_data_skip_bad_records(tmp_path, caplog):
    make_images(tmp_path, 3)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    listing = write_lines(tmp_path / "list.txt", ["img0.png 0", "broken.png 9", "img2.png 2",
                                                  "lost.png 8"])
    with prefetch.options(skip_bad_records=True):
        unit = build(image_layer(listing, 3, f'root_folder: "{tmp_path}/"'), phase="TEST")
    assert [b[1].tolist() for b in batches(unit, 2)] == [[0, 2, 2], [0, 0, 2]]
    assert unit.bad_records.count == 2
    assert "2 skipped so far" in caplog.text


def test_image_data_decodes_each_image_once_and_rereads_edited_ones(tmp_path, monkeypatch):
    from runtime.layers import data
    decoded = []
    real = data.read_image
    monkeypatch.setattr(data, "read_image", lambda path, *a: decoded.append(path)
                        or real(path, *a))
    listing = make_images(tmp_path, 3)
    text = image_layer(listing, 3, f'root_folder: "{tmp_path}/"', "crop_size: 4 mirror: true")
    with prefetch.options(workers=0):       # each batch read when asked for: after the edit
        unit, uncached = build(text, 5), build(text, 5)
    uncached.decoded.budget = 0
    epochs = batches(unit, 1)
    decoded.clear()
    epochs += batches(unit, 2)
    assert decoded == []                     # the later epochs decode nothing
    for a, b in zip(epochs, batches(uncached, 3)):
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    # Editing a file (new contents, new modification time) makes the layer decode it again.
    edited = tmp_path / "img1.png"
    Image.fromarray(np.full((12, 16, 3), 77, np.uint8)).save(edited)
    status = os.stat(edited)
    os.utime(edited, ns=(status.st_atime_ns, status.st_mtime_ns + 10**9))
    decoded.clear()
    data_after, _ = unit()
    assert decoded == [str(edited)]
    assert np.all(data_after[1].numpy() == 77)


def test_image_data_cache_stays_within_its_budget(tmp_path):
    listing = make_images(tmp_path, 4)
    unit = build(image_layer(listing, 2, f'root_folder: "{tmp_path}/"'), phase="TEST")
    one_image = 12 * 16 * 3
    unit.decoded.budget = 2 * one_image + 1
    first = batches(unit, 4)
    assert unit.decoded.used == 2 * one_image
    assert np.array_equal(first[0][0], first[2][0]) and np.array_equal(first[1][0], first[3][0])


# --- the aligned caption layout ------------------------------------------------------------

def test_aligned_caption_streams_match_their_images(tmp_path):
    """LRCN_REFERENCE section 2: HDF5 streams (rows x N, batch_size T) and ImageData (batch N,
    no shuffle) stay aligned: in batch b, stream n's words belong to image n."""
    steps, streams, batches_per_file, files = 3, 4, 2, 2
    sentences = streams * batches_per_file * files            # 16 sentences, one per image
    image_lines, list_lines = [], []
    for k in range(sentences):
        Image.fromarray(np.full((4, 4, 3), k, np.uint8)).save(tmp_path / f"im{k}.png")
        image_lines.append(f"im{k}.png 0")
    for f in range(files):
        rows = steps * batches_per_file
        words = np.zeros((rows, streams), np.float32)
        for b in range(batches_per_file):
            for n in range(streams):
                k = (f * batches_per_file + b) * streams + n  # sentence k: batch b, stream n
                words[b * steps:(b + 1) * steps, n] = 1000 * k + np.arange(steps)
        cont = np.ones((rows, streams), np.float32)
        cont[::steps] = 0
        write_h5(tmp_path / f"batch_{f}.h5", input_sentence=words, cont_sentence=cont)
        list_lines.append(str(tmp_path / f"batch_{f}.h5"))
    h5_list = write_lines(tmp_path / "hdf5_chunk_list.txt", list_lines)
    image_list = write_lines(tmp_path / "image_list.txt", image_lines)
    text_unit = build(hdf5_layer(h5_list, steps, tops=("cont_sentence", "input_sentence")))
    image_unit = build(image_layer(image_list, streams, f'root_folder: "{tmp_path}/"'))
    total = sentences // streams
    for b in range(total + 2):                               # past the wrap-around too
        cont, words = (t.numpy() for t in text_unit())
        images, _ = (t.numpy() for t in image_unit())
        assert words.shape == (steps, streams) and cont[0].tolist() == [0] * streams
        for n in range(streams):
            k = int(images[n, 0, 0, 0])
            assert k == (b % total) * streams + n
            assert words[:, n].tolist() == [1000 * k + t for t in range(steps)]


# --- Data (LMDB) ---------------------------------------------------------------------------

def test_data_layer_reads_raw_and_encoded_datums(tmp_path):
    from runtime.data_tools import convert_imageset_main
    listing = make_images(tmp_path, 3, size=(6, 7))
    assert convert_imageset_main([f"{tmp_path}/", listing, str(tmp_path / "raw")]) == 0
    assert convert_imageset_main([f"{tmp_path}/", listing, str(tmp_path / "png"), "--encoded"]) \
        == 0
    expected = batches(build(image_layer(listing, 2, f'root_folder: "{tmp_path}/"'),
                             phase="TEST"), 2)
    for name in ("raw", "png"):
        unit = build(f'layer {{ name: "d" type: "Data" top: "data" top: "label" data_param {{ '
                     f'source: "{tmp_path / name}" backend: LMDB batch_size: 2 }} }}',
                     phase="TEST")
        got = batches(unit, 2)
        for (data, labels), (want, want_labels) in zip(got, expected):
            assert np.array_equal(data, want) and labels.tolist() == want_labels.tolist()
        assert unit.top_shapes() == [(2, 3, 6, 7), (2,)]
    gray = build(f'layer {{ name: "d" type: "Data" top: "data" transform_param {{ '
                 f'force_gray: true }} data_param {{ source: "{tmp_path / "png"}" '
                 f'backend: LMDB batch_size: 1 }} }}')
    assert gray()[0].shape == (1, 1, 6, 7)


def test_data_layer_leveldb_needs_plyvel(tmp_path):
    if importlib.util.find_spec("plyvel") is not None:
        pytest.skip("plyvel is installed: LevelDB is supported")
    (tmp_path / "db").mkdir()
    with pytest.raises(CompileError, match="LevelDB databases are not supported without "
                                           "the plyvel"):
        build(f'layer {{ name: "d" type: "Data" top: "data" data_param {{ '
              f'source: "{tmp_path / "db"}" batch_size: 1 }} }}')


# --- DummyData, MemoryData, HDF5Output -----------------------------------------------------

def test_dummy_data_constant_once_random_refilled():
    unit = build('layer { name: "d" type: "DummyData" top: "a" top: "b" dummy_data_param { '
                 'data_filler { type: "constant" value: 3 } '
                 'data_filler { type: "gaussian" std: 1 } '
                 'shape { dim: 2 dim: 3 } shape { dim: 4 } } }')
    (a1, b1), (a2, b2) = unit(), unit()
    assert a1.shape == (2, 3) and (a1 == 3).all() and (a2 == 3).all()
    assert b1.shape == (4,) and not torch.equal(b1, b2)
    legacy = build('layer { name: "d" type: "DummyData" top: "x" dummy_data_param { '
                   'num: 2 channels: 1 height: 3 width: 4 } }')
    assert legacy()[0].shape == (2, 1, 3, 4) and (legacy()[0] == 0).all()
    with pytest.raises(CompileError, match="must specify 'shape' once, or once per top"):
        build('layer { name: "d" type: "DummyData" top: "a" top: "b" top: "c" '
              'dummy_data_param { shape { dim: 1 } shape { dim: 2 } } }')


def test_memory_data_serves_arrays_in_batches():
    unit = build('layer { name: "m" type: "MemoryData" top: "data" top: "label" '
                 'memory_data_param { batch_size: 2 channels: 1 height: 2 width: 2 } }')
    with pytest.raises(CompileError, match="has no data"):
        unit()
    data = np.arange(16, dtype=np.float64).reshape(4, 1, 2, 2)
    unit.set_input_arrays(data, np.arange(4))
    labels = [unit()[1].tolist() for _ in range(3)]
    assert labels == [[0, 1], [2, 3], [0, 1]]
    with pytest.raises(ValueError, match="multiple of batch_size"):
        unit.set_input_arrays(data[:3], np.arange(3))
    with pytest.raises(ValueError, match="data must be N x 1 x 2 x 2"):
        unit.set_input_arrays(np.zeros((2, 3, 2, 2)), np.zeros(2))
    assert unit.top_shapes() == [(2, 1, 2, 2), (2,)]


def test_hdf5_output_appends_batches(tmp_path):
    path = tmp_path / "out.h5"
    unit = build(f'layer {{ name: "o" type: "HDF5Output" bottom: "x" bottom: "y" '
                 f'hdf5_output_param {{ file_name: "{path}" }} }}', bottom_shapes=[(2, 3), (2,)])
    assert unit(torch.ones(2, 3), torch.tensor([1.0, 2.0])) == ()
    unit(torch.zeros(2, 3), torch.tensor([3.0, 4.0]))
    with h5py.File(path, "r") as handle:
        assert handle["data"].shape == (4, 3) and handle["label"][...].tolist() == [1, 2, 3, 4]


# --- Python layers -------------------------------------------------------------------------

PY_DATA_LAYER = '''
import caffe
import numpy as np


class Counter(caffe.Layer):
    """A data layer: top 0 holds the call count, shaped by param_str."""

    def setup(self, bottom, top):
        if len(bottom) != 0:
            raise Exception("no bottoms")
        self.rows, self.cols = (int(v) for v in self.param_str.split(","))
        self.calls = 0

    def reshape(self, bottom, top):
        top[0].reshape(self.rows, self.cols)
        top[1].reshape(self.rows)

    def forward(self, bottom, top):
        self.calls += 1
        top[0].data[...] = self.calls
        top[1].data[...] = self.phase == caffe.TEST
        assert (top[0].num, top[0].channels, top[0].height, top[0].width) == \\
            (self.rows, self.cols, 1, 1)
        assert top[0].count == self.rows * self.cols

    def backward(self, top, propagate_down, bottom):
        pass


class Double(caffe.Layer):
    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = 2 * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = 2 * top[0].diff
'''


@pytest.fixture
def python_module(tmp_path, monkeypatch):
    module = f"user_layers_{os.getpid()}_{id(tmp_path) % 10000}"
    (tmp_path / f"{module}.py").write_text(PY_DATA_LAYER)
    monkeypatch.syspath_prepend(str(tmp_path))
    return module


def test_python_data_layer(python_module):
    text = (f'layer {{ name: "py" type: "Python" top: "x" top: "flag" python_param {{ '
            f'module: "{python_module}" layer: "Counter" param_str: "2,3" }} }}')
    unit = build(text, phase="TEST")
    assert unit.top_shapes() == [(2, 3), (2,)]
    x, flag = unit()
    assert x.shape == (2, 3) and (x == 1).all() and flag.tolist() == [1, 1]
    assert (unit()[0] == 2).all()
    assert build(text, phase="TRAIN")()[1].tolist() == [0, 0]


def test_python_layer_with_bottoms_runs_forward_and_backward(python_module):
    unit = build(f'layer {{ name: "py" type: "Python" bottom: "a" top: "b" python_param {{ '
                 f'module: "{python_module}" layer: "Double" }} }}', bottom_shapes=[(2, 2)],
                 top_shapes=[(2, 2)])
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    (b,) = unit(a)
    assert b.tolist() == [[2, 4], [6, 8]]
    (b * torch.tensor([[1.0, 0.0], [0.0, 5.0]])).sum().backward()
    assert a.grad.tolist() == [[2, 0], [0, 10]]


def test_python_layer_import_errors(python_module, tmp_path):
    with pytest.raises(CompileError, match="Python layer module 'no_such_module_xyz' not found"):
        build('layer { name: "py" type: "Python" top: "x" python_param { '
              'module: "no_such_module_xyz" layer: "L" } }')
    with pytest.raises(CompileError) as caught:
        build(f'layer {{ name: "py" type: "Python" top: "x" python_param {{ '
              f'module: "{python_module}" layer: "counter" }} }}')
    assert "has no class 'counter'" in str(caught.value) and "'Counter'" in str(caught.value)


def test_python_data_layer_inside_a_net(python_module, tmp_path):
    from runtime.net import Net
    net_file = tmp_path / "net.prototxt"
    net_file.write_text(textwrap.dedent(f'''\
        layer {{ name: "py" type: "Python" top: "x" top: "flag"
                 python_param {{ module: "{python_module}" layer: "Counter"
                                 param_str: "3,2" }} }}
        layer {{ name: "double" type: "Python" bottom: "x" top: "y"
                 python_param {{ module: "{python_module}" layer: "Double" }} }}
        layer {{ name: "silence" type: "Silence" bottom: "flag" }}
    '''))
    # A Python layer with bottoms states its top shapes through input_shapes (the Net learns
    # those of bottomless Python layers by building them).
    net = Net(str(net_file), phase="TEST", input_shapes={"y": (3, 2)})
    outputs = net()
    assert outputs["y"].shape == (3, 2) and (outputs["y"] == 2).all()
    assert (net()["y"] == 4).all()


def test_hdf5_data_inside_a_net_resolves_beside_the_net_file(tmp_path, two_h5_files,
                                                             monkeypatch):
    from runtime.net import Net
    folder = tmp_path / "nets"
    folder.mkdir()
    write_lines(folder / "list.txt", [str(tmp_path / "a.h5"), str(tmp_path / "b.h5")])
    (folder / "net.prototxt").write_text(
        'layer { name: "h5" type: "HDF5Data" top: "data" top: "label" '
        'hdf5_data_param { source: "list.txt" batch_size: 4 } }\n')
    monkeypatch.chdir(tmp_path)
    net = Net(str(folder / "net.prototxt"), phase="TRAIN")
    assert net()["label"].tolist() == [0, 1, 2, 3]
    assert net()["data"].tolist() == [[4, 40], [5, 50], [6, 60], [7, 70]]


# --- prefetching ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["images", "hdf5"])
def test_prefetch_is_deterministic_for_any_worker_count(tmp_path, two_h5_files, kind):
    if kind == "images":
        listing = make_images(tmp_path, 5, size=(9, 9))
        text = image_layer(listing, 3, f'root_folder: "{tmp_path}/" shuffle: true',
                           "crop_size: 5 mirror: true")
    else:
        text = hdf5_layer(two_h5_files, 3, shuffle=True)
    runs = []
    for workers in (0, 1, 2):
        with prefetch.options(workers=workers):
            unit = build(text, seed=21)
        runs.append(batches(unit, 7))
        unit.close()
    for other in runs[1:]:
        for mine, theirs in zip(runs[0], other):
            assert all(np.array_equal(a, b) for a, b in zip(mine, theirs))


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_worker_errors_reach_the_consumer_with_their_message(tmp_path, workers):
    make_images(tmp_path, 2)
    listing = write_lines(tmp_path / "list.txt", ["img0.png 0", "img1.png 1", "img0.png 0",
                                                  "img1.png 1", "gone.png 4"])
    with prefetch.options(workers=workers):
        unit = build(image_layer(listing, 2, f'root_folder: "{tmp_path}/"'))
    unit()
    unit()                                     # batches 0 and 1 are fine
    for _ in range(2):                         # the error sticks
        with pytest.raises(CompileError) as caught:
            unit()
        assert str(caught.value).startswith(f"{listing}:5: image not found")
    unit.close()


def test_resume_and_worker_changes_continue_the_same_sequence(tmp_path):
    listing = make_images(tmp_path, 5, size=(9, 9))
    text = image_layer(listing, 2, f'root_folder: "{tmp_path}/" shuffle: true',
                       "crop_size: 5 mirror: true")
    straight = batches(build(text, seed=4), 6)
    with prefetch.options(workers=2):
        first = build(text, seed=4)
    part = batches(first, 2)
    first.set_workers(0)                       # inline from here on, same sequence
    part += batches(first, 1)
    state = first.resume_state()
    assert state == {"batch": 3}
    first.close()
    resumed = build(text, seed=4)
    resumed.restore_state(state)
    rest = batches(resumed, 3)
    for mine, theirs in zip(part + rest, straight):
        assert all(np.array_equal(a, b) for a, b in zip(mine, theirs))


def test_prefetcher_keeps_order_and_depth():
    claimed, consumed = [], []
    lock = threading.Lock()

    def produce(index):
        with lock:
            claimed.append((index, len(consumed)))
        time.sleep(0.001 * ((index * 7) % 5))
        return index

    with prefetch.Prefetcher(produce, workers=3, depth=2) as loader:
        for expected in range(12):
            assert loader.next() == expected
            consumed.append(expected)
    assert all(index < seen + 2 for index, seen in claimed)


def test_prefetcher_threads_stop_on_close_and_collection():
    loader = prefetch.Prefetcher(lambda index: index, workers=2, depth=3, name="closing")
    loader.next()
    loader.close()
    assert not loader.alive
    assert not [t for t in threading.enumerate() if t.name.startswith("lrcn-prefetch-closing")]

    class Source:
        def produce(self, index):
            return index

    source = Source()
    dropped = prefetch.Prefetcher(source.produce, workers=2, depth=2, name="dropped")
    dropped.next()
    threads = list(dropped._threads)
    del dropped, source
    import gc
    gc.collect()
    for thread in threads:
        thread.join(5)
    assert not any(thread.is_alive() for thread in threads)


def test_interpreter_exits_with_prefetchers_running(tmp_path):
    listing = make_images(tmp_path, 3)
    script = textwrap.dedent(f'''
        import sys, torch
        sys.path.insert(0, {os.path.join(os.path.dirname(__file__), "..")!r})
        from support import compiled_layer
        from runtime import prefetch
        from runtime.layers.registry import unit_for
        prefetch.configure(workers=2)
        layer = compiled_layer(\'\'\'{image_layer(listing, 2, f'root_folder: "{tmp_path}/"')}\'\'\',
                               [])
        unit = unit_for("ImageData")(layer, torch.Generator().manual_seed(0))
        unit()
        print("done")
    ''')
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, cwd=os.path.join(os.path.dirname(__file__), "..", ".."))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done"
    assert time.monotonic() - started < 30


def test_environment_configures_the_defaults(monkeypatch):
    monkeypatch.setenv("LRCN_DATA_WORKERS", "3")
    monkeypatch.setenv("LRCN_SKIP_BAD_RECORDS", "1")
    assert prefetch._environment_options() == prefetch.DataOptions(3, True)
    monkeypatch.setenv("LRCN_DATA_WORKERS", "many")
    monkeypatch.delenv("LRCN_SKIP_BAD_RECORDS")
    assert prefetch._environment_options() == prefetch.DataOptions()
