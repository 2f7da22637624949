"""Helpers shared by tests."""

from types import SimpleNamespace

import compiler


def compiled_layer(text, bottom_shapes, top_shapes=(), param_shapes=(), phase="TRAIN"):
    """A stand-in for compiler.CompiledLayer, for testing one runtime unit in isolation.

    `text` is one `layer { ... }` block; shapes are given by hand (a unit test states what the
    compiler's shape rules would give).
    """
    param = compiler.parse_text(text, "net").layer[0]
    return SimpleNamespace(
        name=param.name, type=param.type, param=param, phase=phase,
        bottoms=list(param.bottom), tops=list(param.top),
        bottom_shapes=[tuple(s) for s in bottom_shapes],
        top_shapes=[tuple(s) for s in top_shapes],
        param_shapes=[tuple(s) for s in param_shapes],
        param_specs=list(param.param), loss_weights=[], params=0, flops=0, location=None)
