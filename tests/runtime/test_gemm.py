"""runtime.gemm: the rule that picks a library per product, and that both compute the same
products and gradients (float32 tolerance) in the layers that use them."""

import pytest
import torch

from runtime import gemm
from support import compiled_layer
from runtime.layers import recurrent
from runtime.layers.recurrent import LSTM, RNN
from runtime.layers.vision import InnerProduct

needs_onednn = pytest.mark.skipif(gemm.ONEDNN_LINEAR is None,
                                  reason="this torch has no oneDNN linear")


@pytest.fixture
def forced(monkeypatch):
    """Force a library for every product (small ones included) for the test's duration."""
    def force(name):
        monkeypatch.setattr(gemm, "FORCED", name)
    return force


@pytest.fixture
def onednn_cpu(monkeypatch):
    """The rule as it runs on a CPU whose large products go to oneDNN (an AMD one), whatever
    CPU runs the test."""
    monkeypatch.setattr(gemm, "CPU_LIBRARY", "onednn")


def big(*shape):
    return torch.empty(shape)     # only shapes matter to the rule


def test_the_cpu_library_follows_the_vendor():
    # MKL picks its kernels by vendor: fastest on Intel's CPUs, well below oneDNN on AMD's.
    assert gemm.cpu_library("GenuineIntel", has_mkl=True, has_onednn=True) == "torch"
    assert gemm.cpu_library("AuthenticAMD", has_mkl=True, has_onednn=True) == "onednn"
    assert gemm.cpu_library("", has_mkl=True, has_onednn=True) == "onednn"
    assert gemm.cpu_library("GenuineIntel", has_mkl=False, has_onednn=True) == "onednn"
    assert gemm.cpu_library("AuthenticAMD", has_mkl=True, has_onednn=False) == "torch"
    assert gemm.CPU_LIBRARY == gemm.cpu_library(gemm.cpu_vendor(),
                                                torch.backends.mkl.is_available(),
                                                gemm.ONEDNN_LINEAR is not None)


def test_the_cpu_vendor_is_read_from_the_system():
    vendor = gemm.cpu_vendor()
    assert isinstance(vendor, str)
    try:
        with open("/proc/cpuinfo") as info:
            named = [line for line in info if line.startswith("vendor_id")]
    except OSError:
        pytest.skip("no /proc/cpuinfo here")
    if named:
        assert vendor == named[0].split(":")[1].strip()


@needs_onednn
def test_rule_keeps_every_product_on_torch_where_mkl_is_the_faster(monkeypatch):
    monkeypatch.setattr(gemm, "CPU_LIBRARY", "torch")          # an Intel CPU
    assert gemm.backend(big(2000, 1000), big(1000, 4000)) == "torch"
    assert gemm.backend(big(50, 256), big(256, 1024)) == "torch"
    assert gemm.backend(big(10, 4096).t(), big(10, 9216)) == "torch"
    monkeypatch.setattr(gemm, "FORCED", "onednn")               # LRCN_GEMM=onednn still forces
    assert gemm.backend(big(50, 256), big(256, 1024)) == "onednn"


@needs_onednn
@pytest.mark.parametrize("threads", [1, 2])
def test_rule_large_float32_cpu_products_use_onednn_on_any_thread_count(threads, onednn_cpu):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert gemm.backend(big(2000, 1000), big(1000, 4000)) == "onednn"
        assert gemm.backend(big(2000, 1000), big(4000, 1000).t()) == "onednn"
        assert gemm.backend(big(50, 256), big(256, 1024)) == "onednn"    # a caption LSTM step
    finally:
        torch.set_num_threads(previous)


def test_rule_small_products_stay_on_torch():
    assert gemm.backend(big(10, 100), big(100, 40)) == "torch"


def test_rule_other_dtypes_and_autocast_stay_on_torch(onednn_cpu):
    assert gemm.backend(big(2000, 1000).double(), big(1000, 4000).double()) == "torch"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert gemm.backend(big(2000, 1000), big(1000, 4000)) == "torch"


