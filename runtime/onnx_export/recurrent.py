"""Converters: LSTM and RNN unrolled over the net's T, and LSTMUnit."""

import math

from .build import _State
from .registry import converter


def _recurrent_states(ctx, names):
    """The initial states as (N, H) values: exposed bottoms (expose_hidden), explicit graph
    inputs (step mode), or None for zeros (the first step then skips the recurrent terms,
    which is exact: cont * 0 = 0)."""
    layer = ctx.layer
    attrs = layer.attrs
    if attrs.expose_hidden:
        first = 2 + int(attrs.static_input)
        return [ctx.squeeze(ctx.inputs[first + k], [0], label=f"{name}0")
                for k, name in enumerate(names)]
    if ctx.step_states is None:
        return [None] * len(names)
    states = []
    for name in names:
        x_axis, x_label = ctx.dynamic.dim(layer.bottoms[0])
        state = _State(f"{layer.key}.{name}0", f"{layer.key}.{name}T",
                       (1, layer.bottom_shapes[0][1], attrs.num_output),
                       (1, x_label) if x_axis is not None else (None, None))
        ctx.graph.values.update((state.input, state.output))
        ctx.step_states[f"{layer.key}.{name}"] = state
        states.append(ctx.squeeze(state.input, [0], label=f"{name}0"))
    return states


def _final_state_outputs(ctx, names):
    """Where the final states go: exposed tops, step-mode graph outputs, or nowhere."""
    if ctx.unit.expose_hidden:
        return ctx.outputs[1:1 + len(names)]
    if ctx.step_states is not None:
        return [ctx.step_states[f"{ctx.layer.key}.{name}"].output for name in names]
    return [None] * len(names)


def _named_blob(ctx, name):
    """A recurrent layer's blob by its name in RecurrentAttrs.blobs (Caffe's order)."""
    return ctx.blob(ctx.layer.attrs.blobs.index(name), name)


def _input_gates(ctx, gate_rows, W_role, b_role, static_role):
    """W x_t + b for all T steps (one Gemm), plus the static term: (T, N, rows)."""
    x_shape = ctx.bottom_shape(0)
    T = x_shape[0]
    flat = ctx.reshape(ctx.inputs[0], (-1, math.prod(x_shape[2:])), None, label="x_rows")
    gx = ctx.op("Gemm", [flat, _named_blob(ctx, W_role), _named_blob(ctx, b_role)],
                label="x_gemm", transB=1)
    gx = ctx.reshape(gx, (T, -1, gate_rows), None, label="x_gates")
    if ctx.layer.attrs.static_input:
        static_shape = ctx.bottom_shape(2)
        xs = ctx.reshape(ctx.inputs[2], (-1, math.prod(static_shape[1:])), None,
                         label="static_rows")
        static = ctx.op("Gemm", [xs, _named_blob(ctx, static_role)], label="static_gemm",
                        transB=1)
        gx = ctx.op("Add", [gx, static], label="gates_static")
    return gx


def _per_step(ctx, gx, T):
    """gx (T, N, R) and cont (T, N) -> per-step (N, R) gates and (N, 1) cont values."""
    if T == 1:
        steps = [gx]
    else:
        steps = ctx.split(gx, [1] * T, 0, label="steps")
    steps = [ctx.squeeze(s, [0], label=f"t{t}/x_gates") for t, s in enumerate(steps)]
    cont = ctx.op("Transpose", [ctx.inputs[1]], label="cont_columns", perm=[1, 0])
    conts = [cont] if T == 1 else ctx.split(cont, [1] * T, 1, label="cont_steps")
    return steps, conts


def _stack_steps(ctx, hs, out):
    rows = [ctx.unsqueeze(h, [0], out if len(hs) == 1 else None, f"t{t}/h_row")
            for t, h in enumerate(hs)]
    if len(rows) > 1:
        ctx.op("Concat", rows, out, "stack", axis=0)


def _recurrent_check(layer):
    if len(layer.bottom_shapes[1]) != 2:
        return "cont must be (T, N)"
    return None


