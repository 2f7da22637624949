"""Caffe prototxt -> schema-checked lrcn_proto messages -> a compiled layer graph (no torch here)."""

from .errors import CompileError
from .graph import CompiledLayer, CompiledNet, compile_net
from .netstate import filter_net, solver_net_states
from .schema import Document, load_file, load_text, parse_file, parse_text
from .upgrade import upgrade

__all__ = ["CompileError", "CompiledLayer", "CompiledNet", "Document", "compile_net",
           "filter_net", "load_file", "load_text", "parse_file", "parse_text",
           "solver_net_states", "upgrade"]
