"""A terminal progress bar for model downloads."""

from __future__ import annotations

import time
from typing import TextIO

from modelplex.types import PullProgress, human_size

__all__ = ["ProgressBar"]


class ProgressBar:
    """Draws pull progress on one line: status, bar, bytes and transfer rate."""

    def __init__(self, out: TextIO, width: int = 30) -> None:
        self.out = out
        self.width = width
        self._status = ""
        self._started = time.monotonic()
        self._first_completed: int | None = None
        self._tty = out.isatty()

    def render(self, event: PullProgress, now: float | None = None) -> str:
        """The line for one event."""
        if not event.total:
            return event.status
        done = event.completed or 0
        filled = int(self.width * min(done, event.total) / event.total)
        bar = "#" * filled + "-" * (self.width - filled)
        if self._first_completed is None:
            self._first_completed = done
        elapsed = (now if now is not None else time.monotonic()) - self._started
        rate = (done - self._first_completed) / elapsed if elapsed > 0 else 0.0
        return (f"{event.status} [{bar}] {human_size(done)}/{human_size(event.total)} "
                f"{human_size(int(rate))}/s")

    def update(self, event: PullProgress) -> None:
        """Show one event: redrawn in place on a terminal, one line per status otherwise."""
        changed = event.status != self._status
        if changed and self._status and self._tty:
            self.out.write("\n")
        if changed:
            self._started = time.monotonic()
            self._first_completed = None
        self._status = event.status
        line = self.render(event)
        if self._tty:
            self.out.write("\r" + line)
        elif changed:
            self.out.write(line + "\n")
        self.out.flush()

    def finish(self) -> None:
        """End the last line."""
        self.out.write("\n" if self._tty else "")
        self.out.flush()
