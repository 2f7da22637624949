"""How much memory a net needs, and the limits it must fit in, known before anything is allocated.

The estimate is what a forward pass holds in float32: every learnable blob once (shared blobs
once) plus every blob a layer produces (an in-place top reuses its bottom's storage, as in
Caffe). Training needs more (gradients, solver history), so a net over the limit here can never
run. The limit is the machine's physical memory, or LRCN_MEMORY_LIMIT when set (bytes, or with a
K / M / G / T suffix in powers of 1024; "unlimited" turns the check off).

Caffe's own per-blob limit applies too: Blob::Reshape refuses a blob of more than INT_MAX values.
"""

import os
import re

from .errors import CompileError
from .shapes import count

BYTES_PER_VALUE = 4                 # float32, what the runtime allocates
MAX_BLOB_VALUES = 2 ** 31 - 1       # Blob::Reshape: "blob size exceeds INT_MAX"
LIMIT_VARIABLE = "LRCN_MEMORY_LIMIT"

_SUFFIXES = {"": 1, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}
_LIMIT_TEXT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)


def memory_limit():
    """(bytes or None for no limit, where the limit comes from) for the compile-time check."""
    text = os.environ.get(LIMIT_VARIABLE)
    if text is not None and text.strip():
        if text.strip().lower() in ("unlimited", "none"):
            return None, f"{LIMIT_VARIABLE}={text}"
        match = _LIMIT_TEXT.match(text)
        if not match:
            raise CompileError(f"{LIMIT_VARIABLE}={text!r} is not a size",
                               hint="write bytes, e.g. 68719476736, 64G or 512M, or 'unlimited'")
        number, suffix = match.groups()
        return int(float(number) * _SUFFIXES[suffix.upper()]), f"{LIMIT_VARIABLE}={text}"
    return physical_memory(), "the machine's physical memory"


def physical_memory():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):     # no sysconf (Windows): no limit known
        return None


def human_bytes(number):
    """1536 -> '1.5 KiB'; None (unknown) -> '?'."""
    if number is None:
        return "?"
    for unit, factor in (("TiB", 2 ** 40), ("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if number >= factor:
            return f"{number / factor:.1f} {unit}"
    return f"{number} B"


def memory_text(memory):
    """(param bytes, activation bytes) or None -> 'memory: 1.2 MiB (params 1.0 MiB +
    activations 208.0 KiB, float32, forward)'."""
    if memory is None:
        return "memory: ? (some shapes are unknown until the data is read)"
    params, activations = memory
    return (f"memory: {human_bytes(params + activations)} (params {human_bytes(params)} + "
            f"activations {human_bytes(activations)}, float32, forward)")


class MemoryBudget:
    """Adds up a net's blobs layer by layer while it compiles; the first layer that takes the
    total over the limit, or makes a blob larger than Caffe allows, is the error."""

    def __init__(self):
        self.limit, self.limit_source = memory_limit()
        self.param_values = 0
        self.activation_values = 0
        self.known = True

    def add(self, label, new_params, new_tops):
        """label: "layer 'x' (Type)"; new_params: shapes of learnable blobs not seen before;
        new_tops: [(top name, shape)] of blobs needing storage of their own. Shapes may be
        None (unknown). Raises an unlocated CompileError."""
        for what, shapes in (("learnable blob", [(None, s) for s in new_params]),
                             ("top", new_tops)):
            for name, shape in shapes:
                if shape is None:
                    self.known = False
                    continue
                values = count(shape)
                if values > MAX_BLOB_VALUES:
                    named = f" '{name}'" if name else ""
                    raise CompileError(
                        f"{label}: {what}{named} of shape {tuple(shape)} would hold {values:,} "
                        f"values ({human_bytes(values * BYTES_PER_VALUE)}); Caffe's limit is "
                        f"{MAX_BLOB_VALUES:,} values per blob",
                        hint="check the sizes in this layer's parameters and its bottoms")
                if what == "top":
                    self.activation_values += values
                else:
                    self.param_values += values
        total = self.total_bytes()
        if self.limit is not None and total > self.limit:
            raise CompileError(
                f"{label}: the net needs {total:,} bytes ({human_bytes(total)}) of float32 "
                f"memory up to this layer (parameters {human_bytes(self.param_bytes())}, "
                f"activations {human_bytes(self.activation_bytes())}), more than the "
                f"{self.limit:,} bytes ({human_bytes(self.limit)}) of {self.limit_source}",
                hint=f"make the net smaller, or set {LIMIT_VARIABLE} (e.g. 256G, or "
                     "'unlimited') to raise the limit")

    def param_bytes(self):
        return self.param_values * BYTES_PER_VALUE

    def activation_bytes(self):
        return self.activation_values * BYTES_PER_VALUE

    def total_bytes(self):
        return self.param_bytes() + self.activation_bytes()

