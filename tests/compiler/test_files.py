"""compiler.files: atomic writes of single files and of sets, the user's umask, symbolic links
and modes kept, and the clean-up of temporaries that killed processes left."""

import os
import stat
import subprocess
import sys

import pytest

from compiler import cli
from compiler.errors import CompileError
from compiler.files import (TEMPORARY_SUFFIX, remove_stale_temporaries, temporary_path,
                            write_bytes_atomically, write_files_atomically)


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_027():
    previous = os.umask(0o027)
    yield
    os.umask(previous)


def test_a_new_file_gets_the_umask_an_old_one_keeps_its_mode(tmp_path, umask_027):
    new = tmp_path / "new.bin"
    write_bytes_atomically(new, b"1")
    assert mode_of(new) == 0o640
    old = tmp_path / "old.bin"
    old.write_bytes(b"0")
    os.chmod(old, 0o604)
    write_bytes_atomically(old, b"1")
    assert old.read_bytes() == b"1" and mode_of(old) == 0o604


def test_a_symlink_is_written_through_and_stays_a_link(tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "file.txt"
    target.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(os.path.relpath(target, tmp_path))
    write_bytes_atomically(link, b"new")
    assert link.is_symlink() and target.read_text() == "new"
    assert sorted(os.listdir(tmp_path / "real")) == ["file.txt"]


def test_a_set_that_fails_part_way_changes_nothing(tmp_path):
    first = tmp_path / "first.bin"
    first.write_bytes(b"before")
    (tmp_path / "not_a_folder").write_text("")
    with pytest.raises(CompileError) as caught:
        write_files_atomically([(first, b"after"), (tmp_path / "not_a_folder" / "x", b"")])
    assert "not_a_folder" in str(caught.value)
    assert first.read_bytes() == b"before"
    assert sorted(os.listdir(tmp_path)) == ["first.bin", "not_a_folder"]


def test_only_temporaries_of_dead_processes_and_this_prefix_are_removed(tmp_path):
    finished = subprocess.Popen([sys.executable, "-c", ""])
    finished.wait()
    dead_pid = finished.pid
    stale = tmp_path / f".run_iter_4.caffemodel.{dead_pid}-0a1b2c3d{TEMPORARY_SUFFIX}"
    live = tmp_path / os.path.basename(temporary_path(str(tmp_path / "run_iter_5.caffemodel")))
    other = tmp_path / f".other_iter_1.caffemodel.{dead_pid}-0a1b2c3d{TEMPORARY_SUFFIX}"
    for path in (stale, live, other):
        path.write_bytes(b"")
    assert remove_stale_temporaries(str(tmp_path / "run_iter_")) == [str(stale)]
    assert not stale.exists() and live.exists() and other.exists()


def test_fmt_in_place_keeps_a_symlink_and_the_mode(tmp_path, capsys):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "net.prototxt"
    target.write_text('name:"n"\nlayer{name:"a" type:"ReLU" bottom:"x" top:"x"}\n')
    os.chmod(target, 0o640)
    link = tmp_path / "net.prototxt"
    link.symlink_to(target)
    with pytest.raises(SystemExit) as exited:
        cli.fmt_main(["-i", str(link)])
    assert exited.value.code == 0, capsys.readouterr().err
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert 'name: "n"' in target.read_text() and mode_of(target) == 0o640
