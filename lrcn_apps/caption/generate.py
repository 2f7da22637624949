"""lrcn-caption: captions for images from a trained LRCN captioning net.

Generation follows LRCN's captioner (JD examples/coco_caption/captioner.py; reference section 2)
on the deploy net nets/lrcn_caption_deploy.prototxt, which loads the training net's weights by
layer name:

- stage "image" turns each (preprocessed) image into its features (fc8), once per image;
- stage "word" runs ONE time step for N streams per call, the LSTMs carrying h and c between
  calls: step 0 feeds cont 0 and word 0 (BOS), every later step cont 1 and the previous word.

Greedy decoding, beam search, sampling and forced scoring are lrcn_apps.generation's
StepDecoder (shared with lrcn-describe); this module says how an image starts the streams: its
features, computed once, are the word net's static input at every step, and step 0 feeds
cont 0 and word 0 (BOS), every later step cont 1 and the previous word. The captioner builds
its word net without the deploy net's ``probs`` Softmax (log-probabilities come from the
logits, see lrcn_apps.generation).

Images are read and transformed exactly as training's ImageData layer reads them (Caffe's BGR
order, runtime.transform), with the ``transform_param`` written on the deploy net's ``data``
Input layer; an image of another size is first resized to the Input's height x width (unless
the transform crops, in which case the crop decides).
"""

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass

import numpy as np
import torch

import compiler
from compiler import data_sources
from compiler.errors import CompileError
from runtime import threads
from runtime import transform as image_transform
from runtime import weights as weight_files
from lrcn_apps.caption.coco import DataError, load_json
from lrcn_apps.caption.text import Vocabulary, VocabularyError
from lrcn_apps.cli import run_reporting_errors
from lrcn_apps.generation import (DEFAULT_MAX_LENGTH, DEFAULT_SEED, Caption,  # noqa: F401
                              StepDecoder, add_decoding_arguments, best_of_samples,
                              build_step_net, check_decoding_arguments, decode_batch,
                              describe, load_weights)

PROGRAM = "lrcn-caption"
REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_NET = "nets/lrcn_caption_deploy.prototxt"
DEFAULT_VOCABULARY = "data/caption_shapes/prepared/vocabulary.txt"
DEFAULT_STAGES = ("factored", "2-layer")
DEFAULT_BATCH_SIZE = 50

# The deploy net's interface (nets/lrcn_caption_deploy.prototxt).
IMAGE_STAGE, WORD_STAGE = "image", "word"
IMAGE_INPUT, FEATURES = "data", "fc8"
CONT, WORD_INPUT, FEATURE_INPUT = "cont_sentence", "input_sentence", "image_features"
LOGITS = "predict"

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")

EXAMPLES = """\
examples:
  # greedy captions for two bundled test images
  lrcn-caption --weights runs/caption/lrcn_caption_iter_2000.caffemodel \\
      data/caption_shapes/images/test_000581.png data/caption_shapes/images/test_000582.png

  # beam search (K = 3) over the shapes test split, COCO results JSON for lrcn-caption-eval
  lrcn-caption --weights runs/caption/lrcn_caption_iter_2000.caffemodel --beam 3 \\
      data/caption_shapes/captions_test.json --image-root data/caption_shapes/images \\
      --format coco -o generated_test.json
  lrcn-caption-eval --results generated_test.json \\
      --annotations data/caption_shapes/prepared/test_references.json

  # the unfactored 1-layer variant, 10 samples per image at inverse temperature 2, the most
  # probable kept
  lrcn-caption --weights one_layer.caffemodel --stage unfactored,1-layer \\
      --temperature 2 --samples 10 data/caption_shapes/images/test_000581.png

inputs: an image file, a folder (its images, sorted by name), a COCO JSON with an "images"
list (file_name under --image-root, default the JSON's folder; its ids label the output), or
a list file of "path" or "path label" lines (relative paths: working directory first, then
the list file's folder).
exit status: 0 success, 1 a problem with an input file, 2 bad usage.
"""


# ------------------------------------------------------------------------------ the model

