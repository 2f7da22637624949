"""The S2VT authors' files keep working: a net, solvers and a step-wise deploy net written here
in the exact style of vsubhashini/caffe@recurrent examples/s2vt (s2vt.prototxt,
s2vt_solver.prototxt, movie_s2vt_solver.prototxt, s2vt.words_to_preds.deploy.prototxt: the
same fields, legacy spellings and shapes), trained a couple of iterations on data in their
layout (32 streams x 80 steps, 1000-row batch files). The fast variant shrinks the feature,
embedding, LSTM and vocabulary sizes; the slow one keeps the originals' (4096, 500, 1000,
46168)."""

import os

import numpy as np
import pytest
import torch

from runtime import cli as runtime_cli
from runtime.net import Net
from lrcn_apps.video.streams import RowWriter, s2vt_pair

from helpers import run

STEPS, STREAMS = 80, 32
FAST = {"feature": 16, "embed": 8, "hidden": 8, "vocab": 50}
ORIGINAL = {"feature": 4096, "embed": 500, "hidden": 1000, "vocab": 46168}

UNIFORM = 'weight_filler {\n      type: "uniform"\n      min: -0.08\n      max: 0.08\n    }'
ZERO = 'bias_filler {\n      type: "constant"\n      value: 0\n    }'


def lstm(name, bottom, include):
    return '''layer {
  name: "%s"
  type: "LSTM"
  bottom: "%s"
  bottom: "cont_sentence"
  top: "%s"
  include { %s }
  recurrent_param {
    num_output: {hidden}
    %s
    %s
  }
}
''' % (name, bottom, name, include, UNIFORM, ZERO)


def predict(bottom, rule):
    return '''layer {
  name: "predict"
  type: "InnerProduct"
  bottom: "%s"
  top: "predict"
  param {
    lr_mult: 1
    decay_mult: 1
  }
  param {
    lr_mult: 2
    decay_mult: 0
  }
  %s
  inner_product_param {
    num_output: {vocab} # youtube_movie_vocab + 1
    %s
    %s
    axis: 2
  }
}
''' % (bottom, rule, UNIFORM, ZERO)


def data_layer(rule):
    return '''layer {
  name: "data"
  type: "HDF5Data"
  top: "cont_sentence"
  top: "input_sentence"
  top: "target_sentence"
  top: "stage_indicator"
  top: "frame_fc7"
  include { %s }
  hdf5_data_param {
    source: "./hdf5/buffer_32_s2vt_80/train_batches/hdf5_chunk_list.txt"
    batch_size: 80
  }
}
''' % rule


