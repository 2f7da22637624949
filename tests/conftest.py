"""Makes tests/ importable (for tests/support.py) and holds suite-wide pytest settings."""

import os
import signal
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

CORPUS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "corpus")


@pytest.fixture
def corpus_dir():
    """../shared/corpus beside the checkout; tests using it skip where it is absent."""
    if not os.path.isdir(CORPUS):
        pytest.skip("../shared/corpus is not present (a user's clone has none)")
    return os.path.abspath(CORPUS)


@pytest.fixture(autouse=True, scope="session")
def one_intra_op_thread():
    """Run torch on one thread. The nets under test are small: on a two-core machine two
    OpenMP threads mostly spin-wait for each other (a small net's iteration went from ~1 ms to
    ~70 ms on a loaded machine), and one thread makes float results independent of the
    machine's core count."""
    previous = torch.get_num_threads()
    previous_env = os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    # Tools run in this process or as subprocesses read it (runtime.threads): 1 thread too.
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    torch.set_num_threads(previous)
    if previous_env is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = previous_env


@pytest.fixture
def restore_signals():
    """lrcn-train installs SIGINT / SIGTERM / SIGHUP handlers for the solver; give pytest its
    own back."""
    numbers = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP")
                                                 else [])
    saved = {number: signal.getsignal(number) for number in numbers}
    yield
    for number, handler in saved.items():
        signal.signal(number, handler)


@pytest.fixture
def ctrl_c_lost_during_start_up(monkeypatch):
    """The tools of runtime.cli get a Ctrl-C that Python loses, as they configure threads."""
    from runtime import cli
    from support import InterruptedWhileCollected
    configure = cli.threads.configure

    def configure_and_collect(*args):
        InterruptedWhileCollected()
        return configure(*args)
    monkeypatch.setattr(cli.threads, "configure", configure_and_collect)
