"""runtime.interrupts and lrcn.commands: a Ctrl-C anywhere in a command-line tool, its imports
included, ends in exit status 130 and "interrupted", never a traceback."""

import configparser
import os
import shutil
import signal
import subprocess
import sys

import pytest

from runtime import interrupts
from support import (InterruptedWhileCollected, as_a_terminal_starts_it,
                     wait_past_python_start_up)

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def console_scripts():
    """(name, target) of every console script setup.cfg declares."""
    parser = configparser.ConfigParser()
    parser.read(os.path.join(ROOT, "setup.cfg"))
    lines = parser["options.entry_points"]["console_scripts"].splitlines()
    return [tuple(part.strip() for part in line.split("=")) for line in lines if line.strip()]


def _tool_module(tmp_path, monkeypatch, source):
    (tmp_path / "some_tool.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "some_tool", raising=False)
    # run_command ends a process: it ignores Ctrl-C for the shutdown. Not this one's.
    ignoring_calls.clear()
    monkeypatch.setattr(interrupts, "_ignore_ctrl_c_while_exiting",
                        lambda: ignoring_calls.append(True))
    return "some_tool:main"


ignoring_calls = []     # run_command's calls to ignore Ctrl-C for the exit, in _tool_module


def test_ctrl_c_while_the_tool_imports_is_exit_130(tmp_path, monkeypatch, capsys):
    target = _tool_module(tmp_path, monkeypatch, "raise KeyboardInterrupt\n")
    with pytest.raises(SystemExit) as exited:
        interrupts.run_command(target)
    assert exited.value.code == 130
    assert capsys.readouterr() == ("", "interrupted\n")


@pytest.mark.parametrize("ending, status", [("return 3", 3), ("sys.exit(2)", 2),
                                            ("sys.exit()", None)])
def test_the_tools_own_status_is_kept(tmp_path, monkeypatch, ending, status):
    target = _tool_module(tmp_path, monkeypatch, f"import sys\ndef main():\n    {ending}\n")
    with pytest.raises(SystemExit) as exited:
        interrupts.run_command(target)
    assert exited.value.code == status
    assert len(ignoring_calls) == 1         # after the tool, before the exit


def test_an_interrupt_lost_in_a_destructor_is_exit_130_without_a_traceback(capsys):
    def body():
        InterruptedWhileCollected()
        return 0
    assert interrupts.run_quietly(body) == 130
    assert capsys.readouterr() == ("", "interrupted\n")


def test_a_lost_interrupt_is_raised_where_the_tool_checks(capsys):
    reached = []

    def body():
        InterruptedWhileCollected()
        interrupts.RECEIVED.raise_if_any()
        reached.append("the long work")
        return 0
    assert interrupts.run_quietly(body) == 130 and reached == []


def test_an_error_a_library_makes_of_a_ctrl_c_is_exit_130(capsys, restore_signals):
    # Python's own handler, as in a terminal (a suite started by a script's `&` inherits
    # SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def body():
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:       # as numpy's import does in its C extension
            raise ImportError("numpy C-extensions failed") from None
    assert interrupts.run_quietly(body) == 130
    assert capsys.readouterr() == ("", "interrupted\n")


def test_an_error_without_a_ctrl_c_propagates(restore_signals):
    def body():
        raise ImportError("a real one")
    with pytest.raises(ImportError, match="a real one"):
        interrupts.run_quietly(body)


def test_an_inherited_ignore_of_sigint_is_kept(restore_signals):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    assert interrupts.run_quietly(lambda: 0 if signal.getsignal(signal.SIGINT) is
                                  signal.SIG_IGN else 1) == 0
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_other_unraisable_errors_still_reach_the_previous_hook(monkeypatch):
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: seen.append(unraisable))

    class Broken:
        def __del__(self):
            raise ValueError("from a destructor")

    def body():
        Broken()
        return 0
    assert interrupts.run_quietly(body) == 0
    assert [type(u.exc_value) for u in seen] == [ValueError]
    assert sys.unraisablehook is not interrupts.RECEIVED._hook


def test_nested_runs_keep_one_count_and_restore_the_hook():
    previous = sys.unraisablehook

    def inner():
        InterruptedWhileCollected()
        return 0
    assert interrupts.run_quietly(lambda: interrupts.run_quietly(inner) and 0) == 130
    assert sys.unraisablehook is previous


def test_every_console_script_runs_through_lrcn_commands():
    import importlib

    from lrcn import commands
    for name, entry in console_scripts():
        assert entry == f"lrcn.commands:{name.replace('-', '_')}", name
        target = getattr(commands, name.replace("-", "_")).target
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), target