NET = ("# It is in (32)  parallel streams.\nname: \"s2vt\"\n"
       + data_layer("phase: TRAIN")
       + data_layer('phase: TEST\n    stage: "test-on-train"') + '''layer {
  name: "reshape_stg_indicator" # from 80 32 to 80 32 1 to concat
  type: "Reshape"
  bottom: "stage_indicator"
  top: "stage_indicator_3axis"
  reshape_param {
    shape {
      dim: 80
      dim: 32
      dim: 1
    }
  }
}
layer {
  name: "dropFc7"
  type: "Dropout"
  bottom: "frame_fc7"
  top: "frame_fc7"
  dropout_param { dropout_ratio: 0.5 }
  include { stage: "dropFc7" }
}
layer {
  name: "embed_encoder"
  type: "InnerProduct"
  bottom: "frame_fc7"
  top: "embedded_input_frames"
  param {
    lr_mult: 1
    decay_mult: 1
  }
  param {
    lr_mult: 2
    decay_mult: 0
  }
  inner_product_param {
    num_output: {embed}
    weight_filler {
      type: "xavier"
    }
    bias_filler {
      type: "constant"
      value: 0.2
    }
    axis: -1
  }
}
layer {
  name: "embedding"
  type: "Embed"
  bottom: "input_sentence"
  top: "embedded_input_sentence"
  param {
    lr_mult: 1
  }
  embed_param {
    bias_term: false
    input_dim: {vocab} #youtube_movie_vocab+1
    num_output: {embed}
    %s
  }
}
layer {
  name: "drop_input_en"
  type: "Dropout"
  bottom: "embedded_input_sentence"
  top: "embedded_input_sentence"
  dropout_param { dropout_ratio: 0.5 }
  include { stage: "dropEn" }
}
layer {
  name: "concat"
  type: "Concat"
  concat_param { concat_dim: 2 } # concat along h
  bottom: "embedded_input_frames"
  bottom: "embedded_input_sentence"
  bottom: "stage_indicator_3axis"
  top: "embedded_input_video_sequence"
  include { stage: "unfactored" }
}
''' % UNIFORM + lstm("lstm1", "embedded_input_video_sequence", 'stage: "unfactored"')
       + lstm("lstm2", "lstm1", 'stage: "unfactored"\n    stage: "2-layer"')
       + lstm("lstm1", "embedded_input_frames", 'stage: "factored"') + '''layer {
  name: "drop_lstm1"
  type: "Dropout"
  bottom: "lstm1"
  top: "lstm1"
  dropout_param { dropout_ratio: 0.5 }
  include { stage: "dropLstm1" }
}
layer {
  name: "concat"
  type: "Concat"
  concat_param { concat_dim: 2 } # concat along h
  bottom: "lstm1"
  bottom: "embedded_input_sentence"
  bottom: "stage_indicator_3axis"
  top: "lstm1_video_sequence"
  include { stage: "factored" }
}
''' + lstm("lstm2", "lstm1_video_sequence", 'stage: "factored"') + '''layer {
  name: "drop_lstm2"
  type: "Dropout"
  bottom: "lstm2"
  top: "lstm2"
  dropout_param { dropout_ratio: 0.5 }
  include { stage: "dropLstm2" }
}
''' + predict("lstm1", 'exclude { stage: "2-layer" }')
       + predict("lstm2", 'include { stage: "2-layer" }') + '''layer {
  name: "cross_entropy_loss"
  type: "SoftmaxWithLoss"
  bottom: "predict"
  bottom: "target_sentence"
  top: "cross_entropy_loss"
  loss_weight: 20
  loss_param {
    ignore_label: -1
    normalize: true
  }
  softmax_param {
    axis: 2
  }
}
layer {
  name: "accuracy"
  type: "Accuracy"
  bottom: "predict"
  bottom: "target_sentence"
  top: "accuracy"
  include { phase: TEST }
  accuracy_param {
    axis: 2
    ignore_label: -1
  }
}
''')

SOLVER = '''net: "./s2vt.prototxt"

train_state: { stage: 'factored' stage: '2-layer' %s}
test_iter: 1
test_state: { stage: 'factored' stage: '2-layer' stage: 'test-on-train' }
test_interval: 1000
base_lr: %s
lr_policy: "%s"
gamma: 0.5
stepsize: 20000
display: 1
max_iter: 2
momentum: 0.9
%sweight_decay: 0.0000
snapshot: 2
snapshot_prefix: "./snapshots/s2vt_youtube_vgg"
solver_mode: GPU
random_seed: 1701
average_loss: 100
clip_gradients: 10
%s'''
SGD_SOLVER = SOLVER % ("", "0.01", "step", "", "")
ADAM_SOLVER = SOLVER % ("stage: 'dropFc7' stage: 'dropEn' stage: 'dropLstm1' stage: 'dropLstm2'",
                        "0.0001", "fixed", "momentum2: 0.999\n", "solver_type: ADAM\n")

