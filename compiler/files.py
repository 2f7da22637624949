"""Writing files a user keeps: atomically, as sets, with the user's umask.

A file is written to a temporary beside it (hidden, named after the file and the writing
process), flushed to disk, then renamed over the file, so a crash at any instant leaves the old
file or the new one, never a torn one. Several files can be written as one set: all are on
disk before the first rename, and they are renamed in the order given, so the last one is the
commit point (a .solverstate is renamed after the weights and resume state it needs).

Like `open(path, "w")`, a file replaced keeps its permission bits, a new file gets 0666 less
the umask, and a symbolic link is written through (its target is replaced, the link stays).
"""

import os
import re
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor

from .errors import CompileError

TEMPORARY_SUFFIX = ".lrcn-tmp"
_TEMPORARY_OWNER = re.compile(r"\.(\d+)-[0-9a-f]+" + re.escape(TEMPORARY_SUFFIX) + "$")


def temporary_path(path):
    """A fresh hidden name beside `path` that names this process (see remove_stale_temporaries)."""
    directory, name = os.path.split(path)
    return os.path.join(directory, f".{name}.{os.getpid()}-{secrets.token_hex(4)}"
                                   f"{TEMPORARY_SUFFIX}")


class WriteAbandoned(Exception):
    """A set given up before its renames (BackgroundWriter.abandon): nothing was replaced."""


def write_files_atomically(files, abandoned=None):
    """Write [(path, bytes), ...] as one set: every file complete on disk, then the renames in
    the given order. A failure removes the temporaries and raises CompileError naming the file.
    `abandoned` (a threading.Event) set before the renames gives the set up the same way and
    raises WriteAbandoned."""
    pending, current = [], None
    try:
        for path, data in files:
            if abandoned is not None and abandoned.is_set():
                raise WriteAbandoned(path)
            current = path
            target = os.path.realpath(path)
            pending.append((target, _write_temporary(target, data)))
        if abandoned is not None and abandoned.is_set():
            raise WriteAbandoned(current)
        for (target, temporary), (path, _) in zip(pending, files):
            current = path
            os.replace(temporary, target)
        for directory in {os.path.dirname(target) for target, _ in pending}:
            _sync_directory(directory)
    except OSError as error:
        raise CompileError(f"cannot write the file: {error.strerror or error}",
                           str(current)) from None
    finally:
        for _, temporary in pending:
            if os.path.lexists(temporary):
                os.unlink(temporary)


class BackgroundWriter:
    """Writes file sets (write_files_atomically) on one background thread, so that the caller
    does not wait on the disk: flushing a snapshot to disk takes seconds on a slow or network
    disk, and a trainer goes on meanwhile. One set at a time, in order: submit() first waits
    for the set before it. A failed write's CompileError is raised by the next submit(),
    check() or wait(). abandon() gives the set being written up (a user stopping at once)."""

    def __init__(self):
        self._executor = None
        self._pending = None
        self._abandoned = threading.Event()

    def submit(self, files):
        self.wait()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1,
                                                thread_name_prefix="lrcn-file-writer")
        self._abandoned.clear()
        self._pending = self._executor.submit(write_files_atomically, files, self._abandoned)

    def check(self):
        """Raise the error of a write that has failed; never waits."""
        if self._pending is not None and self._pending.done():
            self.wait()

    def wait(self):
        """Return once the set submitted last is on disk (or raise why it is not)."""
        pending = self._pending
        if pending is None:
            return
        try:
            pending.result()
        finally:
            if pending.done():      # not when a signal interrupted the wait: abandon() needs it
                self._pending = None

    def abandon(self):
        """Give up the set being written, unless its renames have begun: its temporaries are
        removed once the file being flushed is done (a flush cannot be interrupted); the files
        it would have replaced stay as they were. Errors are not raised: the caller is
        stopping."""
        self._abandoned.set()
        pending, self._pending = self._pending, None
        if pending is not None:
            try:
                pending.result()
            except (WriteAbandoned, CompileError):
                pass

    def wait_quietly(self):
        """wait(), returning the write's error instead of raising it (for a caller that is
        already handling another error)."""
        try:
            self.wait()
        except CompileError as error:
            return error
        return None


def write_bytes_atomically(path, data):
    write_files_atomically([(path, data)])


def write_text_atomically(path, text):
    write_files_atomically([(path, text.encode("utf-8"))])


def _write_temporary(target, data):
    directory = os.path.dirname(target)
    os.makedirs(directory, exist_ok=True)
    temporary = temporary_path(target)
    # 0o666 lets the umask decide the mode of a new file (mkstemp would force 0600).
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                     0o666)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if os.path.exists(target):
            os.chmod(temporary, os.stat(target).st_mode & 0o7777)
    except BaseException:
        os.unlink(temporary)
        raise
    return temporary


def _sync_directory(directory):
    # The renames themselves reach the disk only when the directory is synced (POSIX).
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def remove_stale_temporaries(prefix):
    """Delete the temporaries that processes no longer running left beside files whose names
    start with `prefix` (a path prefix such as a snapshot prefix). Returns the paths removed."""
    directory, start = os.path.split(os.path.realpath(prefix))
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    removed = []
    for name in names:
        owner = _TEMPORARY_OWNER.search(name)
        if not name.startswith("." + start) or owner is None or _running(int(owner.group(1))):
            continue
        path = os.path.join(directory, name)
        try:
            os.unlink(path)
        except OSError:
            continue
        removed.append(path)
    return removed


def _running(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True          # exists, owned by someone else
    return True
