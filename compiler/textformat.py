"""Protobuf text format -> a positioned syntax tree that keeps comments.

The tree knows only the shape of the text (names, scalars, blocks, lists) and where each piece
stands. Meaning comes later, from the schema (compiler/schema.py). Keeping both steps apart lets
the formatter (compiler/formatter.py) reprint the user's text with its comments, and lets every
error point at the token the user has to fix.

Every input, including binary garbage and pathological nesting, ends in either a tree or one
CompileError: brackets are matched on the token stream before parsing, with a depth limit, so
the tree walkers below never recurse deeper than MAX_DEPTH.
"""

import bisect
import os
import sys
import threading
from dataclasses import dataclass

import lark

from .errors import CompileError

# Protobuf's own text parser stops at 100 nested messages; Caffe's schema needs about 5.
MAX_DEPTH = 100

_GRAMMAR_PATH = os.path.join(os.path.dirname(__file__), "prototxt.lark")
_parser_lock = threading.Lock()
_parser = None

_OPENERS = {"LBRACE": "RBRACE", "LANGLE": "RANGLE", "LSQB": "RSQB"}
_CLOSERS = {closer: opener for opener, closer in _OPENERS.items()}
_BRACKET_TEXT = {"LBRACE": "{", "RBRACE": "}", "LANGLE": "<", "RANGLE": ">", "LSQB": "[",
                 "RSQB": "]"}


@dataclass(slots=True)
class Scalar:
    """One value as written: kind is "string", "number" or "identifier"."""
    kind: str
    text: str            # number / identifier: as written, with a leading '-' if any
    #                      (a string keeps only its decoded bytes: text is "")
    line: int
    col: int
    data: bytes = b""    # string: the decoded bytes, adjacent literals joined
    end_line: int = 0    # where its last token starts
    end_col: int = 0

    @property
    def bytes_value(self):
        return self.data

    def describe(self):
        if self.kind == "string":
            return "string " + render_string(self.bytes_value)
        return f"{'number' if self.kind == 'number' else 'identifier'} {self.text}"


@dataclass(slots=True)
class Block:
    """The inside of `{ ... }` (or the whole file): fields plus the comments that belong here."""
    fields: list
    open_line: int = 0
    open_col: int = 0
    close_line: int = 0
    close_col: int = 0
    open_comment: str = None     # comment on the line of `{`
    footer: list = ()            # comments before `}` / end of file (a list once there is one)


class Elements(list):
    """The elements of `name: [...]` (Scalars and Blocks), and where its `]` stands."""
    __slots__ = ("end_line", "end_col")


@dataclass(slots=True)
class Field:
    """`name { block }` (kind "message", value a Block) or `name: [elements]` (kind "list",
    value Elements). `name: scalar` is a ScalarField."""
    name: str
    line: int
    col: int
    kind: str
    value: object
    leading: list = ()           # comments on the lines before (a list once there is one)
    trailing: str = None

    @property
    def end_line(self):
        return self.value.close_line if self.kind == "message" else self.value.end_line

    @property
    def end_col(self):
        return self.value.close_col if self.kind == "message" else self.value.end_col


@dataclass(slots=True)
class ScalarField:
    """`name: scalar`. Most fields of a net are scalars, so the field and its value are one
    object, not a Field holding a Scalar (that cost twice the memory); .value builds the
    Scalar when asked for. A value of one token ends where it starts; one of several tokens
    (-5, "a" "b") is a SpannedScalarField."""
    name: str
    line: int
    col: int
    value_kind: str              # the Scalar's kind
    literal: object              # the Scalar's text, or its data for a string
    value_line: int
    value_col: int
    leading: list = ()
    trailing: str = None
    kind = "scalar"              # a class attribute, not a slot: the same for every one

    @property
    def end_line(self):
        return self.value_line

    @property
    def end_col(self):
        return self.value_col

    @property
    def value(self):
        if self.value_kind == "string":
            return Scalar("string", "", self.value_line, self.value_col, self.literal,
                          self.end_line, self.end_col)
        return Scalar(self.value_kind, self.literal, self.value_line, self.value_col,
                      end_line=self.end_line, end_col=self.end_col)


@dataclass(slots=True)
class SpannedScalarField(ScalarField):
    """A ScalarField whose value is several tokens: where the last one starts."""
    end_line: int = 0
    end_col: int = 0


