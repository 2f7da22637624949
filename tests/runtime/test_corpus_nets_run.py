"""Every net of the shared corpus builds as runtime.Net and runs forward and backward.

tests/compiler/test_corpus_compile.py shows that the corpus compiles; this shows that what
compiles also runs: every layer has a unit, the units agree with the compiler's shapes, losses
are finite and gradients reach the learnable blobs.

The corpus's data (LMDBs, image lists, HDF5 files, the activity nets' Python video reader) is
not here, so each data layer is replaced by an Input layer with the shapes the compiler gives
its tops, and the test feeds values each blob's readers accept. To keep the file about a
minute on two CPU cores, torch runs on one thread, the batch is 2 wherever no Reshape layer
fixes it (input_shapes override the data layers' batch_size and the deploy nets' Input
shapes), and the LRCN activity nets, whose Reshape layers fix 16 x 24 frames in TRAIN and
16 x 3 (16 x 10 for deploy) in TEST, run only in TEST.

States: BVLC nets compile in TRAIN and TEST with every stage set their include rules name
(compiler.netstate.candidate_states, as lrcn-check does). LRCN nets run in the states the
solvers beside them give them (train_state / test_state, merged as Caffe's Solver merges them);
a net no solver names (the deploy nets) falls back to candidate_states. States selecting the
same layers (test-on-train and test-on-val differ only in their data source) run once.
"""

import math
import os
import pathlib
import sys

import numpy as np
import pytest
import torch

from compiler import compile_net, filter_net, load_file, solver_net_states, upgrade
from compiler.netstate import candidate_states, phase_name
from lrcn_proto import caffe_pb2
from runtime.net import Net

from conftest import CORPUS as CORPUS_PATH

CORPUS = pathlib.Path(os.path.abspath(CORPUS_PATH))

BATCH = 2            # images per batch, and caption streams N (the image batch must equal N)
CAPTION_STEPS = 20   # T of the COCO caption HDF5 streams (LRCN pads captions to 20 words)
ACTIVITY_FRAMES = 16  # frames per clip in the activity nets' Reshape layers

# Bottomless layers whose data is not here; each becomes an Input layer. Existing Input layers
# are rewritten as well (to the reduced batch). DummyData makes its own values and stays.
DATA_TYPES = {"Data", "ImageData", "HDF5Data", "Python", "WindowData", "MemoryData", "Input"}

# Layers that only change the view of a blob: a value made for the reader behind them is
# reshaped back to the input's shape (row-major, as Caffe's Reshape shares the data).
VIEW_TYPES = {"Reshape", "Flatten", "Split"}

# Readers of bottom 1 as a class index (axis-dependent class count from bottom 0).
CLASS_LABEL_READERS = {"SoftmaxWithLoss": "softmax_param", "Accuracy": "accuracy_param",
                       "MultinomialLogisticLoss": None, "InfogainLoss": None,
                       "HingeLoss": None}


def _frames(clips):
    return {"data": (ACTIVITY_FRAMES * clips, 3, 227, 227),
            "label": (ACTIVITY_FRAMES * clips,),
            "clip_markers": (ACTIVITY_FRAMES * clips,)}


def _caption_streams(image_size):
    sentence = (CAPTION_STEPS, BATCH)
    shapes = {"cont_sentence": sentence, "input_sentence": sentence,
              "target_sentence": sentence}
    if image_size:
        shapes.update(data=(BATCH, 3, image_size, image_size), label=(BATCH,))
    return shapes


def _images(channels, size, label=True):
    shapes = {"data": (BATCH, channels, size, size)}
    if label:
        shapes["label"] = (BATCH,)
    return shapes


