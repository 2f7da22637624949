"""lrcn-caption-data: COCO-format captions -> LRCN's vocabulary and HDF5 sentence streams.

What it writes into --out (folder names as in JD examples/coco_caption/h5_data/buffer_100/,
so LRCN's nets need only their paths changed):

    vocabulary.txt                          one word per line, <unk> first (lrcn_apps.caption.text)
    <split>_aligned_<T>_batches/            for every split
        batch_<k>.h5                        cont_sentence / input_sentence / target_sentence
        hdf5_chunk_list.txt                 HDF5Data source (batch_size: T)
        image_list.with_dummy_labels.txt    ImageData source (batch_size: N, no shuffle)
    <split>_unaligned_batches/              with --unaligned (language-model pre-training)
        batch_<k>.h5, hdf5_chunk_list.txt
    <split>_references.json                 the split's captions in COCO format (evaluation)
    summary.json                            T, N, vocabulary size, counts per split

The stream layout is described in lrcn_apps.caption.streams. Paths inside the list files are
written as given on the command line (--out and --images), so relative paths resolve from the
directory this command ran in, which is where Caffe (or the runtime) must run as well.

Everything is written into a temporary folder beside --out and moved into place at the end,
so a failed run leaves no partial output.
"""

import argparse
import json
import os
import random
import re
import shutil
import sys
import tempfile

from lrcn_apps.caption import streams
from lrcn_apps.caption.coco import DataError, load_caption_set, reference_document
from lrcn_apps.caption.text import DEFAULT_MIN_COUNT, Vocabulary, VocabularyError, \
    build_vocabulary, tokenize
from lrcn_apps.cli import run_reporting_errors

PROGRAM = "lrcn-caption-data"
SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# random.seed(3) is what coco_to_hdf5_data.py used.
DEFAULT_SEED = 3

EXAMPLES = """\
examples:
  # the synthetic shapes dataset (one annotation file per split), from the repository root
  python -m lrcn_apps.caption.prepare \\
      --captions train=data/caption_shapes/captions_train.json \\
      --captions val=data/caption_shapes/captions_val.json \\
      --captions test=data/caption_shapes/captions_test.json \\
      --images data/caption_shapes/images \\
      --max-words 16 --streams 50 --unaligned --out prepared_shapes

  # COCO 2014 with LRCN's split id files (val and test are both drawn from val2014)
  lrcn-caption-data \\
      --captions data/coco/annotations/captions_train2014.json \\
      --images data/coco/images/train2014 \\
      --captions data/coco/annotations/captions_val2014.json \\
      --images data/coco/images/val2014 \\
      --split-ids train=data/coco/coco2014_cocoid.train.txt \\
      --split-ids val=data/coco/coco2014_cocoid.val.txt \\
      --split-ids test=data/coco/coco2014_cocoid.test.txt \\
      --unaligned --out data/coco/h5_data/buffer_100

  # one annotation file split at random (seeded) into 80/10/10 percent
  lrcn-caption-data --captions captions.json --images images \\
      --split train=0.8,val=0.1,test=0.1 --out prepared

exit status: 0 success, 1 a problem with an input file or the output folder, 2 bad usage.
"""


class Source:
    """One --captions file, the split its images go to (or None) and its image folder."""

    def __init__(self, split, path, image_root):
        self.split = split
        self.path = path
        self.image_root = image_root


class ImageEntry:
    """An image of some annotation file, with its resolved path and its captions."""

    def __init__(self, image_id, record, path, source, index):
        self.image_id = image_id
        self.record = record
        self.path = path
        self.source = source
        self.index = index
        self.annotations = []

    def where(self):
        return "%s: images[%d] (image id %d)" % (self.source.path, self.index, self.image_id)


# ---------------------------------------------------------------------------- command line

