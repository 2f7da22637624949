"""Captioning outside PyTorch's nets: the exported ONNX models run in onnxruntime.

A deployment exports the deploy net twice with lrcn-export: the image stage (image -> fc8) and
the word stage as a step model (`--step`: one word per call, the LSTM states as explicit
inputs `<layer>.h0` / `<layer>.c0` and outputs `<layer>.hT` / `<layer>.cT`):

    lrcn-export nets/lrcn_caption_deploy.prototxt --weights W.caffemodel \\
        --stage image,factored,2-layer --dynamic-batch -o image.onnx
    lrcn-export nets/lrcn_caption_deploy.prototxt --weights W.caffemodel \\
        --stage word,factored,2-layer --dynamic-batch --step -o word_step.onnx

`OnnxCaptioner` runs those two models in onnxruntime and decodes with the search code
lrcn-caption uses (lrcn_apps.generation.StepDecoder: greedy, beam search, sampling), so its
captions equal lrcn-caption's (tested). The models run in onnxruntime; the search's
arithmetic is torch's, as in lrcn-caption, which is what makes seeded sampling draw the same
words on both paths.
"""

import numpy as np
import torch

from compiler.extras import require
from lrcn_apps.caption.generate import CONT, FEATURE_INPUT, FEATURES, IMAGE_INPUT, WORD_INPUT
from lrcn_apps.generation import StepDecoder


class OnnxCaptioner(StepDecoder):
    """image_model / word_model: paths of the two exported models (module docstring).
    `scores` names the word model's output over the vocabulary: logits (`logits=True`, as a
    caption bundle exports them) or a Softmax's probabilities. `vocabulary` (a
    lrcn_apps.caption.text.Vocabulary) is needed only for `sentence` / `text`."""

    def __init__(self, image_model, word_model, scores="probs", logits=False, vocabulary=None):
        onnxruntime = require("onnxruntime", "captioning with ONNX models")
        options = onnxruntime.SessionOptions()
        providers = ["CPUExecutionProvider"]
        self.image = onnxruntime.InferenceSession(image_model, options, providers=providers)
        self.word = onnxruntime.InferenceSession(word_model, options, providers=providers)
        self.scores, self.logits, self.vocabulary = scores, logits, vocabulary
        self.device = torch.device("cpu")
        inputs = self.word.get_inputs()
        # Each state input "<layer>.h0" is fed by the previous call's "<layer>.hT".
        self.states = {i.name: i.name[:-1] + "T" for i in inputs
                       if i.name.endswith((".h0", ".c0"))}
        self.state_sizes = {i.name: i.shape[-1] for i in inputs if i.name in self.states}
        self._carried = {}

    def image_features(self, images):
        """(N, C, H, W) preprocessed images (as training saw them) -> (N, D) float32 tensor."""
        features = self.image.run([FEATURES], {IMAGE_INPUT: np.asarray(images, np.float32)})[0]
        return torch.from_numpy(features.reshape(len(features), -1))

    def _start(self, features):
        """N streams, one per row of features (the static input of every step), zero states."""
        features = np.asarray(features, np.float32)
        count = len(features)
        self._carried = {name: np.zeros((1, count, size), np.float32)
                         for name, size in self.state_sizes.items()}
        outputs = [self.scores] + list(self.states.values())

        def step(words, first):
            cont = np.full((1, count), 0.0 if first else 1.0, np.float32)
            results = self.word.run(outputs, {
                CONT: cont, WORD_INPUT: words.numpy().reshape(1, count).astype(np.float32),
                FEATURE_INPUT: features, **self._carried})
            self._carried = dict(zip(self.states, results[1:]))
            scores = torch.from_numpy(results[0].reshape(count, -1)).double()
            return torch.log_softmax(scores, dim=1) if self.logits else torch.log(scores)
        return step

    def _reorder_state(self, streams):
        index = np.asarray(streams)
        self._carried = {name: state[:, index] for name, state in self._carried.items()}
