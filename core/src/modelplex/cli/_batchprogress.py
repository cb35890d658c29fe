"""The progress of a batch run on standard error: :class:`Progress` (``modelplex batch``)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from modelplex.batch import BatchResult

__all__ = ["Progress"]


class Progress:
    """Progress of a run on ``out``: a bar redrawn in place on a terminal, a plain line every
    ``every`` seconds otherwise, and a closing summary."""

    def __init__(self, total: int, out: TextIO, *, every: float = 10.0, width: int = 24,
                 tty: bool | None = None) -> None:
        self.total = total
        self.out = out
        self.every = every
        self.width = width
        self.tty = out.isatty() if tty is None else tty
        self.done = self.errors = self.tokens = 0
        self.cost = 0.0
        self.currency = ""
        self.started = time.monotonic()
        self._last = self.started

    def add(self, result: BatchResult) -> None:
        self.done += 1
        self.errors += 0 if result.ok else 1
        self.tokens += result.prompt_tokens + result.completion_tokens
        if result.cost:
            self.cost += result.cost
            self.currency = result.currency or "USD"
        now = time.monotonic()
        if self.tty:
            if now - self._last >= 0.1 or self.done == self.total:
                self._last = now
                self.out.write("\r" + self.line(now, bar=True))
                self.out.flush()
        elif now - self._last >= self.every:
            self._last = now
            self.out.write(self.line(now) + "\n")
            self.out.flush()

    def line(self, now: float | None = None, *, bar: bool = False) -> str:
        elapsed = (now or time.monotonic()) - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = max(0, self.total - self.done)
        eta = f"{left / rate:.0f}s" if rate > 0 else "?"
        text = (f"{self.done}/{self.total} rows, {rate:.1f}/s, {self.errors} errors, "
                f"{self.tokens} tokens{self._spent()}, ETA {eta}")
        if bar:
            filled = int(self.width * min(self.done, self.total) / self.total) if self.total \
                else self.width
            return f"[{'#' * filled}{'-' * (self.width - filled)}] {text}"
        return text

    def _spent(self) -> str:
        return f", {self.cost:.4f} {self.currency}" if self.currency else ""

    def finish(self, skipped: int, output: str) -> None:
        if self.tty:
            self.out.write("\n")
        elapsed = time.monotonic() - self.started
        self.out.write(f"done: {self.done - self.errors} answered, {self.errors} errors, "
                       f"{skipped} already in {output}; {self.tokens} tokens{self._spent()} in "
                       f"{elapsed:.1f}s\n")
        self.out.flush()
