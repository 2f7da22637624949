"""Data layer units: HDF5Data, HDF5Output, ImageData, Data (LMDB), DummyData, MemoryData,
WindowData.

Data units take no bottoms; `forward()` returns their tops as CPU float32 tensors (the Net
moves them to its device) and `top_shapes()` reports the shapes (the compiled ones, or, where
the compiler could not read the files, those of the data as the unit reads it). Batches are built by `load_batch(k)`,
a pure function of the batch index k, and delivered in order by runtime.prefetch.Prefetcher,
so the data seen for a given seed does not depend on the number of prefetch workers. Record
order follows Caffe exactly (list order, wrap-around, rand_skip, per-epoch shuffles); the
random numbers themselves come from numpy (Caffe's boost generator is not reproduced).

The Python layer unit lives in runtime/python_layer.py and is registered by importing it here.
"""

import collections
import logging
import threading
from dataclasses import dataclass

import h5py
import numpy as np
import torch

from compiler import data_shapes, data_sources
from compiler.errors import CompileError
from compiler.shapes import ShapeContext
from runtime import prefetch, sharding
from runtime import python_layer  # noqa: F401  (registers the "Python" unit)
from runtime.fillers import fill_
from runtime.layers.base import CaffeLayer, LayerError
from runtime.layers.registry import register
from runtime.transform import (DataTransformer, DecodedImages, chw_shape, decode_image,
                               load_mean_file, read_image, resize_bilinear)

log = logging.getLogger("lrcn.data")

# Purposes of the layer's random streams: batch_rng(seed, purpose, index...).
_BATCH, _SHUFFLE, _SKIP, _FILES, _ROWS = range(5)


def _location(layer):
    location = getattr(layer, "location", None)
    return tuple(location) if location else (None, None, None)


def _naming_file(layer):
    return _location(layer)[0]


class DataLayer(CaffeLayer):
    """Shared machinery: seed, prefetcher, bad-record policy, top_shapes()."""

    shardable = True

    def __init__(self, layer, rng=None):
        super().__init__(layer, rng)
        self.seed = prefetch.layer_seed(self.rng, layer.name)
        settings = prefetch.data_options()
        self.workers = settings.workers
        self.bad_records = prefetch.BadRecords(layer.name, settings.skip_bad_records)
        self.depth = (self.param.data_param.prefetch if self.param.HasField("data_param")
                      else data_shapes.DEFAULT_PREFETCH)
        self._prefetcher = None
        self._start = 0          # the batch the next prefetcher starts from

    # -- batches ----------------------------------------------------------------------------

    def load_batch(self, index):
        """Batch `index` as a tuple of numpy arrays, one per top (thread-safe)."""
        raise NotImplementedError

    def forward(self):
        if self._prefetcher is None:
            # sharding.load: on several ranks, this rank's part of each batch (else load_batch).
            self._prefetcher = prefetch.Prefetcher(lambda index: sharding.load(self, index),
                                                   self.workers, self.depth, self.layer.name,
                                                   self._start)
        return tuple(torch.from_numpy(array) for array in self._prefetcher.next())

    @property
    def position(self):
        """Batches delivered so far (the index of the next batch)."""
        return self._prefetcher.position if self._prefetcher is not None else self._start

    def set_workers(self, workers):
        """Change the number of prefetch workers; the sequence of batches is unchanged."""
        self.workers = int(workers)
        self._restart(self.position)

    def resume_state(self):
        """What a solver snapshot keeps to continue the data where it stopped."""
        return {"batch": self.position}

    def restore_state(self, state):
        self._restart(int(state["batch"]))

    def _restart(self, position):
        self.close()
        self._start = position

    def close(self):
        """Stop the prefetch workers (they also stop when the unit is collected or at exit)."""
        if self._prefetcher is not None:
            self._start = self._prefetcher.position
            self._prefetcher.close()
            self._prefetcher = None

    # -- shapes -----------------------------------------------------------------------------

    def top_shapes(self):
        """The compiled top shapes, or (files the compiler could not read) the shapes of the
        data as this unit reads it, found the way Caffe's DataLayerSetUp finds them."""
        known = list(getattr(self.layer, "top_shapes", None) or [])
        if len(known) == len(self.layer.tops) and all(s is not None for s in known):
            return [tuple(s) for s in known]
        return self._read_top_shapes()

    def _read_top_shapes(self):
        raise NotImplementedError

    def _where(self):
        return _location(self.layer)

    def _source(self, path, what):
        file, line, col = self._where()
        return data_sources.resolve_source(path, file, what, (file, line, col))

    def _check_batch_shape(self, first, array, layout, what, where):
        """Raise unless `array` transforms to the shape the batch's `first` input does."""
        if array.shape == first.shape:
            return
        shape, first_shape = (self.transformer.output_shape(*chw_shape(data, layout))
                              for data in (array, first))
        if shape != first_shape:
            raise CompileError(f"{what} gives a {' x '.join(map(str, shape))} blob but the "
                               f"batch's first record gave {' x '.join(map(str, first_shape))}",
                               *where,
                               hint="every record of a batch needs one size: set new_height / "
                                    "new_width (or crop_size)")


