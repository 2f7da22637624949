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
A Ctrl-C that lands while a module imports is held until the import is over, then raised: C
extensions such as torch run Python code from C++ while they import, and a KeyboardInterrupt
raised there aborts the process instead of unwinding it. Once a console script's tool has
finished, a Ctrl-C is ignored while the interpreter shuts down (`run_command`): torch's exit
callbacks call Python from C++ too.
While `RECEIVED` is active every Ctrl-C is counted: `RECEIVED.raise_if_any()` raises a lost
one where a tool's long work would begin (lrcn-train: before training), and a tool that ends
anyway, or ends in an error, after a Ctrl-C exits 130.

Standard library only: the console scripts import this before anything heavy.
"""

import importlib
import os
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
        self._held = None           # the timer that delivers a held Ctrl-C again

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
            if self._held is not None:      # counted already: raise_if_any reports it
                self._held.cancel()
                self._held = None
            if self._replaced_handler is not None:
                signal.signal(signal.SIGINT, self._replaced_handler)

    def _on_sigint(self, signum, frame):
        if self._held is None:
            self.count += 1
        else:       # the held Ctrl-C again, or another one while it is held: one interrupt
            self._held.cancel()
            self._held = None
        if _importing(frame):
            # Held, not raised: importing a C extension runs Python code from C++ (torch's
            # own start-up does), and a KeyboardInterrupt raised there aborts the process
            # ("terminate called after throwing an instance of 'python_error'").
            self._held = threading.Timer(HOLD_SECONDS, os.kill, (os.getpid(), signal.SIGINT))
            self._held.daemon = True
            self._held.start()
            return
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

HOLD_SECONDS = 0.05     # how often a held Ctrl-C looks again whether the imports are over


def _importing(frame):
    """Whether the frame is inside an import (Python's import machinery is on its stack)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib._bootstrap"):
            return True
        frame = frame.f_back
    return False


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
    status = run_quietly(body)
    _ignore_ctrl_c_while_exiting()
    sys.exit(status)


def _ignore_ctrl_c_while_exiting():
    """The tool is done: a Ctrl-C now would land in the interpreter's shutdown, in exit
    callbacks such as torch's library finalizers, where Python prints a traceback for it, and
    where one raised inside torch's C++ aborts the process. There is nothing left to stop.
    An inherited "ignore" or a handler of the embedding program's is left as it is."""
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