def test_rule_falls_back_to_torch_without_onednn(monkeypatch, forced):
    monkeypatch.setattr(gemm, "ONEDNN_LINEAR", None)
    forced("onednn")
    assert gemm.backend(big(2000, 1000), big(1000, 4000)) == "torch"
    a, b = torch.randn(3, 4), torch.randn(4, 5)
    assert torch.equal(gemm.mm(a, b), torch.mm(a, b))


def test_forcing_torch_overrides_the_rule(forced):
    forced("torch")
    assert gemm.backend(big(2000, 1000), big(1000, 4000)) == "torch"


@needs_onednn
def test_onednn_products_match_torch(forced):
    forced("onednn")
    g = torch.Generator().manual_seed(0)
    a, w = torch.randn(7, 5, generator=g), torch.randn(6, 5, generator=g)
    c, rows = torch.randn(6, generator=g), torch.randn(7, 6, generator=g)
    torch.testing.assert_close(gemm.mm(a, w.t()), torch.mm(a, w.t()))
    torch.testing.assert_close(gemm.addmm(c, a, w.t()), torch.addmm(c, a, w.t()))
    torch.testing.assert_close(gemm.addmm(rows, a, w.t()), torch.addmm(rows, a, w.t()))
    torch.testing.assert_close(gemm.mm(w, a.t()), w @ a.t())      # a transposed right operand
    torch.testing.assert_close(gemm.mm(a[1:4], w[::2].t()), a[1:4] @ w[::2].t())   # views


@needs_onednn
@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("bias_rows", [False, True])
def test_linear_gradients_match_autograd(forced, transpose, bias_rows):
    forced("onednn")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, generator=g, dtype=torch.float64)
    w = torch.randn(3, 5, generator=g, dtype=torch.float64) if transpose else \
        torch.randn(5, 3, generator=g, dtype=torch.float64)
    b = torch.randn(*((4, 5) if bias_rows else (5,)), generator=g, dtype=torch.float64)
    leaves = [t.float().requires_grad_() for t in (x, w, b)]
    y = gemm._Linear.apply(*leaves, transpose)       # the oneDNN function, whatever the size
    reference = [t.clone().requires_grad_() for t in (x, w, b)]
    expected = reference[0] @ (reference[1] if transpose else reference[1].t()) + reference[2]
    grad = torch.randn(4, 5, generator=g, dtype=torch.float64)
    y.backward(grad.float())
    expected.backward(grad)
    torch.testing.assert_close(y.double(), expected.detach(), rtol=1e-5, atol=1e-5)
    for ours, exact in zip(leaves, reference):
        torch.testing.assert_close(ours.grad.double(), exact.grad, rtol=1e-5, atol=1e-5)


LSTM_LAYER = '''layer { name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" bottom: "s" top: "h"
  recurrent_param { num_output: 6 weight_filler { type: "uniform" min: -0.3 max: 0.3 }
                    bias_filler { type: "uniform" min: -0.1 max: 0.1 } } }'''
RNN_LAYER = LSTM_LAYER.replace('"LSTM"', '"RNN"').replace('"lstm"', '"rnn"')
IP_LAYER = '''layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
  inner_product_param { num_output: 6 axis: 2 weight_filler { type: "gaussian" std: 0.3 }
                        bias_filler { type: "gaussian" std: 0.1 } } }'''


