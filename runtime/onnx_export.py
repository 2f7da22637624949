"""Export a compiled Caffe net to ONNX with Caffe's semantics, and verify it with onnxruntime.

Approach: one converter per Caffe layer type writes the layer's ONNX nodes directly with
onnx.helper (no torch.onnx tracing). Each converter reads the layer's parameters from the same
runtime unit that runs it (so a parameter is interpreted in one place) and its learnable blobs
from `unit.blobs` (so the exported numbers are the ones runtime.Net uses).

Naming, so that the graph reads like the prototxt in Netron:
- a layer that becomes one ONNX node gives the node its name; a layer that needs several
  nodes names them "<layer>/<part>" (an LSTM step t: "<layer>/t<t>/<part>"). A repeated layer
  name uses the compiler's key ("name@k").
- each top is a graph value named after its blob. In-place layers write several versions of a
  blob: the last version (what pycaffe's net.blobs[name] shows) is named `name`, each earlier
  one `name@k` with k its production index (0 for the first). A graph input keeps its plain
  name even when a later in-place layer rewrites it; the later versions are then `name@k`.
- a layer's intermediate values are "<layer>/<part>"; its weights are initializers named
  "<layer>/<role>" (conv1/weight, conv1/bias, lstm1/W_hc, ...; a shared blob is stored once,
  under its owner's name). Weights keep Caffe's layout except where an ONNX op needs a
  broadcastable shape (a per-channel (C,) blob is stored as (C, 1, 1)).

Train nets export their data-free part: data layers become graph inputs named after their
tops; loss and Accuracy layers (and sinks: Silence, HDF5Output) are dropped, and the blobs they
read that depend on learnt weights (the predictions, e.g. ip2) become graph outputs; what only
fed the dropped layers (label inputs) is pruned. See `deployable`.

Verification (`verify`, lrcn-export --check): onnxruntime and runtime.Net on the same random
inputs; an output passes when max |onnx - net| <= RTOL * max |net| (see RTOL).

Recurrent layers are unrolled over the net's fixed T. By default the initial states are zero
(a fresh runtime.Net after reset_state()); `step=True` makes the states of every LSTM / RNN
without expose_hidden explicit: inputs "<layer>.h0" (and "<layer>.c0"), outputs "<layer>.hT"
(and "<layer>.cT"), each (1, N, H), so decoding loops can carry state outside Python.
"""

import copy
import dataclasses
import math
import sys
from dataclasses import dataclass, field

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

import compiler
from compiler.errors import CompileError
from compiler.extras import require
from lrcn_proto import caffe_pb2

DEFAULT_OPSET = 17
# Opset 13 is the first with Softmax over one axis and axes / split as inputs, which the
# converters rely on; the newest is what the installed onnx package knows.
MIN_OPSET = 13
MAX_OPSET = onnx.defs.onnx_opset_version()

# The dimension name of the batch axis with --dynamic-batch.
BATCH_DIM = "N"

# Caffe's -FLT_MAX: what MAX pooling pads with and yields for a window holding no input.
_NEG_FLT_MAX = float(np.finfo(np.float32).min)

_SINK_TYPES = ("Silence", "HDF5Output")
_METRIC_TYPES = ("Accuracy",)
_RECURRENT_TYPES = ("LSTM", "RNN")


# ---------------------------------------------------------------------------------------------
# The data-free part of a net


@dataclass
class Deployable:
    """A CompiledNet reduced to what an inference graph holds, with notes on what changed."""
    compiled: object
    notes: list = field(default_factory=list)


def _is_data_layer(layer):
    return not layer.bottoms and bool(layer.tops) and layer.type not in ("Input", "Parameter")


def _is_dropped_type(layer):
    if layer.type in _SINK_TYPES:
        return "sink layer"
    if layer.type in _METRIC_TYPES:
        return "metric layer"
    if layer.type.endswith("Loss") or any(w != 0 for w in layer.loss_weights):
        return "loss layer"
    return None


def deployable(compiled):
    """The inference part of a compiled net as a new CompiledNet runtime.Net can build.

    Data layers become Input layers (same name, same tops, the compiled shapes); loss, metric
    and sink layers are dropped, as is every layer that reads one of their tops. Graph outputs
    are the net's own outputs that survive plus the blobs a dropped loss / metric layer read
    that depend on learnt weights (its predictions, not its labels). Layers and data tops no
    output depends on are pruned (labels and what reshapes them).
    """
    producer = {top: layer for layer in compiled.layers for top in layer.tops}
    dropped, notes = set(), []
    for layer in compiled.layers:
        reason = _is_dropped_type(layer)
        if reason is None and any(producer[b].key in dropped for b in layer.bottoms):
            reason = "reads a dropped layer's top"
        if reason:
            dropped.add(layer.key)
            notes.append(f"dropped {reason} '{layer.name}' ({layer.type})")
    # An input nobody reads is an output in Caffe; an inference graph has no use for it.
    wanted = [compiled.latest[name] for name in compiled.outputs
              if producer[compiled.latest[name]].key not in dropped
              and not _is_data_layer(producer[compiled.latest[name]])
              and producer[compiled.latest[name]].type != "Input"]
    # Predictions depend on learnt weights; labels (even reshaped ones) do not.
    # (Unknown parameter shapes, None, may be weights: the shapes are asked for below.)
    learnt = set()
    for layer in compiled.layers:
        weights = layer.param_shapes or (layer.param_shapes is None
                                         and not _is_data_layer(layer))
        if weights or learnt.intersection(layer.bottoms):
            learnt.update(layer.tops)
    for layer in compiled.layers:
        if layer.key in dropped and _is_dropped_type(layer) in ("loss layer", "metric layer"):
            for bottom in layer.bottoms:
                if (bottom in learnt and producer[bottom].key not in dropped
                        and bottom not in wanted):
                    wanted.append(bottom)
    if not wanted:
        raise CompileError("nothing to export: without its loss, metric and sink layers the "
                           "net has no output", compiled.source_file)
    needed = set(wanted)
    kept = []
    for layer in reversed(compiled.layers):
        if layer.key in dropped or not needed.intersection(layer.tops):
            if layer.key not in dropped:
                notes.append(f"pruned '{layer.name}' ({layer.type}): no output depends on it")
            continue
        needed.update(layer.bottoms)
        kept.append(layer)
    kept.reverse()
    _check_types([layer for layer in kept if not _is_data_layer(layer)])
    layers = [_as_input(layer, needed, notes) if _is_data_layer(layer) or layer.type == "Input"
              else layer for layer in kept]
    return Deployable(_rebuild(compiled, layers, wanted), notes)


def _as_input(layer, needed, notes):
    """An Input layer for a data layer (or an Input layer) holding only the tops in use."""
    keep = [j for j, top in enumerate(layer.tops) if top in needed]
    for j, top in enumerate(layer.tops):
        if j not in keep:
            notes.append(f"pruned input '{layer.top_names[j]}' of '{layer.name}': no output "
                         f"depends on it")
        elif layer.top_shapes[j] is None:
            name = layer.top_names[j]
            raise CompileError(f"layer '{layer.name}' ({layer.type}): the shape of its top "
                               f"'{name}' is not known", *layer.location,
                               hint=f"give it with --input-shape {name}=D1,D2,... "
                                    "(input_shapes={blob: shape})")
    if layer.type != "Input":
        names = ", ".join(layer.top_names[j] for j in keep)
        notes.append(f"data layer '{layer.name}' ({layer.type}) becomes graph input(s) {names}")
    elif len(keep) == len(layer.tops):
        return layer
    param = caffe_pb2.LayerParameter(name=layer.name, type="Input",
                                     top=[layer.top_names[j] for j in keep])
    param.phase = layer.param.phase
    for j in keep:
        param.input_param.shape.add(dim=list(layer.top_shapes[j]))
    return dataclasses.replace(
        layer, type="Input", param=param, bottoms=[], bottom_names=[], bottom_shapes=[],
        tops=[layer.tops[j] for j in keep], top_names=[layer.top_names[j] for j in keep],
        top_shapes=[layer.top_shapes[j] for j in keep], param_shapes=[], param_specs=[],
        share_keys=[], loss_weights=[0.0] * len(keep), params=0, flops=0)


def _rebuild(compiled, layers, output_versions):
    versions = {top for layer in layers for top in layer.tops}
    name_of = {top: name for layer in layers for name, top in zip(layer.top_names, layer.tops)}
    latest = {}
    for layer in layers:
        for name, top in zip(layer.top_names, layer.tops):
            latest[name] = top
    names = {layer.name for layer in layers}
    share_groups = {}
    for key, members in compiled.share_groups.items():
        members = [member for member in members if member[0] in names]
        if members:
            share_groups[key] = members
    nodes = [("layer", layer.key) for layer in layers] + [("blob", v) for v in versions]
    return dataclasses.replace(
        compiled, layers=layers, blobs={v: s for v, s in compiled.blobs.items() if v in versions},
        latest=latest, inputs=[n for layer in layers if layer.type == "Input"
                               for n in layer.top_names],
        outputs=sorted({name_of[version] for version in output_versions}),
        graph=compiled.graph.subgraph(nodes).copy(), share_groups=share_groups,
        _by_key={layer.key: layer for layer in layers})


def load_deployable(net, phase="TEST", stages=(), level=0, input_shapes=None):
    """Compile a net file / Document / NetParameter and reduce it with `deployable`; check that
    every layer can be exported and every top's shape is known."""
    compiled = compiler.compile_net(net, phase, tuple(stages), level, dict(input_shapes or {}))
    result = deployable(compiled)
    _check_shapes_known(result.compiled)
    check_exportable(result.compiled)
    return result