def _build_parser():
    global _parser
    with _parser_lock:
        if _parser is None:
            with open(_GRAMMAR_PATH, encoding="utf-8") as grammar:
                # The transformer runs inside the LALR parser, so Fields and Blocks are built
                # as rules reduce and no intermediate Lark tree is held: parse memory stays a
                # small multiple of the file size.
                _parser = lark.Lark(grammar.read(), parser="lalr", lexer="basic",
                                    maybe_placeholders=False, transformer=_TreeBuilder())
    return _parser


def decode_source(data, filename):
    """Bytes of a file -> text, or a CompileError pointing at the first byte that is not text."""
    nul = data.find(b"\x00")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        bad = error.start if nul < 0 else min(nul, error.start)
        line, col = _line_col_of_offset(data, bad)
        raise CompileError(f"not a text file: byte 0x{data[bad]:02x} is not UTF-8 text",
                           filename, line, col,
                           "net and solver definitions are protobuf text format (.prototxt); "
                           "binary .caffemodel / .solverstate files are weights, not definitions")
    if nul >= 0:
        line, col = _line_col_of_offset(data, nul)
        raise CompileError("not a text file: it contains a NUL byte", filename, line, col,
                           "net and solver definitions are protobuf text format (.prototxt)")
    if text.startswith("\ufeff"):
        text = text[1:]
    return text


def _line_col_of_offset(data, offset):
    line = data.count(b"\n", 0, offset) + 1
    col = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    return line, col


def parse_syntax(text, filename="<string>"):
    """Text -> the root Block with every comment attached, or a located CompileError."""
    parser = _build_parser()
    comments = _scan(parser, text, filename)
    _parse_local.memo = {}   # the parser (and its transformer) is shared between threads
    try:
        fields = parser.parse(text)
    except lark.exceptions.UnexpectedInput as error:
        # Only a failed parse needs the token list, to describe what came before the error.
        raise _syntax_error(error, _tokens(parser, text), filename) from None
    finally:
        _parse_local.memo = None
    root = Block(fields=fields, close_line=text.count("\n") + 2)
    _attach_comments(root, comments)
    return root


def _lex(parser, text, filename):
    """Every token but whitespace, comments apart; a located error on a character no token
    starts with."""
    try:
        for token in parser.lex(text, dont_ignore=True):
            if token.type != "WHITESPACE":
                yield token
    except lark.exceptions.UnexpectedCharacters as error:
        raise _character_error(error, text, filename) from None


def _scan(parser, text, filename):
    """One pass over the tokens before parsing: glued values and unmatched brackets become
    located errors (with a depth limit), and the comments are collected. Only the comments and
    the open brackets are kept, never the token list."""
    comments, brackets, previous = [], _BracketStack(filename, text), None
    for token in _lex(parser, text, filename):
        if token.type == "COMMENT":
            # Three plain values, not the Token: a Token object costs several times more.
            comments.append((token.line, token.column, str(token).rstrip()))
            continue
        _check_glued_values(previous, token, filename)
        brackets.feed(token)
        previous = token
    brackets.finish()
    return comments


def _tokens(parser, text):
    return [token for token in _lex(parser, text, "<string>") if token.type != "COMMENT"]


def _character_error(error, text, filename):
    char = text[error.pos_in_stream]
    if char in "\"'":
        line_end = text.find("\n", error.pos_in_stream)
        rest = text[error.pos_in_stream:line_end if line_end >= 0 else len(text)]
        return CompileError(f"unterminated string: the {char} opened here is not closed on "
                            "this line", filename, error.line, error.column,
                            f"close it with {char}" + (
                                " (a string cannot span lines; write adjacent "
                                "\"...\" \"...\" literals instead)" if len(rest) > 1 else ""))
    shown = repr(char) if char.isprintable() else f"U+{ord(char):04X}"
    return CompileError(f"unexpected character {shown}", filename, error.line, error.column,
                        "fields are written `name: value` or `name { ... }`; comments start "
                        "with #")


def _check_glued_values(previous, token, filename):
    """`1.5.3` or `12abc` lex as two values with nothing between them: one malformed value."""
    if (previous is not None and previous.type == "NUMBER" and token.type in ("NUMBER", "NAME")
            and previous.end_line == token.line and previous.end_column == token.column):
        raise CompileError(f"malformed value '{previous}{token}'", filename, previous.line,
                           previous.column, "numbers are written like 3, -2, 0x1F, 0.5, "
                           "1e-4, 2.; names start with a letter")


