"""The results of a batch run: :class:`BatchResult` (one row's answer or error) and
:class:`BatchOutput`, the resumable JSONL file they are appended to.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from modelplex.batch.rows import BatchInputError, id_key

# -- results -----------------------------------------------------------------------------------
#: ``json.dumps(record, ensure_ascii=False, default=str)``, its encoder made once, and the
#: one with ``\\u`` escapes for a record UTF-8 cannot hold (a lone surrogate)
_line_encoder = json.JSONEncoder(ensure_ascii=False, default=str)
_ascii_encoder = json.JSONEncoder(default=str)


def _std_line(record: Mapping[str, Any]) -> bytes:
    try:
        return (_line_encoder.encode(record) + "\n").encode()
    except UnicodeEncodeError:  # a lone surrogate: written as its \\u escape
        return (_ascii_encoder.encode(record) + "\n").encode()


try:  # orjson is optional: about a tenth of the standard encoder's time for a result line
    import orjson

    _ORJSON_LINE = orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE

    def encode_line(record: Mapping[str, Any]) -> bytes:
        """One output line: ``record`` as JSON (UTF-8, anything else as its ``str``) and
        ``\\n``."""
        try:
            data: bytes = orjson.dumps(record, default=str, option=_ORJSON_LINE)
        except TypeError:  # what orjson refuses (an int over 64 bits, a lone surrogate)
            return _std_line(record)
        return data

except ImportError:  # pragma: no cover - depends on the environment
    encode_line = _std_line


@attrs.define
class BatchResult:
    """What became of one row: ``answer`` (and ``value`` when parsed), or ``error``."""

    id: Any
    line: int
    answer: str | None = None
    value: Any = None
    error: str | None = None
    error_type: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency: float = 0.0
    model: str | None = None
    attempts: int = 1
    cost: float | None = None  # in ``currency``; None when the price is unknown
    currency: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the row was answered."""
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """The JSON line written for it."""
        out: dict[str, Any] = {"id": self.id, "line": self.line}
        if self.error is None:
            out["answer"] = self.answer
            if self.value is not None:
                value = self.value
                if hasattr(value, "model_dump"):
                    value = value.model_dump(mode="json")
                out["value"] = value
        else:
            out["error"] = self.error
            out["error_type"] = self.error_type
        out["usage"] = {"prompt_tokens": self.prompt_tokens,
                        "completion_tokens": self.completion_tokens}
        out["cost"] = self.cost
        if self.currency is not None:
            out["currency"] = self.currency
        out["latency"] = round(self.latency, 4)
        out["model"] = self.model
        out["attempts"] = self.attempts
        return out


class BatchOutput:
    """A JSONL results file written one line per row, flushed per line, resumable.

    Opening it reads what an earlier run wrote: a torn last line (the process was killed
    mid-write) is cut off; ``done`` holds the ids answered and ``failed`` the ids whose last
    line is an error. A file written by another model, or with another template, schema,
    system prompt or options (``fingerprint``), is refused. :meth:`compact` keeps only the
    last line of each id (after errors were run again).
    """

    def __init__(self, path: str | os.PathLike[str], *, model: str | None = None,
                 run: str | None = None) -> None:
        self.path = Path(path)
        self.model = model
        self.run = run
        self.done: set[str] = set()
        self.failed: set[str] = set()
        self.lines = 0
        self._repeated = False
        self._read_done = False
        self._handle: io.BufferedWriter | None = None

    def read(self) -> BatchOutput:
        """Read the file so far (repairing a torn line), without opening it for writing."""
        self.done.clear()
        self.failed.clear()
        try:
            if self.path.exists():
                self._read()
        except IsADirectoryError:
            raise BatchInputError("is a directory: give a file for the output",
                                  source=str(self.path)) from None
        except OSError as err:
            raise BatchInputError(f"cannot use the output ({err.strerror}): choose a "
                                  "readable and writable path", source=str(self.path)
                                  ) from None
        self._read_done = True
        return self

    def open(self) -> BatchOutput:
        """Read the file so far (repairing a torn line), then open it for appending."""
        where = str(self.path)
        if not self._read_done:
            self.read()
        try:
            handle = open(self.path, "ab")  # noqa: SIM115
        except IsADirectoryError:
            raise BatchInputError("is a directory: give a file for the output",
                                  source=where) from None
        except OSError as err:
            raise BatchInputError(f"cannot write the output here ({err.strerror}): choose a "
                                  "writable path", source=where) from None
        self._handle = handle
        return self

    def _read(self) -> None:
        where = str(self.path)
        with open(self.path, "rb+") as raw:
            data_end = raw.seek(0, os.SEEK_END)
            if data_end:
                raw.seek(data_end - 1)
                if raw.read(1) != b"\n":  # a torn last line: cut it off
                    raw.seek(0)
                    keep = 0
                    for chunk_line in iter(raw.readline, b""):
                        if chunk_line.endswith(b"\n"):
                            keep += len(chunk_line)
                    raw.truncate(keep)
            raw.seek(0)
            for number, line in enumerate(iter(raw.readline, b""), 1):
                try:
                    record = json.loads(line)
                except ValueError:
                    raise BatchInputError("this line of the output is not JSON: the file was "
                                          "not written by modelplex batch; give another -o",
                                          source=where, line=number) from None
                if not isinstance(record, dict) or "id" not in record:
                    raise BatchInputError("this line of the output has no id: the file was "
                                          "not written by modelplex batch; give another -o",
                                          source=where, line=number) from None
                self._check(record, where, number)
                key = id_key(record["id"])
                if key in self.done or key in self.failed:
                    self._repeated = True
                if "error" in record:
                    self.failed.add(key)
                    self.done.discard(key)
                else:
                    self.done.add(key)
                    self.failed.discard(key)
                self.lines = number

    def _check(self, record: Mapping[str, Any], where: str, number: int) -> None:
        run = record.get("run")
        if self.run is None or run is None or run == self.run:
            return
        asked = record.get("asked")
        if self.model is not None and asked is not None and asked != self.model:
            raise BatchInputError(
                f"this output was written by a run of model {asked!r}, not {self.model!r}: "
                f"resume with -m {asked}, or write to another -o", source=where, line=number)
        raise BatchInputError(
            "this output was written by a run with another template, schema, system prompt "
            "or options: resume with the same ones, or write to another -o",
            source=where, line=number)

    def write(self, result: BatchResult) -> None:
        """Append ``result`` as one line and flush it."""
        if self._handle is None:
            self.open()
        assert self._handle is not None
        record = result.to_dict()
        if self.model is not None:
            record["asked"] = self.model
        if self.run is not None:
            record["run"] = self.run
        self._handle.write(encode_line(record))
        self._handle.flush()
        key = id_key(result.id)
        if key in self.done or key in self.failed:
            self._repeated = True
        (self.failed if result.error else self.done).add(key)
        (self.done if result.error else self.failed).discard(key)
        self.lines += 1

    def close(self) -> None:
        """Close the file (a repeated id is compacted away first)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self._repeated:
            self.compact()

    def compact(self) -> None:
        """Keep only the last line written for each id (atomically: a new file renamed over
        the old)."""
        last: dict[str, int] = {}
        with open(self.path, encoding="utf-8") as handle:
            for number, line in enumerate(handle):
                last[id_key(json.loads(line)["id"])] = number
        keep = set(last.values())
        del last
        tmp = self.path.with_name(self.path.name + ".compact")
        with open(self.path, encoding="utf-8") as src, open(tmp, "w", encoding="utf-8") as dst:
            for number, line in enumerate(src):
                if number in keep:
                    dst.write(line)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, self.path)
        self._repeated = False
