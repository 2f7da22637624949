"""Caffe's recurrent layers: LSTM, RNN and LSTMUnit.

Semantics follow BVLC Caffe's unrolled nets (recurrent_layer.cpp, lstm_layer.cpp, rnn_layer.cpp)
and lstm_unit_layer.cpp, as LRCN's nets use them (its fork's recurrent branch). Everything is
time-major: x is (T, N, ...), cont is (T, N) with 0 marking the first step of a new sequence.

LSTM gate pre-activations are packed [i | f | o | g] along 4H:
    a_t = W_hc (cont_t * h_{t-1}) + W_xc x_t + b_c (+ W_xc_static x_static)
    c_t = cont_t * sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g);   h_t = sigmoid(o) * tanh(c_t)

State across calls (no expose_hidden): each forward starts from the previous call's h_T, c_T
(detached: truncated BPTT at batch boundaries, as Caffe); `reset_state()` forgets it, and so
does a change of N. With expose_hidden the states come in as bottoms (h0, c0) and go out as
tops (hT, cT), and neither carries a gradient (Caffe shares their data, never their diff).

Speed. The default ("plain") LSTM path projects the inputs of all T steps with one matmul (the
static term once more, broadcast over T) and runs the recurrence in `_LSTMScan`, an
autograd.Function whose step is one addmm plus in-place gate math, and whose backward does the
BPTT step by step but the W_hc gradient as ONE matmul over all steps at the end. A step's
recurrent products leave out the streams whose cont is 0 there (all of them at t = 0, and a
caption batch's padding), and the weight gradients leave out the zero gate-gradient rows of
padded steps (runtime.gemm.rows_in_use): the paper-size LM with a third of its positions
padded, 1063 -> 1008 ms a step for the former, interleaved in one process.

Fused path (opt-in): set `LSTM.fused = True` (class-wide or per layer instance) or the
environment variable LRCN_FUSED_LSTM=1 before import. It runs torch's own fused LSTM
(torch._VF.lstm: oneDNN on CPU, cuDNN on CUDA) whenever it computes the same thing: after the
first step, each stream's cont is 1 up to some step and 0 from there on (cont_0 is folded into
the initial state, so a batch of fresh sequences or a continued one both qualify, and so do
LRCN's caption batches, whose padding has cont 0 at every step). A padded step starts from a
zero state, so it needs no recurrence: the fused run goes through all T steps and the padded
ones are then given their one-step values (one product over the padded rows). The test is one
reduction over cont per call; otherwise the call falls back to the plain path. On 2 CPU cores
the fused path does not pay on the caption net's LSTMs (T 16, N 50, H 256, padded: equal
without a static input, 1.3x slower with one); it is there for cuDNN, where the scan costs
several kernel launches per step. Caffe's [i, f, o, g] blocks become
torch's [i, f, g, o] (blocks 0, 1, 3, 2); b_c is the input bias (the hidden bias is zero); a
static input is appended to every step's input with W_xc_static appended to W_xc, which costs T
static projections instead of one. On CUDA cuDNN's RNN may use TF32 unless
torch.backends.cudnn.allow_tf32 is False, so the two paths then agree only to ~1e-3.
"""

import os
import warnings

import torch
from torch.autograd.function import once_differentiable

from runtime import gemm
from runtime.layers.base import CaffeLayer, LayerError
from runtime.layers.registry import register


def _env_flag(name):
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


# ---------------------------------------------------------------------------------------------
# LSTM math


def lstm_unit(a, c_prev, cont):
    """One LSTMUnit step (lstm_unit_layer.cpp), differentiable by autograd.

    a: (..., 4H) gate pre-activations [i | f | o | g]; c_prev: (..., H); cont broadcastable to
    c_prev. Returns (c, h). cont scales the forget gate, so cont = 0 drops c_prev entirely.
    """
    i, f, o, g = a.chunk(4, dim=-1)
    i, f, o, g = torch.sigmoid(i), torch.sigmoid(f) * cont, torch.sigmoid(o), torch.tanh(g)
    c = f * c_prev + i * g
    return c, o * torch.tanh(c)


def _continued_rows(ct, W_hc):
    """Per step, the rows (streams) whose cont is not 0, or None for all rows: a stream with
    cont 0 multiplies its h_{t-1} by 0, so its rows of the recurrent products are zero
    (forward) or unused (backward), and skipping them pays where runtime.gemm says so (a
    caption batch's padding, and every stream at t = 0)."""
    T, N, _ = ct.shape
    macs = N * W_hc.shape[0] * W_hc.shape[1]
    if not gemm.skipping_pays(N, N, macs, ct.device):
        return [None] * T
    stopped = ct.squeeze(2) == 0
    counts = stopped.sum(1).tolist()                 # the one host sync
    return [stopped[t].logical_not().nonzero().squeeze(1)
            if gemm.skipping_pays(N, counts[t], macs, ct.device) else None for t in range(T)]


