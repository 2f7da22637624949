"""Cheap, torch-free reads of the files data layers name: list files, HDF5 dataset shapes, image
headers, the first LMDB record and BlobProto files.

The shape rules (compiler/data_shapes.py) use these to know a data layer's tops without loading
the data; the runtime (runtime/layers/data.py, runtime/data_tools.py) uses the same readers, so
a list file is parsed one way everywhere. Every error is a CompileError naming the file (and the
list line); a file that is simply absent raises MissingSource, a CompileError subclass, so that a
shape rule can tell "the data lives elsewhere" (shape unknown) from "the data is broken" (error).

Path rules, as Caffe applies them:
- a path written in a net file: working directory first, then the net file's directory
  (compiler.paths.resolve_path);
- an entry of an HDF5 list file: working directory first, then the list file's directory;
- an entry of an ImageData list file: `root_folder + entry`, plain string concatenation exactly
  as image_data_layer.cpp does (so root_folder normally ends with "/").
"""

import io
import os
import threading
from dataclasses import dataclass

import numpy as np

from lrcn_proto import caffe_pb2

from .errors import CompileError
from .extras import require
from .paths import resolve_path


class MissingSource(CompileError):
    """A file a data layer names does not exist (as opposed to existing but being unreadable)."""


# --- paths ---------------------------------------------------------------------------------

def resolve_source(path, naming_file=None, what="file", location=None):
    """resolve_path for a data file, raising MissingSource when it is absent."""
    try:
        return resolve_path(path, naming_file, what=what, location=location)
    except CompileError as error:
        raise MissingSource(error.message, error.file, error.line, error.col,
                            error.hint) from None


def resolve_listed(entry, list_file, line, what="file"):
    """An HDF5 list entry: as written (working directory), then beside the list file."""
    tried = [entry]
    if os.path.exists(entry):
        return entry
    if not os.path.isabs(entry):
        beside = os.path.join(os.path.dirname(os.path.abspath(list_file)), entry)
        tried.append(beside)
        if os.path.exists(beside):
            return beside
    raise MissingSource(f"{what} not found: {entry}", list_file, line,
                        hint="tried " + ", ".join(tried))


# --- list files ----------------------------------------------------------------------------

@dataclass(frozen=True)
class ListedFile:
    path: str        # resolved path of the entry
    line: int        # 1-based line of the list file naming it


@dataclass(frozen=True)
class ListedImage:
    name: str        # the path as written (root_folder is prefixed when it is opened)
    label: int
    line: int


def _list_lines(list_file, what):
    """(line number, stripped text) of the non-blank lines of a text list file."""
    try:
        with open(list_file, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise MissingSource(f"{what} not found: {list_file}", list_file) from None
    except OSError as error:
        raise CompileError(f"cannot read {what} {list_file}: {error.strerror}", list_file)\
            from None
    if b"\0" in raw:
        raise CompileError(f"{what} {list_file} is not a text file (it holds NUL bytes)",
                           list_file,
                           hint="`source` names a text file listing the data files, one per line")
    text = raw.decode("utf-8", errors="surrogateescape")
    return [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1)
            if line.strip()]


def read_hdf5_list(list_file):
    """The .h5 files an HDF5Data `source` lists, in list order, each resolved.

    Caffe reads the list with `>>`, i.e. whitespace-separated names: a line may hold several.
    """
    entries = []
    for number, text in _list_lines(list_file, "HDF5 list file"):
        for name in text.split():
            entries.append(ListedFile(resolve_listed(name, list_file, number, "HDF5 file"),
                                      number))
    if not entries:
        raise CompileError(f"HDF5 list file {list_file} lists no HDF5 files", list_file,
                           hint="write one .h5 path per line")
    return entries


def read_image_list(list_file):
    """The "path label" lines of an ImageData `source` (or a convert-imageset list).

    Like BVLC's newer readers, the label is the text after the last whitespace, so paths may
    hold spaces.
    """
    images = []
    for number, text in _list_lines(list_file, "image list file"):
        parts = text.rsplit(None, 1)
        if len(parts) != 2:
            raise CompileError(f"expected 'path label', got {text!r}", list_file, number,
                               hint="every line is an image path, a space and an integer label")
        name, label = parts
        try:
            value = int(label)
        except ValueError:
            raise CompileError(f"label {label!r} is not an integer", list_file, number,
                               hint="every line is an image path, a space and an integer "
                                    "label") from None
        images.append(ListedImage(name, value, number))
    if not images:
        raise CompileError(f"image list file {list_file} lists no images", list_file,
                           hint="write one 'path label' line per image")
    return images


