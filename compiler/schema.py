"""The positioned syntax tree -> an lrcn_proto message, checked field by field against the schema.

The result is the message Caffe (protobuf's TextFormat with caffe.proto) builds from the same
text; every rule protobuf's text parser enforces is enforced here too, but each violation is a
CompileError at the offending token, with a hint. Field meaning comes only from the message
descriptors in lrcn_proto: this module restates no field, type or default.
"""

import math
import re
from dataclasses import dataclass, field as dataclass_field

from google.protobuf import descriptor as _descriptor

from lrcn_proto import caffe_pb2

from . import textformat
from .errors import CompileError, did_you_mean

FD = _descriptor.FieldDescriptor

MESSAGE_TYPES = {"net": caffe_pb2.NetParameter, "solver": caffe_pb2.SolverParameter}

_INT_RANGES = {
    FD.TYPE_INT32: (-2 ** 31, 2 ** 31 - 1), FD.TYPE_SINT32: (-2 ** 31, 2 ** 31 - 1),
    FD.TYPE_SFIXED32: (-2 ** 31, 2 ** 31 - 1), FD.TYPE_INT64: (-2 ** 63, 2 ** 63 - 1),
    FD.TYPE_SINT64: (-2 ** 63, 2 ** 63 - 1), FD.TYPE_SFIXED64: (-2 ** 63, 2 ** 63 - 1),
    FD.TYPE_UINT32: (0, 2 ** 32 - 1), FD.TYPE_FIXED32: (0, 2 ** 32 - 1),
    FD.TYPE_UINT64: (0, 2 ** 64 - 1), FD.TYPE_FIXED64: (0, 2 ** 64 - 1),
}
_TYPE_WORDS = {
    FD.TYPE_INT32: "an integer (int32)", FD.TYPE_SINT32: "an integer (sint32)",
    FD.TYPE_SFIXED32: "an integer (sfixed32)", FD.TYPE_INT64: "an integer (int64)",
    FD.TYPE_SINT64: "an integer (sint64)", FD.TYPE_SFIXED64: "an integer (sfixed64)",
    FD.TYPE_UINT32: "a non-negative integer (uint32)",
    FD.TYPE_FIXED32: "a non-negative integer (fixed32)",
    FD.TYPE_UINT64: "a non-negative integer (uint64)",
    FD.TYPE_FIXED64: "a non-negative integer (fixed64)",
    FD.TYPE_FLOAT: "a number (float)", FD.TYPE_DOUBLE: "a number (double)",
    FD.TYPE_BOOL: "true or false", FD.TYPE_STRING: "a string", FD.TYPE_BYTES: "a string (bytes)",
}
# protobuf's text parser: inf, infinity and nan in any case, with an optional f suffix.
_INFINITY = re.compile(r"-?inf(inity)?f?$", re.IGNORECASE)
_NAN = re.compile(r"-?nanf?$", re.IGNORECASE)
_TRUE = {"true", "True", "t", "1"}
_FALSE = {"false", "False", "f", "0"}


@dataclass
class Document:
    """A parsed file: the message, what kind it is, and where each field was written.

    The positions come from the syntax tree (syntax, the textformat.Block the message came
    from), walked along a field path such as ("layer", 3, "bottom", 1) when an error needs one:
    a dict from every field path to its place cost more memory than the tree itself. A
    document built by hand may give positions instead, the same map written out.
    """
    message: object
    kind: str
    filename: str
    positions: dict = dataclass_field(default_factory=dict)
    syntax: object = None
    # (id of a Block, field name) -> the items written under that name in that block, an item
    # once per element it holds ("layer", 3) is then one lookup, not a scan of the net (the
    # compiler locates every layer). Built when first asked for.
    _written: dict = dataclass_field(default_factory=dict, repr=False, compare=False)

    def locate(self, path):
        """(line, col) of the field at `path`, else of its nearest written ancestor."""
        path = tuple(path)
        if self.syntax is not None:
            item = self.written(path, exact=False)[0]
            return (item.line, item.col) if item is not None else (None, None)
        while path:
            if path in self.positions:
                where = self.positions[path]
                return (where.line, where.col)
            path = path[:-1]
        return (None, None)

    def written(self, path, exact=True):
        """(item, value) of the syntax tree written at `path`: the Field and its Scalar or
        Block (one element of a [list]). With exact=False, those of the nearest written
        ancestor when `path` itself was not written; (None, None) when nothing was."""
        found = (None, None)
        block, descriptor, i = self.syntax, self.message.DESCRIPTOR, 0
        while i < len(path):
            name = path[i]
            if block is None or not isinstance(name, str):
                break       # below a scalar, or an index where a name belongs
            field = descriptor.fields_by_name.get(name)
            if field is None:
                break
            index = 0
            if field.is_repeated:
                if i + 1 >= len(path) or isinstance(path[i + 1], str):
                    break
                index = path[i + 1]
            i += 2 if field.is_repeated else 1
            items = self._items_named(block, name)
            if not 0 <= index < len(items):
                break
            item = items[index]
            if item.kind == "list":
                # The same item stands once per element: count back to this element's place.
                first = index
                while first > 0 and items[first - 1] is item:
                    first -= 1
                value = item.value[index - first]
            else:
                value = item.value
            found = (item, value)
            block = value if isinstance(value, textformat.Block) else None
            descriptor = field.message_type
        else:
            return found
        return (None, None) if exact else found

    def _items_named(self, block, name):
        key = (id(block), name)
        items = self._written.get(key)
        if items is None:
            items = []
            for item in block.fields:
                if item.name == name:
                    items.extend([item] * (len(item.value) if item.kind == "list" else 1))
            self._written[key] = items
        return items

    def error(self, message, path, hint=None):
        line, col = self.locate(path)
        return CompileError(message, self.filename, line, col, hint)


