"""Optional dependencies: the main job runs without any of them, and a missing one is one line
naming the pip command of its extra (exit 1, no traceback)."""

import configparser
import os
import subprocess
import sys

import pytest

from compiler import extras

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPTIONAL = sorted(extras.EXTRA_OF_MODULE)

# Runs code in a fresh interpreter where importing any optional package fails as if it were
# not installed.
BLOCKED = ("import sys; sys.modules.update(dict.fromkeys({modules!r}, None)); "
           "sys.path.insert(0, {root!r}); {code}")


def run_without_extras(code, cwd):
    script = BLOCKED.format(modules=OPTIONAL, root=ROOT, code=code)
    return subprocess.run([sys.executable, "-c", script], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_every_optional_module_has_an_extra_in_setup_cfg():
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    declared = set(config["options.extras_require"])
    core = config["options"]["install_requires"]
    assert set(extras.EXTRA_OF_MODULE.values()) <= declared
    for package in ("lmdb", "onnx", "pycocoevalcap", "imageio", "opencv", "tensorboard"):
        assert package not in core


def test_require_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(extras.MissingExtra) as caught:
        extras.require("cv2", "computing optical flow")
    assert str(caught.value) == ("computing optical flow needs the 'cv2' package, which is not "
                                 "installed: pip install 'lrcn[video]'")


def test_lrcn_export_without_onnx_is_one_line(tmp_path):
    result = run_without_extras(
        "from runtime.export_cli import export_main; "
        "export_main(['nets/lrcn_caption_deploy.prototxt', '-o', 'x.onnx'])", ROOT)
    assert result.returncode == 1
    assert result.stderr == ("lrcn-export needs the 'onnx' package, which is not installed: "
                             "pip install 'lrcn[onnx]'\n")


def test_caption_eval_without_pycocoevalcap_is_one_line(tmp_path):
    (tmp_path / "refs.json").write_text(
        '{"images": [{"id": 1, "file_name": "a.png"}], '
        '"annotations": [{"image_id": 1, "id": 1, "caption": "a red circle."}]}')
    (tmp_path / "res.json").write_text('[{"image_id": 1, "caption": "a red circle."}]')
    result = run_without_extras(
        "from lrcn_apps.caption.metrics import main; "
        "sys.exit(main(['--results', 'res.json', '--annotations', 'refs.json']))", tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1
    assert "pip install 'lrcn[metrics]'" in result.stderr


def test_main_job_trains_without_optional_packages(tmp_path):
    # The README's first command on a core-only install, for one iteration, run where the
    # README runs it; the solver is copied so that its snapshot lands in tmp_path.
    with open(os.path.join(ROOT, "solvers", "caption_solver.prototxt")) as handle:
        text = handle.read().replace('"runs/caption/', f'"{tmp_path}/')
    (tmp_path / "solver.prototxt").write_text(text)
    result = run_without_extras(
        "from runtime.cli import train_main; "
        f"train_main([{str(tmp_path / 'solver.prototxt')!r}, '--iterations', '1', "
        "'--no-progress'])", ROOT)
    assert result.returncode == 0, result.stderr
    assert "Optimization Done" in result.stderr
    assert (tmp_path / "lrcn_caption_iter_1.caffemodel").exists()


def test_video_tools_without_the_video_extra_are_one_line(tmp_path):
    from runtime.net import Net
    weights = str(tmp_path / "s2vt.caffemodel")
    Net(os.path.join(ROOT, "nets/s2vt_deploy.prototxt"), phase="TEST",
        stages=("factored", "2-layer")).save(weights)
    words = ["<unk>"] + list("abcdefghijklmnopqrstuvw")        # the video net's 24 words
    (tmp_path / "vocabulary.txt").write_text("".join(f"{word}\n" for word in words))
    frames = ["--feature-net", "nets/video_frame_features.prototxt",
              "--feature-blob", "pool_frame"]
    calls = {
        "lrcn-video-data": ("lrcn_apps.video.prepare", [
            "--videos", "data/video_actions/videos",
            "--sentences", "train=data/video_actions/sentences_val.txt", "--blob", "pool_frame",
            "--net", "nets/video_frame_features.prototxt", "--out", str(tmp_path / "v")]),
        "lrcn-describe": ("lrcn_apps.video.describe", [
            "--weights", weights, "--vocabulary", str(tmp_path / "vocabulary.txt")] + frames
            + ["data/video_actions/videos/vid449.avi"]),
    }
    for program, (module, argv) in calls.items():
        result = run_without_extras(f"from {module} import main; sys.exit(main({argv!r}))",
                                    ROOT)
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr     # progress lines may come before the error
        assert result.stderr.splitlines()[-1] == (
            f"{program}: error: reading and writing videos needs the 'imageio' package, which "
            "is not installed: pip install 'lrcn[video]'")
