"""Optional dependencies: each belongs to a pip extra of setup.cfg, imported only by the function
that needs it, so `pip install -e .` stays small and a missing one is one line naming its extra.
"""

import importlib

from .errors import CompileError

# Top-level module -> the extra of setup.cfg that installs it.
EXTRA_OF_MODULE = {
    "lmdb": "lmdb",
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "pycocoevalcap": "metrics",
    "imageio": "video",
    "imageio_ffmpeg": "video",
    "cv2": "video",
    "tensorboard": "tensorboard",
}


class MissingExtra(CompileError):
    """An optional package is not installed. `str()` is the one line a tool prints."""

    def __str__(self):
        return self.message


def install_command(extra):
    return f"pip install 'lrcn[{extra}]'"


def require(module, purpose):
    """Import `module` ("cv2", "onnx.helper", "imageio.v2") or raise MissingExtra saying what
    needs it (`purpose`, e.g. "lrcn-export") and the pip command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        top = module.split(".")[0]
        extra = EXTRA_OF_MODULE[top]
        if isinstance(error, ModuleNotFoundError) and (error.name or "").split(".")[0] == top:
            reason = f"the '{top}' package, which is not installed"
        else:   # installed but broken (a missing shared library, a version clash)
            reason = f"the '{top}' package, which does not import ({error})"
        raise MissingExtra(f"{purpose} needs {reason}: {install_command(extra)}") from None
