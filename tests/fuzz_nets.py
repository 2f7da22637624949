"""Mutants of the bundled nets through parse, compile and one forward pass.

Used by tests/test_fuzz.py (a bounded run in the suite) and bench/fuzz.py (a long run). Every
failure must be a CompileError (the project's own error, with a location where the input has
one); anything else is a finding, kept with its traceback.

Two kinds of mutants: byte-level (flipped, inserted, deleted, duplicated or cut bytes) and
syntax-preserving (a number, string or name token replaced by an interesting value or another
token of the file; a line deleted, duplicated or moved). Nets are shrunk before mutating (batch
sizes 2, one clip per batch) so that the forward passes stay cheap; a mutant is run forward
only when its estimated memory and FLOPs are small.
"""

import glob
import os
import random
import re
import traceback
from collections import Counter
from dataclasses import dataclass, field

import torch

from compiler import CompileError, compile_net, load_text
from compiler.netstate import candidate_states, net_state
from compiler.textformat import _build_parser, decode_source
from compiler.upgrade import upgrade

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORWARD_MEMORY = 64 * 2 ** 20        # bytes (float32 params + activations)
FORWARD_FLOPS = 3 * 10 ** 8
MEMORY_LIMIT = "512M"                # LRCN_MEMORY_LIMIT while fuzzing: no mutant can swap

INTERESTING = ["0", "-1", "1", "2", "3", "7", "-7", "0.5", "-0.5", "1e30", "-1e30", "nan",
               "inf", "-inf", "255", "256", "65536", "1000000", "2147483647", "2147483648",
               "4294967295", "4294967296", "9223372036854775807", "0x7fffffff", "017"]
STRINGS = ['""', '"x"', '"data"', '"label"', '"nonexistent/file.txt"', '"\\U0010ffff"',
           '"\\xff"', '"' + "a" * 300 + '"']


@dataclass
class Report:
    tried: Counter = field(default_factory=Counter)      # mutant kind -> count
    reached: Counter = field(default_factory=Counter)    # stage reached -> count
    findings: list = field(default_factory=list)         # (kind, seed file, text, traceback)
    runtime_errors: Counter = field(default_factory=Counter)   # message -> count, from units

    def merge_line(self):
        stages = ", ".join(f"{k} {v}" for k, v in sorted(self.reached.items()))
        return (f"{sum(self.tried.values())} mutants ({dict(self.tried)}); {stages}; "
                f"{len(self.findings)} tracebacks")


def seed_nets():
    """(path, shrunk text) of every bundled net."""
    seeds = []
    for path in sorted(glob.glob(os.path.join(REPOSITORY, "nets", "*.prototxt"))):
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        text = re.sub(r"(batch_size|clips_per_batch): \d+", r"\1: 2", text)
        seeds.append((path, text))
    return seeds


def byte_mutant(text, rng):
    data = bytearray(text.encode("utf-8"))
    for _ in range(rng.randint(1, 4)):
        if not data:
            break
        at = rng.randrange(len(data))
        kind = rng.randrange(5)
        if kind == 0:
            data[at] = rng.randrange(256)
        elif kind == 1:
            data[at:at] = bytes(rng.choice(b"{}[]<>:;,\"'#\\-.0123456789eE \nxX")
                                for _ in range(rng.randint(1, 4)))
        elif kind == 2:
            del data[at:at + rng.randint(1, 40)]
        elif kind == 3:
            end = min(len(data), at + rng.randint(1, 200))
            data[at:at] = data[at:end]
        else:
            del data[at:]
    return bytes(data)


