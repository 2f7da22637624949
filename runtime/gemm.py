"""The heavy layers' float32 matrix products, on the CPU's fastest library for them.

torch's CPU products (torch.mm / torch.addmm) go through MKL on x86. MKL is Intel's library and
picks its kernels by CPU vendor: on Intel CPUs it is the fastest float32 GEMM torch has, while
on others (AMD with AVX-512, where this project started) it runs LRCN's shapes well below what
the CPU can do. oneDNN, which torch ships for its own convolutions, reaches 1.1 to 1.6 times
MKL's rate there on every shape of the LSTM and the vocabulary layer, on one thread and on
several, and it runs on torch's own OpenMP threads (numpy's OpenBLAS, tried before, was as fast
but fought torch's threads for the cores). On an Intel Xeon with AMX (2 cores) MKL is the faster
one on the same shapes: 1.05 to 1.2 times oneDNN's rate forward, 1.1 to 2 times on the weight
gradients; the paper-size LM's step 1.25 times and the main job's net 1.08-1.15 times as fast
as on oneDNN (bench/bench_train.py measures both). The rule, applied per product:

    oneDNN when the CPU is not an Intel one (or torch has no MKL), and the product is on the
    CPU, float32, outside autocast and torch.compile, has at least MIN_MACS multiply-adds, and
    either a left operand stored by rows or one that sums over at most MAX_COPIED_COLUMNS
    columns (which is copied to rows first), and torch was built with oneDNN; torch
    otherwise (torch.mm / torch.addmm: MKL on CPU, cuBLAS on CUDA).

Small products stay on torch: oneDNN's ~30 us call overhead costs more than it saves there.
A transposed left operand is a weight gradient's dy.T @ x: summing over a small batch (the
fully connected layers of a CNN) it is a small copy, and oneDNN then runs 1.2 to 1.6 times
MKL's rate; summing over thousands of rows (an LSTM's T x N) the copy costs what oneDNN saves,
and MKL reads the operand as it is.
The rule is fixed rather than timed per run so that a run repeats bit for bit (`CPU_LIBRARY` is
this machine's choice). LRCN_GEMM=torch (or onednn) in the environment overrides it for every
product (onednn still only where it applies).

Precision (`set_precision`, the tools' --precision): "float32" (the default: Caffe's) or
"bfloat16": every product here and every convolution (`in_product_precision`) then takes its
float32 operands rounded to bfloat16, accumulates in float32, rounds its result to bfloat16 and
hands on float32, forward and backward (the same rounding as torch's autocast, but applied
inside this project's own backward passes too). Everything else stays float32: weights and
their updates, LSTM cell states, activations, losses. CPUs with bfloat16 instructions
(AVX512-BF16, AMX) run these products about twice as fast; on CUDA it is the same cast.
"tf32" lets CUDA's float32 products and convolutions use TF32 tensor cores (no effect on the
CPU).

`linear` is differentiable (an autograd.Function whose forward and backward use `addmm` and
`mm`); `mm` is also the plain product for code that writes its own backward (the LSTM's scan).

Zero rows of a gradient (`rows_in_use`). A loss with ignore_label gives the padded positions of
a caption batch exactly zero gradient rows, and so does the LSTM's backward there (a padded
step has cont 0, so nothing flows back through it): about a third to a half of the rows of
LRCN's batches. The backward products of `linear` and the LSTM's weight gradient skip those
rows: with finite weights and inputs they add exactly nothing to a weight gradient and give
exactly zero input-gradient rows. Only the order in which the remaining rows are summed can
change, so results agree with the full products to float32 rounding. (The LSTM's recurrent
products skip the streams whose cont is 0 in the same way: runtime/layers/recurrent.py.)
Measured, interleaved in one process: the paper-size LM step with a third of its positions
padded 1443 -> 1170 ms, the main job's net on its own data 68.6 -> 65.1 ms. Done on the CPU
only: finding the rows takes a host sync.
"""

import os
import platform

import torch

from runtime.precision import PRECISIONS

MIN_MACS = 1 << 22      # 50 x 256 x 1024 (a caption-net LSTM step) is 1.3e7 and gains 1.4x;
                        # 10 x 256 x 1024 (2.6e6) is slower on oneDNN than on torch
