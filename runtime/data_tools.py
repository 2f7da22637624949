"""lrcn-convert-imageset and lrcn-compute-mean: Caffe's tools/convert_imageset.cpp and
tools/compute_image_mean.cpp, writing the same LMDB of Datum records and mean .binaryproto.

convert-imageset reads "path label" lines, decodes each image as Caffe does (BGR, optional
gray, optional warp to resize_height x resize_width) and stores a Datum under the key
"%08d_<path>" (line index in the possibly shuffled order), raw CHW bytes or, with --encoded,
the image file itself (or a re-encoding when it was resized or its colour mode changed).
Differences from Caffe: an unreadable image is an error (file and line) unless --skip_bad is
given (Caffe skips silently); --shuffle uses --seed (Caffe seeds from the clock); the database
is written under a temporary name and renamed into place when complete.

compute-mean averages every Datum of a database (float32 running sums, as Caffe's BlobProto
accumulation does) and writes a 1 x C x H x W BlobProto; it prints the per-channel means,
the numbers a `mean_value` list needs.
"""

import io
import logging
import os
import shutil
import sys

import numpy as np

from compiler import data_sources
from compiler.cli import ToolParser, run_tool
from compiler.errors import CompileError
from compiler.files import write_bytes_atomically
from compiler.extras import require
from lrcn_proto import caffe_pb2
from runtime.transform import decode_image, read_image

log = logging.getLogger("lrcn.data")

_COMMIT_EVERY = 1000                 # convert_imageset commits every 1000 records
_INITIAL_MAP_SIZE = 1 << 30          # grown by doubling when LMDB reports the map full
# Pillow format names of the encode types convert_imageset accepts.
_ENCODINGS = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "bmp": "BMP", "tif": "TIFF",
              "tiff": "TIFF", "ppm": "PPM", "pgm": "PPM", "webp": "WEBP"}


# --- progress ------------------------------------------------------------------------------

class _Progress:
    """tqdm on a terminal; a line every 1000 records otherwise (like Caffe's log)."""

    def __init__(self, total, what):
        self.count = 0
        self.what = what
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, unit=what, file=sys.stderr)

    def step(self):
        self.count += 1
        if self.bar is not None:
            self.bar.update(1)
        elif self.count % _COMMIT_EVERY == 0:
            print(f"Processed {self.count} {self.what}.", file=sys.stderr)

    def close(self):
        if self.bar is not None:
            self.bar.close()


# --- convert-imageset ----------------------------------------------------------------------

def image_datum(path, label, resize_height=0, resize_width=0, is_color=True, encoding="",
                where=(None, None)):
    """ReadImageToDatum: an image file -> a Datum (raw CHW bytes, or encoded)."""
    image = read_image(path, resize_height, resize_width, is_color, where=where)
    datum = caffe_pb2.Datum(label=label)
    if encoding:
        # Caffe keeps the file's own bytes when the image is neither resized nor converted.
        resized = resize_height > 0 and resize_width > 0
        native = data_sources.image_header(path, where).channels
        if not resized and native == image.shape[2] and _matches_extension(path, encoding):
            with open(path, "rb") as handle:
                datum.data = handle.read()
        else:
            datum.data = encode_image(image, encoding, where)
        datum.encoded = True
        return datum
    datum.channels, datum.height, datum.width = image.shape[2], image.shape[0], image.shape[1]
    datum.data = np.ascontiguousarray(image.transpose(2, 0, 1)).tobytes()
    return datum


def _matches_extension(path, encoding):
    extension = os.path.splitext(path)[1].lower().lstrip(".")
    return extension == encoding or (encoding == "jpg" and extension == "jpeg")


def encode_image(image, encoding, where=(None, None)):
    """cv::imencode of an HWC BGR (or gray) uint8 array, with Pillow."""
    from PIL import Image
    file_format = _ENCODINGS.get(encoding)
    if file_format is None:
        raise CompileError(f"unknown encode_type '{encoding}'", *where,
                           hint="use one of " + ", ".join(sorted(_ENCODINGS)))
    if image.shape[2] == 1:
        picture = Image.fromarray(image[:, :, 0], "L")
    else:
        picture = Image.fromarray(np.ascontiguousarray(image[:, :, 2::-1]), "RGB")
    buffer = io.BytesIO()
    options = {"quality": 95} if file_format == "JPEG" else {}     # OpenCV's JPEG default
    picture.save(buffer, format=file_format, **options)
    return buffer.getvalue()


def _guess_encoding(name, where):
    # convert_imageset with --encoded and no --encode_type uses each file's own extension.
    extension = os.path.splitext(name)[1].lower().lstrip(".")
    if not extension:
        raise CompileError(f"cannot guess the encoding of '{name}' (no extension)", *where,
                           hint="pass --encode_type jpg (or png)")
    return extension