# Stand-in shapes for data tops, by net file and phase ("*": both). Nets not listed keep the
# compiled shapes with the batch axis set to BATCH. Shapes the compiler cannot know come from
# the original data sets: CIFAR-10 3x32x32, MNIST 1x28x28 (siamese pairs stack 2 channels),
# the HDF5 classification example's 4 features, the crops named in transform_param.
STAND_IN_SHAPES = {
    "bvlc/examples/cifar10/cifar10_full_sigmoid_train_test.prototxt": {"*": _images(3, 32)},
    "bvlc/examples/cifar10/cifar10_full_sigmoid_train_test_bn.prototxt": {"*": _images(3, 32)},
    "bvlc/examples/cifar10/cifar10_full_train_test.prototxt": {"*": _images(3, 32)},
    "bvlc/examples/cifar10/cifar10_quick_train_test.prototxt": {"*": _images(3, 32)},
    "bvlc/examples/mnist/lenet_train_test.prototxt": {"*": _images(1, 28)},
    "bvlc/examples/mnist/mnist_autoencoder.prototxt": {"*": _images(1, 28, label=False)},
    "bvlc/examples/siamese/mnist_siamese_train_test.prototxt": {
        "*": {"pair_data": (BATCH, 2, 28, 28), "sim": (BATCH,)}},
    "bvlc/models/bvlc_alexnet/train_val.prototxt": {"*": _images(3, 227)},
    "bvlc/models/bvlc_reference_caffenet/train_val.prototxt": {"*": _images(3, 227)},
    "bvlc/models/bvlc_googlenet/train_val.prototxt": {"*": _images(3, 224)},
    **{f"bvlc/examples/hdf5_classification/{name}.prototxt": {
        "*": {"data": (BATCH, 4), "label": (BATCH,)}}
       for name in ("nonlinear_auto_test", "nonlinear_auto_train", "nonlinear_train_val",
                    "train_val")},
    "lrcn_activity/train_test_singleFrame_flow.prototxt": {"*": _images(3, 227)},
    # The Reshape layers fix the clips: 24 per batch in TRAIN, 3 in TEST, 10 in deploy.
    "lrcn_activity/train_test_lstm_RGB.prototxt": {"TRAIN": _frames(24), "TEST": _frames(3)},
    "lrcn_activity/train_test_lstm_flow.prototxt": {"TRAIN": _frames(24), "TEST": _frames(3)},
    "lrcn_activity/deploy_lstm.prototxt": {
        "TEST": {"data": (ACTIVITY_FRAMES * 10, 3, 227, 227),
                 "clip_markers": (ACTIVITY_FRAMES * 10, 1, 1, 1)}},
    "lrcn_caption/lrcn.prototxt": {"*": _caption_streams(227)},
    "lrcn_caption/lrcn.vgg.prototxt": {"*": _caption_streams(224)},
    "lrcn_caption/lrcn.vgg.buffer_50.prototxt": {"*": _caption_streams(224)},
    "lrcn_caption/lstm_language_model.prototxt": {"*": _caption_streams(None)},
    # One step of N streams, as the caption generator drives it.
    "lrcn_caption/lrcn_word_to_preds.deploy.prototxt": {
        "*": {"cont_sentence": (1, BATCH), "input_sentence": (1, BATCH),
              "image_features": (BATCH, 1000)}},
    "lrcn_caption/lstm_lm.deploy.prototxt": {
        "*": {"cont_sentence": (1, BATCH), "input_sentence": (1, BATCH)}},
}

# Python layers with bottoms that are not data layers: the module (a transcription of the one
# the net was written for; the corpus holds only the net) and the shapes of its tops, given
# through input_shapes (the Net would also learn them from the layer's reshape()).
PYLOSS = """
import caffe
import numpy as np


class EuclideanLossLayer(caffe.Layer):
    \"\"\"BVLC examples/pycaffe/layers/pyloss.py.\"\"\"

    def setup(self, bottom, top):
        if len(bottom) != 2:
            raise Exception("Need two inputs to compute distance.")

    def reshape(self, bottom, top):
        if bottom[0].count != bottom[1].count:
            raise Exception("Inputs must have the same dimension.")
        self.diff = np.zeros_like(bottom[0].data, dtype=np.float32)
        top[0].reshape(1)

    def forward(self, bottom, top):
        self.diff[...] = bottom[0].data - bottom[1].data
        top[0].data[...] = np.sum(self.diff ** 2) / bottom[0].num / 2.

    def backward(self, top, propagate_down, bottom):
        for i in range(2):
            if not propagate_down[i]:
                continue
            sign = 1 if i == 0 else -1
            bottom[i].diff[...] = sign * self.diff / bottom[i].num
"""
PYTHON_LAYERS = {"bvlc/examples/pycaffe/linreg.prototxt": ("pyloss", PYLOSS, {"loss": (1,)})}

