"""`import caffe`: BVLC pycaffe's Python 3 API over lrcn's compiler and PyTorch runtime.

A real pycaffe earlier on PYTHONPATH is imported instead of this package. What is provided and
what is refused (with an error naming the call) is listed in the README's "import caffe"
section.
"""

from ._caffe import (NCCL, Layer, Timer, UnsupportedError, __version__, has_nccl, init_log,
                     layer_type_list, log, set_device, set_mode_cpu, set_mode_gpu,
                     set_multiprocess, set_random_seed, set_solver_count, set_solver_rank,
                     solver_count, solver_rank)
from .proto.caffe_pb2 import TEST, TRAIN
from .pycaffe import Net
from .solver import (AdaDeltaSolver, AdaGradSolver, AdamSolver, NesterovSolver, RMSPropSolver,
                     SGDSolver, get_solver)
from .classifier import Classifier
from .detector import Detector
from . import io
from .net_spec import NetSpec, layers, params, to_proto

__all__ = ["AdaDeltaSolver", "AdaGradSolver", "AdamSolver", "Classifier", "Detector", "Layer",
           "NCCL", "NesterovSolver", "Net", "NetSpec", "RMSPropSolver", "SGDSolver", "TEST",
           "TRAIN", "Timer", "UnsupportedError", "__version__", "get_solver", "has_nccl",
           "init_log", "io", "layer_type_list", "layers", "log", "params", "set_device",
           "set_mode_cpu", "set_mode_gpu", "set_multiprocess", "set_random_seed",
           "set_solver_count", "set_solver_rank", "solver_count", "solver_rank", "to_proto"]