class _LmdbWriter:
    """Puts records in chunks of _COMMIT_EVERY, doubling the map size when LMDB runs out."""

    def __init__(self, path):
        lmdb = require("lmdb", "writing an LMDB database")
        self._full = lmdb.MapFullError
        self.map_size = _INITIAL_MAP_SIZE
        self.env = data_sources.open_lmdb(path, write=True, map_size=self.map_size)
        self.pending = []

    def put(self, key, value):
        self.pending.append((key, value))
        if len(self.pending) >= _COMMIT_EVERY:
            self.commit()

    def commit(self):
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    for key, value in self.pending:
                        txn.put(key, value)
                break
            except self._full:
                self.map_size *= 2
                self.env.set_mapsize(self.map_size)
        self.pending = []

    def close(self):
        self.commit()
        self.env.sync()
        self.env.close()


def convert_imageset(root_folder, list_file, db_path, resize_height=0, resize_width=0,
                     gray=False, shuffle=False, seed=0, encoded=False, encode_type="",
                     check_size=False, skip_bad=False, backend="lmdb", overwrite=False):
    """Write the LMDB; returns (records written, records skipped)."""
    if backend != "lmdb":
        raise CompileError(f"backend '{backend}' is not supported for writing",
                           hint="use --backend lmdb (and `backend: LMDB` in the Data layer)")
    if (resize_height > 0) != (resize_width > 0):
        log.warning("only one of resize_height / resize_width is set: images are not resized")
    if os.path.exists(db_path) and not overwrite:
        raise CompileError("the database already exists", db_path,
                           hint="pass --overwrite to replace it, or choose another name")
    lines = data_sources.read_image_list(list_file)
    if shuffle:
        order = np.random.default_rng(seed).permutation(len(lines))
        lines = [lines[i] for i in order]
    partial = f"{db_path.rstrip(os.sep)}.partial-{os.getpid()}"
    if os.path.exists(partial):
        shutil.rmtree(partial)
    written = skipped = 0
    try:
        writer = _LmdbWriter(partial)
        progress = _Progress(len(lines), "files")
        first_size = None
        for line_id, entry in enumerate(lines):
            where = (list_file, entry.line)
            path = root_folder + entry.name
            encoding = (encode_type or _guess_encoding(entry.name, where)) if encoded else ""
            try:
                datum = image_datum(path, entry.label, resize_height, resize_width, not gray,
                                    encoding, where)
            except CompileError as error:
                if not skip_bad:
                    raise
                skipped += 1
                log.warning("skipping %s", str(error).replace("\n", " "))
                continue
            if check_size and not encoded:
                size = (datum.channels, datum.height, datum.width)
                if first_size is None:
                    first_size = size
                elif size != first_size:
                    raise CompileError(f"image {path} is {size} but the first image was "
                                       f"{first_size}", *where,
                                       hint="--check_size wants every image the same size; "
                                            "pass --resize_height / --resize_width")
            writer.put(f"{line_id:08d}_{entry.name}".encode("utf-8"),
                       datum.SerializeToString())
            written += 1
            progress.step()
        writer.close()
        progress.close()
        if written == 0:
            raise CompileError(f"no image of {list_file} could be read", list_file)
        if os.path.exists(db_path):
            shutil.rmtree(db_path) if os.path.isdir(db_path) else os.unlink(db_path)
        os.replace(partial, db_path)
    finally:
        if os.path.exists(partial):
            shutil.rmtree(partial, ignore_errors=True)
    return written, skipped


