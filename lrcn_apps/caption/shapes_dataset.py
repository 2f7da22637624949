"""A small synthetic captioning dataset whose captions depend on what is in each image.

Every image is 32 x 32 RGB on a black or gray background and holds one object (70 %) or two
objects side by side or one above the other (30 %). An object has a shape (circle, square,
triangle, cross), a color (red, green, blue, yellow, purple), a size (small, large) and, when
alone, a position (left, right, top, bottom, center). Each image has 5 captions drawn from
different sentence templates with varied wording, e.g.::

    a large red circle on the left.
    There is a little blue square near the top
    On the right side, a small cross colored green.
    a small yellow triangle to the left of a big purple circle.

A captioner that ignores the image can at best guess the attribute words, so the dataset
tells a model that looks at the image from one that does not.

Determinism: everything follows from --seed through one ``random.Random`` and a pure-numpy
rasterizer (shapes are drawn at 4 x 4 supersampling and averaged, no Pillow drawing code),
so the PNG pixels and the JSON files do not depend on the Pillow version. Pillow only writes
the PNG files. tests/caption/test_shapes_dataset.py regenerates the dataset and compares.

Output (COCO caption format, image ids unique over the splits)::

    <out>/images/<split>_<image id:06d>.png
    <out>/captions_train.json, captions_val.json, captions_test.json
"""

import argparse
import collections
import json
import os
import random
import shutil
import sys
import tempfile

import numpy as np
from PIL import Image

from lrcn_apps.caption.text import tokenize

IMAGE_SIZE = 32
SUPERSAMPLE = 4
DEFAULT_SEED = 0
DEFAULT_SPLITS = (("train", 500), ("val", 80), ("test", 80))
CAPTIONS_PER_IMAGE = 5
TWO_OBJECT_PROBABILITY = 0.3
CAPITALIZE_PROBABILITY = 0.5

SHAPES = ("circle", "square", "triangle", "cross")
COLORS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 90, 230),
          "yellow": (235, 215, 40), "purple": (150, 60, 200)}
BACKGROUNDS = {"black": (0, 0, 0), "gray": (120, 120, 120)}
RADII = {"small": 4.0, "large": 7.0}
SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
CENTERS = {"left": (8.0, 16.0), "right": (24.0, 16.0), "top": (16.0, 8.0),
           "bottom": (16.0, 24.0), "center": (16.0, 16.0)}
POSITION_PHRASES = {"left": ("on the left", "on the left side"),
                    "right": ("on the right", "on the right side"),
                    "top": ("at the top", "near the top"),
                    "bottom": ("at the bottom", "near the bottom"),
                    "center": ("in the center", "in the middle")}
JITTER = 2.0  # pixels a lone object may move from its position's center
PAIR_JITTER = 6.0  # pixels a pair may move along the axis they do not split

ONE_OBJECT_TEMPLATES = (
    "a {size} {color} {shape} {position}.",
    "there is a {size} {color} {shape} {position}",
    "a {color} {shape} {position} of the image.",
    "{position}, a {size} {shape} colored {color}.",
    "the {shape} is {size} and {color}",
    "a {size} {shape} in {color} on a {background} background.",
    "a picture of a {color} {shape} {position}.",
    "one {size} {color} {shape} {position} on a {background} background.",
)
TWO_OBJECT_TEMPLATES = (
    "a {a_size} {a_color} {a_shape} {relation} a {b_size} {b_color} {b_shape}.",
    "a {a_color} {a_shape} and a {b_color} {b_shape}",
    "there are two shapes: a {a_color} {a_shape} and a {b_color} {b_shape}.",
    "a {b_size} {b_color} {b_shape} {inverse_relation} a {a_size} {a_color} {a_shape}.",
    "two objects, a {a_size} {a_color} {a_shape} and a {b_size} {b_color} {b_shape}.",
    "a {a_color} {a_shape} {a_position} and a {b_color} {b_shape} {b_position}.",
    "two shapes on a {background} background: a {a_color} {a_shape} and a {b_color} "
    "{b_shape}.",
)
ARRANGEMENTS = {  # first object (left / top), second object, and the words relating them
    "horizontal": {"positions": ("left", "right"), "relation": "to the left of",
                   "inverse_relation": "to the right of"},
    "vertical": {"positions": ("top", "bottom"), "relation": "above",
                 "inverse_relation": "below"},
}


# ---------------------------------------------------------------------------- drawing

def _subpixel_grid():
    # Centers of the supersampled pixels, in pixel units (pixel i covers [i, i + 1)).
    coordinates = (np.arange(IMAGE_SIZE * SUPERSAMPLE) + 0.5) / SUPERSAMPLE
    return np.meshgrid(coordinates, coordinates)  # x varies along columns, y along rows


