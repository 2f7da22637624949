"""LSTM layer speed at the paper's sizes: forward + backward, float32.

Compares runtime.layers.recurrent.LSTM (plain path and fused path) with torch.nn.LSTM of the
same sizes and with the matmul lower bound: the layer's matmul FLOPs (forward + backward)
divided by the rate of a large torch.mm of the input projection's shape, measured in the same
process. On CPU a second bound uses the rate of the same product through oneDNN
(torch.utils.mkldnn), the GEMM that torch.nn.LSTM's CPU kernel uses: on some CPUs (AMD) it is
about twice MKL's, so nn.LSTM can beat the torch.mm bound. Variants run round-robin, so a
noisy machine slows them alike; the table reports the best and the median of --reps timed
iterations after a warm-up. Ratios are to nn.LSTM's best and to the torch.mm bound.

    python bench/bench_lstm.py                    # CUDA if available, else CPU
    python bench/bench_lstm.py --device cpu --reps 5
"""

import argparse
import os
import statistics
import sys
import time

import torch
import torch.utils.mkldnn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import compiler  # noqa: E402
from lrcn_proto import caffe_pb2  # noqa: E402
from runtime.layers.recurrent import LSTM, to_torch_gate_order  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--T", type=int, default=20)
    parser.add_argument("--N", type=int, default=100)
    parser.add_argument("--D", type=int, default=1000)
    parser.add_argument("--H", type=int, default=1000)
    parser.add_argument("--Ds", type=int, default=1000, help="static input size (its rows)")
    parser.add_argument("--reps", type=int, default=5, help="timed iterations per variant")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return parser.parse_args()


def make_lstm(T, N, D, H, Ds, device):
    """Our LSTM unit, compiled in a net of one Input layer and the LSTM (no net file needed)."""
    net = caffe_pb2.NetParameter(name="bench_lstm")
    bottoms = {"x": (T, N, D), "cont": (T, N)}
    if Ds:
        bottoms["x_static"] = (N, Ds)
    inputs = net.layer.add(name="input", type="Input")
    for name, shape in bottoms.items():
        inputs.top.append(name)
        inputs.input_param.shape.add(dim=shape)
    param = net.layer.add(name="lstm", type="LSTM")
    param.bottom.extend(bottoms)
    param.top.append("h")
    filler = param.recurrent_param.weight_filler
    param.recurrent_param.num_output = H
    filler.type, filler.min, filler.max = "uniform", -0.08, 0.08
    layer = compiler.compile_net(net, phase="TRAIN").layers[-1]
    return LSTM(layer, torch.Generator().manual_seed(0)).to(device)


def torch_lstm_like(ours, device):
    """torch.nn.LSTM with our (non-static) weights, gate blocks reordered to [i, f, g, o]."""
    W_xc, b_c, W_hc = ours.blobs[0], ours.blobs[1], ours.blobs[-1]
    lstm = torch.nn.LSTM(W_xc.shape[1], W_hc.shape[1]).to(device)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(to_torch_gate_order(W_xc))
        lstm.weight_hh_l0.copy_(to_torch_gate_order(W_hc))
        lstm.bias_ih_l0.copy_(to_torch_gate_order(b_c))
        lstm.bias_hh_l0.zero_()
    return lstm