def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Turn captions in COCO's annotation format into LRCN's vocabulary, "
                    "HDF5 sentence streams, ImageData lists and reference JSON files.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    inputs = parser.add_argument_group("inputs")
    inputs.add_argument("--captions", action="append", required=True, metavar="[SPLIT=]JSON",
                        help="COCO caption annotation file (repeatable); with SPLIT= all its "
                             "images form (part of) that split")
    inputs.add_argument("--images", action="append", required=True, metavar="DIR",
                        help="folder holding the images' file_name paths: one for all "
                             "--captions files, or one per --captions file in order")
    inputs.add_argument("--split-ids", action="append", default=[], metavar="SPLIT=FILE",
                        help="file with one image id per line forming SPLIT (repeatable)")
    inputs.add_argument("--split", metavar="SPLIT=FRACTION,...",
                        help="split all images at random, e.g. train=0.8,val=0.1,test=0.1")
    inputs.add_argument("--vocab", metavar="FILE",
                        help="use this vocabulary file instead of building one from 'train'")
    inputs.add_argument("--allow-missing-images", action="store_true",
                        help="skip images whose file is missing, with a warning (as the "
                             "original did), instead of stopping")
    layout = parser.add_argument_group("stream layout")
    layout.add_argument("--max-words", type=int, default=streams.DEFAULT_MAX_WORDS,
                        metavar="T", help="time steps per sentence and per batch "
                                          "(default %(default)s)")
    layout.add_argument("--streams", type=int, default=streams.DEFAULT_NUM_STREAMS,
                        metavar="N", help="parallel streams = sentences per batch "
                                          "(default %(default)s)")
    layout.add_argument("--min-count", type=int, default=DEFAULT_MIN_COUNT,
                        help="keep train words seen at least this often (default %(default)s)")
    layout.add_argument("--batches-per-file", type=int,
                        default=streams.DEFAULT_BATCHES_PER_FILE,
                        help="T x N batches per .h5 file (default %(default)s)")
    layout.add_argument("--unaligned", action="store_true",
                        help="also write unaligned streams for language-model training")
    layout.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help="seed for shuffling, duplicates and --split (default %(default)s)")
    layout.add_argument("--no-shuffle", action="store_true",
                        help="keep the pairs in file order (image order, then caption order)")
    layout.add_argument("--no-compression", action="store_true",
                        help="store the HDF5 datasets uncompressed (default: gzip)")
    output = parser.add_argument_group("output")
    output.add_argument("--out", required=True, metavar="DIR", help="output folder")
    output.add_argument("--overwrite", action="store_true",
                        help="replace --out if it exists (only once all outputs are written)")
    return parser


