"""lrcn-caption-retrieval: LRCN's image <-> caption retrieval experiment with a trained
captioning net (JD examples/coco_caption/retrieval_experiment.py; reference section 2).

Every caption of a split is scored under every image of the split, log p(caption + EOS |
image), by forced decoding with the deploy net (lrcn_apps.caption.generate.Captioner.score, many
(caption, image) pairs per forward). The matrix goes to lrcn_apps.caption.metrics'
retrieval_metrics, which normalises each caption's scores by log mean_i p(c | i) and reports
R@1/5/10 and the median rank (1-indexed) in both directions.

Why a command of its own rather than a flag of lrcn-caption-eval: lrcn-caption-eval only reads
result files and needs no model (nor torch); this one runs the net. `--save-scores` writes the
matrix in the .npz form `lrcn-caption-eval --scores` reads, so the metrics can be recomputed
without the net.

Captions are encoded with LRCN's tokenizer and the vocabulary (out-of-vocabulary words become
<unk>), whole: no truncation to the training length.
"""

import argparse
import os
import sys

import numpy as np
import torch

from runtime import threads
from lrcn_apps.caption import metrics
from lrcn_apps.caption.coco import DataError, load_caption_set
from lrcn_apps.caption.generate import (ImageItem, add_model_arguments, captioner_from,
                                    check_positive)
from lrcn_apps.cli import run_reporting_errors

PROGRAM = "lrcn-caption-retrieval"
DEFAULT_BATCH_SIZE = 500

EXAMPLES = """\
examples:
  # retrieval on the shapes test split (80 images, 400 captions)
  lrcn-caption-retrieval --weights runs/caption/lrcn_caption_iter_2000.caffemodel \\
      --annotations data/caption_shapes/captions_test.json \\
      --image-root data/caption_shapes/images --save-scores test_scores.npz

  # the same metrics again from the saved matrix, without the net
  lrcn-caption-eval --scores test_scores.npz

exit status: 0 success, 1 a problem with an input file, 2 bad usage.
"""


class Split:
    """The images (ImageItems, file order) and captions of one annotation file, with
    caption_image[j] = the row of caption j's image."""

    def __init__(self, items, captions, caption_image, caption_ids):
        self.items = items
        self.captions = captions
        self.caption_image = np.asarray(caption_image, dtype=np.int64)
        self.caption_ids = caption_ids


def load_split(annotations, image_root=None, max_images=None, notes=None):
    """A COCO caption file -> Split; images without captions are left out (they could never
    be retrieved), with a note. `max_images` keeps the first images in file order."""
    notes = [] if notes is None else notes
    caption_set = load_caption_set(annotations)
    root = image_root if image_root is not None else os.path.dirname(annotations)
    by_image = caption_set.captions_by_image()
    image_ids = [image_id for image_id in caption_set.images if by_image[image_id]]
    if len(image_ids) < len(caption_set.images):
        notes.append("%d image(s) without captions left out"
                     % (len(caption_set.images) - len(image_ids)))
    if max_images is not None:
        image_ids = image_ids[:max_images]
    if not image_ids:
        raise DataError("%s: no captioned images to retrieve" % annotations)
    rows = {image_id: row for row, image_id in enumerate(image_ids)}
    items = [ImageItem(os.path.join(root, caption_set.images[image_id]["file_name"]), image_id)
             for image_id in image_ids]
    kept = [a for a in caption_set.annotations if a["image_id"] in rows]
    return Split(items, [a["caption"] for a in kept], [rows[a["image_id"]] for a in kept],
                 [a["id"] if a["id"] is not None else -1 for a in kept])


def image_features(captioner, items, batch_size):
    """(I, D) features of every image, `batch_size` images per forward."""
    chunks = [captioner.image_features(captioner.load_images(
        [item.path for item in items[start:start + batch_size]]))
        for start in range(0, len(items), batch_size)]
    return torch.cat(chunks)


def score_matrix(captioner, features, token_lists, batch_size):
    """log p(caption j | image i) for every pair: (I, C) float64.

    Pairs run `batch_size` per forward; captions go in order of length, so a batch's
    captions end at about the same step and few steps are spent on finished streams.
    """
    images = len(features)
    order = sorted(range(len(token_lists)), key=lambda j: len(token_lists[j]))
    pairs = [(i, j) for j in order for i in range(images)]
    log_p = np.empty((images, len(token_lists)), dtype=np.float64)
    for start in range(0, len(pairs), batch_size):
        rows, columns = zip(*pairs[start:start + batch_size])
        scores = captioner.score(features[list(rows)], [token_lists[j] for j in columns])
        log_p[list(rows), list(columns)] = scores
    return log_p


def evaluate(captioner, split, batch_size, notes=None):
    """The retrieval report of one Split: {"retrieval": ..., "notes": [...], "log_p": ...}."""
    notes = [] if notes is None else notes
    token_lists = [captioner.vocabulary.encode(caption) for caption in split.captions]
    features = image_features(captioner, split.items, batch_size)
    log_p = score_matrix(captioner, features, token_lists, batch_size)
    return {"retrieval": metrics.retrieval_metrics(log_p, split.caption_image),
            "notes": notes, "log_p": log_p}


def save_scores(path, log_p, split):
    """The .npz `lrcn-caption-eval --scores` reads (log_p, caption_image), plus the ids."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise DataError("%s: cannot write: no folder %s" % (path, directory))
    try:
        with open(path, "wb") as handle:
            np.savez(handle, log_p=log_p, caption_image=split.caption_image,
                     image_ids=np.array([item.image_id for item in split.items]),
                     caption_ids=np.array(split.caption_ids, dtype=np.int64))
    except OSError as error:
        raise DataError("%s: cannot write: %s" % (path, error.strerror or error)) from None


def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROGRAM, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="LRCN's retrieval experiment: score every caption of a split under every "
                    "image with a trained captioning net, report R@1/5/10 and median rank.")
    add_model_arguments(parser)
    data = parser.add_argument_group("data")
    data.add_argument("--annotations", required=True, metavar="JSON",
                      help="COCO caption annotations of the split (images and captions)")
    data.add_argument("--image-root", metavar="DIR",
                      help="folder of the images' file_name paths (default: the JSON's folder)")
    data.add_argument("--max-images", type=int, metavar="M",
                      help="only the first M captioned images and their captions")
    data.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="B",
                      help="(caption, image) pairs, or images, per forward "
                           "(default %(default)s)")
    output = parser.add_argument_group("output")
    output.add_argument("--json", metavar="FILE", help="also write the metrics as JSON")
    output.add_argument("--save-scores", metavar="NPZ",
                        help="write the score matrix for lrcn-caption-eval --scores")
    threads.add_argument(parser)
    return parser


def run(args):
    notes = []
    split = load_split(args.annotations, args.image_root, args.max_images, notes)
    captioner = captioner_from(args, PROGRAM)
    report = evaluate(captioner, split, args.batch_size, notes)
    log_p = report.pop("log_p")
    if args.save_scores:
        save_scores(args.save_scores, log_p, split)
    print(metrics.format_table(report))
    if args.json:
        try:
            metrics.write_json(args.json, report)
        except OSError as error:
            raise DataError("%s: cannot write: %s" % (args.json, error.strerror or error)) \
                from None


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    check_positive(parser, args, ("batch_size", "max_images"))
    threads.configure(args.threads)
    return run_reporting_errors(PROGRAM, run, args)


if __name__ == "__main__":
    sys.exit(main())
