"""How many CPU threads torch (and the BLAS that numpy uses) run on.

Three sources, first match wins:
  1. `--threads N` on a tool (every tool that runs a net has it): N, fixed.
  2. OMP_NUM_THREADS or MKL_NUM_THREADS in the environment: that number, fixed.
  3. Otherwise adaptive: a ThreadGovernor times the net's iterations and keeps the count that
     runs them fastest, re-checking every so often.

Why adaptive: torch's OpenMP threads split every operation evenly, so when another process
takes one of two cores, each parallel region waits for the thread that lost its core. A
language model's iteration of a few hundred small operations then runs about twice as slowly
on 2 threads as on 1 (measured: the main job's 300 iterations 116 s on 2 threads, 53 s on 1,
with one busy process; idle, 2 threads are 1.4x faster than 1). The load of a shared machine
changes while a run goes on, so the choice is timed, not guessed from the load average.

The price: float sums depend on the thread count, so an adaptive run does not repeat bit for
bit; give `--threads N` (or OMP_NUM_THREADS) where that matters.
"""

import argparse
import os
import statistics
import time

from runtime import allocator

ENVIRONMENT_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")

_governor = None     # the process's ThreadGovernor while threads are adaptive


def add_argument(parser):
    """--threads N on a tool's argument parser."""
    parser.add_argument("--threads", type=_thread_count, metavar="N",
                        help="CPU threads for torch and BLAS (default: OMP_NUM_THREADS or "
                             "MKL_NUM_THREADS if set, else chosen by timing the iterations)")


def _thread_count(text):
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"needs a whole number of threads >= 1, got {text!r}")
    return int(text)


def available_cores():
    """CPUs this process may run on (its affinity mask, where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def fixed_from_environment():
    """The thread count OMP_NUM_THREADS / MKL_NUM_THREADS ask for, or None."""
    for name in ENVIRONMENT_VARIABLES:
        value = os.environ.get(name, "").strip().split(",")[0]
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


def set_threads(count):
    """Run torch's intra-op work (oneDNN's and MKL's products included) and numpy's BLAS on
    `count` threads."""
    import torch        # here, so that a tool's --help does not load torch
    torch.set_num_threads(count)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return      # numpy's BLAS then keeps its own count (the nets' products are torch's)
    threadpool_limits(count, user_api="blas")


def configure(threads=None):
    """Apply a tool's --threads (None: the environment's number, else adaptive), and keep
    freed memory for reuse (runtime.allocator): every tool that runs a net calls this.

    Raises ValueError for a count below 1."""
    global _governor
    if threads is not None and threads < 1:
        raise ValueError(f"--threads needs at least 1 thread, got {threads}")
    allocator.configure()
    fixed = threads if threads is not None else fixed_from_environment()
    if fixed is not None:
        _governor = None
        set_threads(fixed)
        return
    _governor = ThreadGovernor(candidate_counts(available_cores()), set_threads)


def candidate_counts(cores):
    """The counts a governor tries, safest first: 1, then doubling up to all cores
    (2 cores: [1, 2]; 6 cores: [1, 2, 4, 6])."""
    counts = [1]
    while counts[-1] < cores:
        counts.append(min(2 * counts[-1], cores))
    return counts


def tick(key):
    """Mark the start of an iteration of the net `key` (Net.forward calls it)."""
    if _governor is not None:
        _governor.tick(key)


class ThreadGovernor:
    """Chooses a thread count by timing iterations, and re-chooses as the load changes.

    An iteration is the time between two successive tick(key) calls with the same key (a net's
    forward starts). A probe round runs every candidate count in turn, from 1 up, for `probe`
    iterations of one net (the first to complete them); a count whose first iteration already
    takes drop_ratio x the best median so far is dropped at once, so a loaded machine pays
    one slow iteration per round, not `probe`. The count with the smallest median then holds
    for max(min_hold_s, hold_factor x the round's length), after which the next round starts:
    a worse candidate costs at most about 1 / hold_factor of the run.
    """

    def __init__(self, counts, apply, probe=3, drop_ratio=1.5, min_hold_s=20.0, hold_factor=8,
                 clock=time.perf_counter):
        self.counts = list(counts)
        self.apply = apply
        self.probe, self.drop_ratio = probe, drop_ratio
        self.min_hold_s, self.hold_factor = min_hold_s, hold_factor
        self.clock = clock
        self.chosen = self.counts[0]
        self.history = []            # (time, chosen count) after each probe round
        self._start_round(clock())

    def _start_round(self, now):
        self.round_start = now
        self.probing = len(self.counts) > 1
        self.hold_until = float("inf")      # until a probe round decides (or for ever: 1 count)
        self.owner = None            # the net whose iterations decide this round
        self.medians = {}            # count -> median seconds per iteration of the owner
        self.samples = {}            # key -> {count: [seconds]}
        self.last = {}               # key -> (time of its last tick, count then)
        self._use(0)

    def _use(self, index):
        self.index = index
        self.current = self.counts[index]
        self.apply(self.current)

    def tick(self, key):
        now = self.clock()
        previous = self.last.get(key)
        if not self.probing:
            if now >= self.hold_until:
                self._start_round(now)
        elif previous is not None and previous[1] == self.current \
                and self.owner in (None, key):
            self._record(key, now - previous[0], now)
        # After any switch: the iteration starting now runs wholly on the current count.
        self.last[key] = (now, self.current)

    def _record(self, key, seconds, now):
        timings = self.samples.setdefault(key, {}).setdefault(self.current, [])
        timings.append(seconds)
        best = min(self.medians.values(), default=None)
        clearly_slower = best is not None and seconds >= self.drop_ratio * best
        if len(timings) < self.probe and not clearly_slower:
            return
        self.owner = key
        self.medians[self.current] = statistics.median(timings)
        if self.index + 1 < len(self.counts):
            self._use(self.index + 1)
            return
        self.chosen = min(self.medians, key=self.medians.get)
        self.history.append((now, self.chosen))
        self.probing = False
        self.hold_until = now + max(self.min_hold_s, self.hold_factor * (now - self.round_start))
        if self.chosen != self.current:
            self._use(self.counts.index(self.chosen))
