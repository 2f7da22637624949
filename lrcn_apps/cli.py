"""What the applications' command lines share: one error line and exit status 1 for bad input."""

import sys

from compiler.extras import MissingExtra
from lrcn_apps.caption.coco import DataError


def run_reporting_errors(program, run, args):
    """`run(args)`; a problem with the user's input (DataError) or a missing optional package
    is printed as one line "PROGRAM: error: ..." and gives exit status 1, else 0."""
    try:
        run(args)
    except (DataError, MissingExtra) as error:
        print("%s: error: %s" % (program, error), file=sys.stderr)
        return 1
    return 0
