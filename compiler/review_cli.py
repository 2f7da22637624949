"""Command-line tools for reviewing nets: lrcn-show, lrcn-diff and lrcn-draw.

lrcn-show and lrcn-draw exit 0 on success, 1 on a user error (one located message) and 2 on
bad usage. lrcn-diff follows GNU diff: 0 when the files are semantically equal, 1 when they
differ, 2 on trouble (bad usage, or a file that does not load). In --git mode (git's external
diff driver) it always exits 0, because git stops the whole `git diff` at a non-zero exit.

`python -m compiler.review_cli show|diff|draw ARGS...` runs the same tools without installing.
"""

import difflib
import os
import sys

from . import review
from .cli import ToolParser, input_shape_argument, run_tool, write_atomically
from .errors import CompileError
from .netstate import split_stages
from .svg_draw import net_to_svg
from .schema import load_file, load_text
from .textformat import decode_source


# --- options every tool shares ----------------------------------------------------------------

def add_net_options(parser, phase_default="TRAIN"):
    parser.add_argument("--phase", type=str.upper, choices=("TRAIN", "TEST"),
                        default=phase_default, help=f"phase to compile in (default "
                        f"{phase_default})")
    parser.add_argument("--stage", action="append", default=[], metavar="S",
                        help="add stages to the NetState (repeatable, or comma-separated); "
                        "without any, a net that chooses its layers by stage is refused or "
                        "noted with the stage sets it defines")
    parser.add_argument("--level", type=int, default=0, metavar="N",
                        help="NetState level (default 0)")
    parser.add_argument("--input-shape", action="append", default=[],
                        type=input_shape_argument, metavar="BLOB=D1,D2,...",
                        help="shape of a data top the compiler cannot know (a Python data "
                        "layer, a missing data file); repeatable")


def net_options(args):
    return review.NetOptions(phase=args.phase, stages=split_stages(args.stage), level=args.level,
                             input_shapes=dict(args.input_shape))


def load_net(path, tool):
    document = load_file(path)
    review.require_net(document, tool)
    return document


def compile_net_file(args, tool):
    """The NET argument compiled with the tool's options; a note goes to stderr."""
    compiled, note = net_options(args).compile_for_review(load_net(args.net, tool))
    if note:
        print(f"note: {note}", file=sys.stderr)
    return compiled


# --- lrcn-show --------------------------------------------------------------------------------

def _show(argv):
    parser = ToolParser(
        "lrcn-show", "Print a net's compiled layers in execution order: type, bottoms, tops, "
        "top shapes, learnable parameters and forward FLOPs, with totals.",
        "lrcn-show nets/lrcn_caption.prototxt --phase TEST --stage factored,2-layer,test-on-val\n"
        "lrcn-show deploy.prototxt --format json > deploy.layers.json\n"
        "lrcn-show train.prototxt --input-shape data=20,3,227,227 --format yaml")
    parser.add_argument("net", metavar="NET", help="net .prototxt file")
    add_net_options(parser)
    parser.add_argument("--format", choices=sorted(review.SHOW_FORMATS), default="table",
                        help="table (human units), or yaml / json (exact numbers, stable "
                        "key order, one layer per item)")
    args = parser.parse_args(argv)
    compiled = compile_net_file(args, "lrcn-show")
    sys.stdout.write(review.SHOW_FORMATS[args.format](compiled))
    return 0


def show_main(argv=None):
    sys.exit(run_tool(_show, argv))


# --- lrcn-diff --------------------------------------------------------------------------------

DIFF_SAME, DIFF_DIFFERENT, DIFF_TROUBLE = 0, 1, 2
_NULL_FILE = "/dev/null"


def _diff_parser():
    parser = ToolParser(
        "lrcn-diff", "Semantic diff of two net (or two solver) files for code review: layers "
        "added, removed and changed field by field, rewired bottoms/tops, changed output "
        "shapes and parameter counts, order changes that change what a layer reads. Layout, "
        "field order, comments and legacy spellings are not changes. Exit status: 0 equal, "
        "1 different, 2 trouble.",
        "lrcn-diff old/train.prototxt new/train.prototxt --phase TEST\n"
        "git config diff.lrcn.command 'lrcn-diff --git'   # with '*.prototxt diff=lrcn' in "
        ".gitattributes")
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="A B; with --git, the 7 (or 9, for a rename) arguments git "
                        "passes to an external diff driver")
    add_net_options(parser)
    parser.add_argument("--color", "--colour", choices=("auto", "always", "never"),
                        default="auto", help="colour the change marks (auto: on a terminal)")
    parser.add_argument("--git", action="store_true",
                        help="run as git's external diff driver (see docs/git-diff-driver.md)")
    return parser


def _use_colour(choice):
    if choice == "auto":
        return sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    return choice == "always"