def _check_shapes_known(compiled):
    # The inputs' shapes are known (deployable checks them), so this is a net whose shape
    # rules could not follow them.
    for layer in compiled.layers:
        if any(shape is None for shape in layer.top_shapes):
            raise CompileError(f"layer '{layer.name}' ({layer.type}): the shapes of its tops "
                               "are not known", *layer.location,
                               hint="give the shapes of the net's inputs with --input-shape")


# ---------------------------------------------------------------------------------------------
# Converter registry


class Unsupported(Exception):
    """A layer the exporter cannot express with Caffe's semantics (the reason is the message)."""


@dataclass
class _Converter:
    function: object
    check: object = None          # check(layer) -> reason string or None


_CONVERTERS = {}


def converter(*type_names, check=None):
    """`@converter("ReLU")` registers `function(ctx)` writing the layer's nodes; `check(layer)`
    (optional) returns why a particular layer of the type cannot be exported, or None."""
    def decorate(function):
        for name in type_names:
            _CONVERTERS[name] = _Converter(function, check)
        return function
    return decorate


def exportable_types():
    return sorted(_CONVERTERS)


# Types whose layers can never be exported, and why.
_UNEXPORTABLE = {"Python": "a Python layer runs arbitrary Python code, which an ONNX graph "
                           "cannot hold (a Python data layer becomes a graph input instead)",
                 "Filter": "the number of rows it keeps depends on the selector's values; ONNX "
                           "can select them (NonZero, then Gather), but the exporter declares "
                           "every blob's shape from the compiled net, and the layers after a "
                           "Filter would be written for all the rows"}


def _unsupported(layer, reason, hint=None):
    return CompileError(f"layer '{layer.name}' ({layer.type}) cannot be exported to ONNX: "
                        f"{reason}", *layer.location, hint=hint)


def _check_types(layers):
    for layer in layers:
        if layer.type in _UNEXPORTABLE:
            raise _unsupported(layer, _UNEXPORTABLE[layer.type])
        if layer.type not in _CONVERTERS:
            raise _unsupported(layer, f"type '{layer.type}' has no ONNX converter",
                               f"exportable types: {', '.join(exportable_types())}")


def check_exportable(compiled):
    """Raise a located CompileError for the first layer the exporter cannot convert (the
    layers' shapes must be known)."""
    _check_types(compiled.layers)
    for layer in compiled.layers:
        check = _CONVERTERS[layer.type].check
        reason = check(layer) if check else None
        if reason:
            raise _unsupported(layer, reason)


# ---------------------------------------------------------------------------------------------
# Graph building


def _value_names(compiled):
    """Versioned blob id -> ONNX value name (see the module docstring)."""
    productions = {}
    for layer in compiled.layers:
        for name, top in zip(layer.top_names, layer.tops):
            productions.setdefault(name, []).append(top)
    input_versions = {top for layer in compiled.layers if layer.type == "Input"
                      for top in layer.tops}
    names = {}
    for name, versions in productions.items():
        plain = versions[0] if versions[0] in input_versions else versions[-1]
        for k, version in enumerate(versions):
            names[version] = name if version == plain else f"{name}@{k}"
    return names


class _Graph:
    """Nodes, initializers and the names in use; the opset the converters write for."""

    def __init__(self, opset, reserved):
        self.opset = opset
        self.nodes = []
        self.initializers = []
        self.values = set(reserved)     # blob value names are taken before any converter runs
        self.node_names = set()
        self.shared = {}                # id(tensor) -> initializer name (shared blobs)

    def unique(self, name, taken):
        candidate, k = name, 1
        while candidate in taken:
            k += 1
            candidate = f"{name}#{k}"
        taken.add(candidate)
        return candidate

    def add_initializer(self, name, array):
        name = self.unique(name, self.values)
        array = np.asarray(array)
        if not array.flags.c_contiguous:
            # (ascontiguousarray would also turn a 0-d scalar into shape (1,).)
            array = np.ascontiguousarray(array)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name


class _LayerExport:
    """What a converter works with: the layer, its unit, its bottom and top value names, and
    helpers that add nodes / constants named after the layer."""

    def __init__(self, graph, layer, unit, inputs, outputs, dynamic, step_states, doc):
        self.graph = graph
        self.layer = layer
        self.unit = unit
        self.inputs = inputs              # value names of the bottoms
        self.outputs = outputs            # value names of the tops
        self.dynamic = dynamic            # DynamicBatch (all axes None for a fixed batch)
        self.step_states = step_states    # None, or a dict filled with state input/output names
        self.doc = doc
        self.first_node = len(graph.nodes)

    @property
    def key(self):
        return self.layer.key

    @property
    def opset(self):
        return self.graph.opset

    def _temp(self, label):
        return self.graph.unique(f"{self.key}/{label}", self.graph.values)

    def node(self, op_type, inputs, outputs, label=None, **attributes):
        """Add a node. `outputs`: value names, or a count of fresh values "<layer>/<label>:i".
        Returns the list of output names."""
        label = label or op_type.lower()
        if isinstance(outputs, int):
            outputs = ([self._temp(label)] if outputs == 1 else
                       [self._temp(f"{label}:{i}") for i in range(outputs)])
        name = self.graph.unique(f"{self.key}/{label}", self.graph.node_names)
        self.graph.nodes.append(helper.make_node(op_type, list(inputs), list(outputs), name=name,
                                                 doc_string=self.doc, **attributes))
        return list(outputs)

    def op(self, op_type, inputs, out=None, label=None, **attributes):
        """One-output node; `out` names its output (a top), else a fresh "<layer>/<label>"."""
        return self.node(op_type, inputs, [out] if out else 1, label, **attributes)[0]

    def const(self, label, value, dtype=np.float32):
        return self.graph.add_initializer(f"{self.key}/{label}", np.asarray(value, dtype=dtype))

    def ints(self, label, values):
        return self.const(label, list(values), np.int64)

    def scalar(self, label, value):
        return self.const(label, np.float32(value))

    def blob(self, index, role, shape=None):
        """Learnable blob `index` of the unit as an initializer "<layer>/<role>" (stored once
        when shared; `shape` reshapes it for broadcasting)."""
        tensor = self.unit.blobs[index]
        array = tensor.detach().cpu().numpy().astype(np.float32, copy=False)
        if shape is not None:
            return self.graph.add_initializer(f"{self.key}/{role}", array.reshape(shape))
        known = self.graph.shared.get(id(tensor))
        if known is None:
            known = self.graph.shared[id(tensor)] = self.graph.add_initializer(
                f"{self.key}/{role}", array)
        return known

    def bottom_shape(self, i):
        return tuple(self.layer.bottom_shapes[i])

    def top_shape(self, j=0):
        return tuple(self.layer.top_shapes[j])

    def bottom_axis(self, i):
        """The batch axis of bottom i under --dynamic-batch, or None."""
        return self.dynamic.axis(self.layer.bottoms[i])

    def top_axis(self, j=0):
        return self.dynamic.axis(self.layer.tops[j])

    def shape_const(self, label, shape, axis):
        """A Reshape target: `shape` with -1 at the batch axis (None: all static)."""
        dims = list(shape)
        if axis is not None:
            dims[axis] = -1
        return self.ints(label, dims)

    def reshape(self, x, shape, axis, out=None, label="reshape"):
        return self.op("Reshape", [x, self.shape_const(f"{label}_shape", shape, axis)], out,
                       label)

    def reshape_to_top(self, x, j=0, label="reshape"):
        return self.reshape(x, self.top_shape(j), self.top_axis(j), self.outputs[j], label)

    def reduce(self, op_type, x, axes, keepdims, label=None):
        """ReduceSum takes axes as an input from opset 13, the other reductions from 18."""
        if op_type == "ReduceSum" or self.opset >= 18:
            return self.op(op_type, [x, self.ints(f"{label or op_type.lower()}_axes", axes)],
                           label=label, keepdims=keepdims)
        return self.op(op_type, [x], label=label, axes=list(axes), keepdims=keepdims)

    def unsqueeze(self, x, axes, out=None, label="unsqueeze"):
        return self.op("Unsqueeze", [x, self.ints(f"{label}_axes", axes)], out, label)

    def squeeze(self, x, axes, out=None, label="squeeze"):
        return self.op("Squeeze", [x, self.ints(f"{label}_axes", axes)], out, label)

    def split(self, x, sizes, axis, outputs=None, label="split"):
        return self.node("Split", [x, self.ints(f"{label}_sizes", sizes)],
                         outputs if outputs is not None else len(sizes), label, axis=axis)

    def slice(self, x, starts, ends, axes, steps=None, out=None, label="slice"):
        inputs = [x, self.ints(f"{label}_starts", starts), self.ints(f"{label}_ends", ends),
                  self.ints(f"{label}_axes", axes)]
        if steps is not None:
            inputs.append(self.ints(f"{label}_steps", steps))
        return self.op("Slice", inputs, out, label)

    def identity(self, x, out):
        return self.op("Identity", [x], out)

    def finish(self):
        """A layer written as exactly one node takes the layer's own name."""
        if len(self.graph.nodes) - self.first_node == 1:
            node = self.graph.nodes[-1]
            self.graph.node_names.discard(node.name)
            node.name = self.graph.unique(self.key, self.graph.node_names)


def _tensor_info(name, shape, axis=None, label=None):
    dims = [label if i == axis else int(d) for i, d in enumerate(shape)]
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)


def _check_opset(opset):
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise CompileError(f"opset {opset} is not supported: choose {MIN_OPSET} to {MAX_OPSET}")