def _run_layer(kind, forced_name, monkeypatch):
    monkeypatch.setattr(gemm, "FORCED", forced_name)
    T, N, D, H, Ds = 5, 3, 4, 6, 2
    g = torch.Generator().manual_seed(2)
    x = torch.randn(T, N, D, generator=g, requires_grad=True)
    cont = torch.ones(T, N)
    cont[0] = 0
    cont[3, 1] = 0
    if kind is InnerProduct:
        layer = compiled_layer(IP_LAYER, [(T, N, D)], [(T, N, H)], [(H, D), (H,)])
        unit = kind(layer, torch.Generator().manual_seed(3))
        inputs = (x,)
    else:
        gates = 4 if kind is LSTM else 1
        shapes = [(gates * H, D), (gates * H,), (gates * H, Ds), (gates * H, H)]
        if kind is RNN:
            shapes += [(H, H), (H,)]
        text = LSTM_LAYER if kind is LSTM else RNN_LAYER
        layer = compiled_layer(text, [(T, N, D), (T, N), (N, Ds)], [(T, N, H)], shapes)
        unit = kind(layer, torch.Generator().manual_seed(3))
        inputs = (x, cont, torch.randn(N, Ds, generator=g, requires_grad=True))
    (y,) = unit(*inputs)
    y.backward(torch.randn(y.shape, generator=g))
    grads = [t.grad for t in inputs if t.requires_grad] + [p.grad for p in unit.blobs]
    return y.detach(), grads


@needs_onednn
@pytest.mark.parametrize("kind", [LSTM, RNN, InnerProduct])
def test_layers_agree_between_libraries(kind, monkeypatch):
    y_torch, grads_torch = _run_layer(kind, "torch", monkeypatch)
    y_dnn, grads_dnn = _run_layer(kind, "onednn", monkeypatch)
    torch.testing.assert_close(y_dnn, y_torch, rtol=1e-5, atol=1e-6)
    assert len(grads_dnn) == len(grads_torch)
    for ours, reference in zip(grads_dnn, grads_torch):
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


@needs_onednn
def test_rule_keeps_transposed_left_operands_summing_over_many_rows_on_torch(onednn_cpu):
    # An LSTM's weight gradient d.T @ x over T x N rows: the copy would cost what oneDNN saves.
    assert gemm.backend(big(2000, 4000).t(), big(2000, 1000)) == "torch"
    columns = gemm.MAX_COPIED_COLUMNS
    assert gemm.backend(big(columns + 1, 4096).t(), big(columns + 1, 9216)) == "torch"


@needs_onednn
def test_rule_takes_transposed_left_operands_summing_over_a_batch_to_onednn(onednn_cpu):
    # A fully connected layer's weight gradient over a batch of 10 (CaffeNet's fc6).
    assert gemm.backend(big(10, 4096).t(), big(10, 9216)) == "onednn"
    columns = gemm.MAX_COPIED_COLUMNS
    assert gemm.backend(big(columns, 4096).t(), big(columns, 9216)) == "onednn"


@needs_onednn
def test_transposed_left_operands_on_onednn_match_torch(onednn_cpu):
    g = torch.Generator().manual_seed(0)
    dy, x = torch.randn(10, 700, generator=g), torch.randn(10, 900, generator=g)
    assert gemm.backend(dy.t(), x) == "onednn"
    torch.testing.assert_close(gemm.mm(dy.t(), x), torch.mm(dy.t(), x))
    strided = torch.randn(20, 1400, generator=g)[::2, ::2]        # neither rows nor columns
    torch.testing.assert_close(gemm.mm(strided.t(), x), torch.mm(strided.t(), x))



# --- zero gradient rows (padding under ignore_label) ------------------------------------------

def _gradient_with_zero_rows(zero_rows, M=16, N=7, seed=2):
    dy = torch.randn(M, N, generator=torch.Generator().manual_seed(seed))
    dy[list(zero_rows)] = 0
    return dy


def test_rows_in_use_are_the_rows_not_all_zero(monkeypatch):
    monkeypatch.setattr(gemm, "MIN_MACS", 0)
    dy = _gradient_with_zero_rows((1, 4, 5, 9))
    dy[2, 0] = 0                            # a zero first entry alone does not make a row unused
    dy[11] = 0
    dy[11, 3] = float("nan")                # nor does a NaN among zeros: it must spread
    dy[12] = 0
    dy[12, 6] = -float("inf")               # nor an infinity
    dy[9] = -0.0                            # negative zeros are zeros
    expected = [r for r in range(16) if r not in (1, 4, 5, 9)]
    assert gemm.rows_in_use(dy, torch.randn(16, 3)).tolist() == expected