class Captioner(StepDecoder):
    """A trained LRCN captioning net, split into its image and word stages.

    deploy_net: the deploy .prototxt; weights: a .caffemodel (None keeps the fillers, for
    tests); vocabulary: a Vocabulary or its file; stages: the training variant's stages;
    device: a torch device. Every method runs without autograd.
    """

    def __init__(self, deploy_net=DEFAULT_NET, weights=None, vocabulary=DEFAULT_VOCABULARY,
                 stages=DEFAULT_STAGES, device="cpu"):
        self.device = torch.device(device)
        self.stages = tuple(stages)
        self.vocabulary = (vocabulary if isinstance(vocabulary, Vocabulary)
                           else Vocabulary.load(vocabulary))
        document = compiler.load_file(deploy_net, "net")
        self.image_net = build_step_net(document, (IMAGE_STAGE,) + self.stages)
        self.word_net = build_step_net(document, (WORD_STAGE,) + self.stages, LOGITS)
        self._check_interface(deploy_net)
        if weights:
            load_weights([self.image_net, self.word_net], weights, self.stages)
        for net in (self.image_net, self.word_net):
            net.to(self.device)
            net.eval()
        data_layer = next(layer for layer in self.image_net.compiled.layers
                          if IMAGE_INPUT in layer.tops)
        self.transformer = image_transform.DataTransformer(data_layer.param.transform_param,
                                                           "TEST")
        self.input_shape = tuple(data_layer.top_shapes[0][1:])      # (C, H, W)

    def _check_interface(self, deploy_net):
        """Name what a deploy net lacks, rather than failing on a missing blob mid-caption."""
        needs = ((self.image_net, [IMAGE_INPUT], FEATURES, IMAGE_STAGE),
                 (self.word_net, [CONT, WORD_INPUT, FEATURE_INPUT], LOGITS, WORD_STAGE))
        for net, inputs, output, stage in needs:
            missing = [name for name in inputs if name not in net.inputs]
            if missing or output not in net.outputs:
                raise DataError(
                    "%s: with stages %s the net must take input(s) %s and produce %r; it takes "
                    "%s and produces %s" % (deploy_net, ", ".join((stage,) + self.stages),
                                            ", ".join(inputs), output,
                                            ", ".join(net.inputs) or "nothing",
                                            ", ".join(net.outputs) or "nothing"))
        classes = self.word_net.compiled.blobs[self.word_net.compiled.latest[LOGITS]][-1]
        if classes != self.vocabulary.net_size:
            raise DataError("%s: predict has %d outputs but the vocabulary has %d words + EOS "
                            "= %d: wrong vocabulary file?" % (
                                deploy_net, classes, len(self.vocabulary),
                                self.vocabulary.net_size))

    # --- images ---------------------------------------------------------------------------

    def load_image(self, path):
        """An image file -> (C, H, W) float32, as training's ImageData layer would give it."""
        try:
            return image_transform.read_for_input(path, self.transformer, self.input_shape)
        except CompileError as error:
            raise DataError(describe(error)) from None      # the message names the image

    def load_images(self, paths):
        """Image files -> (N, C, H, W) float32 array."""
        return np.stack([self.load_image(path) for path in paths])

    @torch.no_grad()
    def image_features(self, images):
        """(N, C, H, W) preprocessed images -> (N, D) features (fc8) on the device."""
        if not isinstance(images, torch.Tensor):
            images = torch.from_numpy(np.asarray(images, dtype=np.float32))
        images = images.to(self.device, torch.float32)
        return self.image_net(**{IMAGE_INPUT: images})[FEATURES].reshape(len(images), -1)

    # --- one word step --------------------------------------------------------------------

    def _step(self, words, features, first):
        """Feed one word per stream; (N,) previous words -> (N, V) float64 log-probabilities
        of the next word. `first` starts every stream's sentence (cont 0)."""
        n = words.shape[0]
        cont = torch.full((1, n), 0.0 if first else 1.0, device=self.device)
        outputs = self.word_net(**{CONT: cont,
                                   WORD_INPUT: words.reshape(1, n).to(torch.float32),
                                   FEATURE_INPUT: features})
        return torch.log_softmax(outputs[LOGITS].reshape(n, -1).double(), dim=1)

    def _start(self, features):
        """N streams, one per image: its features are the static input of every step."""
        features = torch.as_tensor(features, dtype=torch.float32, device=self.device)
        self.word_net.reset_state()
        return lambda words, first: self._step(words, features, first)


# ------------------------------------------------------------------------------ inputs

@dataclass(frozen=True)
class ImageItem:
    path: str
    image_id: int = None       # from a COCO JSON; None: derived from the file name if needed


def default_path(relative):
    """A bundled file: from the working directory, else from the repository root."""
    if os.path.exists(relative):
        return relative
    beside = os.path.join(REPOSITORY, relative)
    return beside if os.path.exists(beside) else relative


def collect_images(arguments, image_root=None):
    """IMAGE / FOLDER / COCO JSON / LIST arguments -> ImageItems in order."""
    items = []
    for argument in arguments:
        if os.path.isdir(argument):
            items.extend(_folder_images(argument))
        elif not os.path.exists(argument):
            raise DataError("%s: no such file or folder" % argument)
        elif argument.lower().endswith(".json"):
            items.extend(_coco_images(argument, image_root))
        elif argument.lower().endswith(IMAGE_EXTENSIONS):
            items.append(ImageItem(argument))
        else:
            items.extend(_listed_images(argument))
    return items