class _BracketStack:
    """Matches {} <> [] before parsing, so errors name the opener and depth stays bounded."""

    def __init__(self, filename, text):
        self.filename, self.text, self.stack = filename, text, []

    def feed(self, token):
        stack, filename = self.stack, self.filename
        if token.type in _OPENERS:
            if len(stack) >= MAX_DEPTH:
                raise CompileError(f"nesting deeper than {MAX_DEPTH} levels", filename,
                                   token.line, token.column,
                                   "no Caffe message nests this deep; look for a missing "
                                   f"'{_BRACKET_TEXT[_OPENERS[stack[-1].type]]}'")
            stack.append(token)
        elif token.type in _CLOSERS:
            closer = _BRACKET_TEXT[token.type]
            if not stack:
                raise CompileError(f"'{closer}' without a matching "
                                   f"'{_BRACKET_TEXT[_CLOSERS[token.type]]}'", filename,
                                   token.line, token.column, "remove it, or open the block "
                                   "it was meant to close")
            opener = stack.pop()
            if _OPENERS[opener.type] != token.type:
                raise CompileError(
                    f"'{closer}' does not match the '{_BRACKET_TEXT[opener.type]}' opened at "
                    f"line {opener.line}, column {opener.column}", filename, token.line,
                    token.column, f"close it with '{_BRACKET_TEXT[_OPENERS[opener.type]]}'")

    def finish(self):
        if self.stack:
            opener = self.stack[-1]
            last_line = self.text.count("\n") + 1
            raise CompileError(
                f"unterminated '{_BRACKET_TEXT[opener.type]}': opened at line {opener.line}, "
                f"column {opener.column} and never closed", self.filename, opener.line,
                opener.column, f"the file ends at line {last_line} with this block still "
                f"open; add '{_BRACKET_TEXT[_OPENERS[opener.type]]}'")


_TOKEN_WORDS = {
    "NAME": "a field name", "NUMBER": "a number", "STRING": "a string", "MINUS": "'-'",
    "COLON": "':'", "LBRACE": "'{'", "RBRACE": "'}'", "LANGLE": "'<'", "RANGLE": "'>'",
    "LSQB": "'['", "RSQB": "']'", "COMMA": "','", "SEMICOLON": "';'", "_SEP": "',' or ';'",
    "$END": "the end of the file",
}


def _syntax_error(error, tokens, filename):
    token = getattr(error, "token", None)
    if token is None or token.type == "$END":
        # Brackets are balanced, so the file can only end after a name, a colon or a '-'.
        last = tokens[-1]
        name = next((t for t in reversed(tokens) if t.type == "NAME" and t is not last), None)
        if last.type == "NAME" or name is not None:
            field = last if last.type == "NAME" else name
            return CompileError(f"field '{field}' has no value", filename, field.line,
                                field.column, f"write `{field}: value` or `{field} {{ ... }}`")
        return CompileError("the file ends where a value was expected", filename, last.line,
                            last.column, "give the field a value after ':'")
    index = _token_index(tokens, token)
    previous = tokens[index - 1] if index > 0 else None
    found = _describe_token(token)
    if token.type == "_SEP" and previous is not None and previous.type == "_SEP":
        return CompileError(f"extra separator '{token}'", filename, token.line, token.column,
                            "a field may be followed by one ',' or ';'")
    expected = set(getattr(error, "expected", ()) or ())
    if previous is not None and previous.type == "NAME" and "COLON" in expected:
        return CompileError(f"expected ':' or '{{' after field name '{previous}', found {found}",
                            filename, token.line, token.column,
                            f"write `{previous}: value` or `{previous} {{ ... }}`")
    if previous is not None and previous.type in ("COLON", "MINUS"):
        what = "a number or identifier after '-'" if previous.type == "MINUS" else "a value"
        return CompileError(f"expected {what}, found {found}", filename, token.line,
                            token.column, "values are numbers, \"strings\", enum names, "
                            "true/false, or { ... } for messages")
    if "NAME" in expected and token.type in ("NUMBER", "STRING", "MINUS"):
        return CompileError(f"expected a field name, found {found}", filename, token.line,
                            token.column, "each value needs its field name: `name: value`")
    words = sorted({_TOKEN_WORDS.get(name, name) for name in expected})
    return CompileError(f"unexpected {found}", filename, token.line, token.column,
                        f"expected {', '.join(words)}" if words else None)


