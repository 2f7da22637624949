"""runtime.layers.recurrent against Caffe's LSTM / RNN / LSTMUnit semantics (LRCN_REFERENCE.md 1).

Independent references: a hand-written NumPy LSTM / RNN in Caffe's gate order and layout,
the layer itself unrolled one step per call, and torch's gradcheck.
"""

import numpy as np
import pytest
import torch
from torch.func import functional_call

from runtime.layers import recurrent
from runtime.layers.recurrent import LSTM, RNN, LSTMUnit, _LSTMScan
from runtime.layers.registry import unit_for
from support import compiled_layer

F64 = torch.float64


# ---------------------------------------------------------------------------------------------
# Building layers


def recurrent_text(kind, H, static=False, expose=False, fillers=True):
    n_states = (2 if kind == "LSTM" else 1) if expose else 0
    names = ["h0", "c0"][:n_states]
    bottoms = ["x", "cont"] + (["x_static"] if static else []) + names
    tops = ["h" if kind == "LSTM" else "o"] + [f"{n[0]}T" for n in names]
    filler_text = ('weight_filler { type: "uniform" min: -0.5 max: 0.5 } '
                   'bias_filler { type: "uniform" min: -0.5 max: 0.5 }') if fillers else ""
    return (f'layer {{ name: "rec" type: "{kind}" '
            + " ".join(f'bottom: "{b}"' for b in bottoms) + " "
            + " ".join(f'top: "{t}"' for t in tops)
            + f' recurrent_param {{ num_output: {H} {filler_text} '
            + f'expose_hidden: {"true" if expose else "false"} }} }}')


def lstm_param_shapes(D, H, Ds=None):
    return [(4 * H, D), (4 * H,)] + ([(4 * H, Ds)] if Ds else []) + [(4 * H, H)]


def rnn_param_shapes(D, H, Ds=None):
    return [(H, D), (H,)] + ([(H, Ds)] if Ds else []) + [(H, H), (H, H), (H,)]


def make(kind, T, N, x_dims, H, Ds=None, expose=False, seed=0, dtype=F64, fillers=True):
    """A compiled LSTM / RNN unit; x is (T, N, *x_dims), x_static (N, Ds)."""
    D = int(np.prod(x_dims))
    n_states = (2 if kind == "LSTM" else 1) if expose else 0
    bottom_shapes = ([(T, N, *x_dims), (T, N)] + ([(N, Ds)] if Ds else [])
                     + [(1, N, H)] * n_states)
    top_shapes = [(T, N, H)] + [(1, N, H)] * n_states
    shapes = (lstm_param_shapes if kind == "LSTM" else rnn_param_shapes)(D, H, Ds)
    layer = compiled_layer(recurrent_text(kind, H, bool(Ds), expose, fillers),
                           bottom_shapes, top_shapes, shapes)
    cls = LSTM if kind == "LSTM" else RNN
    return cls(layer, torch.Generator().manual_seed(seed)).to(dtype)


def share_blobs(target, source):
    """Make `target` use `source`'s parameter tensors (as the Net does for shared blobs)."""
    for i, blob in enumerate(source.blobs):
        target.blobs[i] = blob
    return target


def random_cont(T, N, rng, p_restart=0.3):
    cont = (rng.random((T, N)) > p_restart).astype(np.float64)
    cont[0] = 0
    return cont


def t64(array, grad=False):
    return torch.tensor(array, dtype=F64, requires_grad=grad)


# ---------------------------------------------------------------------------------------------
# NumPy references, written from LRCN_REFERENCE.md section 1


def sigmoid(v):
    return 1 / (1 + np.exp(-v))


