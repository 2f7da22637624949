"""Sentence generation over step-wise recurrent nets, shared by lrcn-caption and lrcn-describe.

A deploy net run ONE time step per call, its LSTMs carrying h and c from one call to the next,
generates a sentence word by word. What feeds the first step differs by application (an
image's features given at every step; a video's frames read first, S2VT-style), so a
`StepDecoder` subclass says how to start N streams (`_start`) and everything else lives here:

- greedy: the most probable word at each step, until EOS or ``max_length`` tokens;
- beam search (width K): each step extends the live prefixes by every word and ranks the
  extensions by their summed log-probability (no length normalisation). Among the K best
  extensions, those ending in EOS are finished and leave the beam; the K best extensions that do
  not end in EOS are the next live prefixes. An input is done once its best finished sentence
  scores at least as much as its best live prefix (log-probabilities only fall as a prefix
  grows, so no live prefix can overtake it) or at ``max_length`` tokens, where unfinished
  prefixes compete as they are. K = 1 is exactly greedy. Inputs are batched: N inputs run as
  N x K streams, and ``StepDecoder._reorder_state`` (``Net.reorder_state``) moves the carried
  LSTM state to follow the surviving prefixes (the stream count never changes, so the runtime
  never resets the state);
- sampling: each word drawn with probability proportional to exp(temperature x logit), where
  the temperature is LRCN's INVERSE temperature: large values approach greedy, 1 samples the
  model's own distribution, small values flatten it;
- forced decoding (`score`, `next_word_log_probs`): the model's log-probabilities of given
  sentences, for retrieval.

``max_length`` counts generated tokens, EOS included, as LRCN's captioner counts them: a
sentence that has not ended after ``max_length`` tokens is cut there.

Log-probabilities are log_softmax of the logits in float64, not the log of a deploy net's
softmax: a word the model all but rules out would underflow to log(0) = -inf in float32
probabilities. `build_step_net` therefore builds the step net without the Softmax over the
logits.
"""

import os
from dataclasses import dataclass

import numpy as np
import torch

import compiler
from compiler.errors import CompileError
from lrcn_proto import caffe_pb2
from runtime import weights as weight_files
from runtime.net import Net
from lrcn_apps.caption.coco import DataError
from lrcn_apps.caption.text import EOS_INDEX

DEFAULT_MAX_LENGTH = 50
DEFAULT_SEED = 1701


@dataclass(frozen=True)
class Caption:
    """One generated sentence: net indices of its words (EOS excluded), the summed
    log-probability of every generated token (EOS included when it ended), and whether the
    model ended it (False: cut at max_length)."""
    tokens: tuple
    log_prob: float
    ended: bool

    def indices(self):
        """The generated token sequence, EOS included when the sentence ended."""
        return self.tokens + ((EOS_INDEX,) if self.ended else ())


