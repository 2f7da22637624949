"""The ONNX caption bundle: lrcn-caption-bundle writes it, lrcn-caption-onnx captions from it
alone, equal to lrcn-caption (the torch path)."""

import json
import os
import subprocess
import sys

import pytest

from support import decisive_caption_weights
from lrcn_apps.caption import bundle, generate

pytest.importorskip("onnxruntime")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGES = [os.path.join(ROOT, f"data/caption_shapes/images/test_{i:06d}.png")
          for i in (581, 582, 583, 584)]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bundle")
    weights = decisive_caption_weights(folder / "w.caffemodel", ("factored", "2-layer"),
                                       os.path.join(ROOT, generate.DEFAULT_NET))
    out = folder / "caption_bundle"
    assert bundle.export_main(["--weights", weights, "-o", str(out),
                               "--net", os.path.join(ROOT, generate.DEFAULT_NET),
                               "--vocabulary",
                               os.path.join(ROOT, generate.DEFAULT_VOCABULARY)]) == 0
    return weights, out


def run(main, argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_the_bundle_holds_everything_to_caption(exported):
    _, out = exported
    assert sorted(os.listdir(out)) == ["bundle.json", "image.onnx", "preprocess.json",
                                       "vocabulary.txt", "word_step.onnx"]
    manifest = json.loads((out / "bundle.json").read_text())
    assert manifest["vocabulary"] == {"file": "vocabulary.txt", "index_offset": 1,
                                      "eos_index": 0}
    preprocess = json.loads((out / "preprocess.json").read_text())
    assert preprocess["shape"] == [3, 32, 32] and preprocess["channel_order"] == "BGR"
    assert preprocess["transform_param"] == {"scale": 0.0078125, "mirror": False,
                                             "mean_value": [128.0]}


@pytest.mark.parametrize("output_format", ["text", "coco"])
def test_onnx_captions_equal_lrcn_caption(exported, capsys, output_format):
    weights, out = exported
    code, expected, err = run(generate.main, [
        "--weights", weights, "--net", os.path.join(ROOT, generate.DEFAULT_NET),
        "--vocabulary", os.path.join(ROOT, generate.DEFAULT_VOCABULARY),
        "--max-length", "12", "--format", output_format] + IMAGES, capsys)
    assert code == 0, err
    code, captions, err = run(bundle.run_main, [str(out), "--max-length", "12",
                                                "--format", output_format] + IMAGES, capsys)
    assert code == 0, err
    assert captions == expected
    caption_lines = {line.split("\t")[-1] for line in expected.splitlines()
                     if "\t" in line or '"caption"' in line}
    assert len(caption_lines) == len(IMAGES)      # a real decode: distinct captions


def test_the_bundle_captions_without_torch(exported):
    _, out = exported
    script = ("import sys; sys.modules['torch'] = None; sys.path.insert(0, sys.argv[1]); "
              "from lrcn_apps.caption.bundle import BundleCaptioner; "
              "model = BundleCaptioner(sys.argv[2]); "
              "print([model.sentence(c) for c in model.greedy(sys.argv[3:], 12)])")
    result = subprocess.run([sys.executable, "-c", script, ROOT, str(out)] + IMAGES,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    captioner = bundle.BundleCaptioner(str(out))
    assert result.stdout.strip() == str([captioner.sentence(c)
                                         for c in captioner.greedy(IMAGES, 12)])


def test_an_existing_directory_is_never_overwritten(exported, capsys):
    weights, out = exported
    before = sorted(os.listdir(out))
    code, _, err = run(bundle.export_main, ["--weights", weights, "-o", str(out)], capsys)
    assert code == 1 and err == (f"lrcn-caption-bundle: error: {out}: already exists; the "
                                 "bundle goes into a new directory\n")
    assert sorted(os.listdir(out)) == before


def test_a_folder_that_is_not_a_bundle_is_one_error(tmp_path, capsys):
    code, _, err = run(bundle.run_main, [str(tmp_path), IMAGES[0]], capsys)
    assert code == 1
    assert err == (f"lrcn-caption-onnx: error: {tmp_path / 'bundle.json'}: not found; is "
                   f"{tmp_path} a bundle written by lrcn-caption-bundle?\n")
