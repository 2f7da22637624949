"""pycaffe's process-wide settings and small utilities (BVLC's `_caffe` extension module).

The mode (CPU / GPU), device and random seed are global, as in Caffe: they apply to the nets and
solvers created after they are set (a Net also follows a later mode change at its next
forward/backward). `set_mode_gpu()` where CUDA is absent warns once and keeps running on the
CPU, as `lrcn-train` does with `solver_mode: GPU`: scripts written for a GPU machine run
unchanged, just slower.
"""

import logging
import sys
import time
import warnings

import torch

from runtime.layers.registry import registered_types

__version__ = "1.0.0"     # the Caffe release whose Python API this package follows

_settings = {"mode": "CPU", "device_id": 0, "seed": None}
_log = logging.getLogger("caffe")


class UnsupportedError(NotImplementedError):
    """A pycaffe call this project does not provide; the message names the call and why."""


def unsupported(call, reason):
    return UnsupportedError(f"caffe: {call} is not supported here: {reason}")


def set_mode_cpu():
    _settings["mode"] = "CPU"


def set_mode_gpu():
    if not torch.cuda.is_available():
        warnings.warn("caffe.set_mode_gpu(): no CUDA device is available, running on the CPU",
                      RuntimeWarning, stacklevel=2)
    _settings["mode"] = "GPU"


def set_device(device_id):
    device_id = int(device_id)
    if device_id < 0 or (torch.cuda.is_available() and device_id >= torch.cuda.device_count()):
        raise ValueError(f"caffe.set_device({device_id}): no such CUDA device "
                         f"({torch.cuda.device_count()} present)")
    _settings["device_id"] = device_id


def current_device():
    """The torch device the current mode computes on."""
    if _settings["mode"] == "GPU" and torch.cuda.is_available():
        return torch.device("cuda", _settings["device_id"])
    return torch.device("cpu")


def set_random_seed(seed):
    """Seed the fillers and layer randomness of the nets created from now on (and torch's
    global generator), like Caffe::set_random_seed."""
    _settings["seed"] = int(seed)
    torch.manual_seed(int(seed))


def random_seed():
    """The seed set by set_random_seed, or None."""
    return _settings["seed"]


def init_log(level=0, stderr=True):
    """Caffe's glog set-up: messages of `level` and above (0 INFO, 1 WARNING, 2 ERROR) go to
    stderr."""
    levels = {0: logging.INFO, 1: logging.WARNING, 2: logging.ERROR, 3: logging.CRITICAL}
    _log.setLevel(levels.get(int(level), logging.INFO))
    if stderr and not _log.handlers:
        _log.addHandler(logging.StreamHandler(sys.stderr))


def log(message):
    _log.info(message)


def layer_type_list():
    """The layer types this runtime can run."""
    return registered_types()


def has_nccl():
    return False


def solver_count():
    return 1


def solver_rank():
    return 0


def set_solver_count(count):
    if int(count) != 1:
        raise unsupported(f"caffe.set_solver_count({count})", "training runs in one process, "
                          "on one device")


def set_solver_rank(rank):
    if int(rank) != 0:
        raise unsupported(f"caffe.set_solver_rank({rank})", "training runs in one process")


def set_multiprocess(multiprocess):
    if multiprocess:
        raise unsupported("caffe.set_multiprocess(True)", "training runs in one process")


class NCCL:
    """Caffe's multi-GPU NCCL synchronisation: refused (one process trains here)."""

    def __init__(self, *args, **kwargs):
        raise unsupported("caffe.NCCL", "multi-GPU training is not provided "
                          "(training runs in one process, on one device)")


class Timer:
    """Caffe's Timer: start(), stop(), and `ms`, the milliseconds between them."""

    def __init__(self):
        self._start = self._stop = None

    def start(self):
        self._start, self._stop = time.perf_counter(), None

    def stop(self):
        if self._start is not None:
            self._stop = time.perf_counter()

    @property
    def ms(self):
        if self._start is None:
            return 0.0
        end = self._stop if self._stop is not None else time.perf_counter()
        return (end - self._start) * 1000.0


class _NoLearnableBlobs(list):
    """A Python layer's `self.blobs`: always empty here."""

    def add_blob(self, *shape):
        raise unsupported("Layer.blobs.add_blob", "Python layers cannot hold learnable blobs "
                          "here (a layer type registered under the lrcn.layers entry points "
                          "can)")


class Layer:
    """Base class of Caffe Python layers (`type: "Python"`).

    The runtime constructs the layer with its LayerParameter, sets `self.param_str` and
    `self.phase` (caffe.TRAIN / caffe.TEST), then calls setup(bottom, top) once and
    reshape(bottom, top) before every forward; backward(top, propagate_down, bottom) runs when
    gradients flow. Blobs have `.data` / `.diff` (numpy arrays), `.reshape(*shape)`, `.shape`,
    `.count`, `.num`, `.channels`, `.height`, `.width`.
    """

    def __init__(self, param=None):
        self.param_str = ""
        self.phase = 0

    @property
    def type(self):
        return "Python"

    @property
    def blobs(self):
        return _NoLearnableBlobs()

    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        raise NotImplementedError(f"{type(self).__name__} defines no forward(bottom, top)")

    def backward(self, top, propagate_down, bottom):
        pass