# (net, phase) pairs left out, and why.
LEFT_OUT = {
    ("lrcn_activity/train_test_lstm_RGB.prototxt", "TRAIN"):
        "the TRAIN Reshape fixes 16 x 24 = 384 frames at 227 x 227: minutes on a CPU",
    ("lrcn_activity/train_test_lstm_flow.prototxt", "TRAIN"):
        "the TRAIN Reshape fixes 16 x 24 = 384 frames at 227 x 227: minutes on a CPU",
}

# Cases over ~20 s on two shared CPU cores: 160 frames at 227 x 227 forward and backward,
# 17-27 s here, three times the next case. `python -m pytest -q` still runs them.
SLOW = {("lrcn_activity/deploy_lstm.prototxt", "TEST")}


# --- which nets, in which states ------------------------------------------------------------

def _net_files():
    return sorted(path for path in CORPUS.rglob("*.prototxt")
                  if "solver" not in path.name)


_documents = {}


def _document(path):
    """Each corpus file parsed once per session (collection and the tests share it)."""
    path = os.path.abspath(path)
    if path not in _documents:
        _documents[path] = load_file(path)
    return _documents[path]


def _solver_states(net_path):
    """The NetStates the solvers in the net's folder build it with. Solvers name their nets
    relative to the Caffe root they ran from; they are pointed at the files beside them by
    base name, and compiler.solver_net_states merges the states as Caffe's Solver does."""
    states = []
    for solver_path in sorted(net_path.parent.glob("*solver*.prototxt")):
        solver = caffe_pb2.SolverParameter()
        solver.CopyFrom(_document(solver_path).message)
        names_this_net = False
        for field in ("net", "train_net"):
            if solver.HasField(field):
                beside = net_path.parent / os.path.basename(getattr(solver, field))
                names_this_net |= beside == net_path
                setattr(solver, field, str(beside))
        for i, name in enumerate(solver.test_net):
            beside = net_path.parent / os.path.basename(name)
            names_this_net |= beside == net_path
            solver.test_net[i] = str(beside)
        if not names_this_net:
            continue
        for selection in solver_net_states(solver, str(solver_path)):
            if selection.source == str(net_path):
                states.append(selection.state)
    return states


def _states(net_path):
    relative = str(net_path.relative_to(CORPUS))
    net = upgrade(_document(net_path).message)
    states = _solver_states(net_path) if relative.startswith("lrcn_") else []
    if not states:
        states = [state for phase in ("TRAIN", "TEST")
                  for state in candidate_states(net, phase).states]
    # States selecting the same computing layers build the same net once data layers are
    # Inputs (the caption solvers' test-on-train / test-on-val differ only in their sources).
    distinct, seen = [], set()
    for state in states:
        selection = filter_net(net, state=state)
        computing = tuple(index for index, layer in zip(selection.indices, selection.net.layer)
                          if layer.type not in DATA_TYPES)
        key = (state.phase, computing)
        if key not in seen:
            seen.add(key)
            distinct.append(state)
    return distinct


def _cases():
    if not os.path.isdir(CORPUS):
        # One case, skipped by the corpus_dir fixture: a user's clone has no corpus.
        return [pytest.param(None, None, id="no-corpus")]
    cases = []
    for path in _net_files():
        relative = str(path.relative_to(CORPUS))
        for state in _states(path):
            phase = phase_name(state.phase)
            stages = "+".join(state.stage) or "no-stages"
            marks = []
            if (relative, phase) in LEFT_OUT:
                marks.append(pytest.mark.skip(reason=LEFT_OUT[(relative, phase)]))
            if (relative, phase) in SLOW:
                marks.append(pytest.mark.slow)
            cases.append(pytest.param(relative, state, marks=marks,
                                      id=f"{relative}:{phase}:{stages}"))
    return cases