class _LSTMScan(torch.autograd.Function):
    """The LSTM recurrence over precomputed input gates, with a hand-written BPTT.

    forward(gx (T, N, 4H), cont (T, N), W_hc (4H, H), h0 (N, H), c0 (N, H)) -> (h (T, N, H), c_T)
    Autograd of a per-step loop would build ~10 nodes per step and sum T separate (4H, H) weight
    gradients. Here a forward step is one product plus in-place gate math; the backward first
    computes, for all T steps at once, every factor that does not depend on later steps (the
    activations' derivatives, forget gates), so that a backward step is one product and five
    small operations; dW_hc is one product over all steps.
    """

    @staticmethod
    def forward(ctx, gx, cont, W_hc, h0, c0):
        T, N, H4 = gx.shape
        H = H4 // 4
        ct = cont.to(gx.dtype).unsqueeze(2)            # (T, N, 1): broadcasts over units
        gates = torch.empty_like(gx)                    # sigmoid(i, f, o), tanh(g); f sans cont
        h_conted = gx.new_empty(T, N, H)                # cont_t * h_{t-1}: the W_hc operand
        cells = gx.new_empty(T + 1, N, H)               # [0]: initial c; [t + 1]: c_t
        tanh_c = gx.new_empty(T, N, H)
        h = gx.new_empty(T, N, H)
        cells[0] = c0
        h_prev = h0
        W_t = W_hc.t()
        continued = _continued_rows(ct, W_hc)
        for t in range(T):
            torch.mul(h_prev, ct[t], out=h_conted[t])
            # A stream with cont 0 has no recurrent term.
            a = torch.add(gx[t], gemm.mm_over_rows(h_conted[t], W_t, continued[t]), out=gates[t])
            a[:, :3 * H].sigmoid_()
            a[:, 3 * H:].tanh_()
            i, f, o, g = a.split(H, dim=1)
            c = torch.mul(f, ct[t], out=cells[t + 1])   # cont * f ...
            c.mul_(cells[t]).addcmul_(i, g)             # ... * c_{t-1} + i * g
            torch.tanh(c, out=tanh_c[t])
            h_prev = torch.mul(o, tanh_c[t], out=h[t])
        ctx.save_for_backward(gates, h_conted, cells, tanh_c, ct, W_hc)
        ctx.continued = continued
        return h, cells[T].clone()

    @staticmethod
    @once_differentiable      # the backward is hand-written: refuse double backward loudly
    def backward(ctx, dh_out, dc_T):
        gates, h_conted, cells, tanh_c, ct, W_hc = ctx.saved_tensors
        T, N, H4 = gates.shape
        H = H4 // 4
        i, f, o, g = gates.split(H, dim=2)
        # Per step t: dc_t = dc_{t+1} * forget[t + 1] + dh_t * through_h[t], and the gate
        # gradients are dc_t (i, f, g) or dh_t (o) times the factors below.
        forget = f * ct                                  # dc_{t-1} = dc_t * cont_t * f_t
        through_h = o * (1 - tanh_c * tanh_c)            # dh_t -> dc_t
        # Not out= into views of one buffer: torch.compile refuses that (a graph break).
        d_gates = torch.cat((g * (i * (1 - i)),                  # di = dc g sigmoid'(i)
                             (cells[:T] * ct) * (f * (1 - f)),   # df = dc cont c_{t-1} sigm'(f)
                             tanh_c * (o * (1 - o)),             # do = dh tanh(c) sigmoid'(o)
                             i * (1 - g * g)), dim=2)            # dg = dc i tanh'(g)
        # d_gates holds these factors; each step scales its own in place.
        dc = dc_T.clone() if dc_T is not None else gates.new_zeros(N, H)
        dh_next = None
        need_h0 = ctx.needs_input_grad[3]
        for t in reversed(range(T)):
            dh = dh_out[t] if dh_next is None else dh_out[t] + dh_next
            dc = torch.addcmul(dc, dh, through_h[t])
            d_gates[t].view(N, 4, H).mul_(torch.stack((dc, dc, dh, dc), dim=1))
            dc = dc.mul_(forget[t])
            if t > 0 or need_h0:                         # dh_{-1} is only wanted for h0
                dh_next = gemm.mm_over_rows(d_gates[t], W_hc, ctx.continued[t]).mul_(ct[t])
        d_W = gemm.weight_gradient(d_gates.view(T * N, H4), h_conted.view(T * N, H))
        return (d_gates, None, d_W,
                dh_next if need_h0 else None,
                dc if ctx.needs_input_grad[4] else None)


