"""The ONNX caption bundle: lrcn-caption-bundle writes it, lrcn-caption-onnx captions from it
alone, equal to lrcn-caption (the torch path)."""

import json
import os

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


@pytest.mark.parametrize("output_format, decoding", [
    ("text", []), ("coco", []), ("text", ["--beam", "3"]), ("coco", ["--beam", "2"]),
    ("text", ["--temperature", "2", "--samples", "3", "--seed", "7"])])
def test_onnx_captions_equal_lrcn_caption(exported, capsys, output_format, decoding):
    weights, out = exported
    options = ["--max-length", "12", "--format", output_format] + decoding
    code, expected, err = run(generate.main, [
        "--weights", weights, "--net", os.path.join(ROOT, generate.DEFAULT_NET),
        "--vocabulary", os.path.join(ROOT, generate.DEFAULT_VOCABULARY)] + options + IMAGES,
        capsys)
    assert code == 0, err
    code, captions, err = run(bundle.run_main, [str(out)] + options + IMAGES, capsys)
    assert code == 0, err
    assert captions == expected
    caption_lines = {line.split("\t")[-1] for line in expected.splitlines()
                     if "\t" in line or '"caption"' in line}
    assert len(caption_lines) == len(IMAGES)      # a real decode: distinct captions


def test_beam_search_through_onnxruntime_scores_as_the_torch_path(exported):
    """The same sentences with the same log-probabilities, not just the same text."""
    weights, out = exported
    torch_path = generate.Captioner(os.path.join(ROOT, generate.DEFAULT_NET), weights,
                                    os.path.join(ROOT, generate.DEFAULT_VOCABULARY))
    onnx_path = bundle.BundleCaptioner(str(out))
    expected = torch_path.beam_search(
        torch_path.image_features(torch_path.load_images(IMAGES)), 3, 12)
    found = onnx_path.beam_search(onnx_path.image_features(onnx_path.load_images(IMAGES)), 3, 12)
    assert [c.tokens for c in found] == [c.tokens for c in expected]
    assert [c.ended for c in found] == [c.ended for c in expected]
    assert [c.log_prob for c in found] == pytest.approx([c.log_prob for c in expected],
                                                       abs=1e-4)


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
