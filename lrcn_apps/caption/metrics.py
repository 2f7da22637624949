"""lrcn-caption-eval: caption metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr) and LRCN's
retrieval metrics.

Caption metrics are pycocoevalcap's scorers, fed the way its COCOEvalCap does: references and
results are tokenized with the Stanford PTB tokenizer (Java), lower-cased, punctuation
removed; every image with a result caption is scored against all its references. Without
Java the captions are tokenized with LRCN's tokenizer instead (lrcn_apps.caption.text) and the
same punctuation tokens are dropped; scores are then close to, but not exactly, the official
ones, and METEOR (a Java program too) is skipped. Both are announced on the output.

Retrieval (JD examples/coco_caption/retrieval_experiment.py): given log p(caption_j | image_i)
for every image i and caption j, each caption's scores are normalised by the log of its mean
probability over the images, log p(c_j | i) - log mean_i p(c_j | i), which stops captions that
are likely under every image (short, generic ones) from ranking first for every image.
Caption -> image ranks the images by a caption's normalised scores; image -> caption ranks
all captions for an image, and the rank is that of its best-ranked own caption. Ties keep the
lower index first (the original's stable sort). R@K is the fraction of queries whose correct
item ranks in the top K; the median rank is 1-indexed.
"""

import argparse
import contextlib
import io
import json
import shutil
import sys

import numpy as np

from compiler.errors import CompileError
from compiler.files import write_text_atomically
from compiler.extras import MissingExtra, require
from lrcn_apps.caption.coco import DataError, load_caption_set, load_results
from lrcn_apps.caption.text import tokenize

PROGRAM = "lrcn-caption-eval"
CAPTION_METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
DISPLAY_NAMES = {"Bleu_1": "BLEU-1", "Bleu_2": "BLEU-2", "Bleu_3": "BLEU-3",
                 "Bleu_4": "BLEU-4", "METEOR": "METEOR", "ROUGE_L": "ROUGE-L",
                 "CIDEr": "CIDEr"}
DEFAULT_RECALL_AT = (1, 5, 10)

EXAMPLES = """\
examples:
  # captions generated for the shapes test split, scored against its references
  lrcn-caption-eval --results generated_test.json \\
      --annotations data/caption_shapes/prepared/test_references.json --json scores.json

  # retrieval from a score matrix (lrcn-caption-retrieval --save-scores writes one): log_p
  # (images x captions) and caption_image (for each caption, the row of its image)
  lrcn-caption-eval --scores test_scores.npz

exit status: 0 success, 1 a problem with an input file, 2 bad usage.
"""


# ---------------------------------------------------------------------------- tokenizing

def java_available():
    return shutil.which("java") is not None


def _coco_module(name):
    return require(f"pycocoevalcap.{name}", "scoring captions (BLEU, METEOR, ROUGE-L, CIDEr)")


def _ptb_punctuation():
    return frozenset(_coco_module("tokenizer.ptbtokenizer").PUNCTUATIONS)


def lrcn_tokenize_for_scoring(caption):
    """LRCN's tokens without the punctuation tokens the PTB path drops, joined by spaces."""
    punctuation = _ptb_punctuation()
    return " ".join(token for token in tokenize(caption) if token not in punctuation)


def ptb_tokenize(captions_by_image):
    """{image id: [caption, ...]} -> same with PTB-tokenized strings (runs Java)."""
    PTBTokenizer = _coco_module("tokenizer.ptbtokenizer").PTBTokenizer
    wrapped = {image_id: [{"caption": caption} for caption in captions]
               for image_id, captions in captions_by_image.items()}
    tokenized = PTBTokenizer().tokenize(wrapped)
    for image_id, captions in captions_by_image.items():
        if len(tokenized.get(image_id, ())) != len(captions):
            raise RuntimeError("the PTB tokenizer returned too few lines")
    return tokenized