def matmul_flops(T, N, D, H, Ds):
    """Forward matmul FLOPs of the layer (a multiply-add is 2); backward does twice as many."""
    return 2 * T * N * D * 4 * H + 2 * T * N * H * 4 * H + 2 * N * (Ds or 0) * 4 * H


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    T, N, D, H, Ds = args.T, args.N, args.D, args.H, args.Ds
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)

    x = torch.randn(T, N, D, device=device, requires_grad=True)
    x_static = torch.randn(N, Ds, device=device, requires_grad=True)
    cont = torch.ones(T, N, device=device)
    cont[0] = 0                                 # a batch of fresh sequences (LRCN training)
    grad_h = torch.randn(T, N, H, device=device)
    plain, static = make_lstm(T, N, D, H, None, device), make_lstm(T, N, D, H, Ds, device)
    reference = torch_lstm_like(plain, device)
    mm_a = torch.randn(T * N, D, device=device)
    mm_b = torch.randn(D, 4 * H, device=device)

    def ours(layer, fused, *extra):
        def run():
            layer.fused = fused
            layer.reset_state()
            layer(x, cont, *extra)[0].backward(grad_h)
        return layer, run

    def nn_lstm():
        reference(x)[0].backward(grad_h)

    variants = {
        ("plain", False): ours(plain, False)[1],
        ("fused", False): ours(plain, True)[1],
        ("nn.LSTM", False): nn_lstm,
        ("plain", True): ours(static, False, x_static)[1],
        ("fused", True): ours(static, True, x_static)[1],
        ("mm", None): lambda: torch.mm(mm_a, mm_b),
    }
    onednn_mm = onednn_matmul(mm_a, mm_b) if device.type == "cpu" else None
    if onednn_mm is not None:
        variants[("mm oneDNN", None)] = onednn_mm
    times = {key: [] for key in variants}
    for rep in range(args.warmup + args.reps):
        for key, run in variants.items():
            for module in (plain, static, reference):
                module.zero_grad(set_to_none=True)
            x.grad = x_static.grad = None
            sync()
            start = time.perf_counter()
            run()
            sync()
            if rep >= args.warmup:
                times[key].append(time.perf_counter() - start)

    mm_flops = 2 * T * N * D * 4 * H
    rates = {"": mm_flops / min(times[("mm", None)])}
    if onednn_mm is not None:
        rates[" (oneDNN)"] = mm_flops / min(times[("mm oneDNN", None)])
    rate = rates[""]
    nn_best = min(times[("nn.LSTM", False)])
    print(f"device {device} ({torch.get_num_threads()} CPU threads), torch {torch.__version__}; "
          f"T={T} N={N} D={D} H={H}, static Ds={Ds}; float32, forward + backward")
    print(f"matmul ({T * N}x{D} @ {D}x{4 * H}) rate: torch.mm {rate / 1e9:.0f} GFLOP/s"
          + "".join(f", oneDNN {r / 1e9:.0f} GFLOP/s" for k, r in rates.items() if k)
          + f"; best and median of {args.reps} after {args.warmup} warm-up")
    print()
    print(f"| {'variant':<23} | {'best ms':>8} | {'median ms':>9} | {'x nn.LSTM':>9} "
          f"| {'x bound':>7} |")
    print(f"|{'-' * 25}|{'-' * 9}:|{'-' * 10}:|{'-' * 10}:|{'-' * 8}:|")
    for has_static in (False, True):
        flops = 3 * matmul_flops(T, N, D, H, Ds if has_static else None)
        bound = flops / rate            # the ratios' reference: torch.mm's rate
        suffix = " + static" if has_static else ""
        rows = [(f"{name}{suffix}", times[(name, has_static)])
                for name in ("plain", "fused", "nn.LSTM") if (name, has_static) in times]
        for label, samples in rows:
            best = min(samples)
            print(f"| {label:<23} | {best * 1e3:8.1f} | {statistics.median(samples) * 1e3:9.1f} "
                  f"| {best / nn_best:9.2f} | {best / bound:7.2f} |")
        for rate_name, other_rate in rates.items():
            other = flops / other_rate
            label = "bound" + rate_name + suffix
            print(f"| {label:<23} | {other * 1e3:8.1f} | {'':9} "
                  f"| {other / nn_best:9.2f} | {other / bound:7.2f} |")
    check_agreement(plain, reference, x, cont)


def onednn_matmul(a, b):
    """The product a @ b through oneDNN (as nn.LSTM's CPU kernel runs it), or None."""
    if not torch.backends.mkldnn.is_available():
        return None
    linear = torch.nn.Linear(b.shape[0], b.shape[1], bias=False)
    with torch.no_grad():
        linear.weight.copy_(b.t())
    module, a_mkldnn = torch.utils.mkldnn.to_mkldnn(linear), a.to_mkldnn()

    def run():
        with torch.no_grad():
            module(a_mkldnn)
    return run


def check_agreement(plain, reference, x, cont):
    """The timed variants compute the same h: print the largest differences."""
    with torch.no_grad():
        outputs = {}
        for fused in (False, True):
            plain.fused = fused
            plain.reset_state()
            outputs[fused] = plain(x, cont)[0]
        torch_h = reference(x)[0]
    print()
    print(f"max |h_plain - h_fused| = {(outputs[False] - outputs[True]).abs().max().item():.2e}; "
          f"max |h_plain - h_nn.LSTM| = {(outputs[False] - torch_h).abs().max().item():.2e}")


if __name__ == "__main__":
    main()
