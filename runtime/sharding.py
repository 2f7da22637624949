"""Which part of every batch a rank reads, so that in every iteration the union of the ranks'
batches is exactly what one process would read.

Two kinds of net (decided from the compiled graph, see `plan`):
- Row data (images, LMDB, HDF5 of independent rows, VideoData clips): every rank runs the
  batch B its data layers declare, so one iteration reads B x ranks records. One process with
  batch B x W reads, at iteration k, the B-record chunks kW, kW+1, ..., kW+W-1 of the record
  sequence; rank r reads chunk kW + r (its local batch k is the layer's batch kW + r). The
  random crops and mirrors are those of the chunk, not of one big batch.
- Sequence streams: an HDF5Data layer whose top is the `cont` input (bottom 1) of an LSTM or
  RNN holds LRCN / S2VT streams: rows are TIME STEPS and columns (axis 1) are the N parallel
  streams. Splitting rows would give a rank every other time step and break every sequence,
  so such a net is split by STREAM: each rank reads every row and keeps columns
  [rN/W, (r+1)N/W), so its recurrent state continues its own streams from batch to batch.
  Every other data layer of the net (the captioner's ImageData, which delivers one image per
  stream, in stream order) keeps the matching slice of its batch (axis 0). The iteration then
  covers the N streams one process would, and each rank's tops have N/W streams: a Reshape
  that writes the number of streams into the net gets a clear error.

Data layers that cannot be sharded (DummyData draws per rank; MemoryData and Python layers
read what the script gives them) are listed in `Plan.unsharded` for the solver to say so.
"""

from dataclasses import dataclass, field

from compiler.layer_types import RECURRENT, VALUE_PRESERVING, has_trait

# Layers a cont blob may pass through on its way from the data layer to the recurrent layer.
@dataclass(frozen=True)
class Shard:
    """A rank's place: rank r of `size`. data_seed: the seed data layers draw their record
    order from, the same on every rank (dropout and fillers use random_seed + rank)."""
    rank: int
    size: int
    data_seed: int = None


@dataclass(frozen=True)
class LayerShard:
    """How one data layer reads on one rank. axis None: row mode (batch index remapped);
    otherwise keep the rank's slice of every top along that axis (0 rows, 1 streams)."""
    rank: int
    size: int
    axis: int = None

    def batch_index(self, index):
        return index if self.axis is not None else index * self.size + self.rank

    def take(self, arrays):
        if self.axis is None:
            return arrays
        return tuple(_slice(array, self.axis, self.rank, self.size) for array in arrays)

    def local_shape(self, shape):
        if self.axis is None:
            return tuple(shape)
        shape = list(shape)
        shape[self.axis] //= self.size
        return tuple(shape)


def load(unit, index):
    """Batch `index` of a data unit as this rank reads it (unit.data_shard, set by the Net)."""
    shard = getattr(unit, "data_shard", None)
    if shard is None:
        return unit.load_batch(index)
    return shard.take(unit.load_batch(shard.batch_index(index)))


@dataclass
class Plan:
    streams: bool = False                            # split by stream (see module docstring)
    layers: dict = field(default_factory=dict)       # layer key -> LayerShard
    stream_counts: dict = field(default_factory=dict)  # stream-source layer name -> N
    unsharded: list = field(default_factory=list)    # (layer name, type)
    input_shapes: dict = field(default_factory=dict)  # top -> this rank's shape

    def describe(self, compiled, iter_size):
        """One line per sharded data layer: what each rank reads and the effective batch."""
        lines = []
        for layer in compiled.layers:
            shard = self.layers.get(layer.key)
            if shard is None or not layer.top_shapes:
                continue
            local = layer.top_shapes[0][0 if shard.axis is None else shard.axis]
            if shard.axis is None:
                lines.append(f"data layer '{layer.name}': each rank reads its own {local} of "
                             f"every {local * shard.size} records; effective batch {local} x "
                             f"iter_size {iter_size} x {shard.size} ranks = "
                             f"{local * iter_size * shard.size}")
            elif layer.name in self.stream_counts:
                lines.append(f"data layer '{layer.name}': sequence streams split by stream: "
                             f"each rank keeps {local} of the {local * shard.size} streams "
                             "(the effective batch is one process's)")
            else:
                lines.append(f"data layer '{layer.name}': each rank keeps the {local} of every "
                             f"{local * shard.size} rows that belong to its streams")
        return lines


