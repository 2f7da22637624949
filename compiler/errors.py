"""The one error type of the compiler: a message with the place in the user's file it is about."""

import difflib


class CompileError(Exception):
    """An error in a user's net or solver definition, located at file:line:col when known.

    `str(error)` is what command-line tools print: `file:line:col: message`, then the hint on a
    line of its own. Line and column are 1-based, as editors count them.
    """

    def __init__(self, message, file=None, line=None, col=None, hint=None):
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.col = col
        self.hint = hint

    @property
    def location(self):
        parts = [self.file or "<input>"]
        if self.line is not None:
            parts.append(str(self.line))
            if self.col is not None:
                parts.append(str(self.col))
        return ":".join(parts)

    def __str__(self):
        text = f"{self.location}: {self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class CompileErrors(CompileError):
    """Several independent problems found by one check, in file order. It reads as the first
    (message, file, line, col, hint) and prints them all, one located message each."""

    def __init__(self, errors):
        first = errors[0]
        super().__init__(first.message, first.file, first.line, first.col, first.hint)
        self.errors = list(errors)

    def __str__(self):
        return "\n".join(CompileError.__str__(error) for error in self.errors)


def raise_all(errors):
    """Raise nothing, the one error, or all of them as CompileErrors."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise CompileErrors(errors)


def did_you_mean(word, candidates, what="", limit=3):
    """A hint naming the closest candidates to a misspelt word, or None when none is close."""
    close = difflib.get_close_matches(word, list(candidates), n=limit, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in candidates}
        if word.lower() in lowered:
            close = [lowered[word.lower()]]
    if not close:
        return None
    quoted = " or ".join(f"'{c}'" for c in close)
    return f"did you mean {quoted}{' ' + what if what else ''}?"
