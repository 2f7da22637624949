"""Keep freed memory in the process for the next iteration (glibc's malloc on Linux).

A training iteration frees and allocates the same large tensors (feature maps, gradients,
gate buffers) every time. glibc's defaults hand such blocks back to the kernel (mmap /
munmap above a size threshold, heap trimming above another), so every iteration faults the
pages in again: the main job's net step took 1,500-3,300 page faults and 7-13 ms of kernel time
(measured on 2 cores, ~85 ms steps); with the thresholds below, under 300 faults and under
2 ms. The price is that the process keeps its peak memory until it exits, as jemalloc or
tcmalloc (what PyTorch's CPU tuning guides recommend instead) also do.

`configure()` is called by every tool that runs a net (through `threads.configure`); library
use (`import runtime`) leaves the allocator as it is. A user's own MALLOC_MMAP_THRESHOLD_ /
MALLOC_TRIM_THRESHOLD_ (glibc's environment variables) or LD_PRELOADed allocator is left alone,
as is every platform without glibc.
"""

import ctypes
import os
import platform

# mallopt's parameter numbers (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

# Blocks up to this size come from the heap, and up to this much free memory stays in it.
KEEP_BYTES = 1 << 30

_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "LD_PRELOAD")


def configure():
    """Set glibc's thresholds so that freed blocks are reused; True where they were set."""
    if any(os.environ.get(name) for name in _USER_SETTINGS):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    # The process's own symbols, glibc's among them: ctypes.util.find_library would start
    # `ldconfig -p` in a subprocess at every tool's start.
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, KEEP_BYTES)
                and libc.mallopt(_M_TRIM_THRESHOLD, KEEP_BYTES))
