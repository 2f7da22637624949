"""Declarations of the recurrent layers: LSTM, RNN (recurrent_layer.cpp + lstm_layer.cpp /
rnn_layer.cpp) and LSTMUnit."""

from dataclasses import dataclass

from ..shapes import LayerShapes, count
from . import RECURRENT, BlobCounts, declare, fixed
from .common import _error, _shape_text, _span


# ---------------------------------------------------------------------------------------------
# Recurrent layers: LSTM, RNN (recurrent_layer.cpp + lstm_layer.cpp / rnn_layer.cpp), LSTMUnit
# ---------------------------------------------------------------------------------------------

def _recurrent_inputs(layer, bottoms, num_states):
    """Split and check bottoms as RecurrentLayer::LayerSetUp / Reshape do.

    Bottoms are x (T, N, ...), cont (T, N), an optional x_static (N, ...) and, with
    expose_hidden, the initial states (1, N, H) each. Returns (T, N, H, D, Ds or None).
    """
    param = layer.recurrent_param
    exposed = num_states if param.expose_hidden else 0
    hidden = param.num_output
    if hidden <= 0:
        raise _error(layer, "num_output must be positive",
                     hint="set recurrent_param { num_output: ... }")
    x, cont = bottoms[0], bottoms[1]
    if len(x) < 3:
        # The unrolled net's x transform is an InnerProduct with axis 2.
        raise _error(layer, f"x (bottom 0) must have at least 3 axes (T, N, features...), got "
                            f"{_shape_text(x)}", hint="Reshape it to (T, N, D)")
    steps, streams = x[0], x[1]
    if cont != (steps, streams):
        raise _error(layer, f"cont (bottom 1) must have exactly 2 axes (T, N) = "
                            f"{_shape_text((steps, streams))}, got {_shape_text(cont)}",
                     hint="cont holds one 0/1 marker per time step and stream")
    has_static = len(bottoms) > 2 + exposed
    static_dim = None
    if has_static:
        x_static = bottoms[2]
        # The static transform is an InnerProduct with axis 1 on (N, ...).
        if len(x_static) < 2 or x_static[0] != streams:
            raise _error(layer, f"x_static (bottom 2) must have shape (N, features...) with "
                                f"N = {streams}, got {_shape_text(x_static)}")
        static_dim = _span(x_static, 1)
    state_shape = (1, streams, hidden)
    for i, state in enumerate(bottoms[2 + has_static:], 2 + has_static):
        if state != state_shape:
            raise _error(layer, f"exposed hidden state (bottom {i}) must have shape "
                                f"{_shape_text(state_shape)}, got {_shape_text(state)}")
    return steps, streams, hidden, _span(x, 2), static_dim, exposed


@dataclass(frozen=True)
class RecurrentAttrs:
    """An LSTM / RNN resolved: whether bottom 2 is a static input (a bottom beyond x, cont and
    the exposed states) and the names of its blobs in Caffe's order."""
    num_output: int
    static_input: bool
    expose_hidden: bool
    blobs: tuple             # e.g. ("W_xc", "b_c", "W_xc_static", "W_hc")


def _recurrent_counts(num_states):
    """x, cont, an optional x_static and, with expose_hidden, the initial states as bottoms;
    the output and, with expose_hidden, the final states as tops."""
    def counts(layer):
        exposed = num_states if layer.recurrent_param.expose_hidden else 0
        return BlobCounts(2 + exposed, 3 + exposed, 1 + exposed, 1 + exposed)
    return counts


def _lstm_flops(steps, streams, hidden, input_dim, static_dim):
    gates = 4 * hidden
    flops = 2 * steps * streams * gates * input_dim + steps * streams * gates   # W_xc x + b_c
    summands = 2
    if static_dim is not None:
        flops += 2 * streams * gates * static_dim                               # once
        summands = 3
    per_step = (2 * streams * gates * hidden          # W_hc h_{t-1}
                + streams * hidden                    # cont_t * h_{t-1}
                + (summands - 1) * streams * gates    # summing the gate inputs
                + 10 * streams * hidden)              # LSTMUnit gate math
    return flops + steps * per_step