def numpy_lstm(x, cont, W_xc, b_c, W_hc, x_static=None, W_static=None, h0=None, c0=None):
    """Caffe's unrolled LSTM, gates [i | f | o | g]. Returns h (T, N, H), h_T, c_T."""
    T, N = cont.shape
    H = W_hc.shape[1]
    h = np.zeros((N, H)) if h0 is None else h0.copy()
    c = np.zeros((N, H)) if c0 is None else c0.copy()
    static = 0 if x_static is None else x_static.reshape(N, -1) @ W_static.T
    out = []
    for t in range(T):
        k = cont[t][:, None]
        a = x[t].reshape(N, -1) @ W_xc.T + b_c + static + (k * h) @ W_hc.T
        i, f, o = sigmoid(a[:, :H]), sigmoid(a[:, H:2 * H]), sigmoid(a[:, 2 * H:3 * H])
        g = np.tanh(a[:, 3 * H:])
        c = k * f * c + i * g
        h = o * np.tanh(c)
        out.append(h)
    return np.stack(out), h, c


def numpy_rnn(x, cont, W_xh, b_h, W_hh, W_ho, b_o, x_static=None, W_static=None, h0=None):
    T, N = cont.shape
    H = W_hh.shape[0]
    h = np.zeros((N, H)) if h0 is None else h0.copy()
    static = 0 if x_static is None else x_static.reshape(N, -1) @ W_static.T
    out = []
    for t in range(T):
        h = np.tanh((cont[t][:, None] * h) @ W_hh.T + x[t].reshape(N, -1) @ W_xh.T + b_h
                    + static)
        out.append(np.tanh(h @ W_ho.T + b_o))
    return np.stack(out), h


def set_blobs(layer, arrays):
    with torch.no_grad():
        for blob, array in zip(layer.blobs, arrays):
            blob.copy_(torch.as_tensor(array))


# ---------------------------------------------------------------------------------------------
# Construction


def test_units_are_registered():
    assert unit_for("LSTM") is LSTM
    assert unit_for("RNN") is RNN
    assert unit_for("LSTMUnit") is LSTMUnit


def test_lstm_blobs_in_caffe_order_and_layout():
    layer = make("LSTM", T=3, N=2, x_dims=(2, 3), H=4, Ds=5)
    assert [tuple(b.shape) for b in layer.blobs] == [(16, 6), (16,), (16, 5), (16, 4)]
    assert layer.no_grad_bottoms == (1,)


def test_default_fillers_are_zero():
    layer = make("LSTM", T=2, N=1, x_dims=(3,), H=2, fillers=False)
    assert all(torch.all(b == 0) for b in layer.blobs)


def test_exposed_states_are_no_grad_bottoms():
    assert make("LSTM", 2, 1, (3,), 2, Ds=4, expose=True).no_grad_bottoms == (1, 3, 4)
    assert make("RNN", 2, 1, (3,), 2, expose=True).no_grad_bottoms == (1, 2)


def test_timesteps_are_fixed():
    layer = make("LSTM", T=3, N=2, x_dims=(4,), H=3)
    with pytest.raises(ValueError, match="timesteps"):
        layer(torch.zeros(4, 2, 4, dtype=F64), torch.zeros(4, 2, dtype=F64))


# ---------------------------------------------------------------------------------------------
# LSTM against NumPy


@pytest.mark.parametrize("static", [False, True])
def test_lstm_matches_numpy_with_caffe_layout_weights(static):
    rng = np.random.default_rng(1)
    T, N, x_dims, H, Ds = 6, 4, (2, 3), 5, 7
    layer = make("LSTM", T, N, x_dims, H, Ds=Ds if static else None)
    W_xc, b_c = rng.normal(0, 0.5, (4 * H, 6)), rng.normal(0, 0.5, 4 * H)
    W_s, W_hc = rng.normal(0, 0.5, (4 * H, Ds)), rng.normal(0, 0.5, (4 * H, H))
    set_blobs(layer, [W_xc, b_c] + ([W_s] if static else []) + [W_hc])
    x, x_static = rng.normal(size=(T, N, *x_dims)), rng.normal(size=(N, Ds))
    cont = random_cont(T, N, rng)
    bottoms = [t64(x), t64(cont)] + ([t64(x_static)] if static else [])
    (h,) = layer(*bottoms)
    expected, _, _ = numpy_lstm(x, cont, W_xc, b_c, W_hc,
                                x_static if static else None, W_s if static else None)
    np.testing.assert_allclose(h.detach().numpy(), expected, rtol=0, atol=1e-12)