def tokenize_for_scoring(captions_by_image, tokenizer):
    """Tokenize with "ptb" or "lrcn"; returns the tokenized captions."""
    if tokenizer == "ptb":
        return ptb_tokenize(captions_by_image)
    return {image_id: [lrcn_tokenize_for_scoring(caption) for caption in captions]
            for image_id, captions in captions_by_image.items()}


def choose_tokenizer(requested, notes):
    """"auto" -> "ptb" where Java runs, else "lrcn" with a note."""
    if requested != "auto":
        return requested
    if java_available():
        return "ptb"
    notes.append("java not found: captions tokenized with LRCN's tokenizer (punctuation "
                 "dropped) instead of the PTB tokenizer; scores are not the official ones")
    return "lrcn"


# ---------------------------------------------------------------------------- scoring

def compute_scores(references, candidates, meteor=True, notes=None):
    """pycocoevalcap's scores of tokenized captions.

    ``references``: {image id: [tokenized reference, ...]}, ``candidates``: {image id:
    [tokenized caption]} over the same ids. Returns {metric name: score in [0, 1] (CIDEr
    can exceed 1)}; METEOR only when ``meteor`` is true and it runs (else a note says why).
    """
    Bleu = _coco_module("bleu.bleu").Bleu
    Cider = _coco_module("cider.cider").Cider
    Rouge = _coco_module("rouge.rouge").Rouge
    notes = [] if notes is None else notes
    scores = {}
    # Bleu prints its n-gram statistics; keep stdout for the table.
    with contextlib.redirect_stdout(io.StringIO()):
        bleu, _ = Bleu(4).compute_score(references, candidates)
    for order, value in enumerate(bleu, start=1):
        scores["Bleu_%d" % order] = float(value)
    if meteor:
        meteor_score = _meteor_score(references, candidates, notes)
        if meteor_score is not None:
            scores["METEOR"] = meteor_score
    scores["ROUGE_L"] = float(Rouge().compute_score(references, candidates)[0])
    scores["CIDEr"] = float(Cider().compute_score(references, candidates)[0])
    return scores


def _meteor_score(references, candidates, notes):
    if not java_available():
        notes.append("METEOR skipped: java not found")
        return None
    Meteor = _coco_module("meteor.meteor").Meteor
    try:
        scorer = Meteor()
        try:
            return float(scorer.compute_score(references, candidates)[0])
        finally:
            del scorer  # ends the Java process now rather than at interpreter exit
    except Exception as error:  # a Java failure must not lose the other metrics
        notes.append("METEOR skipped: the METEOR jar failed (%s: %s)"
                     % (type(error).__name__, error))
        return None


def evaluate_captions(references, results, tokenizer="auto", meteor=True, notes=None):
    """Score ``results`` ({image id: caption}) against ``references`` ({image id:
    [caption, ...]}), over the images that have a result. Returns (scores, tokenizer used)."""
    notes = [] if notes is None else notes
    image_ids = [image_id for image_id in references if image_id in results]
    gts = {image_id: list(references[image_id]) for image_id in image_ids}
    res = {image_id: [results[image_id]] for image_id in image_ids}
    used = choose_tokenizer(tokenizer, notes)
    try:
        gts, res = tokenize_for_scoring(gts, used), tokenize_for_scoring(res, used)
    except (OSError, RuntimeError) as error:
        if tokenizer == "ptb":
            raise DataError("the PTB tokenizer (Java) failed: %s" % error) from None
        notes.append("the PTB tokenizer failed (%s); used LRCN's tokenizer instead" % error)
        used = "lrcn"
        gts, res = tokenize_for_scoring(gts, used), tokenize_for_scoring(res, used)
    return compute_scores(gts, res, meteor=meteor, notes=notes), used


# ---------------------------------------------------------------------------- retrieval

