"""Reading and writing caption annotations in the COCO format, with errors that name the
file and the record.

Format (captions_*.json of COCO 2014)::

    {"images": [{"id": 42, "file_name": "COCO_val2014_000000000042.jpg", ...}, ...],
     "annotations": [{"image_id": 42, "id": 7, "caption": "A man riding a horse."}, ...]}

Results format (what a captioner writes for evaluation): ``[{"image_id": 42, "caption": "..."}]``.
"""

import json

# The image fields of COCO's annotation files; the references keep only these (a dataset's own
# extra fields, such as the shapes dataset's scene descriptions, are not needed to evaluate).
COCO_IMAGE_FIELDS = ("id", "file_name", "width", "height", "license", "coco_url",
                     "flickr_url", "date_captured")


class DataError(Exception):
    """A problem in a user's input file; the message names the file and the record."""


class CaptionSet:
    """One annotation file: ``images`` (id -> the image's dict as written, file order) and
    ``annotations`` (dicts with index (position in the file), image_id, caption, id or None).
    """

    def __init__(self, path, images, annotations):
        self.path = path
        self.images = images
        self.annotations = annotations

    def captions_by_image(self):
        """image id -> list of caption strings, every image present (possibly empty)."""
        captions = {image_id: [] for image_id in self.images}
        for annotation in self.annotations:
            captions[annotation["image_id"]].append(annotation["caption"])
        return captions


def load_json(path):
    """Parse a JSON file; DataError says which file and where the syntax breaks."""
    try:
        with open(path, encoding="utf-8") as json_file:
            return json.load(json_file)
    except FileNotFoundError:
        raise DataError("%s: no such file" % path) from None
    except json.JSONDecodeError as error:
        raise DataError("%s:%d:%d: not valid JSON: %s"
                        % (path, error.lineno, error.colno, error.msg)) from None
    except UnicodeDecodeError as error:
        raise DataError("%s: not UTF-8 text (%s)" % (path, error.reason)) from None
    except OSError as error:
        raise DataError("%s: cannot read: %s" % (path, error.strerror or error)) from None


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _require_list(document, key, path):
    if not isinstance(document, dict):
        raise DataError("%s: expected a JSON object with 'images' and 'annotations' (COCO "
                        "captions format), found %s" % (path, type(document).__name__))
    value = document.get(key)
    if not isinstance(value, list):
        raise DataError("%s: missing the list %r (COCO captions format)" % (path, key))
    return value


def _checked_image(record, index, path):
    where = "%s: images[%d]" % (path, index)
    if not isinstance(record, dict):
        raise DataError("%s: expected an object, found %s" % (where, type(record).__name__))
    if not _is_int(record.get("id")):
        raise DataError("%s: 'id' must be an integer image id, found %r"
                        % (where, record.get("id")))
    file_name = record.get("file_name")
    if not isinstance(file_name, str) or not file_name.strip():
        raise DataError("%s (image id %d): 'file_name' must be a non-empty string, found %r"
                        % (where, record["id"], file_name))
    return record


def _checked_annotation(record, index, path, images):
    where = "%s: annotations[%d]" % (path, index)
    if not isinstance(record, dict):
        raise DataError("%s: expected an object, found %s" % (where, type(record).__name__))
    image_id = record.get("image_id")
    if not _is_int(image_id):
        raise DataError("%s: 'image_id' must be an integer, found %r" % (where, image_id))
    if image_id not in images:
        raise DataError("%s: image id %d is not listed in 'images'" % (where, image_id))
    if not isinstance(record.get("caption"), str):
        raise DataError("%s (image id %d): 'caption' must be a string, found %r"
                        % (where, image_id, record.get("caption")))
    if "id" in record and not _is_int(record["id"]):
        raise DataError("%s (image id %d): 'id' must be an integer, found %r"
                        % (where, image_id, record["id"]))
    return {"index": index, "image_id": image_id, "caption": record["caption"],
            "id": record.get("id")}


def load_caption_set(path):
    """Load and check one COCO caption annotation file."""
    document = load_json(path)
    image_records = _require_list(document, "images", path)
    annotation_records = _require_list(document, "annotations", path)
    images = {}
    for index, record in enumerate(image_records):
        record = _checked_image(record, index, path)
        if record["id"] in images:
            raise DataError("%s: images[%d]: image id %d is listed twice"
                            % (path, index, record["id"]))
        images[record["id"]] = record
    annotations = [_checked_annotation(record, index, path, images)
                   for index, record in enumerate(annotation_records)]
    return CaptionSet(path, images, annotations)


def reference_document(images, annotations, description):
    """A COCO caption annotation document (pycocotools' COCO() reads it) for one split.

    ``images``: image dicts (their COCO_IMAGE_FIELDS are kept);
    ``annotations``: dicts with image_id and caption; those without an integer ``id`` get
    one after the largest id present, because pycocotools indexes annotations by id.
    """
    next_id = 1 + max((a["id"] for a in annotations if _is_int(a.get("id"))), default=0)
    used_ids = set()
    out_annotations = []
    for annotation in annotations:
        annotation_id = annotation.get("id")
        if not _is_int(annotation_id) or annotation_id in used_ids:
            annotation_id, next_id = next_id, next_id + 1
        used_ids.add(annotation_id)
        out_annotations.append({"image_id": annotation["image_id"], "id": annotation_id,
                                "caption": annotation["caption"]})
    return {"info": {"description": description}, "licenses": [], "type": "captions",
            "images": [{key: image[key] for key in COCO_IMAGE_FIELDS if key in image}
                       for image in images],
            "annotations": out_annotations}


def load_results(path, known_image_ids):
    """Load a COCO results file -> {image_id: caption}; every image id must be annotated
    and appear once."""
    document = load_json(path)
    if not isinstance(document, list):
        raise DataError("%s: expected a JSON list of {\"image_id\", \"caption\"} objects "
                        "(COCO results format), found %s" % (path, type(document).__name__))
    captions = {}
    for index, record in enumerate(document):
        where = "%s: [%d]" % (path, index)
        if not isinstance(record, dict):
            raise DataError("%s: expected an object, found %s" % (where, type(record).__name__))
        image_id = record.get("image_id")
        if not _is_int(image_id):
            raise DataError("%s: 'image_id' must be an integer, found %r" % (where, image_id))
        if not isinstance(record.get("caption"), str):
            raise DataError("%s (image id %d): 'caption' must be a string, found %r"
                            % (where, image_id, record.get("caption")))
        if image_id not in known_image_ids:
            raise DataError("%s: image id %d has no reference captions in the annotations"
                            % (where, image_id))
        if image_id in captions:
            raise DataError("%s: image id %d has a second result caption (one per image)"
                            % (where, image_id))
        captions[image_id] = record["caption"]
    if not captions:
        raise DataError("%s: no results to evaluate" % path)
    return captions
