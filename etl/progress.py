"""A small progress bar for people at a terminal; silent in CI, Airflow logs and pipes."""

from __future__ import annotations

import os
import sys
import time
from types import TracebackType
from typing import TextIO


def progress_enabled(stream: TextIO | None = None) -> bool:
    stream = stream or sys.stderr
    if os.environ.get("CI") or os.environ.get("AIRFLOW_CTX_DAG_ID") or os.environ.get("NO_PROGRESS"):
        return False
    return hasattr(stream, "isatty") and stream.isatty()


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
