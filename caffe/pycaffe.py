"""caffe.Net: BVLC pycaffe's Net as an adapter over runtime.Net.

Blobs are Caffe's: one float32 `data` and one `diff` array per blob name, kept between calls
(write into them in place; `forward` returns them, not copies). `forward(start=, end=)` runs
the layers from start to end one at a time, each reading its bottoms from the blob arrays and
writing its tops into them, so edits made between calls take effect as in Caffe.
`backward(start=, end=)` runs each layer's backward in reverse order from the top diffs held
in the blob arrays, overwriting bottom diffs and accumulating parameter diffs, with Caffe's
rules for which layers and blobs need backward (loss pruning, propagate_down, force_backward).
A blob read by several layers gets the sum of their diffs, as Caffe's automatic Split layers
give it (those layers are not listed in `_layer_names`).
"""

import collections
import inspect
import os

import h5py
import numpy as np
import torch

import compiler
import runtime.net
from compiler.errors import CompileError
from lrcn_proto import caffe_pb2
from runtime import weights as weight_files
from runtime.python_layer import Blob as _LayerBlob

from . import _caffe
from ._caffe import unsupported


class Blob(_LayerBlob):
    """A Caffe blob: `data` / `diff` float32 arrays, `shape`, `count`, `num` / `channels` /
    `height` / `width` (up to 4 axes), `reshape(*shape)`."""


class ParamBlob(_LayerBlob):
    """A learnable blob of a layer. On the CPU `data` and `diff` share memory with the
    parameter and its gradient, so writing into them changes the net, as in pycaffe; on a GPU
    they are host copies written back before the net next computes (see HostCopies). The
    tensor is looked up at every access, so weights shared later (share_with) are seen."""

    def __init__(self, unit, index):
        # The base's constructor allocates arrays; here data and diff are the tensor's.
        self._unit, self._index = unit, index

    @property
    def _tensor(self):
        return self._unit.blobs[self._index]

    @property
    def data(self):
        tensor = self._tensor
        return HOST_COPIES.array(tensor, "data", tensor.data)

    @property
    def diff(self):
        tensor = self._tensor
        if tensor.grad is None:
            # Caffe's diff memory always exists; backward then accumulates into it.
            tensor.grad = torch.zeros_like(tensor)
        return HOST_COPIES.array(tensor, "diff", tensor.grad)

    def reshape(self, *shape):
        raise unsupported("reshaping a learnable blob", "its shape is fixed by the layer's "
                          "parameters; edit the net definition instead")


class HostCopies:
    """Caffe's SyncedMemory for parameters on a GPU. A parameter's array is its memory on the
    CPU; on a GPU it is a host copy, and every copy handed out is written back to its tensor
    before anything computes with the parameters again (`write_back`), as Caffe makes the host
    copy current after mutable_cpu_data. Writes into a copy after that point are not seen,
    as in Caffe."""

    def __init__(self):
        self._handed = {}      # (id of the parameter, "data" / "diff") -> (tensor, array)

    @staticmethod
    def shares_memory(tensor):
        return tensor.device.type == "cpu"

    def array(self, parameter, which, tensor):
        if self.shares_memory(tensor):
            return tensor.numpy()
        key = (id(parameter), which)
        if key not in self._handed:
            self._handed[key] = (tensor, tensor.detach().to("cpu", copy=True).numpy())
        return self._handed[key][1]

    def write_back(self):
        with torch.no_grad():
            for tensor, array in self._handed.values():
                tensor.copy_(torch.from_numpy(array))
        self._handed.clear()


HOST_COPIES = HostCopies()


class LayerView:
    """`net.layers[i]` for a built-in layer: its `type` and learnable `blobs`."""

    def __init__(self, layer, unit):
        self.type = layer.type
        self.name = layer.name
        self.blobs = [ParamBlob(unit, i) for i in range(len(unit.blobs))]

    def __repr__(self):
        return f"<caffe layer {self.name!r} ({self.type})>"