# --- HDF5Data ------------------------------------------------------------------------------

@register("HDF5Data")
class HDF5Data(DataLayer):
    """Rows of the datasets named like its tops, from the .h5 files of a list, in Caffe's
    order: files in list order, rows in order, on to the next file, back to the first file
    after the last. With `shuffle`, each pass over the data visits the files in a fresh
    permutation and each file's rows in a fresh permutation (hdf5_data_layer.cpp's
    random_shuffle of file_permutation_ at setup and wrap, data_permutation_ at each load)."""

    def __init__(self, layer, rng=None):
        super().__init__(layer, rng)
        param = self.param.hdf5_data_param
        data_shapes.check_hdf5_data(self.param)
        self.batch_size = param.batch_size
        self.shuffle = param.shuffle
        self.tops = list(self.param.top)
        self.list_file = self._source(param.source, "HDF5 list file")
        self.files = self._scan(data_sources.read_hdf5_list(self.list_file))
        self.total_rows = sum(rows for _, rows, _ in self.files)
        self._cache = collections.OrderedDict()
        self._cache_size = max(2, self.workers + 1)
        self._permutations = collections.OrderedDict()
        self._lock = threading.Lock()

    def _scan(self, entries):
        """(path, rows, list line) of every usable file, with Caffe's consistency checks."""
        files, reference = [], None
        for entry in entries:
            try:
                shapes = data_sources.hdf5_dataset_shapes(entry.path, self.tops,
                                                          self.list_file, entry.line)
                rows = shapes[self.tops[0]][0]
                if rows == 0:
                    raise CompileError(f"HDF5 file {entry.path} has no rows", self.list_file,
                                       entry.line)
                trailing = {top: shapes[top][1:] for top in self.tops}
                if reference is not None and trailing != reference[0]:
                    raise CompileError(
                        f"HDF5 file {entry.path} has row shapes {_describe(trailing)} but "
                        f"{reference[1]} (line {reference[2]}) has {_describe(reference[0])}",
                        self.list_file, entry.line,
                        hint="every file of an HDF5Data list needs the same shape past axis 0")
            except CompileError as error:
                self.bad_records.record(entry.path, error)
                continue
            if reference is None:
                reference = (trailing, entry.path, entry.line)
            files.append((entry.path, rows, entry.line))
        if not files:
            raise CompileError(f"no readable HDF5 file in {self.list_file}", self.list_file)
        self._row_shapes = reference[0]
        return files

    def _read_top_shapes(self):
        return [(self.batch_size,) + self._row_shapes[top] for top in self.tops]

    def _permutation(self, key, size):
        """A seeded permutation, remembered: every row of a batch asks for the same ones."""
        with self._lock:
            if key not in self._permutations:
                self._permutations[key] = prefetch.batch_rng(self.seed, *key).permutation(size)
                while len(self._permutations) > 8:
                    self._permutations.popitem(last=False)
            return self._permutations[key]

    def _epoch_layout(self, epoch):
        """(file order, start row of each slot) of one pass over the data."""
        order = (self._permutation((_FILES, epoch), len(self.files)) if self.shuffle
                 else np.arange(len(self.files)))
        sizes = np.array([self.files[j][1] for j in order])
        return order, np.concatenate([[0], np.cumsum(sizes)])

    def _locate(self, position):
        """(file index, row) of the position-th row delivered since the start."""
        epoch, offset = divmod(position, self.total_rows)
        order, starts = self._epoch_layout(epoch)
        slot = int(np.searchsorted(starts, offset, side="right") - 1)
        file_index = int(order[slot])
        row = offset - int(starts[slot])
        if self.shuffle:
            rows = self.files[file_index][1]
            row = int(self._permutation((_ROWS, epoch, file_index), rows)[row])
        return file_index, row

    def _data(self, file_index):
        """All datasets of one file as float32 (Caffe loads whole files too), LRU-cached."""
        with self._lock:
            if file_index in self._cache:
                self._cache.move_to_end(file_index)
                return self._cache[file_index]
            path, _, line = self.files[file_index]
            try:
                with h5py.File(path, "r") as handle:
                    arrays = {top: np.asarray(handle[top][...], dtype=np.float32)
                              for top in self.tops}
            except (OSError, KeyError) as error:
                raise CompileError(f"cannot read HDF5 file {path}: {error}", self.list_file,
                                   line) from None
            self._cache[file_index] = arrays
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            return arrays

    def load_batch(self, index):
        start = index * self.batch_size
        places = [self._locate(position) for position in range(start, start + self.batch_size)]
        row_shapes = self._data(places[0][0])
        outputs = [np.empty((self.batch_size,) + row_shapes[top].shape[1:], np.float32)
                   for top in self.tops]
        for item, (file_index, row) in enumerate(places):
            arrays = self._data(file_index)
            for output, top in zip(outputs, self.tops):
                output[item] = arrays[top][row]
        return tuple(outputs)


