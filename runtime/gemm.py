"""The heavy layers' float32 matrix products, through oneDNN's matmul on the CPU.

torch's CPU products (torch.mm / torch.addmm) go through MKL, which on some CPUs (AMD with
AVX-512, this project's machine) runs LRCN's shapes well below what the CPU can do. oneDNN,
which torch ships for its own convolutions, reaches 1.1 to 1.6 times MKL's rate on every
shape of the LSTM and the vocabulary layer (bench/bench_train.py measures both), on one
thread and on several, and it runs on torch's own OpenMP threads (numpy's OpenBLAS, tried
before, was as fast but fought torch's threads for the cores). The rule, applied per product:

    oneDNN when the product is on the CPU, float32, outside autocast and torch.compile, has
    at least MIN_MACS multiply-adds, and torch was built with oneDNN; torch otherwise
    (torch.mm / torch.addmm: MKL on CPU, cuBLAS on CUDA).

Small products stay on torch: oneDNN's ~30 us call overhead costs more than it saves there.
The rule is fixed rather than timed per run so that a run repeats bit for bit. LRCN_GEMM=torch
(or onednn) in the environment overrides it for every product (onednn still only where it
applies).

`linear` is differentiable (an autograd.Function whose backward uses the same rule); `mm`
and `addmm` are plain products for code that writes its own backward (the LSTM's scan).
"""

import os

import torch

MIN_MACS = 1 << 22      # 50 x 256 x 1024 (a caption-net LSTM step) is 1.3e7 and gains 1.4x;
                        # 10 x 256 x 1024 (2.6e6) is slower on oneDNN than on torch

# "torch" or "onednn" forces that library wherever it applies (LRCN_GEMM; tests set it).
FORCED = os.environ.get("LRCN_GEMM", "").strip().lower() or None


def _onednn_linear():
    """torch's oneDNN linear on dense tensors (x @ w.T + b), or None where this torch has none.

    It is the op torch.compile's CPU backend emits for linear layers; it is not public API,
    so it is looked up, not assumed."""
    if not torch.backends.mkldnn.is_available():
        return None
    return getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)


ONEDNN_LINEAR = _onednn_linear()


def backend(a, b):
    """'onednn' or 'torch': which library computes a @ b (2-D tensors) under the rule."""
    if FORCED == "torch" or ONEDNN_LINEAR is None or torch.compiler.is_compiling():
        return "torch"      # torch.compile traces torch's products itself
    if (a.device.type != "cpu" or a.dtype != torch.float32 or b.dtype != torch.float32
            or torch.is_autocast_enabled("cpu")):
        return "torch"
    if FORCED != "onednn" and a.shape[0] * a.shape[1] * b.shape[1] < MIN_MACS:
        return "torch"
    return "onednn"


def _onednn(a, b, bias=None):
    # x @ w.T + b with w = b.T: oneDNN reads transposed views as they are, without copies.
    return ONEDNN_LINEAR(a, b.t(), bias, "none", [], "")


def mm(a, b):
    """a @ b."""
    if backend(a, b) == "torch":
        return torch.mm(a, b)
    return _onednn(a, b)


def addmm(c, a, b):
    """c + a @ b: c is one row (broadcast to every row) or a matrix of the product's shape."""
    if backend(a, b) == "torch":
        return torch.addmm(c, a, b)
    if c.dim() == 1:
        return _onednn(a, b, c)
    return _onednn(a, b).add_(c)


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
