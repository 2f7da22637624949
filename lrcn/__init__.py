"""lrcn for users: the entry points of the compiler, the runtime and the applications in one place.

    import lrcn
    net = lrcn.Net("nets/lrcn_caption.prototxt", phase="TEST")
    solver = lrcn.Solver("solvers/caption_solver.prototxt"); solver.solve()
    compiled = lrcn.compile_net(lrcn.load_file("nets/lrcn_caption.prototxt"), phase="TRAIN")

Each name is imported from its home module on first use, so `import lrcn` loads neither torch
nor the applications until they are needed. The command-line tools are the `lrcn-*` console
scripts (setup.cfg); `python -m lrcn` lists them.
"""

import importlib

# name -> home module. The homes are the documentation: each object is defined there once.
_HOMES = {
    "CompileError": "compiler",
    "CompiledNet": "compiler",
    "compile_net": "compiler",
    "load_file": "compiler",
    "load_text": "compiler",
    "parse_file": "compiler",
    "parse_text": "compiler",
    "upgrade": "compiler",
    "Net": "runtime.net",
    "Solver": "runtime.solver",
    "export_model": "runtime.onnx_export",
    "Captioner": "lrcn_apps.caption.generate",
}

__all__ = sorted(_HOMES)


def __getattr__(name):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'lrcn' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)


def __dir__():
    return __all__