def _describe(trailing):
    return ", ".join(f"{top} {shape}" for top, shape in trailing.items())


# --- HDF5Output ----------------------------------------------------------------------------

@register("HDF5Output")
class HDF5Output(CaffeLayer):
    """Writes its two bottoms to datasets "data" and "label" of hdf5_output_param.file_name.

    Caffe writes one batch per file (a second forward fails on the existing dataset); here
    every forward appends its rows, so a run of N batches leaves N * batch rows. The file is
    created (truncated) at the first forward; a resumed run appends after the rows written up to
    its snapshot. Nothing flows backward (Caffe's Backward is empty).
    """

    no_grad_bottoms = (0, 1)
    dataset_names = ("data", "label")     # HDF5_DATA_DATASET_NAME, HDF5_DATA_LABEL_NAME

    def __init__(self, layer, rng=None):
        super().__init__(layer, rng)
        self.file_name = self.param.hdf5_output_param.file_name
        self._rows = 0           # rows written so far; 0: the next forward creates the file
        self._trim = False       # after a resume: cut rows written after the snapshot first

    def resume_state(self):
        return {"rows": self._rows}

    def restore_state(self, state):
        self._rows = int(state["rows"])
        self._trim = self._rows > 0

    def forward(self, *bottoms):
        arrays = [b.detach().to("cpu", torch.float32).numpy() for b in bottoms]
        try:
            with h5py.File(self.file_name, "a" if self._rows else "w") as handle:
                if self._trim:
                    for name in self.dataset_names:
                        if name in handle:
                            handle[name].resize(min(self._rows, handle[name].shape[0]), axis=0)
                    self._trim = False
                for name, array in zip(self.dataset_names, arrays):
                    self._append(handle, name, array)
        except OSError as error:
            raise CompileError(f"cannot write HDF5 file {self.file_name}: {error}",
                               *_location(self.layer)) from None
        self._rows += len(arrays[0]) if arrays else 0
        return ()

    @staticmethod
    def _append(handle, name, array):
        if name not in handle:
            handle.create_dataset(name, data=array, maxshape=(None,) + array.shape[1:],
                                  chunks=True)
            return
        dataset = handle[name]
        start = dataset.shape[0]
        dataset.resize(start + array.shape[0], axis=0)
        dataset[start:] = array


# --- ImageData -----------------------------------------------------------------------------

class _OrderedRecords:
    """Caffe's walk through n records: start after rand_skip, wrap at the end, and (shuffle)
    visit each pass in a fresh seeded permutation (ShuffleImages at setup and at each wrap)."""

    def __init__(self, count, seed, shuffle, rand_skip, where):
        self.count = count
        self.seed = seed
        self.shuffle = shuffle
        self.skip = 0
        if rand_skip:
            # Caffe: skip = caffe_rng_rand() % rand_skip, checked against the list length.
            self.skip = int(prefetch.batch_rng(seed, _SKIP).integers(rand_skip))
            if self.skip >= count:
                raise CompileError(f"rand_skip drew {self.skip} but there are only {count} "
                                   "records", *where, hint="not enough records to skip")
        self._orders = collections.OrderedDict()
        self._lock = threading.Lock()

    def index(self, position):
        """The record index at `position` (0 = the first record delivered)."""
        epoch, offset = divmod(self.skip + position, self.count)
        if not self.shuffle:
            return offset
        return int(self._order(epoch)[offset])

    def _order(self, epoch):
        with self._lock:
            if epoch not in self._orders:
                self._orders[epoch] = prefetch.batch_rng(self.seed, _SHUFFLE, epoch) \
                    .permutation(self.count)
                while len(self._orders) > 3:
                    self._orders.popitem(last=False)
            return self._orders[epoch]