def normalized_caption_scores(log_p):
    """log p(c_j | i) - log mean_i p(c_j | i), computed with logsumexp so that very
    unlikely captions do not underflow (the original exponentiated directly)."""
    log_p = np.asarray(log_p, dtype=np.float64)
    column_max = log_p.max(axis=0, keepdims=True)
    if not np.all(np.isfinite(column_max)):
        raise ValueError("every caption needs a finite log probability under some image")
    log_sum = column_max + np.log(np.exp(log_p - column_max).sum(axis=0, keepdims=True))
    return log_p - (log_sum - np.log(log_p.shape[0]))


def first_correct_rank(scores, correct):
    """0-indexed rank of the best-ranked correct item when sorting scores high to low
    (stable: equal scores keep index order)."""
    order = np.argsort(-scores, kind="stable")
    return int(np.flatnonzero(correct[order])[0])


def rank_summary(ranks, recall_at):
    ranks = np.asarray(ranks)
    summary = {"R@%d" % k: float(np.mean(ranks < k)) for k in recall_at}
    summary["median_rank"] = float(np.median(ranks) + 1)
    summary["mean_rank"] = float(np.mean(ranks) + 1)
    summary["queries"] = int(ranks.size)
    return summary


def check_retrieval_inputs(log_p, caption_image):
    log_p = np.asarray(log_p, dtype=np.float64)
    caption_image = np.asarray(caption_image)
    if log_p.ndim != 2 or log_p.size == 0:
        raise ValueError("log_p must be a non-empty images x captions matrix, got shape %s"
                         % (log_p.shape,))
    if caption_image.shape != (log_p.shape[1],):
        raise ValueError("caption_image must have one entry per caption (%d), got shape %s"
                         % (log_p.shape[1], caption_image.shape))
    if not np.issubdtype(caption_image.dtype, np.integer):
        raise ValueError("caption_image must hold integer image rows")
    if caption_image.min() < 0 or caption_image.max() >= log_p.shape[0]:
        raise ValueError("caption_image holds rows outside 0..%d" % (log_p.shape[0] - 1))
    if np.isnan(log_p).any() or (log_p == np.inf).any():
        raise ValueError("log_p holds NaN or +inf")
    images_without_captions = np.setdiff1d(np.arange(log_p.shape[0]), caption_image)
    if images_without_captions.size:
        raise ValueError("image row %d has no caption in caption_image"
                         % images_without_captions[0])
    return log_p, caption_image


def retrieval_metrics(log_p, caption_image, recall_at=DEFAULT_RECALL_AT):
    """LRCN's retrieval metrics from a score matrix.

    ``log_p[i, j]`` = log p(caption j | image i); ``caption_image[j]`` = the row of caption
    j's own image. Returns {"caption_to_image": {...}, "image_to_caption": {...}}, each with
    R@K for K in ``recall_at`` (fractions), median_rank and mean_rank (1-indexed), queries.
    """
    log_p, caption_image = check_retrieval_inputs(log_p, caption_image)
    normalized = normalized_caption_scores(log_p)
    image_rows = np.arange(log_p.shape[0])
    caption_to_image = [first_correct_rank(normalized[:, j], image_rows == caption_image[j])
                        for j in range(log_p.shape[1])]
    image_to_caption = [first_correct_rank(normalized[i, :], caption_image == i)
                        for i in image_rows]
    return {"caption_to_image": rank_summary(caption_to_image, recall_at),
            "image_to_caption": rank_summary(image_to_caption, recall_at)}


def load_score_matrix(path):
    """Read log_p and caption_image from an .npz file; DataError names the file."""
    try:
        with np.load(path) as archive:
            missing = [key for key in ("log_p", "caption_image") if key not in archive]
            if missing:
                raise DataError("%s: missing array(s) %s (need log_p, images x captions, and "
                                "caption_image)" % (path, ", ".join(missing)))
            return archive["log_p"], archive["caption_image"]
    except FileNotFoundError:
        raise DataError("%s: no such file" % path) from None
    except (OSError, ValueError) as error:
        raise DataError("%s: not a readable .npz file: %s" % (path, error)) from None


# ---------------------------------------------------------------------------- output

