"""lrcn-caption: captions for images from a trained LRCN captioning net.

Generation follows LRCN's captioner (JD examples/coco_caption/captioner.py; reference section 2)
on the deploy net nets/lrcn_caption_deploy.prototxt, which loads the training net's weights by
layer name:

- stage "image" turns each (preprocessed) image into its features (fc8), once per image;
- stage "word" runs ONE time step for N streams per call, the LSTMs carrying h and c between
  calls: step 0 feeds cont 0 and word 0 (BOS), every later step cont 1 and the previous word.

Strategies (every one returns one caption per image):

- greedy: the most probable word at each step, until EOS or ``max_length`` tokens;
- beam search (width K): each step extends the live prefixes by every word and ranks the
  extensions by their summed log-probability (no length normalisation). Among the K best
  extensions, those ending in EOS are finished and leave the beam; the K best extensions that do
  not end in EOS are the next live prefixes. An image is done once its best finished caption
  scores at least as much as its best live prefix (log-probabilities only fall as a prefix
  grows, so no live prefix can overtake it) or at ``max_length`` tokens, where unfinished
  prefixes compete as they are. K = 1 is exactly greedy. Images are batched: N images run as
  N x K streams, and ``Net.reorder_state`` moves the carried LSTM state to follow the
  surviving prefixes (the stream count never changes, so the runtime never resets the state);
- sampling: each word drawn with probability proportional to exp(temperature x logit), where
  the temperature is LRCN's INVERSE temperature: large values approach greedy, 1 samples the
  model's own distribution, small values flatten it.

``max_length`` counts generated tokens, EOS included, as LRCN's captioner counts them: a caption
that has not ended after ``max_length`` tokens is cut there (shown with a trailing "...").

Log-probabilities are log_softmax of the logits (the ``predict`` blob) in float64, not the log
of the deploy net's ``probs``: a word the model all but rules out would underflow to
log(0) = -inf in float32 probabilities, which breaks retrieval's normalisation. The deploy net
keeps its ``probs`` layer for pycaffe-style use; the captioner builds its word net without it.

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
from lrcn_proto import caffe_pb2
from runtime import transform as image_transform
from runtime import weights as weight_files
from runtime.net import Net
from tasks.caption.coco import DataError, load_json
from tasks.caption.text import EOS_INDEX, Vocabulary, VocabularyError

PROGRAM = "lrcn-caption"
REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_NET = "nets/lrcn_caption_deploy.prototxt"
DEFAULT_VOCABULARY = "data/caption_shapes/prepared/vocabulary.txt"
DEFAULT_STAGES = ("factored", "2-layer")
DEFAULT_MAX_LENGTH = 50
DEFAULT_BATCH_SIZE = 50
DEFAULT_SEED = 1701

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


@dataclass(frozen=True)
class Caption:
    """One generated caption: net indices of its words (EOS excluded), the summed
    log-probability of every generated token (EOS included when it ended), and whether the
    model ended it (False: cut at max_length)."""
    tokens: tuple
    log_prob: float
    ended: bool

    def indices(self):
        """The generated token sequence, EOS included when the caption ended."""
        return self.tokens + ((EOS_INDEX,) if self.ended else ())


# ------------------------------------------------------------------------------ the model

class Captioner:
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
        self.image_net = _build_net(document, (IMAGE_STAGE,) + self.stages)
        self.word_net = _build_net(document, (WORD_STAGE,) + self.stages, drop_softmax=True)
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

    def _features(self, features):
        return torch.as_tensor(features, dtype=torch.float32, device=self.device)

    def _start(self, count):
        self.word_net.reset_state()
        return torch.full((count,), EOS_INDEX, dtype=torch.long, device=self.device)

    # --- strategies -----------------------------------------------------------------------

    @torch.no_grad()
    def greedy(self, features, max_length=DEFAULT_MAX_LENGTH):
        """The most probable word at each step. features: (N, D) -> N Captions."""
        return self._decode(features, max_length, lambda log_p: log_p.argmax(dim=1))

    @torch.no_grad()
    def sample(self, features, temperature=1.0, max_length=DEFAULT_MAX_LENGTH, generator=None):
        """Each word drawn from softmax(temperature x logits) (an INVERSE temperature).
        The captions' log_prob is under the model itself (temperature 1)."""
        temperature = float(temperature)
        if not (np.isfinite(temperature) and temperature > 0):
            raise ValueError("the (inverse) temperature must be a positive number, got %r"
                             % temperature)
        if generator is None:
            generator = torch.Generator(device=self.device).manual_seed(DEFAULT_SEED)

        def choose(log_p):
            # Softmax is shift-invariant, so tempering the log-probs tempers the logits.
            weights = torch.softmax(temperature * log_p, dim=1)
            return torch.multinomial(weights, 1, generator=generator).squeeze(1)
        return self._decode(features, max_length, choose)

    def _decode(self, features, max_length, choose):
        """One caption per stream, each word picked by `choose` from (N, V) log-probs."""
        features = self._features(features)
        count = len(features)
        words = self._start(count)
        totals = torch.zeros(count, dtype=torch.float64, device=self.device)
        running = torch.ones(count, dtype=torch.bool, device=self.device)
        history = []
        for step in range(max_length):
            log_p = self._step(words, features, first=step == 0)
            words = choose(log_p)
            # Ended streams keep running (a change of N would reset the carried state of
            # all of them) but add nothing.
            totals += torch.where(running, log_p.gather(1, words[:, None])[:, 0], 0.0)
            history.append(torch.where(running, words, EOS_INDEX))
            running &= words != EOS_INDEX
            if not bool(running.any()):
                break
        return _captions_from_history(torch.stack(history, 1).cpu().numpy(),
                                      totals.cpu().numpy())

    @torch.no_grad()
    def beam_search(self, features, k, max_length=DEFAULT_MAX_LENGTH):
        """Beam search of width k (module docstring). features: (N, D) -> N Captions."""
        if int(k) < 1:
            raise ValueError("the beam width must be at least 1, got %r" % k)
        return _BeamSearch(self, self._features(features), int(k), max_length).run()

    @torch.no_grad()
    def score(self, features, captions):
        """log p(caption + EOS | image) for N (features row, caption) pairs: features (N, D),
        captions N sequences of net indices (no EOS). Returns (N,) float64 numpy."""
        targets = [list(caption) + [EOS_INDEX] for caption in captions]
        inputs = self._padded(targets, len(features))
        lengths = torch.as_tensor([len(t) for t in targets], device=self.device)
        totals = torch.zeros(len(targets), dtype=torch.float64, device=self.device)
        for step, log_p in self._forced(features, inputs):
            picked = log_p.gather(1, inputs[:, step:step + 1])[:, 0]
            totals += torch.where(step < lengths, picked, 0.0)
        return totals.cpu().numpy()

    @torch.no_grad()
    def next_word_log_probs(self, features, prefixes):
        """log p(next word | image, prefix) for N (features row, prefix) pairs: (N, V)
        float64 numpy (JD captioner's predict_single_word_from_all_previous)."""
        lengths = torch.as_tensor([len(prefix) for prefix in prefixes], device=self.device)
        inputs = self._padded([list(prefix) + [EOS_INDEX] for prefix in prefixes],
                              len(features))
        result = None
        for step, log_p in self._forced(features, inputs):
            if result is None:
                result = torch.empty_like(log_p)
            rows = lengths == step
            result[rows] = log_p[rows]
        return result.cpu().numpy()

    def _padded(self, sequences, rows):
        """Word sequences -> (N, longest) long tensor on the device, padded with EOS."""
        if len(sequences) != rows:
            raise ValueError("%d feature rows but %d word sequences" % (rows, len(sequences)))
        padded = np.full((rows, max(map(len, sequences))), EOS_INDEX, dtype=np.int64)
        for row, sequence in enumerate(sequences):
            padded[row, :len(sequence)] = sequence
        return torch.as_tensor(padded, device=self.device)

    def _forced(self, features, inputs):
        """Teacher forcing: yields (t, log-probs of word t) and then feeds inputs[:, t]."""
        features = self._features(features)
        words = self._start(len(features))
        for step in range(inputs.shape[1]):
            yield step, self._step(words, features, first=step == 0)
            words = inputs[:, step]

    # --- text -----------------------------------------------------------------------------

    def sentence(self, caption):
        """Display form: capitalised, "." when it ended, "..." when cut at max length."""
        return self.vocabulary.sentence(caption.indices())

    def text(self, caption):
        """Evaluation form: the words, lower case, joined by spaces."""
        return self.vocabulary.decode_text(caption.tokens)


