"""Shape inference: the shape rule of each declared layer type (compiler.layer_types).

A rule sees the layer's LayerParameter, its bottom shapes and a ShapeContext, and returns the
top shapes, the shapes of its learnable blobs (Caffe order and layout), its forward FLOPs and
its resolved attributes. It is the only place a layer's shape arithmetic and parameter reading
is written: the runtime reads CompiledLayer.top_shapes / param_shapes / attrs instead.

Rules raise CompileError without a location; compiler.graph adds the layer's file:line:col.
"""

import math
from dataclasses import dataclass, field as dataclass_field

from .errors import CompileError
from .layer_types import check_blob_counts, declaration, declared_types


@dataclass
class LayerShapes:
    top_shapes: list                 # one tuple of ints per top (None: not known statically)
    param_shapes: list = dataclass_field(default_factory=list)   # Caffe blob order
    flops: int = 0                   # forward floating-point operations (a multiply-add is 2)
    attrs: object = None             # the layer's resolved attributes (see compiler.layer_types)


@dataclass
class ShapeContext:
    phase: str = "TRAIN"             # "TRAIN" or "TEST"
    net_file: str = None             # the file naming the layer: relative paths resolve from it
    input_shapes: dict = dataclass_field(default_factory=dict)   # blob -> shape overrides
    location: tuple = (None, None, None)                          # (file, line, col) of the layer


def supported_types():
    """Every declared layer type."""
    return declared_types()


def infer_layer(layer, bottom_shapes, context):
    """Check the blob counts and apply the layer type's rule. Tops named in
    context.input_shapes take the given shape."""
    declared = declaration(layer.type)
    if declared is None:
        raise CompileError(f"no shape rule for layer type '{layer.type}'")
    check_blob_counts(declared.blob_counts(layer), len(bottom_shapes), len(layer.top))
    result = declared.rule(layer, [tuple(s) for s in bottom_shapes], context)
    overrides = context.input_shapes or {}
    result.top_shapes = [tuple(overrides[top]) if top in overrides else
                         (tuple(shape) if shape is not None else None)
                         for top, shape in zip(layer.top, result.top_shapes)]
    result.param_shapes = [tuple(s) for s in result.param_shapes]
    return result


def count(shape):
    return math.prod(shape) if shape else 1


def load_plugins(group):
    """Import every module registered under an entry-point group (they register on import).

    A plugin that fails to import is reported once and left out: nets that do not use its
    layer types still work, and one that does gets the usual unknown-type error."""
    import warnings
    from importlib.metadata import entry_points
    for entry in entry_points(group=group):
        try:
            entry.load()
        except Exception as error:   # a plugin's own bug must not break every other net
            warnings.warn(f"layer plugin '{entry.name}' ({entry.value}) was not loaded: "
                          f"{error}", RuntimeWarning, stacklevel=2)