def export_model(net, opset=DEFAULT_OPSET, step=False, dynamic=None, doc_string=""):
    """runtime.Net (built from a deployable CompiledNet) -> onnx.ModelProto.

    dynamic: a DynamicBatch from `batch_axes` for a symbolic batch size, or None.
    step: explicit recurrent states (see the module docstring); needs at least one LSTM / RNN
    without expose_hidden.
    """
    _check_opset(opset)
    compiled = net.compiled
    check_exportable(compiled)
    dynamic = dynamic or DynamicBatch()
    value_of = _value_names(compiled)
    graph = _Graph(opset, value_of.values())
    step_states = {} if step else None
    if step and not any(layer.type in _RECURRENT_TYPES
                        and not layer.param.recurrent_param.expose_hidden
                        for layer in compiled.layers):
        raise CompileError("--step: the net has no LSTM / RNN layer that carries state between "
                           "calls", compiled.source_file)
    inputs = []
    for layer, unit in zip(compiled.layers, net.units):
        if layer.type == "Input":
            inputs += [_tensor_info(value_of[top], shape, *dynamic.dim(top))
                       for top, shape in zip(layer.tops, layer.top_shapes)]
            continue
        file, line, _ = layer.location
        doc = f"{layer.type} layer '{layer.name}'" + (f" ({file}:{line})" if line else "")
        ctx = _LayerExport(graph, layer, unit, [value_of[b] for b in layer.bottoms],
                           [value_of[t] for t in layer.tops], dynamic, step_states, doc)
        try:
            _CONVERTERS[layer.type].function(ctx)
        except Unsupported as error:
            raise _unsupported(layer, str(error)) from None
        ctx.finish()
    outputs = [_tensor_info(value_of[compiled.latest[name]], compiled.blobs[compiled.latest[name]],
                            *dynamic.dim(compiled.latest[name])) for name in compiled.outputs]
    for state in (step_states or {}).values():
        inputs.append(_tensor_info(state.input, state.shape, *state.dim))
        outputs.append(_tensor_info(state.output, state.shape, *state.dim))
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(helper.make_graph(graph.nodes, compiled.name or "net", inputs,
                                                outputs),
                              opset_imports=opsets, producer_name="lrcn-export",
                              ir_version=helper.find_min_ir_version_for(opsets),
                              doc_string=doc_string)
    # Added after make_model, which copies its graph: the weights are copied once.
    model.graph.initializer.extend(graph.initializers)
    helper.set_model_props(model, {
        "caffe_net": compiled.name or "", "phase": compiled.phase,
        "stages": ",".join(compiled.stages),
        "source_file": str(compiled.source_file or ""),
        "recurrent_state": "explicit inputs/outputs" if step else "zero at every call"})
    model.graph.value_info.extend(_inferred_value_info(model.graph, opsets, model.ir_version))
    return model


def _inferred_value_info(onnx_graph, opsets, ir_version):
    """Shapes on every edge (Netron shows them); strict mode also validates the graph.

    Inference runs on a copy whose large initializers are declared inputs instead (shape
    inference needs their shapes, not their values; it reads the values of small ones, such
    as Reshape targets), so a 200 MB model is not serialized and parsed again for it."""
    small, declared = [], []
    for tensor in onnx_graph.initializer:
        if math.prod(tensor.dims) <= 512:
            small.append(tensor)
        else:
            declared.append(helper.make_tensor_value_info(tensor.name, tensor.data_type,
                                                          list(tensor.dims)))
    light = helper.make_model(
        helper.make_graph(onnx_graph.node, onnx_graph.name,
                          list(onnx_graph.input) + declared, onnx_graph.output, small),
        opset_imports=opsets, ir_version=ir_version)
    inferred = onnx.shape_inference.infer_shapes(light, check_type=True, strict_mode=True)
    return inferred.graph.value_info


@dataclass
class _State:
    input: str
    output: str
    shape: tuple
    dim: tuple            # (batch axis, its dim_param), or (None, None)


# ---------------------------------------------------------------------------------------------
# Dynamic batch


_TIME_MAJOR_PASSTHROUGH = ("Embed", "Dropout", "Split", "ReLU", "PReLU", "ELU", "Sigmoid",
                           "TanH", "AbsVal", "Power", "Exp", "Log", "BNLL", "Threshold", "Swish",
                           "Clip", "Scale", "Bias", "Eltwise")


def _time_major_inputs(compiled):
    """Input blobs laid out (T, N, ...): read as x or cont by an LSTM / RNN, or by LSTMUnit
    (1, N, ...), directly or through layers that keep the leading axes (element-wise layers,
    Embed, InnerProduct / Concat / Slice on axis >= 2)."""
    marked = set()
    for layer in compiled.layers:
        if layer.type in _RECURRENT_TYPES:
            marked.update(layer.bottoms[:2])
        elif layer.type == "LSTMUnit":
            marked.update(layer.bottoms)
    for layer in reversed(compiled.layers):
        if not marked.intersection(layer.tops):
            continue
        if layer.type in _TIME_MAJOR_PASSTHROUGH or (
                layer.type in ("InnerProduct", "Concat", "Slice") and _layer_axis(layer) >= 2):
            marked.update(layer.bottoms)
    return {name for name in compiled.inputs if name in marked}


def _layer_axis(layer):
    p = layer.param
    rank = len(layer.bottom_shapes[0])
    axis = {"InnerProduct": p.inner_product_param.axis,
            "Concat": p.concat_param.concat_dim if p.concat_param.HasField("concat_dim")
            else p.concat_param.axis,
            "Slice": p.slice_param.slice_dim if p.slice_param.HasField("slice_dim")
            else p.slice_param.axis}[layer.type]
    return axis + rank if axis < 0 else axis


def input_batch_axes(compiled):
    """{input blob: its batch axis}: 1 for time-major inputs of recurrent layers, else 0."""
    time_major = _time_major_inputs(compiled)
    return {name: 1 if name in time_major else 0 for name in compiled.inputs}


def rebatch(compiled, extra=1):
    """The deployable net with every input's batch axis `extra` larger: the compiler's shape
    rules run again over its layers (the dropped loss layers, whose labels keep their size,
    play no part). A CompileError at the layer that fixes the batch size says it cannot vary."""
    from compiler.shapes import ShapeContext, infer_layer
    axes = input_batch_axes(compiled)
    shapes, layers = {}, []
    for layer in compiled.layers:
        if layer.type == "Input":
            tops = []
            for name, top in zip(layer.top_names, layer.tops):
                shape = list(compiled.blobs[top])
                if axes[name] >= len(shape):
                    raise CompileError(f"--dynamic-batch: input '{name}' has no axis "
                                       f"{axes[name]} to vary", *layer.location)
                shape[axes[name]] += extra
                tops.append(tuple(shape))
            param = caffe_pb2.LayerParameter()
            param.CopyFrom(layer.param)
            for shape_message, shape in zip(param.input_param.shape, tops):
                shape_message.ClearField("dim")
                shape_message.dim.extend(shape)
            layer = dataclasses.replace(layer, param=param, top_shapes=tops)
        else:
            bottoms = [shapes[b] for b in layer.bottoms]
            context = ShapeContext(layer.phase, compiled.source_file, {}, layer.location)
            try:
                result = infer_layer(layer.param, bottoms, context)
            except CompileError as error:
                raise CompileError(f"--dynamic-batch: layer '{layer.name}' ({layer.type}) "
                                   f"does not take another batch size: {error.message}",
                                   *layer.location, hint="the net fixes its batch size (e.g. "
                                   "a Reshape with explicit dims); export without "
                                   "--dynamic-batch") from None
            if list(result.param_shapes) != list(layer.param_shapes):
                raise CompileError(f"--dynamic-batch: layer '{layer.name}' ({layer.type}): its "
                                   "weights' shapes depend on the batch size", *layer.location,
                                   hint="export without --dynamic-batch")
            layer = dataclasses.replace(layer, bottom_shapes=bottoms,
                                        top_shapes=list(result.top_shapes))
        shapes.update(zip(layer.tops, layer.top_shapes))
        layers.append(layer)
    return dataclasses.replace(compiled, layers=layers, blobs=shapes,
                               _by_key={layer.key: layer for layer in layers})


@dataclass
class DynamicBatch:
    """Where the batch size appears: per versioned blob id, the axis it changes (None: none)
    and that axis's symbolic size, an expression in N such as "N", "10*N" or "N+2"."""
    axes: dict = field(default_factory=dict)
    labels: dict = field(default_factory=dict)

    def axis(self, version):
        return self.axes.get(version)

    def dim(self, version):
        axis = self.axes.get(version)
        return (axis, self.labels[version]) if axis is not None else (None, None)


def _size_label(size, delta, batch):
    """size = delta * N + (size - delta * batch) for the compiled batch size `batch`."""
    scaled = BATCH_DIM if delta == 1 else f"{delta}*{BATCH_DIM}"
    offset = size - delta * batch
    return scaled if offset == 0 else f"{scaled}{offset:+d}"


