"""The one error type of the activity tools: a user-facing message with an optional location."""
from __future__ import annotations


class ActivityError(Exception):
    """A problem with the user's input (a file, a line in it, a value).

    `str(error)` is `file:line: message` (or `file: message`, or just `message`), which the
    command-line tools print as their single error line before exiting with status 1.
    """

    def __init__(self, message: str, file: str | None = None, line: int | None = None):
        # Passing every field to Exception keeps the error picklable, so it survives the trip
        # back from a worker process of `lrcn-activity-data --jobs N`.
        super().__init__(message, file, line)
        self.message = message
        self.file = file
        self.line = line

    def __str__(self) -> str:
        if self.file is None:
            return self.message
        if self.line is None:
            return f"{self.file}: {self.message}"
        return f"{self.file}:{self.line}: {self.message}"