def _convert_imageset_body(argv):
    parser = ToolParser(
        "lrcn-convert-imageset",
        "Convert a set of images to an LMDB of Caffe Datum records (Caffe's convert_imageset).",
        """lrcn-convert-imageset --resize_height 256 --resize_width 256 --shuffle \\
    images/ train.txt train_lmdb
# train.txt lines: "cat/001.jpg 0"; keys are 00000000_cat/001.jpg ...""")
    parser.add_argument("root_folder", help="prefix joined to every path of the list "
                                            "(plain concatenation, as Caffe: end it with /)")
    parser.add_argument("list_file", help="text file of 'path label' lines")
    parser.add_argument("db_name", help="the LMDB directory to create")
    parser.add_argument("--gray", action="store_true", help="decode images as gray")
    parser.add_argument("--shuffle", action="store_true", help="shuffle the lines first")
    parser.add_argument("--seed", type=int, default=0, help="seed of --shuffle (default 0)")
    parser.add_argument("--backend", default="lmdb", choices=("lmdb", "leveldb"),
                        help="database type (only lmdb can be written)")
    parser.add_argument("--resize_width", "--resize-width", type=int, default=0,
                        help="warp images to this width (with --resize_height)")
    parser.add_argument("--resize_height", "--resize-height", type=int, default=0,
                        help="warp images to this height (with --resize_width)")
    parser.add_argument("--check_size", "--check-size", action="store_true",
                        help="require every datum to have the same size")
    parser.add_argument("--encoded", action="store_true",
                        help="store encoded images (the file itself when unchanged)")
    parser.add_argument("--encode_type", "--encode-type", default="",
                        help="jpg, png, ... for --encoded (default: each file's extension)")
    parser.add_argument("--skip_bad", "--skip-bad", action="store_true",
                        help="skip unreadable images (counted) instead of stopping")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing db_name")
    args = parser.parse_args(argv)
    if args.resize_height < 0 or args.resize_width < 0:
        parser.error("resize sizes must be >= 0")
    written, skipped = convert_imageset(
        args.root_folder, args.list_file, args.db_name, args.resize_height, args.resize_width,
        args.gray, args.shuffle, args.seed, args.encoded, args.encode_type.lower(),
        args.check_size, args.skip_bad, args.backend, args.overwrite)
    note = f" ({skipped} unreadable skipped)" if skipped else ""
    print(f"Processed {written} files{note}: {args.db_name}", file=sys.stderr)
    return 0


def convert_imageset_main(argv=None):
    return run_tool(_convert_imageset_body, sys.argv[1:] if argv is None else argv)


# --- compute-mean --------------------------------------------------------------------------

def datum_pixels(datum, where=(None, None), key=None):
    """A Datum's pixels as a CHW float32 array (encoded Datums decoded natively)."""
    if datum.encoded:
        return decode_image(bytes(datum.data), None, where).transpose(2, 0, 1) \
            .astype(np.float32)
    dims = data_sources.datum_dims(datum, None, where, key)
    if datum.data:
        return np.frombuffer(datum.data, np.uint8).reshape(dims).astype(np.float32)
    return np.asarray(datum.float_data, np.float32).reshape(dims)


def compute_mean(db_path, backend="lmdb"):
    """(mean as a C x H x W float32 array, number of records)."""
    if backend != "lmdb":
        raise CompileError(f"backend '{backend}' is not supported", hint="use an LMDB")
    env = data_sources.open_lmdb(db_path)
    total, count, where = None, 0, (db_path, None)
    with env.begin() as txn:
        progress = _Progress(txn.stat()["entries"], "records")
        for key, value in txn.cursor():
            pixels = datum_pixels(data_sources.parse_datum(value, where, key), where, key)
            if total is None:
                total = np.zeros(pixels.shape, np.float32)
            elif pixels.shape != total.shape:
                raise CompileError(f"record {key.decode('utf-8', 'replace')!r} of {db_path} "
                                   f"is {pixels.shape}, the first record was "
                                   f"{total.shape}", *where,
                                   hint="a mean needs equally sized images: convert them "
                                        "with --resize_height / --resize_width")
            total += pixels            # float32 accumulation, as Caffe's sum_blob
            count += 1
            progress.step()
        progress.close()
    if count == 0:
        raise CompileError(f"database {db_path} holds no records", db_path)
    return total / np.float32(count), count


def mean_blob(mean):
    """A BlobProto of a C x H x W mean with the legacy 1 x C x H x W fields Caffe writes."""
    channels, height, width = mean.shape
    blob = caffe_pb2.BlobProto(num=1, channels=channels, height=height, width=width)
    blob.data.extend(mean.astype(np.float32).ravel().tolist())
    return blob


def _compute_mean_body(argv):
    parser = ToolParser(
        "lrcn-compute-mean",
        "Compute the mean image of an LMDB of Datum records (Caffe's compute_image_mean).",
        """lrcn-compute-mean train_lmdb mean.binaryproto
# then: transform_param { mean_file: "mean.binaryproto" }""")
    parser.add_argument("input_db", help="LMDB directory of Datum records")
    parser.add_argument("output_file", nargs="?",
                        help=".binaryproto to write (omitted: only print channel means)")
    parser.add_argument("--backend", default="lmdb", choices=("lmdb", "leveldb"),
                        help="database type (only lmdb is read)")
    args = parser.parse_args(argv)
    mean, count = compute_mean(args.input_db, args.backend)
    if args.output_file:
        write_bytes_atomically(args.output_file, mean_blob(mean).SerializeToString())
    print(f"Processed {count} records.", file=sys.stderr)
    print(f"Number of channels: {mean.shape[0]}")
    for channel, value in enumerate(mean.reshape(mean.shape[0], -1).mean(axis=1)):
        print(f"mean_value channel [{channel}]: {value:g}")
    return 0


def compute_mean_main(argv=None):
    return run_tool(_compute_mean_body, sys.argv[1:] if argv is None else argv)