class Net:
    """pycaffe's Net: `Net(network_file, phase, level=0, stages=None, weights=None)`, or the
    legacy `Net(network_file, pretrained_file, phase)`."""

    def __init__(self, *args, **kwargs):
        network_file, phase, level, stages, weights = _net_arguments(args, kwargs)
        net = runtime.net.Net(network_file, phase=phase, stages=tuple(stages or ()),
                              level=level, seed=_caffe.random_seed())
        net.to(_caffe.current_device())
        self._attach(net, follow_mode=True)
        if weights is not None:
            self.copy_from(weights)

    @classmethod
    def _wrap(cls, net):
        """The pycaffe view of a runtime.Net that something else (a Solver) drives; it stays
        on the device it is on."""
        view = cls.__new__(cls)
        view._attach(net, follow_mode=False)
        return view

    def _attach(self, net, follow_mode):
        self._net = net
        self._follow_mode = follow_mode
        self._hooks = {"before_forward": [], "after_forward": [], "before_backward": [],
                       "after_backward": []}
        compiled = net.compiled
        self._blobs = collections.OrderedDict()
        self._loss_weights = collections.OrderedDict()
        for layer in compiled.layers:
            for name, weight in zip(layer.top_names, layer.loss_weights):
                if name not in self._blobs:
                    self._blobs[name] = Blob(compiled.blobs[compiled.latest[name]])
                    self._loss_weights[name] = 0.0
                if weight:
                    self._loss_weights[name] = float(weight)
                    self._blobs[name].diff[...] = weight
        for name in net.inputs:
            self._blobs[name].data = net.input_array(name)
        self._graphs = [None] * len(compiled.layers)
        self._need = _BackwardNeeds(compiled, net)
        self._layer_views = [unit.instance if layer.type == "Python" else LayerView(layer, unit)
                             for layer, unit in zip(compiled.layers, net.units)]

    # --- structure ------------------------------------------------------------------------

    @property
    def _layers(self):
        return self._net.compiled.layers

    @property
    def _layer_names(self):
        return [layer.name for layer in self._layers]

    @property
    def _blob_names(self):
        return list(self._blobs)

    @property
    def _inputs(self):
        return [self._blob_names.index(name) for name in self.inputs]

    @property
    def _outputs(self):
        return [self._blob_names.index(name) for name in self.outputs]

    @property
    def blobs(self):
        """An OrderedDict of the blobs by name, in the order they are produced."""
        return self._blobs

    @property
    def blob_loss_weights(self):
        return collections.OrderedDict(self._loss_weights)

    @property
    def layers(self):
        """The layers in execution order: `.type` and `.blobs`; a Python layer is the user's
        layer object itself."""
        return list(self._layer_views)

    @property
    def layer_dict(self):
        return collections.OrderedDict(zip(self._layer_names, self._layer_views))

    @property
    def params(self):
        """An OrderedDict: layer name -> its learnable blobs (layers without any are left out)."""
        return collections.OrderedDict(
            (layer.name, view.blobs) for layer, view in zip(self._layers, self._layer_views)
            if isinstance(view, LayerView) and view.blobs)

    @property
    def inputs(self):
        return list(self._net.inputs)

    @property
    def outputs(self):
        return list(self._net.outputs)

    @property
    def top_names(self):
        return collections.OrderedDict((layer.name, list(layer.top_names))
                                       for layer in self._layers)

    @property
    def bottom_names(self):
        return collections.OrderedDict((layer.name, list(layer.bottom_names))
                                       for layer in self._layers)

    # --- forward / backward ---------------------------------------------------------------

    def forward(self, blobs=None, start=None, end=None, **kwargs):
        """Run layers start..end (names; default all) and return {blob: data array} for the
        outputs (the tops of `end` when given) and the blobs named in `blobs`. Keyword
        arguments are input arrays, copied into the input blobs first."""
        blobs = list(blobs or [])
        start_index = self._layer_index(start, "forward(start=...)", 0)
        end_index = self._layer_index(end, "forward(end=...)", len(self._layers) - 1)
        wanted = (self.top_names[end] if end is not None else self.outputs) + blobs
        if kwargs:
            self._copy_into("forward", kwargs, self.inputs, "data")
        self._forward(start_index, end_index)
        return {name: self._blob(name, "forward(blobs=...)").data for name in set(wanted)}

    def backward(self, diffs=None, start=None, end=None, **kwargs):
        """Run the backward of layers start..end (names; default last..first) and return
        {blob: diff array} for the inputs (the bottoms of `end` when given) and the blobs
        named in `diffs`. Keyword arguments are output diffs, copied into the blobs first."""
        diffs = list(diffs or [])
        start_index = self._layer_index(start, "backward(start=...)", len(self._layers) - 1)
        end_index = self._layer_index(end, "backward(end=...)", 0)
        wanted = (self.bottom_names[end] if end is not None else self.inputs) + diffs
        if kwargs:
            self._copy_into("backward", kwargs, self.outputs, "diff")
        self._backward(start_index, end_index)
        return {name: self._blob(name, "backward(diffs=...)").diff for name in set(wanted)}

    def _forward(self, start, end):
        HOST_COPIES.write_back()
        self._follow_current_mode()
        self._feed_inputs()
        loss = 0.0
        for index in range(start, end + 1):
            self._call_hooks("before_forward", index)
            layer = self._layers[index]
            if layer.type != "Input":      # an Input layer's tops are the input blobs as set
                bottoms = [self._bottom_tensor(index, j) for j in range(len(layer.bottoms))]
                tops = self._net.run_layer(index, bottoms)
                self._graphs[index] = (bottoms, tops)
                for name, top in zip(layer.top_names, tops):
                    self._store(name, top)
            for name, weight in zip(layer.top_names, layer.loss_weights):
                if weight:
                    loss += weight * float(self._blobs[name].data.sum())
            self._call_hooks("after_forward", index)
        return loss

    def _bottom_tensor(self, index, j):
        layer = self._layers[index]
        array = np.array(self._blobs[layer.bottom_names[j]].data, dtype=np.float32, copy=True)
        tensor = torch.from_numpy(array).to(self._net.device)
        return tensor.requires_grad_(self._need.bottom(index, j))

    def _store(self, name, tensor):
        value = tensor.detach().to("cpu", torch.float32).numpy()
        blob = self._blobs[name]
        if blob.data.shape == value.shape:
            np.copyto(blob.data, value)        # Caffe keeps a blob's memory while its shape holds
            return
        blob.data = value.copy()
        blob.diff = np.full_like(blob.data, self._loss_weights.get(name, 0.0))

    def _backward(self, start, end):
        HOST_COPIES.write_back()
        self._follow_current_mode()
        for index in range(start, end - 1, -1):
            self._call_hooks("before_backward", index)
            if index < start:
                self._sum_split_diffs(index)
            if self._need.layer[index]:
                self._backward_layer(index)
            self._call_hooks("after_backward", index)

    def _backward_layer(self, index):
        graph = self._graphs[index]
        if graph is None:
            return      # an Input layer, or a layer not run forward yet
        layer = self._layers[index]
        bottoms, tops = graph
        outputs, gradients = [], []
        for name, top in zip(layer.top_names, tops):
            if top.requires_grad:
                outputs.append(top)
                diff = np.array(self._blobs[name].diff, dtype=np.float32, copy=True)
                gradients.append(torch.from_numpy(diff).to(top.device).reshape(top.shape))
        for bottom in bottoms:
            bottom.grad = None
        if outputs:
            torch.autograd.backward(outputs, gradients, retain_graph=True)
        for j, bottom in enumerate(bottoms):
            if not self._need.bottom(index, j):
                continue
            grad = bottom.grad if bottom.grad is not None else torch.zeros_like(bottom)
            target = self._need.split_slot(index, j)
            value = grad.detach().to("cpu", torch.float32).numpy()
            if target is None:
                blob = self._blobs[layer.bottom_names[j]]
                if blob.diff.shape != value.shape:
                    blob.diff = np.zeros_like(blob.data)
                np.copyto(blob.diff, value.reshape(blob.diff.shape))
            else:
                self._need.split_diffs[target] = value.copy()

    def _sum_split_diffs(self, index):
        """Caffe's Split layer after layer `index`: a top read by several layers gets the sum
        of the diffs they sent back."""
        for version, name in self._need.split_tops(index):
            if not self._need.blob[version]:
                continue
            slots = [self._need.split_diffs.get(key) for key in self._need.readers[version]]
            blob = self._blobs[name]
            total = np.zeros_like(blob.data)
            for slot in slots:
                if slot is not None:
                    total += slot.reshape(total.shape)
            if blob.diff.shape == total.shape:
                np.copyto(blob.diff, total)
            else:
                blob.diff = total

    def forward_all(self, blobs=None, **kwargs):
        """Run forward over inputs of any length in batches of the net's batch size; returns
        {blob: array of all results} (the padding of the last batch is dropped)."""
        outputs = {name: [] for name in set(self.outputs + list(blobs or []))}
        for batch in self._batch(kwargs, "forward_all"):
            for name, value in self.forward(blobs=blobs, **batch).items():
                outputs[name].extend(value.copy())
        return _drop_padding(outputs, kwargs)

    def forward_backward_all(self, blobs=None, diffs=None, **kwargs):
        """forward_all and backward over inputs (and output diffs) of any length."""
        outputs = {name: [] for name in set(self.outputs + list(blobs or []))}
        input_diffs = {name: [] for name in set(self.inputs + list(diffs or []))}
        forward_batches = list(self._batch({k: v for k, v in kwargs.items()
                                            if k in self.inputs}, "forward_backward_all"))
        backward_items = {k: v for k, v in kwargs.items() if k in self.outputs}
        backward_batches = list(self._batch(backward_items, "forward_backward_all")) \
            if backward_items else []
        for index in range(max(len(forward_batches), len(backward_batches))):
            forward_batch = forward_batches[index] if index < len(forward_batches) else {}
            backward_batch = backward_batches[index] if index < len(backward_batches) else {}
            for name, value in self.forward(blobs=blobs, **forward_batch).items():
                outputs[name].extend(value.copy())
            for name, value in self.backward(diffs=diffs, **backward_batch).items():
                input_diffs[name].extend(value.copy())
        return _drop_padding(outputs, kwargs), _drop_padding(input_diffs, kwargs)

    def _batch(self, arrays, call):
        if not arrays:
            raise ValueError(f"Net.{call}() needs the input arrays as keyword arguments "
                             f"(inputs: {', '.join(self.inputs) or 'none'})")
        count = len(next(iter(arrays.values())))
        batch_size = next(iter(self._blobs.values())).shape[0]
        for begin in range(0, count - count % batch_size, batch_size):
            yield {name: array[begin:begin + batch_size] for name, array in arrays.items()}
        remainder = count % batch_size
        if remainder:
            yield {name: np.concatenate([np.asarray(array)[-remainder:], np.zeros(
                (batch_size - remainder,) + np.asarray(array).shape[1:])])
                for name, array in arrays.items()}

    def reshape(self):
        """Recompute every blob's shape from the input blobs' current shapes (Caffe's
        Net::Reshape); blobs whose shape changes are reallocated."""
        current = self._net.compiled
        # Input and data layers' tops keep the shapes their blobs have now.
        sources = {top: self._blobs[top].shape for layer in current.layers
                   if not layer.bottoms for top in layer.top_names}
        reshaped = compiler.compile_net(_selected_layers(current), input_shapes=sources,
                                        state=current.state)
        for old, new in zip(current.layers, reshaped.layers):
            if list(old.param_shapes) != list(new.param_shapes):
                raise CompileError(f"Net.reshape(): layer '{old.name}' would need learnable "
                                   f"blobs of shapes {new.param_shapes}, it has "
                                   f"{old.param_shapes}", *old.location)
        for name, blob in self._blobs.items():
            shape = reshaped.blobs[reshaped.latest[name]]
            if blob.shape != tuple(shape) and name not in self.inputs:
                blob.data = np.zeros(shape, np.float32)
                blob.diff = np.full_like(blob.data, self._loss_weights.get(name, 0.0))

    # --- hooks, diffs, inputs ---------------------------------------------------------------

    def before_forward(self, callback):
        self._hooks["before_forward"].append(callback)

    def after_forward(self, callback):
        self._hooks["after_forward"].append(callback)

    def before_backward(self, callback):
        self._hooks["before_backward"].append(callback)

    def after_backward(self, callback):
        self._hooks["after_backward"].append(callback)

    def _call_hooks(self, kind, index):
        for callback in self._hooks[kind]:
            callback(index)

    def clear_param_diffs(self):
        HOST_COPIES.write_back()
        for unit in self._net.units:
            for tensor in unit.blobs:
                if tensor.grad is not None:
                    tensor.grad.zero_()

    def set_input_arrays(self, data, labels):
        """Hand arrays to the net's first layer, a MemoryData layer (labels: N or N x 1 x 1 x 1)."""
        if not self._layers or self._layers[0].type != "MemoryData":
            raise ValueError("Net.set_input_arrays() may only be called if the first layer is "
                             "a MemoryData layer")
        labels = np.asarray(labels)
        if labels.ndim == 1:
            labels = labels[:, np.newaxis, np.newaxis, np.newaxis]
        self._net.units[0].set_input_arrays(data, labels)

    def _feed_inputs(self):
        """Make the input blobs' current arrays the ones the runtime reads (a blob reshaped or
        assigned a new array since)."""
        for name in self._net.inputs:
            blob = self._blobs[name]
            if blob.data.dtype != np.float32 or not blob.data.flags.c_contiguous:
                blob.data = np.ascontiguousarray(blob.data, dtype=np.float32)
            if blob.diff.shape != blob.data.shape:
                blob.diff = np.zeros_like(blob.data)
            if self._net.input_array(name) is not blob.data:
                self._net.input_array(name, blob.data)

    def _pull_last_run(self):
        """Copy what the runtime's own last pass (a solver iteration or test) left in each blob."""
        for name in self._blobs:
            if name in self._net.inputs:
                continue
            value = self._net.last_value(name)
            if value is not None:
                self._store(name, value)

    def _follow_current_mode(self):
        device = _caffe.current_device()
        if self._follow_mode and self._net.device != device:
            self._net.to(device)

    def _copy_into(self, call, arrays, expected, field):
        if set(arrays) != set(expected):
            what = "inputs" if field == "data" else "outputs"
            raise ValueError(f"Net.{call}(): the keyword arguments ({', '.join(sorted(arrays))})"
                             f" must be exactly the net's {what} ({', '.join(expected)})")
        for name, value in arrays.items():
            value = np.asarray(value)
            blob = self._blobs[name]
            if value.shape[:1] != blob.shape[:1]:
                raise ValueError(f"Net.{call}(): '{name}' has shape {value.shape}, the blob "
                                 f"{blob.shape}: the batch sizes differ (use {call}_all, or "
                                 "reshape the blob first)")
            getattr(blob, field)[...] = value

    def _layer_index(self, name, call, default):
        if name is None:
            return default
        names = self._layer_names
        if name not in names:
            raise ValueError(f"Net.{call}: no layer named '{name}'")
        return names.index(name)

    def _blob(self, name, call):
        if name not in self._blobs:
            raise KeyError(f"Net.{call}: no blob named '{name}'")
        return self._blobs[name]

    # --- weights ----------------------------------------------------------------------------

    def copy_from(self, filename):
        """Load weights by layer name from a .caffemodel (or Caffe's HDF5 weights, .h5)."""
        HOST_COPIES.write_back()
        filename = os.fspath(filename)
        if filename.endswith((".h5", ".hdf5")):
            self.load_hdf5(filename)
        else:
            self._net.copy_from(filename)

    def share_with(self, other):
        """Use `other`'s weights for every layer of the same name (shapes must match)."""
        HOST_COPIES.write_back()
        self._net.share_weights_from(other._net)

    def save(self, filename):
        """Write the weights as a binary .caffemodel (Caffe's NetParameter with blobs)."""
        HOST_COPIES.write_back()
        weight_files.write_bytes_atomically(os.fspath(filename),
                                            self._net.to_proto().SerializeToString())

    def save_hdf5(self, filename):
        """Write the weights in Caffe's HDF5 layout: data/<layer>/<blob index>."""
        HOST_COPIES.write_back()
        owners = set()
        with h5py.File(os.fspath(filename), "w") as handle:
            data = handle.create_group("data")
            for layer, unit in zip(self._layers, self._net.units):
                group = data.require_group(layer.name)
                for index, tensor in enumerate(unit.blobs):
                    if id(tensor) in owners:
                        continue       # Caffe writes a shared blob once, under its owner
                    owners.add(id(tensor))
                    group.create_dataset(str(index),
                                         data=tensor.detach().cpu().numpy().astype(np.float32))

    def load_hdf5(self, filename):
        """Load weights written by save_hdf5 (or Caffe's Net::ToHDF5), by layer name."""
        HOST_COPIES.write_back()
        units = {layer.name: unit for layer, unit in zip(self._layers, self._net.units)}
        with h5py.File(os.fspath(filename), "r") as handle:
            if "data" not in handle:
                raise CompileError("not Caffe HDF5 weights (no 'data' group)", filename)
            for name, group in handle["data"].items():
                unit = units.get(name)
                if unit is None:
                    continue
                if len(group) > len(unit.blobs):
                    raise CompileError(f"layer '{name}': the file has {len(group)} blobs, the "
                                       f"net's layer has {len(unit.blobs)}", filename)
                for index, tensor in enumerate(unit.blobs):
                    if str(index) not in group:
                        continue       # a blob shared from another layer
                    array = np.asarray(group[str(index)], dtype=np.float32)
                    if array.shape != tuple(tensor.shape):
                        raise CompileError(f"layer '{name}' blob {index}: shape mismatch: the "
                                           f"file has {list(array.shape)}, the net needs "
                                           f"{list(tensor.shape)}", filename)
                    with torch.no_grad():
                        tensor.copy_(torch.from_numpy(array))


