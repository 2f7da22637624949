"""runtime.threads: where the thread count comes from, and the governor's choice on a clock
the test controls (no timing of real work)."""

import argparse

import pytest
import torch

from runtime import threads


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def run_iterations(governor, clock, seconds_per_count, count, key="net"):
    """`count` iterations, each taking seconds_per_count[current thread count]."""
    for _ in range(count):
        governor.tick(key)
        clock.now += seconds_per_count[governor.current]


def test_governor_keeps_the_faster_count_and_re_probes_after_the_hold():
    clock, applied = FakeClock(), []
    governor = threads.ThreadGovernor([1, 2], applied.append, probe=3, drop_ratio=1.5,
                                      min_hold_s=20.0, hold_factor=8, clock=clock)
    run_iterations(governor, clock, {1: 1.0, 2: 2.0}, 12)     # a busy machine: 1 is faster
    assert governor.chosen == 1 and governor.current == 1 and not governor.probing
    # Three 1 s iterations on 1 thread; the first on 2 threads took 2 s >= 1.5 x 1 s: dropped
    # at t = 5 s, and 1 thread held for 8 x that 5 s round.
    assert applied == [1, 2, 1]
    assert governor.medians == {1: 1.0, 2: 2.0} and governor.hold_until == 45.0
    run_iterations(governor, clock, {1: 1.0, 2: 0.5}, 60)      # the other process has left
    assert governor.chosen == 2 and governor.current == 2
    assert [count for _, count in governor.history] == [1, 2]


def test_governor_times_one_net_and_ignores_the_others():
    clock = FakeClock()
    governor = threads.ThreadGovernor([1, 2], lambda count: None, probe=2, clock=clock)
    for _ in range(2):
        governor.tick("test net")          # one interval; never completes a probe
        clock.now += 100.0
    run_iterations(governor, clock, {1: 3.0, 2: 1.0}, 3, key="train net")
    assert governor.current == 2 and governor.owner == "train net"
    governor.tick("test net")              # not the owner: not timed
    run_iterations(governor, clock, {1: 3.0, 2: 1.0}, 2, key="train net")
    assert governor.chosen == 2
    assert governor.samples == {"test net": {1: [100.0]},
                                "train net": {1: [3.0, 3.0], 2: [1.0, 1.0]}}


def test_one_candidate_never_probes():
    governor = threads.ThreadGovernor([1], lambda count: None)
    governor.tick("a")
    assert governor.current == 1 and not governor.probing


def test_candidate_counts_double_from_one_to_all_cores():
    assert threads.candidate_counts(2) == [1, 2]
    assert threads.candidate_counts(6) == [1, 2, 4, 6]
    assert threads.candidate_counts(1) == [1]


@pytest.fixture
def restore_threads(monkeypatch):
    previous = torch.get_num_threads()
    for name in threads.ENVIRONMENT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    yield monkeypatch
    threads.configure(previous)


def test_explicit_count_wins_over_the_environment(restore_threads):
    restore_threads.setenv("OMP_NUM_THREADS", "2")
    threads.configure(1)
    assert torch.get_num_threads() == 1 and threads._governor is None


def test_environment_count_is_respected(restore_threads):
    restore_threads.setenv("MKL_NUM_THREADS", "1")
    threads.configure(None)
    assert torch.get_num_threads() == 1 and threads._governor is None


def test_no_count_anywhere_makes_it_adaptive(restore_threads):
    threads.configure(None)
    assert isinstance(threads._governor, threads.ThreadGovernor)
    assert threads._governor.counts == threads.candidate_counts(threads.available_cores())


def test_threads_argument_refuses_zero_and_words():
    parser = argparse.ArgumentParser()
    threads.add_argument(parser)
    assert parser.parse_args(["--threads", "3"]).threads == 3
    for bad in ("0", "two", "-1"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--threads", bad])