def _describe_token(token):
    if token.type == "STRING":
        return f"string {token}"
    if token.type in ("NUMBER", "NAME"):
        return f"'{token}'"
    return _TOKEN_WORDS.get(token.type, f"'{token}'")


def _token_index(tokens, token):
    keys = [(t.line, t.column) for t in tokens]
    return bisect.bisect_left(keys, (token.line, token.column))


# --- Lark rules -> Field / Block ---------------------------------------------------------------

_parse_local = threading.local()


def _shared(value):
    """One object per distinct short value within a parse: "x", "ReLU", 0.5 repeat thousands
    of times in a big net. Long values are left alone (rarely repeated, costly to hash)."""
    memo = getattr(_parse_local, "memo", None)
    if memo is None or len(value) > 64:
        return value
    return memo.setdefault(value, value)


def _name(token):
    # Field names repeat thousands of times in a big net; one shared string each.
    return sys.intern(str(token))


class _TreeBuilder(lark.Transformer):
    """Builds Fields, Blocks and Scalars as the parser reduces each rule."""

    def start(self, children):
        return children

    def scalar_field(self, children):
        name_token, scalar = children
        literal = scalar.data if scalar.kind == "string" else scalar.text
        if (scalar.end_line, scalar.end_col) == (scalar.line, scalar.col):
            return ScalarField(_name(name_token), name_token.line, name_token.column,
                               scalar.kind, literal, scalar.line, scalar.col)
        return SpannedScalarField(_name(name_token), name_token.line, name_token.column,
                                  scalar.kind, literal, scalar.line, scalar.col,
                                  end_line=scalar.end_line, end_col=scalar.end_col)

    def message_field(self, children):
        name_token, block = children
        return Field(_name(name_token), name_token.line, name_token.column, "message", block)

    def list_field(self, children):
        name_token, opener, *elements, closer = children
        elements = Elements(elements)
        elements.end_line, elements.end_col = closer.line, closer.column
        return Field(_name(name_token), name_token.line, name_token.column, "list", elements)

    def message(self, children):
        opener, *fields, closer = children
        return Block(fields=fields, open_line=opener.line, open_col=opener.column,
                     close_line=closer.line, close_col=closer.column)

    def string(self, tokens):
        first, last = tokens[0], tokens[-1]
        data = _shared(b"".join(unescape(str(token)[1:-1], token) for token in tokens))
        return Scalar("string", "", first.line, first.column, data,
                      end_line=last.line, end_col=last.column)

    def number(self, tokens):
        return self._plain("number", tokens)

    def identifier(self, tokens):
        return self._plain("identifier", tokens)

    @staticmethod
    def _plain(kind, tokens):
        first, last = tokens[0], tokens[-1]
        return Scalar(kind, _shared("".join(str(token) for token in tokens)), first.line,
                      first.column,
                      end_line=last.line, end_col=last.column)


_MAX_CODE_POINT = 0x10FFFF
_SIMPLE_ESCAPES = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92,
                   "'": 39, '"': 34, "?": 63}


def unescape(body, token):
    """C-style escapes of a protobuf text string -> bytes (protobuf's CUnescape)."""
    out = bytearray()
    i, n = 0, len(body)
    while i < n:
        backslash = body.find("\\", i)
        if backslash < 0:
            out += body[i:].encode("utf-8")
            break
        out += body[i:backslash].encode("utf-8")
        i = backslash
        kind = body[i + 1]
        if kind in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[kind])
            i += 2
        elif kind in "01234567":
            j = i + 1
            while j < n and j < i + 4 and body[j] in "01234567":
                j += 1
            out.append(int(body[i + 1:j], 8) & 0xFF)
            i = j
        elif kind in "xX":
            j = i + 2
            while j < n and j < i + 4 and body[j] in "0123456789abcdefABCDEF":
                j += 1
            if j == i + 2:
                raise _escape_error(token, i, "\\x needs hex digits")
            out.append(int(body[i + 2:j], 16))
            i = j
        elif kind in "uU":
            width = 4 if kind == "u" else 8
            digits = body[i + 2:i + 2 + width]
            if len(digits) != width or any(c not in "0123456789abcdefABCDEF" for c in digits):
                raise _escape_error(token, i, f"\\{kind} needs {width} hex digits")
            code = int(digits, 16)
            if code > _MAX_CODE_POINT:
                # protobuf's CUnescape refuses these too: no character has such a number.
                raise _escape_error(token, i, f"\\{kind}{digits} is beyond Unicode "
                                    f"(the largest code point is U+{_MAX_CODE_POINT:X})")
            out += chr(code).encode("utf-8", "surrogatepass")
            i += 2 + width
        else:
            raise _escape_error(token, i, f"unknown escape '\\{kind}'")
    return bytes(out)