def parse_arguments(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    for option in ("max_words", "streams", "min_count", "batches_per_file"):
        if getattr(args, option) < 1:
            parser.error("--%s must be at least 1" % option.replace("_", "-"))
    if len(args.images) not in (1, len(args.captions)):
        parser.error("give --images once, or once per --captions (%d), not %d times"
                     % (len(args.captions), len(args.images)))
    args.sources = _sources(parser, args)
    args.split_ids = _split_id_files(parser, args.split_ids)
    args.split = _split_rule(parser, args.split) if args.split else None
    prefixed = [source for source in args.sources if source.split is not None]
    mechanisms = sum([bool(prefixed), bool(args.split_ids), args.split is not None])
    if mechanisms != 1:
        parser.error("say how images are split in exactly one way: SPLIT=JSON on every "
                     "--captions, --split-ids SPLIT=FILE, or --split SPLIT=FRACTION,...")
    if prefixed and len(prefixed) != len(args.sources):
        parser.error("either every --captions has a SPLIT= prefix or none has")
    split_names = set(source.split for source in prefixed) | set(args.split_ids) | \
        set(name for name, _ in (args.split or []))
    if "train" not in split_names and args.vocab is None:
        parser.error("the vocabulary is built from the 'train' split: add a train split or "
                     "pass --vocab FILE")
    return args


def _sources(parser, args):
    sources = []
    for index, spec in enumerate(args.captions):
        split, path = None, spec
        prefix, equals, rest = spec.partition("=")
        if equals and SPLIT_NAME.match(prefix):
            split, path = prefix, rest
        if not path:
            parser.error("--captions %r names no file" % spec)
        image_root = args.images[index] if len(args.images) > 1 else args.images[0]
        sources.append(Source(split, path, image_root))
    return sources


def _split_id_files(parser, specs):
    files = {}
    for spec in specs:
        name, equals, path = spec.partition("=")
        if not equals or not SPLIT_NAME.match(name) or not path:
            parser.error("--split-ids wants SPLIT=FILE, got %r" % spec)
        if name in files:
            parser.error("--split-ids names split %r twice" % name)
        files[name] = path
    return files


def _split_rule(parser, rule):
    parts = []
    for item in rule.split(","):
        name, equals, fraction = item.partition("=")
        try:
            value = float(fraction)
        except ValueError:
            value = -1.0
        if not equals or not SPLIT_NAME.match(name) or not 0.0 < value <= 1.0:
            parser.error("--split wants SPLIT=FRACTION,... with fractions in (0, 1], got %r"
                         % rule)
        if name in (existing for existing, _ in parts):
            parser.error("--split names split %r twice" % name)
        parts.append((name, value))
    if sum(value for _, value in parts) > 1.0 + 1e-9:
        parser.error("--split fractions add up to more than 1: %r" % rule)
    return parts


# ---------------------------------------------------------------------------- inputs

def load_images(sources):
    """image id -> ImageEntry over all --captions files (ids must be unique across them)."""
    images = {}
    for source in sources:
        caption_set = load_caption_set(source.path)
        for index, (image_id, record) in enumerate(caption_set.images.items()):
            if image_id in images:
                raise DataError("%s: images[%d]: image id %d is also in %s"
                                % (source.path, index, image_id, images[image_id].source.path))
            path = os.path.normpath(os.path.join(source.image_root, record["file_name"]))
            images[image_id] = ImageEntry(image_id, record, path, source, index)
        for annotation in caption_set.annotations:
            images[annotation["image_id"]].annotations.append(annotation)
    return images


def read_split_ids(path, images):
    """Image ids of one split file, in file order."""
    try:
        with open(path, encoding="utf-8") as id_file:
            lines = id_file.read().splitlines()
    except FileNotFoundError:
        raise DataError("%s: no such file" % path) from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError("%s: cannot read: %s" % (path, error)) from None
    ids, seen = [], {}
    for line_number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        try:
            image_id = int(text)
        except ValueError:
            raise DataError("%s:%d: not an image id: %r" % (path, line_number, text)) from None
        if image_id not in images:
            raise DataError("%s:%d: image id %d is not in any --captions file"
                            % (path, line_number, image_id))
        if image_id in seen:
            raise DataError("%s:%d: image id %d is already on line %d"
                            % (path, line_number, image_id, seen[image_id]))
        seen[image_id] = line_number
        ids.append(image_id)
    return ids


def assign_splits(args, images):
    """split name -> image ids in split order."""
    if args.split_ids:
        return {name: read_split_ids(path, images) for name, path in args.split_ids.items()}
    if args.split is not None:
        return random_splits(sorted(images), args.split, args.seed)
    splits = {}
    for image_id, entry in images.items():
        splits.setdefault(entry.source.split, []).append(image_id)
    for source in args.sources:
        splits.setdefault(source.split, [])
    return splits


def random_splits(image_ids, fractions, seed):
    """Cut a seeded shuffle of the ids at the cumulative fractions."""
    order = list(image_ids)
    random.Random("%d/split" % seed).shuffle(order)
    splits, start, cumulative = {}, 0, 0.0
    for name, fraction in fractions:
        cumulative += fraction
        end = min(len(order), int(round(cumulative * len(order))))
        splits[name] = order[start:end]
        start = end
    return splits


def drop_missing_images(splits, images, allow_missing):
    """Stop at the first image file that does not exist, or skip them with a warning."""
    checked = {}
    for name, ids in splits.items():
        kept = []
        for image_id in ids:
            entry = images[image_id]
            if image_id not in checked:
                checked[image_id] = os.path.isfile(entry.path)
            if checked[image_id]:
                kept.append(image_id)
            elif allow_missing:
                warn("%s: image file not found, skipped: %s" % (entry.where(), entry.path))
            else:
                raise DataError("%s: image file not found (%s); pass --allow-missing-images "
                                "to skip such images" % (entry.path, entry.where()))
        splits[name] = kept
    return splits


def tokenized_captions(entry):
    """(annotation, tokens) of an image; a caption without words is an input error."""
    pairs = []
    for annotation in entry.annotations:
        tokens = tokenize(annotation["caption"])
        if not tokens:
            raise DataError("%s: annotations[%d] (image id %d): the caption has no words: %r"
                            % (entry.source.path, annotation["index"], entry.image_id,
                               annotation["caption"]))
        pairs.append((annotation, tokens))
    return pairs


def choose_vocabulary(args, split_pairs):
    if args.vocab is not None:
        try:
            return Vocabulary.load(args.vocab)
        except FileNotFoundError:
            raise DataError("%s: no such file" % args.vocab) from None
        except (VocabularyError, OSError, UnicodeDecodeError) as error:
            raise DataError(str(error)) from None
    return build_vocabulary((tokens for _, _, tokens in split_pairs["train"]),
                            min_count=args.min_count)


# ---------------------------------------------------------------------------- outputs

def split_rng(seed, split, layout):
    # A string seed is hashed the same way by every Python 3, so outputs are reproducible.
    return random.Random("%d/%s/%s" % (seed, split, layout))


def listed_path(*parts):
    """A path as it will be written into a list file (relative stays relative, '/')."""
    return os.path.normpath(os.path.join(*parts)).replace(os.sep, "/")


def write_aligned_split(name, pairs, vocabulary, args, work_dir):
    folder = "%s_aligned_%d_batches" % (name, args.max_words)
    os.makedirs(os.path.join(work_dir, folder))
    arranged, duplicates = streams.arrange_aligned(
        pairs, args.streams, split_rng(args.seed, name, "aligned"), shuffle=not args.no_shuffle)
    sentences = [vocabulary.encode_tokens(tokens) for _, _, tokens in arranged]
    packed = streams.pack_aligned(sentences, args.streams, args.max_words)
    files = streams.write_hdf5_streams(
        packed, os.path.join(work_dir, folder), listed_path(args.out, folder),
        args.batches_per_file, compression=None if args.no_compression else "gzip")
    streams.write_image_list(os.path.join(work_dir, folder, streams.IMAGE_LIST_NAME),
                             [entry.path.replace(os.sep, "/") for entry, _, _ in arranged])
    return {"folder": folder, "batches": packed.num_batches, "files": len(files),
            "duplicates": duplicates,
            "truncated": sum(len(sentence) + 1 > args.max_words for sentence in sentences)}


def write_unaligned_split(name, pairs, vocabulary, args, work_dir):
    folder = "%s_unaligned_batches" % name
    os.makedirs(os.path.join(work_dir, folder))
    arranged = streams.arrange_unaligned(pairs, split_rng(args.seed, name, "unaligned"),
                                         shuffle=not args.no_shuffle)
    sentences = [vocabulary.encode_tokens(tokens) for _, _, tokens in arranged]
    packed = streams.pack_unaligned(sentences, args.streams, args.max_words)
    files = streams.write_hdf5_streams(
        packed, os.path.join(work_dir, folder), listed_path(args.out, folder),
        args.batches_per_file, compression=None if args.no_compression else "gzip")
    return {"folder": folder, "batches": packed.num_batches, "files": len(files)}


def write_references(name, image_ids, images, work_dir):
    entries = [images[image_id] for image_id in image_ids]
    annotations = [annotation for entry in entries for annotation in entry.annotations]
    document = reference_document([entry.record for entry in entries], annotations,
                                  "LRCN caption references, split %s" % name)
    file_name = "%s_references.json" % name
    with open(os.path.join(work_dir, file_name), "w", encoding="utf-8") as json_file:
        json.dump(document, json_file, ensure_ascii=False, separators=(",", ":"))
    return file_name


def write_everything(args, splits, images, split_pairs, vocabulary, work_dir):
    vocabulary.save(os.path.join(work_dir, "vocabulary.txt"))
    summary = {"max_words": args.max_words, "num_streams": args.streams,
               "vocabulary_words": len(vocabulary), "net_vocabulary_size": vocabulary.net_size,
               "min_count": None if args.vocab else args.min_count, "seed": args.seed,
               "shuffled": not args.no_shuffle, "splits": {}}
    for name, image_ids in splits.items():
        pairs = split_pairs[name]
        split_summary = {"images": len(image_ids), "captions": len(pairs),
                         "references": write_references(name, image_ids, images, work_dir)}
        if pairs:
            split_summary["aligned"] = write_aligned_split(name, pairs, vocabulary, args,
                                                           work_dir)
            if args.unaligned:
                split_summary["unaligned"] = write_unaligned_split(name, pairs, vocabulary,
                                                                   args, work_dir)
        summary["splits"][name] = split_summary
        report_split(name, split_summary, args)
    with open(os.path.join(work_dir, "summary.json"), "w", encoding="utf-8") as json_file:
        json.dump(summary, json_file, indent=1, sort_keys=True)
        json_file.write("\n")
    return summary


def report_split(name, summary, args):
    line = "%s: %d images, %d captions" % (name, summary["images"], summary["captions"])
    aligned = summary.get("aligned")
    if aligned:
        line += ("; aligned: %d batches of T x N = %d x %d in %d file(s), %d duplicate "
                 "pair(s) added, %d sentence(s) truncated"
                 % (aligned["batches"], args.max_words, args.streams, aligned["files"],
                    aligned["duplicates"], aligned["truncated"]))
    if "unaligned" in summary:
        line += "; unaligned: %d batches" % summary["unaligned"]["batches"]
    print(line, flush=True)


def publish_atomically(out_dir, overwrite, write_into):
    """Run ``write_into(temp_dir)`` on a fresh folder beside ``out_dir``, then move it to
    ``out_dir``; on any failure the temporary folder is removed and ``out_dir`` untouched (an
    OSError becomes one DataError naming ``out_dir``)."""
    out_dir = os.path.normpath(out_dir)
    if os.path.exists(out_dir) and not overwrite:
        raise DataError("%s: already exists; pass --overwrite to replace it" % out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise DataError("%s: exists and is not a folder" % out_dir)
    parent = os.path.dirname(os.path.abspath(out_dir))
    try:
        os.makedirs(parent, exist_ok=True)
        temp_dir = tempfile.mkdtemp(prefix=".%s.tmp-" % os.path.basename(out_dir), dir=parent)
    except OSError as error:
        raise DataError("%s: cannot create the output folder: %s" % (out_dir, error)) from None
    try:
        # mkdtemp makes a private (0700) folder; give the result the usual permissions.
        os.chmod(temp_dir, 0o777 & ~current_umask())
        result = write_into(temp_dir)
        if os.path.exists(out_dir):
            old_dir = temp_dir + ".old"
            os.rename(out_dir, old_dir)
            os.rename(temp_dir, out_dir)
            shutil.rmtree(old_dir)
        else:
            os.rename(temp_dir, out_dir)
        return result
    except OSError as error:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise DataError("%s: cannot write the outputs: %s" % (out_dir, error)) from None
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def warn(message):
    print("%s: warning: %s" % (PROGRAM, message), file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- main

def run(args):
    images = load_images(args.sources)
    splits = assign_splits(args, images)
    splits = drop_missing_images(splits, images, args.allow_missing_images)
    split_pairs = {}
    for name, image_ids in splits.items():
        pairs = []
        for image_id in image_ids:
            entry = images[image_id]
            if not entry.annotations:
                warn("%s: image has no captions" % entry.where())
            pairs.extend((entry, annotation, tokens)
                         for annotation, tokens in tokenized_captions(entry))
        split_pairs[name] = pairs
        if not image_ids:
            warn("split %r has no images" % name)
    vocabulary = choose_vocabulary(args, split_pairs)
    print("vocabulary: %d words (<unk> included); nets use %d indices (EOS = 0)"
          % (len(vocabulary), vocabulary.net_size), flush=True)
    publish_atomically(
        args.out, args.overwrite,
        lambda work_dir: write_everything(args, splits, images, split_pairs, vocabulary, work_dir))
    print("wrote %s" % args.out)


def main(argv=None):
    args = parse_arguments(argv)
    return run_reporting_errors(PROGRAM, run, args)


if __name__ == "__main__":
    sys.exit(main())
