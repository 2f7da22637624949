"""Compiler passes over a compiled net: its deployable part, and the same net at another batch.

Each pass rewrites the net's definition (a NetParameter) and compiles it again, so what it
returns is an ordinary CompiledNet that every tool can use (runtime.Net builds it, the ONNX
exporter converts it). The rewritten layers keep the places they were written at, so an error
in the second compilation points into the user's file.
"""

from collections import namedtuple
from dataclasses import dataclass, field

from lrcn_proto import caffe_pb2

from .errors import CompileError
from .graph import compile_net
from .layer_types import (LOSS, METRIC, RECURRENT, SINK, TIME_MAJOR_FROM_AXIS_2,
                          TIME_MAJOR_PASSTHROUGH, has_trait)
from .schema import Document


@dataclass
class Deployable:
    """A CompiledNet reduced to what an inference graph holds, with notes on what changed."""
    compiled: object
    notes: list = field(default_factory=list)
    net: object = None          # the NetParameter `compiled` was compiled from


def is_data_layer(layer):
    return not layer.bottoms and bool(layer.tops) and layer.type not in ("Input", "Parameter")


def _dropped_kind(layer):
    if has_trait(layer.type, SINK):
        return "sink layer"
    if has_trait(layer.type, METRIC):
        return "metric layer"
    if has_trait(layer.type, LOSS) or any(w != 0 for w in layer.loss_weights):
        return "loss layer"
    return None


def deployable(compiled, check_layers=None):
    """The inference part of a compiled net, compiled again from its rewritten definition.

    Data layers become Input layers (same name, same tops, the compiled shapes); loss, metric
    and sink layers are dropped, as is every layer that reads one of their tops. The outputs
    are the net's own outputs that survive plus the blobs a dropped loss / metric layer read
    that depend on learnt weights (its predictions, not its labels). Layers and data tops no
    output depends on are pruned (labels and what reshapes them). `check_layers(layers)`, when
    given, sees the compute layers kept before anything is rewritten (the ONNX exporter refuses
    types it cannot convert there).
    """
    producer = {top: layer for layer in compiled.layers for top in layer.tops}
    dropped, notes = set(), []
    for layer in compiled.layers:
        reason = _dropped_kind(layer)
        if reason is None and any(producer[b].key in dropped for b in layer.bottoms):
            reason = "reads a dropped layer's top"
        if reason:
            dropped.add(layer.key)
            notes.append(f"dropped {reason} '{layer.name}' ({layer.type})")
    # An input nobody reads is an output in Caffe; an inference graph has no use for it.
    wanted = [compiled.latest[name] for name in compiled.outputs
              if producer[compiled.latest[name]].key not in dropped
              and not is_data_layer(producer[compiled.latest[name]])
              and producer[compiled.latest[name]].type != "Input"]
    # Predictions depend on learnt weights; labels (even reshaped ones) do not.
    # (Unknown parameter shapes, None, may be weights: the shapes are asked for below.)
    learnt = set()
    for layer in compiled.layers:
        weights = layer.param_shapes or (layer.param_shapes is None
                                         and not is_data_layer(layer))
        if weights or learnt.intersection(layer.bottoms):
            learnt.update(layer.tops)
    for layer in compiled.layers:
        if layer.key in dropped and _dropped_kind(layer) in ("loss layer", "metric layer"):
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
    if check_layers is not None:
        check_layers([layer for layer in kept if not is_data_layer(layer)])
    params = [_as_input(layer, needed, notes)
              if is_data_layer(layer) or layer.type == "Input" else layer.param
              for layer in kept]
    name_of = {top: name for layer in kept for name, top in zip(layer.top_names, layer.tops)}
    outputs = [name_of[version] for version in wanted]
    net = _net_of(compiled, params)
    return Deployable(_recompile(compiled, net, kept, outputs), notes, net)