def _escape_error(token, offset, message):
    # +1 for the opening quote; strings never span lines, so the column arithmetic holds.
    return CompileError(f"bad string escape: {message}", None, token.line,
                        token.column + 1 + offset,
                        "escapes are \\n \\t \\\\ \\\" \\' \\ooo \\xHH \\uHHHH")


def render_string(data):
    """Bytes -> a double-quoted text-format literal (UTF-8 kept readable)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return '"' + "".join(_escape_byte(b) for b in data) + '"'
    out = []
    for char in text:
        if char == '"':
            out.append('\\"')
        elif char == "\\":
            out.append("\\\\")
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif char == "\r":
            out.append("\\r")
        elif ord(char) < 32 or ord(char) == 127:
            out.append(f"\\{ord(char):03o}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _escape_byte(byte):
    if byte in (34, 92):
        return "\\" + chr(byte)
    if 32 <= byte < 127:
        return chr(byte)
    return f"\\{byte:03o}"


# --- comments --------------------------------------------------------------------------------

def _attach_comments(root, comments):
    """Give each comment to the field it annotates, so reformatting carries it along.

    A comment on the same line after a value (or after `{` / `}`) trails that line; any other
    comment leads the next field in the same block, or closes the block when none follows.

    comments are (line, col, text) in file order. The anchors (the places a comment can attach
    to) come from a generator in document order, which is also (line, col) order, and are merged
    with the comments in one pass: no list of every anchor is built (that list cost about 30
    bytes per byte of a file of small layers). A comment goes to the first anchor at or after
    it ("after") and looks at the anchor just before it ("before").
    """
    if not comments:
        return
    pending = iter(comments)
    comment = next(pending, None)
    before = None
    for after in _anchors(root):
        while comment is not None and (comment[0], comment[1]) <= (after[0], after[1]):
            _attach_one(root, comment, before, after)
            comment = next(pending, None)
        if comment is None:
            return
        before = after
    while comment is not None:
        _attach_one(root, comment, before, None)
        comment = next(pending, None)


def _attach_one(root, comment, before, after):
    line, _, text = comment
    if before is not None and before[0] == line and before[2] in ("end", "open"):
        target = before[3]
        if before[2] == "open":
            if target.open_comment is None:
                target.open_comment = text
                return
            _add_comment(target, "footer", text)
        elif target.trailing is None:
            target.trailing = text
        else:
            _add_comment(target, "leading", text)   # a second trailing comment is kept
        return
    if after is None:
        _add_comment(root, "footer", text)
    elif after[2] == "start":
        _add_comment(after[3], "leading", text)
    elif after[2] == "close":
        _add_comment(after[3], "footer", text)
    else:   # the end of a list whose elements span lines
        _add_comment(after[3], "leading", text)


def _add_comment(target, attribute, text):
    # Most fields have no comment: the empty tuple they start with costs nothing per field.
    comments = getattr(target, attribute)
    if comments:
        comments.append(text)
    else:
        setattr(target, attribute, [text])    # sized for one: most places have one comment


def _anchors(block):
    """Every position a comment can attach to, as (line, col, kind, target) in document order;
    kinds are start / open / close / end. The source is read left to right, so document order
    is (line, col) order, anchors at the same place keeping this order."""
    for item in block.fields:
        yield (item.line, item.col, "start", item)
        if item.kind == "message":
            inner = item.value
            yield (inner.open_line, inner.open_col, "open", inner)
            yield from _anchors(inner)
            yield (inner.close_line, inner.close_col, "close", inner)
            yield (inner.close_line, inner.close_col + 1, "end", item)
        else:
            if item.kind == "list":
                for element in item.value:
                    if isinstance(element, Block):
                        yield from _anchors(element)
            yield (item.end_line, item.end_col, "end", item)
