"""ImageData loading speed with 0, 1 and 2 prefetch workers, next to a consumer's rate.

Generates JPEG images (320 x 240, like UCF-101 frames) in a temporary folder and reads them
through the ImageData unit as the captioning nets do (warp to 256 x 256, random 227 crop,
mirror, mean values, batch 32). For each worker count it reports:
- loader only: images/s when nothing else runs (forward() called back to back);
- with consumer: images/s when every batch is also fed to a small conv net on CPU, i.e. what
  training would see. With workers >= 1 loading overlaps the net, so the step costs about
  max(load, compute) instead of load + compute;
- images kept: loader only from the second epoch on, when the layer serves the images it
  decoded in the first (ImageData keeps them, up to its budget); the first two columns have
  that turned off, so that every read decodes.
The consumer's own rate (the net alone on ready batches) is printed too.

    python bench/bench_loader.py [--images 192] [--batches 6] [--rounds 3] [--threads N]

About 40 s on 2 CPU cores.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from runtime import prefetch  # noqa: E402
from runtime.layers.registry import unit_for  # noqa: E402
from support import compiled_layer  # noqa: E402

BATCH = 32


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=192, help="distinct images generated")
    parser.add_argument("--batches", type=int, default=6, help="timed batches per variant")
    parser.add_argument("--rounds", type=int, default=3, help="round-robin repetitions")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return parser.parse_args()


def make_images(folder, count):
    """Smooth random colour images (JPEG, quality 90) and their list file."""
    rng = np.random.default_rng(0)
    lines = []
    for index in range(count):
        coarse = rng.integers(0, 256, (15, 20, 3), dtype=np.uint8)
        picture = Image.fromarray(coarse).resize((320, 240), Image.BICUBIC)
        name = f"frame{index:04d}.jpg"
        picture.save(os.path.join(folder, name), quality=90)
        lines.append(f"{name} {index % 101}\n")
    listing = os.path.join(folder, "list.txt")
    with open(listing, "w") as handle:
        handle.writelines(lines)
    return listing


def image_data_unit(folder, listing, workers, keep_images=False):
    text = (f'layer {{ name: "data" type: "ImageData" top: "data" top: "label" '
            f'transform_param {{ mirror: true crop_size: 227 mean_value: 104 mean_value: 117 '
            f'mean_value: 123 }} image_data_param {{ source: "{listing}" '
            f'root_folder: "{folder}/" batch_size: {BATCH} new_height: 256 new_width: 256 '
            f'shuffle: true }} }}')
    with prefetch.options(workers=workers):
        layer = compiled_layer(text, [])
        unit = unit_for("ImageData")(layer, torch.Generator().manual_seed(1701))
    if not keep_images:
        unit.decoded.budget = 0
    return unit


def consumer():
    """A small CaffeNet-like front end: enough work per image to be a realistic consumer."""
    return nn.Sequential(
        nn.Conv2d(3, 48, 11, stride=4), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(48, 96, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(96, 96, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(96, 101)).eval()


def rate(step, batches):
    step()                                   # warm-up (thread start, first file reads)
    start = time.perf_counter()
    for _ in range(batches):
        step()
    return batches * BATCH / (time.perf_counter() - start)


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    net = consumer()
    ready = torch.randn(BATCH, 3, 227, 227)
    results = {workers: ([], [], []) for workers in (0, 1, 2)}
    net_rates = []
    with tempfile.TemporaryDirectory() as folder:
        listing = make_images(folder, args.images)
        # Round-robin rounds, medians reported: a busy machine slows every variant alike.
        for _ in range(args.rounds):
            with torch.no_grad():
                net_rates.append(rate(lambda: net(ready), args.batches))
            for workers, (alone, together, kept) in results.items():
                unit = image_data_unit(folder, listing, workers)
                alone.append(rate(unit, args.batches))

                def train_step():
                    data, _ = unit()
                    with torch.no_grad():
                        net(data)

                together.append(rate(train_step, args.batches))
                unit.close()
                unit = image_data_unit(folder, listing, workers, keep_images=True)
                for _ in range(-(-args.images // BATCH)):      # the first epoch decodes
                    unit()
                kept.append(rate(unit, args.batches))
                unit.close()
    print(f"ImageData, batch {BATCH}, 320x240 JPEG -> 256x256 warp -> 227 crop + mirror; "
          f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}; "
          f"median of {args.rounds} rounds")
    print(f"consumer alone (conv net forward on CPU): {statistics.median(net_rates):8.1f} "
          "images/s")
    print()
    print("| workers | loader only (images/s) | loader + consumer (images/s) "
          "| loader only, images kept (images/s) |")
    print("|--------:|-----------------------:|----------------------------:"
          "|------------------------------------:|")
    for workers, (alone, together, kept) in results.items():
        print(f"| {workers:7d} | {statistics.median(alone):22.1f} | "
              f"{statistics.median(together):27.1f} | {statistics.median(kept):35.1f} |")


if __name__ == "__main__":
    main()
