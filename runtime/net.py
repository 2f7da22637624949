"""runtime.Net: a compiled Caffe net as a torch.nn.Module, with pycaffe's blob and param views.

- `outputs = net(data=tensor, ...)` (nn.Module.__call__ -> forward, so module hooks run)
  returns the net's output blobs as a dict of tensors, with the objective (the sum of
  loss_weight x top over loss tops) as `outputs.loss`, ready for `outputs.loss.backward()` (an
  attribute, so a blob named "loss" keeps its own value). A data layer whose tops are all fed
  is skipped, so a train net runs on tensors from any loader (and compiles with torch.compile).
- `net.blobs[name].data / .diff` and `net.params[layer][i].data / .diff` are numpy views in
  pycaffe's manner; unfed inputs read the buffers `net.blobs[input].data[...] = array` fills.
- `.train()` / `.eval()`: see runtime.layers.base.CaffeLayer (a net starts in train mode
  exactly when its phase is TRAIN).
- `state_dict()` keys are `<layer name>.<blob index>` (`conv1.0`, `conv1.1`), as in .caffemodel.

Layers run in file order over a dict of blobs keyed by the compiler's versioned blob ids; a blob
version is dropped as soon as its last reader has run (unless it is an output or pycaffe-style
access needs it), so in-place chains keep no copies they do not need. Learnable blobs shared by
`param { name }` are one nn.Parameter.
"""

import collections
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

import compiler
from compiler.errors import CompileError
from runtime import sharding, threads
from runtime import weights as weight_files
from runtime.layers.base import LayerError
from runtime.layers.registry import unit_for


def layer_error(layer, error):
    """A unit's failure (its parameters at construction, its inputs when running, torch's own
    complaints such as an allocation that failed) as one LayerError at the layer's place."""
    if isinstance(error, CompileError):
        return error
    return LayerError(layer, str(error).strip() or type(error).__name__)


DEFAULT_SEED = 1701     # the seed of a net built without one


class Outputs(dict):
    """The output blobs of one forward pass by name, plus `.loss`: the weighted objective
    (zero when the net has no loss)."""

    def __init__(self, blobs, loss):
        super().__init__(blobs)
        self.loss = loss


@dataclass(frozen=True)
class _Step:
    """One layer of Net.run, planned at construction."""
    layer: object          # its CompiledLayer (errors name it)
    unit: nn.Module
    is_input: bool         # an Input layer: its tops are fed (or read from the buffers)
    is_data: bool          # a data layer: runs unless all its tops are fed
    bottoms: tuple         # versioned blob ids
    tops: tuple
    loss_weights: tuple    # one per top
    cut: frozenset         # bottom indices that get no gradient
    releases: tuple        # blob versions no later step reads


def _cut_bottoms(step, bottoms):
    """The bottoms with those that get no gradient (labels, cont) detached."""
    return [value.detach() if i in step.cut else value for i, value in enumerate(bottoms)]


@dataclass
class LearnableParam:
    """One learnable tensor as the solver sees it (a shared blob appears once)."""
    name: str            # "<layer>/<index>" of its owner, or the shared param name
    tensor: nn.Parameter
    lr_mult: float
    decay_mult: float


class Blob:
    """pycaffe's blob view: `.data` and `.diff` as numpy arrays, `.shape`, `.reshape`."""

    def __init__(self, net, name):
        self._net, self.name = net, name

    @property
    def data(self):
        return self._net._blob_data(self.name)

    @data.setter
    def data(self, value):
        self._net._set_input(self.name, value)

    @property
    def diff(self):
        return self._net._blob_diff(self.name)

    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def count(self):
        return int(np.prod(self.shape))

    @property
    def num(self):
        return self.shape[0]

    @property
    def channels(self):
        return self.shape[1]

    @property
    def height(self):
        return self.shape[2]

    @property
    def width(self):
        return self.shape[3]

    def reshape(self, *shape):
        self._net._reshape_input(self.name, shape)


