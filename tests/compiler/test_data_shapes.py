"""Shape rules of the data layers (compiler/data_shapes.py): tops read cheaply from the files,
None where the files are absent, CompileError where they are broken or Caffe would refuse."""

import h5py
import lmdb
import numpy as np
import pytest
from PIL import Image

import compiler
from compiler import data_sources
from compiler.errors import CompileError
from compiler.shapes import ShapeContext, infer_layer
from lrcn_proto import caffe_pb2


def shapes(text, bottoms=(), phase="TRAIN", net_file=None, input_shapes=None):
    layer = compiler.parse_text(text, "net").layer[0]
    context = ShapeContext(phase, net_file, dict(input_shapes or {}))
    return infer_layer(layer, list(bottoms), context).top_shapes


def write_h5(path, **datasets):
    with h5py.File(path, "w") as handle:
        for name, values in datasets.items():
            handle[name] = values
    return str(path)


def hdf5(source, batch=20, tops=("cont", "words"), extra=""):
    return ('layer { name: "h" type: "HDF5Data" ' + " ".join(f'top: "{t}"' for t in tops)
            + f' {extra} hdf5_data_param {{ source: "{source}" batch_size: {batch} }} }}')


def image_data(source, extra="", transform="", tops=('top: "data" top: "label"')):
    return (f'layer {{ name: "i" type: "ImageData" {tops} transform_param {{ {transform} }} '
            f'image_data_param {{ source: "{source}" batch_size: 10 {extra} }} }}')


# --- HDF5Data ------------------------------------------------------------------------------

def test_hdf5_tops_are_batch_then_the_dataset_row_shape(tmp_path):
    write_h5(tmp_path / "a.h5", cont=np.zeros((40, 100), np.float32),
             words=np.zeros((40, 100, 2), np.float64))
    (tmp_path / "list.txt").write_text(f"{tmp_path / 'a.h5'}\n")
    assert shapes(hdf5(tmp_path / "list.txt")) == [(20, 100), (20, 100, 2)]


def test_hdf5_sources_resolve_beside_the_net_file(tmp_path):
    write_h5(tmp_path / "a.h5", cont=np.zeros((4,), np.float32), words=np.zeros((4, 3)))
    (tmp_path / "list.txt").write_text("a.h5\n")
    net_file = str(tmp_path / "net.prototxt")
    assert shapes(hdf5("list.txt", 2), net_file=net_file) == [(2,), (2, 3)]


def test_hdf5_missing_files_give_unknown_shapes(tmp_path):
    assert shapes(hdf5(tmp_path / "nowhere.txt")) == [None, None]
    (tmp_path / "list.txt").write_text("elsewhere/a.h5\n")
    assert shapes(hdf5(tmp_path / "list.txt")) == [None, None]


def test_hdf5_broken_data_and_settings_are_errors(tmp_path):
    (tmp_path / "junk.h5").write_bytes(b"junk" * 20)
    (tmp_path / "list.txt").write_text(f"{tmp_path / 'junk.h5'}\n")
    with pytest.raises(CompileError) as caught:
        shapes(hdf5(tmp_path / "list.txt"))
    assert (caught.value.file, caught.value.line) == (str(tmp_path / "list.txt"), 1)
    write_h5(tmp_path / "a.h5", cont=np.zeros((4,), np.float32))
    (tmp_path / "one.txt").write_text(f"{tmp_path / 'a.h5'}\n")
    with pytest.raises(CompileError, match="has no dataset 'words'"):
        shapes(hdf5(tmp_path / "one.txt"))
    with pytest.raises(CompileError, match="does not transform data"):
        shapes(hdf5(tmp_path / "one.txt", tops=("cont",), extra="transform_param { }"))
    with pytest.raises(CompileError, match="batch_size must be positive"):
        shapes(hdf5(tmp_path / "one.txt", batch=0, tops=("cont",)))
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(CompileError, match="lists no HDF5 files"):
        shapes(hdf5(tmp_path / "empty.txt"))
    with pytest.raises(CompileError, match="needs exactly 0 bottoms, has 1"):
        shapes(hdf5(tmp_path / "one.txt", tops=("cont",)), bottoms=[(1,)])


# --- ImageData -----------------------------------------------------------------------------

@pytest.fixture
def image_list(tmp_path):
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "first.jpg")
    (tmp_path / "list.txt").write_text("first.jpg 0\nsecond.jpg 1\n")
    return tmp_path / "list.txt"


def test_image_data_shape_from_the_first_image(tmp_path, image_list):
    root = f'root_folder: "{tmp_path}/"'
    assert shapes(image_data(image_list, root)) == [(10, 3, 30, 40), (10,)]
    assert shapes(image_data(image_list, root + " is_color: false")) == [(10, 1, 30, 40),
                                                                          (10,)]
    assert shapes(image_data(image_list, root, "crop_size: 25")) == [(10, 3, 25, 25), (10,)]
    assert shapes(image_data(image_list, root + " min_height: 60 min_width: 60")) == \
        [(10, 3, 60, 80), (10,)]
    # ImageDataLayer::ExactNumTopBlobs is 2: data and label.
    with pytest.raises(CompileError, match="needs exactly 2 tops, has 1"):
        shapes(image_data(image_list, root, tops='top: "data"'))