class TokenMutator:
    """Syntax-preserving edits on the tokens of one seed."""

    def __init__(self, text):
        self.text = text
        self.tokens = [t for t in _build_parser().lex(text) if t.type in
                       ("NUMBER", "STRING", "NAME")]
        self.by_type = {kind: sorted({str(t) for t in self.tokens if t.type == kind})
                        for kind in ("NUMBER", "STRING", "NAME")}
        self.lines = text.splitlines(keepends=True)

    def mutant(self, rng):
        edits = rng.randint(1, 3)
        if rng.random() < 0.25:
            return self._line_edit(rng, edits)
        chosen = sorted(rng.sample(self.tokens, min(edits, len(self.tokens))),
                        key=lambda t: t.start_pos, reverse=True)
        text = self.text
        for token in chosen:
            text = text[:token.start_pos] + self._replacement(token, rng) + \
                text[token.end_pos:]
        return text

    def _replacement(self, token, rng):
        pool = self.by_type[token.type]
        if token.type == "NUMBER":
            return rng.choice(INTERESTING) if rng.random() < 0.8 else rng.choice(pool)
        if token.type == "STRING":
            return rng.choice(STRINGS) if rng.random() < 0.3 else rng.choice(pool)
        return rng.choice(pool)

    def _line_edit(self, rng, edits):
        lines = list(self.lines)
        for _ in range(edits):
            at = rng.randrange(len(lines))
            kind = rng.randrange(3)
            if kind == 0:
                del lines[at]
            elif kind == 1:
                lines.insert(at, lines[rng.randrange(len(lines))])
            else:
                other = rng.randrange(len(lines))
                lines[at], lines[other] = lines[other], lines[at]
            if not lines:
                break
        return "".join(lines)


def run_mutant(data, filename, rng, report):
    """Decode and parse the bytes, compile (one phase and stage set the net uses) and maybe run
    one forward pass. Returns the stage the mutant reached; raises what is not a CompileError."""
    try:
        document = load_text(decode_source(data, filename), None, filename)
        if document.kind != "net":
            return "parsed as a solver"
        net = upgrade(document.message, document)
        phase = rng.choice(("TRAIN", "TEST"))
        states = candidate_states(net, phase).states or [net_state(net, phase)]
        compiled = compile_net(document, state=rng.choice(states))
        if not _cheap(compiled):
            return "compiled"
        from runtime.net import Net
        built = Net(compiled, seed=rng.randrange(1000))
        built.zero_inputs()
        with torch.no_grad():
            built.run()
        return "forward"
    except CompileError as error:
        where = traceback.extract_tb(error.__traceback__)[-1].filename
        if os.sep + "runtime" + os.sep in where:
            # A unit refused its parameters or inputs (runtime.net.layer_error): reported at
            # the layer, but worth reading, since the compiler could have said it earlier.
            report.runtime_errors[error.message.split(": ", 1)[-1][:90]] += 1
            return "runtime error"
        return "error"


def _cheap(compiled):
    if compiled.memory is None or compiled.total_flops() is None:
        return False
    return sum(compiled.memory) <= FORWARD_MEMORY and compiled.total_flops() <= FORWARD_FLOPS


def fuzz(byte_mutants, token_mutants, seed=1701, report=None, on_finding=None):
    """Run the mutants round-robin over the seed nets; returns the Report."""
    report = report or Report()
    rng = random.Random(seed)
    previous = os.environ.get("LRCN_MEMORY_LIMIT")
    os.environ["LRCN_MEMORY_LIMIT"] = MEMORY_LIMIT
    previous_cwd = os.getcwd()
    os.chdir(REPOSITORY)          # the nets name their data relative to the repository
    try:
        seeds = seed_nets()
        mutators = [TokenMutator(text) for _, text in seeds]
        plan = [("bytes", i) for i in range(byte_mutants)] + \
               [("tokens", i) for i in range(token_mutants)]
        rng.shuffle(plan)
        for kind, number in plan:
            index = number % len(seeds)
            path, text = seeds[index]
            if kind == "bytes":
                mutant = byte_mutant(text, rng)
            else:
                mutant = mutators[index].mutant(rng).encode("utf-8")
            report.tried[kind] += 1
            try:
                report.reached[run_mutant(mutant, path, rng, report)] += 1
            except Exception:     # a finding: anything that is not the project's own error
                finding = (kind, path, mutant, traceback.format_exc())
                report.findings.append(finding)
                report.reached["traceback"] += 1
                if on_finding:
                    on_finding(finding)
    finally:
        os.chdir(previous_cwd)
        if previous is None:
            os.environ.pop("LRCN_MEMORY_LIMIT", None)
        else:
            os.environ["LRCN_MEMORY_LIMIT"] = previous
    return report