DEPLOY = '''name: "s2vt:features_to_lstm"

input: "frames_fc7"
input_shape {
  dim: 1
  dim: {feature}
}

input: "cont_sentence"
input_shape {
  dim: 1
  dim: 1
}

input: "input_sentence"
input_shape {
  dim: 1
  dim: 1
}

input: "stage_indicator"
input_shape {
  dim: 1
  dim: 1
}

layer {
  name: "embed_encoder"
  type: "InnerProduct"
  bottom: "frames_fc7"
  top: "embedded_in_frames"
  inner_product_param {
    num_output: {embed}
  }
}
layer {
  name: "reshape_frames"
  type: "Reshape"
  bottom: "embedded_in_frames"
  top: "embedded_input_frames"
  reshape_param {
    shape {
      dim: 1
      dim: 1
      dim: {embed}
    }
  }
}
layer {
  name: "reshape_stage_indicator"
  type: "Reshape"
  bottom: "stage_indicator"
  top: "reshaped_stage_indicator"
  reshape_param {
    shape {
      dim: 1
      dim: 1
      dim: 1
    }
  }
}
layer {
  name: "embedding"
  type: "Embed"
  bottom: "input_sentence"
  top: "embedded_input_sentence"
  embed_param {
    bias_term: false
    input_dim: {vocab} #youtube_vocab+1
    num_output: {embed}
  }
}
layer {
  name: "lstm1"
  type: "LSTM"
  bottom: "embedded_input_frames"
  bottom: "cont_sentence"
  top: "lstm1"
  recurrent_param {
    num_output: {hidden}
  }
}
layer {
  name: "concat"
  type: "Concat"
  concat_param { concat_dim: 2 } # concat along h
  bottom: "lstm1"
  bottom: "embedded_input_sentence"
  bottom: "reshaped_stage_indicator"
  top: "lstm1_video_sequence"
}
layer {
  name: "lstm2"
  type: "LSTM"
  bottom: "lstm1_video_sequence"
  bottom: "cont_sentence"
  top: "lstm2"
  recurrent_param {
    num_output: {hidden}
  }
}
layer {
  name: "predict"
  type: "InnerProduct"
  bottom: "lstm2"
  top: "predict"
   inner_product_param {
    num_output: {vocab} # youtube_vocab + 1
    axis: 2
  }
}
layer {
  name: "probs"
  type: "Softmax"
  bottom: "predict"
  top: "probs"
  softmax_param {
    axis: 2
  }
}
'''


def sized(text, sizes):
    for name, value in sizes.items():
        text = text.replace("{%s}" % name, str(value))
    return text


def write_their_data(folder, sizes, batches=2, seed=0):
    """S2VT's layout: batches x 80 rows of 32 streams in 1000-row files, listed as they list
    them ('./hdf5/.../batch_<k>.h5' from the working directory)."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder)
    writer = RowWriter(folder, "./hdf5/buffer_32_s2vt_80/train_batches")
    for _ in range(batches):
        pairs = [s2vt_pair(rng.normal(size=(int(rng.integers(20, 70)), sizes["feature"]))
                           .astype(np.float32),
                           rng.integers(1, sizes["vocab"], size=int(rng.integers(5, 15))),
                           STEPS)[0] for _ in range(STREAMS)]
        writer.append({name: np.stack([p[name] for p in pairs], axis=1) for name in pairs[0]})
    writer.close()


def train_their_files(tmp_path, monkeypatch, sizes):
    monkeypatch.chdir(tmp_path)
    write_their_data(str(tmp_path / "hdf5" / "buffer_32_s2vt_80" / "train_batches"), sizes)
    (tmp_path / "s2vt.prototxt").write_text(sized(NET, sizes))
    for name, solver in (("s2vt_solver.prototxt", SGD_SOLVER),
                         ("movie_s2vt_solver.prototxt", ADAM_SOLVER)):
        (tmp_path / name).write_text(solver)
        assert run(runtime_cli.train_main, [name, "--no-progress"]) == 0
        assert (tmp_path / "snapshots" / "s2vt_youtube_vgg_iter_2.caffemodel").exists()
    deploy = tmp_path / "s2vt.words_to_preds.deploy.prototxt"
    deploy.write_text(sized(DEPLOY, sizes))
    net = Net(str(deploy), weights=str(tmp_path / "snapshots" /
                                       "s2vt_youtube_vgg_iter_2.caffemodel"), phase="TEST")
    with torch.no_grad():
        probs = net(frames_fc7=torch.ones(1, sizes["feature"]), cont_sentence=torch.zeros(1, 1),
                    input_sentence=torch.zeros(1, 1), stage_indicator=torch.zeros(1, 1))["probs"]
    assert probs.shape == (1, 1, sizes["vocab"])
    assert float(probs.sum()) == pytest.approx(1.0, rel=1e-5)


def test_their_net_solvers_and_deploy_net_work_small(tmp_path, monkeypatch, capsys):
    train_their_files(tmp_path, monkeypatch, FAST)
    log = capsys.readouterr().err
    assert "Optimization Done." in log


@pytest.mark.slow
def test_their_net_solvers_and_deploy_net_work_at_their_sizes(tmp_path, monkeypatch, request):
    # 165 s on this 2-core machine: only when slow tests are asked for.
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("the authors' sizes take minutes: run with -m slow")
    train_their_files(tmp_path, monkeypatch, ORIGINAL)