def shape_mask(shape, center_x, center_y, radius):
    """Boolean supersampled mask of a shape of 'radius' (half its width) at a center."""
    x, y = _subpixel_grid()
    dx, dy = x - center_x, y - center_y
    if shape == "circle":
        return dx * dx + dy * dy <= radius * radius
    if shape == "square":
        # 0.85 r gives the square about the circle's area, so size reads the same way.
        half = 0.85 * radius
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if shape == "triangle":
        # Apex up; base 0.75 r below the center; inside = below both slanted edges.
        top, base = -radius, 0.75 * radius
        slope = (base - top) / radius
        return (dy <= base) & (dy >= top + slope * np.abs(dx))
    if shape == "cross":
        arm = 0.35 * radius
        return ((np.abs(dx) <= radius) & (np.abs(dy) <= arm)) | \
            ((np.abs(dy) <= radius) & (np.abs(dx) <= arm))
    raise ValueError("unknown shape %r" % shape)


def coverage(mask):
    """Fraction of each pixel covered by a supersampled mask."""
    blocks = mask.reshape(IMAGE_SIZE, SUPERSAMPLE, IMAGE_SIZE, SUPERSAMPLE)
    return blocks.mean(axis=(1, 3))


def render(scene):
    """uint8 (32, 32, 3) image of a scene (see ``random_scene``)."""
    image = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.float64)
    image[:] = BACKGROUNDS[scene["background"]]
    for item in scene["objects"]:
        alpha = coverage(shape_mask(item["shape"], item["x"], item["y"],
                                    RADII[item["size"]]))[:, :, None]
        image = image * (1.0 - alpha) + np.array(COLORS[item["color"]], np.float64) * alpha
    return np.rint(image).astype(np.uint8)


# ---------------------------------------------------------------------------- scenes

def _clamped(value, radius):
    # Keep the whole object inside the image.
    return min(max(value, radius + 0.5), IMAGE_SIZE - 0.5 - radius)


def _random_object(rng):
    return {"shape": rng.choice(SHAPES), "color": rng.choice(sorted(COLORS)),
            "size": rng.choice(sorted(RADII))}


def _one_object_scene(rng):
    item = _random_object(rng)
    item["position"] = rng.choice(sorted(CENTERS))
    center_x, center_y = CENTERS[item["position"]]
    radius = RADII[item["size"]]
    item["x"] = round(_clamped(center_x + rng.uniform(-JITTER, JITTER), radius), 3)
    item["y"] = round(_clamped(center_y + rng.uniform(-JITTER, JITTER), radius), 3)
    return [item]


def _two_object_scene(rng):
    arrangement = rng.choice(sorted(ARRANGEMENTS))
    first = _random_object(rng)
    second = _random_object(rng)
    while (second["shape"], second["color"]) == (first["shape"], first["color"]):
        second = _random_object(rng)  # two identical objects would make captions ambiguous
    for item, position in zip((first, second), ARRANGEMENTS[arrangement]["positions"]):
        item["position"] = position
        center_x, center_y = CENTERS[position]
        radius = RADII[item["size"]]
        shift = rng.uniform(-PAIR_JITTER, PAIR_JITTER)
        if arrangement == "horizontal":
            center_y += shift
        else:
            center_x += shift
        item["x"] = round(_clamped(center_x, radius), 3)
        item["y"] = round(_clamped(center_y, radius), 3)
    return [first, second], arrangement


def random_scene(rng):
    """A scene dict: background, arrangement ("single", "horizontal", "vertical"), objects."""
    background = rng.choice(sorted(BACKGROUNDS))
    if rng.random() < TWO_OBJECT_PROBABILITY:
        objects, arrangement = _two_object_scene(rng)
    else:
        objects, arrangement = _one_object_scene(rng), "single"
    return {"background": background, "arrangement": arrangement, "objects": objects}


# ---------------------------------------------------------------------------- captions

def _object_words(rng, item, prefix=""):
    return {prefix + "size": rng.choice(SIZE_WORDS[item["size"]]),
            prefix + "color": item["color"], prefix + "shape": item["shape"],
            prefix + "position": rng.choice(POSITION_PHRASES[item["position"]])}


def _caption_fields(rng, scene):
    if scene["arrangement"] == "single":
        fields = _object_words(rng, scene["objects"][0])
    else:
        first, second = scene["objects"]
        fields = _object_words(rng, first, "a_")
        fields.update(_object_words(rng, second, "b_"))
        fields.update(relation=ARRANGEMENTS[scene["arrangement"]]["relation"],
                      inverse_relation=ARRANGEMENTS[scene["arrangement"]]["inverse_relation"])
    fields["background"] = scene["background"]
    return fields