class ParamBlob:
    """pycaffe's parameter view. On CPU `.data` shares memory with the parameter, so
    `net.params["fc8"][0].data[...] = w` changes the weights, as in pycaffe."""

    def __init__(self, parameter):
        self._parameter = parameter

    @property
    def data(self):
        if self._parameter.device.type == "cpu":
            return self._parameter.data.numpy()
        return self._parameter.detach().cpu().numpy()

    @data.setter
    def data(self, value):
        with torch.no_grad():
            self._parameter.copy_(torch.as_tensor(np.asarray(value)).reshape(
                self._parameter.shape))

    @property
    def diff(self):
        grad = self._parameter.grad
        if grad is None:
            return np.zeros(tuple(self._parameter.shape), dtype=np.float32)
        return grad.detach().cpu().numpy()

    @property
    def shape(self):
        return tuple(self._parameter.shape)

    @property
    def count(self):
        return self._parameter.numel()


class Net(nn.Module):
    """A Caffe net compiled for one phase / stage set / level.

    net: a .prototxt path, a NetParameter, a compiler.Document or a compiler.CompiledNet.
    weights: an optional .caffemodel (or torch state_dict .pt) to load by layer name.
    input_shapes: shapes for data-layer tops that cannot be known statically.
    seed: seeds the fillers and every random choice of the layers (Caffe's random_seed).
    data_shard: a runtime.sharding.Shard: this net is one rank's part of a training run on
    several processes, and its data layers read the rank's part of every batch.
    """

    def __init__(self, net, weights=None, phase="TEST", stages=(), level=0, input_shapes=None,
                 seed=None, data_shard=None):
        super().__init__()
        phase = phase.upper() if isinstance(phase, str) else ("TRAIN", "TEST")[int(phase)]
        self.rng = torch.Generator()
        self.rng.manual_seed(DEFAULT_SEED if seed is None else int(seed))
        self.data_shard = data_shard
        self.shard_plan = sharding.Plan()
        self.compiled = self._compile(net, phase, stages, level, dict(input_shapes or {}))
        self.phase = self.compiled.phase     # a given CompiledNet keeps the phase it has
        self.units = nn.ModuleList(self._build_unit(layer) for layer in self.compiled.layers)
        self.layer_names = [layer.name for layer in self.compiled.layers]
        # Caffe allows a repeated layer name (e.g. two data layers); the compiler's `key` is
        # unique. Layers with blobs never repeat a name, so weights match by name.
        self._unit_by_key = {layer.key: unit
                             for layer, unit in zip(self.compiled.layers, self.units)}
        self._unit_by_name = {layer.name: unit
                              for layer, unit in zip(self.compiled.layers, self.units)
                              if layer.param_shapes}
        self._share_parameters()
        self._freeze_zero_rate_blobs()
        self._input_buffers = {}
        self._values = {}
        self._last_loss = None
        self._device = torch.device("cpu")
        self._plan_steps()
        self._state_names = [layer.key for layer in self.compiled.layers]
        self._register_state_dict_hook(_state_dict_keys_by_layer)
        self._register_load_state_dict_pre_hook(_load_state_dict_keys_by_layer, with_module=True)
        self.register_load_state_dict_post_hook(_missing_keys_by_layer)
        self.train(self.phase == "TRAIN")
        if weights:
            for path in str(weights).split(","):
                self.copy_from(path)

    # --- building ------------------------------------------------------------------------

    def _compile(self, net, phase, stages, level, input_shapes):
        self.force_backward = False
        self._prebuilt = {}     # data units built early to learn their top shapes
        if isinstance(net, compiler.CompiledNet):
            compiled = net
        else:
            if isinstance(net, (str, os.PathLike)):
                net = compiler.load_file(net, "net")
            message = net.message if isinstance(net, compiler.Document) else net
            # Caffe computes input diffs only when asked to (saliency, deep-dream scripts).
            self.force_backward = bool(message.force_backward)
            compiled = compiler.compile_net(net, phase, stages, level, input_shapes)
            unknown = self._layers_that_tell_their_shapes(compiled)
            while unknown:
                # Data layers whose shapes only their source knows (files the compiler does not
                # open) and Python layers (their reshape() decides) report them once built, as
                # Caffe's Net::Init learns them from SetUp; then compile again.
                for layer in unknown:
                    unit = self._instantiate(layer)
                    self._prebuilt[layer.key] = unit
                    input_shapes.update(zip(layer.tops, unit.top_shapes()))
                compiled = compiler.compile_net(net, phase, stages, level, input_shapes)
                unknown = self._layers_that_tell_their_shapes(compiled)
            compiled = self._shard(net, compiled, phase, stages, level, input_shapes)
        self._check_shapes_known(compiled)
        return compiled

    def _shard(self, net, compiled, phase, stages, level, input_shapes):
        """Compile again with this rank's data shapes when its data is split by stream."""
        self.shard_plan = sharding.plan(compiled, self.data_shard)
        if not self.shard_plan.input_shapes:
            return compiled
        try:
            return compiler.compile_net(net, phase, stages, level,
                                        {**input_shapes, **self.shard_plan.input_shapes})
        except CompileError as error:
            raise sharding.explain_reshape(compiled, self.shard_plan, error) from None

    def _layers_that_tell_their_shapes(self, compiled):
        """Data and Python layers with unknown top shapes, all bottom shapes known, not built."""
        return [layer for layer in compiled.layers
                if layer.tops and layer.type != "Input" and layer.key not in self._prebuilt
                and (not layer.bottoms or layer.type == "Python")
                and any(shape is None for shape in layer.top_shapes)
                and all(shape is not None for shape in layer.bottom_shapes)]

    @staticmethod
    def _check_shapes_known(compiled):
        for layer in compiled.layers:
            if any(shape is None for shape in layer.top_shapes):
                file, line, col = layer.location
                raise CompileError(
                    f"layer '{layer.name}' ({layer.type}): the shapes of its tops are not known",
                    file, line, col, "pass input_shapes={blob: shape} for the data-layer tops "
                    "this layer depends on")

    def _instantiate(self, layer):
        unit_class = unit_for(layer.type)
        if unit_class is None:
            raise LayerError(layer, "this type is not supported by the runtime")
        rng = self.rng
        if self.data_shard is not None and unit_class.shardable:
            # The record order must be the same on every rank (the net's own seed differs).
            data_seed = self.data_shard.data_seed
            rng = torch.Generator().manual_seed(DEFAULT_SEED if data_seed is None
                                                else int(data_seed))
        try:
            return unit_class(layer, rng)
        except (ValueError, RuntimeError) as error:
            raise layer_error(layer, error) from None

    def _build_unit(self, layer):
        prebuilt = self._prebuilt.pop(layer.key, None)
        if prebuilt is not None:
            prebuilt.layer = layer
            unit = prebuilt
        else:
            unit = self._instantiate(layer)
        unit.data_shard = self.shard_plan.layers.get(layer.key)
        return unit

    def _share_parameters(self):
        """Make every sharer of a `param { name }` use its owner's tensor (Caffe's AppendParam)."""
        for members in self.compiled.share_groups.values():
            owner_layer, owner_index = members[0]
            owner = self._unit_by_name[owner_layer].blobs[owner_index]
            for layer_name, index in members[1:]:
                self._unit_by_name[layer_name].blobs[index] = owner

    def _freeze_zero_rate_blobs(self):
        """Caffe computes no diff for a blob with lr_mult 0 (param_propagate_down false): it
        neither learns nor counts towards gradient clipping, and its backward is skipped."""
        for layer, unit in zip(self.compiled.layers, self.units):
            for blob, spec in zip(unit.blobs, layer.param_specs):
                if spec.lr_mult == 0:
                    blob.requires_grad_(False)

    def _plan_steps(self):
        """What run() does per layer, as plain values: it reads no protobuf message or graph
        while running (torch.compile traces it without graph breaks). Each step also lists the
        blob versions no later layer reads, freed to save memory."""
        last_reader = {}
        for index, layer in enumerate(self.compiled.layers):
            for bottom in layer.bottoms:
                last_reader[bottom] = index
        keep = set(self.compiled.outputs) | set(self.compiled.latest.values())
        releases = collections.defaultdict(list)
        for blob, index in last_reader.items():
            if blob not in keep:
                releases[index].append(blob)
        self._steps = tuple(
            _Step(layer=layer, unit=unit, is_input=layer.type == "Input",
                  is_data=not layer.bottoms and layer.type != "Input",
                  bottoms=tuple(layer.bottoms), tops=tuple(layer.tops),
                  loss_weights=tuple(layer.loss_weights),
                  cut=self._gradient_cuts(layer, unit), releases=tuple(releases[index]))
            for index, (layer, unit) in enumerate(zip(self.compiled.layers, self.units)))
        self._output_versions = tuple((name, self.compiled.latest.get(name, name))
                                      for name in self.compiled.outputs)
        self._input_names = tuple(self.compiled.inputs)

    @staticmethod
    def _gradient_cuts(layer, unit):
        """Bottoms Caffe gives no gradient: the unit's label/index inputs, propagate_down false."""
        propagate = list(layer.param.propagate_down)
        return frozenset(unit.no_grad_bottoms) | {i for i, p in enumerate(propagate) if not p}

    # --- running ---------------------------------------------------------------------------

    def to(self, *args, **kwargs):
        device = torch._C._nn._parse_to(*args, **kwargs)[0]
        if device is not None:
            self._device = torch.device(device)
        return super().to(*args, **kwargs)

    @property
    def device(self):
        return self._device

    def forward(self, **tensors):
        """Run every layer once on the given blobs (Input blobs, or the tops of data layers to
        use instead of reading their sources). Returns Outputs: {output blob: tensor} and
        `.loss`."""
        return self.run(tensors)

    def run(self, tensors=None, keep_all=False, retain_grads=False):
        """forward() with options for pycaffe-style drivers: `keep_all` keeps every blob
        version (not only the last of each name), `retain_grads` keeps their diffs."""
        if not torch.compiler.is_compiling():
            threads.tick(id(self))   # an adaptive thread count is timed per forward start
        tensors = dict(tensors or {})
        missing = [name for name in self._input_names if name not in tensors
                   and name not in self._input_buffers]
        if missing:
            raise CompileError(f"no value fed for input blob(s) {', '.join(missing)}",
                               hint=f"call net({missing[0]}=tensor, ...) or set "
                                    f"net.blobs['{missing[0]}'].data first")
        values = {}
        loss = None
        for step in self._steps:
            if step.is_input or (step.is_data and all(top in tensors for top in step.tops)):
                tops = tuple(self._as_device_tensor(tensors[top] if top in tensors else
                                                    self._input_tensor(top))
                             for top in step.tops)
                if self.force_backward:
                    tops = tuple(t.detach().requires_grad_(t.is_floating_point())
                                 for t in tops)
            else:
                bottoms = _cut_bottoms(step, [values[b] for b in step.bottoms])
                try:
                    tops = step.unit(*bottoms)
                except (ValueError, RuntimeError) as error:
                    raise layer_error(step.layer, error) from None
                if step.is_data:   # data layers produce CPU tensors
                    tops = tuple(self._as_device_tensor(t) for t in tops)
                    if self.force_backward:
                        tops = tuple(t.detach().requires_grad_(t.is_floating_point())
                                     for t in tops)
            for top, value, weight in zip(step.tops, tops, step.loss_weights):
                if retain_grads and value.requires_grad:
                    value.retain_grad()
                values[top] = value
                if weight:
                    term = weight * value.sum()
                    loss = term if loss is None else loss + term
            if not keep_all:
                for blob in step.releases:
                    values.pop(blob, None)
        self._values = values
        self._last_loss = loss
        return Outputs({name: values[version] for name, version in self._output_versions},
                       loss if loss is not None else torch.zeros((), device=self._device))

    def backward(self):
        """pycaffe's Net.backward: gradients of the last forward's loss; returns input diffs."""
        if self._last_loss is None:
            raise CompileError("backward() needs a forward pass of a net with a loss first")
        if self._last_loss.requires_grad:
            self._last_loss.backward()
        return {name: self._blob_diff(name) for name in self.inputs}

    def forward_backward(self, tensors=None):
        """One training pass for the solver: run, backpropagate the loss, return the outputs."""
        outputs = self.run(tensors)
        if outputs.loss.requires_grad:
            outputs.loss.backward()
        return outputs

    def zero_inputs(self):
        """Feed zeros of the compiled shapes to every input not fed yet (what `caffe test` and
        `caffe time` run a deploy net on)."""
        for name in self.inputs:
            self._input_tensor(name)

    def reset_state(self):
        """Forget the state recurrent layers carry between forward calls."""
        for unit in self.units:
            unit.reset_state()

    def reorder_state(self, index):
        """Reorder (or repeat) the streams of every carried recurrent state: stream n of the
        next call continues stream index[n] of the last one. Beam search uses this to follow
        the surviving prefixes."""
        index = torch.as_tensor(index, dtype=torch.long)
        for unit in self.units:
            for name in getattr(unit, "state_names", ()):
                carried = getattr(unit, f"{name}_carry", None)
                if carried is not None:
                    setattr(unit, f"{name}_carry",
                            carried.index_select(1, index.to(carried.device)))

    # --- one layer at a time (the `caffe` package's pycaffe Net drives these) --------------

    def run_layer(self, index, bottoms):
        """Run layer `index` alone on `bottoms` (tensors) and return its tops. Bottoms Caffe
        gives no gradient are cut; a data layer's tops come back on the net's device."""
        step = self._steps[index]
        tops = step.unit(*_cut_bottoms(step, list(bottoms)))
        if step.is_data:
            tops = tuple(self._as_device_tensor(t) for t in tops)
        return tops

    def input_array(self, name, array=None):
        """The float32 array input blob `name` is read from when run() is not given it: write
        into it in place. A given `array` (float32, C-contiguous) becomes that array."""
        if array is not None:
            self._input_buffers[name] = array
        self._input_tensor(name)
        return self._input_buffers[name]

    def last_value(self, name):
        """The tensor blob `name` had at the end of the last run() (its last version), or None."""
        return self._latest_value(name)

    # --- pycaffe surface --------------------------------------------------------------------

    @property
    def inputs(self):
        return list(self.compiled.inputs)

    @property
    def outputs(self):
        return list(self.compiled.outputs)

    @property
    def blobs(self):
        names = []
        for layer in self.compiled.layers:
            for top in layer.top_names:
                if top not in names:
                    names.append(top)
        return collections.OrderedDict((name, Blob(self, name)) for name in names)

    @property
    def params(self):
        return collections.OrderedDict(
            (name, [ParamBlob(p) for p in unit.blobs])
            for name, unit in zip(self.layer_names, self.units) if len(unit.blobs))

    @property
    def layers(self):
        return list(self.units)

    def layer(self, key):
        """The unit of a layer, by name (or "name@k" for the k-th repeat of a name)."""
        return self._unit_by_key[key]

    def learnable_params(self):
        """Each learnable tensor once, with its owner's lr_mult / decay_mult (Caffe's
        learnable_params_)."""
        found, seen = [], set()
        for layer, unit in zip(self.compiled.layers, self.units):
            for tensor, spec, key in zip(unit.blobs, layer.param_specs, layer.share_keys):
                if id(tensor) in seen:
                    continue
                seen.add(id(tensor))
                found.append(LearnableParam(key, tensor, spec.lr_mult, spec.decay_mult))
        return found

    def output_loss_weights(self):
        """{top name: loss_weight} for every top that counts towards the objective."""
        return {top: weight for layer in self.compiled.layers
                for top, weight in zip(layer.top_names, layer.loss_weights) if weight}

    def _latest_value(self, name):
        """The last computed version of blob `name`, or None before a forward pass."""
        return self._values.get(self.compiled.latest.get(name, name))

    def _blob_data(self, name):
        if name in self.inputs:
            # The buffer pycaffe scripts write into before forward().
            self._input_tensor(name)
            return self._input_buffers[name]
        value = self._latest_value(name)
        if value is None:
            shape = self.compiled.blobs.get(self.compiled.latest.get(name, name))
            if shape is None:
                raise KeyError(name)
            return np.zeros(shape, dtype=np.float32)
        return value.detach().cpu().numpy()

    def _blob_diff(self, name):
        value = self._latest_value(name)
        if value is None or value.grad is None:
            shape = self.compiled.blobs.get(self.compiled.latest.get(name, name))
            return np.zeros(shape or (), dtype=np.float32)
        return value.grad.detach().cpu().numpy()

    def _input_tensor(self, name):
        if name not in self._input_buffers:
            shape = self.compiled.blobs[self.compiled.latest.get(name, name)]
            self._input_buffers[name] = np.zeros(shape, dtype=np.float32)
        return torch.from_numpy(self._input_buffers[name])

    def _set_input(self, name, value):
        if name not in self.inputs:
            raise KeyError(f"'{name}' is not an input blob of this net (inputs: "
                           f"{', '.join(self.inputs) or 'none'})")
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        self._input_buffers[name] = np.array(value, dtype=np.float32, copy=True)

    def _reshape_input(self, name, shape):
        self._set_input(name, np.zeros(tuple(int(d) for d in shape), dtype=np.float32))

    def _as_device_tensor(self, value):
        if not isinstance(value, torch.Tensor):
            value = torch.as_tensor(np.asarray(value, dtype=np.float32))
        return value.to(self._device, non_blocking=True)

    # --- weights ----------------------------------------------------------------------------

    def copy_from(self, path):
        """Load weights by layer name: a .caffemodel (Caffe's rules) or a torch state_dict."""
        path = str(path)
        if path.endswith((".pt", ".pth")):
            self.load_state_dict(torch.load(path, map_location=self._device, weights_only=True))
            return
        source = weight_files.read_net_file(path)
        for layer_name, blobs in weight_files.layers_with_blobs(source):
            unit = self._unit_by_name.get(layer_name)
            if unit is None:
                continue
            if len(blobs) != len(unit.blobs):
                raise CompileError(f"layer '{layer_name}': the weights file has {len(blobs)} "
                                   f"blobs, the net's layer has {len(unit.blobs)}", path)
            for index, (blob, target) in enumerate(zip(blobs, unit.blobs)):
                array = weight_files.blob_for_shape(blob, target.shape, path,
                                                    f"layer '{layer_name}' blob {index}")
                with torch.no_grad():
                    target.copy_(torch.from_numpy(array))

    def share_weights_from(self, other):
        """Use another net's tensors for every layer of the same name (Caffe's test nets share
        the train net's weights this way)."""
        for name, unit in zip(self.layer_names, self.units):
            source = other._unit_by_name.get(name)
            if source is None or not len(unit.blobs):
                continue
            if [tuple(b.shape) for b in source.blobs] != [tuple(b.shape) for b in unit.blobs]:
                raise CompileError(f"layer '{name}': cannot share weights with the train net's "
                                   "layer of the same name: the blob shapes differ")
            for index in range(len(unit.blobs)):
                unit.blobs[index] = source.blobs[index]

    def to_proto(self):
        """The compiled layers with their blobs, as the NetParameter a .caffemodel holds."""
        from lrcn_proto import caffe_pb2
        net = caffe_pb2.NetParameter(name=self.compiled.name)
        for layer, unit in zip(self.compiled.layers, self.units):
            message = net.layer.add()
            message.CopyFrom(layer.param)
            message.ClearField("blobs")
            for blob in unit.blobs:
                message.blobs.append(weight_files.array_to_blob(blob.detach().cpu().numpy()))
        return net

    def save(self, path):
        """Write weights atomically: .caffemodel (Caffe binary) or .pt/.pth (torch state_dict)."""
        path = str(path)
        if path.endswith((".pt", ".pth")):
            import io
            buffer = io.BytesIO()
            torch.save(self.state_dict(), buffer)
            weight_files.write_bytes_atomically(path, buffer.getvalue())
            return
        weight_files.write_bytes_atomically(path, self.to_proto().SerializeToString())