def _diff(argv):
    parser = _diff_parser()
    args = parser.parse_args(argv)
    expected = "7 or 9 arguments from git" if args.git else "two files, A and B"
    if len(args.files) not in ((7, 9) if args.git else (2,)):
        parser.error(f"expected {expected}, got {len(args.files)}")
    options, colour = net_options(args), _use_colour(args.color)
    if args.git:
        return _git_diff(args.files, options, colour)
    try:
        old, new = load_file(args.files[0]), load_file(args.files[1])
        changes = review.diff_documents(old, new, options)
    except CompileError as error:
        print(error, file=sys.stderr)
        return DIFF_TROUBLE
    sys.stdout.write(review.render_changes(changes, colour))
    return DIFF_DIFFERENT if review.counts_as_difference(changes) else DIFF_SAME


def _git_diff(arguments, options, colour):
    """git's external diff: path old-file old-hex old-mode new-file new-hex new-mode
    [new-path rename-info]. Prints a header naming the path; always exits 0."""
    path, old_file, new_file = arguments[0], arguments[1], arguments[4]
    new_path = arguments[7] if len(arguments) == 9 else path
    sys.stdout.write(f"diff --lrcn a/{path} b/{new_path}\n")
    try:
        old, new = _load_git_side(old_file, new_file, path, new_path)
        changes = review.diff_documents(old, new, options)
    except CompileError as error:
        # Still show the review something: the error, then the plain text diff.
        sys.stdout.write(f"! {error}\n")
        sys.stdout.writelines(_text_diff(old_file, new_file, path, new_path))
        return 0
    if review.counts_as_difference(changes):
        sys.stdout.write(review.render_changes(changes, colour))
    else:
        sys.stdout.write("  (no semantic change: layout, comments or independent order only)\n")
    return 0


def _load_git_side(old_file, new_file, path, new_path):
    # git hands over temporary files; messages name the path in the repository, a/ and b/
    # telling the old side from the new as in git's own headers.
    old = None if old_file == _NULL_FILE else _load_as(old_file, f"a/{path}")
    new = None if new_file == _NULL_FILE else _load_as(new_file, f"b/{new_path}")
    if old is None and new is None:
        raise CompileError("both sides are /dev/null", path)
    old = old or review.empty_document_like(new, _NULL_FILE)
    new = new or review.empty_document_like(old, _NULL_FILE)
    return old, new


def _load_as(file, shown_name):
    try:
        with open(file, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise CompileError(f"cannot read file: {error.strerror}", shown_name) from None
    return load_text(decode_source(data, shown_name), None, shown_name)


def _text_diff(old_file, new_file, path, new_path):
    def lines(file):
        with open(file, encoding="utf-8", errors="replace") as handle:
            return handle.readlines()
    return difflib.unified_diff(lines(old_file), lines(new_file), f"a/{path}", f"b/{new_path}")


def diff_main(argv=None):
    try:
        status = _diff(argv)
    except KeyboardInterrupt:
        status = 130
    except BrokenPipeError:
        status = 0
    sys.exit(status)


# --- lrcn-draw --------------------------------------------------------------------------------

def _draw(argv):
    parser = ToolParser(
        "lrcn-draw", "Draw a compiled net's layer graph: DOT text, or SVG / PNG / PDF through "
        "Graphviz's dot (chosen by the -o extension); without dot, SVG comes from a built-in "
        "layered layout. One node per blob name, as Caffe's draw_net draws; in-place layers in "
        "green.",
        "lrcn-draw nets/lrcn_caption.prototxt -o caption.svg --stage factored,2-layer\n"
        "lrcn-draw deploy.prototxt -o deploy.dot --rankdir TB\n"
        "lrcn-draw deploy.prototxt -o - | grep -c -- '->'   # DOT on stdout: count the edges\n"
        "# .png / .pdf need Graphviz's dot: lrcn-draw deploy.prototxt -o deploy.png")
    parser.add_argument("net", metavar="NET", help="net .prototxt file")
    parser.add_argument("-o", "--output", required=True, metavar="FILE",
                        help="output file: .dot/.gv (DOT text, '-' for stdout), .svg (Graphviz "
                        "when installed, else built in), .png, .pdf (need Graphviz)")
    add_net_options(parser)
    parser.add_argument("--rankdir", type=str.upper, choices=review.RANKDIRS, default="LR",
                        help="direction of the data flow (default LR, as Caffe's draw_net)")
    args = parser.parse_args(argv)
    graphviz_format = review.output_format(args.output)
    compiled = compile_net_file(args, "lrcn-draw")
    dot_text = review.net_to_dot(compiled, args.rankdir)
    if args.output == "-":
        sys.stdout.write(dot_text)
    elif graphviz_format == "dot":
        write_atomically(args.output, dot_text)
    elif graphviz_format == "svg" and not review.graphviz_available():
        write_atomically(args.output, net_to_svg(compiled, args.rankdir))
    else:
        review.render_with_graphviz(dot_text, graphviz_format, args.output)
    return 0


def draw_main(argv=None):
    sys.exit(run_tool(_draw, argv))


# --- python -m compiler.review_cli show|diff|draw ---------------------------------------------

TOOLS = {"show": show_main, "diff": diff_main, "draw": draw_main}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in TOOLS:
        print(f"usage: python -m compiler.review_cli {{{'|'.join(TOOLS)}}} ARGS...",
              file=sys.stderr)
        sys.exit(2)
    TOOLS[argv[0]](argv[1:])


if __name__ == "__main__":
    main()
