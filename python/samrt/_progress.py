"""A one-line status display on stderr for the command lines (never used by the library,
which reports progress through callbacks): shown only on a terminal, and not with
``--quiet``; in a pipe or a log file it writes nothing."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["StatusLine"]


class StatusLine:
    """``show(text)`` replaces the line with ``text`` and the seconds since the start;
    ``close()`` clears it."""

    def __init__(self, prefix: str, *, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.prefix = prefix
        self.enabled = not quiet and self.stream.isatty()
        self.started = time.monotonic()
        self._shown = False

    def show(self, text: str) -> None:
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.started
        self.stream.write(f"\r\033[K{self.prefix}{text} ({elapsed:.0f} s)")
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        if self.enabled and self._shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._shown = False