def test_static_input_is_added_at_every_step():
    # A static input is the same as appending x_static to every step's input.
    rng = np.random.default_rng(2)
    T, N, D, H, Ds = 5, 3, 4, 3, 2
    with_static = make("LSTM", T, N, (D,), H, Ds=Ds, seed=3)
    appended = make("LSTM", T, N, (D + Ds,), H)
    W_xc, b_c, W_s, W_hc = (b.detach() for b in with_static.blobs)
    set_blobs(appended, [torch.cat([W_xc, W_s], dim=1), b_c, W_hc])
    x, x_static = t64(rng.normal(size=(T, N, D))), t64(rng.normal(size=(N, Ds)))
    cont = t64(random_cont(T, N, rng))
    x_appended = torch.cat([x, x_static.expand(T, N, Ds)], dim=2)
    torch.testing.assert_close(with_static(x, cont, x_static)[0], appended(x_appended, cont)[0],
                               rtol=0, atol=1e-12)


def test_cont_zero_mid_sequence_is_a_fresh_start():
    rng = np.random.default_rng(4)
    T, N, D, H, k = 7, 3, 4, 5, 3
    full = make("LSTM", T, N, (D,), H)
    tail = share_blobs(make("LSTM", T - k, N, (D,), H), full)
    x = t64(rng.normal(size=(T, N, D)))
    cont = torch.ones(T, N, dtype=F64)
    cont[k] = 0
    h_full = full(x, cont)[0]
    h_tail = tail(x[k:], cont[k:])[0]
    torch.testing.assert_close(h_full[k:], h_tail, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# State: across time steps, across calls, exposed


@pytest.mark.parametrize("static", [False, True])
def test_one_call_equals_single_step_calls_with_carried_state(static):
    rng = np.random.default_rng(5)
    T, N, D, H, Ds = 6, 4, 3, 5, 2
    Ds = Ds if static else None
    sequence = make("LSTM", T, N, (D,), H, Ds=Ds)
    step = share_blobs(make("LSTM", 1, N, (D,), H, Ds=Ds), sequence)
    x, cont = t64(rng.normal(size=(T, N, D))), t64(random_cont(T, N, rng))
    extra = [t64(rng.normal(size=(N, Ds)))] if static else []
    h_all = sequence(x, cont, *extra)[0]
    h_steps = torch.cat([step(x[t:t + 1], cont[t:t + 1], *extra)[0] for t in range(T)])
    torch.testing.assert_close(h_all, h_steps, rtol=0, atol=1e-10)


def test_state_is_carried_across_calls_and_reset_clears_it():
    rng = np.random.default_rng(6)
    T, N, D, H = 4, 3, 2, 4
    chunk = make("LSTM", T, N, (D,), H)
    whole = share_blobs(make("LSTM", 2 * T, N, (D,), H), chunk)
    x = t64(rng.normal(size=(2 * T, N, D)))
    cont = t64(random_cont(2 * T, N, rng))
    expected = whole(x, cont)[0]
    first, second = chunk(x[:T], cont[:T])[0], chunk(x[T:], cont[T:])[0]
    torch.testing.assert_close(torch.cat([first, second]), expected, rtol=0, atol=1e-12)

    chunk.reset_state()
    again = chunk(x[:T], cont[:T])[0]
    torch.testing.assert_close(again, first, rtol=0, atol=0)


def test_carried_state_carries_no_gradient():
    rng = np.random.default_rng(7)
    layer = make("LSTM", 3, 2, (3,), 4)
    x1 = t64(rng.normal(size=(3, 2, 3)), grad=True)
    x2 = t64(rng.normal(size=(3, 2, 3)), grad=True)
    cont = torch.ones(3, 2, dtype=F64)
    layer(x1, cont)
    layer(x2, cont)[0].sum().backward()
    assert x1.grad is None and x2.grad is not None


def test_batch_size_change_resets_state():
    rng = np.random.default_rng(8)
    layer = make("LSTM", 2, 3, (3,), 4)
    ones3, ones2 = torch.ones(2, 3, dtype=F64), torch.ones(2, 2, dtype=F64)
    layer(t64(rng.normal(size=(2, 3, 3))), ones3)
    x = t64(rng.normal(size=(2, 2, 3)))
    after_change = layer(x, ones2)[0]
    layer.reset_state()
    torch.testing.assert_close(after_change, layer(x, ones2)[0], rtol=0, atol=0)


def test_expose_hidden_states_in_and_out():
    rng = np.random.default_rng(9)
    T, N, D, H = 5, 3, 4, 3
    exposed = make("LSTM", T, N, (D,), H, expose=True)
    W_xc, b_c, W_hc = (b.detach().numpy() for b in exposed.blobs)
    x, cont = rng.normal(size=(T, N, D)), random_cont(T, N, rng)
    cont[0] = [1, 0, 1]                                   # stream 1 restarts, others continue
    h0, c0 = rng.normal(size=(1, N, H)), rng.normal(size=(1, N, H))
    h0_t, c0_t = t64(h0, grad=True), t64(c0, grad=True)
    h, h_T, c_T = exposed(t64(x), t64(cont), h0_t, c0_t)
    ref_h, ref_hT, ref_cT = numpy_lstm(x, cont, W_xc, b_c, W_hc, h0=h0[0], c0=c0[0])
    np.testing.assert_allclose(h.detach().numpy(), ref_h, atol=1e-12, rtol=0)
    np.testing.assert_allclose(h_T.numpy()[0], ref_hT, atol=1e-12, rtol=0)
    np.testing.assert_allclose(c_T.numpy()[0], ref_cT, atol=1e-12, rtol=0)
    # Exposed states carry no gradient, in or out; and exposing them carries no state.
    assert not h_T.requires_grad and not c_T.requires_grad
    h.sum().backward()
    assert h0_t.grad is None and c0_t.grad is None
    assert exposed.h_carry is None


def test_exposed_chain_equals_carried_state():
    rng = np.random.default_rng(10)
    T, N, D, H = 3, 2, 3, 4
    carried = make("LSTM", T, N, (D,), H)
    exposed = share_blobs(make("LSTM", T, N, (D,), H, expose=True), carried)
    h_T, c_T = torch.zeros(1, N, H, dtype=F64), torch.zeros(1, N, H, dtype=F64)
    for _ in range(3):
        x, cont = t64(rng.normal(size=(T, N, D))), t64(random_cont(T, N, rng, 0.2))
        h, h_T, c_T = exposed(x, cont, h_T, c_T)
        torch.testing.assert_close(h, carried(x, cont)[0], rtol=0, atol=1e-12)


def test_exposed_state_shape_is_checked():
    layer = make("LSTM", 2, 3, (2,), 4, expose=True)
    with pytest.raises(ValueError, match="h0"):
        layer(torch.zeros(2, 3, 2, dtype=F64), torch.zeros(2, 3, dtype=F64),
              torch.zeros(1, 2, 4, dtype=F64), torch.zeros(1, 3, 4, dtype=F64))


# ---------------------------------------------------------------------------------------------
# Gradients


def gradcheck_layer(layer, inputs, fixed):
    """gradcheck of the layer's first top w.r.t. `inputs` (bottoms) and every blob."""
    names = [f"blobs.{i}" for i in range(len(layer.blobs))]
    blobs = [b.detach().clone().requires_grad_() for b in layer.blobs]

    def run(*args):
        layer.reset_state()      # gradcheck calls run many times: start each from zero state
        bottoms, params = args[:len(inputs)], args[len(inputs):]
        return functional_call(layer, dict(zip(names, params)), fixed(*bottoms))[0]

    assert torch.autograd.gradcheck(run, (*inputs, *blobs))


@pytest.mark.parametrize("static", [False, True])
def test_lstm_gradcheck(static):
    rng = np.random.default_rng(11)
    T, N, D, H, Ds = 4, 3, 3, 2, 2
    layer = make("LSTM", T, N, (D,), H, Ds=Ds if static else None)
    cont = t64(random_cont(T, N, rng))
    x, x_static = t64(rng.normal(size=(T, N, D)), True), t64(rng.normal(size=(N, Ds)), True)
    inputs = [x, x_static] if static else [x]
    gradcheck_layer(layer, inputs, lambda x, *s: (x, cont, *s))


def test_lstm_gradcheck_from_exposed_state():
    rng = np.random.default_rng(12)
    T, N, D, H = 3, 3, 2, 3
    layer = make("LSTM", T, N, (D,), H, expose=True)
    cont = random_cont(T, N, rng)
    cont[0] = [1, 1, 0]
    cont = t64(cont)
    h0, c0 = t64(rng.normal(size=(1, N, H))), t64(rng.normal(size=(1, N, H)))
    x = t64(rng.normal(size=(T, N, D)), True)
    gradcheck_layer(layer, [x], lambda x: (x, cont, h0, c0))


def test_scan_gradcheck_including_initial_and_final_state():
    # The hand-written BPTT in full: gradients to the gate inputs, W_hc, h0, c0 and from c_T.
    rng = np.random.default_rng(13)
    T, N, H = 4, 3, 2
    cont = t64(random_cont(T, N, rng))
    cont[0, 0] = 1
    gx = t64(rng.normal(size=(T, N, 4 * H)), True)
    W_hc = t64(rng.normal(size=(4 * H, H)), True)
    h0, c0 = t64(rng.normal(size=(N, H)), True), t64(rng.normal(size=(N, H)), True)
    assert torch.autograd.gradcheck(
        lambda gx, W, h0, c0: _LSTMScan.apply(gx, cont, W, h0, c0), (gx, W_hc, h0, c0))


def test_non_binary_cont_is_differentiated_exactly():
    rng = np.random.default_rng(14)
    T, N, H = 3, 2, 2
    cont = t64(rng.uniform(0.2, 0.9, size=(T, N)))
    gx = t64(rng.normal(size=(T, N, 4 * H)), True)
    W_hc = t64(rng.normal(size=(4 * H, H)), True)
    c0 = t64(rng.normal(size=(N, H)), True)
    h0 = torch.zeros(N, H, dtype=F64)
    assert torch.autograd.gradcheck(
        lambda gx, W, c0: _LSTMScan.apply(gx, cont, W, h0, c0), (gx, W_hc, c0))


# ---------------------------------------------------------------------------------------------
# Fused fast path


def fused_and_plain(layer, *bottoms):
    """(fused tops, plain tops, fused grads, plain grads) of the same layer and bottoms."""
    results = []
    for fused in (True, False):
        layer.fused = fused
        layer.reset_state()
        inputs = [b.detach().clone().requires_grad_(b.requires_grad) for b in bottoms]
        tops = layer(*inputs)
        layer.zero_grad()
        tops[0].square().sum().backward()
        grads = [b.grad for b in inputs if b.requires_grad] + [p.grad for p in layer.blobs]
        results.append(([t.detach() for t in tops], grads))
    layer.fused = type(layer).fused
    return results


@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-6), (F64, 1e-12)])
@pytest.mark.parametrize("static", [False, True])
def test_fused_path_equals_plain_path(dtype, atol, static):
    rng = np.random.default_rng(15)
    T, N, D, H, Ds = 6, 4, 5, 3, 2
    layer = make("LSTM", T, N, (D,), H, Ds=Ds if static else None, dtype=dtype)
    x = torch.tensor(rng.normal(size=(T, N, D)), dtype=dtype, requires_grad=True)
    cont = torch.ones(T, N, dtype=dtype)
    cont[0] = torch.tensor([0, 1, 0, 1])           # mixed restarts at t = 0 are allowed
    extra = [torch.tensor(rng.normal(size=(N, Ds)), dtype=dtype, requires_grad=True)]
    (fused_tops, fused_grads), (plain_tops, plain_grads) = fused_and_plain(
        layer, x, cont, *(extra if static else []))
    for a, b in zip(fused_tops + fused_grads, plain_tops + plain_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=atol)


