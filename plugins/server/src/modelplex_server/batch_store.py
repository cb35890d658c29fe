"""What the server keeps for ``/v1/files`` and ``/v1/batches``: the records, the store interface
every conversation store implements (:class:`BatchStore`), and its memory version.

A file (:class:`FileRecord`) is an upload (its bytes are kept in the store, bounded by
``[server] max_file_bytes``) or a batch's output or error file, whose content is the batch's
stored results (:meth:`BatchStore.batch_results`) rather than bytes of its own. A batch
(:class:`BatchRecord`) is a row with its status, counts and the rest of OpenAI's batch object;
each answered line is one result row keyed by ``(batch, line)``, stored as it comes, so a line
is answered once even across a restart (:meth:`BatchStore.add_result` refuses a second). Both
belong to the API key that made them (``owner``), like conversations.

The limits on what one key keeps (``[server] max_files``, ``max_open_batches``) are checked
by the store in the step that inserts (:meth:`BatchStore.create_file` and
:meth:`BatchStore.create_batch` with ``most``): one transaction, so uploads made at once,
through one server or several sharing the store, never pass the limit together.

A runner claims the batches it runs (:meth:`BatchStore.claim_batch`) and renews the claim while
it runs them, so the workers and replicas sharing a store run each batch once; a claim not
renewed for ``stale`` seconds (its process died) may be taken over.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Collection, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["OPEN_STATUSES", "BatchRecord", "BatchStore", "FileRecord", "MemoryBatches",
           "new_id"]

#: The statuses of a batch a runner still has work for.
OPEN_STATUSES = ("validating", "in_progress", "finalizing", "cancelling")


def new_id(prefix: str) -> str:
    """A new id: ``file-<hex>`` or ``batch_<hex>`` as OpenAI's look."""
    return f"{prefix}{uuid.uuid4().hex[:24]}"


def _now() -> int:
    return int(time.time())


class FileRecord(BaseModel):
    """A file of ``/v1/files``: an upload, or a batch's ``output`` or ``error`` file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(default_factory=lambda: new_id("file-"))
    owner: str | None = None
    purpose: str = "batch"
    filename: str = "file.jsonl"
    bytes: int = 0
    created_at: int = Field(default_factory=_now)
    kind: Literal["upload", "output", "error"] = "upload"
    batch_id: str | None = None

    def public(self) -> dict[str, Any]:
        """OpenAI's file object."""
        return {"id": self.id, "object": "file", "bytes": self.bytes,
                "created_at": self.created_at, "filename": self.filename,
                "purpose": self.purpose, "status": "processed", "expires_at": None,
                "status_details": None}


class BatchRecord(BaseModel):
    """A batch of ``/v1/batches``: its status, its counts and the rest of its object
    (``data``: endpoint, input file, window, metadata, errors, result files, times)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=lambda: new_id("batch_"))
    owner: str | None = None
    status: str = "validating"
    created_at: int = Field(default_factory=_now)
    total: int = 0
    completed: int = 0
    failed: int = 0
    data: dict[str, Any] = Field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        """OpenAI's batch object."""
        data = self.data
        out: dict[str, Any] = {
            "id": self.id, "object": "batch", "endpoint": data.get("endpoint"),
            "errors": data.get("errors"), "input_file_id": data.get("input_file_id"),
            "completion_window": data.get("completion_window", "24h"),
            "status": self.status, "output_file_id": data.get("output_file_id"),
            "error_file_id": data.get("error_file_id"), "created_at": self.created_at}
        for name in ("in_progress_at", "expires_at", "finalizing_at", "completed_at",
                     "failed_at", "expired_at", "cancelling_at", "cancelled_at"):
            out[name] = data.get(name)
        out["request_counts"] = {"total": self.total, "completed": self.completed,
                                 "failed": self.failed}
        out["metadata"] = data.get("metadata")
        out["model"] = data.get("model")
        out["usage"] = data.get("usage")
        return out