_TORCH_GATE_BLOCKS = [0, 1, 3, 2]   # Caffe [i, f, o, g] -> torch [i, f, g, o]


def to_torch_gate_order(blob):
    """Reorder a (4H, ...) Caffe gate blob into torch.nn.LSTM's [i, f, g, o] packing."""
    return blob.unflatten(0, (4, -1))[_TORCH_GATE_BLOCKS].flatten(0, 1)


# ---------------------------------------------------------------------------------------------
# Shared plumbing of LSTM and RNN


class _Recurrent(CaffeLayer):
    """Bottom/top layout, shape checks and carried state common to Caffe's recurrent layers."""

    state_names = ()      # ("h",) or ("h", "c"): the recurrent blobs, in Caffe's bottom order
    gates = 1             # blocks of H per input projection (LSTM: 4)

    def __init__(self, layer, rng):
        super().__init__(layer, rng)
        attrs = layer.attrs
        self.H, self.expose_hidden = attrs.num_output, attrs.expose_hidden
        n_exposed = len(self.state_names) if self.expose_hidden else 0
        self.static_input = attrs.static_input
        x_shape = layer.bottom_shapes[0] if layer.bottom_shapes else None
        self.T = x_shape[0] if x_shape else None     # fixed at setup; N may change
        first_state = 2 + int(self.static_input)
        self.no_grad_bottoms = (1,) + tuple(range(first_state, first_state + n_exposed))
        for name in self.state_names:
            self.register_buffer(f"{name}_carry", None, persistent=False)

    def add_blobs(self):
        """Create the blobs the compiler named (RecurrentAttrs.blobs: Caffe's order) with
        layer.param_shapes: bias_filler for the biases, weight_filler for every matrix."""
        rp = self.layer.param.recurrent_param
        for name, shape in zip(self.layer.attrs.blobs, self.layer.param_shapes):
            self.add_blob(shape, rp.bias_filler if name.startswith("b_") else rp.weight_filler)

    def named_blobs(self):
        """{blob name: tensor}, read from self.blobs at call time (a shared blob may have been
        swapped in); a static input's matrix is absent without one."""
        return dict(zip(self.layer.attrs.blobs, self.blobs))

    def split_bottoms(self, bottoms):
        """(x, cont, x_static or None, exposed states or None), with Caffe's shape checks."""
        x, cont = bottoms[0], bottoms[1]
        if x.dim() < 2:
            raise LayerError(self.layer, f"x must be (T, N, ...), got {tuple(x.shape)}")
        T, N = x.shape[:2]
        if self.T is not None and T != self.T:
            raise LayerError(self.layer, f"the number of timesteps is fixed at {self.T} "
                                         f"(Caffe cannot change T after setup); got {T}")
        if tuple(cont.shape) != (T, N):
            raise LayerError(self.layer, f"cont must be (T, N) = {(T, N)}, "
                                         f"got {tuple(cont.shape)}")
        x_static = bottoms[2] if self.static_input else None
        if x_static is not None and x_static.shape[0] != N:
            raise LayerError(self.layer, f"x_static must have N = {N} rows")
        states = None
        if self.expose_hidden:
            states = [s.detach() for s in bottoms[2 + int(self.static_input):]]
            for name, s in zip(self.state_names, states):
                if tuple(s.shape) != (1, N, self.H):
                    raise LayerError(self.layer, f"{name}0 must be (1, N, H) = "
                                                 f"{(1, N, self.H)}, got {tuple(s.shape)}")
        # Caffe's cont is a float blob; it never carries a gradient.
        return x, cont.detach().to(x.dtype), x_static, states

    def carried_states(self, N, like):
        """The previous call's final states, or zeros (first call, after reset, N changed)."""
        carried = [getattr(self, f"{name}_carry") for name in self.state_names]
        if any(s is None or s.shape[1] != N for s in carried):
            return [like.new_zeros(1, N, self.H) for _ in self.state_names]
        return [s.to(like) for s in carried]

    def finish(self, output, final_states):
        """Keep or expose the final states (never differentiable); build the top tuple."""
        # Clones: a state must not alias `output`, which later layers may modify in place.
        final_states = [s.detach().clone() for s in final_states]
        if self.expose_hidden:
            return (output, *final_states)
        for name, s in zip(self.state_names, final_states):
            setattr(self, f"{name}_carry", s)
        return (output,)

    def reset_state(self):
        for name in self.state_names:
            setattr(self, f"{name}_carry", None)

    def resume_state(self):
        """The carried states (None before the first call): a resumed run continues every
        stream whose next batch starts with cont 1 exactly where it stopped."""
        return {name: getattr(self, f"{name}_carry") for name in self.state_names}

    def restore_state(self, state):
        device = self.blobs[0].device
        for name in self.state_names:
            carried = state[name]
            if carried is not None and (carried.dim() != 3 or carried.shape[0] != 1
                                        or carried.shape[2] != self.H):
                raise LayerError(self.layer, f"a carried {name} must be "
                                             f"(1, N, {self.H}), got {tuple(carried.shape)}")
            setattr(self, f"{name}_carry", None if carried is None else carried.to(device))

    def input_projection(self, x, x_static, W_x, b, W_static):
        """W_x x_t + b for all T steps in one matmul, plus W_static x_static (once, broadcast)."""
        T, N = x.shape[:2]
        projected = gemm.linear(x.reshape(T * N, -1), W_x, b).view(T, N, -1)
        if x_static is not None:
            # Not in place: an in-place add to this view makes autograd copy the whole gradient
            # back through it (CopySlices), 0.3-0.8 ms of the main job's ~38 ms step.
            projected = projected + gemm.linear(x_static.reshape(N, -1), W_static)
        return projected


