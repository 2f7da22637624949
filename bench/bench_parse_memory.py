"""Memory and time of parsing big files, and the cost of compiling per layer.

    python bench/bench_parse_memory.py [--megabytes 50] [--kinds string,layers]
                                       [--layers 1000,2000,4000]

Each parse runs in a process of its own and reports its peak resident memory (ru_maxrss) above
what the same process held just before parsing, per byte of the file: a file of one long string
literal, and a file of many small layers (one field per line, a comment in each). Then a chain
of ReLU / InnerProduct layers is compiled at several lengths: the time per layer should stay
flat (compile cost linear in the layers).
"""

import argparse
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LAYER = ('layer {\n  name: "relu%d"\n  type: "ReLU"\n  bottom: "x"\n  top: "x"\n'
         '  # a comment\n}\n')
INPUT = 'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 8 } } }\n'


def write_file(kind, size):
    handle, path = tempfile.mkstemp(suffix=".prototxt")
    with os.fdopen(handle, "w") as out:
        if kind == "string":
            out.write('name: "' + "x" * size + '"\n')
        else:
            out.write(INPUT)
            written, index = len(INPUT), 0
            while written < size:
                chunk = "".join(LAYER % i for i in range(index, index + 1000))
                out.write(chunk)
                written += len(chunk)
                index += 1000
    return path


def measure_child(path):
    """Run in the child: parse `path` and print peak KiB before and after, and seconds."""
    from compiler import load_file, load_text
    load_text("name: 'warm-up'", "net")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    load_file(path, "net")
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(before, after, seconds)


def parse_memory(kind, size):
    path = write_file(kind, size)
    try:
        output = subprocess.run([sys.executable, __file__, "--child", path], check=True,
                                capture_output=True, text=True).stdout.split()
    finally:
        os.unlink(path)
    before, after, seconds = int(output[0]), int(output[1]), float(output[2])
    return (after - before) * 1024 / size, seconds


def chain(length):
    """An Input, then InnerProduct and ReLU layers alternating, each reading the last."""
    lines = [INPUT]
    for i in range(length):
        bottom = "x" if i == 0 else f"t{i - 1}"
        if i % 2:
            lines.append(f'layer {{ name: "l{i}" type: "ReLU" bottom: "{bottom}" '
                         f'top: "t{i}" }}\n')
        else:
            lines.append(f'layer {{ name: "l{i}" type: "InnerProduct" bottom: "{bottom}" '
                         f'top: "t{i}" inner_product_param {{ num_output: 8 }} }}\n')
    return "".join(lines)


def compile_times(lengths):
    from compiler import compile_net, load_text
    rows = []
    for length in lengths:
        document = load_text(chain(length), "net")
        started = time.perf_counter()
        compile_net(document)
        rows.append((length, (time.perf_counter() - started) / length * 1000))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=float, default=50)
    parser.add_argument("--kinds", default="string,layers",
                        help="which files: one long string literal, many small layers")
    parser.add_argument("--layers", default="1000,2000,4000")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure_child(args.child)
        return
    size = int(args.megabytes * 2 ** 20)
    print(f"parse of a {args.megabytes:g} MB file (peak resident memory above the process "
          "before parsing, per byte of the file):")
    for kind in args.kinds.split(","):
        per_byte, seconds = parse_memory(kind, size)
        print(f"  {kind:7s}  {per_byte:6.1f} bytes per byte  ({per_byte * size / 2 ** 30:.2f} "
              f"GiB), {seconds:.1f} s")
    print("compile time per layer:")
    for length, milliseconds in compile_times([int(n) for n in args.layers.split(",")]):
        print(f"  {length:6d} layers  {milliseconds:.2f} ms per layer")


if __name__ == "__main__":
    main()
