"""PyTorch runtime for compiled Caffe nets: Caffe-exact layers, a pycaffe-style Net, solvers.

The public API is `from runtime import Net, Solver`. They are imported on first use (PEP 562)
so that `import runtime.<module>` stays cheap and free of import cycles.
"""

__all__ = ["Net", "Solver"]


def __getattr__(name):
    if name == "Net":
        from .net import Net
        return Net
    if name == "Solver":
        from .solver import Solver
        return Solver
    raise AttributeError(f"module 'runtime' has no attribute {name!r}")