# --- Input layers standing in for data layers ---------------------------------------------

def stand_in_shapes(relative, net, state, known):
    """input_shapes for the data tops: the table's, else the compiled shapes with the batch
    axis set to BATCH. `known` holds shapes given anyway (Python layers' tops)."""
    table = STAND_IN_SHAPES.get(relative, {})
    phase = phase_name(state.phase)
    if phase in table or "*" in table:
        return {**table.get(phase, table.get("*")), **known}
    shapes = dict(known)
    for layer in compile_net(net, state=state, input_shapes=known).layers:
        if layer.type in DATA_TYPES and not layer.bottoms:
            for name, shape in zip(layer.top_names, layer.top_shapes):
                assert shape is not None, (f"{relative}: no stand-in shape for '{name}' of "
                                           f"layer '{layer.name}': add it to STAND_IN_SHAPES")
                shapes[name] = (BATCH,) + tuple(shape[1:])
    return shapes


def with_input_layers(net, state, input_shapes):
    """`net` (upgraded) with each data layer selected by `state` replaced by an Input layer
    whose shapes are the compiled shapes of its tops under `input_shapes`; and the
    CompiledNet of the original."""
    compiled = compile_net(net, state=state, input_shapes=input_shapes)
    rewritten = caffe_pb2.NetParameter()
    rewritten.CopyFrom(net)
    for layer in compiled.layers:
        if layer.type not in DATA_TYPES or layer.bottoms:
            continue
        unknown = [n for n, s in zip(layer.top_names, layer.top_shapes) if s is None]
        assert not unknown, f"layer '{layer.name}': no shape for tops {unknown}"
        stand_in = caffe_pb2.LayerParameter(name=layer.name, type="Input", top=layer.top_names)
        stand_in.include.extend(layer.param.include)
        stand_in.exclude.extend(layer.param.exclude)
        for shape in layer.top_shapes:
            stand_in.input_param.shape.add(dim=shape)
        rewritten.layer[layer.index].CopyFrom(stand_in)
    return rewritten, compiled


# --- values each input's readers accept -----------------------------------------------------

def _readers(compiled, blob):
    """(layer, bottom index, blob version read) of every layer reading `blob`, looking
    through view-only layers."""
    found = []
    for key in compiled.graph.nodes[("blob", blob)]["consumers"]:
        layer = compiled.layer(key)
        for index, bottom in enumerate(layer.bottoms):
            if bottom != blob:
                continue
            if layer.type in VIEW_TYPES:
                for top in layer.tops:
                    found.extend(_readers(compiled, top))
            else:
                found.append((layer, index, bottom))
    return found


def _role(layer, index):
    """What a reader needs at a bottom: ("class", count), ("index", count), ("cont",),
    ("binary",), ("probability",) or ("float",)."""
    if layer.type in CLASS_LABEL_READERS and index == 1:
        field = CLASS_LABEL_READERS[layer.type]
        axis = getattr(layer.param, field).axis if field else 1
        scores = layer.bottom_shapes[0]
        return ("class", scores[axis % len(scores)])
    if layer.type == "Embed" and index == 0:
        return ("index", layer.param.embed_param.input_dim)
    if layer.type in ("LSTM", "RNN") and index == 1:
        return ("cont",)
    if layer.type == "ContrastiveLoss" and index == 2:
        return ("binary",)
    if layer.type == "SigmoidCrossEntropyLoss" and index == 1:
        return ("probability",)
    return ("float",)


