"""The public API is what ARCHITECTURE.md and the README say it is."""

import configparser
import os
import subprocess
import sys

import pytest

import lrcn
import runtime
from runtime.net import Net
from runtime.solver import Solver

ROOT = os.path.join(os.path.dirname(__file__), "..")


def test_runtime_exports_net_and_solver():
    from runtime import Net as exported_net, Solver as exported_solver
    assert exported_net is Net and exported_solver is Solver
    assert sorted(runtime.__all__) == ["Net", "Solver"]
    with pytest.raises(AttributeError, match="no attribute 'Nett'"):
        runtime.Nett


@pytest.mark.parametrize("name", lrcn.__all__)
def test_every_lrcn_name_resolves_to_its_home_definition(name):
    value = getattr(lrcn, name)
    assert value.__module__.split(".")[0] in ("compiler", "runtime", "lrcn_apps")
    assert value.__name__ == name


def test_lrcn_refuses_unknown_names():
    with pytest.raises(AttributeError, match="no attribute 'train'"):
        lrcn.train


def test_import_lrcn_loads_neither_torch_nor_the_applications():
    code = ("import sys, lrcn; print(sorted(m for m in ('torch', 'lrcn_apps', 'runtime') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _setup_cfg():
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    return config


def test_python_m_lrcn_lists_every_console_script():
    declared = [line.split("=")[0].strip()
                for line in _setup_cfg()["options.entry_points"]["console_scripts"].splitlines()
                if line.strip()]
    out = subprocess.run([sys.executable, "-m", "lrcn"], capture_output=True, text=True,
                         check=True)
    listed = [line.strip() for line in out.stdout.splitlines()[1:]]
    assert listed == sorted(declared)


def test_top_level_packages_are_the_designs_and_cannot_collide():
    """Installed top-level packages: the design's, `caffe` (pycaffe's own name, on purpose) and
    the lrcn-prefixed ones. A generic name such as `tasks` would shadow or be shadowed by
    another distribution's package."""
    include = _setup_cfg()["options.packages.find"]["include"].split()
    top_level = {name.split(".")[0] for name in include}
    assert top_level == {"caffe", "compiler", "runtime", "lrcn", "lrcn_proto", "lrcn_apps"}


def test_architecture_documents_the_public_api():
    with open(os.path.join(ROOT, "ARCHITECTURE.md"), encoding="utf-8") as handle:
        text = handle.read()
    assert "from runtime import Net, Solver" in text
    assert "import lrcn" in text