def is_shardable(type_name):
    """Whether the type's unit reads its batches through `load` (CaffeLayer.shardable)."""
    from runtime.layers.registry import unit_for    # torch is imported only where it runs
    unit = unit_for(type_name)
    return unit is not None and unit.shardable


def plan(compiled, shard):
    """The Plan for a compiled net on `shard` (its shapes are those of one process)."""
    result = Plan()
    if shard is None or shard.size <= 1:
        return result
    producers = {top: layer for layer in compiled.layers for top in layer.tops}
    sources = set()
    for layer in compiled.layers:
        if has_trait(layer.type, RECURRENT) and len(layer.bottoms) > 1:
            source = _origin(producers, layer.bottoms[1])
            if source is not None and source.type == "HDF5Data":
                sources.add(source.key)
    result.streams = bool(sources)
    for layer in compiled.layers:
        if layer.bottoms or not layer.tops or layer.type == "Input":
            continue
        if not is_shardable(layer.type):
            result.unsharded.append((layer.name, layer.type))
            continue
        if not result.streams:
            result.layers[layer.key] = LayerShard(shard.rank, shard.size)
            continue
        if layer.type == "VideoData":
            raise _error(layer, "a VideoData layer cannot share a net with HDF5 sequence "
                         "streams under several ranks (its clips are time-major)")
        axis = 1 if layer.key in sources else 0
        layer_shard = LayerShard(shard.rank, shard.size, axis)
        for top, shape in zip(layer.tops, layer.top_shapes):
            if shape is None or len(shape) <= axis:
                raise _error(layer, f"top '{top}' has no axis {axis} to split by stream")
            if shape[axis] % shard.size:
                what = "streams" if axis == 1 else "rows (one per stream)"
                raise _error(layer, f"its {shape[axis]} {what} cannot be split evenly over "
                             f"{shard.size} ranks", hint="use a number of ranks that divides "
                             "the number of streams, or write the data with such a number")
            result.input_shapes[top] = layer_shard.local_shape(shape)
        if axis == 1:
            result.stream_counts[layer.name] = layer.top_shapes[0][1]
        result.layers[layer.key] = layer_shard
    return result


def explain_reshape(compiled, result, error):
    """The clear error for a stream-split net that no longer compiles: a Reshape that writes
    the number of streams; otherwise the compiler's own error."""
    counts = set(result.stream_counts.values())
    for layer in compiled.layers:
        if layer.type != "Reshape":
            continue
        dims = list(layer.param.reshape_param.shape.dim)
        fixed = [d for d in dims if d in counts]
        if fixed:
            count = fixed[0]
            ranks = next(iter(result.layers.values())).size
            return _error(layer, f"its shape writes the number of streams ({count}), but "
                          f"under {ranks} ranks each rank has {count // ranks} streams (sequence "
                          "data is split by stream so that every sequence stays whole on one "
                          "rank)", hint=f"write 0 (copy the input's axis) or -1 (infer it) for "
                          f"that axis in reshape_param instead of {count}")
    return error


def _origin(producers, blob):
    """The layer that first produced `blob`, through one-bottom layers that only move values."""
    layer = producers.get(blob)
    while layer is not None and has_trait(layer.type, VALUE_PRESERVING) and \
            len(layer.bottoms) == 1:
        layer = producers.get(layer.bottoms[0])
    return layer


def _slice(array, axis, rank, size):
    part = array.shape[axis] // size
    index = [slice(None)] * array.ndim
    index[axis] = slice(rank * part, (rank + 1) * part)
    return array[tuple(index)].copy()


def _error(layer, message, hint=None):
    from runtime.layers.base import LayerError   # torch is imported only where it runs
    return LayerError(layer, message, hint)