def listed_image_path(root_folder, name, naming_file=None, list_file=None, line=None):
    """The file of an ImageData list entry: `root_folder + name`, concatenated as Caffe does.

    root_folder is a path written in the net file, so when the concatenation does not exist
    from the working directory a relative root_folder is also tried beside the net file.
    """
    joined = root_folder + name
    tried = [joined]
    if os.path.exists(joined):
        return joined
    if root_folder and naming_file and not os.path.isabs(joined):
        beside = os.path.join(os.path.dirname(os.path.abspath(naming_file)), joined)
        tried.append(beside)
        if os.path.exists(beside):
            return beside
    hint = "tried " + ", ".join(tried)
    if root_folder and not root_folder.endswith(("/", os.sep)) \
            and os.path.exists(os.path.join(root_folder, name)):
        hint += f"; root_folder {root_folder!r} lacks a trailing '/' (Caffe prefixes it as is)"
    raise MissingSource(f"image not found: {joined}", list_file, line, hint=hint)


# --- HDF5 ----------------------------------------------------------------------------------

def hdf5_dataset_shapes(path, names, list_file=None, line=None):
    """{dataset: shape} for the named datasets of one .h5 file, checked as Caffe checks them
    (hdf5_load_nd_dataset: the dataset exists, has >= 1 axis, holds float or double data)."""
    import h5py
    where = (list_file, line) if list_file else (path, None)
    try:
        handle = h5py.File(path, "r")
    except FileNotFoundError:
        raise MissingSource(f"HDF5 file not found: {path}", *where) from None
    except OSError as error:
        raise CompileError(f"cannot read HDF5 file {path}: {_h5_reason(error)}", *where,
                           hint="the file is not HDF5 or is damaged; re-create it") from None
    with handle:
        shapes = {}
        for name in names:
            dataset = handle.get(name)
            if not isinstance(dataset, h5py.Dataset):
                present = sorted(k for k in handle.keys() if isinstance(handle.get(k),
                                                                        h5py.Dataset))
                raise CompileError(f"HDF5 file {path} has no dataset '{name}'", *where,
                                   hint="each top of an HDF5Data layer reads the dataset of the "
                                        "same name; the file holds: "
                                        + (", ".join(present) or "no datasets"))
            if dataset.ndim < 1:
                raise CompileError(f"dataset '{name}' of {path} is a scalar", *where,
                                   hint="HDF5Data needs at least one axis (the rows)")
            if dataset.dtype.kind != "f":
                raise CompileError(f"dataset '{name}' of {path} holds {dataset.dtype} data",
                                   *where, hint="Caffe's HDF5Data reads float or double "
                                                "datasets only; store it as float32")
            shapes[name] = tuple(int(d) for d in dataset.shape)
    rows = {name: shape[0] for name, shape in shapes.items()}
    if len(set(rows.values())) > 1:
        listing = ", ".join(f"{n}: {r}" for n, r in rows.items())
        raise CompileError(f"datasets of {path} have different numbers of rows ({listing})",
                           *where, hint="every dataset of one file needs the same first axis")
    return shapes


def _h5_reason(error):
    # h5py's messages carry the whole HDF5 error stack; its last clause is the readable part.
    text = str(error)
    return text.split("(")[0].strip().rstrip(",") or text


# --- images --------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageHeader:
    height: int
    width: int
    channels: int       # as OpenCV decodes it unchanged (IMREAD_UNCHANGED)


# Pillow modes -> channels of OpenCV's unchanged decode.
_NATIVE_CHANNELS = {"1": 1, "L": 1, "I": 1, "I;16": 1, "I;16B": 1, "I;16L": 1, "F": 1,
                    "LA": 2, "RGBA": 4, "CMYK": 3}
# EXIF orientations that swap height and width (OpenCV applies the orientation tag).
_TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}