MAX_COPIED_COLUMNS = 512    # dy.T @ x over 10-512 rows: 1.1-1.6x faster copied to oneDNN;
                            # over 1000-2000 rows (LSTM weight gradients) MKL is as fast or faster

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


def cpu_vendor():
    """The CPU's vendor as x86 CPUs name themselves ("GenuineIntel", "AuthenticAMD", ...), or
    "" where the system does not say."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("vendor_id"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    # Windows names the vendor at the end of its processor string.
    return next((vendor for vendor in ("GenuineIntel", "AuthenticAMD")
                 if vendor in platform.processor()), "")


def cpu_library(vendor, has_mkl, has_onednn):
    """'torch' or 'onednn': the library the rule gives a CPU's large float32 products."""
    if not has_onednn or (vendor == "GenuineIntel" and has_mkl):
        return "torch"
    return "onednn"


CPU_LIBRARY = cpu_library(cpu_vendor(), torch.backends.mkl.is_available(),
                          ONEDNN_LINEAR is not None)


_bfloat16 = False       # set_precision("bfloat16")


def set_precision(name):
    """Use `name` (one of runtime.precision.PRECISIONS) for the products of every net in
    this process.

    Raises ValueError for another name, or for bfloat16 on a CPU without bfloat16
    instructions (it would run slower than float32 there)."""
    global _bfloat16
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r} (choose from {', '.join(PRECISIONS)})")
    if name == "bfloat16" and not torch.cuda.is_available() and not cpu_has_bfloat16():
        raise ValueError("--precision bfloat16: this CPU has no bfloat16 instructions "
                         "(AVX512-BF16 or AMX), so it would run slower than float32")
    _bfloat16 = name == "bfloat16"
    torch.backends.cuda.matmul.allow_tf32 = name == "tf32"
    torch.backends.cudnn.allow_tf32 = name == "tf32"