class StepDecoder:
    """The decoding strategies over a step-wise word net.

    A subclass sets ``device``, ``vocabulary`` and ``word_net`` (the runtime.Net whose carried
    state beam search reorders; a decoder that carries the state itself overrides
    ``_reorder_state`` instead) and implements ``_start(context)``: reset the carried state,
    prepare one stream per row of ``context`` and return ``step(words, first)``, which feeds
    one word per stream ((N,) long tensor; ``first`` is the first word step) and returns the
    (N, V) float64 log-probabilities of the next word. ``_repeat(context, k)`` repeats every
    row k times (rows stay adjacent), for beams and samples. Every method runs without autograd.
    """

    def _start(self, context):
        raise NotImplementedError

    def _repeat(self, context, copies):
        return torch.as_tensor(context).repeat_interleave(copies, dim=0)

    def _reorder_state(self, streams):
        """Stream n of the next step continues stream streams[n] of the last one."""
        self.word_net.reorder_state(streams)

    def _bos(self, count):
        return torch.full((count,), EOS_INDEX, dtype=torch.long, device=self.device)

    # --- strategies -----------------------------------------------------------------------

    @torch.no_grad()
    def greedy(self, context, max_length=DEFAULT_MAX_LENGTH):
        """The most probable word at each step; one Caption per context row."""
        return self._decode(context, max_length, lambda log_p: log_p.argmax(dim=1))

    @torch.no_grad()
    def sample(self, context, temperature=1.0, max_length=DEFAULT_MAX_LENGTH, generator=None):
        """Each word drawn from softmax(temperature x logits) (an INVERSE temperature).
        The sentences' log_prob is under the model itself (temperature 1)."""
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
        return self._decode(context, max_length, choose)

    def _decode(self, context, max_length, choose):
        """One sentence per stream, each word picked by `choose` from (N, V) log-probs."""
        step = self._start(context)
        count = len(context)
        words = self._bos(count)
        totals = torch.zeros(count, dtype=torch.float64, device=self.device)
        running = torch.ones(count, dtype=torch.bool, device=self.device)
        history = []
        for index in range(max_length):
            log_p = step(words, first=index == 0)
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
    def beam_search(self, context, k, max_length=DEFAULT_MAX_LENGTH):
        """Beam search of width k (module docstring); one Caption per context row."""
        if int(k) < 1:
            raise ValueError("the beam width must be at least 1, got %r" % k)
        return _BeamSearch(self, context, int(k), max_length).run()

    @torch.no_grad()
    def score(self, context, captions):
        """log p(caption + EOS | input) for N (context row, caption) pairs: captions are N
        sequences of net indices (no EOS). Returns (N,) float64 numpy."""
        targets = [list(caption) + [EOS_INDEX] for caption in captions]
        inputs = self._padded(targets, len(context))
        lengths = torch.as_tensor([len(t) for t in targets], device=self.device)
        totals = torch.zeros(len(targets), dtype=torch.float64, device=self.device)
        for index, log_p in self._forced(context, inputs):
            picked = log_p.gather(1, inputs[:, index:index + 1])[:, 0]
            totals += torch.where(index < lengths, picked, 0.0)
        return totals.cpu().numpy()

    @torch.no_grad()
    def next_word_log_probs(self, context, prefixes):
        """log p(next word | input, prefix) for N (context row, prefix) pairs: (N, V)
        float64 numpy (JD captioner's predict_single_word_from_all_previous)."""
        lengths = torch.as_tensor([len(prefix) for prefix in prefixes], device=self.device)
        inputs = self._padded([list(prefix) + [EOS_INDEX] for prefix in prefixes],
                              len(context))
        result = None
        for index, log_p in self._forced(context, inputs):
            if result is None:
                result = torch.empty_like(log_p)
            rows = lengths == index
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

    def _forced(self, context, inputs):
        """Teacher forcing: yields (t, log-probs of word t) and then feeds inputs[:, t]."""
        step = self._start(context)
        words = self._bos(len(context))
        for index in range(inputs.shape[1]):
            yield index, step(words, first=index == 0)
            words = inputs[:, index]

    # --- text -----------------------------------------------------------------------------

    def sentence(self, caption):
        """Display form: capitalised, "." when it ended, "..." when cut at max length."""
        return self.vocabulary.sentence(caption.indices())

    def text(self, caption):
        """Evaluation form: the words, lower case, joined by spaces."""
        return self.vocabulary.decode_text(caption.tokens)


def best_of_samples(decoder, context, temperature, samples, max_length, generator):
    """`samples` sentences drawn per input (one batch of N x samples streams); the most
    probable under the model kept."""
    drawn = decoder.sample(decoder._repeat(context, samples), temperature, max_length,
                           generator)
    return [max(drawn[row * samples:(row + 1) * samples], key=lambda c: c.log_prob)
            for row in range(len(context))]


def decode_batch(decoder, context, args, generator):
    """One sentence per context row with the strategy the command-line arguments choose
    (``beam``, ``temperature``, ``samples``, ``max_length``)."""
    if args.beam:
        return decoder.beam_search(context, args.beam, args.max_length)
    if args.temperature is not None:
        return best_of_samples(decoder, context, args.temperature, args.samples,
                               args.max_length, generator)
    return decoder.greedy(context, args.max_length)


def add_decoding_arguments(parser, item):
    """The strategy options of a generating command (lrcn-caption, lrcn-describe); `item`
    names what gets a sentence ("image", "video"). Read by `decode_batch`."""
    decoding = parser.add_argument_group("decoding (greedy unless --beam or --temperature)")
    decoding.add_argument("--beam", type=int, metavar="K",
                          help="beam search of width K (summed log-prob, no length "
                               "normalisation)")
    decoding.add_argument("--temperature", type=float, metavar="T",
                          help="sample words with probability ~ exp(T * logit): T is an "
                               "INVERSE temperature (large T: near greedy)")
    decoding.add_argument("--samples", type=int, default=1, metavar="S",
                          help="with --temperature: draw S captions per %s, keep the most "
                               "probable (default %%(default)s)" % item)
    decoding.add_argument("--seed", type=int, default=DEFAULT_SEED,
                          help="random seed for sampling (default %(default)s)")
    decoding.add_argument("--max-length", type=int, default=DEFAULT_MAX_LENGTH, metavar="L",
                          help="at most L generated tokens, EOS included (default "
                               "%(default)s)")


