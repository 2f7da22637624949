"""The resume-state file (<prefix>_iter_<N>.solverstate.lrcn): run state Caffe's .solverstate
has no room for, in a format that cannot run code when read.

The file is a numpy .npz archive (a zip of .npy arrays) read with allow_pickle=False: one
array per tensor, plus `state.json` (UTF-8 bytes) holding the rest of the state as JSON, where
`{"tensor": "a3"}` (or `{"array": "a3"}` for a numpy array) stands for archive member a3.
Nothing is unpickled, so a file someone hands over can at worst be refused. The state is a tree
of dicts (string keys), lists, numbers, strings, booleans, None, tensors (read back as CPU
tensors of their dtype) and numpy arrays (of numbers).
"""

import io
import json
import zipfile

import numpy as np
import torch

from compiler.errors import CompileError

FORMAT = "lrcn-run-state"
VERSION = 1
_JSON_MEMBER = "state.json"


def encode(state):
    """The bytes of a resume-state file holding `state`."""
    arrays = {}

    def flatten(value):
        if isinstance(value, (torch.Tensor, np.ndarray)):
            name = f"a{len(arrays)}"
            is_tensor = isinstance(value, torch.Tensor)
            arrays[name] = value.detach().cpu().numpy() if is_tensor else value
            return {"tensor" if is_tensor else "array": name}
        if isinstance(value, dict):
            if not all(isinstance(key, str) for key in value):
                raise TypeError("resume state keys must be strings")
            return {"dict": {key: flatten(item) for key, item in value.items()}}
        if isinstance(value, (list, tuple)):
            return {"list": [flatten(item) for item in value]}
        if value is None or isinstance(value, (bool, int, float, str)):
            return {"value": value}
        raise TypeError(f"cannot store a {type(value).__name__} in a resume state")

    document = {"format": FORMAT, "version": VERSION, "state": flatten(state)}
    arrays[_JSON_MEMBER] = np.frombuffer(json.dumps(document).encode("utf-8"), np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def read(path):
    """The state in a resume-state file; one CompileError naming the file for anything else."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise CompileError(f"cannot read the resume state: {error.strerror}", str(path)) from None
    return decode(data, str(path))


def decode(data, source):
    not_ours = CompileError("not an lrcn resume-state file", source,
                            hint="it is written next to each .solverstate by lrcn-train; "
                                 "files of older versions (pickles) are not read, for safety")
    try:
        archive = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile):
        raise not_ours from None
    if not isinstance(archive, np.lib.npyio.NpzFile) or _JSON_MEMBER not in archive.files:
        raise not_ours
    try:
        document = json.loads(archive[_JSON_MEMBER].tobytes().decode("utf-8"))
        if document.get("format") != FORMAT:
            raise not_ours
        if document.get("version") != VERSION:
            raise CompileError(f"resume-state version {document.get('version')} is not read by "
                               f"this version of lrcn (it reads {VERSION})", source)
        return _unflatten(document["state"], archive)
    except CompileError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError, OSError,
            EOFError, zipfile.BadZipFile) as error:
        raise CompileError(f"damaged resume-state file ({type(error).__name__}: {error})",
                           source) from None


def _unflatten(node, archive):
    if "tensor" in node:
        return torch.from_numpy(np.array(archive[node["tensor"]]))
    if "array" in node:
        return np.array(archive[node["array"]])
    if "dict" in node:
        return {key: _unflatten(item, archive) for key, item in node["dict"].items()}
    if "list" in node:
        return [_unflatten(item, archive) for item in node["list"]]
    return node["value"]