def cpu_has_bfloat16():
    """Whether this CPU has bfloat16 instructions that oneDNN uses (AVX512-BF16, AMX)."""
    check = getattr(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported", None)
    return bool(check is not None and check())


def precision():
    """The current precision's name."""
    if _bfloat16:
        return "bfloat16"
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "float32"


def _rounds_to_bfloat16(*tensors):
    return _bfloat16 and all(t is None or t.dtype == torch.float32 for t in tensors)


def in_product_precision(function, *tensors, **options):
    """function(*tensors, **options) with float32 tensors rounded to bfloat16 under that
    precision and the result handed on as float32 (convolutions); as it is otherwise."""
    if not _rounds_to_bfloat16(*tensors):
        return function(*tensors, **options)
    rounded = [None if t is None else t.bfloat16() for t in tensors]
    return function(*rounded, **options).float()


def backend(a, b):
    """'onednn' or 'torch': which library computes a @ b (2-D tensors) under the rule."""
    if FORCED == "torch" or ONEDNN_LINEAR is None or torch.compiler.is_compiling():
        return "torch"      # torch.compile traces torch's products itself
    if (a.device.type != "cpu" or a.dtype != torch.float32 or b.dtype != torch.float32
            or torch.is_autocast_enabled("cpu")):
        return "torch"
    if FORCED != "onednn" and (CPU_LIBRARY == "torch"
                               or a.shape[0] * a.shape[1] * b.shape[1] < MIN_MACS
                               or (a.stride(1) != 1 and a.shape[1] > MAX_COPIED_COLUMNS)):
        return "torch"
    return "onednn"


def _onednn(a, b, bias=None):
    # x @ w.T + b with w = b.T: oneDNN reads a transposed right operand as it is; a left one
    # not stored by rows it copies itself, more slowly than .contiguous() does.
    if a.stride(1) != 1:
        a = a.contiguous()
    return ONEDNN_LINEAR(a, b.t(), bias, "none", [], "")


def _bfloat16_mm(a, b):
    a, b = a.bfloat16(), b.bfloat16()
    if ONEDNN_LINEAR is not None and a.device.type == "cpu" \
            and not torch.compiler.is_compiling():
        return _onednn(a, b).float()
    return torch.mm(a, b).float()


def mm(a, b):
    """a @ b."""
    if _rounds_to_bfloat16(a, b):
        return _bfloat16_mm(a, b)
    if backend(a, b) == "torch":
        return torch.mm(a, b)
    return _onednn(a, b)


def addmm(c, a, b):
    """c + a @ b: c is one row (broadcast to every row) or a matrix of the product's shape."""
    if _rounds_to_bfloat16(a, b):
        return _bfloat16_mm(a, b).add_(c)
    if backend(a, b) == "torch":
        return torch.addmm(c, a, b)
    if c.dim() == 1:
        return _onednn(a, b, c)
    return _onednn(a, b).add_(c)


MIN_SKIPPED_FRACTION = 1 / 8   # fewer zero rows save less than gathering the others costs


def skipping_pays(rows, zero_rows, macs, device):
    """Whether a product over `rows` rows (`macs` multiply-adds) on `device` is worth running
    on its other rows only, `zero_rows` of them being zero."""
    return (device.type == "cpu" and macs >= MIN_MACS and zero_rows >= rows * MIN_SKIPPED_FRACTION
            and not torch.compiler.is_compiling())


def rows_in_use(dy, x):
    """The indices of the rows of the gradient dy (M, N) that are not all zero, for products
    of dy or dy.T with x (M, K); None where skipping the zero rows does not pay.

    A row whose first entry is non-zero is in use; only the others are read whole, so a
    gradient without zero rows costs one strided read of its first column."""
    M, N = dy.shape
    macs = M * N * x.shape[1]
    if not skipping_pays(M, M, macs, dy.device):
        return None
    candidates = (dy[:, 0] == 0).nonzero().squeeze(1)
    if not skipping_pays(M, len(candidates), macs, dy.device):
        return None
    # A row is zero where its largest magnitude is (NaN stays NaN: in use). 4x as fast as
    # (rows != 0).any(1) on LRCN's 300 x 1024 candidates.
    zero = candidates[dy.index_select(0, candidates).abs_().amax(1) == 0]
    if not skipping_pays(M, len(zero), macs, dy.device):
        return None
    in_use = torch.ones(M, dtype=torch.bool)
    in_use[zero] = False
    return in_use.nonzero().squeeze(1)


def _placed_in_zeros(values, rows, count):
    """A (count, ...) tensor holding `values` at `rows` and zeros elsewhere."""
    return values.new_zeros((count,) + tuple(values.shape[1:])).index_copy_(0, rows, values)


def mm_over_rows(a, b, rows):
    """a @ b computed for the given rows of a only (all of them for None); the result's other
    rows are zero."""
    if rows is None:
        return mm(a, b)
    if len(rows) == 0:          # an LSTM's first step with cont 0: no product to run
        return a.new_zeros(a.shape[0], b.shape[1])
    return _placed_in_zeros(mm(a.index_select(0, rows), b), rows, a.shape[0])


def weight_gradient(dy, x):
    """dy.T @ x, the weight gradient of y = x W^T, without dy's zero rows."""
    rows = rows_in_use(dy, x)
    if rows is not None:
        dy, x = dy.index_select(0, rows), x.index_select(0, rows)
    return mm(dy.t(), x)


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
        rows = rows_in_use(dy, x)
        used_dy = dy if rows is None else dy.index_select(0, rows)
        if ctx.needs_input_grad[0]:
            dx = mm(used_dy, weight.t() if ctx.transpose else weight)
            if rows is not None:        # as mm_over_rows, on the rows already gathered
                dx = _placed_in_zeros(dx, rows, x.shape[0])
        if ctx.needs_input_grad[1]:
            used_x = x if rows is None else x.index_select(0, rows)
            dw = mm(used_x.t(), used_dy) if ctx.transpose else mm(used_dy.t(), used_x)
        if ctx.bias_dim is not None and ctx.needs_input_grad[2]:
            db = dy if ctx.bias_dim == 2 else used_dy.sum(0)  # a bias per row, or per column
        return dx, dw, db, None


def linear(x, weight, bias=None, transpose=False):
    """x W^T + b for 2-D x and W (out, in); x W + b with transpose=True (W (in, out))."""
    w = weight if transpose else weight.t()
    rows = x.shape[0]
    # torch's own autograd where neither the library, the precision nor zero gradient rows
    # could make a difference: it costs less per call than _Linear.
    if (backend(x, w) == "torch" and not _rounds_to_bfloat16(x, w)
            and not skipping_pays(rows, rows, rows * x.shape[1] * w.shape[1], x.device)):
        return x @ w if bias is None else torch.addmm(bias, x, w)
    return _Linear.apply(x, weight, bias, transpose)