# --- state_dict keys by layer name ------------------------------------------------------------
# The units live in `units` (a ModuleList, in execution order); state_dict() names their state
# by layer instead: `units.3.blobs.0` is saved as `conv1.0`, a unit's other state `units.3.x`
# as `conv1.x`. Loading takes either form.

def _key_by_layer(net, key, prefix=""):
    units = prefix + "units."
    if not key.startswith(units):
        return key
    index, _, rest = key[len(units):].partition(".")
    rest = rest[len("blobs."):] if rest.startswith("blobs.") else rest
    return f"{prefix}{net._state_names[int(index)]}.{rest}"


def _state_dict_keys_by_layer(net, state_dict, prefix, local_metadata):
    for key in list(state_dict):
        value = state_dict.pop(key)
        state_dict[_key_by_layer(net, key, prefix)] = value


def _missing_keys_by_layer(net, incompatible):
    incompatible.missing_keys[:] = [_key_by_layer(net, key) for key in incompatible.missing_keys]


def _load_state_dict_keys_by_layer(net, state_dict, prefix, local_metadata, strict,
                                   missing_keys, unexpected_keys, error_msgs):
    index_of = {name: index for index, name in enumerate(net._state_names)}
    for key in list(state_dict):
        if not key.startswith(prefix) or key.startswith(prefix + "units."):
            continue
        parts = key[len(prefix):].split(".")
        # Layer names may hold dots: the longest leading run of parts that names a layer.
        for cut in range(len(parts) - 1, 0, -1):
            index = index_of.get(".".join(parts[:cut]))
            if index is not None:
                rest = parts[cut:]
                if len(rest) == 1 and rest[0].isdigit():
                    rest = ["blobs"] + rest
                state_dict[f"{prefix}units.{index}.{'.'.join(rest)}"] = state_dict.pop(key)
                break
