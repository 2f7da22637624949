"""Caffe's Python layers: `type: "Python"` with `python_param { module layer param_str }`.

Trust model: the module is imported from the Python path only (sys.path / PYTHONPATH), as
Caffe does. A net file, or the folder it sits in, never makes code run by itself: the
directories a user names with `allow_python_path(directory)` (lrcn-train / lrcn-test /
lrcn-time --python-path DIR) are searched too, before sys.path and only while the module is
imported (they are not left on sys.path). The tools that only read nets (lrcn-check, lrcn-fmt,
lrcn-show, lrcn-diff, lrcn-draw) never import a layer module. The class is built with the LayerParameter, given
`param_str` and `phase` (0 = TRAIN, 1 = TEST, pycaffe's caffe.TRAIN / caffe.TEST), then driven
through pycaffe's API: setup(bottom, top) once, reshape(bottom, top) before every forward,
forward(bottom, top), backward(top, propagate_down, bottom). Blobs are `Blob` objects with
numpy `.data` / `.diff`.

- A layer without bottoms (a data layer) produces its tops as CPU tensors from forward(); its
  top shapes are whatever setup/reshape made them (`top_shapes()`).
- A layer with bottoms runs inside a torch.autograd.Function: its backward() supplies the
  bottom gradients, on the data it saw in that forward.
- `share_in_parallel` has no effect (one process, one instance per net).
- Python layers cannot hold learnable blobs here (pycaffe's `self.blobs`).
- A snapshot keeps a Python layer's own state only when its class defines resume_state()
  (returning dicts, lists, numbers, strings and numpy arrays) and restore_state(state).
- `import caffe` in a user module finds this distribution's `caffe` package (pycaffe's API),
  unless a real pycaffe comes earlier on the Python path.
"""

import contextlib
import importlib
import inspect
import os
import sys

import numpy as np
import torch

from compiler.errors import CompileError, did_you_mean
from runtime.layers.base import CaffeLayer
from runtime.layers.registry import register

TRAIN, TEST = 0, 1


class Blob:
    """pycaffe's Blob as Python layers use it: `.data` and `.diff` numpy float32 arrays."""

    def __init__(self, shape=()):
        self.data = self.diff = None
        self.reshape(*shape)

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        shape = tuple(int(d) for d in shape)
        if any(d < 0 for d in shape):
            raise ValueError(f"blob dimensions must be >= 0, got {shape}")
        if self.data is None or self.data.shape != shape:
            self.data = np.zeros(shape, np.float32)
            self.diff = np.zeros(shape, np.float32)

    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def count(self):
        return int(self.data.size)

    def _legacy(self, axis):
        # Blob::LegacyShape: axes past the last count as 1 (blobs of up to 4 axes).
        if self.data.ndim > 4:
            raise ValueError(f"num/channels/height/width need at most 4 axes, shape is "
                             f"{self.shape}")
        return self.shape[axis] if axis < self.data.ndim else 1

    @property
    def num(self):
        return self._legacy(0)

    @property
    def channels(self):
        return self._legacy(1)

    @property
    def height(self):
        return self._legacy(2)

    @property
    def width(self):
        return self._legacy(3)

    def _set(self, array):
        self.data = array
        self.diff = np.zeros_like(array)


_allowed_directories = []


def allow_python_path(directory):
    """Let Python layer modules be imported from `directory` as well (the user trusts its code)."""
    directory = os.path.abspath(directory)
    if directory not in _allowed_directories:
        _allowed_directories.append(directory)


