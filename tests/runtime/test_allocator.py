"""runtime.allocator: freed blocks are reused instead of faulted in again (glibc only), and a
user's own allocator settings win. Each case runs in a fresh interpreter: the settings are the
process's."""

import os
import platform
import subprocess
import sys
import textwrap

import pytest

glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                           reason="glibc's malloc only")

# 64 MB tensors: above the largest threshold glibc picks by itself (32 MB), so by default each
# one is mmapped and its pages faulted in anew (torch asks for no huge pages: 4 KB each).
FAULTS_PER_ALLOCATION = textwrap.dedent("""
    import resource, sys
    import torch
    from runtime import allocator
    configured = allocator.configure() if sys.argv[1] == "configure" else None
    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    def iteration():
        kept = [torch.ones(16 << 20), torch.ones(1 << 20)]      # 64 MB and 4 MB
        del kept
    for _ in range(20):         # the heap's layout settles
        iteration()
    before = faults()
    for _ in range(10):
        iteration()
    print(configured, (faults() - before) / 10)
""")


def run(mode, **environment):
    env = {k: v for k, v in os.environ.items()
           if k not in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "LD_PRELOAD")}
    result = subprocess.run([sys.executable, "-c", FAULTS_PER_ALLOCATION, mode],
                            env={**env, **environment}, capture_output=True, text=True,
                            timeout=120, check=True)
    configured, faults = result.stdout.split()
    return configured, float(faults)


@glibc
def test_configure_makes_freed_blocks_reusable_without_page_faults():
    _, default_faults = run("default")
    configured, faults = run("configure")
    assert configured == "True"
    assert default_faults > 10_000          # 64 MB = 16,384 pages, faulted in every time
    assert faults < default_faults / 100


@glibc
def test_a_users_malloc_settings_are_left_alone():
    configured, faults = run("configure", MALLOC_TRIM_THRESHOLD_="1000000")
    assert configured == "False" and faults > 10_000


def test_tools_configure_the_allocator_with_their_threads(monkeypatch):
    from runtime import allocator, threads
    calls = []
    monkeypatch.setattr(allocator, "configure", lambda: calls.append(1) or True)
    monkeypatch.setattr(threads, "set_threads", lambda count: None)
    threads.configure(1)
    assert calls == [1]
