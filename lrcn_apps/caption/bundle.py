"""A trained captioner as a self-contained ONNX bundle, and captioning from the bundle alone.

`lrcn-caption-bundle --weights W.caffemodel -o BUNDLE` writes a new directory:

- image.onnx: the deploy net's "image" stage, data (N x C x H x W, preprocessed) -> fc8;
- word_step.onnx: its "word" stage as a step model (runtime.onnx_export, step=True): inputs
  cont_sentence (1 x N; 0 starts a caption), input_sentence (1 x N, the previous word's net
  index; EOS as BOS), image_features (N x D) and the LSTM states "<layer>.h0" / "<layer>.c0"
  (1 x N x H), outputs predict (1 x N x V logits) and "<layer>.hT" / "<layer>.cT";
- vocabulary.txt: one word per line; net index = line index + index_offset (1), net index 0
  is EOS (bundle.json);
- preprocess.json: how training read images (Caffe's ImageData): the transform_param as
  protobuf JSON, the input shape, BGR channel order, the resize rule; mean.binaryproto beside
  it when the transform names a mean file;
- bundle.json: the manifest tying them together (names of inputs and outputs, EOS, the
  decoding loop).

`lrcn-caption-onnx BUNDLE IMAGE...` captions from the bundle alone (no prototxt, no
.caffemodel): the models run in onnxruntime, the decoding is lrcn-caption's (greedy, beam
search, seeded sampling: lrcn_apps.generation), and the output equals `lrcn-caption`'s
(tested). The command line shares lrcn-caption's options and its input and output code.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile

import numpy as np

from compiler.errors import CompileError
from compiler.extras import MissingExtra, require
from lrcn_proto import caffe_pb2
from runtime import threads
from runtime import transform as image_transform
from lrcn_apps.caption.coco import DataError
from lrcn_apps.caption.onnx_decode import OnnxCaptioner
from lrcn_apps.caption.text import EOS_INDEX, Vocabulary, VocabularyError
from lrcn_apps.cli import run_reporting_errors
from lrcn_apps.generation import DEFAULT_MAX_LENGTH

FORMAT = "lrcn-caption-bundle/1"
MANIFEST, PREPROCESS, VOCABULARY = "bundle.json", "preprocess.json", "vocabulary.txt"
IMAGE_MODEL, WORD_MODEL, MEAN_FILE = "image.onnx", "word_step.onnx", "mean.binaryproto"

EXPORT_EXAMPLES = """examples:
  # the model lrcn-train solvers/caption_solver.prototxt trains, as a bundle
  lrcn-caption-bundle --weights runs/caption/lrcn_caption_iter_2000.caffemodel -o caption_bundle
  lrcn-caption-onnx caption_bundle data/caption_shapes/images/test_000581.png

exit status: 0 success, 1 a problem with an input file or the output folder, 2 bad usage.
"""

RUN_EXAMPLES = """examples:
  lrcn-caption-onnx caption_bundle data/caption_shapes/images/test_000581.png
  lrcn-caption-onnx caption_bundle --beam 3 data/caption_shapes/images/test_000581.png
  lrcn-caption-onnx caption_bundle --temperature 2 --samples 10 --seed 7 \\
      data/caption_shapes/images/test_000581.png
  lrcn-caption-onnx caption_bundle data/caption_shapes/captions_test.json \\
      --image-root data/caption_shapes/images --format coco -o test_captions.json

