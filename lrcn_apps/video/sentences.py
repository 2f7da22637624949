"""Video sentences as users bring them, and the numeric ids COCO evaluation needs.

- S2VT's text form: one ``video_id<TAB>sentence`` per line (blank lines are skipped, as the
  original skips them);
- JSON: MSR-VTT's ``{"sentences": [{"video_id": ..., "caption": ...}, ...]}`` (other keys
  such as "videos" are ignored), or a plain list of such objects (MSVD converted to JSON).

Every problem names the file and the line (text) or the record (JSON).
"""

import re
from dataclasses import dataclass

from lrcn_apps.caption.coco import DataError, load_json


@dataclass(frozen=True)
class Sentence:
    video: str
    text: str
    where: str        # "file:line" or "file: sentences[k]", for messages


def read_sentences(path):
    """The Sentences of one file, in file order."""
    if path.lower().endswith(".json"):
        return _json_sentences(path)
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except UnicodeDecodeError as error:
        raise DataError("%s: not UTF-8 text (%s)" % (path, error.reason)) from None
    except OSError as error:
        raise DataError("%s: cannot read: %s" % (path, error.strerror or error)) from None
    sentences = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        video, tab, text = line.partition("\t")
        where = "%s:%d" % (path, number)
        if not tab or not video.strip() or not text.strip():
            raise DataError("%s: expected 'video_id<TAB>sentence', found %r" % (where, line))
        sentences.append(Sentence(video.strip(), text.strip(), where))
    if not sentences:
        raise DataError("%s: no sentences" % path)
    return sentences


def _json_sentences(path):
    document = load_json(path)
    records = document.get("sentences") if isinstance(document, dict) else document
    if not isinstance(records, list) or not records:
        raise DataError("%s: expected a non-empty 'sentences' list of {\"video_id\", "
                        "\"caption\"} objects (MSR-VTT form) or such a list" % path)
    sentences = []
    for index, record in enumerate(records):
        where = "%s: sentences[%d]" % (path, index)
        video = record.get("video_id") if isinstance(record, dict) else None
        text = record.get("caption") if isinstance(record, dict) else None
        if isinstance(video, int) and not isinstance(video, bool):
            video = str(video)
        if not isinstance(video, str) or not video or not isinstance(text, str) \
                or not text.strip():
            raise DataError("%s: needs a 'video_id' and a non-empty 'caption'" % where)
        sentences.append(Sentence(video, text.strip(), where))
    return sentences


def video_number(video):
    """COCO's integer id of a video: the trailing digits of its id (MSVD vid1200 -> 1200,
    MSR-VTT video123 -> 123)."""
    match = re.search(r"(\d+)$", video)
    if not match:
        raise DataError("video id %r has no trailing digits: COCO evaluation needs an integer "
                        "id per video" % video)
    return int(match.group(1))


def video_numbers(videos):
    """{video id: integer id}, refusing two videos with one number."""
    numbers, seen = {}, {}
    for video in videos:
        number = video_number(video)
        if seen.setdefault(number, video) != video:
            raise DataError("videos %r and %r both have the integer id %d"
                            % (seen[number], video, number))
        numbers[video] = number
    return numbers