def test_fused_path_carries_state_like_the_plain_path():
    rng = np.random.default_rng(16)
    T, N, D, H = 3, 2, 3, 4
    layer = make("LSTM", T, N, (D,), H)
    xs = [t64(rng.normal(size=(T, N, D))) for _ in range(3)]
    cont = torch.ones(T, N, dtype=F64)
    runs = []
    for fused in (True, False):
        layer.fused = fused
        layer.reset_state()
        runs.append([layer(x, cont)[0] for x in xs])
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_fused_path_with_exposed_states():
    rng = np.random.default_rng(17)
    T, N, D, H = 3, 2, 3, 4
    layer = make("LSTM", T, N, (D,), H, expose=True)
    x = t64(rng.normal(size=(T, N, D)))
    cont = torch.tensor([[0, 1], [1, 1], [1, 1]], dtype=F64)
    h0, c0 = t64(rng.normal(size=(1, N, H))), t64(rng.normal(size=(1, N, H)))
    (fused, _), (plain, _) = fused_and_plain(layer, x, cont, h0, c0)
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def padded_cont(lengths, T, dtype=F64):
    """cont of streams of these lengths followed by padding: 0 at t = 0, 1 while the
    sentence lasts, 0 on every padded step (LRCN's caption batches)."""
    cont = torch.zeros(T, len(lengths), dtype=dtype)
    for n, length in enumerate(lengths):
        cont[1:length, n] = 1
    return cont


