"""The error of a batch run's bad input: :class:`BatchInputError` (a row, the input or the
output file), naming the file, the line and the fix."""

from __future__ import annotations

from modelplex.errors import ConfigurationError

__all__ = ["BatchInputError"]


class BatchInputError(ConfigurationError):
    """A row (or the input or output file) that cannot be used: the message names the file,
    the line and the fix."""

    def __init__(self, message: str, *, source: str | None = None,
                 line: int | None = None) -> None:
        where = ":".join(str(p) for p in (source, line) if p is not None)
        super().__init__(f"{where}: {message}" if where else message)
        self.source = source
        self.line = line