class _BackwardNeeds:
    """Which layers and bottoms Caffe's Net::Init marks as needing backward, and the blob
    versions read by several layers (where Caffe inserts a Split layer)."""

    def __init__(self, compiled, net):
        layers = compiled.layers
        self.blob = collections.defaultdict(bool)       # versioned blob id -> needs backward
        self.layer = []
        bottom_need = []
        for layer, unit in zip(layers, net.units):
            propagate = list(layer.param.propagate_down)
            needs = [propagate[j] if propagate else self.blob[bottom]
                     for j, bottom in enumerate(layer.bottoms)]
            needs = [need and j not in unit.no_grad_bottoms for j, need in enumerate(needs)]
            need = (any(self.blob[b] for b in layer.bottoms)
                    or any(spec.lr_mult != 0 for spec in layer.param_specs))
            for top in layer.tops:
                self.blob[top] = need
            self.layer.append(need)
            bottom_need.append(needs)
        self._prune_without_loss(layers, bottom_need)
        if net.force_backward:
            for index, (layer, unit) in enumerate(zip(layers, net.units)):
                self.layer[index] = True
                for j, bottom in enumerate(layer.bottoms):
                    bottom_need[index][j] = (bottom_need[index][j]
                                             or j not in unit.no_grad_bottoms)
                    self.blob[bottom] = self.blob[bottom] or bottom_need[index][j]
        self._bottom_need = bottom_need
        self.readers = collections.defaultdict(list)    # version -> [(layer, bottom index)]
        for index, layer in enumerate(layers):
            for j, bottom in enumerate(layer.bottoms):
                self.readers[bottom].append((index, j))
        self._layers = layers
        self.split_diffs = {}

    def _prune_without_loss(self, layers, bottom_need):
        """Caffe: a layer none of whose tops lead to a loss, or whose tops all skip backward,
        needs no backward (walked from the last layer, by blob name)."""
        under_loss, skip = set(), set()
        for index in range(len(layers) - 1, -1, -1):
            layer = layers[index]
            contributes, skips = False, True
            for name, weight in zip(layer.top_names, layer.loss_weights):
                contributes = contributes or bool(weight) or name in under_loss
                skips = skips and name in skip
            if self.layer[index] and skips:
                self.layer[index] = False
                bottom_need[index] = [False] * len(layer.bottoms)
            if not contributes:
                self.layer[index] = False
            for j, name in enumerate(layer.bottom_names):
                if contributes:
                    under_loss.add(name)
                else:
                    bottom_need[index][j] = False
                if not bottom_need[index][j]:
                    skip.add(name)

    def bottom(self, index, j):
        return self._bottom_need[index][j]

    def split_slot(self, index, j):
        """(layer, bottom) when that bottom's blob version has several readers, else None."""
        version = self._layers[index].bottoms[j]
        return (index, j) if len(self.readers[version]) > 1 else None

    def split_tops(self, index):
        layer = self._layers[index]
        return [(version, name) for version, name in zip(layer.tops, layer.top_names)
                if len(self.readers[version]) > 1]


