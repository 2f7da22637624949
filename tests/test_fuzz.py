"""Mutants of the bundled nets (byte-level and syntax-preserving) through parse, compile and,
for those that compile cheaply, one forward pass: every failure is a CompileError, never another
exception. About 15 s on two idle cores; bench/fuzz.py runs the same harness for as long as you like."""

from fuzz_nets import fuzz


def _check(report):
    shown = "\n\n".join(f"{kind} mutant of {seed}:\n{trace}"
                        for kind, seed, _, trace in report.findings[:3])
    assert not report.findings, f"{report.merge_line()}\n{shown}"
    # The mutants reach every stage: parse errors, compile errors, nets that run.
    assert report.reached["error"] and report.reached["forward"], report.merge_line()


def test_mutants_of_the_bundled_nets_fail_only_with_compile_errors():
    _check(fuzz(byte_mutants=400, token_mutants=400, seed=1701))
