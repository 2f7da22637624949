"""Greedy captions through onnxruntime (step-wise export) equal lrcn-caption's."""

import numpy as np
import pytest
import torch

from lrcn_proto import caffe_pb2
from runtime import export_cli
from tasks.caption.generate import Captioner
from tasks.caption.onnx_decode import OnnxGreedyCaptioner

pytest.importorskip("onnxruntime")

DEPLOY = "nets/lrcn_caption_deploy.prototxt"
IMAGES = [f"data/caption_shapes/images/test_{i:06d}.png" for i in (581, 582, 583, 584, 585)]


def decisive_weights(path, stages):
    """Filler weights with a sharpened predict layer: well-separated logits, so the argmax of
    float32 onnxruntime and torch can only agree or differ by a real bug."""
    model = Captioner(DEPLOY, None, stages=stages)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(7)
        for net in (model.image_net, model.word_net):
            for unit in net.units:
                for blob in unit.blobs:
                    blob.copy_(torch.randn(blob.shape, generator=generator) * 0.3)
        model.word_net.layer("predict").blobs[0].mul_(20)
    message = caffe_pb2.NetParameter()
    message.layer.extend(list(model.image_net.to_proto().layer)
                         + list(model.word_net.to_proto().layer))
    path.write_bytes(message.SerializeToString())
    return str(path)


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
    deployed = OnnxGreedyCaptioner(str(tmp_path / "image.onnx"), str(tmp_path / "word.onnx"))
    features = deployed.image_features(images.numpy() if hasattr(images, "numpy") else images)
    assert deployed.greedy(features, max_length=12) == expected
    assert any(len(caption) > 1 for caption in expected)   # a real decode, not EOS at once
