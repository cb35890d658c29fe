"""The files and batches of ``/v1/files`` and ``/v1/batches`` in the server's PostgreSQL store.

:data:`STATEMENTS` is the migration that adds the tables (listed in
:data:`modelplex_server.pg_store.MIGRATIONS`, the same version as SQLite's); :class:`PgBatches`
is the part of :class:`~modelplex_server.pg_store.PostgresConversationStore` that reads and
writes them. A batch changes under a row lock (``SELECT ... FOR UPDATE``), so a cancel and a
runner's update never lose each other; a result is inserted once per ``(batch, line)``
together with its count. Replicas sharing the database run each batch once: the runner that
claims it (:meth:`PgBatches.claim_batch`). A file or batch created under a limit (``most``)
is counted and inserted in one transaction holding an advisory lock on its owner's files (or
batches), so creates at once, through any replica, are counted one after another.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from modelplex_server.batch_store import OPEN_STATUSES, BatchRecord, BatchStore, FileRecord

__all__ = ["STATEMENTS", "PgBatches"]

T = TypeVar("T")
Conn = Any

STATEMENTS = (
    """CREATE TABLE files (
        seq BIGSERIAL UNIQUE,
        id TEXT PRIMARY KEY,
        owner TEXT,
        purpose TEXT NOT NULL,
        filename TEXT NOT NULL,
        bytes BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        kind TEXT NOT NULL,
        batch_id TEXT,
        content BYTEA
    )""",
    "CREATE INDEX files_owner ON files(owner)",
    """CREATE TABLE batches (
        seq BIGSERIAL UNIQUE,
        id TEXT PRIMARY KEY,
        owner TEXT,
        status TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        total INTEGER NOT NULL DEFAULT 0,
        completed INTEGER NOT NULL DEFAULT 0,
        failed INTEGER NOT NULL DEFAULT 0,
        data TEXT NOT NULL,
        claimed_by TEXT,
        claimed_at DOUBLE PRECISION
    )""",
    "CREATE INDEX batches_status ON batches(status)",
    """CREATE TABLE batch_results (
        batch_id TEXT NOT NULL REFERENCES batches(id) ON DELETE CASCADE,
        line INTEGER NOT NULL,
        ok BOOLEAN NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (batch_id, line)
    )""",
)

#: The advisory lock classes of an owner's files and batches, held while counting and inserting
#: under a limit (the owner's name, hashed, is the lock's second key).
_FILES_LOCK, _BATCHES_LOCK = 0x6D7846, 0x6D7842

_FILE_COLUMNS = "id, owner, purpose, filename, bytes, created_at, kind, batch_id"
_BATCH_COLUMNS = "id, owner, status, created_at, total, completed, failed, data"


def _file(row: Any) -> FileRecord:
    return FileRecord(id=row["id"], owner=row["owner"], purpose=row["purpose"],
                      filename=row["filename"], bytes=row["bytes"],
                      created_at=row["created_at"], kind=row["kind"],
                      batch_id=row["batch_id"])


def _batch(row: Any) -> BatchRecord:
    return BatchRecord(id=row["id"], owner=row["owner"], status=row["status"],
                       created_at=row["created_at"], total=row["total"],
                       completed=row["completed"], failed=row["failed"],
                       data=json.loads(row["data"]))


async def _after(conn: Conn, table: str, after: str | None) -> int | None:
    """The sequence number of the cursor ``after`` (-1 when it is not there)."""
    if after is None:
        return None
    seq = await conn.fetchval(f"SELECT seq FROM {table} WHERE id = $1", after)
    return -1 if seq is None else int(seq)


async def _lock_owner(conn: Conn, kind: int, owner: str | None) -> None:
    """Take the transaction's advisory lock ``kind`` of ``owner`` (until it ends)."""
    await conn.execute("SELECT pg_advisory_xact_lock($1::int4, hashtext($2::text))", kind,
                       "" if owner is None else "key:" + owner)


async def _count_open(conn: Conn, owner: str | None) -> int:
    """How many batches of ``owner`` are in one of :data:`OPEN_STATUSES`."""
    return int(await conn.fetchval(
        "SELECT COUNT(*) FROM batches WHERE status = ANY($1::text[]) "
        "AND owner IS NOT DISTINCT FROM $2", list(OPEN_STATUSES), owner))


