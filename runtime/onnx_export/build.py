"""The deployable net and the ONNX graph built from it, layer by layer through the registered
converters; the batch axis of every blob with --dynamic-batch."""

import math
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import compiler
from compiler import deploy
from compiler.deploy import input_batch_axes, rebatch
from compiler.errors import CompileError
from compiler.layer_types import RECURRENT, has_trait

from .registry import _CONVERTERS, Unsupported, _check_types, _unsupported, check_exportable


DEFAULT_OPSET = 17
# Opset 13 is the first with Softmax over one axis and axes / split as inputs, which the
# converters rely on; the newest is what the installed onnx package knows.
MIN_OPSET = 13
MAX_OPSET = onnx.defs.onnx_opset_version()

# The dimension name of the batch axis with --dynamic-batch.
BATCH_DIM = "N"




def deployable(compiled):
    """The deployable part of a compiled net (compiler.deploy.deployable), refusing first a
    layer type no converter can express."""
    return deploy.deployable(compiled, check_layers=_check_types)


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
    if step and not any(has_trait(layer.type, RECURRENT)
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
        if has_trait(layer.type, RECURRENT) and dynamic.axis(layer.bottoms[0]) == 0:
            raise CompileError(f"--dynamic-batch: layer '{layer.name}' ({layer.type}): the batch "
                               "axis found is its time axis T, which an unrolled export fixes",
                               *layer.location, hint="export without --dynamic-batch")
    return dynamic
