"""Whole train steps (forward + backward) of the timing nets against hand-written PyTorch.

Workloads: CaffeNet (batch 10, 227 x 227, SoftmaxWithLoss), the LRCN LSTM language model at
the paper's size (T 20, N 100, H 1000, vocabulary 8801: Embed, LSTM, InnerProduct,
SoftmaxWithLoss; also on sentences of 8 to 16 words padded to T as LRCN's caption batches
are, about a third of the positions, against nn.LSTM on packed sequences), the main job's net
(nets/lrcn_caption.prototxt, factored 2-layer, TRAIN, the data layers' tops fed as tensors)
and the activity LRCN net (nets/lrcn_activity.prototxt's rgb deploy net, forward + backward of
a cross-entropy on its probabilities: its train net needs the prepared videos). Each is run
through runtime.Net and as a hand-written torch model of the same shapes (nn.Embedding /
nn.LSTM / nn.Linear, F.conv2d ...), alternating round by round.

Printed: median ms per step of each, the ratio ours / torch, and the achieved rate (the
compiler's forward FLOPs x 3 for forward + backward, per second; none for the padded LM, whose
work depends on its data) against the best GEMM rate measured in the same process (torch.mm,
numpy's OpenBLAS, oneDNN float32 on the LSTM's and the vocabulary layer's shapes): that rate is
the bound a matmul-bound float32 step cannot beat.
oneDNN's bfloat16 rate is printed beside them, and each step is also timed with --precision
bfloat16. For the paper-size LM, Caffe's own products of the step run through numpy's OpenBLAS
in the same rounds (caffe_lm_products): a lower bound on Caffe's step on this machine, so that
ours / Caffe is bounded in the same run rather than against a figure measured on another day.

`--caffe PATH` also times real BVLC Caffe (PATH: a `caffe` binary you built, CPU) on the same
nets with `caffe time` (CaffeNet, the paper-size LM, the main job's net with its data layers
replaced by one Input layer of the same tops), rounds alternating with our steps, and prints
ours / Caffe. Caffe's BLAS runs on as many threads as torch here (OPENBLAS_NUM_THREADS,
OMP_NUM_THREADS, MKL_NUM_THREADS).

`--threads-check` also times the main job (`lrcn-train solvers/caption_solver.prototxt`,
--iterations, whole process) with --threads 1, --threads 2 and the default (adaptive), on the
idle machine and with one busy process (a spinning Python process this script starts and
stops).

    python bench/bench_train.py [--reps 5] [--only lstm_lm] [--threads N]
    python bench/bench_train.py --threads-check [--iterations 300] [--fixed-counts 1,2]
    python bench/bench_train.py --caffe /path/to/caffe [--reps 3]
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy
import torch
import torch.nn.functional as F
from torch import nn

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from google.protobuf import text_format  # noqa: E402

from lrcn_proto import caffe_pb2  # noqa: E402
from runtime import allocator, gemm, threads  # noqa: E402
from runtime.net import Net  # noqa: E402

T_LM, N_LM, H_LM, V_LM = 20, 100, 1000, 8801
PAPER_LM = "LSTM LM train step (paper size)"
MAIN_JOB_NET = "main job net (caption)"
UNIFORM = 'weight_filler { type: "uniform" min: -0.08 max: 0.08 }'

LSTM_LM = f"""name: "lstm_lm"
layer {{ name: "input" type: "Input" top: "words" top: "cont" top: "target"
  input_param {{ shape {{ dim: {T_LM} dim: {N_LM} }} shape {{ dim: {T_LM} dim: {N_LM} }}
                shape {{ dim: {T_LM} dim: {N_LM} }} }} }}
layer {{ name: "embed" type: "Embed" bottom: "words" top: "embedded"
  embed_param {{ input_dim: {V_LM} num_output: {H_LM} bias_term: false {UNIFORM} }} }}
layer {{ name: "lstm" type: "LSTM" bottom: "embedded" bottom: "cont" top: "h"
  recurrent_param {{ num_output: {H_LM} {UNIFORM} }} }}