# Decoded images an ImageData layer keeps (its DecodedImages budget).
IMAGE_CACHE_BYTES = 256 << 20


@register("ImageData")
class ImageData(DataLayer):
    """Images of a "path label" list file: root_folder + path, decoded (is_color), warped to
    new_height x new_width or scaled up to min_height x min_width (the LRCN fork), then
    transformed; tops data (batch, C, H, W) and label (batch,)."""

    def __init__(self, layer, rng=None):
        super().__init__(layer, rng)
        param = self.param.image_data_param
        file, line, col = self._where()
        data_shapes.check_image_data(self.param)
        self.settings = param
        self.list_file = self._source(param.source, "image list file")
        self.lines = data_sources.read_image_list(self.list_file)
        self.order = _OrderedRecords(len(self.lines), self.seed, param.shuffle, param.rand_skip,
                                     (self.list_file, None))
        self.transformer = DataTransformer(self.param.transform_param, self.phase, file,
                                           (file, line, col))
        self.decoded = DecodedImages(IMAGE_CACHE_BYTES)

    def _read(self, position):
        """(list entry, decoded image) at a position; unreadable entries are skipped (under
        skip_bad_records) in favour of the next readable one."""
        param = self.settings
        for attempt in range(len(self.lines)):
            index = self.order.index(position + attempt)
            if self.bad_records.is_known(index):
                continue
            entry = self.lines[index]
            where = (self.list_file, entry.line)
            try:
                path = data_sources.listed_image_path(param.root_folder, entry.name,
                                                      _naming_file(self.layer), *where)
                return entry, self.decoded.read(index, path, lambda: read_image(
                    path, param.new_height, param.new_width, param.is_color,
                    param.min_height, param.min_width, where))
            except CompileError as error:
                self.bad_records.record(index, error)
        raise CompileError(f"no image of {self.list_file} can be read", self.list_file)

    def _read_top_shapes(self):
        # DataLayerSetUp: the first image to be delivered, through the transformer's shape.
        _, image = self._read(0)
        height, width, channels = image.shape
        shape = (self.settings.batch_size,) + self.transformer.output_shape(channels, height,
                                                                            width)
        return [shape, (self.settings.batch_size,)][:len(self.layer.tops)]

    def load_batch(self, index):
        rng = prefetch.batch_rng(self.seed, _BATCH, index)
        size = self.settings.batch_size
        images, choices, labels = [], [], np.empty(size, np.float32)
        for item in range(size):
            entry, image = self._read(index * size + item)
            where = (self.list_file, entry.line)
            choices.append(self.transformer.choose(image, rng, "HWC", where))
            if images:
                self._check_batch_shape(images[0], image, "HWC", f"image {entry.name}", where)
            images.append(image)
            labels[item] = entry.label
        return (self.transformer.apply_batch(images, choices, "HWC"),
                labels)[:len(self.layer.tops)]


# --- Data (LMDB / LevelDB) -----------------------------------------------------------------

class _Database:
    """Read access to the records of a Caffe database, in key order."""

    def __init__(self, path, backend):
        self.path = path
        self.backend = backend
        if backend == data_sources.LEVELDB:
            self._db = data_sources.open_leveldb(path)
            self.keys = list(self._db.iterator(include_value=False))
        else:
            self._db = data_sources.open_lmdb(path)
            with self._db.begin() as txn:
                self.keys = list(txn.cursor().iternext(keys=True, values=False))
        if not self.keys:
            raise CompileError(f"database {path} holds no records", path)

    def values(self, keys):
        """The values of `keys` (one read transaction)."""
        if self.backend == data_sources.LEVELDB:
            return [self._db.get(key) for key in keys]
        with self._db.begin() as txn:
            return [txn.get(key) for key in keys]


