"""Greedy captions through onnxruntime (the step-wise export of lrcn-export) equal
lrcn-caption's."""

import pytest

from runtime import export_cli
from support import decisive_caption_weights as decisive_weights
from lrcn_apps.caption.generate import Captioner
from lrcn_apps.caption.onnx_decode import OnnxCaptioner

pytest.importorskip("onnxruntime")

DEPLOY = "nets/lrcn_caption_deploy.prototxt"
IMAGES = [f"data/caption_shapes/images/test_{i:06d}.png" for i in (581, 582, 583, 584, 585)]


def export(weights, stages, output, *extra):
    with pytest.raises(SystemExit) as done:
        export_cli.export_main([DEPLOY, "--weights", weights, "--stage", ",".join(stages),
                                "--dynamic-batch", "-o", str(output), *extra])
    assert done.value.code == 0


@pytest.mark.parametrize("variant", [("factored", "2-layer"), ("unfactored", "1-layer")])
def test_onnx_greedy_captions_equal_lrcn_caption(tmp_path, variant):
    weights = decisive_weights(tmp_path / "w.caffemodel", variant)
    export(weights, ("image",) + variant, tmp_path / "image.onnx")
    export(weights, ("word",) + variant, tmp_path / "word.onnx", "--step")
    model = Captioner(DEPLOY, weights, stages=variant)
    images = model.load_images(IMAGES)
    expected = [list(c.tokens) for c in model.greedy(model.image_features(images),
                                                      max_length=12)]
    deployed = OnnxCaptioner(str(tmp_path / "image.onnx"), str(tmp_path / "word.onnx"))
    features = deployed.image_features(images.numpy() if hasattr(images, "numpy") else images)
    assert [list(c.tokens) for c in deployed.greedy(features, max_length=12)] == expected
    assert any(len(caption) > 1 for caption in expected)   # a real decode, not EOS at once
