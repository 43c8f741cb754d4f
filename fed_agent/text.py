"""Bounded text: what a node or an error says, fit for a ledger cell, a log line or a checkpoint.

Every string that comes from outside the cloud (an ES's error reason, an exception raised on a
reply's content) passes :func:`one_line` before it is stored or logged: one line of printable
characters, at most :data:`MAX_TEXT` of them, so that no reply can put megabytes into
``ledger.csv``, break a CSV reader with a line break or a NUL, or make the ledger unwritable
as UTF-8 with a lone surrogate.
"""

from __future__ import annotations

MAX_TEXT = 200
"""The most characters a stored or logged reason keeps."""


def _printable(char: str) -> str:
    """``char`` if printable; a space for other whitespace; else its escape (``\\x00``)."""
    if char.isprintable():
        return char
    if char.isspace():
        return " "
    return char.encode("unicode_escape").decode("ascii")


def one_line(text: object, limit: int = MAX_TEXT) -> str:
    """The last non-empty line of ``text`` (an exception's message), its control characters
    and lone surrogates escaped, at most ``limit`` chars."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    line = "".join(map(_printable, lines[-1])) if lines else "no reason given"
    return line if len(line) <= limit else line[: limit - 3] + "..."