@register("Data")
class Data(DataLayer):
    """Datum records of an LMDB (or a LevelDB, with plyvel), in key order, wrapping at the end:
    raw uint8 / float Datums or encoded images (decoded natively, or as colour / gray with
    force_color / force_gray); tops data and label."""

    def __init__(self, layer, rng=None):
        super().__init__(layer, rng)
        param = self.param.data_param
        file, line, col = self._where()
        data_shapes.check_data(self.param)
        self.batch_size = param.batch_size
        self.database = _Database(self._source(param.source, "database"), param.backend)
        self.order = _OrderedRecords(len(self.database.keys), self.seed, False, param.rand_skip,
                                     (self.database.path, None))
        self.color = data_shapes.encoded_color(self.param)
        self.transformer = DataTransformer(self.param.transform_param, self.phase, file,
                                           (file, line, col))

    def _datum_array(self, key, value):
        where = (self.database.path, None)
        if value is None:
            raise CompileError(f"record {key!r} of {self.database.path} vanished", *where)
        datum = data_sources.parse_datum(value, where, key)
        if datum.encoded:
            return datum, decode_image(bytes(datum.data), self.color, where), "HWC"
        dims = data_sources.datum_dims(datum, None, where, key)
        if datum.data:
            return datum, np.frombuffer(datum.data, np.uint8).reshape(dims), "CHW"
        return datum, np.asarray(datum.float_data, np.float32).reshape(dims), "CHW"

    def _read(self, position):
        for attempt in range(len(self.database.keys)):
            index = self.order.index(position + attempt)
            if self.bad_records.is_known(index):
                continue
            key = self.database.keys[index]
            try:
                return self._datum_array(key, self.database.values([key])[0])
            except CompileError as error:
                self.bad_records.record(index, error)
        raise CompileError(f"no record of {self.database.path} can be read",
                           self.database.path)

    def _read_top_shapes(self):
        _, array, layout = self._read(0)
        channels, height, width = array.shape if layout == "CHW" else \
            (array.shape[2],) + array.shape[:2]
        shape = (self.batch_size,) + self.transformer.output_shape(channels, height, width)
        return [shape, (self.batch_size,)][:len(self.layer.tops)]

    def load_batch(self, index):
        rng = prefetch.batch_rng(self.seed, _BATCH, index)
        where = (self.database.path, None)
        arrays, choices, labels = [], [], np.empty(self.batch_size, np.float32)
        for item in range(self.batch_size):
            datum, array, layout = self._read(index * self.batch_size + item)
            choices.append(self.transformer.choose(array, rng, layout, where))
            # Raw and encoded records may share a database: one layout for the batch.
            array = array if layout == "CHW" else array.transpose(2, 0, 1)
            if arrays:
                self._check_batch_shape(arrays[0], array, "CHW", "a record", where)
            arrays.append(array)
            labels[item] = datum.label
        return (self.transformer.apply_batch(arrays, choices, "CHW"),
                labels)[:len(self.layer.tops)]


# --- DummyData -----------------------------------------------------------------------------

@register("DummyData")
class DummyData(CaffeLayer):
    """Tops filled by data_filler (one for all tops, or one per top; none: constant 0).
    Constant fillers fill once; the others refill at every forward (DummyDataLayer)."""

    def __init__(self, layer, rng=None):
        super().__init__(layer, rng)
        param = self.param.dummy_data_param
        self.shapes = data_shapes.dummy_shapes(self.param)
        fillers = list(param.data_filler)
        if not fillers:
            from lrcn_proto import caffe_pb2
            fillers = [caffe_pb2.FillerParameter(type="constant", value=0)]
        self.fillers = fillers
        self.refill = [filler.type != "constant" for filler in fillers]
        self._constant = {}
        for index, shape in enumerate(self.shapes):
            filler_index = self._filler_index(index)
            if not self.refill[filler_index]:
                self._constant[index] = self._fill(shape, filler_index)

    def _filler_index(self, top_index):
        return top_index if len(self.fillers) > 1 else 0

    def _fill(self, shape, filler_index):
        return fill_(torch.zeros(shape), self.fillers[filler_index], self.rng)

    def forward(self):
        tops = []
        for index, shape in enumerate(self.shapes):
            if index in self._constant:
                # A copy: a later in-place layer must not change the constant for next time.
                tops.append(self._constant[index].clone())
            else:
                tops.append(self._fill(shape, self._filler_index(index)))
        return tuple(tops)

    def top_shapes(self):
        return list(self.shapes)


# --- MemoryData ----------------------------------------------------------------------------

