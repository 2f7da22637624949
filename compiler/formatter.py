"""Canonical text for a parsed Document: the layout `lrcn-fmt` writes.

Fields appear in schema declaration order (so `name`, `type`, `bottom`, `top` lead a layer),
repeated fields keep their relative order, one field per line, two-space indent, `name {` for
messages, enum names without quotes, true/false for bools, strings double-quoted. Numbers keep
the spelling the author chose (1e-4 stays 1e-4): that is a choice, not noise, in code review.
Every comment stays with the field it was attached to by compiler.textformat.
"""

from google.protobuf import descriptor as _descriptor

from .schema import parse_integer_literal
from .textformat import Block, render_string

FD = _descriptor.FieldDescriptor
INDENT = "  "


def format_document(document):
    """Document -> canonical text (ends with one newline; empty file -> empty text)."""
    lines = []
    _format_block(document.syntax, document.message.DESCRIPTOR, 0, lines)
    lines.extend(document.syntax.footer)
    return "\n".join(lines) + "\n" if lines else ""


def _format_block(block, descriptor, depth, lines):
    indent = INDENT * depth
    order = {field.name: index for index, field in enumerate(descriptor.fields)}
    for item in sorted(block.fields, key=lambda item: order[item.name]):
        field = descriptor.fields_by_name[item.name]
        lines.extend(indent + comment for comment in item.leading)
        elements = item.value if item.kind == "list" else [item.value]
        for index, element in enumerate(elements):
            trailing = item.trailing if index == len(elements) - 1 else None
            if isinstance(element, Block):
                _format_message(item.name, element, field.message_type, depth, trailing, lines)
            else:
                lines.append(_with_comment(f"{indent}{item.name}: "
                                           f"{render_value(field, element)}", trailing))


def _format_message(name, block, descriptor, depth, trailing, lines):
    indent = INDENT * depth
    lines.append(_with_comment(f"{indent}{name} {{", block.open_comment))
    _format_block(block, descriptor, depth + 1, lines)
    lines.extend(indent + INDENT + comment for comment in block.footer)
    lines.append(_with_comment(f"{indent}}}", trailing))


def _with_comment(line, comment):
    return f"{line}  {comment}" if comment else line


def render_value(field, scalar):
    """One scalar in canonical spelling for its field's type."""
    if field.type == FD.TYPE_ENUM:
        if scalar.kind == "identifier":
            return scalar.text
        return field.enum_type.values_by_number[parse_integer_literal(scalar.text)].name
    if field.type == FD.TYPE_BOOL:
        return "true" if scalar.text in ("true", "True", "t", "1") else "false"
    if field.type in (FD.TYPE_STRING, FD.TYPE_BYTES):
        return render_string(scalar.bytes_value)
    return scalar.text
