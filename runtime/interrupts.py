"""Ctrl-C in the command-line tools: exit status 130 and the one word "interrupted", never a
Python traceback, wherever the interrupt lands.

Python raises KeyboardInterrupt wherever the main thread is when SIGINT arrives, and three
cases escape a tool's own `except KeyboardInterrupt`:
- the imports: the heavy modules (torch, networkx, h5py) take seconds, and a console script
  imports its tool's module before the tool can catch anything (lrcn.commands imports it
  inside `run_command`);
- a `__del__` or a weakref callback: Python cannot raise there, so it hands the
  KeyboardInterrupt to sys.unraisablehook, which prints a traceback and drops it, and the
  tool goes on as if no Ctrl-C had come (h5py's import, for one, collects a finished
  `uname -p` Popen);
- a library that turns the KeyboardInterrupt into another error (numpy's import reports one
  that lands in its C extension as an ImportError).
While `RECEIVED` is active every Ctrl-C is counted: `RECEIVED.raise_if_any()` raises a lost
one where a tool's long work would begin (lrcn-train: before training), and a tool that ends
anyway, or ends in an error, after a Ctrl-C exits 130.

Standard library only: the console scripts import this before anything heavy.
"""

import importlib
import signal
import sys
import threading

INTERRUPTED_STATUS = 130        # a shell's status for a command stopped by SIGINT


class Interrupts:
    """While active (re-entrant: a tool run in-process under another keeps one count):
    SIGINT's handler, where Python's default one is in place (an inherited "ignore" is kept),
    counts each Ctrl-C before raising KeyboardInterrupt as the default does, and
    sys.unraisablehook counts, without printing, each KeyboardInterrupt Python could not
    raise. The count survives an interrupt that was lost or turned into another error."""

    def __init__(self):
        self.count = 0
        self._depth = 0
        self._replaced_hook = self._replaced_handler = None

    def __enter__(self):
        if self._depth == 0:
            self.count = 0
            self._replaced_hook = sys.unraisablehook
            sys.unraisablehook = self._hook
            self._replaced_handler = None
            if (signal.getsignal(signal.SIGINT) is signal.default_int_handler
                    and threading.current_thread() is threading.main_thread()):
                self._replaced_handler = signal.signal(signal.SIGINT, self._on_sigint)
        self._depth += 1
        return self

    def __exit__(self, *exc):
        self._depth -= 1
        if self._depth == 0:
            sys.unraisablehook = self._replaced_hook
            if self._replaced_handler is not None:
                signal.signal(signal.SIGINT, self._replaced_handler)

    def _on_sigint(self, signum, frame):
        self.count += 1
        raise KeyboardInterrupt

    def _hook(self, unraisable):
        if issubclass(unraisable.exc_type, KeyboardInterrupt):
            self.count += 1
        else:
            self._replaced_hook(unraisable)

    def raise_if_any(self):
        if self.count:
            raise KeyboardInterrupt


RECEIVED = Interrupts()


def run_quietly(body, *args):
    """body(*args) -> exit status, with a Ctrl-C anywhere in it (raised, lost, or turned into
    another error) giving "interrupted" on stderr and status 130."""
    try:
        with RECEIVED:
            status = body(*args)
            if status != INTERRUPTED_STATUS:        # else the tool has said so itself
                RECEIVED.raise_if_any()
            return status
    except KeyboardInterrupt:
        pass
    except Exception:
        if not RECEIVED.count:
            raise
    print("interrupted", file=sys.stderr)
    return INTERRUPTED_STATUS


def run_command(target, argv=None):
    """A console script's body: import "module:function" and call it (with argv, where given;
    without arguments, as setuptools' scripts do, otherwise) under run_quietly; exits with its
    status."""
    module, function = target.split(":")

    def body():
        tool = getattr(importlib.import_module(module), function)
        try:
            return tool() if argv is None else tool(argv)
        except SystemExit as exit:          # the tools' mains end in sys.exit(status)
            return exit.code
    sys.exit(run_quietly(body))