def stand_in_value(compiled, name, generator):
    """A tensor for input blob `name`, made in the shape its strictest reader sees."""
    shape = compiled.blobs[name]
    roles = [(_role(layer, index), compiled.blobs[bottom])
             for layer, index, bottom in _readers(compiled, name)]
    # Integer roles win over "float" (a label also read by a Silence layer is still a label);
    # several class readers of one label take the smallest class count.
    integer = sorted((r for r in roles if r[0][0] != "float"), key=lambda r: r[0][1:])
    role, seen_shape = integer[0] if integer else (("float",), shape)
    kind = role[0]
    if kind in ("class", "index"):
        value = torch.randint(0, role[1], seen_shape, generator=generator).float()
    elif kind == "cont":
        # 0 starts a sequence: every stream starts at t = 0, some restart later.
        value = (torch.rand(seen_shape, generator=generator) > 0.2).float()
        value[0] = 0
    elif kind == "binary":
        value = torch.randint(0, 2, seen_shape, generator=generator).float()
    elif kind == "probability":
        value = torch.rand(seen_shape, generator=generator)
    else:
        value = torch.randn(seen_shape, generator=generator)
    return value.reshape(shape)


# --- the test -------------------------------------------------------------------------------

def _python_layer_tops(relative, tmp_path, monkeypatch):
    """Put the net's Python layer module on the path; return its tops' shapes."""
    if relative not in PYTHON_LAYERS:
        return {}
    module, source, shapes = PYTHON_LAYERS[relative]
    (tmp_path / f"{module}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, module, raising=False)
    return dict(shapes)


@pytest.mark.parametrize("relative, state", _cases())
def test_corpus_net_runs_forward_and_backward(corpus_dir, relative, state, tmp_path,
                                              monkeypatch):
    torch.manual_seed(0)
    path = os.path.join(corpus_dir, relative)
    net_param = upgrade(_document(path).message)
    phase = phase_name(state.phase)
    python_tops = _python_layer_tops(relative, tmp_path, monkeypatch)
    runnable, original = with_input_layers(
        net_param, state, stand_in_shapes(relative, net_param, state, python_tops))
    net = Net(runnable, phase=phase, stages=tuple(state.stage), level=state.level,
              input_shapes=python_tops, seed=1)
    compiled = net.compiled
    # The same layers as the original in this state, the data layers now Inputs.
    assert [(layer.name, layer.type) for layer in compiled.layers] == [
        (layer.name, "Input" if layer.type in DATA_TYPES and not layer.bottoms else layer.type)
        for layer in original.layers]

    generator = torch.Generator().manual_seed(0)
    feed = {name: stand_in_value(compiled, name, generator) for name in net.inputs}
    outputs = net(**feed)

    assert compiled.outputs == original.outputs
    for name in compiled.outputs:
        value = net.blobs[name].data
        assert value.shape == original.blobs[original.latest[name]], name
        assert np.isfinite(value).all(), f"output '{name}' is not finite"
    has_loss = bool(compiled.loss_layers())
    if has_loss:
        loss = outputs.loss
        assert math.isfinite(loss.item())
    else:
        # A deploy net has no loss: backpropagate a random diff from every output, as
        # pycaffe's net.backward(**{top: diff}) would (a plain sum of softmax probabilities
        # is constant and has no gradient).
        loss = sum((outputs[name] * torch.randn(outputs[name].shape, generator=generator)).sum()
                   for name in compiled.outputs if outputs[name].requires_grad)
        assert not isinstance(loss, int), "no output depends on a learnable blob"
    assert loss.requires_grad, "nothing learnable reaches the objective"
    loss.backward()
    # One norm per blob: a single pass over ~60M values for the CaffeNet family.
    norms = [torch.linalg.vector_norm(p.tensor.grad)
             for p in net.learnable_params() if p.tensor.grad is not None]
    assert norms, "no learnable blob got a gradient"
    norms = torch.stack(norms)
    assert bool(torch.isfinite(norms).all()), "a gradient is not finite"
    assert bool((norms > 0).any()), "no learnable blob got a gradient"


def test_every_corpus_net_has_a_case(corpus_dir):
    """A net file added to the corpus is picked up, in at least one state."""
    covered = {case.values[0] for case in _cases()}
    relative = {str(path.relative_to(CORPUS)) for path in _net_files()}
    assert relative == covered
    assert len(relative) >= 30