def image_header(source, where=(None, None)):
    """Size and channels of an image file (or encoded bytes) from its header, without decoding
    the pixels. `where` is the (file, line) to blame in errors."""
    from PIL import Image, UnidentifiedImageError
    name = source if isinstance(source, str) else "encoded image"
    try:
        opened = Image.open(source if isinstance(source, str) else io.BytesIO(source))
    except FileNotFoundError:
        raise MissingSource(f"image not found: {name}", *where) from None
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError,
            ValueError) as error:
        raise CompileError(f"cannot read image {name}: {error}", *where,
                           hint="the file is not an image Pillow can decode, or is damaged")\
            from None
    with opened as image:
        width, height = image.size
        orientation = _orientation(image)
        if orientation in _TRANSPOSING_ORIENTATIONS:
            width, height = height, width
        return ImageHeader(height, width, _NATIVE_CHANNELS.get(image.mode, 3))


def _orientation(image):
    try:
        return image.getexif().get(0x0112, 1)
    except Exception:   # a damaged EXIF block: OpenCV ignores it too
        return 1


def image_channels(is_color):
    """Channels of an image decoded as ImageData / convert_imageset decode it."""
    return 3 if is_color else 1


def fork_min_size(height, width, min_height, min_width):
    """(height, width) after lisa-caffe-public's ReadImageToCVMat min_height / min_width rule.

    An image smaller than the minimum in either direction is resized, keeping its aspect ratio,
    so that the direction that falls shorter by more pixels reaches its minimum exactly; the
    other side is rounded half up as the fork's `int(float + 0.5)` does.
    """
    if not (height < min_height or width < min_width):
        return height, width
    if min_width - width > min_height - height:
        return int(float(min_width) * (float(height) / float(width)) + 0.5), min_width
    return min_height, int(float(min_height) * (float(width) / float(height)) + 0.5)


# --- LMDB / LevelDB ------------------------------------------------------------------------

LEVELDB = caffe_pb2.DataParameter.LEVELDB
LMDB = caffe_pb2.DataParameter.LMDB


# LMDB allows one open environment per database file and process, and a train net, a test net
# and the shape rules may all read one database: read-only environments are shared, keyed by
# the data file's identity (a database replaced on disk gets a new one), and stay open.
_readers = {}
_readers_lock = threading.Lock()


def open_lmdb(path, write=False, map_size=None):
    """An lmdb.Environment on a Caffe LMDB (a directory holding data.mdb, or the file itself).
    Read-only environments are shared: do not close them."""
    lmdb = require("lmdb", "reading an LMDB database (Caffe's Data layer)")
    if write:
        return _open_lmdb(lmdb, path, dict(subdir=True, lock=True, map_size=map_size))
    if not os.path.exists(path):
        raise MissingSource(f"LMDB not found: {path}", path)
    data_file = os.path.join(path, "data.mdb") if os.path.isdir(path) else path
    try:
        identity = os.stat(data_file)
    except FileNotFoundError:
        raise CompileError(f"{path} is not an LMDB (it has no data.mdb)", path,
                           hint="Data layers read LMDB directories written by "
                                "lrcn-convert-imageset (or Caffe's convert_imageset)") from None
    key = (identity.st_dev, identity.st_ino)
    with _readers_lock:
        if key not in _readers:
            _readers[key] = _open_lmdb(lmdb, path, dict(
                readonly=True, subdir=os.path.isdir(path), lock=False, readahead=False,
                max_readers=512))
        return _readers[key]


def _open_lmdb(lmdb, path, options):
    try:
        return lmdb.open(path, **{k: v for k, v in options.items() if v is not None})
    except lmdb.Error as error:
        raise CompileError(f"cannot open LMDB {path}: {error}", path,
                           hint="Data layers read LMDB directories written by "
                                "lrcn-convert-imageset (or Caffe's convert_imageset)") from None


