"""Text on its way to a terminal, with every control character escaped.

Model cards, file names, class names and messages can come from files someone else made. Written
raw, an escape sequence in them would set the window title, clear the screen or recolour the
terminal (and ``\\r`` or a bidirectional override would hide what is shown). :func:`safe` writes
each such character as Python's ``repr`` does (``\\x1b``, ``\\u202e``), and :class:`SafeStream`
does it for everything a command prints on standard output.
"""

from __future__ import annotations

from typing import Any, TextIO


def _escaped(char: str) -> str:
    return char if char.isprintable() or char in "\n\t" else repr(char)[1:-1]


def safe(text: str) -> str:
    """``text`` with every unprintable character escaped except newlines and tabs (C0 and C1
    controls, DEL, bidirectional overrides, undecodable bytes of a file name)."""
    if text.isprintable():
        return text
    return "".join(map(_escaped, text))


class SafeStream:
    """A text stream that writes everything through :func:`safe`; other attributes are the
    wrapped stream's (``fileno``, ``isatty``, ``encoding`` ...)."""

    def __init__(self, stream: TextIO):
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(safe(text))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