exit status: 0 success, 1 a problem with an input file or the bundle, 2 bad usage.
"""


# ------------------------------------------------------------------------------ export

def export_bundle(captioner, directory, opset=None):
    """Write `captioner` (a lrcn_apps.caption.generate.Captioner) as a bundle into `directory`,
    which must not exist yet; it appears complete or not at all."""
    from runtime import onnx_export as ox
    if os.path.lexists(directory):
        raise DataError("%s: already exists; the bundle goes into a new directory" % directory)
    parent = os.path.dirname(os.path.abspath(directory))
    staging = tempfile.mkdtemp(prefix=".lrcn-bundle-", dir=parent)
    try:
        opset = opset or ox.DEFAULT_OPSET
        models = {IMAGE_MODEL: (captioner.image_net, False), WORD_MODEL: (captioner.word_net, True)}
        for name, (net, step) in models.items():
            model = ox.export_model(net, opset, step=step, dynamic=ox.batch_axes(net.compiled),
                                    doc_string=f"lrcn captioner bundle: {name}")
            require("onnx", "lrcn-caption-bundle").checker.check_model(model, full_check=True)
            with open(os.path.join(staging, name), "wb") as handle:
                handle.write(model.SerializeToString())
        captioner.vocabulary.save(os.path.join(staging, VOCABULARY))
        _write_json(os.path.join(staging, PREPROCESS), _preprocess(captioner, staging))
        _write_json(os.path.join(staging, MANIFEST), _manifest(captioner))
        os.chmod(staging, 0o755)
        os.rename(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _preprocess(captioner, staging):
    from google.protobuf import json_format
    param = caffe_pb2.TransformationParameter()
    param.CopyFrom(captioner.transformer.param)
    if param.HasField("mean_file"):
        mean = captioner.transformer.mean      # as loaded beside the deploy net
        blob = caffe_pb2.BlobProto()
        blob.shape.dim.extend(mean.shape)
        blob.data.extend(mean.reshape(-1).tolist())
        with open(os.path.join(staging, MEAN_FILE), "wb") as handle:
            handle.write(blob.SerializeToString())
        param.mean_file = MEAN_FILE
    channels, height, width = captioner.input_shape
    return {
        "input": "data", "shape": [channels, height, width], "channel_order": "BGR",
        "resize": "when transform_param has no crop_size, images are first resized to height "
                  "x width (bilinear, Caffe's cv::resize); then transform_param applies as "
                  "Caffe's DataTransformer does in TEST (centre crop, mean, scale)",
        "transform_param": json_format.MessageToDict(param, preserving_proto_field_name=True),
    }


def _manifest(captioner):
    from lrcn_apps.caption import generate
    return {
        "format": FORMAT,
        "stages": list(captioner.stages),
        "image_model": {"file": IMAGE_MODEL, "input": generate.IMAGE_INPUT,
                        "output": generate.FEATURES},
        "word_model": {"file": WORD_MODEL, "cont": generate.CONT,
                       "word": generate.WORD_INPUT, "features": generate.FEATURE_INPUT,
                       "logits": generate.LOGITS,
                       "states": "inputs <layer>.h0 / <layer>.c0, outputs <layer>.hT / .cT"},
        "vocabulary": {"file": VOCABULARY, "index_offset": 1, "eos_index": EOS_INDEX},
        "preprocess": PREPROCESS,
        "decoding": "step 0: cont 0, word EOS, zero states; each later step: cont 1, the "
                    "previous argmax word, the states the last step returned; stop at EOS or "
                    f"{DEFAULT_MAX_LENGTH} tokens",
    }


def _write_json(path, value):
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=1)
        handle.write("\n")


# ------------------------------------------------------------------------------ running

class BundleCaptioner(OnnxCaptioner):
    """Captions from a bundle directory: its models in onnxruntime, lrcn-caption's decoding
    (greedy, beam_search, sample: lrcn_apps.generation.StepDecoder)."""

    def __init__(self, directory):
        from google.protobuf import json_format

        manifest = _read_json(directory, MANIFEST)
        if manifest.get("format") != FORMAT:
            raise DataError("%s: not an lrcn caption bundle (format %r, expected %r)"
                            % (os.path.join(directory, MANIFEST), manifest.get("format"),
                               FORMAT))
        preprocess = _read_json(directory, manifest["preprocess"])
        param = json_format.ParseDict(preprocess["transform_param"],
                                      caffe_pb2.TransformationParameter())
        if param.HasField("mean_file"):
            param.mean_file = os.path.join(directory, param.mean_file)
        self.transformer = image_transform.DataTransformer(param, "TEST")
        self.input_shape = tuple(preprocess["shape"])
        try:
            vocabulary = Vocabulary.load(os.path.join(directory, manifest["vocabulary"]["file"]))
        except (OSError, VocabularyError) as error:
            raise DataError(str(error)) from None
        super().__init__(os.path.join(directory, manifest["image_model"]["file"]),
                         os.path.join(directory, manifest["word_model"]["file"]),
                         scores=manifest["word_model"]["logits"], logits=True,
                         vocabulary=vocabulary)

    def load_image(self, path):
        """An image file -> (C, H, W) float32, as training's ImageData layer read it."""
        try:
            return image_transform.read_for_input(path, self.transformer, self.input_shape)
        except CompileError as error:
            raise DataError(str(error)) from None

    def load_images(self, paths):
        """Image files -> (N, C, H, W) float32 array."""
        return np.stack([self.load_image(path) for path in paths])


def _read_json(directory, name):
    path = os.path.join(directory, name)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise DataError("%s: not found; is %s a bundle written by lrcn-caption-bundle?"
                        % (path, directory)) from None
    except (OSError, ValueError) as error:
        raise DataError("%s: cannot read: %s" % (path, error)) from None


# ------------------------------------------------------------------------------ command lines

def export_main(argv=None):
    from lrcn_apps.caption import generate
    parser = argparse.ArgumentParser(
        prog="lrcn-caption-bundle", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Export a trained captioner as an ONNX bundle that captions without "
                    "PyTorch: the image and word-step models, the vocabulary and the image "
                    "preprocessing (run it with lrcn-caption-onnx).",
        epilog=EXPORT_EXAMPLES)
    generate.add_model_arguments(parser)
    parser.add_argument("-o", "--output", required=True, metavar="DIR",
                        help="the bundle directory to create (must not exist)")
    threads.add_argument(parser)
    args = parser.parse_args(argv)
    threads.configure(args.threads)
    try:
        require("onnx", "lrcn-caption-bundle")
        captioner = generate.captioner_from(args, "lrcn-caption-bundle")
        export_bundle(captioner, args.output)
    except (DataError, MissingExtra) as error:
        print("lrcn-caption-bundle: error: %s" % error, file=sys.stderr)
        return 1
    except CompileError as error:
        print("lrcn-caption-bundle: error: %s" % generate.describe(error), file=sys.stderr)
        return 1
    print("%s: %s, %s, %s, %s, %s" % (args.output, IMAGE_MODEL, WORD_MODEL, VOCABULARY,
                                      PREPROCESS, MANIFEST))
    return 0


def run_main(argv=None):
    from lrcn_apps.caption import generate
    parser = argparse.ArgumentParser(
        prog="lrcn-caption-onnx", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Captions from a bundle written by lrcn-caption-bundle: the models run in "
                    "onnxruntime, the decoding and the output are lrcn-caption's.",
        epilog=RUN_EXAMPLES)
    parser.add_argument("bundle", metavar="BUNDLE", help="bundle directory")
    generate.add_captioning_arguments(parser)
    args = parser.parse_args(argv)
    generate.check_arguments(parser, args)
    return run_reporting_errors("lrcn-caption-onnx", caption_from_bundle, args)


def caption_from_bundle(args):
    from lrcn_apps.caption import generate
    require("onnxruntime", "lrcn-caption-onnx")
    captioner = BundleCaptioner(args.bundle)
    items = generate.collect_images(args.inputs, args.image_root)
    captions = generate.generate(captioner, items, args)
    generate.write_output(generate.format_output(captioner, items, captions, args.format),
                          args.output)