@contextlib.contextmanager
def _searching(directories):
    """sys.path with `directories` first, for the duration of one import only."""
    added = [d for d in directories if d not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for directory in added:
            if directory in sys.path:
                sys.path.remove(directory)


def _not_found_hint(module, location):
    hint = "searched sys.path (PYTHONPATH)"
    if _allowed_directories:
        hint += " and " + ", ".join(_allowed_directories)
    if location[0]:
        net_directory = os.path.dirname(os.path.abspath(location[0]))
        beside = os.path.join(net_directory, module.split(".")[0])
        if net_directory not in _allowed_directories and (
                os.path.exists(beside + ".py") or os.path.isdir(beside)):
            hint += (f"; the net's folder {net_directory} holds it but is not searched: pass "
                     f"--python-path {net_directory} (or add it to PYTHONPATH) if you trust "
                     "the code there")
    return hint


def _import_layer_class(layer):
    param = layer.param.python_param
    location = tuple(getattr(layer, "location", None) or (None, None, None))
    try:
        with _searching(_allowed_directories):
            module = importlib.import_module(param.module)
    except ModuleNotFoundError as error:
        if error.name and param.module.split(".")[0] == error.name.split(".")[0]:
            raise CompileError(f"Python layer module '{param.module}' not found", *location,
                               hint=_not_found_hint(param.module, location)) from None
        raise CompileError(f"importing Python layer module '{param.module}' failed: {error}",
                           *location) from error
    except Exception as error:
        raise CompileError(f"importing Python layer module '{param.module}' failed: "
                           f"{type(error).__name__}: {error}", *location) from error
    cls = getattr(module, param.layer, None)
    if not inspect.isclass(cls):
        classes = [name for name, value in vars(module).items() if inspect.isclass(value)]
        raise CompileError(f"module '{param.module}' ({module.__file__}) has no class "
                           f"'{param.layer}'", *location,
                           hint=did_you_mean(param.layer, classes, "in that module"))
    return cls


@register("Python")
class PythonLayer(CaffeLayer):
    """Runs a user's Caffe Python layer class."""

    def __init__(self, layer, rng=None):
        super().__init__(layer, rng)
        cls = _import_layer_class(layer)
        param = self.param.python_param
        self.instance = self._user_call(cls, "__init__", self.param)
        self.instance.param_str = param.param_str
        self.instance.phase = TRAIN if self.phase == "TRAIN" else TEST
        self.bottom_blobs = [Blob(shape or ()) for shape in layer.bottom_shapes]
        known = list(getattr(layer, "top_shapes", None) or [])
        self.top_blobs = [Blob((known[i] if i < len(known) else None) or ())
                          for i in range(len(layer.tops))]
        # LayerSetUp then the Reshape that Net::Init performs.
        self._run("setup", self.bottom_blobs, self.top_blobs)
        self._run("reshape", self.bottom_blobs, self.top_blobs)

    def _user_call(self, function, name, *args):
        try:
            return function(*args)
        except Exception as error:
            error.add_note(f"in Python layer '{self.layer.name}' "
                           f"({self.param.python_param.module}.{self.param.python_param.layer}"
                           f".{name})")
            raise

    def _run(self, method, *args):
        return self._user_call(getattr(self.instance, method), method, *args)

    def forward(self, *bottoms):
        if bottoms and self.top_blobs:
            return _PythonFunction.apply(self, *bottoms)
        for blob, bottom in zip(self.bottom_blobs, bottoms):
            blob._set(bottom.detach().to("cpu", torch.float32).numpy().copy())
        self._run("reshape", self.bottom_blobs, self.top_blobs)
        self._run("forward", self.bottom_blobs, self.top_blobs)
        return tuple(torch.from_numpy(np.array(blob.data, np.float32)) for blob in self.top_blobs)

    def top_shapes(self):
        return [blob.shape for blob in self.top_blobs]

    def resume_state(self):
        """The user's layer state, when its class offers resume_state() / restore_state(state)
        (an lrcn extension; Caffe snapshots no Python layer state)."""
        getter = getattr(self.instance, "resume_state", None)
        return {"user": self._user_call(getter, "resume_state")} if callable(getter) else None

    def restore_state(self, state):
        self._run("restore_state", state["user"])


class _PythonFunction(torch.autograd.Function):
    """forward/backward of a Python layer with bottoms, as one autograd node."""

    @staticmethod
    def forward(ctx, unit, *bottoms):
        ctx.unit = unit
        ctx.devices = [b.device for b in bottoms]
        ctx.dtypes = [b.dtype for b in bottoms]
        inputs = [b.detach().to("cpu", torch.float32).numpy().copy() for b in bottoms]
        for blob, array in zip(unit.bottom_blobs, inputs):
            blob._set(array.copy())
        unit._run("reshape", unit.bottom_blobs, unit.top_blobs)
        unit._run("forward", unit.bottom_blobs, unit.top_blobs)
        # backward() sees the blobs as they were after this forward, even if the layer runs
        # again (another forward of the net) before the gradients are taken.
        ctx.bottom_data = inputs
        ctx.top_data = [np.array(blob.data, np.float32) for blob in unit.top_blobs]
        device = bottoms[0].device
        return tuple(torch.from_numpy(data.copy()).to(device) for data in ctx.top_data)

    @staticmethod
    def backward(ctx, *grads):
        unit = ctx.unit
        for blob, data in zip(unit.bottom_blobs, ctx.bottom_data):
            blob._set(data.copy())
        for blob, data, grad in zip(unit.top_blobs, ctx.top_data, grads):
            blob._set(data.copy())
            if grad is not None:
                blob.diff = grad.detach().to("cpu", torch.float32).numpy().copy()
        propagate_down = [bool(ctx.needs_input_grad[i + 1]) for i in range(len(ctx.devices))]
        unit._run("backward", unit.top_blobs, propagate_down, unit.bottom_blobs)
        gradients = [torch.from_numpy(np.array(blob.diff, np.float32)).to(device, dtype)
                     if wanted else None
                     for blob, wanted, device, dtype in zip(unit.bottom_blobs, propagate_down,
                                                            ctx.devices, ctx.dtypes)]
        return (None, *gradients)