# ---------------------------------------------------------------------------------------------
# Units


@register("LSTM")
class LSTM(_Recurrent):
    """Caffe's LSTM layer. Blobs W_xc (4H, D), b_c (4H,), [W_xc_static (4H, Ds)], W_hc (4H, H).

    Bottoms x, cont, [x_static], [h0, c0]; tops h (T, N, H), [hT, cT].
    `fused` (class or instance attribute) opts into torch's fused LSTM where it is exact.
    """

    state_names = ("h", "c")
    fused = _env_flag("LRCN_FUSED_LSTM")

    def __init__(self, layer, rng):
        super().__init__(layer, rng)
        self.add_blobs()

    def forward(self, *bottoms):
        x, cont, x_static, states = self.split_bottoms(bottoms)
        h0, c0 = states if states is not None else self.carried_states(x.shape[1], x)
        if self.fused_applies(cont):
            h, h_T, c_T = self.forward_fused(x, cont, x_static, h0, c0)
        else:
            h, h_T, c_T = self.forward_plain(x, cont, x_static, h0, c0)
        return self.finish(h, (h_T, c_T))

    def weights(self):
        """(W_xc, b_c, W_xc_static or None, W_hc), read from self.blobs at call time."""
        blobs = self.named_blobs()
        return blobs["W_xc"], blobs["b_c"], blobs.get("W_xc_static"), blobs["W_hc"]

    def fused_applies(self, cont):
        """Whether every stream's cont after t = 0 is 1s then only 0s: a sequence running to
        its end or into padding, where each step starts afresh (LRCN's caption batches)."""
        if not self.fused:
            return False
        later = cont[1:]
        binary = (later == 0) | (later == 1)
        # One reduction on cont's device; the bool() is the one host sync it costs.
        return bool(binary.all() & (later[1:] <= later[:-1]).all())

    def forward_plain(self, x, cont, x_static, h0, c0):
        W_xc, b_c, W_static, W_hc = self.weights()
        gx = self.input_projection(x, x_static, W_xc, b_c, W_static)
        h, c_T = _LSTMScan.apply(gx, cont, W_hc, h0[0], c0[0])
        return h, h[-1:], c_T.unsqueeze(0)

    def forward_fused(self, x, cont, x_static, h0, c0):
        W_xc, b_c, W_static, W_hc = self.weights()
        T, N = x.shape[:2]
        inputs, W_in = x.reshape(T, N, -1), W_xc
        if x_static is not None:
            # torch's LSTM has no per-sample bias slot: feed x_static as extra input columns.
            inputs = torch.cat([inputs, x_static.reshape(1, N, -1).expand(T, N, -1)], dim=2)
            W_in = torch.cat([W_xc, W_static], dim=1)
        # cont_0 scales both h_{-1} (before W_hc) and c_{-1} (with f): fold it into the state.
        keep = cont[0].view(1, N, 1)
        params = [to_torch_gate_order(W_in), to_torch_gate_order(W_hc),
                  to_torch_gate_order(b_c), torch.zeros_like(b_c)]
        with warnings.catch_warnings():
            # cuDNN copies non-flattened weights each call; they are rebuilt each call anyway.
            warnings.filterwarnings("ignore", message=".*contiguous chunk of memory.*")
            h, h_T, c_T = torch._VF.lstm(inputs.contiguous(), (h0 * keep, c0 * keep), params,
                                         True, 1, 0.0, torch.is_grad_enabled(), False, False)
        return self.restart_padded_steps(x, cont, x_static, h, c_T)

    def restart_padded_steps(self, x, cont, x_static, h, c_T):
        """(h, h_T, c_T) with the padded steps (cont 0 after t = 0) given their own values:
        the fused run carried the state through them, but each starts from a zero state, so
        c = sigmoid(i) tanh(g), h = sigmoid(o) tanh(c) of that step's input gates alone. The
        fused values there are replaced, so they get no gradient."""
        W_xc, b_c, W_static, _ = self.weights()
        step, stream = (cont[1:] == 0).nonzero(as_tuple=True)
        step = step + 1
        if len(step):
            gates = gemm.linear(x[step, stream].reshape(len(step), -1), W_xc, b_c)
            if x_static is not None:
                gates = gates + gemm.linear(x_static.reshape(x.shape[1], -1)[stream], W_static)
            zeros = gates.new_zeros(len(step), self.H)
            c_pad, h_pad = lstm_unit(gates, zeros, zeros)
            h = h.index_put((step, stream), h_pad)
            last = step == x.shape[0] - 1
            c_T = c_T.index_put((torch.zeros_like(stream[last]), stream[last]), c_pad[last])
        return h, h[-1:], c_T