def test_installed_tools_stopped_by_ctrl_c_say_interrupted():
    """Every installed tool, interrupted early (most while torch imports): 130 and
    "interrupted"; where the tool was already done (no arguments: a usage error), its own
    status, or death by SIGINT as Python exits; never a traceback."""
    executables = {name: shutil.which(name) for name, _ in console_scripts()}
    if None in executables.values():
        pytest.skip("the console scripts are not installed (pip install -e .)")
    names, interrupted = sorted(executables), 0
    for batch in (names[i:i + 3] for i in range(0, len(names), 3)):
        processes = {name: subprocess.Popen([executables[name]], stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, text=True,
                                            preexec_fn=as_a_terminal_starts_it)
                     for name in batch}
        for process in processes.values():
            wait_past_python_start_up(process)
        for process in processes.values():
            process.send_signal(signal.SIGINT)
        for name, process in processes.items():
            try:
                _, err = process.communicate(timeout=120)
            finally:
                if process.poll() is None:
                    process.kill()
            assert "Traceback" not in err, (name, err)
            assert process.returncode in (130, -signal.SIGINT, 0, 1, 2), (name, err)
            if process.returncode == 130:
                assert err.strip().endswith("interrupted"), (name, err)
                interrupted += 1
    assert interrupted > 0


def _run_as_a_console_script(folder, module):
    """Run `module`:main (a file in `folder`) in a new process as lrcn.commands runs a tool,
    with Ctrl-C's default disposition."""
    script = ("import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]\n"
              "from runtime.interrupts import run_command\n"
              f"run_command('{module}:main')\n")
    return subprocess.run([sys.executable, "-c", script, str(folder), ROOT],
                          capture_output=True, text=True, timeout=60,
                          preexec_fn=as_a_terminal_starts_it)


def test_ctrl_c_while_the_interpreter_shuts_down_after_the_tool_is_ignored(tmp_path):
    """A Ctrl-C that lands after the tool has finished would run in the interpreter's shutdown
    (torch's library finalizers among the exit callbacks): Python then prints a traceback, and
    a KeyboardInterrupt raised inside one of torch's C++ destructors aborts the process
    ("terminate called after throwing an instance of 'python_error'"). The tool's own status
    stands, with nothing printed."""
    (tmp_path / "finished_tool.py").write_text(
        "import atexit, os, signal, time\n"
        "def shutting_down():\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(0.2)\n"            # Python code for the handler to run in
        "    print('shutdown finished')\n"
        "def main():\n"
        "    atexit.register(shutting_down)\n"
        "    return 3\n")
    result = _run_as_a_console_script(tmp_path, "finished_tool")
    assert "Traceback" not in result.stderr and "KeyboardInterrupt" not in result.stderr, \
        result.stderr
    assert result.stdout == "shutdown finished\n"
    assert result.returncode == 3


def test_ctrl_c_while_a_module_imports_is_held_until_the_import_is_over(tmp_path):
    """C extensions run Python code from C++ while they import (torch's does), and a
    KeyboardInterrupt raised there aborts the process ("terminate called after throwing an
    instance of 'python_error'", seen in lrcn-caption and lrcn-video-recognise). A Ctrl-C
    during an import is held until the import is over, then ends the tool: 130."""
    (tmp_path / "slow_import_tool.py").write_text(
        "import os, signal, sys, time\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "started = time.monotonic()\n"
        "while time.monotonic() - started < 0.5:\n"   # Python code for the handler to run in
        "    pass\n"
        "sys.stdout.write('import finished\\n')\n"
        "def main():\n"
        "    time.sleep(5)\n"
        "    return 0\n")
    result = _run_as_a_console_script(tmp_path, "slow_import_tool")
    assert result.stdout == "import finished\n"
    assert (result.returncode, result.stderr) == (130, "interrupted\n"), result.stderr


def test_a_ctrl_c_while_one_is_held_keeps_one_pending_delivery(monkeypatch):
    """A second Ctrl-C (or the held one delivered again) while the imports still run replaces
    the pending delivery instead of adding one; leaving cancels it."""
    monkeypatch.setattr(interrupts, "_importing", lambda frame: True)
    monkeypatch.setattr(interrupts, "HOLD_SECONDS", 60)
    received = interrupts.Interrupts()
    with received:
        received._on_sigint(signal.SIGINT, None)
        first = received._held
        received._on_sigint(signal.SIGINT, None)
        second = received._held
        assert first.finished.is_set() and not second.finished.is_set()
        assert received.count == 1
    assert second.finished.is_set() and received._held is None
