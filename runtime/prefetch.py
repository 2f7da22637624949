"""Background prefetching for data layers, deterministic whatever the number of workers.

A data layer describes its batches as a pure function `produce(k)` of the batch index k: batch
k's records are fixed by k (list order, epoch shuffles seeded by (seed, epoch)) and its random
choices (crop offsets, mirror coins) come from `batch_rng(seed, ..., k)`. Workers may therefore
build batches in any order and on any thread; the consumer still receives batch 0, 1, 2, ...
with identical contents for 0 (inline), 1 or N workers.

Settings (see `configure`):
- workers: background threads per data layer (0 loads inline in forward()). Default 1, like
  Caffe's single prefetch thread; environment variable LRCN_DATA_WORKERS. Threads suffice:
  JPEG decoding (Pillow), numpy and HDF5 reads release the GIL.
- skip_bad_records: when true, an unreadable record (missing or corrupt image, undecodable
  Datum, unreadable HDF5 file) is logged and replaced by the next readable record in the
  layer's order, and a count is kept (logger "lrcn.data"); when false (the default) it stops
  training with an error naming the file and list line. Environment variable
  LRCN_SKIP_BAD_RECORDS=1.
- The queue depth is DataParameter.prefetch (its default for layers that have no such field):
  workers never run more than that many batches ahead of the consumer.

Shutdown is clean: worker threads are daemons that wait on a condition, are told to stop by
close(), by the garbage collection of their Prefetcher, or at interpreter exit, and an error
raised while producing batch k is re-raised (the same exception) when the consumer asks for k.
"""

import atexit
import logging
import os
import threading
import weakref
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np

log = logging.getLogger("lrcn.data")


# --- settings ------------------------------------------------------------------------------

@dataclass(frozen=True)
class DataOptions:
    workers: int = 1
    skip_bad_records: bool = False


def _environment_options():
    workers = os.environ.get("LRCN_DATA_WORKERS", "").strip()
    skip = os.environ.get("LRCN_SKIP_BAD_RECORDS", "").strip().lower()
    return DataOptions(workers=int(workers) if workers.isdigit() else DataOptions.workers,
                       skip_bad_records=skip in ("1", "true", "yes", "on"))


_options = _environment_options()


def data_options():
    """The settings new data layers pick up."""
    return _options


def configure(workers=None, skip_bad_records=None):
    """Change the settings for data layers built from now on; returns the previous ones."""
    global _options
    previous = _options
    changes = {}
    if workers is not None:
        if int(workers) < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        changes["workers"] = int(workers)
    if skip_bad_records is not None:
        changes["skip_bad_records"] = bool(skip_bad_records)
    _options = replace(_options, **changes)
    return previous


@contextmanager
def options(**settings):
    """`with options(workers=2): net = Net(...)` -- settings for the layers built inside."""
    global _options
    previous = configure(**settings)
    try:
        yield _options
    finally:
        _options = previous


# --- seeding -------------------------------------------------------------------------------

def layer_seed(rng, name):
    """A layer's data seed: the net's seed (a torch.Generator's initial seed, or an int) mixed
    with the layer name, so that two data layers of one net draw different numbers."""
    base = rng.initial_seed() if hasattr(rng, "initial_seed") else int(rng or 0)
    return [int(base) & 0xFFFFFFFF, (int(base) >> 32) & 0xFFFFFFFF,
            zlib.crc32(name.encode("utf-8"))]


def batch_rng(seed, *key):
    """A numpy Generator for one purpose and index, e.g. batch_rng(seed, BATCH, k): the same
    (seed, key) always gives the same numbers, on any thread."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(list(seed) +
                                                                      [int(k) for k in key])))


# --- bad records ---------------------------------------------------------------------------

class BadRecords:
    """Records found unreadable by one layer. Under skip_bad_records each is logged once and
    counted; otherwise the first one's error propagates."""

    def __init__(self, layer_name, skip):
        self.layer_name = layer_name
        self.skip = skip
        self._known = set()
        self._lock = threading.Lock()

    def is_known(self, record):
        with self._lock:
            return record in self._known

    def record(self, record, error):
        """Note that `record` (any hashable id) could not be read because of `error`."""
        if not self.skip:
            raise error
        with self._lock:
            if record in self._known:
                return
            self._known.add(record)
            count = len(self._known)
        log.warning("data layer '%s': skipping an unreadable record (%d skipped so far): %s",
                    self.layer_name, count, str(error).replace("\n", " "))

    @property
    def count(self):
        with self._lock:
            return len(self._known)