def load_text(text, kind=None, filename="<string>"):
    """Text -> Document. kind: "net", "solver" or None to decide from the top-level fields."""
    try:
        root = textformat.parse_syntax(text, filename)
    except CompileError as error:
        error.file = error.file or filename
        raise
    kind = kind or guess_kind(root)
    if kind not in MESSAGE_TYPES:
        raise CompileError(f"unknown kind {kind!r}; expected 'net' or 'solver'", filename)
    message = MESSAGE_TYPES[kind]()
    _fill_message(message, root, filename)
    return Document(message, kind, filename, syntax=root)


def load_file(path, kind=None):
    """A .prototxt file -> Document, or one CompileError naming the file."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise CompileError(f"cannot read file: {error.strerror}", str(path)) from None
    text = textformat.decode_source(data, str(path))
    del data    # the bytes are not needed once decoded: a copy of the file less while parsing
    return load_text(text, kind, str(path))


def parse_text(text, kind=None, filename="<string>"):
    """Text -> the lrcn_proto message exactly as written."""
    return load_text(text, kind, filename).message


def parse_file(path, kind=None):
    """A .prototxt file -> the lrcn_proto message exactly as written."""
    return load_file(path, kind).message


def guess_kind(root):
    """"net" or "solver", from which message knows every top-level field name."""
    names = {f.name for f in root.fields}
    scores = {}
    for kind, message_type in MESSAGE_TYPES.items():
        known = message_type.DESCRIPTOR.fields_by_name
        scores[kind] = (all(n in known for n in names), sum(n in known for n in names))
    if scores["solver"] > scores["net"]:
        return "solver"
    return "net"


# --- filling a message ------------------------------------------------------------------------

def _fill_message(message, block, filename):
    descriptor = message.DESCRIPTOR
    first_seen = {}
    for item in block.fields:
        field = descriptor.fields_by_name.get(item.name)
        if field is None:
            raise _unknown_field(item, descriptor, filename)
        repeated = field.is_repeated
        if not repeated:
            if item.name in first_seen:
                line, col = first_seen[item.name]
                raise CompileError(f"field '{item.name}' is given twice; {descriptor.name} has "
                                   "only one", filename, item.line, item.col,
                                   f"the first is at line {line}, column {col}; make "
                                   f"'{item.name}' appear once")
            first_seen[item.name] = (item.line, item.col)
        if item.kind == "list" and not repeated:
            raise CompileError(f"'{item.name}' is not a repeated field, so it cannot take a "
                               "[list]", filename, item.line, item.col,
                               f"write one `{item.name}: value`")
        values = item.value if item.kind == "list" else [item.value]
        for value in values:
            _set_value(message, field, value, item, filename)


def _set_value(message, field, value, item, filename):
    repeated = field.is_repeated
    if field.type == FD.TYPE_MESSAGE:
        if not isinstance(value, textformat.Block):
            raise CompileError(f"'{field.name}' is a message ({field.message_type.name}), not a "
                               "value", filename, value.line, value.col,
                               f"write `{field.name} {{ ... }}`")
        sub = getattr(message, field.name).add() if repeated else getattr(message, field.name)
        sub.SetInParent()
        _fill_message(sub, value, filename)
        return
    if isinstance(value, textformat.Block):
        raise CompileError(f"'{field.name}' takes {_describe_field_type(field)}, not a message "
                           "block", filename, item.line, item.col,
                           f"write `{field.name}: value`")
    converted = convert_scalar(field, value, filename)
    if repeated:
        getattr(message, field.name).append(converted)
    else:
        setattr(message, field.name, converted)


def _describe_field_type(field):
    if field.type == FD.TYPE_ENUM:
        return f"an enum value ({field.enum_type.name})"
    return _TYPE_WORDS[field.type]


def convert_scalar(field, value, filename=None):
    """A Scalar -> the Python value protobuf stores for this field, or a located CompileError."""
    kind = field.type
    if kind in _INT_RANGES:
        return _convert_int(field, value, filename)
    if kind in (FD.TYPE_FLOAT, FD.TYPE_DOUBLE):
        return _convert_float(field, value, filename)
    if kind == FD.TYPE_BOOL:
        if value.kind != "string" and value.text in _TRUE:
            return True
        if value.kind != "string" and value.text in _FALSE:
            return False
        raise _type_error(field, value, filename, "write true or false")
    if kind == FD.TYPE_ENUM:
        return _convert_enum(field, value, filename)
    if value.kind != "string":
        raise _type_error(field, value, filename, f'quote it: {field.name}: "{value.text}"')
    if kind == FD.TYPE_BYTES:
        return value.bytes_value
    try:
        return value.bytes_value.decode("utf-8")
    except UnicodeDecodeError:
        raise CompileError(f"'{field.name}' is not valid UTF-8 text", filename, value.line,
                           value.col, "string fields hold UTF-8; use escapes only for "
                           "UTF-8 sequences") from None


def parse_integer_literal(text):
    """Protobuf's integer spellings (decimal, 0x hex, 0 octal, optional '-') -> int or None."""
    negative = text.startswith("-")
    body = text[1:] if negative else text
    try:
        if body[:2] in ("0x", "0X"):
            number = int(body[2:], 16)
        elif len(body) > 1 and body.startswith("0") and body.isdigit():
            number = int(body, 8)
        elif body.isdigit():
            number = int(body)
        else:
            return None
    except ValueError:
        return None
    return -number if negative else number


