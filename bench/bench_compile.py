"""torch.compile on the bundled nets: graph breaks (torch._dynamo.explain) and the speed of the
compiled forward (+ backward in TRAIN) against eager, measured in the same process.

Every data-layer top and Input blob is fed as a tensor of its compiled shape (labels and word
indices 0, cont markers 1), so the data layers' file reading stays out of the measurement.
Eager and compiled runs alternate; the table gives the median of --reps timed iterations after
a warm-up (which includes compilation) and the ratio eager / compiled. The compiled net is a
second Net of the same file and seed, so the two never share carried recurrent state.

    python bench/bench_compile.py [--reps 20] [--threads N] [--only NAME]
"""

import argparse
import os
import statistics
import sys
import time

import torch
import torch._dynamo

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from runtime.net import Net  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

# name -> (net file, phase, stages). The activity train nets need the prepared video lists
# (lrcn-activity-data), so their deploy forms stand for them.
NETS = {
    "caption TRAIN": ("nets/lrcn_caption.prototxt", "TRAIN", ("factored", "2-layer")),
    "caption TEST": ("nets/lrcn_caption.prototxt", "TEST", ("factored", "2-layer", "test-on-val")),
    "caption deploy image": ("nets/lrcn_caption_deploy.prototxt", "TEST",
                             ("image", "factored", "2-layer")),
    "caption deploy word": ("nets/lrcn_caption_deploy.prototxt", "TEST",
                            ("word", "factored", "2-layer")),
    "activity deploy rgb": ("nets/lrcn_activity.prototxt", "TEST", ("rgb", "deploy")),
    "single frame deploy rgb": ("nets/single_frame.prototxt", "TEST", ("rgb", "deploy")),
}


def feed_for(net):
    """A tensor for every blob a data or Input layer produces: what a caller feeds."""
    feed = {}
    for layer in net.compiled.layers:
        if layer.bottoms:
            continue
        for name, shape in zip(layer.top_names, layer.top_shapes):
            if "cont" in name or "marker" in name:
                feed[name] = torch.ones(shape)
            elif name == "data" or "feature" in name:
                feed[name] = torch.randn(shape)
            else:   # labels, word indices
                feed[name] = torch.zeros(shape)
    return feed


def graph_breaks(net, feed):
    torch._dynamo.reset()
    return torch._dynamo.explain(net)(**feed).graph_break_count


def step(module, feed, train):
    outputs = module(**feed)
    if train and outputs.loss.requires_grad:
        outputs.loss.backward()
    return outputs


def timed(module, feed, train):
    started = time.perf_counter()
    step(module, feed, train)
    return time.perf_counter() - started


def measure(name, reps):
    path, phase, stages = NETS[name]
    eager = Net(os.path.join(ROOT, path), phase=phase, stages=stages)
    feed = feed_for(eager)
    breaks = graph_breaks(eager, feed)
    torch._dynamo.reset()
    # Its own Net (same seed, so the same weights): recurrent state carried between calls
    # stays with each.
    compiled = torch.compile(Net(os.path.join(ROOT, path), phase=phase, stages=stages))
    train = phase == "TRAIN"
    for _ in range(3):   # warm-up: the first compiled calls compile (no state, then state)
        step(eager, feed, train)
        step(compiled, feed, train)
    eager_times, compiled_times = [], []
    for _ in range(reps):
        eager_times.append(timed(eager, feed, train))
        compiled_times.append(timed(compiled, feed, train))
    return breaks, statistics.median(eager_times), statistics.median(compiled_times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--only", choices=sorted(NETS), action="append")
    parser.add_argument("--breaks-only", action="store_true", help="count graph breaks, no timing")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{'net':<24} {'breaks':>6} {'eager ms':>9} {'compiled ms':>12} {'speed-up':>9}")
    for name in args.only or NETS:
        if args.breaks_only:
            path, phase, stages = NETS[name]
            net = Net(os.path.join(ROOT, path), phase=phase, stages=stages)
            print(f"{name:<24} {graph_breaks(net, feed_for(net)):>6}", flush=True)
            continue
        breaks, eager, fast = measure(name, args.reps)
        print(f"{name:<24} {breaks:>6} {eager * 1e3:>9.2f} {fast * 1e3:>12.2f} "
              f"{eager / fast:>8.2f}x", flush=True)


if __name__ == "__main__":
    main()