def count_fused_calls(monkeypatch):
    calls = []
    real = LSTM.forward_fused
    monkeypatch.setattr(LSTM, "forward_fused",
                        lambda self, *a: calls.append(1) or real(self, *a))
    return calls


@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-6), (F64, 1e-12)])
def test_fused_path_covers_padded_streams(monkeypatch, dtype, atol, static):
    # Every padded step (cont 0 after t = 0) starts afresh from a zero state: the fused path
    # runs the whole batch and gives those steps their one-step values, so that values,
    # gradients and the state carried into the next call are the plain path's.
    rng = np.random.default_rng(19)
    T, N, D, H, Ds = 6, 5, 4, 3, 2
    layer = make("LSTM", T, N, (D,), H, Ds=Ds if static else None, dtype=dtype)
    calls = count_fused_calls(monkeypatch)
    x = torch.tensor(rng.normal(size=(T, N, D)), dtype=dtype, requires_grad=True)
    cont = padded_cont([6, 4, 1, 3, 5], T, dtype)
    extra = [torch.tensor(rng.normal(size=(N, Ds)), dtype=dtype, requires_grad=True)]
    (fused_tops, fused_grads), (plain_tops, plain_grads) = fused_and_plain(
        layer, x, cont, *(extra if static else []))
    assert calls == [1]
    for a, b in zip(fused_tops + fused_grads, plain_tops + plain_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=atol)
    # The final states (some streams end on a padded step) continue the next call alike.
    follow = torch.tensor(rng.normal(size=(T, N, D)), dtype=dtype)
    continued = []
    for fused in (True, False):
        layer.fused = fused
        layer.reset_state()
        layer(x.detach(), cont, *(e.detach() for e in extra[:int(static)]))
        continued.append(layer(follow, torch.ones(T, N, dtype=dtype),
                               *(e.detach() for e in extra[:int(static)]))[0])
    torch.testing.assert_close(continued[0], continued[1], rtol=0, atol=atol)