class BatchStore:
    """The part of a conversation store that keeps files and batches. Every store of the
    server implements it (memory, SQLite, PostgreSQL) and passes the same tests."""

    def _no_batches(self) -> NotImplementedError:
        return NotImplementedError(f"{type(self).__name__} does not keep files and batches")

    # -- files ----------------------------------------------------------------------------
    async def create_file(self, record: FileRecord, content: bytes | None = None, *,
                          most: int | None = None) -> bool:
        """Keep a file (an upload's ``content``; none for a batch's result files) and say
        true; with ``most``, only while its owner keeps fewer than ``most`` files, counted
        and inserted in one step. False, and nothing kept, at the limit or when a file with
        its id exists already (a batch's result file made by two runners at once)."""
        raise self._no_batches()

    async def get_file(self, file_id: str) -> FileRecord | None:
        """The file, or None."""
        raise self._no_batches()

    async def file_content(self, file_id: str) -> bytes | None:
        """An upload's bytes (None for a result file or no such file)."""
        raise self._no_batches()

    async def list_files(self, owner: str | None, *, purpose: str | None = None,
                         after: str | None = None, limit: int = 100,
                         order: str = "desc") -> list[FileRecord]:
        """Files of ``owner`` (every owner's for None), newest first (``order="asc"``:
        oldest first), after the file ``after``, at most ``limit``."""
        raise self._no_batches()

    async def delete_file(self, file_id: str) -> bool:
        """Delete a file; false if there was none."""
        raise self._no_batches()

    # -- batches ------------------------------------------------------------------------------
    async def create_batch(self, record: BatchRecord, *, most: int | None = None) -> bool:
        """Keep a new batch and say true; with ``most``, only while its owner has fewer than
        ``most`` batches in :data:`OPEN_STATUSES`, counted and inserted in one step (false,
        and nothing kept, at the limit)."""
        raise self._no_batches()

    async def get_batch(self, batch_id: str) -> BatchRecord | None:
        """The batch, or None."""
        raise self._no_batches()

    async def list_batches(self, owner: str | None, *, after: str | None = None,
                           limit: int = 20) -> list[BatchRecord]:
        """Batches of ``owner`` (every owner's for None), newest first, after ``after``."""
        raise self._no_batches()

    async def open_batches(self) -> list[str]:
        """The ids of batches in one of :data:`OPEN_STATUSES`, oldest first."""
        raise self._no_batches()

    async def count_open_batches(self, owner: str | None) -> int:
        """How many batches of ``owner`` (of no key, for None) are in one of
        :data:`OPEN_STATUSES` (``[server] max_open_batches`` caps it)."""
        raise self._no_batches()

    async def update_batch(self, batch_id: str, *, expect: Collection[str] | None = None,
                           status: str | None = None, total: int | None = None,
                           data: Mapping[str, Any] | None = None) -> BatchRecord | None:
        """Change a batch in one step: its ``status``, ``total`` and fields of its object
        (``data``);
        None (and nothing changed) if there is no such batch or its status is not one of
        ``expect``."""
        raise self._no_batches()

    async def add_result(self, batch_id: str, line: int, ok: bool, data: str) -> bool:
        """Keep line ``line``'s result (``ok``: an output line, else an error line) and count
        it; false (nothing changed) when that line has a result already."""
        raise self._no_batches()

    async def done_lines(self, batch_id: str) -> set[int]:
        """The lines of the batch that have a result."""
        raise self._no_batches()

    async def batch_results(self, batch_id: str, ok: bool, *, after: int = -1,
                            limit: int = 1000) -> list[tuple[int, str]]:
        """``(line, result)`` of the output (``ok``) or error lines after line ``after``,
        in line order, at most ``limit``."""
        raise self._no_batches()

    async def claim_batch(self, batch_id: str, runner: str, *, stale: float) -> bool:
        """Claim (or renew the claim on) a batch for ``runner``; false when another runner
        renewed its claim within ``stale`` seconds."""
        raise self._no_batches()

    async def release_batch(self, batch_id: str, runner: str) -> None:
        """Give up ``runner``'s claim (a stopping server: another may resume at once)."""
        raise self._no_batches()


