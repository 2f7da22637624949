"""Every real Caffe net and solver compiles: nets in TRAIN and TEST, solvers with the states
they give their nets; and the shapes of the reference nets come out as Caffe reports them."""

import os
import pathlib

import pytest

from compiler import CompileError, compile_net, load_file, solver_net_states, upgrade
from compiler.netstate import candidate_states

# Net files that are not meant for one phase (checked: the reason is the expected one).
ONE_PHASE_NETS = {("lrcn_activity/deploy_lstm.prototxt", "TRAIN"):
                  "bottom 'fc6-reshape' is produced only in TEST (by layer 'reshape-data')"}
# Solvers naming net files the corpus does not have (a notebook writes them).
MISSING_NET_SOLVERS = {"bvlc/examples/mnist/lenet_auto_solver.prototxt":
                       "net file not found: mnist/lenet_auto_train.prototxt"}


def corpus_paths(corpus_dir, solvers):
    paths = sorted(path for path in pathlib.Path(corpus_dir).rglob("*.prototxt")
                   if ("solver" in path.name) == solvers)
    assert len(paths) >= 30
    return paths


def test_every_net_compiles_in_train_and_test(corpus_dir):
    failures, skipped = [], {}
    for path in corpus_paths(corpus_dir, solvers=False):
        document = load_file(path)
        net = upgrade(document.message, document)
        relative = str(path.relative_to(corpus_dir))
        for phase in ("TRAIN", "TEST"):
            candidates = candidate_states(net, phase)
            if candidates.unusable_reason:
                skipped[(relative, phase)] = candidates.unusable_reason
            for state in candidates.states:
                try:
                    compile_net(document, state=state)
                except CompileError as error:
                    failures.append(f"{relative} {list(state.stage)}: {error}")
    assert failures == []
    assert skipped == ONE_PHASE_NETS


@pytest.fixture
def caffe_root(corpus_dir, tmp_path, monkeypatch):
    """Solvers name nets relative to the Caffe root they were run from: BVLC's from the
    repository root (the corpus's bvlc/), LRCN's captioning from one whose
    examples/coco_caption/ holds them. Returns a function that enters the right root."""
    (tmp_path / "examples").mkdir()
    os.symlink(os.path.join(corpus_dir, "lrcn_caption"), tmp_path / "examples" / "coco_caption")

    def enter(solver_path):
        bvlc = os.path.join(corpus_dir, "bvlc")
        monkeypatch.chdir(bvlc if str(solver_path).startswith(bvlc) else tmp_path)
    return enter


def test_every_solver_compiles_its_nets(corpus_dir, caffe_root):
    failures, compiled = [], {}
    for path in corpus_paths(corpus_dir, solvers=True):
        relative = str(path.relative_to(corpus_dir))
        caffe_root(path)
        try:
            selections = solver_net_states(load_file(path))
            for selection in selections:
                compile_net(selection.document, state=selection.state)
        except CompileError as error:
            if MISSING_NET_SOLVERS.get(relative) != error.message:
                failures.append(f"{relative}: {error}")
            continue
        compiled[relative] = [(s.role, tuple(s.state.stage)) for s in selections]
    assert failures == []
    assert len(compiled) == len(corpus_paths(corpus_dir, solvers=True)) - 1
    # The caption solvers pick each LRCN variant of lrcn.prototxt by stage.
    assert compiled["lrcn_caption/lrcn_solver.prototxt"] == [
        ("train", ("freeze-convnet", "factored", "2-layer")),
        ("test0", ("freeze-convnet", "factored", "2-layer", "test-on-train")),
        ("test1", ("freeze-convnet", "factored", "2-layer", "test-on-val"))]
    assert compiled["lrcn_caption/lrcn_solver.single_layer.prototxt"][0] == (
        "train", ("freeze-convnet", "unfactored", "1-layer"))
    assert compiled["lrcn_caption/lrcn_solver.unfactored.prototxt"][0] == (
        "train", ("freeze-convnet", "unfactored", "2-layer"))


def test_caption_solver_variants_select_their_lstms(corpus_dir, caffe_root):
    lstms = {}
    for name in ("lrcn_solver", "lrcn_solver.single_layer", "lrcn_solver.unfactored"):
        path = os.path.join(corpus_dir, "lrcn_caption", f"{name}.prototxt")
        caffe_root(path)
        train = solver_net_states(load_file(path))[0]
        net = compile_net(train.document, state=train.state)
        lstms[name] = [(layer.name, len(layer.bottoms)) for layer in net.layers
                       if layer.type == "LSTM"]
    # Factored: lstm1 reads words only, lstm2 adds the image (static input, 3 bottoms).
    assert lstms["lrcn_solver"] == [("lstm1", 2), ("lstm2", 3)]
    assert lstms["lrcn_solver.single_layer"] == [("lstm1", 3)]
    assert lstms["lrcn_solver.unfactored"] == [("lstm1", 3), ("lstm2", 2)]


# --- shapes of the reference nets -------------------------------------------------------------

def shape_of(net, blob):
    return net.blobs[net.latest[blob]]


def test_caffenet_deploy_shapes(corpus_dir):
    net = compile_net(os.path.join(corpus_dir, "bvlc/models/bvlc_reference_caffenet/"
                                               "deploy.prototxt"), "TEST")
    assert shape_of(net, "prob") == (10, 1000)
    assert shape_of(net, "pool5") == (10, 256, 6, 6)
    assert net.total_params() == 60965224      # CaffeNet's published parameter count
    assert net.outputs == ["prob"] and net.inputs == ["data"]


def test_factored_lrcn_caption_net_shapes(corpus_dir):
    net = compile_net(os.path.join(corpus_dir, "lrcn_caption/lrcn.prototxt"), "TRAIN",
                      ("freeze-convnet", "factored", "2-layer"),
                      input_shapes={"data": (100, 3, 227, 227), "cont_sentence": (20, 100),
                                    "input_sentence": (20, 100), "target_sentence": (20, 100)})
    assert shape_of(net, "predict") == (20, 100, 8801)
    assert shape_of(net, "lstm2") == (20, 100, 1000)
    lstm2 = net.layer("lstm2")
    assert lstm2.param_shapes == [(4000, 1000), (4000,), (4000, 1000), (4000, 1000)]
    # freeze-convnet: the CaffeNet layers are the lr_mult 0 copies.
    assert [s.lr_mult for s in net.layer("conv1").param_specs] == [0, 0]
    # The ImageData and HDF5Data layers are both named "data" (Caffe allows it).
    assert [layer.key for layer in net.layers[:2]] == ["data", "data@1"]
    assert net.layer("cross_entropy_loss").loss_weights == [20.0]


@pytest.mark.parametrize("phase, stages, clips", [("TRAIN", (), 24),
                                                   ("TEST", ("test-on-test",), 3)])
def test_lrcn_activity_net_shapes(corpus_dir, phase, stages, clips):
    frames = 16 * clips
    net = compile_net(os.path.join(corpus_dir, "lrcn_activity/train_test_lstm_RGB.prototxt"),
                      phase, stages, input_shapes={"data": (frames, 3, 227, 227),
                                                   "label": (frames,),
                                                   "clip_markers": (frames,)})
    assert shape_of(net, "fc8-final") == (16, clips, 101)
    assert net.layer("lstm1").param_shapes == [(1024, 4096), (1024,), (1024, 256)]