def _captions_from_history(history, totals):
    """(N, steps) picked words (EOS after the end) and (N,) totals -> N Captions."""
    captions = []
    for words, total in zip(history, totals):
        ends = np.flatnonzero(words == EOS_INDEX)
        tokens = words[:ends[0]] if len(ends) else words
        captions.append(Caption(tuple(int(w) for w in tokens), float(total), bool(len(ends))))
    return captions


class _BeamSearch:
    """Batched beam search: N images x K beams as N * K streams, stream n * K + k."""

    def __init__(self, captioner, features, k, max_length):
        self.captioner, self.k, self.max_length = captioner, k, max_length
        self.n = len(features)
        self.features = features.repeat_interleave(k, dim=0)
        device = captioner.device
        # Only beam 0 of each image is live at first: all K copies hold the same prefix.
        self.scores = torch.full((self.n, k), -np.inf, dtype=torch.float64, device=device)
        self.scores[:, 0] = 0.0
        self.history = np.zeros((self.n, k, 0), dtype=np.int64)
        self.best = [None] * self.n                   # best finished Caption per image
        self.done = np.zeros(self.n, dtype=bool)

    def run(self):
        words = self.captioner._start(self.n * self.k)
        for step in range(self.max_length):
            log_p = self.captioner._step(words, self.features, first=step == 0)
            words = self._advance(log_p)
            if self.done.all():
                break
        return [self._result(image) for image in range(self.n)]

    def _advance(self, log_p):
        """Rank the extensions, retire finished ones, keep K live prefixes; returns the
        next step's input words."""
        vocab = log_p.shape[1]
        extended = (self.scores[:, :, None] + log_p.view(self.n, self.k, vocab))
        extended = extended.view(self.n, self.k * vocab)
        # Stable sorts: equal scores keep the lower (beam, word) index first, as argmax does.
        top_scores, top_index = extended.sort(dim=1, descending=True, stable=True)
        self._retire(top_scores[:, :self.k].cpu().numpy(), top_index[:, :self.k].cpu().numpy(),
                     vocab)
        live = extended.view(self.n, self.k, vocab).clone()
        live[:, :, EOS_INDEX] = -np.inf
        live_scores, live_index = live.view(self.n, -1).sort(dim=1, descending=True,
                                                             stable=True)
        self.scores, live_index = live_scores[:, :self.k], live_index[:, :self.k]
        parents, words = live_index // vocab, live_index % vocab
        self._follow(parents.cpu().numpy(), words.cpu().numpy())
        streams = parents + self.k * torch.arange(self.n, device=parents.device)[:, None]
        self.captioner.word_net.reorder_state(streams.reshape(-1))
        best_live = self.scores[:, 0].cpu().numpy()
        for image in np.flatnonzero(~self.done):
            best = self.best[image]
            # Log-probs never rise as a prefix grows: no live prefix can overtake `best`.
            if best is not None and best.log_prob >= best_live[image]:
                self.done[image] = True
        return words.reshape(-1)

    def _retire(self, top_scores, top_index, vocab):
        """The EOS extensions among each image's K best: finished, out of the beam."""
        for image in np.flatnonzero(~self.done):
            for score, index in zip(top_scores[image], top_index[image]):
                if index % vocab != EOS_INDEX or not np.isfinite(score):
                    continue
                best = self.best[image]
                if best is None or score > best.log_prob:   # ties: the earlier (shorter) one
                    tokens = tuple(int(w) for w in self.history[image, index // vocab])
                    self.best[image] = Caption(tokens, float(score), True)

    def _follow(self, parents, words):
        """Prefix histories of the new live beams: their parent's history plus the word."""
        rows = np.arange(self.n)[:, None]
        self.history = np.concatenate([self.history[rows, parents], words[:, :, None]], axis=2)

    def _result(self, image):
        """The best finished caption, or the best live prefix when it scores more (only
        possible when max_length cut the search)."""
        best = self.best[image]
        live_score = float(self.scores[image, 0])
        if not self.done[image] and np.isfinite(live_score) \
                and (best is None or live_score > best.log_prob):
            return Caption(tuple(int(w) for w in self.history[image, 0]), live_score, False)
        return best


def _build_net(document, stages, drop_softmax=False):
    """A runtime.Net for one stage set. `drop_softmax` removes the Softmax over the logits
    (module docstring); the file is compiled as written first, so errors point into it."""
    if not drop_softmax:
        return Net(document, phase="TEST", stages=stages)
    compiler.compile_net(document, "TEST", stages)
    message = caffe_pb2.NetParameter()
    message.CopyFrom(document.message)
    kept = [layer for layer in message.layer
            if not (layer.type == "Softmax" and list(layer.bottom) == [LOGITS])]
    del message.layer[:]
    message.layer.extend(kept)
    return Net(message, phase="TEST", stages=stages)


def load_weights(nets, path, stages):
    """Copy a .caffemodel into the nets by layer name, refusing one that leaves any learnable
    layer at its filler (weights of another variant would otherwise caption at random)."""
    path = str(path)
    if path.endswith((".pt", ".pth")):
        raise DataError("%s: give the .caffemodel snapshot: a torch state_dict matches layers "
                        "by position, and the deploy net's positions are not the training "
                        "net's" % path)
    if not os.path.isfile(path):
        raise DataError("%s: weights file not found" % path)
    try:
        stored = {name for name, _ in
                  weight_files.layers_with_blobs(weight_files.read_net_file(path))}
        for net in nets:
            net.copy_from(path)
    except CompileError as error:
        raise DataError(describe(error)) from None
    missing = [name for net in nets for name, unit in zip(net.layer_names, net.units)
               if len(unit.blobs) and name not in stored]
    if missing:
        raise DataError("%s: no weights for layer(s) %s of the deploy net with stages %s; were "
                        "they trained with other stages (--stage)?"
                        % (path, ", ".join(missing), ", ".join(stages)))


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

def caption_batch(captioner, features, args, generator):
    """One caption per feature row with the strategy the arguments choose."""
    if args.beam:
        return captioner.beam_search(features, args.beam, args.max_length)
    if args.temperature is not None:
        return best_of_samples(captioner, features, args.temperature, args.samples,
                               args.max_length, generator)
    return captioner.greedy(features, args.max_length)


def best_of_samples(captioner, features, temperature, samples, max_length, generator):
    """`samples` captions drawn per image (one batch of N x samples streams); the most
    probable under the model kept."""
    drawn = captioner.sample(torch.as_tensor(features).repeat_interleave(samples, dim=0),
                             temperature, max_length, generator)
    return [max(drawn[row * samples:(row + 1) * samples], key=lambda c: c.log_prob)
            for row in range(len(features))]


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
        captions.extend(caption_batch(captioner, features, args, generator))
    return captions


def format_output(captioner, items, captions, output_format):
    if output_format == "coco":
        results = [{"image_id": image_id, "caption": captioner.text(caption)}
                   for image_id, caption in zip(image_ids(items), captions)]
        return json.dumps(results, indent=1) + "\n"
    return "".join("%s\t%s\n" % (item.path, captioner.sentence(caption))
                   for item, caption in zip(items, captions))


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


def describe(error):
    """A CompileError as one message; the file part only when it names one."""
    text = str(error) if error.file else error.message
    return text + ("\n  hint: %s" % error.hint if error.hint and not error.file else "")


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
    parser.add_argument("inputs", nargs="+", metavar="IMAGE|FOLDER|LIST",
                        help="images, folders of images, COCO JSON files or list files")
    add_model_arguments(parser)
    parser.add_argument("--blind", action="store_true",
                        help="zero the image features: the blind baseline of the same model")
    decoding = parser.add_argument_group("decoding (greedy unless --beam or --temperature)")
    decoding.add_argument("--beam", type=int, metavar="K",
                          help="beam search of width K (summed log-prob, no length "
                               "normalisation)")
    decoding.add_argument("--temperature", type=float, metavar="T",
                          help="sample words with probability ~ exp(T * logit): T is an "
                               "INVERSE temperature (large T: near greedy)")
    decoding.add_argument("--samples", type=int, default=1, metavar="S",
                          help="with --temperature: draw S captions per image, keep the most "
                               "probable (default %(default)s)")
    decoding.add_argument("--seed", type=int, default=DEFAULT_SEED,
                          help="random seed for sampling (default %(default)s)")
    decoding.add_argument("--max-length", type=int, default=DEFAULT_MAX_LENGTH, metavar="L",
                          help="at most L generated tokens, EOS included (default "
                               "%(default)s)")
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
    return parser


def check_arguments(parser, args):
    if args.beam is not None and args.temperature is not None:
        parser.error("choose one of --beam and --temperature")
    if args.beam is not None and args.beam < 1:
        parser.error("--beam must be at least 1")
    if args.temperature is not None and not (np.isfinite(args.temperature)
                                             and args.temperature > 0):
        parser.error("--temperature must be a positive number")
    if args.samples < 1:
        parser.error("--samples must be at least 1")
    if args.samples > 1 and args.temperature is None:
        parser.error("--samples needs --temperature")
    check_positive(parser, args, ("max_length", "batch_size"))


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
    text = format_output(captioner, items, captions, args.format)
    if args.output:
        write_text(args.output, text)
    else:
        sys.stdout.write(text)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    check_arguments(parser, args)
    try:
        run(args)
    except DataError as error:
        print("%s: error: %s" % (PROGRAM, error), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