# --- the prefetcher ------------------------------------------------------------------------

class _Shared:
    """State shared by a Prefetcher and its workers (never the Prefetcher itself, so that
    dropping the Prefetcher lets it be collected and its workers stopped)."""

    def __init__(self, depth, start):
        self.condition = threading.Condition()
        self.depth = depth
        self.next_claim = start   # the next batch index a worker will build
        self.consumed = start     # index of the next batch the consumer takes
        self.results = {}         # k -> (ok, batch or exception)
        self.stopped = False

    def stop(self):
        with self.condition:
            self.stopped = True
            self.condition.notify_all()


def _producer_reference(produce):
    # Workers hold a bound method weakly, so that a data layer no longer used by anyone can be
    # collected (its Prefetcher then stops the workers); plain functions are held strongly.
    if hasattr(produce, "__self__") and hasattr(produce, "__func__"):
        return weakref.WeakMethod(produce)
    return lambda: produce


def _work(shared, producer):
    while True:
        with shared.condition:
            while not shared.stopped and \
                    shared.next_claim >= shared.consumed + shared.depth:
                shared.condition.wait()
            if shared.stopped:
                return
            index = shared.next_claim
            shared.next_claim += 1
        produce = producer()
        if produce is None:
            return
        try:
            outcome = (True, produce(index))
        except BaseException as error:      # handed to the consumer, which re-raises it
            outcome = (False, error)
        del produce
        with shared.condition:
            shared.results[index] = outcome
            shared.condition.notify_all()


_live = weakref.WeakSet()


class Prefetcher:
    """Batches `produce(start), produce(start + 1), ...` in order, built by `workers`
    background threads at most `depth` batches ahead (workers=0: built inline by next())."""

    def __init__(self, produce, workers=1, depth=4, name="data", start=0):
        self.produce = produce
        self.workers = int(workers)
        self.name = name
        self._next = int(start)
        self._error = None
        self._threads = []
        self._shared = _Shared(max(1, int(depth)), int(start))
        if self.workers > 0:
            producer = _producer_reference(produce)
            for number in range(self.workers):
                thread = threading.Thread(target=_work, args=(self._shared, producer),
                                          name=f"lrcn-prefetch-{name}-{number}", daemon=True)
                thread.start()
                self._threads.append(thread)
            weakref.finalize(self, self._shared.stop)
            _live.add(self)

    def next(self):
        """The next batch, in order. A worker's error for this batch is re-raised here."""
        if self._error is not None:
            raise self._error
        index = self._next
        if self.workers == 0:
            batch = self.produce(index)
            self._next += 1
            return batch
        shared = self._shared
        with shared.condition:
            while index not in shared.results:
                if shared.stopped:
                    raise RuntimeError(f"the prefetcher of data layer '{self.name}' is closed")
                # A timeout keeps Ctrl-C responsive while waiting.
                shared.condition.wait(timeout=0.5)
            ok, value = shared.results.pop(index)
            shared.consumed = index + 1
            shared.condition.notify_all()
        self._next += 1
        if not ok:
            self._error = value
            self.close()
            raise value
        return value

    def close(self, timeout=10.0):
        """Stop the workers (a batch being built is finished first) and wait for them."""
        self._shared.stop()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout)
        self._threads = []
        with self._shared.condition:
            self._shared.results.clear()

    @property
    def position(self):
        """The index of the batch next() returns next."""
        return self._next

    @property
    def alive(self):
        return any(thread.is_alive() for thread in self._threads)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@atexit.register
def _close_all():
    # Stop workers before the interpreter tears modules down under their feet.
    for prefetcher in list(_live):
        prefetcher.close(timeout=2.0)