def _folder_images(folder):
    names = sorted(name for name in os.listdir(folder)
                   if name.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        raise DataError("%s: the folder holds no images (%s)"
                        % (folder, " ".join(IMAGE_EXTENSIONS)))
    return [ImageItem(os.path.join(folder, name)) for name in names]


def _coco_images(path, image_root):
    """The "images" list of a COCO JSON (captions or image-info file)."""
    document = load_json(path)
    records = document.get("images") if isinstance(document, dict) else None
    if not isinstance(records, list) or not records:
        raise DataError("%s: expected a COCO JSON object with a non-empty 'images' list" % path)
    root = image_root if image_root is not None else os.path.dirname(path)
    items = []
    for index, record in enumerate(records):
        image_id = record.get("id") if isinstance(record, dict) else None
        file_name = record.get("file_name") if isinstance(record, dict) else None
        if not isinstance(image_id, int) or isinstance(image_id, bool) \
                or not isinstance(file_name, str) or not file_name:
            raise DataError("%s: images[%d]: needs an integer 'id' and a 'file_name'"
                            % (path, index))
        items.append(ImageItem(os.path.join(root, file_name), image_id))
    return items


def _listed_images(list_file):
    """"path" or "path label" lines (an ImageData list works as is)."""
    items = []
    for number, text in _list_lines(list_file):
        name = text
        parts = text.rsplit(None, 1)
        if not _exists_listed(text, list_file) and len(parts) == 2 \
                and re.fullmatch(r"-?\d+", parts[1]):
            name = parts[0]                              # "path label"
        try:
            items.append(ImageItem(data_sources.resolve_listed(name, list_file, number,
                                                               "image")))
        except CompileError as error:
            raise DataError(describe(error)) from None
    if not items:
        raise DataError("%s: the list names no images" % list_file)
    return items


def _list_lines(list_file):
    """(line number, text) of the non-blank lines of a text list file."""
    try:
        with open(list_file, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except UnicodeDecodeError:
        raise DataError("%s: not a text list of images (or an image of an unknown type: "
                        "known %s)" % (list_file, " ".join(IMAGE_EXTENSIONS))) from None
    except OSError as error:
        raise DataError("%s: cannot read: %s" % (list_file, error.strerror or error)) from None
    return [(number, line.strip()) for number, line in enumerate(lines, 1) if line.strip()]


def _exists_listed(name, list_file):
    return os.path.exists(name) or os.path.exists(
        os.path.join(os.path.dirname(os.path.abspath(list_file)), name))


def image_ids(items):
    """COCO image ids: the JSON's, else the trailing digits of the file name
    (COCO_val2014_000000000042.jpg -> 42, test_000581.png -> 581)."""
    ids, seen = [], {}
    for item in items:
        image_id = item.image_id
        if image_id is None:
            match = re.search(r"(\d+)$", os.path.splitext(os.path.basename(item.path))[0])
            if not match:
                raise DataError("%s: no image id in the file name (no trailing digits); give a "
                                "COCO JSON of the images for --format coco" % item.path)
            image_id = int(match.group(1))
        if image_id in seen:
            raise DataError("%s: image id %d is also the id of %s"
                            % (item.path, image_id, seen[image_id]))
        seen[image_id] = item.path
        ids.append(image_id)
    return ids


# ------------------------------------------------------------------------------ generating

def generate(captioner, items, args):
    """Captions for every item, `args.batch_size` images per forward."""
    generator = torch.Generator(device=captioner.device).manual_seed(args.seed)
    captions = []
    for start in range(0, len(items), args.batch_size):
        batch = items[start:start + args.batch_size]
        features = captioner.image_features(captioner.load_images([i.path for i in batch]))
        if args.blind:
            # The blind baseline: the same model, told nothing about the image.
            features = torch.zeros_like(features)
        captions.extend(decode_batch(captioner, features, args, generator))
    return captions


def format_output(captioner, items, captions, output_format):
    if output_format == "coco":
        results = [{"image_id": image_id, "caption": captioner.text(caption)}
                   for image_id, caption in zip(image_ids(items), captions)]
        return json.dumps(results, indent=1) + "\n"
    return "".join("%s\t%s\n" % (item.path, captioner.sentence(caption))
                   for item, caption in zip(items, captions))


def write_output(text, path=None):
    """To the -o file (atomically), or to stdout when there is none."""
    if path:
        write_text(path, text)
    else:
        sys.stdout.write(text)


def write_text(path, text):
    """Write atomically, so that a failure leaves no half file."""
    try:
        weight_files.write_bytes_atomically(path, text.encode("utf-8"))
    except OSError as error:
        raise DataError("%s: cannot write: %s" % (path, error.strerror or error)) from None


# ------------------------------------------------------------------------------ command line

def add_model_arguments(parser):
    """The options that pick the net, its weights and the device (shared with retrieval)."""
    model = parser.add_argument_group("model")
    model.add_argument("--weights", required=True, metavar="CAFFEMODEL",
                       help="trained weights (.caffemodel of nets/lrcn_caption.prototxt)")
    model.add_argument("--net", default=DEFAULT_NET, metavar="PROTOTXT",
                       help="deploy net (default %(default)s)")
    model.add_argument("--stage", action="append", metavar="STAGE[,STAGE]",
                       help="the variant's stages, as trained (repeat or comma-separate; "
                            "default %s)" % ",".join(DEFAULT_STAGES))
    model.add_argument("--vocabulary", default=DEFAULT_VOCABULARY, metavar="FILE",
                       help="vocabulary file (default %(default)s)")
    model.add_argument("--gpu", metavar="ID", type=int,
                       help="run on CUDA device ID (default: CPU)")


def stages_from(args):
    if not args.stage:
        return DEFAULT_STAGES
    return tuple(stage for value in args.stage for stage in value.split(",") if stage)


def device_from(gpu, program=PROGRAM):
    """--gpu ID -> a CUDA device; like lrcn-train, CPU with a warning when CUDA is absent."""
    if gpu is None:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        print("%s: warning: --gpu %d asked for but no CUDA device is available: running on "
              "CPU" % (program, gpu), file=sys.stderr)
        return torch.device("cpu")
    if not 0 <= gpu < torch.cuda.device_count():
        raise DataError("--gpu %d: there are %d CUDA device(s)"
                        % (gpu, torch.cuda.device_count()))
    return torch.device("cuda", gpu)


def captioner_from(args, program=PROGRAM):
    """The Captioner the model arguments describe; DataError for a missing file."""
    # The bundled defaults also work from outside the repository root.
    net = default_path(args.net) if args.net == DEFAULT_NET else args.net
    vocabulary = (default_path(args.vocabulary) if args.vocabulary == DEFAULT_VOCABULARY
                  else args.vocabulary)
    for path, what in ((args.weights, "weights file"), (net, "deploy net"),
                       (vocabulary, "vocabulary file")):
        if not os.path.isfile(path):
            raise DataError("%s: %s not found" % (path, what))
    try:
        return Captioner(net, args.weights, vocabulary, stages_from(args),
                         device_from(args.gpu, program))
    except CompileError as error:
        raise DataError(describe(error)) from None
    except VocabularyError as error:
        raise DataError(str(error)) from None


def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROGRAM, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Caption images with a trained LRCN captioning net (greedy, beam search "
                    "or sampling), as LRCN's captioner does.")
    add_model_arguments(parser)
    add_captioning_arguments(parser)
    threads.add_argument(parser)
    return parser


def add_captioning_arguments(parser):
    """The images, the decoding and the output: what `generate` and `format_output` read
    (shared with lrcn-caption-onnx)."""
    parser.add_argument("inputs", nargs="+", metavar="IMAGE|FOLDER|LIST",
                        help="images, folders of images, COCO JSON files or list files")
    parser.add_argument("--blind", action="store_true",
                        help="zero the image features: the blind baseline of the same model")
    add_decoding_arguments(parser, "image")
    io = parser.add_argument_group("input and output")
    io.add_argument("--image-root", metavar="DIR",
                    help="folder of a COCO JSON's file_name paths (default: the JSON's folder)")
    io.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="B",
                    help="images per forward (default %(default)s)")
    io.add_argument("--format", choices=("text", "coco"), default="text",
                    help="text: 'path<TAB>caption' lines; coco: results JSON "
                         "[{\"image_id\", \"caption\"}] for lrcn-caption-eval "
                         "(default %(default)s)")
    io.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")


def check_arguments(parser, args):
    check_decoding_arguments(parser, args)
    check_positive(parser, args, ("batch_size",))


def check_positive(parser, args, names):
    """Usage error for any of the named integer options given below 1."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error("--%s must be at least 1" % name.replace("_", "-"))


def run(args):
    items = collect_images(args.inputs, args.image_root)
    captioner = captioner_from(args)
    captions = generate(captioner, items, args)
    write_output(format_output(captioner, items, captions, args.format), args.output)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    check_arguments(parser, args)
    threads.configure(args.threads)
    return run_reporting_errors(PROGRAM, run, args)


if __name__ == "__main__":
    sys.exit(main())