def test_rows_in_use_is_none_where_skipping_does_not_pay(monkeypatch):
    x = torch.randn(16, 3)
    assert gemm.rows_in_use(_gradient_with_zero_rows(range(12)), x) is None   # too small
    monkeypatch.setattr(gemm, "MIN_MACS", 0)
    assert gemm.rows_in_use(_gradient_with_zero_rows(()), x) is None
    assert gemm.rows_in_use(_gradient_with_zero_rows((3,)), x) is None        # 1 of 16 < 1/8
    assert gemm.rows_in_use(_gradient_with_zero_rows((3, 8)), x) is not None  # 2 of 16


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("bias_rows", [False, True])
def test_linear_backward_without_zero_rows_matches_autograd(monkeypatch, transpose, bias_rows):
    monkeypatch.setattr(gemm, "MIN_MACS", 0)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(16, 3, generator=g, dtype=torch.float64)
    w = torch.randn(*((3, 7) if transpose else (7, 3)), generator=g, dtype=torch.float64)
    b = torch.randn(*((16, 7) if bias_rows else (7,)), generator=g, dtype=torch.float64)
    grad = _gradient_with_zero_rows((0, 3, 4, 10, 15)).double()
    assert gemm.rows_in_use(grad.float(), x.float()) is not None
    leaves = [t.float().requires_grad_() for t in (x, w, b)]
    gemm._Linear.apply(*leaves, transpose).backward(grad.float())
    reference = [t.clone().requires_grad_() for t in (x, w, b)]
    (reference[0] @ (reference[1] if transpose else reference[1].t()) + reference[2]) \
        .backward(grad)
    for ours, exact in zip(leaves, reference):
        torch.testing.assert_close(ours.grad.double(), exact.grad, rtol=1e-5, atol=1e-5)
    assert not leaves[0].grad[[0, 3, 4, 10, 15]].any()


def test_lstm_on_a_padded_batch_skips_its_zero_rows_and_agrees_with_full_products(monkeypatch):
    # LRCN's caption batches: after its sentence each stream has cont 0 and an ignored target,
    # so the gradient reaching the LSTM and its gate gradients there are zero rows, and the
    # recurrent products need only the streams still running (at t = 2: streams 0 and 2).
    monkeypatch.setattr(gemm, "MIN_MACS", 0)
    T, N, D, H, Ds = 6, 4, 5, 6, 2
    lengths = torch.tensor([6, 2, 4, 1])
    step = torch.arange(T).unsqueeze(1)
    cont = ((step >= 1) & (step < lengths)).float()
    g = torch.Generator().manual_seed(5)
    x, s = torch.randn(T, N, D, generator=g), torch.randn(N, Ds, generator=g)
    upstream = torch.randn(T, N, H, generator=g) * (step < lengths).unsqueeze(2)
    layer = compiled_layer(LSTM_LAYER, [(T, N, D), (T, N), (N, Ds)], [(T, N, H)],
                           [(4 * H, D), (4 * H,), (4 * H, Ds), (4 * H, H)])
    skipped = []
    rows_in_use = gemm.rows_in_use

    def spy(dy, x):
        rows = rows_in_use(dy, x)
        skipped.append(rows is not None and len(rows) < len(dy))
        return rows

    def gradients():
        unit = LSTM(layer, torch.Generator().manual_seed(3))
        inputs = [t.clone().requires_grad_() for t in (x, s)]
        (h,) = unit(inputs[0], cont, inputs[1])
        h.backward(upstream)
        return h.detach(), [t.grad for t in inputs] + [p.grad for p in unit.blobs]

    monkeypatch.setattr(gemm, "rows_in_use", spy)
    h_skipping, with_skipping = gradients()
    assert sum(skipped) >= 2            # the input projection's backward and dW_hc
    assert recurrent._continued_rows(cont.unsqueeze(2), with_skipping[-1])[2].tolist() == [0, 2]
    monkeypatch.setattr(gemm, "rows_in_use", lambda dy, x: None)
    monkeypatch.setattr(recurrent, "_continued_rows", lambda ct, W_hc: [None] * len(ct))
    h_full, full = gradients()
    torch.testing.assert_close(h_skipping, h_full, rtol=1e-6, atol=1e-7)
    for ours, reference in zip(with_skipping, full):
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)