def open_leveldb(path):
    """A plyvel DB, where plyvel is installed; otherwise the error says what to do."""
    if not os.path.exists(path):
        raise MissingSource(f"LevelDB not found: {path}", path)
    if os.path.exists(os.path.join(path, "data.mdb")):
        raise CompileError(f"{path} is an LMDB but the layer reads it as LevelDB", path,
                           hint="set `backend: LMDB` in data_param (the default is LEVELDB)")
    try:
        import plyvel
    except ImportError:
        raise CompileError(f"{path}: LevelDB databases are not supported without the plyvel "
                           "package", path,
                           hint="pip install plyvel, or re-create the data as LMDB with "
                                "lrcn-convert-imageset --backend lmdb and set "
                                "`backend: LMDB`") from None
    try:
        return plyvel.DB(path, create_if_missing=False)
    except Exception as error:      # plyvel raises its own error classes
        raise CompileError(f"cannot open LevelDB {path}: {error}", path) from None


def first_record(path, backend):
    """(key, value bytes) of the first record of a Data layer's database."""
    if backend == LEVELDB:
        db = open_leveldb(path)
        try:
            for key, value in db.iterator():
                return key, value
        finally:
            db.close()
    else:
        with open_lmdb(path).begin() as txn:
            cursor = txn.cursor()
            if cursor.first():
                return cursor.key(), cursor.value()
    raise CompileError(f"database {path} holds no records", path,
                       hint="the conversion wrote nothing; check its list file")


def parse_datum(value, where=(None, None), key=None):
    """A Datum from a database value; errors name the database and the record key."""
    datum = caffe_pb2.Datum()
    try:
        datum.ParseFromString(value)
    except Exception:
        raise CompileError(f"record {_key_text(key)}{_of(where)} is not a Datum", *where,
                           hint="Data layers read Datum records (lrcn-convert-imageset)")\
            from None
    return datum


def _of(where):
    return f" of {where[0]}" if where[0] else ""


def _key_text(key):
    if key is None:
        return "?"
    return repr(key.decode("utf-8", errors="replace") if isinstance(key, bytes) else key)


def datum_dims(datum, color=None, where=(None, None), key=None):
    """(channels, height, width) of a Datum as the transformer sees it.

    `color` decides how an encoded Datum decodes: True (force colour: 3 channels), False
    (force gray: 1) or None (native). Raw Datums keep their stated size.
    """
    if datum.encoded:
        header = image_header(bytes(datum.data), where)
        channels = header.channels if color is None else (3 if color else 1)
        return channels, header.height, header.width
    dims = (datum.channels, datum.height, datum.width)
    size = int(np.prod(dims))
    stored = len(datum.data) if datum.data else len(datum.float_data)
    if min(dims) <= 0 or stored != size:
        raise CompileError(f"record {_key_text(key)}{_of(where)} states size {dims} but holds "
                           f"{stored} values", *where, hint="the database is damaged; re-create it")
    return dims


# --- BlobProto (mean files) ----------------------------------------------------------------

def read_blob_proto(path, where=(None, None)):
    """The array of a .binaryproto BlobProto, in its stated shape (`shape` or legacy 4-d)."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise MissingSource(f"mean file not found: {path}", *where) from None
    except OSError as error:
        raise CompileError(f"cannot read {path}: {error.strerror}", *where) from None
    blob = caffe_pb2.BlobProto()
    try:
        blob.ParseFromString(raw)
    except Exception:
        raise CompileError(f"{path} is not a BlobProto (.binaryproto) file", *where,
                           hint="make one with lrcn-compute-mean") from None
    if blob.HasField("shape"):
        shape = tuple(int(d) for d in blob.shape.dim)
    else:
        shape = (blob.num, blob.channels, blob.height, blob.width)
    values = np.asarray(blob.double_data if len(blob.double_data) else blob.data,
                        dtype=np.float32)
    if values.size != int(np.prod(shape)) or values.size == 0:
        raise CompileError(f"{path} states shape {shape} but holds {values.size} values",
                           *where, hint="the mean file is damaged or empty; re-create it")
    return values.reshape(shape)


def mean_image_shape(path, where=(None, None)):
    """(channels, height, width) of a mean file (a leading num of 1 dropped)."""
    mean = read_blob_proto(path, where)
    shape = mean.shape
    while len(shape) > 3 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 3:
        raise CompileError(f"mean file {path} has shape {mean.shape}; expected "
                           "1 x channels x height x width", *where)
    return shape
