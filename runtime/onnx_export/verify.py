"""Verification of an export against runtime.Net, on the same inputs, in onnxruntime."""

import math
from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper

from compiler.extras import require
from compiler.layer_types import RECURRENT, VALUE_PRESERVING, has_trait

# Pass criterion per output: max |onnx - net| <= RTOL * max |net|, i.e. 1e-4 relative for the
# largest values and an absolute floor of RTOL times the output's largest magnitude for the
# values near zero (float32 sums that cancel carry errors of the size of their terms, not of
# their result, so element-wise relative error means nothing there). An all-zero output must
# match exactly. Measured on the corpus's deploy nets with fan-in-scaled random weights the
# worst blob is at 1.3e-5 (an LSTM after six conv / fc layers), most below 4e-6.
RTOL = 1e-4


def input_kinds(compiled):
    """{input blob: ("index", input_dim) | ("cont",) | ("real",)}, from how the net reads it:
    an Embed bottom holds indices (and a BatchReindex bottom 1, rows of its bottom 0), an
    LSTM / RNN bottom 1 (LSTMUnit bottom 2) cont markers;
    Reshape, Slice, Concat, ... in between keep the role."""
    roles = {}
    for layer in compiled.layers:
        if layer.type == "Embed":
            dim = layer.param.embed_param.input_dim
            previous = roles.get(layer.bottoms[0], ("index", dim))
            roles[layer.bottoms[0]] = ("index", min(dim, previous[1]) if previous[0] == "index"
                                       else dim)
        elif has_trait(layer.type, RECURRENT):
            roles[layer.bottoms[1]] = ("cont",)
        elif layer.type == "LSTMUnit":
            roles[layer.bottoms[2]] = ("cont",)
        elif layer.type == "BatchReindex":
            roles[layer.bottoms[1]] = ("index", layer.attrs.num_rows)
    for layer in reversed(compiled.layers):
        # Through these a blob keeps its role (indices, cont markers) unchanged in value.
        if not has_trait(layer.type, VALUE_PRESERVING):
            continue
        for top in layer.tops:
            if top in roles:
                for bottom in layer.bottoms:
                    roles.setdefault(bottom, roles[top])
    return {name: roles.get(compiled.latest.get(name, name), ("real",))
            for name in compiled.inputs}


def random_inputs(compiled, rng, kinds=None):
    """float32 arrays for every input: indices in [0, input_dim), cont 0/1 (mostly 1, so that
    sequences run on; 0 restarts them), N(0, 1) otherwise."""
    kinds = kinds or input_kinds(compiled)
    feeds = {}
    for name in compiled.inputs:
        shape = compiled.blobs[compiled.latest.get(name, name)]
        kind = kinds[name]
        if kind[0] == "index":
            value = rng.integers(0, kind[1], size=shape)
        elif kind[0] == "cont":
            value = rng.random(size=shape) < 0.7
        else:
            value = rng.standard_normal(size=shape)
        feeds[name] = np.asarray(value, dtype=np.float32)
    return feeds


@dataclass
class OutputDiff:
    """The largest differences of one output over the compared calls."""
    name: str
    shape: tuple
    max_abs: float = 0.0      # max |onnx - net|
    max_rel: float = 0.0      # max |onnx - net| / max |net|, per call
    scale: float = 0.0        # max |net|

    @property
    def passed(self):
        return self.max_rel <= RTOL

    def update(self, actual, expected):
        actual = np.asarray(actual, dtype=np.float64)
        expected = np.asarray(expected, dtype=np.float64)
        if actual.shape != expected.shape:
            self.max_abs = self.max_rel = math.inf
            return
        if expected.size == 0:
            return
        # Equal values (the same infinities, Caffe's -FLT_MAX) differ by nothing; a NaN on
        # one side only is an infinite difference.
        same = (actual == expected) | (np.isnan(actual) & np.isnan(expected))
        with np.errstate(invalid="ignore"):     # inf - inf where only one side is inf
            diff = np.where(same, 0.0, np.abs(actual - expected))
        diff = float(np.where(np.isnan(diff), math.inf, diff).max())
        finite = np.abs(expected[np.isfinite(expected)])
        scale = float(finite.max()) if finite.size else 0.0
        rel = diff / scale if scale > 0 else (0.0 if diff == 0 else math.inf)
        self.max_abs = max(self.max_abs, diff)
        self.max_rel = max(self.max_rel, rel)
        self.scale = max(self.scale, scale)


def state_pairs(model, net):
    """Step-mode states of an exported model: {input name: output name}."""
    names = {i.name for i in model.graph.input} - set(net.inputs)
    return {name: name[:-1] + "T" for name in sorted(names)}


def onnx_session(model):
    onnxruntime = require("onnxruntime", "running an ONNX model")
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(model.SerializeToString(), options,
                                        providers=["CPUExecutionProvider"])


def with_blob_outputs(model, names):
    """A copy of `model` that also outputs the values `names` (blobs), for verify(blobs=True)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    present = {o.name for o in copy.graph.output}
    copy.graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
                             for name in names if name not in present)
    return copy


def verify(model, net, seed=0, steps=1, session=None, blobs=False):
    """Run `model` in onnxruntime and `net` (from zero recurrent state) on the same random
    inputs for `steps` consecutive calls, carrying the step-mode states of the model from call
    to call as the net carries its own. Returns one OutputDiff per net output (the largest
    differences over all calls); with `blobs`, per blob (its last version, as pycaffe's
    net.blobs shows it) for every blob the net computes, outputs included."""
    compared = list(net.outputs)
    if blobs:
        inputs = set(net.inputs)
        compared += [name for name in net.blobs if name not in inputs and name not in compared]
        model = with_blob_outputs(model, compared)
        session = None
    session = session or onnx_session(model)
    rng = np.random.default_rng(seed)
    kinds = input_kinds(net.compiled)
    pairs = state_pairs(model, net)
    output_names = [o.name for o in session.get_outputs()]
    diffs = {name: OutputDiff(name, tuple(net.compiled.blobs[net.compiled.latest[name]]))
             for name in compared}
    states = None
    net.reset_state()
    for _ in range(steps):
        feeds = random_inputs(net.compiled, rng, kinds)
        if states is None:
            states = {name: np.zeros(_state_shape(net, name), np.float32) for name in pairs}
        with torch.no_grad():
            net.run({k: torch.from_numpy(v) for k, v in feeds.items()}, keep_all=blobs)
        results = dict(zip(output_names, session.run(None, {**feeds, **states})))
        for name, diff in diffs.items():
            diff.update(results[name], net.blobs[name].data)
        states = {name: results[out] for name, out in pairs.items()}
    return list(diffs.values())


def _state_shape(net, name):
    """(1, N, H) of the step-mode state input "<layer>.h0" for the batch `net` runs."""
    layer = net.compiled.layer(name.rsplit(".", 1)[0])
    return (1, net.compiled.blobs[layer.bottoms[0]][1], layer.param.recurrent_param.num_output)


def format_report(diffs):
    """The per-output table `--check` prints."""
    width = max([len(d.name) for d in diffs] + [6])
    lines = [f"{'output':<{width}}  {'shape':<20} {'max |diff|':>10} {'max |net|':>10} "
             f"{'relative':>9}  result"]
    for d in diffs:
        lines.append(f"{d.name:<{width}}  {str(d.shape):<20} {d.max_abs:>10.3g} {d.scale:>10.3g} "
                     f"{d.max_rel:>9.3g}  {'ok' if d.passed else 'FAIL'}")
    return "\n".join(lines)
