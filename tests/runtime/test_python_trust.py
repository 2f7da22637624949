"""The Python-layer trust model: a net file, or the folder it sits in, never makes code run by
itself. Layer modules import from sys.path (PYTHONPATH), as in Caffe, and from directories the
user names with --python-path, which are not left on sys.path; the tools that only read nets
never import a layer module."""

import contextlib
import io
import os
import sys

import pytest

from compiler import cli as compiler_cli
from compiler import review_cli
from runtime import cli as runtime_cli

LAYER_MODULE = '''
import pathlib
pathlib.Path({marker!r}).touch()      # the side effect: proof the module was imported

import caffe
import numpy as np


class Constant(caffe.Layer):
    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(4, 3)
        top[1].reshape(4, 2)

    def forward(self, bottom, top):
        top[0].data[...] = 1
        top[1].data[...] = 0.5

    def backward(self, top, propagate_down, bottom):
        pass
'''

NET = '''name: "python_data"
layer {{ name: "data" type: "Python" top: "x" top: "y"
  python_param {{ module: "{module}" layer: "Constant" }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "x" top: "ip"
  inner_product_param {{ num_output: 2 }} }}
layer {{ name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "y" top: "loss" }}
'''


@pytest.fixture
def net_folder(tmp_path, monkeypatch):
    """A folder holding a net and, beside it, the layer module it names (not on sys.path)."""
    module = f"beside_the_net_{os.getpid()}_{abs(hash(str(tmp_path))) % 10 ** 6}"
    folder = tmp_path / "nets"
    folder.mkdir()
    marker = tmp_path / "imported"
    (folder / f"{module}.py").write_text(LAYER_MODULE.format(marker=str(marker)))
    (folder / "net.prototxt").write_text(NET.format(module=module))
    (folder / "solver.prototxt").write_text(
        f'net: "{folder / "net.prototxt"}"\nbase_lr: 0.01\nlr_policy: "fixed"\nmax_iter: 2\n'
        f'snapshot_prefix: "{tmp_path / "snap"}"\nsnapshot_after_train: false\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, module, raising=False)
    return folder, module, marker


def exit_status(main, argv):
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            status = main([str(a) for a in argv])
        except SystemExit as done:
            status = done.code
    return status, stdout.getvalue() + stderr.getvalue()


def test_tools_that_read_nets_never_import_layer_modules(net_folder, tmp_path):
    folder, module, marker = net_folder
    net = folder / "net.prototxt"
    for main, argv in [(compiler_cli.check_main, [net, folder / "solver.prototxt"]),
                       (compiler_cli.fmt_main, [net]),
                       (review_cli.show_main, [net]),
                       (review_cli.diff_main, [net, net]),
                       (review_cli.draw_main, [net, "-o", tmp_path / "net.dot"])]:
        status, output = exit_status(main, argv)
        assert status == 0, (main.__name__, output)
        assert not marker.exists(), f"{main.__name__} imported the net's layer module"
        assert module not in sys.modules


def test_training_does_not_import_from_the_nets_folder_unasked(net_folder, restore_signals):
    folder, module, marker = net_folder
    status, output = exit_status(runtime_cli.train_main,
                                 [folder / "solver.prototxt", "--no-progress"])
    assert status == 1 and "Traceback" not in output
    assert f"Python layer module '{module}' not found" in output
    assert f"--python-path {folder}" in output          # the hint says how to allow it
    assert not marker.exists()


def test_python_path_allows_a_folder_for_the_import_only(net_folder, restore_signals,
                                                          monkeypatch):
    folder, module, marker = net_folder
    from runtime import python_layer
    monkeypatch.setattr(python_layer, "_allowed_directories", [])
    status, output = exit_status(runtime_cli.train_main,
                                 [folder / "solver.prototxt", "--no-progress",
                                  "--python-path", folder])
    assert status == 0, output
    assert marker.exists()
    assert str(folder) not in sys.path
