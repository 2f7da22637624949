"""Parse time for the corpus of real Caffe files, against protobuf's own text parser.

    python bench/bench_parse.py --corpus DIR [--repeat 5]

DIR: a folder of real Caffe .prototxt files, searched recursively (a BVLC Caffe checkout's
models/ and examples/, an LRCN or S2VT checkout).

Prints per-file times for the largest files, the corpus total, and the ratio to
google.protobuf.text_format.Parse (which builds the same message but keeps no positions or
comments and gives plain errors), measured in the same process.
"""

import argparse
import os
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from google.protobuf import text_format  # noqa: E402

from compiler import load_text  # noqa: E402
from compiler.formatter import format_document  # noqa: E402
from lrcn_proto import caffe_pb2  # noqa: E402


def best_time(function, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", required=True, metavar="DIR",
                        help="a folder of Caffe .prototxt files (searched recursively)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    files = sorted(pathlib.Path(args.corpus).rglob("*.prototxt"))
    if not files:
        sys.exit(f"no .prototxt files under {args.corpus}")
    load_text("name: 'warm-up'", "net")   # builds the LALR tables once, as any process does
    rows = []
    for path in files:
        text = path.read_text()
        kind = "solver" if "solver" in path.name else "net"
        message_type = caffe_pb2.SolverParameter if kind == "solver" else caffe_pb2.NetParameter
        ours = best_time(lambda: load_text(text, kind, str(path)), args.repeat)
        reference = best_time(lambda: text_format.Parse(text, message_type()), args.repeat)
        document = load_text(text, kind, str(path))
        formatting = best_time(lambda: format_document(document), args.repeat)
        rows.append((os.path.relpath(path, args.corpus), len(text), ours, reference, formatting))
    rows.sort(key=lambda row: -row[1])
    print(f"{'file':58s} {'bytes':>7s} {'ours ms':>8s} {'protobuf ms':>11s} {'ratio':>6s} "
          f"{'fmt ms':>7s}")
    for name, size, ours, reference, formatting in rows[:8]:
        print(f"{name:58s} {size:7d} {ours * 1e3:8.1f} {reference * 1e3:11.1f} "
              f"{ours / reference:6.2f} {formatting * 1e3:7.1f}")
    total_ours = sum(r[2] for r in rows)
    total_reference = sum(r[3] for r in rows)
    print(f"{'corpus total (' + str(len(rows)) + ' files)':58s} {sum(r[1] for r in rows):7d} "
          f"{total_ours * 1e3:8.1f} {total_reference * 1e3:11.1f} "
          f"{total_ours / total_reference:6.2f} {sum(r[4] for r in rows) * 1e3:7.1f}")
    print(f"largest file: {rows[0][0]} loads in {rows[0][2] * 1e3:.0f} ms "
          f"(median file {statistics.median(r[2] for r in rows) * 1e3:.1f} ms)")


if __name__ == "__main__":
    main()
