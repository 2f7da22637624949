"""Command-line tools of the compiler: lrcn-check and lrcn-fmt.

Every tool exits 0 on success, 1 on a user error (one located message, no traceback) and 2 on
bad usage (argparse's own convention).
"""

import argparse
import difflib
import os
import sys
import tempfile

from .errors import CompileError
from .formatter import format_document
from .schema import load_file
from .upgrade import upgrade


class ToolParser(argparse.ArgumentParser):
    """argparse with the example block shown under --help kept as written."""

    def __init__(self, prog, description, example):
        super().__init__(prog=prog, description=description,
                         epilog="example:\n  " + "\n  ".join(example.strip().splitlines()),
                         formatter_class=argparse.RawDescriptionHelpFormatter)


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
    """Replace a file's contents so a crash leaves either the old or the new file, never half."""
    directory = os.path.dirname(os.path.abspath(path))
    mode = os.stat(path).st_mode & 0o7777 if os.path.exists(path) else 0o644
    handle, temporary = tempfile.mkstemp(prefix=".lrcn-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


# --- lrcn-check ------------------------------------------------------------------------------

def check_file(path):
    """Load, validate and upgrade one file; raise CompileError on the first problem."""
    document = load_file(path)
    upgrade(document.message, document)
    return document


def _check(argv):
    parser = ToolParser("lrcn-check", "Load and validate Caffe net and solver definitions.",
                        "lrcn-check nets/lrcn_caption.prototxt solvers/caption_solver.prototxt")
    parser.add_argument("files", nargs="+", metavar="FILE", help=".prototxt net or solver files")
    args = parser.parse_args(argv)
    failed = 0
    for path in args.files:
        try:
            check_file(path)
        except CompileError as error:
            print(error, file=sys.stderr)
            failed += 1
        else:
            print(f"{path}: ok")
    return 1 if failed else 0


def check_main(argv=None):
    sys.exit(run_tool(_check, argv))


# --- lrcn-fmt --------------------------------------------------------------------------------

def _fmt(argv):
    parser = ToolParser("lrcn-fmt", "Print Caffe prototxt files in canonical layout: schema field "
                        "order, two-space indent, one field per line, comments kept.",
                        "lrcn-fmt nets/lrcn_caption.prototxt          # print to stdout\n"
                        "lrcn-fmt -i nets/*.prototxt                   # rewrite in place\n"
                        "lrcn-fmt --check nets/*.prototxt              # exit 1 if any would change")
    parser.add_argument("files", nargs="+", metavar="FILE")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("-i", "--in-place", action="store_true",
                      help="rewrite each file (atomically) instead of printing it")
    mode.add_argument("--check", action="store_true",
                      help="print nothing; list files that would change and exit 1 if any")
    mode.add_argument("--diff", action="store_true",
                      help="print a unified diff of the changes instead of the text")
    args = parser.parse_args(argv)
    changed = failed = 0
    for path in args.files:
        try:
            document = load_file(path)
            with open(path, encoding="utf-8-sig") as handle:
                original = handle.read()
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


def fmt_main(argv=None):
    sys.exit(run_tool(_fmt, argv))