def test_image_data_new_size_needs_no_image(tmp_path):
    text = image_data(tmp_path / "absent.txt", "new_height: 256 new_width: 256",
                      "crop_size: 227")
    assert shapes(text) == [(10, 3, 227, 227), (10,)]


def test_image_data_unknown_when_absent_error_when_broken(tmp_path, image_list):
    assert shapes(image_data(tmp_path / "absent.txt")) == [None, None]
    (tmp_path / "other.txt").write_text("not_here.jpg 0\n")
    assert shapes(image_data(tmp_path / "other.txt")) == [None, None]
    (tmp_path / "broken.jpg").write_bytes(b"garbage")
    (tmp_path / "broken.txt").write_text("broken.jpg 0\n")
    with pytest.raises(CompileError) as caught:
        shapes(image_data(tmp_path / "broken.txt", f'root_folder: "{tmp_path}/"'))
    assert str(caught.value).startswith(f"{tmp_path / 'broken.txt'}:1: cannot read image")


def test_image_data_setting_checks(tmp_path, image_list):
    root = f'root_folder: "{tmp_path}/"'
    with pytest.raises(CompileError, match="new_height and new_width must be set at the same"):
        shapes(image_data(image_list, "new_height: 10"))
    with pytest.raises(CompileError, match="min_height and min_width"):
        shapes(image_data(image_list, "min_width: 10"))
    with pytest.raises(CompileError, match="crop_size 31 is larger than the 30 x 40 input"):
        shapes(image_data(image_list, root, "crop_size: 31"))
    with pytest.raises(CompileError, match="2 mean_value entries for 3 channels"):
        shapes(image_data(image_list, root, "mean_value: 1 mean_value: 2"))
    blob = caffe_pb2.BlobProto(num=1, channels=3, height=2, width=2)
    blob.data.extend([0.0] * 12)
    (tmp_path / "mean.binaryproto").write_bytes(blob.SerializeToString())
    with pytest.raises(CompileError, match="mean file .* is 3 x 2 x 2 but the images are "
                                           "3 x 30 x 40"):
        shapes(image_data(image_list, root, f'mean_file: "{tmp_path / "mean.binaryproto"}"'))
    with pytest.raises(CompileError, match="image_data_param.source"):
        shapes('layer { name: "i" type: "ImageData" top: "d" top: "l" image_data_param { '
               'batch_size: 1 } }')


# --- Data (LMDB) ---------------------------------------------------------------------------

def write_lmdb(path, *datums):
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for index, datum in enumerate(datums):
            txn.put(f"{index:08d}".encode(), datum.SerializeToString())
    env.close()
    return str(path)


def data_layer(source, transform="", backend="LMDB"):
    return (f'layer {{ name: "d" type: "Data" top: "data" top: "label" transform_param {{ '
            f'{transform} }} data_param {{ source: "{source}" backend: {backend} '
            f'batch_size: 8 }} }}')


def test_data_shapes_from_the_first_datum(tmp_path):
    raw = caffe_pb2.Datum(channels=3, height=5, width=7, data=bytes(105), label=1)
    db = write_lmdb(tmp_path / "raw", raw)
    assert shapes(data_layer(db)) == [(8, 3, 5, 7), (8,)]
    assert shapes(data_layer(db, "crop_size: 4")) == [(8, 3, 4, 4), (8,)]
    png = tmp_path / "x.png"
    Image.fromarray(np.zeros((6, 9, 3), np.uint8)).save(png)
    encoded = write_lmdb(tmp_path / "enc", caffe_pb2.Datum(data=png.read_bytes(),
                                                           encoded=True))
    assert shapes(data_layer(encoded)) == [(8, 3, 6, 9), (8,)]
    assert shapes(data_layer(encoded, "force_gray: true")) == [(8, 1, 6, 9), (8,)]


def test_data_absent_unknown_broken_error(tmp_path):
    assert shapes(data_layer(tmp_path / "absent")) == [None, None]
    short = caffe_pb2.Datum(channels=3, height=5, width=7, data=bytes(10))
    with pytest.raises(CompileError, match="states size .* but holds 10 values"):
        shapes(data_layer(write_lmdb(tmp_path / "short", short)))
    (tmp_path / "notdb").mkdir()
    with pytest.raises(CompileError, match="is not an LMDB"):
        shapes(data_layer(tmp_path / "notdb"))
    with pytest.raises(CompileError, match="holds no records"):
        shapes(data_layer(write_lmdb(tmp_path / "empty")))
    db = write_lmdb(tmp_path / "lmdb", caffe_pb2.Datum(channels=1, height=1, width=1,
                                                       data=b"\0"))
    with pytest.raises(CompileError, match="set `backend: LMDB`"):
        shapes(data_layer(db, backend="LEVELDB"))