def batch_axes(compiled):
    """The DynamicBatch of a deployable net: the one axis of each blob whose size changes when
    the inputs' batch does (see `rebatch`). Inputs of different batch sizes, a blob with
    several such axes, or a recurrent layer whose T would change make the batch not dynamic."""
    axes = input_batch_axes(compiled)
    sizes = {name: compiled.blobs[name][axis] for name, axis in axes.items()}
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{name} {size} (axis {axes[name]})" for name, size in sizes.items())
        raise CompileError(f"--dynamic-batch: the inputs have different batch sizes: {listed}",
                           compiled.source_file, hint="export without --dynamic-batch")
    batch = next(iter(sizes.values()), 0)
    other = rebatch(compiled)
    dynamic = DynamicBatch()
    for layer in compiled.layers:
        for version, shape in zip(layer.tops, layer.top_shapes):
            changed = [i for i, (a, b) in enumerate(zip(shape, other.blobs[version])) if a != b]
            if len(changed) > 1 or len(shape) != len(other.blobs[version]):
                raise CompileError(f"--dynamic-batch: layer '{layer.name}' ({layer.type}): the "
                                   f"batch size changes several axes of its top", *layer.location,
                                   hint="export without --dynamic-batch")
            if changed:
                axis = changed[0]
                dynamic.axes[version] = axis
                dynamic.labels[version] = _size_label(
                    shape[axis], other.blobs[version][axis] - shape[axis], batch)
        if layer.type in _RECURRENT_TYPES and dynamic.axis(layer.bottoms[0]) == 0:
            raise CompileError(f"--dynamic-batch: layer '{layer.name}' ({layer.type}): the batch "
                               "axis found is its time axis T, which an unrolled export fixes",
                               *layer.location, hint="export without --dynamic-batch")
    return dynamic


# ---------------------------------------------------------------------------------------------
# Converters: inputs and neurons


@converter("Input")
def _input(ctx):
    """Input tops are graph inputs (export_model declares them); no node."""


def _simple(op_type, **attributes):
    def convert(ctx):
        ctx.op(op_type, ctx.inputs, ctx.outputs[0], **attributes)
    return convert


converter("Sigmoid")(_simple("Sigmoid"))
converter("TanH")(_simple("Tanh"))
converter("AbsVal")(_simple("Abs"))
# Caffe's BNLL is log(1 + exp(x)) computed stably: ONNX Softplus.
converter("BNLL")(_simple("Softplus"))


@converter("ReLU")
def _relu(ctx):
    slope = float(ctx.unit.negative_slope)
    if slope == 0:
        ctx.op("Relu", ctx.inputs, ctx.outputs[0])
    else:
        ctx.op("LeakyRelu", ctx.inputs, ctx.outputs[0], alpha=slope)


@converter("PReLU")
def _prelu(ctx):
    rank = len(ctx.bottom_shape(0))
    if ctx.unit.channel_shared:
        slope = ctx.blob(0, "slope", (1,))
    else:
        # (C,) broadcast over (N, C, ...): trailing singleton axes.
        slope = ctx.blob(0, "slope", (-1,) + (1,) * (rank - 2))
    ctx.op("PRelu", [ctx.inputs[0], slope], ctx.outputs[0])


@converter("ELU")
def _elu(ctx):
    ctx.op("Elu", ctx.inputs, ctx.outputs[0], alpha=float(ctx.unit.alpha))


@converter("Power")
def _power(ctx):
    unit, x = ctx.unit, ctx.inputs[0]
    if unit.scale == 0:
        # Caffe fills a constant whatever x holds (x * 0 would turn inf into NaN).
        value = 1.0 if unit.power == 0 else unit.shift ** unit.power
        shape = ctx.op("Shape", [x])
        ctx.op("ConstantOfShape", [shape], ctx.outputs[0],
               value=numpy_helper.from_array(np.array([value], np.float32)))
        return
    steps = []
    if unit.scale != 1:
        steps.append(("Mul", "scale", unit.scale))
    if unit.shift != 0:
        steps.append(("Add", "shift", unit.shift))
    if unit.power != 1:
        steps.append(("Pow", "power", unit.power))
    if not steps:
        ctx.identity(x, ctx.outputs[0])
    for k, (op_type, label, value) in enumerate(steps):
        x = ctx.op(op_type, [x, ctx.scalar(label, value)],
                   ctx.outputs[0] if k == len(steps) - 1 else None, label)


@converter("Exp")
def _exp(ctx):
    unit, x = ctx.unit, ctx.inputs[0]
    if unit.inner_scale != 1:
        x = ctx.op("Mul", [x, ctx.scalar("inner_scale", unit.inner_scale)], label="inner")
    if unit.outer_scale == 1:
        ctx.op("Exp", [x], ctx.outputs[0])
    else:
        y = ctx.op("Exp", [x])
        ctx.op("Mul", [y, ctx.scalar("outer_scale", unit.outer_scale)], ctx.outputs[0], "outer")


@converter("Log")
def _log(ctx):
    unit, x = ctx.unit, ctx.inputs[0]
    if unit.scale != 1:
        x = ctx.op("Mul", [x, ctx.scalar("scale", unit.scale)], label="scale")
    if unit.shift != 0:
        x = ctx.op("Add", [x, ctx.scalar("shift", unit.shift)], label="shift")
    if unit.base_scale == 1:
        ctx.op("Log", [x], ctx.outputs[0])
    else:
        y = ctx.op("Log", [x])
        ctx.op("Mul", [y, ctx.scalar("base_scale", unit.base_scale)], ctx.outputs[0], "base")


@converter("Threshold")
def _threshold(ctx):
    above = ctx.op("Greater", [ctx.inputs[0], ctx.scalar("threshold", ctx.unit.threshold)])
    ctx.op("Cast", [above], ctx.outputs[0], to=TensorProto.FLOAT)


@converter("Swish")
def _swish(ctx):
    x = ctx.inputs[0]
    scaled = x
    if ctx.unit.beta != 1:
        scaled = ctx.op("Mul", [x, ctx.scalar("beta", ctx.unit.beta)], label="beta")
    gate = ctx.op("Sigmoid", [scaled])
    ctx.op("Mul", [x, gate], ctx.outputs[0])


@converter("Clip")
def _clip(ctx):
    ctx.op("Clip", [ctx.inputs[0], ctx.scalar("min", ctx.unit.min),
                    ctx.scalar("max", ctx.unit.max)], ctx.outputs[0])


def _dropout_check(layer):
    if layer.phase == "TRAIN" and layer.param.dropout_param.dropout_ratio > 0:
        return ("Dropout in TRAIN draws random masks; export the TEST phase "
                "(--phase TEST), where it is the identity")
    return None


@converter("Dropout", check=_dropout_check)
def _dropout(ctx):
    ctx.identity(ctx.inputs[0], ctx.outputs[0])


# ---------------------------------------------------------------------------------------------
# Converters: vision layers


def _vision():
    from runtime.layers import vision
    return vision


def _conv_check(layer):
    rank = len(layer.bottom_shapes[0]) if layer.bottom_shapes[0] else 0
    axis = layer.param.convolution_param.axis
    axis = axis + rank if axis < 0 else axis
    if rank - axis - 1 not in (1, 2, 3):
        return f"{rank - axis - 1} spatial axes (1 to 3 are supported)"
    return None


def _convolution(op_type):
    def convert(ctx):
        unit = ctx.unit
        x = ctx.inputs[0]
        shape = ctx.bottom_shape(0)
        folded = unit.axis != 1
        if folded:
            # Axes before `axis` are batch-like: one N axis for ONNX, restored afterwards.
            axis = ctx.bottom_axis(0)
            inner = shape[unit.axis:]
            x = ctx.reshape(x, (math.prod(shape[:unit.axis]),) + tuple(inner),
                            None if axis is None else 0, label="fold")
        inputs = [x, ctx.blob(0, "weight")]
        if unit.bias_term:
            inputs.append(ctx.blob(1, "bias"))
        y = ctx.op(op_type, inputs, None if folded else ctx.outputs[0],
                   kernel_shape=list(unit.kernel), strides=list(unit.stride),
                   pads=list(unit.pad) * 2, dilations=list(unit.dilation), group=unit.group)
        if folded:
            ctx.reshape_to_top(y, label="unfold")
    return convert


converter("Convolution", check=_conv_check)(_convolution("Conv"))
converter("Deconvolution", check=_conv_check)(_convolution("ConvTranspose"))


def _pooling_check(layer):
    pp = layer.param.pooling_param
    if len(layer.tops) > 1:
        return "the MAX pooling mask top is not exported"
    if pp.pool == caffe_pb2.PoolingParameter.STOCHASTIC and layer.phase == "TRAIN":
        return "STOCHASTIC pooling in TRAIN samples at random; export the TEST phase"
    if len(layer.bottom_shapes[0]) != 4:
        return "Caffe pools (N, C, H, W) blobs only"
    return None


