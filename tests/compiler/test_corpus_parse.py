"""Every real Caffe file parses to the message protobuf's own text parser builds (wire-equal),
and lrcn-fmt is idempotent and meaning-preserving on all of them."""

import pathlib

import pytest
from google.protobuf import text_format

from compiler import load_file, load_text
from compiler.formatter import format_document
from lrcn_proto import caffe_pb2

# Files of the LRCN activity fork that use its extra fields (our schema has them too).
FORK_FIELD_FILES = {"train_test_singleFrame_RGB.prototxt", "train_test_singleFrame_flow.prototxt"}


def corpus_files(corpus_dir):
    files = sorted(pathlib.Path(corpus_dir).rglob("*.prototxt"))
    assert len(files) >= 80
    return files


def expected_kind(path):
    return "solver" if "solver" in path.name else "net"


def test_every_corpus_file_matches_protobufs_parser(corpus_dir):
    for path in corpus_files(corpus_dir):
        document = load_file(path)
        assert document.kind == expected_kind(path), path
        reference = caffe_pb2.SolverParameter() if document.kind == "solver" \
            else caffe_pb2.NetParameter()
        text_format.Parse(path.read_text(), reference)
        assert document.message.SerializeToString() == reference.SerializeToString(), path


def test_fork_files_parse_with_fork_fields(corpus_dir):
    found = [load_file(path).message for path in corpus_files(corpus_dir)
             if path.name in FORK_FIELD_FILES]
    assert len(found) == 2
    for net in found:
        assert any(layer.transform_param.HasField("flow") for layer in net.layer)
    assert any(layer.image_data_param.min_height == 227 for net in found for layer in net.layer)


def test_format_is_idempotent_and_meaning_preserving(corpus_dir):
    for path in corpus_files(corpus_dir):
        document = load_file(path)
        once = format_document(document)
        reparsed = load_text(once, document.kind, str(path))
        assert reparsed.message.SerializeToString() == document.message.SerializeToString(), path
        assert format_document(reparsed) == once, path


def test_format_keeps_every_comment(corpus_dir):
    for path in corpus_files(corpus_dir):
        original = [line.split("#", 1)[1].strip() for line in path.read_text().splitlines()
                    if line.lstrip().startswith("#")]
        formatted = format_document(load_file(path))
        for comment in original:
            assert comment in formatted, (path, comment)


def _written_paths(block, descriptor, path, out):
    """Every field path written in `block` -> (line, col) of its field, numbered as Caffe's
    repeated fields are: the map Document kept before positions came from the tree."""
    counts = {}
    for item in block.fields:
        field = descriptor.fields_by_name[item.name]
        for value in (item.value if item.kind == "list" else [item.value]):
            if field.is_repeated:
                index = counts.get(item.name, 0)
                counts[item.name] = index + 1
                here = path + (item.name, index)
            else:
                here = path + (item.name,)
            out[here] = (item.line, item.col)
            if field.type == field.TYPE_MESSAGE:
                _written_paths(value, field.message_type, here, out)
    return out


def test_every_written_field_is_located_where_it_was_written(corpus_dir):
    for path in corpus_files(corpus_dir):
        document = load_file(path)
        written = _written_paths(document.syntax, document.message.DESCRIPTOR, (), {})
        assert written, path
        for field_path, where in written.items():
            assert document.locate(field_path) == where, (path, field_path)
            # A path below a written field that was not written: its nearest written ancestor.
            assert document.locate(field_path + ("no_such_field",)) == where
            assert document.locate(field_path + (10 ** 6,)) == where
            if isinstance(field_path[-1], int):
                beyond = field_path[:-1] + (field_path[-1] + 10 ** 6,)
                parent = written.get(field_path[:-2], (None, None))
                assert document.locate(beyond) == parent, (path, beyond)
        assert document.locate(()) == (None, None)
        assert document.locate(("no_such_field",)) == (None, None)