def test_fused_path_with_padding_and_exposed_states(monkeypatch):
    rng = np.random.default_rng(20)
    T, N, D, H = 4, 3, 3, 2
    layer = make("LSTM", T, N, (D,), H, expose=True)
    calls = count_fused_calls(monkeypatch)
    x = t64(rng.normal(size=(T, N, D)))
    cont = padded_cont([4, 2, 3], T)
    cont[0, 1] = 1                       # a continued stream may be padded too
    h0, c0 = t64(rng.normal(size=(1, N, H))), t64(rng.normal(size=(1, N, H)))
    (fused, _), (plain, _) = fused_and_plain(layer, x, cont, h0, c0)
    assert calls == [1]
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("later", [[1, 0, 1], [1, 0.5, 0.5], [2, 2, 2]])
def test_fused_path_falls_back_unless_streams_end_in_padding(monkeypatch, later):
    # Restarts after padding, or cont other than 0 and 1 after t = 0, need the plain path.
    rng = np.random.default_rng(21)
    T, N, D, H = 4, 2, 3, 2
    layer = make("LSTM", T, N, (D,), H)
    layer.fused = True
    calls = count_fused_calls(monkeypatch)
    cont = torch.ones(T, N, dtype=F64)
    cont[0] = 0
    cont[1:, 1] = torch.tensor(later, dtype=F64)
    x = t64(rng.normal(size=(T, N, D)))
    h = layer(x, cont)[0]
    assert calls == []
    layer.reset_state()
    layer.fused = False
    torch.testing.assert_close(h, layer(x, cont)[0], rtol=0, atol=0)