def scene_captions(rng, scene, count=CAPTIONS_PER_IMAGE):
    """``count`` captions from distinct templates, each with freshly drawn wording."""
    templates = ONE_OBJECT_TEMPLATES if scene["arrangement"] == "single" \
        else TWO_OBJECT_TEMPLATES
    captions = []
    for template in rng.sample(templates, count):
        caption = template.format(**_caption_fields(rng, scene))
        if rng.random() < CAPITALIZE_PROBABILITY:
            caption = caption[0].upper() + caption[1:]
        captions.append(caption)
    return captions


def template_words():
    """Every word the templates can produce (what the vocabulary must keep)."""
    placeholder = "x"  # not a word of any template; fills every field
    fields = collections.defaultdict(lambda: placeholder)
    texts = [template.format_map(fields)
             for template in ONE_OBJECT_TEMPLATES + TWO_OBJECT_TEMPLATES]
    texts += list(SHAPES) + list(COLORS) + list(BACKGROUNDS)
    texts += [word for words in SIZE_WORDS.values() for word in words]
    texts += [phrase for phrases in POSITION_PHRASES.values() for phrase in phrases]
    texts += [words[key] for words in ARRANGEMENTS.values()
              for key in ("relation", "inverse_relation")]
    words = set()
    for text in texts:
        words.update(tokenize(text))
    words.discard(placeholder)
    return words


# ---------------------------------------------------------------------------- dataset

def generate(out_dir, seed=DEFAULT_SEED, splits=DEFAULT_SPLITS):
    """Write images/ and captions_<split>.json into out_dir (which must exist)."""
    rng = random.Random(seed)
    image_dir = os.path.join(out_dir, "images")
    os.makedirs(image_dir, exist_ok=True)
    image_id, annotation_id = 0, 0
    counts = {}
    for split, num_images in splits:
        images, annotations = [], []
        for _ in range(num_images):
            image_id += 1
            scene = random_scene(rng)
            file_name = "%s_%06d.png" % (split, image_id)
            Image.fromarray(render(scene), "RGB").save(os.path.join(image_dir, file_name))
            images.append({"id": image_id, "file_name": file_name, "width": IMAGE_SIZE,
                           "height": IMAGE_SIZE, "scene": scene})
            for caption in scene_captions(rng, scene):
                annotation_id += 1
                annotations.append({"image_id": image_id, "id": annotation_id,
                                    "caption": caption})
        document = {"info": {"description": "LRCN synthetic shapes captions, split %s" % split,
                             "generator": "lrcn_apps.caption.shapes_dataset", "seed": seed},
                    "licenses": [], "type": "captions",
                    "images": images, "annotations": annotations}
        with open(os.path.join(out_dir, "captions_%s.json" % split), "w",
                  encoding="utf-8") as json_file:
            json.dump(document, json_file, separators=(",", ":"))
            json_file.write("\n")
        counts[split] = (len(images), len(annotations))
    return counts


def generated_names(splits):
    return ["images"] + ["captions_%s.json" % split for split, _ in splits]


def generate_in_place(out_dir, seed, splits, overwrite):
    """Generate into a temporary folder inside out_dir, then move the results into place,
    so an interrupted run leaves the previous dataset whole."""
    os.makedirs(out_dir, exist_ok=True)
    existing = [name for name in generated_names(splits)
                if os.path.exists(os.path.join(out_dir, name))]
    if existing and not overwrite:
        raise FileExistsError("%s already holds %s; pass --overwrite to replace"
                              % (out_dir, ", ".join(existing)))
    temp_dir = tempfile.mkdtemp(prefix=".shapes.tmp-", dir=out_dir)
    try:
        counts = generate(temp_dir, seed, splits)
        for name in generated_names(splits):
            target = os.path.join(out_dir, name)
            if os.path.isdir(target):
                shutil.rmtree(target)
            elif os.path.exists(target):
                os.remove(target)
            os.rename(os.path.join(temp_dir, name), target)
        return counts
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)


def _split_counts(text):
    splits = []
    for item in text.split(","):
        name, _, count = item.partition("=")
        splits.append((name, int(count)))
    return tuple(splits)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="lrcn-caption-shapes",
        description="Generate the synthetic shapes captioning dataset (COCO format).",
        epilog="example:\n  python -m lrcn_apps.caption.shapes_dataset --out data/caption_shapes "
               "--overwrite",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="dataset folder")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help="random seed (default %(default)s)")
    parser.add_argument("--splits", type=_split_counts,
                        default=DEFAULT_SPLITS, metavar="SPLIT=IMAGES,...",
                        help="images per split (default train=500,val=80,test=80)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace images/ and captions_*.json if present")
    args = parser.parse_args(argv)
    try:
        counts = generate_in_place(args.out, args.seed, args.splits, args.overwrite)
    except (FileExistsError, OSError) as error:
        print("lrcn-caption-shapes: error: %s" % error, file=sys.stderr)
        return 1
    for split, (num_images, num_captions) in counts.items():
        print("%s: %d images, %d captions" % (split, num_images, num_captions))
    return 0


if __name__ == "__main__":
    sys.exit(main())