@register("MemoryData")
class MemoryData(CaffeLayer):
    """Batches of arrays handed in from Python with `set_input_arrays(data, labels)` (pycaffe's
    Net.set_input_arrays), in order, wrapping at the end. Like Caffe's Reset(), the arrays are
    not transformed."""

    def __init__(self, layer, rng=None):
        super().__init__(layer, rng)
        param = self.param.memory_data_param
        self.shapes = data_shapes.memory_data_shapes(self.param, [], ShapeContext()).top_shapes
        self.batch_size = param.batch_size
        self.sample_shape = (param.channels, param.height, param.width)
        if self.param.HasField("transform_param"):
            log.warning("MemoryData layer '%s' does not transform array data", layer.name)
        self._data = self._labels = None
        self._position = 0

    def set_input_arrays(self, data, labels):
        """data: N x channels x height x width; labels: N (or N x 1 x 1 x 1); N a multiple of
        batch_size. The arrays are copied as float32."""
        data = np.ascontiguousarray(data, dtype=np.float32)
        labels = np.ascontiguousarray(labels, dtype=np.float32)
        if data.ndim != 4 or data.shape[1:] != self.sample_shape:
            sample = " x ".join(map(str, self.sample_shape))
            raise LayerError(self.layer, f"data must be N x {sample}, got {data.shape}")
        if labels.ndim not in (1, 4) or labels.shape[1:] not in ((), (1, 1, 1)):
            raise LayerError(self.layer, f"labels must be N or "
                                         f"N x 1 x 1 x 1, got {labels.shape}")
        if data.shape[0] != labels.shape[0]:
            raise ValueError("data and labels must have the same first dimension")
        if data.shape[0] == 0 or data.shape[0] % self.batch_size:
            raise ValueError(f"the first dimension of the arrays ({data.shape[0]}) must be a "
                             f"positive multiple of batch_size ({self.batch_size})")
        self._data, self._labels = data, labels.reshape(-1)
        self._position = 0

    def resume_state(self):
        return {"position": self._position}

    def restore_state(self, state):
        self._position = int(state["position"])

    def forward(self):
        if self._data is None:
            raise CompileError(f"MemoryData layer '{self.layer.name}' has no data",
                               *_location(self.layer),
                               hint="call set_input_arrays(data, labels) on it (pycaffe: "
                                    "net.set_input_arrays) before forward")
        start, stop = self._position, self._position + self.batch_size
        self._position = stop % self._data.shape[0]
        return (torch.from_numpy(self._data[start:stop].copy()),
                torch.from_numpy(self._labels[start:stop].copy()))

    def top_shapes(self):
        return [tuple(s) for s in self.shapes]


# --- WindowData (R-CNN's window sampler) ---------------------------------------------------

@dataclass(frozen=True)
class _Window:
    image: int            # index of the image in the window file
    label: int            # 0 for a background window
    x1: int
    y1: int
    x2: int
    y2: int
    line: int             # where the window file states it


@dataclass(frozen=True)
class _WindowImage:
    path: str             # root_folder + the path written, as Caffe joins them
    line: int


def _c_round(value):
    """C's round() on a float: halves away from zero (numpy's round goes to even)."""
    return int(np.sign(value) * np.floor(np.abs(np.float64(value)) + 0.5))


class _WindowFile:
    """window_data_layer.cpp's window file: repeated `# image_index`, image path, channels,
    height, width, num_windows, then num_windows lines `class overlap x1 y1 x2 y2` (pixels,
    inclusive). Windows with overlap >= fg_threshold are foreground (class > 0); those below
    bg_threshold background (class and overlap forced to 0); the rest are dropped. Read as
    C++'s >> reads it (tokens separated by any white space); every error names the line."""

    def __init__(self, path, param):
        self.path = path
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError) as error:
            raise CompileError(f"cannot read window file {path}: {error}", path) from None
        self._tokens = [(token, number) for number, line in enumerate(text.splitlines(), 1)
                        for token in line.split()]
        self._next = 0
        if not self._tokens:
            raise CompileError(f"window file {path} is empty", path,
                               hint="it lists '# image_index', path, channels, height, "
                                    "width, num_windows, then one line per window")
        self.images, self.foreground, self.background = [], [], []
        while self._next < len(self._tokens):
            self._read_image(param)
        for windows, which, rule in ((self.foreground, "foreground", f">= fg_threshold "
                                      f"{param.fg_threshold:g}"),
                                     (self.background, "background", f"< bg_threshold "
                                      f"{param.bg_threshold:g}")):
            if not windows:
                raise CompileError(f"window file {path} has no {which} window (overlap "
                                   f"{rule}); every batch samples from both", path)

    def _take(self, what, convert=str):
        if self._next >= len(self._tokens):
            line = self._tokens[-1][1]
            raise CompileError(f"window file ends where {what} was expected", self.path, line)
        token, line = self._tokens[self._next]
        self._next += 1
        try:
            return convert(token), line
        except ValueError:
            kind = {int: "an integer", float: "a number"}[convert]
            raise CompileError(f"{what} must be {kind}, got {token!r}", self.path,
                               line) from None

    def _read_image(self, param):
        hashtag, line = self._take("'#'")
        if hashtag != "#":
            raise CompileError(f"expected '# image_index' to start an image, got {hashtag!r}",
                               self.path, line)
        index, line = self._take("the image index", int)
        if index != len(self.images):
            # Caffe looks a window's image up by this number, in file order.
            raise CompileError(f"image index {index} should be {len(self.images)}: images are "
                               "numbered 0, 1, 2, ... in file order", self.path, line)
        name, line = self._take("the image path")
        image = _WindowImage(param.root_folder + name, line)
        channels, line = self._take("the image's channels", int)
        if channels != 3:
            raise CompileError(f"channels must be 3, got {channels}: WindowData reads every "
                               "image in colour (BGR)", self.path, line)
        self._take("the image's height", int)
        self._take("the image's width", int)
        count, line = self._take("num_windows", int)
        if count < 0:
            raise CompileError(f"num_windows must not be negative, got {count}", self.path, line)
        self.images.append(image)
        for _ in range(count):
            self._read_window(index, param)

    def _read_window(self, image, param):
        label, line = self._take("the window's class", int)
        overlap, _ = self._take("the window's overlap", float)
        x1, y1, x2, y2 = (self._take(f"the window's {name}", int)[0]
                          for name in ("x1", "y1", "x2", "y2"))
        if x2 < x1 or y2 < y1:
            raise CompileError(f"window ({x1}, {y1}, {x2}, {y2}) is empty: x2 must be at least "
                               "x1 and y2 at least y1", self.path, line)
        if overlap >= param.fg_threshold:
            if label <= 0:
                raise CompileError(f"a foreground window (overlap {overlap:g} >= fg_threshold "
                                   f"{param.fg_threshold:g}) needs a class above 0, got "
                                   f"{label}", self.path, line)
            self.foreground.append(_Window(image, label, x1, y1, x2, y2, line))
        elif overlap < param.bg_threshold:
            self.background.append(_Window(image, 0, x1, y1, x2, y2, line))