@converter("Pooling", check=_pooling_check)
def _pooling(ctx):
    unit = ctx.unit
    methods = caffe_pb2.PoolingParameter
    size = ctx.bottom_shape(0)[2:]
    kernel = size if unit.global_pooling else tuple(unit.kernel)
    stochastic = unit.method == methods.STOCHASTIC
    # Caffe's STOCHASTIC kernels ignore pad: windows start at i * stride.
    pad = (0, 0) if stochastic else tuple(unit.pad)
    out = tuple(unit.out_size)
    # Pad explicitly so that every window of the ceil rule (the last may hang past size + pad)
    # exists; then pool without padding and keep Caffe's first out_size windows.
    after = [max(0, (o - 1) * s + k - n - p) for o, s, k, n, p in
             zip(out, unit.stride, kernel, size, pad)]
    padded_size = [n + p + a for n, p, a in zip(size, pad, after)]
    pooled = [(m - k) // s + 1 for m, k, s in zip(padded_size, kernel, unit.stride)]
    crop = tuple(pooled) != out

    def pad_input(x, value, label="pad"):
        if not any(pad) and not any(after):
            return x
        pads = ctx.ints(f"{label}_pads", [0, 0, pad[0], pad[1], 0, 0, after[0], after[1]])
        return ctx.op("Pad", [x, pads, ctx.scalar(f"{label}_value", value)], label=label,
                      mode="constant")

    def pool(op_type, x, out_name, label):
        y = ctx.op(op_type, [x], None if crop else out_name, label, kernel_shape=list(kernel),
                   strides=list(unit.stride))
        if crop:
            y = ctx.slice(y, [0, 0], list(out), [2, 3], out=out_name, label=f"{label}_crop")
        return y

    x = ctx.inputs[0]
    if unit.method == methods.MAX:
        # -FLT_MAX padding never wins against an input and gives Caffe's -FLT_MAX for a
        # window with no input element.
        pool("MaxPool", pad_input(x, _NEG_FLT_MAX), ctx.outputs[0], "maxpool")
    elif unit.method == methods.AVE:
        divisor = _ave_divisors(out, kernel, unit.stride, pad, size)
        factor = math.prod(kernel) / divisor
        exact = np.all(factor == 1)
        # AveragePool divides by the full window; Caffe divides by the window clipped to
        # size + pad: multiply by kernel area / Caffe's divisor where they differ.
        y = pool("AveragePool", pad_input(x, 0.0), ctx.outputs[0] if exact else None,
                 "avgpool")
        if not exact:
            ctx.op("Mul", [y, ctx.const("divisor_factor", factor[None, None])], ctx.outputs[0],
                   "divisor")
    else:
        # Activation-weighted mean sum(x^2) / sum(x), 0 where a window sums to <= 0; the two
        # window means share their divisor, so their ratio is the ratio of the sums.
        padded = pad_input(x, 0.0)
        squares = ctx.op("Mul", [padded, padded], label="squares")
        mean = pool("AveragePool", padded, None, "mean")
        mean_sq = pool("AveragePool", squares, None, "mean_squares")
        positive = ctx.op("Greater", [mean, ctx.scalar("zero", 0.0)], label="positive")
        safe = ctx.op("Where", [positive, mean, ctx.scalar("one", 1.0)], label="safe")
        ratio = ctx.op("Div", [mean_sq, safe], label="ratio")
        ctx.op("Where", [positive, ratio, ctx.scalar("zero_out", 0.0)], ctx.outputs[0],
               "select")


def _ave_divisors(out, kernel, stride, pad, size):
    """Caffe's AVE pool_size per output position, (out_h, out_w) float32."""
    vision = _vision()
    rows, cols = (vision._ave_divisor(o, k, s, p, n).numpy() for o, k, s, p, n in
                  zip(out, kernel, stride, pad, size))
    return (rows[:, None] * cols[None, :]).astype(np.float32)


@converter("LRN", check=lambda layer: None if len(layer.bottom_shapes[0]) == 4 else
           "Caffe's LRN needs (N, C, H, W)")
def _lrn(ctx):
    unit, x = ctx.unit, ctx.inputs[0]
    if unit.across:
        ctx.op("LRN", [x], ctx.outputs[0], size=unit.size, alpha=float(unit.alpha),
               beta=float(unit.beta), bias=float(unit.k))
        return
    # WITHIN_CHANNEL: Caffe composes AVE pooling (kernel n, pad (n-1)/2, stride 1: every
    # divisor is n^2 for odd n) and Power (1 + alpha * mean)^-beta; k is not used.
    squares = ctx.op("Mul", [x, x], label="squares")
    p = unit.pre_pad
    mean = ctx.op("AveragePool", [squares], label="mean", kernel_shape=[unit.size] * 2,
                  strides=[1, 1], pads=[p, p, p, p], count_include_pad=1)
    scaled = ctx.op("Mul", [mean, ctx.scalar("alpha", unit.alpha)], label="alpha")
    scale = ctx.op("Add", [scaled, ctx.scalar("one", 1.0)], label="scale")
    factor = ctx.op("Pow", [scale, ctx.scalar("neg_beta", -unit.beta)], label="factor")
    ctx.op("Mul", [x, factor], ctx.outputs[0], "normalize")


@converter("InnerProduct")
def _inner_product(ctx):
    unit = ctx.unit
    rank = len(ctx.bottom_shape(0))
    x = ctx.inputs[0]
    two_dim = unit.axis == 1 and rank == 2 and len(ctx.top_shape()) == 2
    if not two_dim:
        # Flatten gives (prod(axes before axis), prod(the rest)), as Caffe's M x K view.
        x = ctx.op("Flatten", [x], label="flatten", axis=unit.axis)
    inputs = [x, ctx.blob(0, "weight")]
    if unit.bias_term:
        inputs.append(ctx.blob(1, "bias"))
    # Caffe's weight is (N, K), or (K, N) with transpose: Gemm reads either layout as stored.
    y = ctx.op("Gemm", inputs, ctx.outputs[0] if two_dim else None, "gemm",
               transB=0 if unit.transpose else 1)
    if not two_dim:
        ctx.reshape_to_top(y)


@converter("Embed")
def _embed(ctx):
    """Row int(x) of the weight; index -1 (LRCN's padding) reads a zero row (the bias is still
    added). Caffe's static_cast<int> truncates toward zero; ONNX leaves Cast's rounding of
    fractions unspecified, so truncate first: sign(x) * floor(|x|)."""
    unit, x = ctx.unit, ctx.inputs[0]
    magnitude = ctx.op("Floor", [ctx.op("Abs", [x])], label="floor")
    truncated = ctx.op("Mul", [ctx.op("Sign", [x]), magnitude], label="trunc")
    index = ctx.op("Cast", [truncated], label="index", to=TensorProto.INT64)
    padding = ctx.op("Equal", [index, ctx.const("padding_index", np.int64(unit.PADDING_INDEX),
                                                np.int64)], label="is_padding")
    safe = ctx.op("Max", [index, ctx.const("zero_index", np.int64(0), np.int64)], label="clamp")
    rows = ctx.op("Gather", [ctx.blob(0, "weight"), safe], label="gather", axis=0)
    keep = ctx.op("Cast", [ctx.op("Not", [padding], label="keep")], label="keep_mask",
                  to=TensorProto.FLOAT)
    mask = ctx.unsqueeze(keep, [-1], label="mask")
    if unit.bias_term:
        masked = ctx.op("Mul", [rows, mask], label="masked")
        ctx.op("Add", [masked, ctx.blob(1, "bias")], ctx.outputs[0], "bias")
    else:
        ctx.op("Mul", [rows, mask], ctx.outputs[0], "masked")


@converter("BatchNorm")
def _batch_norm(ctx):
    unit, x = ctx.unit, ctx.inputs[0]
    shape = ctx.bottom_shape(0)
    if len(shape) == 1:
        # Caffe: a 1-axis bottom has one channel.
        x = ctx.reshape(x, (shape[0], 1), ctx.bottom_axis(0), label="as_2d")
    rank = max(len(shape), 2)
    if unit.use_global_stats:
        with torch.no_grad():
            mean, var = (t.detach().cpu().numpy().astype(np.float32)
                         for t in unit._global_stats())
        channels = len(mean)
        y = ctx.op("BatchNormalization",
                   [x, ctx.const("scale", np.ones(channels)), ctx.const("shift",
                                                                        np.zeros(channels)),
                    ctx.const("mean", mean), ctx.const("variance", var)],
                   ctx.outputs[0] if len(shape) > 1 else None, "batchnorm",
                   epsilon=float(unit.eps))
    else:
        # Batch statistics (biased variance), as the unit's forward computes them.
        axes = [d for d in range(rank) if d != 1]
        mean = ctx.reduce("ReduceMean", x, axes, 1, "mean")
        centred = ctx.op("Sub", [x, mean], label="centred")
        var = ctx.reduce("ReduceMean", ctx.op("Mul", [centred, centred], label="squares"),
                         axes, 1, "variance")
        std = ctx.op("Sqrt", [ctx.op("Add", [var, ctx.scalar("eps", unit.eps)], label="var_eps")],
                     label="std")
        y = ctx.op("Div", [centred, std], ctx.outputs[0] if len(shape) > 1 else None,
                   "normalize")
    if len(shape) == 1:
        ctx.reshape_to_top(y, label="as_1d")


def _broadcast_shape(blob_shape, rank, axis):
    """Shape of a blob covering axes axis.. of a rank-`rank` tensor, for ONNX's trailing
    broadcasting (leading singleton axes are implied)."""
    return tuple(blob_shape) + (1,) * (rank - axis - len(blob_shape))


def _canonical(axis, rank):
    return axis + rank if axis < 0 else axis


def _bottom_operand(ctx, index, role, axis_param):
    """Bottom `index` as a Scale / Bias operand, reshaped to broadcast from its axis (Caffe: a
    scalar operand broadcasts from axis 0)."""
    rank, shape = len(ctx.bottom_shape(0)), ctx.bottom_shape(index)
    target = _broadcast_shape(shape, rank, 0 if not shape else _canonical(axis_param, rank))
    if target == shape:
        return ctx.inputs[index]
    return ctx.reshape(ctx.inputs[index], target, ctx.bottom_axis(index), label=role)


def _blob_operand(ctx, blob_index, role, axis_param):
    """Learnable blob `blob_index` as a Scale / Bias operand, stored broadcastable."""
    rank, shape = len(ctx.bottom_shape(0)), tuple(ctx.unit.blobs[blob_index].shape)
    target = _broadcast_shape(shape, rank, 0 if not shape else _canonical(axis_param, rank))
    return ctx.blob(blob_index, role, target or (1,))


@converter("Scale")
def _scale(ctx):
    unit = ctx.unit
    scale = (_bottom_operand(ctx, 1, "scale", unit.axis) if unit.scale_bottom else
             _blob_operand(ctx, 0, "scale", unit.axis))
    if not unit.bias_term:
        ctx.op("Mul", [ctx.inputs[0], scale], ctx.outputs[0], "scale")
        return
    scaled = ctx.op("Mul", [ctx.inputs[0], scale], label="scale")
    bias = _blob_operand(ctx, len(unit.blobs) - 1, "bias", unit.axis)
    ctx.op("Add", [scaled, bias], ctx.outputs[0], "bias")


@converter("Bias")
def _bias(ctx):
    unit = ctx.unit
    bias = (_bottom_operand(ctx, 1, "bias", unit.axis) if unit.bias_bottom else
            _blob_operand(ctx, 0, "bias", unit.axis))
    ctx.op("Add", [ctx.inputs[0], bias], ctx.outputs[0], "bias")


@converter("MVN")
def _mvn(ctx):
    unit, x = ctx.unit, ctx.inputs[0]
    shape = ctx.bottom_shape(0)
    axis = ctx.bottom_axis(0)
    leading = 1 if unit.across_channels or len(shape) < 2 else 2
    num = math.prod(shape[:leading])
    row = math.prod(shape[leading:])
    # One row per (n) or (n, c): the batch axis is in the row count or in the row itself.
    rows = ctx.reshape(x, (num, row), None if axis is None else (0 if axis < leading else 1),
                       label="rows")
    mean = ctx.reduce("ReduceMean", rows, [1], 1, "mean")
    centred = ctx.op("Sub", [rows, mean], label="centred")
    if unit.normalize_variance:
        var = ctx.reduce("ReduceMean", ctx.op("Mul", [centred, centred], label="squares"),
                         [1], 1, "variance")
        std = ctx.op("Add", [ctx.op("Sqrt", [var], label="std"), ctx.scalar("eps", unit.eps)],
                     label="std_eps")
        centred = ctx.op("Div", [centred, std], label="normalize")
    ctx.reshape_to_top(centred)


@converter("Crop")
def _crop(ctx):
    unit = ctx.unit
    reference = ctx.bottom_shape(1)
    axes = list(range(unit.axis, unit.axis + len(unit.offsets)))
    if ctx.bottom_axis(0) in axes:
        raise Unsupported("it crops the batch axis, which --dynamic-batch makes symbolic")
    ctx.slice(ctx.inputs[0], list(unit.offsets),
              [o + reference[a] for o, a in zip(unit.offsets, axes)], axes, out=ctx.outputs[0])


def _spp_check(layer):
    if layer.param.spp_param.pool == caffe_pb2.SPPParameter.STOCHASTIC and \
            layer.phase == "TRAIN":
        return "STOCHASTIC pooling in TRAIN samples at random; export the TEST phase"
    return None


@converter("SPP", check=_spp_check)
def _spp(ctx):
    """Each pyramid level through the Pooling converter (its unit is one of SPP's levels),
    flattened to (N, C * bins) and concatenated on axis 1; one level stays unflattened."""
    levels = ctx.unit.levels
    flat = []
    for i, level in enumerate(levels):
        layer = copy.copy(level.layer)
        layer.key = f"{ctx.key}/level{i}"
        out = ctx.outputs[0] if len(levels) == 1 else ctx._temp(f"level{i}")
        _pooling(_LayerExport(ctx.graph, layer, level, ctx.inputs, [out], ctx.dynamic, None,
                              ctx.doc))
        if len(levels) > 1:
            shape = level.layer.top_shapes[0]
            flat.append(ctx.reshape(out, (shape[0], math.prod(shape[1:])), ctx.bottom_axis(0),
                                    label=f"flatten{i}"))
    if flat:
        ctx.op("Concat", flat, ctx.outputs[0], axis=1)


@converter("Im2col", check=_conv_check)
def _im2col(ctx):
    """A grouped convolution with one-hot kernels: group c (input channel c) has one output
    channel per kernel offset k, c * K + k, whose kernel is 1 at k: Caffe's channel-major
    columns, zero padding included. Each output is one input times 1 plus the window's other
    inputs times 0, so it is exact for finite inputs (an inf elsewhere in the window makes
    NaN)."""
    unit = ctx.unit
    shape = ctx.bottom_shape(0)
    channels, kernel_size = shape[unit.axis], math.prod(unit.kernel)
    x = ctx.inputs[0]
    folded = unit.axis != 1
    if folded:
        # Axes before `axis` are batch-like: one N axis for ONNX, restored afterwards.
        axis = ctx.bottom_axis(0)
        x = ctx.reshape(x, (math.prod(shape[:unit.axis]),) + tuple(shape[unit.axis:]),
                        None if axis is None else 0, label="fold")
    one_hot = np.eye(kernel_size, dtype=np.float32).reshape((kernel_size, 1) +
                                                            tuple(unit.kernel))
    weight = ctx.const("one_hot", np.tile(one_hot, (channels,) + (1,) * (one_hot.ndim - 1)))
    y = ctx.op("Conv", [x, weight], None if folded else ctx.outputs[0],
               kernel_shape=list(unit.kernel), strides=list(unit.stride),
               pads=list(unit.pad) * 2, dilations=list(unit.dilation), group=channels)
    if folded:
        ctx.reshape_to_top(y, label="unfold")


# ---------------------------------------------------------------------------------------------
# Converters: structural layers


@converter("Reshape", "Flatten")
def _reshape(ctx):
    ctx.reshape_to_top(ctx.inputs[0])


@converter("Parameter")
def _parameter(ctx):
    ctx.identity(ctx.blob(0, "blob"), ctx.outputs[0])


@converter("BatchReindex")
def _batch_reindex(ctx):
    """Gather on axis 0 at the index cast to int64 (Cast truncates toward zero, as Caffe's
    static_cast<int> does). The net refuses an index outside [0, N); Gather counts one in
    [-N, 0) from the end and refuses the rest."""
    index = ctx.op("Cast", [ctx.inputs[1]], label="index", to=TensorProto.INT64)
    ctx.op("Gather", [ctx.inputs[0], index], ctx.outputs[0], axis=0)


@converter("Split")
def _split(ctx):
    for out in ctx.outputs:
        ctx.node("Identity", ctx.inputs, [out], label=out.replace("/", "_"))


def _slice_sizes(unit, size):
    if unit.points:
        bounds = [0] + list(unit.points) + [size]
        return [b - a for a, b in zip(bounds[:-1], bounds[1:])]
    return [size // unit.num_tops] * unit.num_tops


@converter("Slice")
def _slice(ctx):
    shape = ctx.bottom_shape(0)
    axis = _canonical(ctx.unit.axis, len(shape))
    if ctx.bottom_axis(0) == axis:
        raise Unsupported("it slices the batch axis, which --dynamic-batch makes symbolic")
    if len(ctx.outputs) == 1:
        ctx.identity(ctx.inputs[0], ctx.outputs[0])
        return
    ctx.split(ctx.inputs[0], _slice_sizes(ctx.unit, shape[axis]), axis, ctx.outputs)


@converter("Concat")
def _concat(ctx):
    if len(ctx.inputs) == 1:
        ctx.identity(ctx.inputs[0], ctx.outputs[0])
        return
    axis = _canonical(ctx.unit.axis, len(ctx.bottom_shape(0)))
    ctx.op("Concat", ctx.inputs, ctx.outputs[0], axis=axis)


@converter("Eltwise")
def _eltwise(ctx):
    ops = caffe_pb2.EltwiseParameter
    unit = ctx.unit
    if unit.op == ops.MAX:
        ctx.op("Max", ctx.inputs, ctx.outputs[0])
        return
    if unit.op == ops.PROD:
        _chain(ctx, "Mul", ctx.inputs, "prod")
        return
    if unit.coeff_blob:
        _eltwise_coeff_blob(ctx)
        return
    terms = [x if c == 1 else ctx.op("Mul", [x, ctx.scalar(f"coeff{i}", c)], label=f"term{i}")
             for i, (c, x) in enumerate(zip(unit.coeffs, ctx.inputs))]
    _chain(ctx, "Add", terms, "sum")


def _chain(ctx, op_type, values, label):
    """Fold values left to right with a binary op (Caffe's order of accumulation)."""
    acc = values[0]
    for k, value in enumerate(values[1:], 1):
        acc = ctx.op(op_type, [acc, value], ctx.outputs[0] if k == len(values) - 1 else None,
                     f"{label}{k}")


def _eltwise_coeff_blob(ctx):
    """LRCN fork: the last bottom C (K, ...) scales each of the K others, C[i] viewed as `num`
    entries multiplying bottom i viewed as (num, count / num)."""
    inputs, blob = ctx.inputs[:-1], ctx.inputs[-1]
    if any(ctx.bottom_axis(i) is not None for i in range(len(ctx.inputs))):
        raise Unsupported("coeff_blob with --dynamic-batch is not supported")
    k = len(inputs)
    shape = ctx.bottom_shape(0)
    num = math.prod(ctx.bottom_shape(k)) // k
    per_input = ctx.reshape(blob, (k, num, 1), None, label="coeff_rows")
    terms = []
    for i, (coeff, x) in enumerate(zip(ctx.unit.coeffs, inputs)):
        weights = ctx.op("Gather", [per_input, ctx.const(f"index{i}", np.int64(i), np.int64)],
                         label=f"coeff{i}", axis=0)
        if coeff != 1:
            weights = ctx.op("Mul", [weights, ctx.scalar(f"scale{i}", coeff)], label=f"scaled{i}")
        rows = ctx.reshape(x, (num, math.prod(shape) // num), None, label=f"rows{i}")
        terms.append(ctx.op("Mul", [rows, weights], label=f"term{i}"))
    acc = terms[0]
    for j, term in enumerate(terms[1:], 1):
        acc = ctx.op("Add", [acc, term], label=f"sum{j}")
    ctx.reshape(acc, shape, None, ctx.outputs[0], "restore")


@converter("Tile")
def _tile(ctx):
    rank = len(ctx.bottom_shape(0))
    axis = _canonical(ctx.unit.axis, rank)
    # Caffe repeats the whole block from `axis` on: repeat `axis` after merging the later
    # axes into it, then restore the top's shape.
    shape = ctx.bottom_shape(0)
    merged = tuple(shape[:axis]) + (math.prod(shape[axis:]),)
    batch = ctx.bottom_axis(0)
    x = ctx.reshape(ctx.inputs[0], merged, None if batch is None else min(batch, axis),
                    label="merge")
    repeats = [1] * len(merged)
    repeats[axis] = ctx.unit.tiles
    y = ctx.op("Tile", [x, ctx.ints("repeats", repeats)], label="tile")
    ctx.reshape_to_top(y, label="restore")


@converter("ArgMax")
def _argmax(ctx):
    """Caffe's order: values descending, equal values by index descending. TopK keeps equal
    values in index order, so run it on the reversed axis and map the indices back."""
    unit, x = ctx.unit, ctx.inputs[0]
    shape = ctx.bottom_shape(0)
    if unit.axis is not None:
        axis = _canonical(unit.axis, len(shape))
    else:
        x = ctx.op("Flatten", [x], label="flatten", axis=1)
        axis = 1
    size = shape[axis] if unit.axis is not None else math.prod(shape[1:])
    reversed_x = ctx.slice(x, [-1], [-sys.maxsize - 1], [axis], [-1], label="reverse")
    values, order = ctx.node("TopK", [reversed_x, ctx.ints("k", [unit.top_k])], 2, "topk",
                             axis=axis, largest=1, sorted=1)
    index = ctx.op("Sub", [ctx.const("last", np.int64(size - 1), np.int64), order],
                   label="index")
    index = ctx.op("Cast", [index], label="index_float", to=TensorProto.FLOAT)
    if unit.axis is not None:
        ctx.identity(values if unit.out_max_val else index, ctx.outputs[0])
        return
    parts = [ctx.unsqueeze(index, [1], label="index_row")]
    if unit.out_max_val:
        parts.append(ctx.unsqueeze(values, [1], label="value_row"))
    stacked = ctx.op("Concat", parts, label="stack", axis=1) if len(parts) > 1 else parts[0]
    ctx.reshape_to_top(stacked)


@converter("Reduction")
def _reduction(ctx):
    ops = caffe_pb2.ReductionParameter
    unit, x = ctx.unit, ctx.inputs[0]
    rank = len(ctx.bottom_shape(0))
    axes = list(range(_canonical(unit.axis, rank), rank))
    if unit.op == ops.ASUM:
        x = ctx.op("Abs", [x])
    elif unit.op == ops.SUMSQ:
        x = ctx.op("Mul", [x, x], label="squares")
    reduce_op = "ReduceMean" if unit.op == ops.MEAN else "ReduceSum"
    if not axes:     # nothing to reduce (axis past the last): Caffe's top is the bottom
        y = x
    else:
        y = ctx.reduce(reduce_op, x, axes, 0, "reduce")
    if unit.coeff != 1:
        ctx.op("Mul", [y, ctx.scalar("coeff", unit.coeff)], ctx.outputs[0], "coeff")
    else:
        ctx.identity(y, ctx.outputs[0])


@converter("Softmax")
def _softmax(ctx):
    axis = _canonical(ctx.unit.axis, len(ctx.bottom_shape(0)))
    ctx.op("Softmax", ctx.inputs, ctx.outputs[0], axis=axis)


# ---------------------------------------------------------------------------------------------
# Converters: recurrent layers


def _recurrent_states(ctx, names):
    """The initial states as (N, H) values: exposed bottoms (expose_hidden), explicit graph
    inputs (step mode), or None for zeros (the first step then skips the recurrent terms,
    which is exact: cont * 0 = 0)."""
    unit, layer = ctx.unit, ctx.layer
    if unit.expose_hidden:
        first = 2 + int(unit.static_input)
        return [ctx.squeeze(ctx.inputs[first + k], [0], label=f"{name}0")
                for k, name in enumerate(names)]
    if ctx.step_states is None:
        return [None] * len(names)
    states = []
    for name in names:
        x_axis, x_label = ctx.dynamic.dim(layer.bottoms[0])
        state = _State(f"{layer.key}.{name}0", f"{layer.key}.{name}T",
                       (1, layer.bottom_shapes[0][1], unit.H),
                       (1, x_label) if x_axis is not None else (None, None))
        ctx.graph.values.update((state.input, state.output))
        ctx.step_states[f"{layer.key}.{name}"] = state
        states.append(ctx.squeeze(state.input, [0], label=f"{name}0"))
    return states


def _final_state_outputs(ctx, names):
    """Where the final states go: exposed tops, step-mode graph outputs, or nowhere."""
    if ctx.unit.expose_hidden:
        return ctx.outputs[1:1 + len(names)]
    if ctx.step_states is not None:
        return [ctx.step_states[f"{ctx.layer.key}.{name}"].output for name in names]
    return [None] * len(names)


def _input_gates(ctx, gate_rows, W_role, b_role, static_role):
    """W x_t + b for all T steps (one Gemm), plus the static term: (T, N, rows)."""
    x_shape = ctx.bottom_shape(0)
    T = x_shape[0]
    flat = ctx.reshape(ctx.inputs[0], (-1, math.prod(x_shape[2:])), None, label="x_rows")
    gx = ctx.op("Gemm", [flat, ctx.blob(0, W_role), ctx.blob(1, b_role)], label="x_gemm",
                transB=1)
    gx = ctx.reshape(gx, (T, -1, gate_rows), None, label="x_gates")
    if ctx.unit.static_input:
        static_shape = ctx.bottom_shape(2)
        xs = ctx.reshape(ctx.inputs[2], (-1, math.prod(static_shape[1:])), None,
                         label="static_rows")
        static = ctx.op("Gemm", [xs, ctx.blob(2, static_role)], label="static_gemm", transB=1)
        gx = ctx.op("Add", [gx, static], label="gates_static")
    return gx


def _per_step(ctx, gx, T):
    """gx (T, N, R) and cont (T, N) -> per-step (N, R) gates and (N, 1) cont values."""
    if T == 1:
        steps = [gx]
    else:
        steps = ctx.split(gx, [1] * T, 0, label="steps")
    steps = [ctx.squeeze(s, [0], label=f"t{t}/x_gates") for t, s in enumerate(steps)]
    cont = ctx.op("Transpose", [ctx.inputs[1]], label="cont_columns", perm=[1, 0])
    conts = [cont] if T == 1 else ctx.split(cont, [1] * T, 1, label="cont_steps")
    return steps, conts


def _stack_steps(ctx, hs, out):
    rows = [ctx.unsqueeze(h, [0], out if len(hs) == 1 else None, f"t{t}/h_row")
            for t, h in enumerate(hs)]
    if len(rows) > 1:
        ctx.op("Concat", rows, out, "stack", axis=0)


def _recurrent_check(layer):
    if len(layer.bottom_shapes[1]) != 2:
        return "cont must be (T, N)"
    return None


@converter("LSTM", check=_recurrent_check)
def _lstm(ctx):
    """Caffe's LSTM unrolled over T: a_t = W_hc (cont_t h_{t-1}) + W_xc x_t + b_c (+ static),
    gates [i | f | o | g], c_t = cont_t f c_{t-1} + i g, h_t = o tanh(c_t)."""
    unit = ctx.unit
    H, T = unit.H, ctx.bottom_shape(0)[0]
    gx = _input_gates(ctx, 4 * H, "W_xc", "b_c", "W_xc_static")
    W_hc = ctx.blob(3 if unit.static_input else 2, "W_hc")
    steps, conts = _per_step(ctx, gx, T)
    h, c = _recurrent_states(ctx, ("h", "c"))
    hs = []
    for t in range(T):
        p = f"t{t}/"
        if h is None:
            a = steps[t]
        else:
            kept = ctx.op("Mul", [h, conts[t]], label=p + "h_cont")
            a = ctx.op("Gemm", [kept, W_hc, steps[t]], label=p + "gates", transB=1)
        i, f, o, g = ctx.split(a, [H] * 4, 1, label=p + "ifog")
        i = ctx.op("Sigmoid", [i], label=p + "i")
        o = ctx.op("Sigmoid", [o], label=p + "o")
        g = ctx.op("Tanh", [g], label=p + "g")
        ig = ctx.op("Mul", [i, g], label=p + "i_g")
        if c is None:
            c = ig
        else:
            f = ctx.op("Sigmoid", [f], label=p + "f")
            f_cont = ctx.op("Mul", [f, conts[t]], label=p + "f_cont")
            c = ctx.op("Add", [ctx.op("Mul", [f_cont, c], label=p + "f_c"), ig], label=p + "c")
        h = ctx.op("Mul", [o, ctx.op("Tanh", [c], label=p + "tanh_c")], label=p + "h")
        hs.append(h)
    _stack_steps(ctx, hs, ctx.outputs[0])
    for final, out, label in zip((h, c), _final_state_outputs(ctx, ("h", "c")), ("hT", "cT")):
        if out is not None:
            ctx.unsqueeze(final, [0], out, label=label)


@converter("RNN", check=_recurrent_check)
def _rnn(ctx):
    """Caffe's RNN unrolled over T: h_t = tanh(W_hh (cont_t h_{t-1}) + W_xh x_t + b_h
    (+ static)), o_t = tanh(W_ho h_t + b_o)."""
    unit = ctx.unit
    H, T = unit.H, ctx.bottom_shape(0)[0]
    first = 3 if unit.static_input else 2
    gx = _input_gates(ctx, H, "W_xh", "b_h", "W_xh_static")
    W_hh = ctx.blob(first, "W_hh")
    steps, conts = _per_step(ctx, gx, T)
    (h,) = _recurrent_states(ctx, ("h",))
    hs = []
    for t in range(T):
        p = f"t{t}/"
        if h is None:
            a = steps[t]
        else:
            kept = ctx.op("Mul", [h, conts[t]], label=p + "h_cont")
            a = ctx.op("Gemm", [kept, W_hh, steps[t]], label=p + "a", transB=1)
        h = ctx.op("Tanh", [a], label=p + "h")
        hs.append(h)
    stacked = ctx._temp("h_all")
    _stack_steps(ctx, hs, stacked)
    rows = ctx.reshape(stacked, (-1, H), None, label="h_rows")
    o = ctx.op("Gemm", [rows, ctx.blob(first + 1, "W_ho"), ctx.blob(first + 2, "b_o")],
               label="o_gemm", transB=1)
    o = ctx.op("Tanh", [o], label="o")
    ctx.reshape(o, (T, -1, H), None, ctx.outputs[0], "o_steps")
    (out,) = _final_state_outputs(ctx, ("h",))
    if out is not None:
        ctx.unsqueeze(h, [0], out, label="hT")


@converter("LSTMUnit")
def _lstm_unit(ctx):
    """c = cont f c_prev + i g, h = o tanh(c) for (1, N, .) blobs; tops c, h."""
    c_prev, x, cont = ctx.inputs
    H = ctx.bottom_shape(0)[2]
    i, f, o, g = ctx.split(x, [H] * 4, 2, label="ifog")
    i, f, o = (ctx.op("Sigmoid", [v], label=n) for v, n in ((i, "i"), (f, "f"), (o, "o")))
    g = ctx.op("Tanh", [g], label="g")
    cont = ctx.unsqueeze(cont, [2], label="cont")
    f_cont = ctx.op("Mul", [f, cont], label="f_cont")
    c = ctx.op("Add", [ctx.op("Mul", [f_cont, c_prev], label="f_c"),
                       ctx.op("Mul", [i, g], label="i_g")], ctx.outputs[0], "c")
    ctx.op("Mul", [o, ctx.op("Tanh", [c], label="tanh_c")], ctx.outputs[1], "h")


# ---------------------------------------------------------------------------------------------
# Verification against runtime.Net in onnxruntime

# Pass criterion per output: max |onnx - net| <= RTOL * max |net|, i.e. 1e-4 relative for the
# largest values and an absolute floor of RTOL times the output's largest magnitude for the
# values near zero (float32 sums that cancel carry errors of the size of their terms, not of
# their result, so element-wise relative error means nothing there). An all-zero output must
# match exactly. Measured on the corpus's deploy nets with fan-in-scaled random weights the
# worst blob is at 1.3e-5 (an LSTM after six conv / fc layers), most below 4e-6.
RTOL = 1e-4


# Layers through which a blob keeps its role (indices, cont markers) unchanged in value.
_VALUE_PRESERVING = ("Reshape", "Flatten", "Split", "Slice", "Concat", "Dropout")


def input_kinds(compiled):
    """{input blob: ("index", input_dim) | ("cont",) | ("real",)}, from how the net reads it:
    an Embed bottom holds indices (and a BatchReindex bottom 1, rows of its bottom 0), an
    LSTM / RNN bottom 1 (LSTMUnit bottom 2) cont markers;
    Reshape, Slice, Concat, ... in between keep the role."""
    roles = {}
    for layer in compiled.layers:
        if layer.type == "Embed":
            dim = layer.param.embed_param.input_dim
            previous = roles.get(layer.bottoms[0], ("index", dim))
            roles[layer.bottoms[0]] = ("index", min(dim, previous[1]) if previous[0] == "index"
                                       else dim)
        elif layer.type in _RECURRENT_TYPES:
            roles[layer.bottoms[1]] = ("cont",)
        elif layer.type == "LSTMUnit":
            roles[layer.bottoms[2]] = ("cont",)
        elif layer.type == "BatchReindex":
            roles[layer.bottoms[1]] = ("index", layer.bottom_shapes[0][0])
    for layer in reversed(compiled.layers):
        if layer.type not in _VALUE_PRESERVING:
            continue
        for top in layer.tops:
            if top in roles:
                for bottom in layer.bottoms:
                    roles.setdefault(bottom, roles[top])
    return {name: roles.get(compiled.latest.get(name, name), ("real",))
            for name in compiled.inputs}


def random_inputs(compiled, rng, kinds=None):
    """float32 arrays for every input: indices in [0, input_dim), cont 0/1 (mostly 1, so that
    sequences run on; 0 restarts them), N(0, 1) otherwise."""
    kinds = kinds or input_kinds(compiled)
    feeds = {}
    for name in compiled.inputs:
        shape = compiled.blobs[compiled.latest.get(name, name)]
        kind = kinds[name]
        if kind[0] == "index":
            value = rng.integers(0, kind[1], size=shape)
        elif kind[0] == "cont":
            value = rng.random(size=shape) < 0.7
        else:
            value = rng.standard_normal(size=shape)
        feeds[name] = np.asarray(value, dtype=np.float32)
    return feeds


@dataclass
class OutputDiff:
    """The largest differences of one output over the compared calls."""
    name: str
    shape: tuple
    max_abs: float = 0.0      # max |onnx - net|
    max_rel: float = 0.0      # max |onnx - net| / max |net|, per call
    scale: float = 0.0        # max |net|

    @property
    def passed(self):
        return self.max_rel <= RTOL

    def update(self, actual, expected):
        actual = np.asarray(actual, dtype=np.float64)
        expected = np.asarray(expected, dtype=np.float64)
        if actual.shape != expected.shape:
            self.max_abs = self.max_rel = math.inf
            return
        if expected.size == 0:
            return
        # Equal values (the same infinities, Caffe's -FLT_MAX) differ by nothing; a NaN on
        # one side only is an infinite difference.
        same = (actual == expected) | (np.isnan(actual) & np.isnan(expected))
        with np.errstate(invalid="ignore"):     # inf - inf where only one side is inf
            diff = np.where(same, 0.0, np.abs(actual - expected))
        diff = float(np.where(np.isnan(diff), math.inf, diff).max())
        finite = np.abs(expected[np.isfinite(expected)])
        scale = float(finite.max()) if finite.size else 0.0
        rel = diff / scale if scale > 0 else (0.0 if diff == 0 else math.inf)
        self.max_abs = max(self.max_abs, diff)
        self.max_rel = max(self.max_rel, rel)
        self.scale = max(self.scale, scale)


def state_pairs(model, net):
    """Step-mode states of an exported model: {input name: output name}."""
    names = {i.name for i in model.graph.input} - set(net.inputs)
    return {name: name[:-1] + "T" for name in sorted(names)}


def onnx_session(model):
    onnxruntime = require("onnxruntime", "running an ONNX model")
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(model.SerializeToString(), options,
                                        providers=["CPUExecutionProvider"])


def with_blob_outputs(model, names):
    """A copy of `model` that also outputs the values `names` (blobs), for verify(blobs=True)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    present = {o.name for o in copy.graph.output}
    copy.graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
                             for name in names if name not in present)
    return copy


def verify(model, net, seed=0, steps=1, session=None, blobs=False):
    """Run `model` in onnxruntime and `net` (from zero recurrent state) on the same random
    inputs for `steps` consecutive calls, carrying the step-mode states of the model from call
    to call as the net carries its own. Returns one OutputDiff per net output (the largest
    differences over all calls); with `blobs`, per blob (its last version, as pycaffe's
    net.blobs shows it) for every blob the net computes, outputs included."""
    compared = list(net.outputs)
    if blobs:
        inputs = set(net.inputs)
        compared += [name for name in net.blobs if name not in inputs and name not in compared]
        model = with_blob_outputs(model, compared)
        session = None
    session = session or onnx_session(model)
    rng = np.random.default_rng(seed)
    kinds = input_kinds(net.compiled)
    pairs = state_pairs(model, net)
    output_names = [o.name for o in session.get_outputs()]
    diffs = {name: OutputDiff(name, tuple(net.compiled.blobs[net.compiled.latest[name]]))
             for name in compared}
    states = None
    net.reset_state()
    for _ in range(steps):
        feeds = random_inputs(net.compiled, rng, kinds)
        if states is None:
            states = {name: np.zeros(_state_shape(net, name), np.float32) for name in pairs}
        with torch.no_grad():
            net.run({k: torch.from_numpy(v) for k, v in feeds.items()}, keep_all=blobs)
        results = dict(zip(output_names, session.run(None, {**feeds, **states})))
        for name, diff in diffs.items():
            diff.update(results[name], net.blobs[name].data)
        states = {name: results[out] for name, out in pairs.items()}
    return list(diffs.values())


def _state_shape(net, name):
    """(1, N, H) of the step-mode state input "<layer>.h0" for the batch `net` runs."""
    layer = net.compiled.layer(name.rsplit(".", 1)[0])
    return (1, net.compiled.blobs[layer.bottoms[0]][1], layer.param.recurrent_param.num_output)


def format_report(diffs):
    """The per-output table `--check` prints."""
    width = max([len(d.name) for d in diffs] + [6])
    lines = [f"{'output':<{width}}  {'shape':<20} {'max |diff|':>10} {'max |net|':>10} "
             f"{'relative':>9}  result"]
    for d in diffs:
        lines.append(f"{d.name:<{width}}  {str(d.shape):<20} {d.max_abs:>10.3g} {d.scale:>10.3g} "
                     f"{d.max_rel:>9.3g}  {'ok' if d.passed else 'FAIL'}")
    return "\n".join(lines)
