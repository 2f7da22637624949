"""A long fuzz run over the bundled nets: byte-level and syntax-preserving mutants through
parse, compile and (when cheap) one forward pass. Prints the count of mutants, the stages they
reached, and every traceback (an exception that is not the project's CompileError).

    python bench/fuzz.py [--mutants 20000] [--seed 1]

The suite runs the same harness (tests/fuzz_nets.py) on 800 mutants.
"""

import argparse
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "tests"))

from fuzz_nets import fuzz  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mutants", type=int, default=20000,
                        help="how many mutants in all (half byte-level, half syntax-preserving)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    started = time.perf_counter()

    def show(finding):
        kind, seed, text, trace = finding
        print(f"--- traceback from a {kind} mutant of {seed}:\n{trace}", flush=True)
    report = fuzz(args.mutants // 2, args.mutants - args.mutants // 2, args.seed,
                  on_finding=show)
    print(report.merge_line())
    if report.runtime_errors:
        print("errors raised by runtime units (located at their layer):")
        for message, count in report.runtime_errors.most_common():
            print(f"  {count:5d}  {message}")
    print(f"{time.perf_counter() - started:.0f} s")
    return 1 if report.findings else 0


if __name__ == "__main__":
    sys.exit(main())