@converter("LSTM", check=_recurrent_check)
def _lstm(ctx):
    """Caffe's LSTM unrolled over T: a_t = W_hc (cont_t h_{t-1}) + W_xc x_t + b_c (+ static),
    gates [i | f | o | g], c_t = cont_t f c_{t-1} + i g, h_t = o tanh(c_t)."""
    H, T = ctx.layer.attrs.num_output, ctx.bottom_shape(0)[0]
    gx = _input_gates(ctx, 4 * H, "W_xc", "b_c", "W_xc_static")
    W_hc = _named_blob(ctx, "W_hc")
    steps, conts = _per_step(ctx, gx, T)
    h, c = _recurrent_states(ctx, ("h", "c"))
    hs = []
    for t in range(T):
        p = f"t{t}/"
        if h is None:
            a = steps[t]
        else:
            kept = ctx.op("Mul", [h, conts[t]], label=p + "h_cont")
            a = ctx.op("Gemm", [kept, W_hc, steps[t]], label=p + "gates", transB=1)
        i, f, o, g = ctx.split(a, [H] * 4, 1, label=p + "ifog")
        i = ctx.op("Sigmoid", [i], label=p + "i")
        o = ctx.op("Sigmoid", [o], label=p + "o")
        g = ctx.op("Tanh", [g], label=p + "g")
        ig = ctx.op("Mul", [i, g], label=p + "i_g")
        if c is None:
            c = ig
        else:
            f = ctx.op("Sigmoid", [f], label=p + "f")
            f_cont = ctx.op("Mul", [f, conts[t]], label=p + "f_cont")
            c = ctx.op("Add", [ctx.op("Mul", [f_cont, c], label=p + "f_c"), ig], label=p + "c")
        h = ctx.op("Mul", [o, ctx.op("Tanh", [c], label=p + "tanh_c")], label=p + "h")
        hs.append(h)
    _stack_steps(ctx, hs, ctx.outputs[0])
    for final, out, label in zip((h, c), _final_state_outputs(ctx, ("h", "c")), ("hT", "cT")):
        if out is not None:
            ctx.unsqueeze(final, [0], out, label=label)


@converter("RNN", check=_recurrent_check)
def _rnn(ctx):
    """Caffe's RNN unrolled over T: h_t = tanh(W_hh (cont_t h_{t-1}) + W_xh x_t + b_h
    (+ static)), o_t = tanh(W_ho h_t + b_o)."""
    H, T = ctx.layer.attrs.num_output, ctx.bottom_shape(0)[0]
    gx = _input_gates(ctx, H, "W_xh", "b_h", "W_xh_static")
    W_hh = _named_blob(ctx, "W_hh")
    steps, conts = _per_step(ctx, gx, T)
    (h,) = _recurrent_states(ctx, ("h",))
    hs = []
    for t in range(T):
        p = f"t{t}/"
        if h is None:
            a = steps[t]
        else:
            kept = ctx.op("Mul", [h, conts[t]], label=p + "h_cont")
            a = ctx.op("Gemm", [kept, W_hh, steps[t]], label=p + "a", transB=1)
        h = ctx.op("Tanh", [a], label=p + "h")
        hs.append(h)
    stacked = ctx._temp("h_all")
    _stack_steps(ctx, hs, stacked)
    rows = ctx.reshape(stacked, (-1, H), None, label="h_rows")
    o = ctx.op("Gemm", [rows, _named_blob(ctx, "W_ho"), _named_blob(ctx, "b_o")],
               label="o_gemm", transB=1)
    o = ctx.op("Tanh", [o], label="o")
    ctx.reshape(o, (T, -1, H), None, ctx.outputs[0], "o_steps")
    (out,) = _final_state_outputs(ctx, ("h",))
    if out is not None:
        ctx.unsqueeze(h, [0], out, label="hT")


@converter("LSTMUnit")
def _lstm_unit(ctx):
    """c = cont f c_prev + i g, h = o tanh(c) for (1, N, .) blobs; tops c, h."""
    c_prev, x, cont = ctx.inputs
    H = ctx.bottom_shape(0)[2]
    i, f, o, g = ctx.split(x, [H] * 4, 2, label="ifog")
    i, f, o = (ctx.op("Sigmoid", [v], label=n) for v, n in ((i, "i"), (f, "f"), (o, "o")))
    g = ctx.op("Tanh", [g], label="g")
    cont = ctx.unsqueeze(cont, [2], label="cont")
    f_cont = ctx.op("Mul", [f, cont], label="f_cont")
    c = ctx.op("Add", [ctx.op("Mul", [f_cont, c_prev], label="f_c"),
                       ctx.op("Mul", [i, g], label="i_g")], ctx.outputs[0], "c")
    ctx.op("Mul", [o, ctx.op("Tanh", [c], label="tanh_c")], ctx.outputs[1], "h")