@register("RNN")
class RNN(_Recurrent):
    """Caffe's RNN layer. Blobs W_xh (H, D), b_h (H,), [W_xh_static (H, Ds)], W_hh (H, H),
    W_ho (H, H), b_o (H,).

    h_t = tanh(W_hh (cont_t * h_{t-1}) + W_xh x_t + b_h (+ W_xh_static x_static));
    o_t = tanh(W_ho h_t + b_o). Bottoms x, cont, [x_static], [h0]; tops o (T, N, H), [hT].
    """

    state_names = ("h",)

    def __init__(self, layer, rng):
        super().__init__(layer, rng)
        self.add_blobs()

    def weights(self):
        """(W_xh, b_h, W_xh_static or None, W_hh, W_ho, b_o)."""
        blobs = self.named_blobs()
        return (blobs["W_xh"], blobs["b_h"], blobs.get("W_xh_static"), blobs["W_hh"],
                blobs["W_ho"], blobs["b_o"])

    def forward(self, *bottoms):
        x, cont, x_static, states = self.split_bottoms(bottoms)
        (h0,) = states if states is not None else self.carried_states(x.shape[1], x)
        W_xh, b_h, W_static, W_hh, W_ho, b_o = self.weights()
        T, N = x.shape[:2]
        gx = self.input_projection(x, x_static, W_xh, b_h, W_static)
        h, hs = h0[0], []
        for t in range(T):
            h = torch.tanh(gemm.linear(h * cont[t].unsqueeze(1), W_hh, gx[t]))
            hs.append(h)
        hs = torch.stack(hs)
        # The output layer is not recurrent: all T steps in one matmul.
        o = torch.tanh(gemm.linear(hs.view(T * N, -1), W_ho, b_o)).view(T, N, -1)
        return self.finish(o, (hs[-1:],))


@register("LSTMUnit")
class LSTMUnit(CaffeLayer):
    """Caffe's LSTMUnit: bottoms c_prev (1, N, H), x (1, N, 4H) gate pre-activations
    [i | f | o | g], cont (1, N); tops c, h (1, N, H). No blobs; cont gets no gradient."""

    no_grad_bottoms = (2,)

    def forward(self, c_prev, x, cont):
        if c_prev.dim() != 3 or c_prev.shape[0] != 1 or x.shape[:2] != c_prev.shape[:2] \
                or x.shape[2] != 4 * c_prev.shape[2] or tuple(cont.shape) != c_prev.shape[:2]:
            raise LayerError(self.layer, f"LSTMUnit wants c_prev (1, N, H), x (1, N, 4H), "
                                         f"cont (1, N); got {tuple(c_prev.shape)}, "
                                         f"{tuple(x.shape)}, {tuple(cont.shape)}")
        c, h = lstm_unit(x, c_prev, cont.detach().to(x.dtype).unsqueeze(2))
        return c, h