def _rnn_flops(steps, streams, hidden, input_dim, static_dim):
    flops = 2 * steps * streams * hidden * input_dim + steps * streams * hidden  # W_xh x + b_h
    summands = 2
    if static_dim is not None:
        flops += 2 * streams * hidden * static_dim
        summands = 3
    per_step = (streams * hidden                      # cont_t * h_{t-1}
                + 2 * streams * hidden * hidden       # W_hh h_{t-1}
                + (summands - 1) * streams * hidden   # summing the inputs
                + streams * hidden                    # tanh -> h_t
                + 2 * streams * hidden * hidden       # W_ho h_t
                + 2 * streams * hidden)               # + b_o, tanh -> o_t
    return flops + steps * per_step


@declare("LSTM", counts=_recurrent_counts(2), traits={RECURRENT})
def lstm_rule(layer, bottoms, context):
    steps, streams, hidden, input_dim, static_dim, exposed = _recurrent_inputs(layer, bottoms, 2)
    gates = 4 * hidden   # packed [i | f | o | g]
    params = [(gates, input_dim), (gates,)]            # W_xc, b_c (the only bias)
    if static_dim is not None:
        params.append((gates, static_dim))             # W_xc_static
    params.append((gates, hidden))                     # W_hc
    tops = [(steps, streams, hidden)] + [(1, streams, hidden)] * exposed   # h, [h_T, c_T]
    static = static_dim is not None
    attrs = RecurrentAttrs(hidden, static, bool(exposed),
                           ("W_xc", "b_c") + ("W_xc_static",) * static + ("W_hc",))
    return LayerShapes(tops, params, _lstm_flops(steps, streams, hidden, input_dim, static_dim),
                       attrs)


@declare("RNN", counts=_recurrent_counts(1), traits={RECURRENT})
def rnn_rule(layer, bottoms, context):
    steps, streams, hidden, input_dim, static_dim, exposed = _recurrent_inputs(layer, bottoms, 1)
    params = [(hidden, input_dim), (hidden,)]          # W_xh, b_h
    if static_dim is not None:
        params.append((hidden, static_dim))            # W_xh_static
    params += [(hidden, hidden), (hidden, hidden), (hidden,)]   # W_hh, W_ho, b_o
    tops = [(steps, streams, hidden)] + [(1, streams, hidden)] * exposed   # o, [h_T]
    static = static_dim is not None
    attrs = RecurrentAttrs(hidden, static, bool(exposed), ("W_xh", "b_h")
                           + ("W_xh_static",) * static + ("W_hh", "W_ho", "b_o"))
    return LayerShapes(tops, params, _rnn_flops(steps, streams, hidden, input_dim, static_dim),
                       attrs)


@declare("LSTMUnit", counts=fixed(3, 2))
def lstm_unit_rule(layer, bottoms, context):
    c_prev, gates, cont = bottoms
    streams = c_prev[1] if len(c_prev) == 3 else None
    expected = (("c_prev (bottom 0)", c_prev, 3), ("gate input (bottom 1)", gates, 3),
                ("cont (bottom 2)", cont, 2))
    for name, shape, num_axes in expected:
        if len(shape) != num_axes or shape[0] != 1 or shape[1] != streams:
            want = "(1, N, H)" if num_axes == 3 else "(1, N)"
            raise _error(layer, f"{name} must have shape {want} with one time step and the "
                                f"streams of c_prev, got {_shape_text(shape)}")
    hidden = c_prev[2]
    if gates[2] != 4 * hidden:
        raise _error(layer, f"gate input (bottom 1) must have 4 * H = {4 * hidden} channels "
                            f"(packed i, f, o, g), got {gates[2]}")
    return LayerShapes([c_prev, c_prev], [], 10 * count(c_prev))