def _convert_int(field, value, filename):
    number = parse_integer_literal(value.text) if value.kind == "number" else None
    if number is None:
        hint = None
        if value.kind == "number":
            hint = f"'{field.name}' holds whole numbers only"
        raise _type_error(field, value, filename, hint)
    low, high = _INT_RANGES[field.type]
    if not low <= number <= high:
        raise CompileError(f"{number} is out of range for '{field.name}' "
                           f"({_TYPE_WORDS[field.type]}: {low} .. {high})", filename,
                           value.line, value.col)
    return number


def _convert_float(field, value, filename):
    text = value.text
    if value.kind == "identifier":
        if _INFINITY.match(text):
            return -math.inf if text.startswith("-") else math.inf
        if _NAN.match(text):
            return math.nan
        raise _type_error(field, value, filename, "numbers are written 0.5, 1e-4, inf or nan")
    if value.kind != "number" or text.lstrip("-")[:2] in ("0x", "0X"):
        raise _type_error(field, value, filename)
    return float(text.rstrip("fF"))


def _convert_enum(field, value, filename):
    enum = field.enum_type
    names = [v.name for v in enum.values]
    if value.kind == "identifier" and value.text in enum.values_by_name:
        return enum.values_by_name[value.text].number
    if value.kind == "number":
        number = parse_integer_literal(value.text)
        if number is not None and number in enum.values_by_number:
            return number
    shown = value.text if value.kind != "string" else textformat.render_string(value.bytes_value)
    hint = None
    written = value.text
    if value.kind == "string":
        written = value.bytes_value.decode("utf-8", "replace")
        if written in enum.values_by_name:
            hint = f"enum values are written without quotes: {field.name}: {written}"
    hint = hint or did_you_mean(written, names)
    raise CompileError(f"{shown} is not a value of '{field.name}' ({enum.name}); allowed: "
                       f"{', '.join(names)}", filename, value.line, value.col, hint)


def _type_error(field, value, filename, hint=None):
    return CompileError(f"'{field.name}' takes {_describe_field_type(field)}, found "
                        f"{value.describe()}", filename, value.line, value.col, hint)


def _unknown_field(item, descriptor, filename):
    names = list(descriptor.fields_by_name)
    hint = did_you_mean(item.name, names)
    if hint is None:
        owners = _messages_defining(item.name)
        if owners:
            hint = f"'{item.name}' is a field of {', '.join(owners)}"
    return CompileError(f"unknown field '{item.name}' in {descriptor.name}", filename,
                        item.line, item.col, hint)


def _messages_defining(name):
    owners = []
    layer = caffe_pb2.LayerParameter.DESCRIPTOR
    for field in layer.fields:
        if field.type == FD.TYPE_MESSAGE and name in field.message_type.fields_by_name:
            owners.append(f"{field.name} ({field.message_type.name})")
    return owners[:4]