def test_fused_path_falls_back_on_mid_sequence_restarts(monkeypatch):
    rng = np.random.default_rng(18)
    T, N, D, H = 4, 2, 3, 2
    layer = make("LSTM", T, N, (D,), H)
    layer.fused = True
    calls = []
    real = LSTM.forward_fused
    monkeypatch.setattr(LSTM, "forward_fused",
                        lambda self, *a: calls.append(1) or real(self, *a))
    x = t64(rng.normal(size=(T, N, D)))
    cont = torch.ones(T, N, dtype=F64)
    cont[2, 1] = 0
    h = layer(x, cont)[0]
    assert calls == []
    layer.reset_state()
    layer.fused = False
    torch.testing.assert_close(h, layer(x, cont)[0], rtol=0, atol=0)
    cont[2, 1] = 1
    layer.fused = True
    layer(x, cont)
    assert calls == [1]


def test_fused_flag_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("LRCN_FUSED_LSTM", "1")
    assert recurrent._env_flag("LRCN_FUSED_LSTM")
    monkeypatch.setenv("LRCN_FUSED_LSTM", "0")
    assert not recurrent._env_flag("LRCN_FUSED_LSTM")


def test_torch_gate_order_reorders_blocks():
    blob = torch.arange(8.0).repeat_interleave(2).view(8, 2)     # 4 blocks of H = 2 rows
    reordered = recurrent.to_torch_gate_order(blob)[:, 0].tolist()
    assert reordered == [0, 1, 2, 3, 6, 7, 4, 5]


# ---------------------------------------------------------------------------------------------
# RNN


@pytest.mark.parametrize("static", [False, True])
def test_rnn_matches_numpy(static):
    rng = np.random.default_rng(19)
    T, N, D, H, Ds = 5, 3, 4, 3, 2
    layer = make("RNN", T, N, (D,), H, Ds=Ds if static else None)
    arrays = [b.detach().numpy() for b in layer.blobs]
    if not static:
        arrays.insert(2, None)
    W_xh, b_h, W_s, W_hh, W_ho, b_o = arrays
    x, x_static = rng.normal(size=(T, N, D)), rng.normal(size=(N, Ds))
    cont = random_cont(T, N, rng)
    bottoms = [t64(x), t64(cont)] + ([t64(x_static)] if static else [])
    expected, _ = numpy_rnn(x, cont, W_xh, b_h, W_hh, W_ho, b_o,
                            x_static if static else None, W_s)
    np.testing.assert_allclose(layer(*bottoms)[0].detach().numpy(), expected, atol=1e-12, rtol=0)


