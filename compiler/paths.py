"""Resolving file paths named inside net and solver files, the way users expect from Caffe."""

import os

from .errors import CompileError


def resolve_path(path, naming_file=None, what="file", location=None):
    """The existing file a net or solver names: like Caffe, relative to the working directory;
    failing that, relative to the directory of the file that names it.

    `location` is a (file, line, col) tuple for the error. The error lists every path tried.
    """
    tried = [path]
    if os.path.exists(path):
        return path
    if naming_file and not os.path.isabs(path):
        beside = os.path.join(os.path.dirname(os.path.abspath(naming_file)), path)
        tried.append(beside)
        if os.path.exists(beside):
            return beside
    file, line, col = location or (naming_file, None, None)
    raise CompileError(f"{what} not found: {path}", file, line, col,
                       "tried " + ", ".join(tried))