def _selected_layers(compiled):
    """The compiled net's layers (upgraded, as selected) as a Document to compile again; paths
    in it still resolve against the net file."""
    message = caffe_pb2.NetParameter(name=compiled.name)
    for layer in compiled.layers:
        message.layer.add().CopyFrom(layer.param)
    return compiler.Document(message, "net", compiled.source_file or "<net>")


def _drop_padding(collected, arrays):
    result = {name: np.asarray(values) for name, values in collected.items()}
    if not result or not arrays:
        return result
    count = len(next(iter(arrays.values())))
    return {name: values[:count] for name, values in result.items()}


_NET_SIGNATURE = inspect.Signature([
    inspect.Parameter("network_file", inspect.Parameter.POSITIONAL_OR_KEYWORD),
    inspect.Parameter("phase", inspect.Parameter.POSITIONAL_OR_KEYWORD),
    inspect.Parameter("level", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=0),
    inspect.Parameter("stages", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None),
    inspect.Parameter("weights", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None)])


def _net_arguments(args, kwargs):
    """pycaffe's two Net constructors -> (file, phase, level, stages, weights)."""
    if len(args) == 3 and not kwargs and isinstance(args[1], (str, os.PathLike)):
        network_file, weights, phase = args
        level, stages = 0, None
    else:
        try:
            bound = _NET_SIGNATURE.bind(*args, **kwargs)
        except TypeError as error:
            raise TypeError(f"caffe.Net{_NET_SIGNATURE}: {error} (or the legacy "
                            "Net(network_file, pretrained_file, phase))") from None
        bound.apply_defaults()
        network_file, phase, level, stages, weights = bound.arguments.values()
    if phase not in (_caffe_phase("TRAIN"), _caffe_phase("TEST")):
        raise ValueError(f"caffe.Net: phase must be caffe.TRAIN or caffe.TEST, got {phase!r}")
    if isinstance(stages, str):
        stages = [stages]
    for path in (network_file, weights):
        if path is not None and not os.path.isfile(path):
            raise CompileError("Could not open file", os.fspath(path))
    return os.fspath(network_file), int(phase), int(level), stages, weights


def _caffe_phase(name):
    return caffe_pb2.Phase.Value(name)