def test_rnn_carries_and_exposes_state():
    rng = np.random.default_rng(20)
    T, N, D, H = 3, 2, 3, 4
    carried = make("RNN", T, N, (D,), H)
    exposed = share_blobs(make("RNN", T, N, (D,), H, expose=True), carried)
    W_xh, b_h, W_hh, W_ho, b_o = (b.detach().numpy() for b in carried.blobs)
    h_T = torch.zeros(1, N, H, dtype=F64)
    h_ref = np.zeros((N, H))
    for _ in range(3):
        x, cont = rng.normal(size=(T, N, D)), random_cont(T, N, rng, 0.2)
        o, h_T = exposed(t64(x), t64(cont), h_T)
        expected, h_ref = numpy_rnn(x, cont, W_xh, b_h, W_hh, W_ho, b_o, h0=h_ref)
        np.testing.assert_allclose(o.detach().numpy(), expected, atol=1e-12, rtol=0)
        np.testing.assert_allclose(h_T.numpy()[0], h_ref, atol=1e-12, rtol=0)
        torch.testing.assert_close(carried(t64(x), t64(cont))[0], o, rtol=0, atol=1e-12)
    assert not h_T.requires_grad


def test_rnn_gradcheck():
    rng = np.random.default_rng(21)
    T, N, D, H, Ds = 3, 2, 3, 2, 2
    layer = make("RNN", T, N, (D,), H, Ds=Ds)
    cont = t64(random_cont(T, N, rng))
    x, x_static = t64(rng.normal(size=(T, N, D)), True), t64(rng.normal(size=(N, Ds)), True)
    gradcheck_layer(layer, [x, x_static], lambda x, s: (x, cont, s))


# ---------------------------------------------------------------------------------------------
# LSTMUnit


def make_unit():
    text = ('layer { name: "unit" type: "LSTMUnit" bottom: "c_prev" bottom: "x" '
            'bottom: "cont" top: "c" top: "h" }')
    return LSTMUnit(compiled_layer(text, [(1, 3, 4), (1, 3, 16), (1, 3)],
                                   [(1, 3, 4), (1, 3, 4)]), torch.Generator())


def test_lstm_unit_matches_numpy():
    rng = np.random.default_rng(22)
    H = 4
    c_prev, x = rng.normal(size=(1, 3, H)), rng.normal(size=(1, 3, 4 * H))
    cont = np.array([[1.0, 0.0, 1.0]])
    c, h = make_unit()(t64(c_prev), t64(x), t64(cont))
    i, f = sigmoid(x[..., :H]), sigmoid(x[..., H:2 * H])
    o, g = sigmoid(x[..., 2 * H:3 * H]), np.tanh(x[..., 3 * H:])
    c_ref = cont[..., None] * f * c_prev + i * g
    np.testing.assert_allclose(c.numpy(), c_ref, atol=1e-14, rtol=0)
    np.testing.assert_allclose(h.numpy(), o * np.tanh(c_ref), atol=1e-14, rtol=0)


def test_lstm_unit_gradcheck_and_no_cont_gradient():
    rng = np.random.default_rng(23)
    unit = make_unit()
    cont = t64([[1.0, 0.0, 1.0]], grad=True)
    c_prev, x = t64(rng.normal(size=(1, 3, 4)), True), t64(rng.normal(size=(1, 3, 16)), True)
    assert torch.autograd.gradcheck(lambda c, x: unit(c, x, cont), (c_prev, x))
    sum(t.sum() for t in unit(c_prev, x, cont)).backward()
    assert cont.grad is None
    assert unit.no_grad_bottoms == (2,)


def test_lstm_unit_checks_shapes():
    with pytest.raises(ValueError, match="LSTMUnit"):
        make_unit()(torch.zeros(1, 3, 4), torch.zeros(1, 3, 12), torch.zeros(1, 3))