def check_decoding_arguments(parser, args):
    """Usage errors (exit 2) for the options of `add_decoding_arguments`."""
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
    if args.max_length < 1:
        parser.error("--max-length must be at least 1")


def _captions_from_history(history, totals):
    """(N, steps) picked words (EOS after the end) and (N,) totals -> N Captions."""
    captions = []
    for words, total in zip(history, totals):
        ends = np.flatnonzero(words == EOS_INDEX)
        tokens = words[:ends[0]] if len(ends) else words
        captions.append(Caption(tuple(int(w) for w in tokens), float(total), bool(len(ends))))
    return captions


class _BeamSearch:
    """Batched beam search: N inputs x K beams as N * K streams, stream n * K + k."""

    def __init__(self, decoder, context, k, max_length):
        self.decoder, self.k, self.max_length = decoder, k, max_length
        self.n = len(context)
        self.context = decoder._repeat(context, k)
        device = decoder.device
        # Only beam 0 of each input is live at first: all K copies hold the same prefix.
        self.scores = torch.full((self.n, k), -np.inf, dtype=torch.float64, device=device)
        self.scores[:, 0] = 0.0
        self.history = np.zeros((self.n, k, 0), dtype=np.int64)
        self.best = [None] * self.n                   # best finished Caption per input
        self.done = np.zeros(self.n, dtype=bool)

    def run(self):
        step = self.decoder._start(self.context)
        words = self.decoder._bos(self.n * self.k)
        for index in range(self.max_length):
            words = self._advance(step(words, first=index == 0))
            if self.done.all():
                break
        return [self._result(row) for row in range(self.n)]

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
        self.decoder._reorder_state(streams.reshape(-1))
        best_live = self.scores[:, 0].cpu().numpy()
        for row in np.flatnonzero(~self.done):
            best = self.best[row]
            # Log-probs never rise as a prefix grows: no live prefix can overtake `best`.
            if best is not None and best.log_prob >= best_live[row]:
                self.done[row] = True
        return words.reshape(-1)

    def _retire(self, top_scores, top_index, vocab):
        """The EOS extensions among each input's K best: finished, out of the beam."""
        for row in np.flatnonzero(~self.done):
            for score, index in zip(top_scores[row], top_index[row]):
                if index % vocab != EOS_INDEX or not np.isfinite(score):
                    continue
                best = self.best[row]
                if best is None or score > best.log_prob:   # ties: the earlier (shorter) one
                    tokens = tuple(int(w) for w in self.history[row, index // vocab])
                    self.best[row] = Caption(tokens, float(score), True)

    def _follow(self, parents, words):
        """Prefix histories of the new live beams: their parent's history plus the word."""
        rows = np.arange(self.n)[:, None]
        self.history = np.concatenate([self.history[rows, parents], words[:, :, None]], axis=2)

    def _result(self, row):
        """The best finished sentence, or the best live prefix when it scores more (only
        possible when max_length cut the search)."""
        best = self.best[row]
        live_score = float(self.scores[row, 0])
        if not self.done[row] and np.isfinite(live_score) \
                and (best is None or live_score > best.log_prob):
            return Caption(tuple(int(w) for w in self.history[row, 0]), live_score, False)
        return best


# ------------------------------------------------------------------------------ nets

def build_step_net(document, stages, drop_softmax_of=None):
    """A runtime.Net (TEST phase) for one stage set of a deploy net. `drop_softmax_of` names
    the logits blob whose Softmax is removed (module docstring); the file is compiled as
    written first, so errors point into it."""
    if drop_softmax_of is None:
        return Net(document, phase="TEST", stages=stages)
    compiler.compile_net(document, "TEST", stages)
    message = caffe_pb2.NetParameter()
    message.CopyFrom(document.message)
    kept = [layer for layer in message.layer
            if not (layer.type == "Softmax" and list(layer.bottom) == [drop_softmax_of])]
    del message.layer[:]
    message.layer.extend(kept)
    return Net(message, phase="TEST", stages=stages)


def describe(error):
    """A CompileError as one message; the file part only when it names one."""
    text = str(error) if error.file else error.message
    return text + ("\n  hint: %s" % error.hint if error.hint and not error.file else "")


def load_weights(nets, path, stages):
    """Copy a .caffemodel into the nets by layer name, refusing one that leaves any learnable
    layer at its filler (weights of another variant would otherwise generate at random)."""
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