class PgBatches(BatchStore):
    """Files and batches in the store's PostgreSQL database (see the module docs)."""

    if TYPE_CHECKING:
        async def _run(self, work: Callable[[Conn], Awaitable[T]], *,
                       write: bool = False) -> T: ...

    async def create_file(self, record: FileRecord, content: bytes | None = None, *,
                          most: int | None = None) -> bool:
        """Keep a file (with ``most``: counted and inserted under the owner's lock)."""
        r = record

        async def work(conn: Conn) -> bool:
            if most is not None:
                await _lock_owner(conn, _FILES_LOCK, r.owner)
                if await conn.fetchval("SELECT COUNT(*) FROM files WHERE owner IS NOT "
                                       "DISTINCT FROM $1", r.owner) >= most:
                    return False
            added = await conn.fetchval(
                f"INSERT INTO files ({_FILE_COLUMNS}, content) VALUES ($1, $2, $3, $4, $5, "
                "$6, $7, $8, $9) ON CONFLICT (id) DO NOTHING RETURNING 1",
                r.id, r.owner, r.purpose, r.filename, r.bytes, r.created_at, r.kind,
                r.batch_id, content)
            return added is not None

        return await self._run(work, write=True)

    async def get_file(self, file_id: str) -> FileRecord | None:
        """The file, or None."""
        async def work(conn: Conn) -> FileRecord | None:
            row = await conn.fetchrow(f"SELECT {_FILE_COLUMNS} FROM files WHERE id = $1",
                                      file_id)
            return None if row is None else _file(row)

        return await self._run(work)

    async def file_content(self, file_id: str) -> bytes | None:
        """An upload's bytes."""
        async def work(conn: Conn) -> bytes | None:
            value = await conn.fetchval("SELECT content FROM files WHERE id = $1", file_id)
            return None if value is None else bytes(value)

        return await self._run(work)

    async def list_files(self, owner: str | None, *, purpose: str | None = None,
                         after: str | None = None, limit: int = 100,
                         order: str = "desc") -> list[FileRecord]:
        """Files of ``owner``, newest first (or oldest first)."""
        async def work(conn: Conn) -> list[FileRecord]:
            cursor = await _after(conn, "files", after)
            if cursor == -1:
                return []
            compare, direction = (">", "ASC") if order == "asc" else ("<", "DESC")
            rows = await conn.fetch(
                f"SELECT {_FILE_COLUMNS} FROM files WHERE ($1::text IS NULL OR owner = $1) "
                f"AND ($2::text IS NULL OR purpose = $2) AND ($3::bigint IS NULL OR seq "
                f"{compare} $3) ORDER BY seq {direction} LIMIT $4",
                owner, purpose, cursor, limit)
            return [_file(row) for row in rows]

        return await self._run(work)

    async def delete_file(self, file_id: str) -> bool:
        """Delete a file."""
        async def work(conn: Conn) -> bool:
            found = await conn.fetchval("DELETE FROM files WHERE id = $1 RETURNING 1", file_id)
            return found is not None

        return await self._run(work, write=True)

    async def create_batch(self, record: BatchRecord, *, most: int | None = None) -> bool:
        """Keep a new batch (with ``most``: counted and inserted under the owner's lock)."""
        r = record

        async def work(conn: Conn) -> bool:
            if most is not None:
                await _lock_owner(conn, _BATCHES_LOCK, r.owner)
                if await _count_open(conn, r.owner) >= most:
                    return False
            await conn.execute(f"INSERT INTO batches ({_BATCH_COLUMNS}) VALUES "
                               "($1, $2, $3, $4, $5, $6, $7, $8)",
                               r.id, r.owner, r.status, r.created_at, r.total, r.completed,
                               r.failed, json.dumps(r.data))
            return True

        return await self._run(work, write=True)

    async def get_batch(self, batch_id: str) -> BatchRecord | None:
        """The batch, or None."""
        async def work(conn: Conn) -> BatchRecord | None:
            row = await conn.fetchrow(f"SELECT {_BATCH_COLUMNS} FROM batches WHERE id = $1",
                                      batch_id)
            return None if row is None else _batch(row)

        return await self._run(work)

    async def list_batches(self, owner: str | None, *, after: str | None = None,
                           limit: int = 20) -> list[BatchRecord]:
        """Batches of ``owner``, newest first."""
        async def work(conn: Conn) -> list[BatchRecord]:
            cursor = await _after(conn, "batches", after)
            rows = await conn.fetch(
                f"SELECT {_BATCH_COLUMNS} FROM batches WHERE ($1::text IS NULL OR owner = $1) "
                "AND ($2::bigint IS NULL OR seq < $2) ORDER BY seq DESC LIMIT $3",
                owner, cursor, limit)
            return [_batch(row) for row in rows]

        return await self._run(work)

    async def open_batches(self) -> list[str]:
        """The batches a runner has work for, oldest first."""
        async def work(conn: Conn) -> list[str]:
            return [row["id"] for row in await conn.fetch(
                "SELECT id FROM batches WHERE status = ANY($1::text[]) ORDER BY seq",
                list(OPEN_STATUSES))]

        return await self._run(work)

    async def count_open_batches(self, owner: str | None) -> int:
        """Open batches of ``owner``."""
        async def work(conn: Conn) -> int:
            return await _count_open(conn, owner)

        return await self._run(work)

    async def update_batch(self, batch_id: str, *, expect: Collection[str] | None = None,
                           status: str | None = None, total: int | None = None,
                           data: Mapping[str, Any] | None = None) -> BatchRecord | None:
        """Change a batch under its row lock (None if absent or not in ``expect``)."""
        async def work(conn: Conn) -> BatchRecord | None:
            row = await conn.fetchrow(f"SELECT {_BATCH_COLUMNS} FROM batches WHERE id = $1 "
                                      "FOR UPDATE", batch_id)
            if row is None or (expect is not None and row["status"] not in expect):
                return None
            record = _batch(row)
            record.status = status or record.status
            record.total = record.total if total is None else total
            record.data.update(data or {})
            await conn.execute("UPDATE batches SET status = $1, total = $2, data = $3 "
                               "WHERE id = $4", record.status, record.total,
                               json.dumps(record.data), batch_id)
            return record

        return await self._run(work, write=True)

    async def add_result(self, batch_id: str, line: int, ok: bool, data: str) -> bool:
        """Keep a line's result once, and count it (one transaction)."""
        async def work(conn: Conn) -> bool:
            added = await conn.fetchval(
                "INSERT INTO batch_results (batch_id, line, ok, data) SELECT $1, $2, $3, $4 "
                "WHERE EXISTS (SELECT 1 FROM batches WHERE id = $1) "
                "ON CONFLICT (batch_id, line) DO NOTHING RETURNING 1",
                batch_id, line, ok, data)
            if added is None:
                return False
            column = "completed" if ok else "failed"
            await conn.execute(f"UPDATE batches SET {column} = {column} + 1 WHERE id = $1",
                               batch_id)
            return True

        return await self._run(work, write=True)

    async def done_lines(self, batch_id: str) -> set[int]:
        """The lines with a result."""
        async def work(conn: Conn) -> set[int]:
            return {int(row["line"]) for row in await conn.fetch(
                "SELECT line FROM batch_results WHERE batch_id = $1", batch_id)}

        return await self._run(work)

    async def batch_results(self, batch_id: str, ok: bool, *, after: int = -1,
                            limit: int = 1000) -> list[tuple[int, str]]:
        """Results in line order."""
        async def work(conn: Conn) -> list[tuple[int, str]]:
            return [(int(row["line"]), str(row["data"])) for row in await conn.fetch(
                "SELECT line, data FROM batch_results WHERE batch_id = $1 AND ok = $2 AND "
                "line > $3 ORDER BY line LIMIT $4", batch_id, ok, after, limit)]

        return await self._run(work)

    async def claim_batch(self, batch_id: str, runner: str, *, stale: float) -> bool:
        """Claim a batch unless another runner renewed its claim within ``stale`` s."""
        now = time.time()

        async def work(conn: Conn) -> bool:
            found = await conn.fetchval(
                "UPDATE batches SET claimed_by = $1, claimed_at = $2 WHERE id = $3 AND "
                "(claimed_by IS NULL OR claimed_by = $1 OR claimed_at < $4) RETURNING 1",
                runner, now, batch_id, now - stale)
            return found is not None

        return await self._run(work, write=True)

    async def release_batch(self, batch_id: str, runner: str) -> None:
        """Give up a claim."""
        async def work(conn: Conn) -> None:
            await conn.execute("UPDATE batches SET claimed_by = NULL, claimed_at = NULL "
                               "WHERE id = $1 AND claimed_by = $2", batch_id, runner)

        await self._run(work, write=True)