# --- DummyData, MemoryData, WindowData, Python, HDF5Output ----------------------------------

def test_dummy_data_shapes():
    assert shapes('layer { name: "d" type: "DummyData" top: "a" top: "b" dummy_data_param { '
                  'shape { dim: 2 dim: 3 } } }') == [(2, 3), (2, 3)]
    assert shapes('layer { name: "d" type: "DummyData" top: "a" top: "b" dummy_data_param { '
                  'num: 5 num: 6 channels: 1 height: 2 width: 3 } }') == [(5, 1, 2, 3),
                                                                         (6, 1, 2, 3)]
    with pytest.raises(CompileError, match="both shape and legacy"):
        shapes('layer { name: "d" type: "DummyData" top: "a" dummy_data_param { num: 1 '
               'channels: 1 height: 1 width: 1 shape { dim: 1 } } }')
    with pytest.raises(CompileError, match="must specify 'width' once"):
        shapes('layer { name: "d" type: "DummyData" top: "a" dummy_data_param { num: 1 '
               'channels: 1 height: 1 } }')
    with pytest.raises(CompileError, match="number of data fillers must be 0, 1 or equal"):
        shapes('layer { name: "d" type: "DummyData" top: "a" top: "b" top: "c" '
               'dummy_data_param { shape { dim: 1 } data_filler { } data_filler { } } }')


def test_memory_and_window_data_shapes():
    assert shapes('layer { name: "m" type: "MemoryData" top: "d" top: "l" memory_data_param { '
                  'batch_size: 4 channels: 3 height: 5 width: 6 } }') == [(4, 3, 5, 6), (4,)]
    with pytest.raises(CompileError, match="must be specified and positive"):
        shapes('layer { name: "m" type: "MemoryData" top: "d" top: "l" memory_data_param { '
               'batch_size: 4 } }')
    assert shapes('layer { name: "w" type: "WindowData" top: "d" top: "l" transform_param { '
                  'crop_size: 227 } window_data_param { source: "w.txt" batch_size: 128 } }') \
        == [(128, 3, 227, 227), (128,)]
    with pytest.raises(CompileError, match="crop_size > 0"):
        shapes('layer { name: "w" type: "WindowData" top: "d" top: "l" window_data_param { '
               'batch_size: 1 } }')


def test_python_tops_are_unknown_unless_given():
    text = ('layer { name: "p" type: "Python" top: "data" top: "label" python_param { '
            'module: "m" layer: "L" } }')
    assert shapes(text) == [None, None]
    assert shapes(text, input_shapes={"data": (2, 3)}) == [(2, 3), None]
    with pytest.raises(CompileError, match="needs python_param.module"):
        shapes('layer { name: "p" type: "Python" top: "x" }')


def test_hdf5_output_has_no_tops():
    text = ('layer { name: "o" type: "HDF5Output" bottom: "a" bottom: "b" '
            'hdf5_output_param { file_name: "out.h5" } }')
    assert shapes(text, bottoms=[(2, 3), (2,)]) == []
    with pytest.raises(CompileError, match="exactly 2 bottoms"):
        shapes(text, bottoms=[(2, 3)])


# --- through compile_net -------------------------------------------------------------------

def test_compile_net_reports_data_file_errors_at_the_list_line(tmp_path):
    write_h5(tmp_path / "good.h5", x=np.zeros((3, 2), np.float32))
    (tmp_path / "list.txt").write_text("good.h5\n")
    net = tmp_path / "net.prototxt"
    net.write_text('layer { name: "h" type: "HDF5Data" top: "x" '
                   'hdf5_data_param { source: "list.txt" batch_size: 2 } }\n')
    compiled = compiler.compile_net(str(net))
    assert compiled.layers[0].top_shapes == [(2, 2)]
    (tmp_path / "list.txt").write_text("broken.h5\n")
    (tmp_path / "broken.h5").write_bytes(b"\0" * 64)
    with pytest.raises(CompileError) as caught:
        compiler.compile_net(str(net))
    assert (caught.value.file, caught.value.line) == (str(tmp_path / "list.txt"), 1)


def test_list_readers(tmp_path):
    listing = tmp_path / "images.txt"
    listing.write_text("a b/with space.jpg 3\n\n  c.jpg   -1  \n")
    entries = data_sources.read_image_list(str(listing))
    assert [(e.name, e.label, e.line) for e in entries] == [("a b/with space.jpg", 3, 1),
                                                            ("c.jpg", -1, 3)]
    (tmp_path / "binary.txt").write_bytes(b"\x89HDF\r\n\x1a\n\0\0")
    with pytest.raises(CompileError, match="is not a text file"):
        data_sources.read_image_list(str(tmp_path / "binary.txt"))
