"""Greedy captioning outside PyTorch: the exported ONNX models run in onnxruntime.

A deployment exports the deploy net twice with lrcn-export: the image stage (image -> fc8) and
the word stage as a step model (`--step`: one word per call, the LSTM states as explicit
inputs `<layer>.h0` / `<layer>.c0` and outputs `<layer>.hT` / `<layer>.cT`):

    lrcn-export nets/lrcn_caption_deploy.prototxt --weights W.caffemodel \\
        --stage image,factored,2-layer --dynamic-batch -o image.onnx
    lrcn-export nets/lrcn_caption_deploy.prototxt --weights W.caffemodel \\
        --stage word,factored,2-layer --dynamic-batch --step -o word_step.onnx

`OnnxGreedyCaptioner` is the decoding loop such a deployment runs, written with numpy and
onnxruntime only; tests check that its captions equal lrcn-caption's (lrcn_apps.caption.generate).
"""

import numpy as np

from compiler.extras import require

EOS_INDEX = 0
IMAGE_INPUT, FEATURES = "data", "fc8"
CONT, WORD_INPUT, FEATURE_INPUT = "cont_sentence", "input_sentence", "image_features"


class OnnxGreedyCaptioner:
    """image_model / word_model: paths of the two exported models (see the module docstring).
    `scores` names the word model's output over the vocabulary (probabilities or logits: the
    argmax is the same)."""

    def __init__(self, image_model, word_model, scores="probs"):
        onnxruntime = require("onnxruntime", "captioning with ONNX models")
        options = onnxruntime.SessionOptions()
        providers = ["CPUExecutionProvider"]
        self.image = onnxruntime.InferenceSession(image_model, options, providers=providers)
        self.word = onnxruntime.InferenceSession(word_model, options, providers=providers)
        self.scores = scores
        inputs = [i.name for i in self.word.get_inputs()]
        # Each state input "<layer>.h0" is fed by the previous call's "<layer>.hT".
        self.states = {name: name[:-1] + "T" for name in inputs
                       if name.endswith((".h0", ".c0"))}
        self.state_shapes = {i.name: i.shape for i in self.word.get_inputs()
                             if i.name in self.states}

    def image_features(self, images):
        """(N, C, H, W) preprocessed images (as training saw them) -> (N, D) features."""
        features = self.image.run([FEATURES], {IMAGE_INPUT: np.asarray(images, np.float32)})[0]
        return features.reshape(len(features), -1)

    def greedy(self, features, max_length=50):
        """Net-index captions (EOS excluded), one per row of `features`: LRCN's greedy decoder
        (start from EOS as BOS with cont 0, then feed back the argmax word with cont 1)."""
        return [tokens for tokens, _ in self.decode(features, max_length)]

    def decode(self, features, max_length=50):
        """greedy() with, per caption, whether the model ended it (False: cut at max_length
        tokens, EOS counted as a token as lrcn-caption counts it)."""
        n = len(features)
        states = {name: np.zeros((1, n, shape[-1]), np.float32)
                  for name, shape in self.state_shapes.items()}
        words = np.full((1, n), EOS_INDEX, np.float32)
        cont = np.zeros((1, n), np.float32)
        captions = [[] for _ in range(n)]
        finished = np.zeros(n, bool)
        outputs = [self.scores] + list(self.states.values())
        for _ in range(max_length):
            results = self.word.run(outputs, {CONT: cont, WORD_INPUT: words,
                                              FEATURE_INPUT: features, **states})
            scores, finals = results[0], results[1:]
            states = dict(zip(self.states, finals))
            chosen = scores.reshape(n, -1).argmax(axis=1)
            for row in np.flatnonzero(~finished):
                if chosen[row] == EOS_INDEX:
                    finished[row] = True
                else:
                    captions[row].append(int(chosen[row]))
            if finished.all():
                break
            words = chosen.reshape(1, n).astype(np.float32)
            cont = np.ones((1, n), np.float32)
        return list(zip(captions, finished.tolist()))
