"""The heavy layers' float32 matrix products, through the faster of two BLAS libraries.

torch's CPU products go through MKL, which on some CPUs (AMD with AVX-512, this project's
machine) runs the LSTM's and the vocabulary layer's shapes on one thread at about half the
rate of the OpenBLAS that numpy ships (bench/bench_train.py measures both). The rule, applied
per product:

    OpenBLAS (numpy.matmul on the tensors' memory) when torch runs on one thread and the
    product is on the CPU, float32, outside autocast, at least MIN_MACS multiply-adds, and
    numpy's BLAS is OpenBLAS; torch otherwise (torch.mm / torch.addmm: MKL on CPU, cuBLAS on
    CUDA).

One thread only, because OpenBLAS keeps its own thread pool: beside torch's OpenMP threads its
workers spin for cores that torch's need, and a whole LSTM LM train step on 2 threads was 1.5x
slower with OpenBLAS than with MKL although each product alone is faster (bench_train.py, the
"ours, torch GEMM" column). runtime.threads picks 1 thread wherever that is faster.

The rule is fixed rather than timed per run so that a run repeats bit for bit. LRCN_GEMM=torch
(or openblas) in the environment overrides it for every product (openblas still only where it
applies). Small products stay on torch: the numpy call's overhead and the second thread pool
cost more than they save there.

`linear` is differentiable (an autograd.Function whose backward uses the same rule); `mm`
and `addmm` are plain products for code that writes its own backward (the LSTM's scan).
"""

import os

import numpy
import torch

MIN_MACS = 1 << 24      # 2000 x 1000 x 4000 (LSTM input projection) is 8e9; 100 x 1000 x 4000
                        # (one recurrent step at N = 100) is 4e8; a caption-net step is ~1e6

# "torch" or "openblas" forces that library wherever it applies (LRCN_GEMM; tests set it).
FORCED = os.environ.get("LRCN_GEMM", "").strip().lower() or None


def _numpy_blas():
    """'openblas' when numpy's BLAS is OpenBLAS (numpy's wheels), else its name or None."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    for library in threadpool_info():
        if library.get("user_api") == "blas" and "numpy" in library.get("filepath", ""):
            return library.get("internal_api")
    return None


NUMPY_BLAS = _numpy_blas()


def backend(a, b):
    """'openblas' or 'torch': which library computes a @ b (2-D tensors) under the rule."""
    if FORCED == "torch" or NUMPY_BLAS != "openblas" or torch.compiler.is_compiling():
        return "torch"      # torch.compile traces torch's products, not numpy calls
    if FORCED != "openblas" and torch.get_num_threads() != 1:
        return "torch"
    if (a.device.type != "cpu" or a.dtype != torch.float32 or b.dtype != torch.float32
            or torch.is_autocast_enabled("cpu")):
        return "torch"
    if FORCED != "openblas" and a.shape[0] * a.shape[1] * b.shape[1] < MIN_MACS:
        return "torch"
    return "openblas"


def _as_array(tensor):
    # A view of the tensor's memory (transposed views included: BLAS takes them as they are).
    return tensor.detach().numpy()


def mm(a, b, out=None):
    """a @ b, optionally written into out."""
    if backend(a, b) == "torch":
        return torch.mm(a, b, out=out)
    if out is None:
        out = a.new_empty(a.shape[0], b.shape[1])
    numpy.matmul(_as_array(a), _as_array(b), out=_as_array(out))
    return out


def addmm(c, a, b, out=None):
    """c + a @ b (c broadcast to the product's shape), optionally written into out."""
    if backend(a, b) == "torch":
        return torch.addmm(c, a, b, out=out)
    out = mm(a, b, out=out)
    return out.add_(c)


class _Linear(torch.autograd.Function):
    """y = x W^T + b (W (out, in)), or x W + b with transpose (W (in, out)); 2-D x; b is
    one row broadcast to every row of x, or a matrix of x's rows (the RNN's step)."""

    @staticmethod
    def forward(ctx, x, weight, bias, transpose):
        ctx.save_for_backward(x, weight)
        ctx.transpose = transpose
        ctx.bias_dim = None if bias is None else bias.dim()
        w = weight if transpose else weight.t()
        return mm(x, w) if bias is None else addmm(bias, x, w)

    @staticmethod
    def backward(ctx, dy):
        x, weight = ctx.saved_tensors
        dy = dy.contiguous()
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = mm(dy, weight.t() if ctx.transpose else weight)
        if ctx.needs_input_grad[1]:
            dw = mm(x.t(), dy) if ctx.transpose else mm(dy.t(), x)
        if ctx.bias_dim is not None and ctx.needs_input_grad[2]:
            db = dy if ctx.bias_dim == 2 else dy.sum(0)     # a bias per row, or one per column
        return dx, dw, db, None


def linear(x, weight, bias=None, transpose=False):
    """x W^T + b for 2-D x and W (out, in); x W + b with transpose=True (W (in, out))."""
    w = weight if transpose else weight.t()
    if backend(x, w) == "torch":
        return x @ w if bias is None else torch.addmm(bias, x, w)
    return _Linear.apply(x, weight, bias, transpose)
