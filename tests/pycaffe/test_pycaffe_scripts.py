"""pycaffe-style scripts (tests/pycaffe/scripts/) run unchanged against `import caffe`, each in
its own process and working directory; every script checks its own results numerically and
prints OK."""

import os
import pathlib
import subprocess
import sys

import pytest

SCRIPTS = sorted((pathlib.Path(__file__).parent / "scripts").glob("*.py"))


def run_python(args, cwd, extra_env=None, timeout=240):
    env = dict(os.environ, OMP_NUM_THREADS="1", **(extra_env or {}))
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_script_runs_unchanged(script, tmp_path):
    # Python layer modules the scripts write are imported from PYTHONPATH, as Caffe does.
    path = os.pathsep.join(p for p in [str(tmp_path), os.environ.get("PYTHONPATH")] if p)
    result = run_python([str(script)], tmp_path, {"PYTHONPATH": path})
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == "OK"


def test_import_caffe_is_this_package():
    import caffe
    import lrcn_proto
    assert pathlib.Path(caffe.__file__).parent == pathlib.Path(__file__).parents[2] / "caffe"
    assert caffe.proto.caffe_pb2 is lrcn_proto.caffe_pb2


def test_a_pycaffe_earlier_on_pythonpath_wins(tmp_path):
    real = tmp_path / "real" / "caffe"
    real.mkdir(parents=True)
    (real / "__init__.py").write_text("WHO = 'the real pycaffe'\n")
    result = run_python(["-c", "import caffe; print(caffe.WHO)"], tmp_path,
                        {"PYTHONPATH": str(tmp_path / "real")})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "the real pycaffe"


def test_readme_example_runs():
    """The README's `import caffe` example, run from the repository root."""
    root = pathlib.Path(__file__).parents[2]
    section = (root / "README.md").read_text().split("## `import caffe`")[1]
    example = section.split("```python\n")[1].split("```")[0]
    result = run_python(["-c", example + "\nassert features.shape == (1, 128)\nprint('OK')"],
                        root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "OK"