@register("WindowData")
class WindowData(DataLayer):
    """window_data_layer.cpp: each batch is batch_size - int(batch_size * fg_fraction)
    background windows, then the foreground ones, each drawn uniformly from its list (with
    replacement); the window, grown by context_pad (and to a square for crop_mode "square"),
    is cut from its image (clipped to the image, the clipped part kept as zero padding), warped
    to crop_size x crop_size by bilinear resize, mirrored at random when transform_param.mirror
    (in either phase, as Caffe does), and stored as (pixel - mean) * window_data_param.scale;
    tops data (batch, 3, crop, crop) and label (batch,). transform_param gives crop_size,
    mirror, mean_file / mean_value; its other fields play no part, as in Caffe. The draws come
    from a generator seeded by (net seed, layer, batch index), in Caffe's order: window, then
    mirror coin."""

    def __init__(self, layer, rng=None):
        super().__init__(layer, rng)
        param = self.param.window_data_param
        file, line, col = self._where()
        self.settings = param
        transform = self.param.transform_param
        self.crop, self.mirror = transform.crop_size, transform.mirror
        self.windows = _WindowFile(self._source(param.source, "window file"), param)
        self.mean, self.mean_offset, self.mean_is_image = None, 0, False
        if transform.HasField("mean_file"):
            self.mean_is_image = True
            self.mean = load_mean_file(transform.mean_file, file, (file, line, col))
            _, height, width = self.mean.shape
            self.mean_offset = int((width - self.crop) / 2)   # C++ division; from the width
            if width < self.crop or height < self.mean_offset + self.crop:
                raise CompileError(f"the mean file's {height} x {width} image is smaller than "
                                   f"the {self.crop} x {self.crop} crop", file, line, col)
        elif len(transform.mean_value):
            self.mean = np.asarray(list(transform.mean_value) * (3 // len(transform.mean_value)),
                                   np.float32)[:, None, None]
        self._encoded = {}
        if param.cache_images:
            for index, image in enumerate(self.windows.images):
                path = self._image_path(image)
                try:
                    with open(path, "rb") as handle:
                        self._encoded[index] = handle.read()
                except OSError as error:
                    raise CompileError(f"cannot read image {path}: {error.strerror}",
                                       self.windows.path, image.line) from None

    def _image_path(self, image):
        return data_sources.listed_image_path("", image.path, _naming_file(self.layer),
                                              self.windows.path, image.line)

    def _image(self, window):
        image = self.windows.images[window.image]
        where = (self.windows.path, image.line)
        source = self._encoded.get(window.image) or self._image_path(image)
        return decode_image(source, True, where)

    def load_batch(self, index):
        rng = prefetch.batch_rng(self.seed, _BATCH, index)
        size = self.settings.batch_size
        data = np.zeros((size, 3, self.crop, self.crop), np.float32)
        labels = np.empty(size, np.float32)
        foreground = int(np.float32(size) * np.float32(self.settings.fg_fraction))
        item = 0
        for windows, count in ((self.windows.background, size - foreground),
                               (self.windows.foreground, foreground)):
            for _ in range(count):
                window = windows[int(rng.integers(2 ** 32)) % len(windows)]
                mirror = self.mirror and int(rng.integers(2 ** 32)) % 2 == 1
                self._paste(window, mirror, data[item])
                labels[item] = window.label
                item += 1
        return data, labels

    def _region(self, window, rows, cols, mirror):
        """WindowDataLayer::load_batch's geometry, in its float arithmetic: the image region
        (x1, y1, x2, y2) to cut, the size (height, width) to warp it to and where in the crop
        it goes (pad_h, pad_w)."""
        crop, context = self.crop, self.settings.context_pad
        x1, y1, x2, y2 = window.x1, window.y1, window.x2, window.y2
        if context == 0 and self.settings.crop_mode != "square":
            if x1 < 0 or y1 < 0 or x2 >= cols or y2 >= rows:
                raise CompileError(f"window ({x1}, {y1}, {x2}, {y2}) lies outside its "
                                   f"{cols} x {rows} image", self.windows.path, window.line)
            return (x1, y1, x2, y2), (crop, crop), (0, 0)
        f32 = np.float32
        context_scale = f32(crop) / f32(crop - 2 * context)
        half_height, half_width = f32(y2 - y1 + 1) / f32(2), f32(x2 - x1 + 1) / f32(2)
        center_x, center_y = f32(x1) + half_width, f32(y1) + half_height
        if self.settings.crop_mode == "square":
            half_height = half_width = max(half_height, half_width)
        x1 = _c_round(center_x - half_width * context_scale)
        x2 = _c_round(center_x + half_width * context_scale)
        y1 = _c_round(center_y - half_height * context_scale)
        y2 = _c_round(center_y + half_height * context_scale)
        unclipped_height, unclipped_width = y2 - y1 + 1, x2 - x1 + 1
        pad_x1, pad_y1 = max(0, -x1), max(0, -y1)
        pad_x2, pad_y2 = max(0, x2 - cols + 1), max(0, y2 - rows + 1)
        x1, x2, y1, y2 = x1 + pad_x1, x2 - pad_x2, y1 + pad_y1, y2 - pad_y2
        if x1 > x2 or y1 > y2:
            raise CompileError(f"window ({window.x1}, {window.y1}, {window.x2}, {window.y2}) "
                               f"lies outside its {cols} x {rows} image", self.windows.path,
                               window.line)
        scale_x, scale_y = f32(crop) / f32(unclipped_width), f32(crop) / f32(unclipped_height)
        width = _c_round(f32(x2 - x1 + 1) * scale_x)
        height = _c_round(f32(y2 - y1 + 1) * scale_y)
        pad_h = _c_round(f32(pad_y1) * scale_y)
        # Mirroring mirrors the padding too.
        pad_w = _c_round(f32(pad_x2 if mirror else pad_x1) * scale_x)
        # Rounding may push the warped region past the crop.
        height, width = min(height, crop - pad_h), min(width, crop - pad_w)
        if height <= 0 or width <= 0:
            raise CompileError(f"window ({window.x1}, {window.y1}, {window.x2}, {window.y2}) "
                               "keeps no pixel of its image once warped", self.windows.path,
                               window.line)
        return (x1, y1, x2, y2), (height, width), (pad_h, pad_w)

    def _paste(self, window, mirror, out):
        image = self._image(window)
        (x1, y1, x2, y2), (height, width), (pad_h, pad_w) = self._region(
            window, image.shape[0], image.shape[1], mirror)
        patch = resize_bilinear(np.ascontiguousarray(image[y1:y2 + 1, x1:x2 + 1]), height,
                                width)
        if mirror:
            patch = patch[:, ::-1]
        pixels = patch.transpose(2, 0, 1).astype(np.float32)
        if self.mean_is_image:
            # Caffe reads the mean at the pixel's place in the crop, offset to the mean's
            # centre, without mirroring it.
            top, left = self.mean_offset + pad_h, self.mean_offset + pad_w
            pixels -= self.mean[:, top:top + height, left:left + width]
        elif self.mean is not None:
            pixels -= self.mean
        out[:, pad_h:pad_h + height, pad_w:pad_w + width] = pixels * np.float32(
            self.settings.scale)
