"""Command-line tools of the compiler: lrcn-check and lrcn-fmt.

Every tool exits 0 on success, 1 on a user error (one located message, no traceback) and 2 on
bad usage (argparse's own convention).
"""

import argparse
import difflib
import sys

from .errors import CompileError
from .files import write_text_atomically
from .formatter import format_document
from .graph import compile_net
from .netstate import candidate_states, describe_state, net_state, solver_net_states
from .schema import load_file, load_text
from .sizes import memory_text
from .textformat import decode_source
from .upgrade import upgrade
from .validate import check_solver


class ToolParser(argparse.ArgumentParser):
    """argparse with the example block shown under --help kept as written."""

    def __init__(self, prog, description, example):
        super().__init__(prog=prog, description=description,
                         epilog="example:\n  " + "\n  ".join(example.strip().splitlines()),
                         formatter_class=argparse.RawDescriptionHelpFormatter)


def input_shape_argument(text):
    """'data=10,3,227,227' -> ('data', (10, 3, 227, 227)): the type of --input-shape options."""
    blob, equals, dims = text.partition("=")
    try:
        shape = tuple(int(d) for d in dims.split(",")) if dims.strip() else ()
    except ValueError:
        shape = None
    if not equals or not blob or shape is None or any(d <= 0 for d in shape):
        raise argparse.ArgumentTypeError(
            f"expected BLOB=D1,D2,... with positive whole numbers, e.g. data=1,3,227,227; "
            f"got {text!r}")
    return blob, shape


def run_tool(body, argv):
    """Run a tool's body; user errors become one message on stderr and exit status 1."""
    try:
        return body(argv)
    except CompileError as error:
        print(error, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def write_atomically(path, text):
    """Replace a file's contents so a crash leaves either the old or the new file, never half;
    the file keeps its mode, and a symbolic link stays a link to the rewritten file."""
    write_text_atomically(path, text)


# --- lrcn-check ------------------------------------------------------------------------------

def check_file(path):
    """Load, upgrade and compile one net or solver file; raise CompileError on the first problem.

    A net compiles in TRAIN and in TEST, with no stages and with each stage set its include
    rules name (completed so that stage-selected variants have their producers, see
    compiler.netstate.candidate_states). A solver's train and test nets compile with exactly
    the states the solver gives them. Data shapes the compiler cannot know stay unknown (None);
    that is not an error. Returns notes worth printing (a phase the net is not meant for).
    """
    document = load_file(path)
    if document.kind == "solver":
        return _check_solver(document)
    return _check_net(document)


def _check_net(document):
    net = upgrade(document.message, document)
    notes, compiled = [], []
    for phase in ("TRAIN", "TEST"):
        candidates = candidate_states(net, phase)
        if candidates.unusable_reason:
            notes.append(f"{phase} not checked: {candidates.unusable_reason}")
        for state in candidates.states:
            compiled.append(_compile_in_context(document, state,
                                                f"compiled in {describe_state(state)}"))
    if not compiled:
        # Usable in neither phase: compiling plainly shows the located reason.
        state = net_state(net, "TRAIN")
        _compile_in_context(document, state, f"compiled in {describe_state(state)}")
    return notes + _memory_notes(compiled)


def _check_solver(document):
    notes = check_solver(document)
    compiled = []
    for selection in solver_net_states(document):
        context = (f"compiled as the solver's {selection.role} net "
                   f"({describe_state(selection.state)})")
        compiled.append(_compile_in_context(selection.document or selection.source,
                                            selection.state, context))
    return notes + _memory_notes(compiled[:1])


def _memory_notes(compiled):
    """The estimated memory of the largest of the compiled states (a solver: its train net)."""
    known = [net for net in compiled if net.memory is not None]
    if not known:
        return [memory_text(None)] if compiled else []
    largest = max(known, key=lambda net: sum(net.memory))
    return [f"{memory_text(largest.memory)} in {describe_state(largest.state)}"]


def _compile_in_context(net, state, context):
    # The same file compiles under several states; say which one an error belongs to.
    try:
        return compile_net(net, state=state)
    except CompileError as error:
        hint = f"{error.hint}; {context}" if error.hint else context
        raise CompileError(error.message, error.file, error.line, error.col, hint) from None


def _check(argv):
    parser = ToolParser("lrcn-check", "Load, validate and compile Caffe net and solver "
                        "definitions: nets in TRAIN and TEST (and the stage sets their rules "
                        "name), solvers with each of their train/test net states.",
                        "lrcn-check nets/lrcn_caption.prototxt solvers/caption_solver.prototxt")
    parser.add_argument("files", nargs="+", metavar="FILE", help=".prototxt net or solver files")
    args = parser.parse_args(argv)
    failed = 0
    for path in args.files:
        try:
            notes = check_file(path)
        except CompileError as error:
            print(error, file=sys.stderr)
            failed += 1
        else:
            print(f"{path}: ok")
            for note in notes:
                print(f"  {note}" if note.startswith("memory: ") else f"  note: {note}")
    return 1 if failed else 0


def check_main(argv=None):
    sys.exit(run_tool(_check, argv))


# --- lrcn-fmt --------------------------------------------------------------------------------

def _fmt(argv):
    parser = ToolParser("lrcn-fmt", "Print Caffe prototxt files in canonical layout: schema field "
                        "order, two-space indent, one field per line, comments kept.",
                        "lrcn-fmt nets/lrcn_caption.prototxt          # print to stdout\n"
                        "lrcn-fmt -i nets/*.prototxt                   # rewrite in place\n"
                        "lrcn-fmt --check nets/*.prototxt              # exit 1 if any would change\n"
                        "lrcn-fmt - < nets/lrcn_caption.prototxt       # read stdin (an editor's filter)")
    parser.add_argument("files", nargs="+", metavar="FILE", help="net or solver files; '-' "
                        "reads standard input (not with -i)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("-i", "--in-place", action="store_true",
                      help="rewrite each file (atomically) instead of printing it")
    mode.add_argument("--check", action="store_true",
                      help="print nothing; list files that would change and exit 1 if any")
    mode.add_argument("--diff", action="store_true",
                      help="print a unified diff of the changes instead of the text")
    args = parser.parse_args(argv)
    if args.in_place and STDIN in args.files:
        parser.error("-i rewrites files; standard input ('-') has none to rewrite")
    changed = failed = 0
    for path in args.files:
        try:
            document, original = _read_for_fmt(path)
        except CompileError as error:
            print(error, file=sys.stderr)
            failed += 1
            continue
        formatted = format_document(document)
        differs = formatted != original
        changed += differs
        if args.check:
            if differs:
                print(f"{path}: would reformat")
        elif args.diff:
            sys.stdout.writelines(difflib.unified_diff(
                original.splitlines(keepends=True), formatted.splitlines(keepends=True),
                f"{path}", f"{path} (formatted)"))
        elif args.in_place:
            if differs:
                write_atomically(path, formatted)
        else:
            sys.stdout.write(formatted)
    if failed:
        return 1
    return 1 if (args.check and changed) else 0


STDIN = "-"


def _read_for_fmt(path):
    """(Document, the text as written) of a file, or of standard input for '-'."""
    if path != STDIN:
        document = load_file(path)
        with open(path, encoding="utf-8-sig") as handle:
            return document, handle.read()
    data = sys.stdin.buffer.read()
    decode_source(data, "<stdin>")     # a located error for binary input
    original = data.decode("utf-8-sig")
    return load_text(original, None, "<stdin>"), original


def fmt_main(argv=None):
    sys.exit(run_tool(_fmt, argv))