def _page(items: list[Any], after: str | None, limit: int) -> list[Any]:
    if after is not None:
        ids = [item.id for item in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    return items[:limit]


class MemoryBatches(BatchStore):
    """Files and batches in this process (lost when it stops)."""

    def __init__(self) -> None:
        self._files: dict[str, tuple[FileRecord, bytes | None]] = {}
        self._batches: dict[str, BatchRecord] = {}
        self._results: dict[str, dict[int, tuple[bool, str]]] = {}
        self._claims: dict[str, tuple[str, float]] = {}
        self._batch_lock = asyncio.Lock()

    async def create_file(self, record: FileRecord, content: bytes | None = None, *,
                          most: int | None = None) -> bool:
        """Keep a file (counted and kept without a pause: one step)."""
        if record.id in self._files:
            return False
        if most is not None and sum(f.owner == record.owner
                                    for f, _ in self._files.values()) >= most:
            return False
        self._files[record.id] = (record, content)
        return True

    async def get_file(self, file_id: str) -> FileRecord | None:
        """The file, or None."""
        found = self._files.get(file_id)
        return found[0] if found else None

    async def file_content(self, file_id: str) -> bytes | None:
        """An upload's bytes."""
        found = self._files.get(file_id)
        return found[1] if found else None

    async def list_files(self, owner: str | None, *, purpose: str | None = None,
                         after: str | None = None, limit: int = 100,
                         order: str = "desc") -> list[FileRecord]:
        """Files of ``owner``, newest first (insertion order)."""
        items = [f for f, _ in self._files.values()
                 if (owner is None or f.owner == owner)
                 and (purpose is None or f.purpose == purpose)]
        if order != "asc":
            items.reverse()
        return _page(items, after, limit)

    async def delete_file(self, file_id: str) -> bool:
        """Delete a file."""
        return self._files.pop(file_id, None) is not None

    async def create_batch(self, record: BatchRecord, *, most: int | None = None) -> bool:
        """Keep a new batch (counted and kept without a pause: one step)."""
        if most is not None and self._count_open(record.owner) >= most:
            return False
        self._batches[record.id] = record.model_copy(deep=True)
        self._results[record.id] = {}
        return True

    async def get_batch(self, batch_id: str) -> BatchRecord | None:
        """The batch, or None."""
        found = self._batches.get(batch_id)
        return found.model_copy(deep=True) if found else None

    async def list_batches(self, owner: str | None, *, after: str | None = None,
                           limit: int = 20) -> list[BatchRecord]:
        """Batches of ``owner``, newest first."""
        items = [b.model_copy(deep=True) for b in reversed(self._batches.values())
                 if owner is None or b.owner == owner]
        return _page(items, after, limit)

    async def open_batches(self) -> list[str]:
        """The batches a runner has work for."""
        return [b.id for b in self._batches.values() if b.status in OPEN_STATUSES]

    async def count_open_batches(self, owner: str | None) -> int:
        """Open batches of ``owner``."""
        return self._count_open(owner)

    def _count_open(self, owner: str | None) -> int:
        return sum(b.owner == owner and b.status in OPEN_STATUSES
                   for b in self._batches.values())

    async def update_batch(self, batch_id: str, *, expect: Collection[str] | None = None,
                           status: str | None = None, total: int | None = None,
                           data: Mapping[str, Any] | None = None) -> BatchRecord | None:
        """Change a batch in one step."""
        async with self._batch_lock:
            found = self._batches.get(batch_id)
            if found is None or (expect is not None and found.status not in expect):
                return None
            if status is not None:
                found.status = status
            if total is not None:
                found.total = total
            found.data.update(data or {})
            return found.model_copy(deep=True)

    async def add_result(self, batch_id: str, line: int, ok: bool, data: str) -> bool:
        """Keep a line's result once."""
        results = self._results.setdefault(batch_id, {})
        batch = self._batches.get(batch_id)
        if line in results or batch is None:
            return False
        results[line] = (ok, data)
        if ok:
            batch.completed += 1
        else:
            batch.failed += 1
        return True

    async def done_lines(self, batch_id: str) -> set[int]:
        """The lines with a result."""
        return set(self._results.get(batch_id, {}))

    async def batch_results(self, batch_id: str, ok: bool, *, after: int = -1,
                            limit: int = 1000) -> list[tuple[int, str]]:
        """Results in line order."""
        results = self._results.get(batch_id, {})
        lines = sorted(n for n, (good, _) in results.items() if good == ok and n > after)
        return [(n, results[n][1]) for n in lines[:limit]]

    async def claim_batch(self, batch_id: str, runner: str, *, stale: float) -> bool:
        """Claim a batch unless another runner holds a fresh claim."""
        now = time.time()
        held = self._claims.get(batch_id)
        if held is not None and held[0] != runner and held[1] > now - stale:
            return False
        self._claims[batch_id] = (runner, now)
        return True

    async def release_batch(self, batch_id: str, runner: str) -> None:
        """Give up a claim."""
        if self._claims.get(batch_id, ("", 0.0))[0] == runner:
            del self._claims[batch_id]