# --- precision ---------------------------------------------------------------------------------

bfloat16_cpu = pytest.mark.skipif(not gemm.cpu_has_bfloat16(),
                                  reason="this CPU has no bfloat16 instructions")


@pytest.fixture
def precision():
    """Set a precision for the test's duration (float32 again afterwards)."""
    yield gemm.set_precision
    gemm.set_precision("float32")


def rounded(t):
    return t.bfloat16().float()


@bfloat16_cpu
@pytest.mark.parametrize("shape", [(7, 5, 6), (50, 256, 1024)])    # torch / oneDNN sizes
def test_bfloat16_products_round_operands_and_result(precision, shape):
    precision("bfloat16")
    m, k, n = shape
    g = torch.Generator().manual_seed(4)
    a, b, c = (torch.randn(m, k, generator=g), torch.randn(k, n, generator=g),
               torch.randn(n, generator=g))
    exact = rounded(a).double() @ rounded(b).double()      # products of the rounded operands
    for result, expected in ((gemm.mm(a, b), exact), (gemm.addmm(c, a, b), exact + c.double())):
        assert result.dtype == torch.float32
        # The result itself is rounded to bfloat16 (8 significant bits) before it is handed on.
        torch.testing.assert_close(result.double(), expected, rtol=2 ** -7,
                                   atol=2 ** -8 * float(expected.abs().max()))
    assert not torch.equal(gemm.mm(a, b), a @ b)           # it is not the float32 product
    assert gemm.precision() == "bfloat16"


@bfloat16_cpu
def test_bfloat16_reaches_backward_products_and_convolutions(precision):
    precision("bfloat16")
    g = torch.Generator().manual_seed(5)
    x, w = torch.randn(6, 8, generator=g, requires_grad=True), \
        torch.randn(4, 8, generator=g, requires_grad=True)
    gemm.linear(x, w).backward(torch.ones(6, 4))
    torch.testing.assert_close(x.grad, rounded(torch.ones(6, 4)) @ rounded(w.detach()),
                               rtol=2 ** -7, atol=1e-3)
    image, kernel = torch.randn(1, 2, 5, 5, generator=g), torch.randn(3, 2, 3, 3, generator=g)
    y = gemm.in_product_precision(torch.nn.functional.conv2d, image, kernel, None)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, torch.nn.functional.conv2d(rounded(image), rounded(kernel)),
                               rtol=2 ** -7, atol=1e-2)


@bfloat16_cpu
def test_bfloat16_net_trains_close_to_float32(precision, monkeypatch):
    losses = {}
    for name in ("float32", "bfloat16"):
        precision(name)
        _, grads = _run_layer(LSTM, None, monkeypatch)
        losses[name] = grads
    for ours, reference in zip(losses["bfloat16"], losses["float32"]):
        assert ours.dtype == torch.float32
        torch.testing.assert_close(ours, reference, rtol=5e-2, atol=5e-2)


def test_precision_names_are_checked(precision, monkeypatch):
    with pytest.raises(ValueError, match="unknown precision 'half'"):
        precision("half")
    monkeypatch.setattr(gemm, "cpu_has_bfloat16", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no bfloat16 instructions"):
        precision("bfloat16")
    assert gemm.precision() == "float32"


def test_tf32_only_changes_cuda_flags(precision):
    precision("tf32")
    assert torch.backends.cuda.matmul.allow_tf32 and gemm.precision() == "tf32"
    a, b = torch.randn(3, 4), torch.randn(4, 5)
    assert torch.equal(gemm.mm(a, b), torch.mm(a, b))      # CPU products stay float32
    precision("float32")
    assert not torch.backends.cuda.matmul.allow_tf32