layer {{ name: "predict" type: "InnerProduct" bottom: "h" top: "predict"
  inner_product_param {{ num_output: {V_LM} axis: 2 {UNIFORM} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "predict" bottom: "target" top: "loss"
  loss_param {{ ignore_label: -1 }} softmax_param {{ axis: 2 }} }}
"""

# CaffeNet (bvlc_reference_caffenet): (name, num_output, kernel, stride, pad, group).
CAFFENET_CONVS = [("conv1", 96, 11, 4, 0, 1), ("conv2", 256, 5, 1, 2, 2),
                  ("conv3", 384, 3, 1, 1, 1), ("conv4", 384, 3, 1, 1, 2),
                  ("conv5", 256, 3, 1, 1, 2)]
POOL_AFTER, LRN_AFTER = ("conv1", "conv2", "conv5"), ("conv1", "conv2")


def caffenet_text(batch=10):
    gauss = 'weight_filler { type: "gaussian" std: 0.01 }'
    lines = ['name: "caffenet"',
             f'layer {{ name: "input" type: "Input" top: "data" top: "label" input_param {{ '
             f'shape {{ dim: {batch} dim: 3 dim: 227 dim: 227 }} shape {{ dim: {batch} }} }} }}']
    bottom = "data"
    for name, out, kernel, stride, pad, group in CAFFENET_CONVS:
        lines.append(f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: '
                     f'"{name}" convolution_param {{ num_output: {out} kernel_size: {kernel} '
                     f'stride: {stride} pad: {pad} group: {group} {gauss} }} }}')
        lines.append(f'layer {{ name: "relu_{name}" type: "ReLU" bottom: "{name}" '
                     f'top: "{name}" }}')
        bottom = name
        if name in POOL_AFTER:
            lines.append(f'layer {{ name: "pool_{name}" type: "Pooling" bottom: "{bottom}" '
                         f'top: "pool_{name}" pooling_param {{ pool: MAX kernel_size: 3 '
                         f'stride: 2 }} }}')
            bottom = f"pool_{name}"
        if name in LRN_AFTER:
            lines.append(f'layer {{ name: "norm_{name}" type: "LRN" bottom: "{bottom}" '
                         f'top: "norm_{name}" lrn_param {{ local_size: 5 alpha: 0.0001 '
                         f'beta: 0.75 }} }}')
            bottom = f"norm_{name}"
    for name, out in (("fc6", 4096), ("fc7", 4096), ("fc8", 1000)):
        lines.append(f'layer {{ name: "{name}" type: "InnerProduct" bottom: "{bottom}" '
                     f'top: "{name}" inner_product_param {{ num_output: {out} {gauss} }} }}')
        bottom = name
        if name != "fc8":
            lines.append(f'layer {{ name: "relu_{name}" type: "ReLU" bottom: "{name}" '
                         f'top: "{name}" }}')
            lines.append(f'layer {{ name: "drop_{name}" type: "Dropout" bottom: "{name}" '
                         f'top: "{name}" }}')
    lines.append('layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc8" bottom: "label" '
                 'top: "loss" }')
    return "\n".join(lines)


# --- hand-written torch models -----------------------------------------------------------


class TorchCaffeNet(nn.Module):
    def __init__(self):
        super().__init__()
        channels = 3
        self.convs = nn.ModuleList()
        for _, out, kernel, stride, pad, group in CAFFENET_CONVS:
            self.convs.append(nn.Conv2d(channels, out, kernel, stride, pad, groups=group))
            channels = out
        self.fcs = nn.ModuleList([nn.Linear(256 * 6 * 6, 4096), nn.Linear(4096, 4096),
                                  nn.Linear(4096, 1000)])

    def forward(self, data, label):
        x = data
        for (name, *_), conv in zip(CAFFENET_CONVS, self.convs):
            x = F.relu(conv(x))
            if name in POOL_AFTER:
                x = F.max_pool2d(x, 3, 2, ceil_mode=True)
            if name in LRN_AFTER:
                x = F.local_response_norm(x, 5, alpha=1e-4, beta=0.75)
        x = x.flatten(1)
        for fc in self.fcs[:2]:
            x = F.dropout(F.relu(fc(x)), 0.5, self.training)
        return F.cross_entropy(self.fcs[2](x), label.long())


class TorchLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(V_LM, H_LM)
        self.lstm = nn.LSTM(H_LM, H_LM)
        self.predict = nn.Linear(H_LM, V_LM)

    def forward(self, words, cont, target):
        x = self.embed(words.long())
        running = cont[1:].cumprod(0).sum(0)          # steps after the first before cont 0
        if bool((running < len(cont) - 1).any()):
            # Padded streams: nn.LSTM over packed sequences, as torch users write it.
            lengths = (running + 1).long()
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
            h, _ = nn.utils.rnn.pad_packed_sequence(self.lstm(packed)[0],
                                                    total_length=len(cont))
        else:
            h, _ = self.lstm(x)
        return F.cross_entropy(self.predict(h).flatten(0, 1), target.long().flatten(),
                               ignore_index=-1)


class TorchCaption(nn.Module):
    """nets/lrcn_caption.prototxt, factored 2-layer: a small CNN, lstm1 over the words,
    lstm2 over lstm1 with the image feature as its static input (appended to every step)."""

    def __init__(self, vocabulary=48):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 32, 5, padding=2), nn.Conv2d(32, 64, 3, padding=1)
        self.fc7, self.fc8 = nn.Linear(64 * 8 * 8, 256), nn.Linear(256, 128)
        self.embedding = nn.Embedding(vocabulary, 128)
        self.lstm1, self.lstm2 = nn.LSTM(128, 256), nn.LSTM(256 + 128, 256)
        self.predict = nn.Linear(256, vocabulary)

    def forward(self, data, input_sentence, target_sentence, **unused):
        x = F.max_pool2d(F.relu(self.conv1(data)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(F.relu(self.conv2(x)), 3, 2, ceil_mode=True)
        image = self.fc8(F.relu(self.fc7(x.flatten(1))))
        h1, _ = self.lstm1(self.embedding(input_sentence.long()))
        T = h1.shape[0]
        h2, _ = self.lstm2(torch.cat([h1, image.expand(T, -1, -1)], dim=2))
        return F.cross_entropy(self.predict(h2).flatten(0, 1), target_sentence.long().flatten(),
                               ignore_index=-1)


class TorchActivity(nn.Module):
    """nets/lrcn_activity.prototxt (rgb, deploy): a CNN per frame, LSTM 256 over 16 steps."""

    def __init__(self, T=16, classes=8):
        super().__init__()
        self.T = T
        self.conv1, self.conv2 = nn.Conv2d(3, 16, 5, padding=2), nn.Conv2d(16, 32, 5, padding=2,
                                                                             groups=2)
        self.fc6 = nn.Linear(32 * 6 * 6, 256)
        self.lstm = nn.LSTM(256, 256)
        self.fc8 = nn.Linear(256, classes)

    def forward(self, data, clip_markers, label):
        x = data
        for conv in (self.conv1, self.conv2):
            x = F.max_pool2d(F.relu(conv(x)), 3, 2, ceil_mode=True)
            x = F.local_response_norm(x, 5, alpha=1e-4, beta=0.75)
        x = F.relu(self.fc6(x.flatten(1))).view(self.T, -1, 256)
        h, _ = self.lstm(x)
        return F.nll_loss(torch.log(F.softmax(self.fc8(h), dim=2)).flatten(0, 1), label)


# --- our side ------------------------------------------------------------------------------


def data_tops(net):
    """(name, shape) of every blob the net's data and Input layers (those without bottoms)
    produce."""
    return [(name, shape) for layer in net.compiled.layers if not layer.bottoms
            for name, shape in zip(layer.top_names, layer.top_shapes)]


def fed_tensors(net, generator):
    """A tensor for every blob a data or Input layer produces (labels and words random
    indices within range, cont 1 with 0 at t = 0, images random)."""
    feed = {}
    for name, shape in data_tops(net):
        if "cont" in name or "marker" in name:
            value = torch.ones(shape)
            value[0] = 0
        elif name in ("data",):
            value = torch.randn(shape, generator=generator)
        else:
            value = torch.randint(0, 8, shape, generator=generator).float()
        feed[name] = value
    return feed


def padded_sentences(feed, generator, shortest=8):
    """`feed` (words, cont, target: T x N) cut to sentences of shortest to 16 words, padded
    as LRCN's caption batches are (cont 0 and target -1 after a sentence's end): about a
    third of the LM's positions."""
    T, N = feed["cont"].shape
    lengths = torch.randint(shortest, 17, (N,), generator=generator)
    step = torch.arange(T).unsqueeze(1)
    cont = ((step >= 1) & (step <= lengths)).float()
    return dict(feed, cont=cont, target=feed["target"].masked_fill(step > lengths, -1))


def ours_step(net, feed, loss_of=None):
    def run():
        net.zero_grad(set_to_none=True)
        outputs = net(**feed)
        (outputs.loss if loss_of is None else loss_of(outputs)).backward()
    return run


def torch_step(model, feed):
    def run():
        model.zero_grad(set_to_none=True)
        model(**feed).backward()
    return run


def workloads(generator):
    """name -> (our step, torch step, forward FLOPs)."""
    found = {}
    parse = lambda text: text_format.Parse(text, caffe_pb2.NetParameter())  # noqa: E731

    net = Net(parse(caffenet_text()), phase="TRAIN")
    feed = fed_tensors(net, generator)
    found["CaffeNet train step"] = (ours_step(net, feed), torch_step(TorchCaffeNet(), feed),
                                    net.compiled.total_flops())

    net = Net(parse(LSTM_LM), phase="TRAIN")
    feed = {"words": torch.randint(0, V_LM, (T_LM, N_LM), generator=generator).float(),
            "cont": torch.ones(T_LM, N_LM),
            "target": torch.randint(0, V_LM, (T_LM, N_LM), generator=generator).float()}
    feed["cont"][0] = 0
    found[PAPER_LM] = (ours_step(net, feed), torch_step(TorchLM(), feed),
                       net.compiled.total_flops())
    feed = padded_sentences(feed, generator)
    found["LSTM LM train step, a third padded"] = (ours_step(net, feed),
                                                   torch_step(TorchLM(), feed), None)

    net = Net(os.path.join(ROOT, "nets/lrcn_caption.prototxt"), phase="TRAIN",
              stages=("factored", "2-layer"))
    feed = fed_tensors(net, generator)
    found[MAIN_JOB_NET] = (ours_step(net, feed), torch_step(TorchCaption(), feed),
                           net.compiled.total_flops())

    net = Net(os.path.join(ROOT, "nets/lrcn_activity.prototxt"), phase="TEST",
              stages=("rgb", "deploy"))
    feed = fed_tensors(net, generator)
    label = torch.randint(0, 8, (16 * 10,), generator=generator)

    def activity_loss(outputs):
        return F.nll_loss(torch.log(outputs["probs"]).flatten(0, 1), label)
    found["activity LRCN net"] = (ours_step(net, feed, activity_loss),
                                  torch_step(TorchActivity(), dict(feed, label=label)),
                                  net.compiled.total_flops())
    return found


# --- Caffe's own products on OpenBLAS --------------------------------------------------------


def caffe_lm_products():
    """One train step's matrix products of the paper-size LM as BVLC Caffe's CPU code issues
    them, through numpy's OpenBLAS (the BLAS Caffe links): a lower bound on Caffe's step on
    this machine with this OpenBLAS, everything else Caffe does (gate math, softmax, copies,
    Embed) coming on top.

    Caffe's LSTM is an unrolled net: one InnerProduct for W_xc x over all T x N rows, and per
    step t an InnerProduct of W_hc with cont_t h_{t-1} (N rows) whose backward accumulates
    dW_hc (beta 1) and, from t = 1 on, gives dh_{t-1} (h_0 is an input of the unrolled net: no
    gradient). Then the vocabulary InnerProduct over T x N rows."""
    T, N, H, V = T_LM, N_LM, H_LM, V_LM
    generator = numpy.random.default_rng(0)

    def matrix(rows, columns):
        return generator.standard_normal((rows, columns), dtype=numpy.float32)
    x, h, d_gates, d_scores = matrix(T * N, H), matrix(T * N, H), matrix(T * N, 4 * H), \
        matrix(T * N, V)
    W_xc, W_hc, W_predict = matrix(4 * H, H), matrix(4 * H, H), matrix(V, H)
    gates, scores, d_h = (numpy.empty((T * N, 4 * H), numpy.float32),
                          numpy.empty((T * N, V), numpy.float32),
                          numpy.empty((T * N, H), numpy.float32))
    dW_xc, dW_hc, dW_predict = (numpy.empty_like(W_xc), numpy.empty_like(W_hc),
                                numpy.empty_like(W_predict))
    steps = [slice(t * N, (t + 1) * N) for t in range(T)]

    def run():
        numpy.matmul(x, W_xc.T, out=gates)
        for rows in steps:
            numpy.matmul(h[rows], W_hc.T, out=gates[rows])
        numpy.matmul(h, W_predict.T, out=scores)
        numpy.matmul(d_scores.T, h, out=dW_predict)
        numpy.matmul(d_scores, W_predict, out=d_h)
        for t, rows in enumerate(steps):
            # Caffe accumulates (sgemm with beta 1); numpy has no beta, and an add after each
            # product would cost more than beta 1 does, so each product overwrites: the time
            # stays a lower bound.
            numpy.matmul(d_gates[rows].T, h[rows], out=dW_hc)
            if t > 0:
                numpy.matmul(d_gates[rows], W_hc, out=d_h[rows])
        numpy.matmul(d_gates.T, x, out=dW_xc)
        numpy.matmul(d_gates, W_xc, out=d_h)
    return run


# --- real Caffe --------------------------------------------------------------------------------


def caption_net_for_caffe_time(net):
    """nets/lrcn_caption.prototxt as `caffe time` can run it: the data layers of the compiled
    TRAIN net `net` replaced by one Input layer with the same tops and shapes (Caffe's own
    ImageData needs OpenCV, HDF5Data files; `caffe time` times layers, not data)."""
    message = caffe_pb2.NetParameter()
    with open(os.path.join(ROOT, "nets/lrcn_caption.prototxt")) as file:
        text_format.Parse(file.read(), message)
    data_types = {layer.type for layer in net.compiled.layers if not layer.bottoms}
    kept = [layer for layer in message.layer if layer.type not in data_types]
    del message.layer[:]
    inputs = message.layer.add(name="input", type="Input")
    for name, shape in data_tops(net):
        inputs.top.append(name)
        inputs.input_param.shape.add().dim.extend(shape)
    message.layer.extend(kept)
    return text_format.MessageToString(message)


def caffe_nets():
    """{workload name: (prototxt text, extra `caffe time` arguments)} for the workloads that
    real Caffe can run as they are."""
    main = Net(os.path.join(ROOT, "nets/lrcn_caption.prototxt"), phase="TRAIN",
               stages=("factored", "2-layer"))
    return {"CaffeNet train step": (caffenet_text(), []),
            PAPER_LM: (LSTM_LM, []),
            MAIN_JOB_NET: (caption_net_for_caffe_time(main),
                           ["-phase", "TRAIN", "-stage", "factored,2-layer"])}


def caffe_time_ms(output):
    """Caffe's mean forward + backward milliseconds from `caffe time`'s log (its "Average
    Forward-Backward" line is rounded to whole milliseconds; the two passes are not)."""
    passes = [re.search(rf"Average {name} pass: ([0-9.eE+-]+) ms", output)
              for name in ("Forward", "Backward")]
    if not all(passes):
        raise ValueError("no 'Average Forward/Backward pass' lines in caffe time's output:\n"
                         + output[-2000:])
    return sum(float(found.group(1)) for found in passes)


def caffe_comparison(caffe, found, reps, iterations=10):
    """Real Caffe's `caffe time` and our step on those of the workloads `found` that Caffe can
    run, alternating round by round: {name: (Caffe's ms per step, ours)} (medians over rounds
    of each round's mean). ValueError where Caffe cannot be run or gives no times."""
    environment = dict(os.environ, **{name: str(torch.get_num_threads()) for name in
                                      ("OPENBLAS_NUM_THREADS",) + threads.ENVIRONMENT_VARIABLES})
    times = {}
    with tempfile.TemporaryDirectory() as folder:
        models = {}
        for name, (text, extra) in caffe_nets().items():
            if name not in found:
                continue
            models[name] = (os.path.join(folder, f"net{len(models)}.prototxt"), extra)
            with open(models[name][0], "w") as file:
                file.write(text)
        for _ in range(reps):
            for name, (model, extra) in models.items():
                try:
                    result = subprocess.run([caffe, "time", "-model", model, "-iterations",
                                             str(iterations)] + extra, env=environment,
                                            capture_output=True, text=True)
                except OSError as error:        # executable, but not a program
                    raise ValueError(f"cannot run it: {error.strerror}") from None
                caffe_ms = caffe_time_ms(result.stdout + result.stderr)
                time.sleep(SETTLE_SECONDS)    # Caffe's OpenBLAS threads, as in measure()
                ours = found[name][0]
                ours()
                ours_ms = 1e3 * statistics.mean(timed(ours) for _ in range(iterations))
                times.setdefault(name, []).append((caffe_ms, ours_ms))
                print(f"  real Caffe {name}: {caffe_ms:.1f} ms, ours {ours_ms:.1f} ms",
                      flush=True)
    return {name: tuple(statistics.median(sample[k] for sample in samples) for k in (0, 1))
            for name, samples in times.items()}


# --- GEMM rates -----------------------------------------------------------------------------

GEMM_SHAPES = [(2000, 1000, 4000), (2000, 1000, 8801), (100, 1000, 4000)]


def gemm_variants(M, K, N):
    a, w = torch.randn(M, K), torch.randn(N, K)
    out = numpy.empty((M, N), numpy.float32)
    found = {"torch.mm": lambda: torch.mm(a, w.t()),
             "OpenBLAS": lambda: numpy.matmul(a.numpy(), w.numpy().T, out=out)}
    if gemm.ONEDNN_LINEAR is not None:
        # On the dense tensors, as runtime.gemm calls it.
        found["oneDNN"] = lambda: gemm.ONEDNN_LINEAR(a, w, None, "none", [], "")
    if gemm.cpu_has_bfloat16():
        a16, w16 = a.bfloat16(), w.bfloat16()
        found["oneDNN bfloat16"] = lambda: gemm.ONEDNN_LINEAR(a16, w16, None, "none", [], "")
    return found


def other_library():
    """The library runtime.gemm's rule does not give this CPU's large products."""
    return "onednn" if gemm.CPU_LIBRARY == "torch" else "torch"


def with_other_gemm(run):
    """`run` with every product on the other library (LRCN_GEMM=onednn or torch): what the
    rule's choice for this CPU gains."""
    def forced():
        gemm.FORCED = other_library()
        try:
            run()
        finally:
            gemm.FORCED = None
    return forced


def in_bfloat16(run):
    """`run` with --precision bfloat16 (runtime.gemm.set_precision)."""
    def reduced():
        gemm.set_precision("bfloat16")
        try:
            run()
        finally:
            gemm.set_precision("float32")
    return reduced


def timed(run):
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


SETTLE_SECONDS = 0.3


def measure(steps, reps, warmup=1, on_openblas=()):
    """{key: [seconds]}: every step once per round, rounds repeated (the first `warmup`
    rounds not kept).

    The steps named in `on_openblas` are followed by a pause: OpenBLAS's threads keep spinning
    for a while after a product ends, and whatever runs next on torch's threads would share
    the cores with them (measured: oneDNN products 20-40% slower right after an OpenBLAS
    one)."""
    times = {key: [] for key in steps}
    for rep in range(warmup + reps):
        for key, run in steps.items():
            seconds = timed(run)
            if key in on_openblas:
                time.sleep(SETTLE_SECONDS)
            if rep >= warmup:
                times[key].append(seconds)
    return times


def load():
    with open("/proc/loadavg") as file:
        return " ".join(file.read().split()[:3])


def main_job_solver(folder):
    """solvers/caption_solver.prototxt with its snapshots written into `folder`."""
    with open(os.path.join(ROOT, "solvers/caption_solver.prototxt")) as file:
        text = file.read()
    text = text.replace('snapshot_prefix: "runs/caption/lrcn_caption"',
                        f'snapshot_prefix: "{folder}/lrcn_caption"')
    path = os.path.join(folder, "solver.prototxt")
    with open(path, "w") as file:
        file.write(text)
    return path


def main_job_seconds(solver, threads_argument, iterations):
    command = [os.path.join(os.path.dirname(sys.executable), "lrcn-train"), solver,
               "--iterations", str(iterations), "--no-progress"] + threads_argument
    environment = {k: v for k, v in os.environ.items() if k not in threads.ENVIRONMENT_VARIABLES}
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=environment, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def threads_check(iterations, reps, fixed_counts):
    """The main job with each thread setting, as the machine is and with one more busy
    process; each run is printed as it ends (2 threads on a loaded machine can take long)."""
    import tempfile
    variants = {"default (adaptive)": []}
    variants.update({f"--threads {n}": ["--threads", str(n)] for n in fixed_counts})
    print(f"\nmain job, lrcn-train solvers/caption_solver.prototxt --iterations {iterations}, "
          f"whole process (seconds), runs alternating, median of {reps}", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        solver = main_job_solver(folder)
        for busy in (False, True):
            spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy \
                else None
            condition = "with one more busy process" if busy else "as the machine is"
            try:
                samples = {name: [] for name in variants}
                for _ in range(reps):
                    for name, argument in variants.items():
                        before = load()
                        samples[name].append(main_job_seconds(solver, argument, iterations))
                        print(f"  {condition}: {name}: {samples[name][-1]:.1f} s "
                              f"(load average before {before})", flush=True)
            finally:
                if spinner is not None:
                    spinner.kill()
                    spinner.wait()
            print(f"{condition}: " + ", ".join(f"{name} {statistics.median(s):.1f} s"
                                              for name, s in samples.items()), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch + BLAS threads (default: torch's, all cores)")
    parser.add_argument("--only", action="append", help="workloads whose name contains this")
    parser.add_argument("--threads-check", action="store_true")
    parser.add_argument("--caffe", metavar="PATH",
                        help="a real Caffe binary (CPU build) to time on the same nets")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--fixed-counts", default="1,2",
                        help="the --threads values the threads check compares with the default")
    args = parser.parse_args()
    if args.caffe and not (os.path.isfile(args.caffe) and os.access(args.caffe, os.X_OK)):
        parser.error(f"--caffe {args.caffe}: not an executable file")
    if args.threads:
        threads.set_threads(args.threads)
    # As every tool that runs a net does (threads.configure): both sides of each ratio gain.
    kept = allocator.configure()
    torch.manual_seed(0)
    bfloat16 = gemm.cpu_has_bfloat16()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, oneDNN products "
          f"{gemm.ONEDNN_LINEAR is not None}, bfloat16 instructions {bfloat16}, freed memory "
          f"kept (runtime.allocator) {kept}; load average {load()}")

    rates = {}
    for M, K, N in GEMM_SHAPES:
        samples = measure(gemm_variants(M, K, N), args.reps, on_openblas={"OpenBLAS"})
        rates[(M, K, N)] = {name: 2 * M * K * N / statistics.median(s)
                            for name, s in samples.items()}
        print(f"GEMM {M}x{K} @ {K}x{N}: " + ", ".join(
            f"{name} {rate / 1e9:.0f}" for name, rate in rates[(M, K, N)].items())
            + " GFLOP/s (median)")
    # The float32 bound: the bfloat16 rate is printed, not used as the yardstick.
    best_rate = max(rate for r in rates.values() for name, rate in r.items()
                    if "bfloat16" not in name)

    found = workloads(torch.Generator().manual_seed(0))
    chosen = {name: steps for name, steps in found.items()
              if not args.only or any(part in name for part in args.only)}
    steps = {}
    for name, (ours, reference, _) in chosen.items():
        steps[(name, "ours")], steps[(name, "torch")] = ours, reference
        steps[(name, "other GEMM")] = with_other_gemm(ours)
        if bfloat16:
            steps[(name, "bfloat16")] = in_bfloat16(ours)
    if PAPER_LM in chosen:
        steps[(PAPER_LM, "Caffe's products")] = caffe_lm_products()
    times = measure(steps, args.reps, on_openblas={(PAPER_LM, "Caffe's products")})
    print(f"\nwhole train steps, median of {args.reps} after a warm-up, alternating; "
          f"rate = 3 x forward FLOPs / time, against the best GEMM rate "
          f"{best_rate / 1e9:.0f} GFLOP/s")
    other = other_library()
    print(f"(this CPU's products go to {gemm.CPU_LIBRARY} (runtime.gemm.CPU_LIBRARY); ours, "
          f"{other}: the same step with LRCN_GEMM={other}; ours, bfloat16: with "
          f"--precision bfloat16)")
    other_heading = f"ours, {other} ms"
    print(f"| {'workload':<34} | {'ours ms':>8} | {'torch ms':>8} | {'ours/torch':>10} "
          f"| {other_heading:>19} | {'ours, bfloat16 ms':>17} | {'ours GFLOP/s':>12} "
          f"| {'x best GEMM':>11} |")
    print(f"|{'-' * 36}|{'-' * 9}:|{'-' * 9}:|{'-' * 11}:|{'-' * 20}:|{'-' * 18}:|{'-' * 13}:"
          f"|{'-' * 12}:|")
    for name, (_, _, flops) in chosen.items():
        ours, reference, other_gemm = (statistics.median(times[(name, k)])
                                       for k in ("ours", "torch", "other GEMM"))
        reduced = statistics.median(times[(name, "bfloat16")]) if bfloat16 else float("nan")
        if flops:
            achieved = 3 * flops / ours
            rate = f"{achieved / 1e9:12.1f} | {achieved / best_rate:11.2f}"
        else:                   # a padded batch's work depends on its data: no rate
            rate = f"{'-':>12} | {'-':>11}"
        print(f"| {name:<34} | {ours * 1e3:8.1f} | {reference * 1e3:8.1f} "
              f"| {ours / reference:10.2f} | {other_gemm * 1e3:19.1f} | {reduced * 1e3:17.1f} "
              f"| {rate} |")
    if PAPER_LM in chosen:
        ours, products = (statistics.median(times[(PAPER_LM, k)])
                          for k in ("ours", "Caffe's products"))
        print(f"{PAPER_LM}: Caffe's own products on OpenBLAS (caffe_lm_products, a lower "
              f"bound on Caffe's step here) {products * 1e3:.1f} ms; ours / that "
              f"{ours / products:.2f} (an upper bound on ours / Caffe)")
    if args.caffe:
        print(f"\nreal Caffe ({args.caffe}, `caffe time`, {torch.get_num_threads()} BLAS "
              f"threads) and ours, alternating, median of {args.reps} rounds")
        try:
            compared = caffe_comparison(args.caffe, chosen, args.reps)
        except ValueError as error:         # Caffe failed: its log says why
            sys.exit(f"bench_train.py: --caffe {args.caffe}: {error}")
        print("| workload | real Caffe ms | ours ms | ours / Caffe |\n|---|---:|---:|---:|")
        for name, (caffe_ms, ours_ms) in compared.items():
            print(f"| {name} | {caffe_ms:.1f} | {ours_ms:.1f} | {ours_ms / caffe_ms:.2f} |")
    print(f"load average after: {load()}")
    if args.threads_check:
        threads_check(args.iterations, max(1, args.reps // 3),
                      [int(n) for n in args.fixed_counts.split(",")])


if __name__ == "__main__":
    main()