def _as_input(layer, needed, notes):
    """An Input layer for a data layer (or an Input layer) holding only the tops in use, at
    their compiled shapes."""
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
    # The compiled shapes, which input_shapes may have given rather than the file.
    param = caffe_pb2.LayerParameter(name=layer.name, type="Input",
                                     top=[layer.top_names[j] for j in keep])
    param.phase = layer.param.phase
    for j in keep:
        param.input_param.shape.add(dim=list(layer.top_shapes[j]))
    return param


# --- the batch size ----------------------------------------------------------------------------

def _time_major_inputs(compiled):
    """Input blobs laid out (T, N, ...): read as x or cont by an LSTM / RNN, or by LSTMUnit
    (1, N, ...), directly or through layers that keep the leading axes (element-wise layers,
    Embed, InnerProduct / Concat / Slice on axis >= 2)."""
    marked = set()
    for layer in compiled.layers:
        if has_trait(layer.type, RECURRENT):
            marked.update(layer.bottoms[:2])
        elif layer.type == "LSTMUnit":
            marked.update(layer.bottoms)
    for layer in reversed(compiled.layers):
        if not marked.intersection(layer.tops):
            continue
        if has_trait(layer.type, TIME_MAJOR_PASSTHROUGH) or (
                has_trait(layer.type, TIME_MAJOR_FROM_AXIS_2) and layer.attrs.axis >= 2):
            marked.update(layer.bottoms)
    return {name for name in compiled.inputs if name in marked}


def input_batch_axes(compiled):
    """{input blob: its batch axis}: 1 for time-major inputs of recurrent layers, else 0."""
    time_major = _time_major_inputs(compiled)
    return {name: 1 if name in time_major else 0 for name in compiled.inputs}


def rebatch(compiled, extra=1):
    """The net (a deployable one: its data comes from Input layers) compiled again with every
    input's batch axis `extra` larger. A CompileError at the layer that fixes the batch size
    says it cannot vary."""
    axes = input_batch_axes(compiled)
    params = []
    for layer in compiled.layers:
        param = layer.param
        if layer.type == "Input":
            param = caffe_pb2.LayerParameter()
            param.CopyFrom(layer.param)
            for shape_message, name, top in zip(param.input_param.shape, layer.top_names,
                                                layer.tops):
                shape = list(compiled.blobs[top])
                if axes[name] >= len(shape):
                    raise CompileError(f"--dynamic-batch: input '{name}' has no axis "
                                       f"{axes[name]} to vary", *layer.location)
                shape[axes[name]] += extra
                shape_message.ClearField("dim")
                shape_message.dim.extend(shape)
        params.append(param)
    try:
        other = _recompile(compiled, _net_of(compiled, params), compiled.layers,
                           compiled.outputs)
    except CompileError as error:
        raise CompileError(f"--dynamic-batch: the net does not take another batch size: "
                           f"{error.message}", error.file, error.line, error.col,
                           hint="the net fixes its batch size (e.g. a Reshape with explicit "
                                "dims); export without --dynamic-batch") from None
    for layer, again in zip(compiled.layers, other.layers):
        if list(again.param_shapes) != list(layer.param_shapes):
            raise CompileError(f"--dynamic-batch: layer '{layer.name}' ({layer.type}): its "
                               "weights' shapes depend on the batch size", *layer.location,
                               hint="export without --dynamic-batch")
    return other


# --- compiling a rewritten net ------------------------------------------------------------------

_Place = namedtuple("_Place", "line col")


def _net_of(compiled, layer_params):
    net = caffe_pb2.NetParameter(name=compiled.name)
    for param in layer_params:
        net.layer.add().CopyFrom(param)
    return net


def _recompile(compiled, net, layers, outputs):
    """Compile `net` (one layer per entry of `layers`, which give the places they were
    written at) for `compiled`'s NetState, with `outputs` as its outputs."""
    positions = {("layer", i): _Place(layer.location[1], layer.location[2])
                 for i, layer in enumerate(layers)
                 if layer.location and layer.location[1] is not None}
    document = Document(net, "net", compiled.source_file, positions=positions)
    return compile_net(document, state=compiled.state, outputs=outputs)
