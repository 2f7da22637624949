"""The converter registry: one converter per exportable layer type, and the reasons the other
types have none."""

from dataclasses import dataclass

from compiler.errors import CompileError
from compiler.layer_types import DATA, LOSS, METRIC, SINK, has_trait


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
            if name in _CONVERTERS and _CONVERTERS[name].function is not function:
                raise ValueError(f"layer type {name!r} has two ONNX converters: "
                                 f"{_CONVERTERS[name].function.__name__} and "
                                 f"{function.__name__}")
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

# Types with no converter because the deployable net never holds them (see deployable()).
_NOT_DEPLOYED = ((DATA, "a data layer becomes a graph input"),
                 (LOSS, "a loss layer is dropped from the deployable net"),
                 (METRIC, "a metric layer is dropped from the deployable net"),
                 (SINK, "a sink layer is dropped from the deployable net"))


def unexportable_reason(type_name):
    """Why a type has no converter (None when it has one, or no reason is known)."""
    if type_name in _CONVERTERS:
        return None
    if type_name in _UNEXPORTABLE:
        return _UNEXPORTABLE[type_name]
    for trait, reason in _NOT_DEPLOYED:
        if has_trait(type_name, trait):
            return reason
    return None


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