def format_table(report):
    lines = []
    captions = report.get("captions")
    if captions:
        lines.append("caption metrics (%d images, %s tokenizer, scores x 100)"
                     % (captions["images"], captions["tokenizer"].upper()))
        for metric in CAPTION_METRICS:
            value = captions["scores"].get(metric)
            shown = "%7.2f" % (100 * value) if value is not None else "    n/a"
            lines.append("  %-8s %s" % (DISPLAY_NAMES[metric], shown))
    retrieval = report.get("retrieval")
    if retrieval:
        recall_keys = [key for key in retrieval["caption_to_image"] if key.startswith("R@")]
        lines.append("retrieval (%d images, %d captions, recall in %%)"
                     % (retrieval["image_to_caption"]["queries"],
                        retrieval["caption_to_image"]["queries"]))
        lines.append("  %-15s" % "" + "".join("%7s" % key for key in recall_keys)
                     + "  median rank")
        for direction, label in (("caption_to_image", "caption->image"),
                                 ("image_to_caption", "image->caption")):
            values = retrieval[direction]
            lines.append("  %-15s" % label
                         + "".join("%7.1f" % (100 * values[key]) for key in recall_keys)
                         + "  %11g" % values["median_rank"])
    for note in report.get("notes", []):
        lines.append("note: " + note)
    return "\n".join(lines)


def write_json(path, report):
    """Write atomically, so a failed write leaves no half file."""
    write_text_atomically(path, json.dumps(report, indent=1, sort_keys=True) + "\n")


# ---------------------------------------------------------------------------- main

def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Score generated captions (BLEU-1..4, METEOR, ROUGE-L, CIDEr with "
                    "pycocoevalcap) and/or LRCN's retrieval metrics from a score matrix.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", metavar="JSON",
                        help="generated captions, COCO results format "
                             "[{\"image_id\": ..., \"caption\": ...}]")
    parser.add_argument("--annotations", metavar="JSON",
                        help="reference captions, COCO caption annotation format")
    parser.add_argument("--tokenizer", choices=("auto", "ptb", "lrcn"), default="auto",
                        help="ptb (needs Java), lrcn, or auto: ptb when Java is found "
                             "(default %(default)s)")
    parser.add_argument("--no-meteor", action="store_true", help="skip METEOR")
    parser.add_argument("--scores", metavar="NPZ",
                        help="retrieval: .npz with log_p (images x captions, log p(caption "
                             "| image)) and caption_image (image row of each caption)")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    return parser


def run(args):
    notes = []
    report = {"notes": notes}
    if args.results:
        caption_set = load_caption_set(args.annotations)
        references = {image_id: captions for image_id, captions
                      in caption_set.captions_by_image().items() if captions}
        results = load_results(args.results, references)
        missing = len(references) - len(results)
        if missing:
            notes.append("%d annotated image(s) have no result caption and are not scored"
                         % missing)
        scores, used = evaluate_captions(references, results, args.tokenizer,
                                         meteor=not args.no_meteor, notes=notes)
        if args.no_meteor:
            notes.append("METEOR skipped: --no-meteor")
        report["captions"] = {"images": len(results), "tokenizer": used, "scores": scores}
    if args.scores:
        log_p, caption_image = load_score_matrix(args.scores)
        try:
            report["retrieval"] = retrieval_metrics(log_p, caption_image)
        except ValueError as error:
            raise DataError("%s: %s" % (args.scores, error)) from None
    return report


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if bool(args.results) != bool(args.annotations):
        parser.error("--results and --annotations go together")
    if not args.results and not args.scores:
        parser.error("nothing to evaluate: give --results and --annotations, or --scores")
    try:
        report = run(args)
        print(format_table(report))
        if args.json:
            try:
                write_json(args.json, report)
            except CompileError as error:
                raise DataError(str(error)) from None
    except (DataError, MissingExtra) as error:
        print("%s: error: %s" % (PROGRAM, error), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
