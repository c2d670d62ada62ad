"""A small progress bar for people at a terminal; silent in CI, Airflow logs and pipes.

Off unless the command line turns it on (`show_on_terminal(settings.progress)`): library code run by Airflow or
a test never draws, and whether a person is watching is decided once, from the settings."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO

_wanted = False


def show_on_terminal(wanted: bool) -> None:
    """Draw progress bars from now on in this process, when their stream is a terminal."""
    global _wanted
    _wanted = wanted


def progress_enabled(stream: TextIO | None = None) -> bool:
    stream = stream or sys.stderr
    return _wanted and hasattr(stream, "isatty") and stream.isatty()


class Progress:
    """`with Progress(total, "reading") as bar: bar.advance(n)` — redraws at most 10 times a second."""

    def __init__(self, total: int, label: str, unit: str = "", stream: TextIO | None = None) -> None:
        self.total, self.label, self.unit = max(total, 0), label, unit
        self.stream = stream or sys.stderr
        self.enabled = progress_enabled(self.stream)
        self.done = 0
        self._last_draw = 0.0
        self._started = time.monotonic()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.enabled:
            self._draw(force=True)
            self.stream.write("\n")
            self.stream.flush()

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.enabled:
            self._draw()

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_draw < 0.1:
            return
        self._last_draw = now
        share = self.done / self.total if self.total else 1.0
        filled = int(share * 30)
        elapsed = now - self._started
        line = (f"\r{self.label:<12} [{'#' * filled}{'.' * (30 - filled)}] "
                f"{self.done:,}/{self.total:,}{self.unit} {elapsed:5.1f}s")
        self.stream.write(line)
        self.stream.flush()
