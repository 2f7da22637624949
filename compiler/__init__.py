"""Caffe prototxt -> schema-checked lrcn_proto messages -> a compiled layer graph (no torch here)."""

from .errors import CompileError
from .schema import Document, load_file, load_text, parse_file, parse_text
from .upgrade import upgrade

__all__ = ["CompileError", "Document", "load_file", "load_text", "parse_file", "parse_text",
           "upgrade"]
