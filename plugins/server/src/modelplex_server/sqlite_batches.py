"""The files and batches of ``/v1/files`` and ``/v1/batches`` in the server's SQLite store.

:data:`SCHEMA` is the migration that adds the tables (listed in
:data:`modelplex_server.sqlite_store.MIGRATIONS`); :class:`SQLiteBatches` is the part of
:class:`~modelplex_server.sqlite_store.SQLiteConversationStore` that reads and writes them,
each change one transaction in the store's worker thread. A result is inserted once per
``(batch, line)`` together with its count, so the counts and the results always agree. A
file or batch created under a limit (``most``) is counted and inserted in one ``BEGIN
IMMEDIATE`` transaction, which holds the database's write lock: creates at once, from this
process or another sharing the file, are counted one after another.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from modelplex_server.batch_store import OPEN_STATUSES, BatchRecord, BatchStore, FileRecord

__all__ = ["SCHEMA", "SQLiteBatches"]

T = TypeVar("T")

SCHEMA = """
    CREATE TABLE files (
        id TEXT PRIMARY KEY,
        owner TEXT,
        purpose TEXT NOT NULL,
        filename TEXT NOT NULL,
        bytes INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        kind TEXT NOT NULL,
        batch_id TEXT,
        content BLOB
    );
    CREATE INDEX files_owner ON files(owner);
    CREATE TABLE batches (
        id TEXT PRIMARY KEY,
        owner TEXT,
        status TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        total INTEGER NOT NULL DEFAULT 0,
        completed INTEGER NOT NULL DEFAULT 0,
        failed INTEGER NOT NULL DEFAULT 0,
        data TEXT NOT NULL,
        claimed_by TEXT,
        claimed_at REAL
    );
    CREATE INDEX batches_status ON batches(status);
    CREATE TABLE batch_results (
        batch_id TEXT NOT NULL REFERENCES batches(id) ON DELETE CASCADE,
        line INTEGER NOT NULL,
        ok INTEGER NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (batch_id, line)
    );
"""

_FILE_COLUMNS = "id, owner, purpose, filename, bytes, created_at, kind, batch_id"
_BATCH_COLUMNS = "id, owner, status, created_at, total, completed, failed, data"


def _file(row: sqlite3.Row) -> FileRecord:
    return FileRecord(id=row["id"], owner=row["owner"], purpose=row["purpose"],
                      filename=row["filename"], bytes=row["bytes"],
                      created_at=row["created_at"], kind=row["kind"],
                      batch_id=row["batch_id"])


def _batch(row: sqlite3.Row) -> BatchRecord:
    return BatchRecord(id=row["id"], owner=row["owner"], status=row["status"],
                       created_at=row["created_at"], total=row["total"],
                       completed=row["completed"], failed=row["failed"],
                       data=json.loads(row["data"]))


def _after(conn: sqlite3.Connection, table: str, after: str | None) -> int | None:
    """The rowid of the cursor ``after`` (-1 when it is not there: an empty page)."""
    if after is None:
        return None
    row = conn.execute(f"SELECT rowid FROM {table} WHERE id = ?", (after,)).fetchone()
    return -1 if row is None else int(row[0])


def _count_open(conn: sqlite3.Connection, owner: str | None) -> int:
    """How many batches of ``owner`` are in one of :data:`OPEN_STATUSES`."""
    marks = ", ".join("?" for _ in OPEN_STATUSES)
    row = conn.execute(f"SELECT COUNT(*) FROM batches WHERE status IN ({marks}) "
                       "AND owner IS ?", (*OPEN_STATUSES, owner)).fetchone()
    return int(row[0])


class SQLiteBatches(BatchStore):
    """Files and batches in the store's SQLite database (see the module docs)."""

    if TYPE_CHECKING:
        async def _call(self, work: Callable[[sqlite3.Connection], T], *,
                        write: bool = False) -> T: ...

    async def create_file(self, record: FileRecord, content: bytes | None = None, *,
                          most: int | None = None) -> bool:
        """Keep a file (with ``most``: counted and inserted in one write transaction)."""
        r = record

        def work(conn: sqlite3.Connection) -> bool:
            if most is not None and conn.execute(
                    "SELECT COUNT(*) FROM files WHERE owner IS ?", (r.owner,)).fetchone()[0] \
                    >= most:
                return False
            return conn.execute(f"INSERT INTO files ({_FILE_COLUMNS}, content) VALUES "
                                "(?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                                (r.id, r.owner, r.purpose, r.filename, r.bytes, r.created_at,
                                 r.kind, r.batch_id, content)).rowcount > 0

        return await self._call(work, write=True)

    async def get_file(self, file_id: str) -> FileRecord | None:
        """The file, or None."""
        def work(conn: sqlite3.Connection) -> FileRecord | None:
            row = conn.execute(f"SELECT {_FILE_COLUMNS} FROM files WHERE id = ?",
                               (file_id,)).fetchone()
            return None if row is None else _file(row)

        return await self._call(work)

    async def file_content(self, file_id: str) -> bytes | None:
        """An upload's bytes."""
        def work(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute("SELECT content FROM files WHERE id = ?", (file_id,)).fetchone()
            return None if row is None or row[0] is None else bytes(row[0])

        return await self._call(work)

    async def list_files(self, owner: str | None, *, purpose: str | None = None,
                         after: str | None = None, limit: int = 100,
                         order: str = "desc") -> list[FileRecord]:
        """Files of ``owner``, newest first (or oldest first)."""
        def work(conn: sqlite3.Connection) -> list[FileRecord]:
            where = ["(? IS NULL OR owner = ?)", "(? IS NULL OR purpose = ?)"]
            args: list[str | int | None] = [owner, owner, purpose, purpose]
            cursor = _after(conn, "files", after)
            if cursor == -1:
                return []
            if cursor is not None:
                where.append("rowid > ?" if order == "asc" else "rowid < ?")
                args.append(cursor)
            direction = "ASC" if order == "asc" else "DESC"
            rows = conn.execute(f"SELECT {_FILE_COLUMNS} FROM files WHERE "
                                f"{' AND '.join(where)} ORDER BY rowid {direction} LIMIT ?",
                                (*args, limit)).fetchall()
            return [_file(row) for row in rows]

        return await self._call(work)

    async def delete_file(self, file_id: str) -> bool:
        """Delete a file."""
        def work(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM files WHERE id = ?", (file_id,)).rowcount > 0

        return await self._call(work, write=True)

    async def create_batch(self, record: BatchRecord, *, most: int | None = None) -> bool:
        """Keep a new batch (with ``most``: counted and inserted in one write transaction)."""
        r = record

        def work(conn: sqlite3.Connection) -> bool:
            if most is not None and _count_open(conn, r.owner) >= most:
                return False
            conn.execute(f"INSERT INTO batches ({_BATCH_COLUMNS}) VALUES "
                         "(?, ?, ?, ?, ?, ?, ?, ?)",
                         (r.id, r.owner, r.status, r.created_at, r.total, r.completed,
                          r.failed, json.dumps(r.data)))
            return True

        return await self._call(work, write=True)

    async def get_batch(self, batch_id: str) -> BatchRecord | None:
        """The batch, or None."""
        def work(conn: sqlite3.Connection) -> BatchRecord | None:
            row = conn.execute(f"SELECT {_BATCH_COLUMNS} FROM batches WHERE id = ?",
                               (batch_id,)).fetchone()
            return None if row is None else _batch(row)

        return await self._call(work)

    async def list_batches(self, owner: str | None, *, after: str | None = None,
                           limit: int = 20) -> list[BatchRecord]:
        """Batches of ``owner``, newest first."""
        def work(conn: sqlite3.Connection) -> list[BatchRecord]:
            cursor = _after(conn, "batches", after)
            rows = conn.execute(f"SELECT {_BATCH_COLUMNS} FROM batches WHERE (? IS NULL OR "
                                "owner = ?) AND (? IS NULL OR rowid < ?) ORDER BY rowid DESC "
                                "LIMIT ?", (owner, owner, cursor, cursor, limit)).fetchall()
            return [_batch(row) for row in rows]

        return await self._call(work)

    async def open_batches(self) -> list[str]:
        """The batches a runner has work for, oldest first."""
        marks = ", ".join("?" for _ in OPEN_STATUSES)

        def work(conn: sqlite3.Connection) -> list[str]:
            return [row[0] for row in conn.execute(
                f"SELECT id FROM batches WHERE status IN ({marks}) ORDER BY rowid",
                OPEN_STATUSES)]

        return await self._call(work)

    async def count_open_batches(self, owner: str | None) -> int:
        """Open batches of ``owner``."""
        return await self._call(lambda conn: _count_open(conn, owner))

    async def update_batch(self, batch_id: str, *, expect: Collection[str] | None = None,
                           status: str | None = None, total: int | None = None,
                           data: Mapping[str, Any] | None = None) -> BatchRecord | None:
        """Change a batch in one transaction (None if absent or not in ``expect``)."""
        def work(conn: sqlite3.Connection) -> BatchRecord | None:
            row = conn.execute(f"SELECT {_BATCH_COLUMNS} FROM batches WHERE id = ?",
                               (batch_id,)).fetchone()
            if row is None or (expect is not None and row["status"] not in expect):
                return None
            record = _batch(row)
            record.status = status or record.status
            record.total = record.total if total is None else total
            record.data.update(data or {})
            conn.execute("UPDATE batches SET status = ?, total = ?, data = ? WHERE id = ?",
                         (record.status, record.total, json.dumps(record.data), batch_id))
            return record

        return await self._call(work, write=True)

    async def add_result(self, batch_id: str, line: int, ok: bool, data: str) -> bool:
        """Keep a line's result once, and count it."""
        def work(conn: sqlite3.Connection) -> bool:
            cur = conn.execute("INSERT INTO batch_results (batch_id, line, ok, data) SELECT "
                               "?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM batches WHERE id = ?) "
                               "ON CONFLICT (batch_id, line) DO NOTHING",
                               (batch_id, line, int(ok), data, batch_id))
            if cur.rowcount <= 0:
                return False
            column = "completed" if ok else "failed"
            conn.execute(f"UPDATE batches SET {column} = {column} + 1 WHERE id = ?",
                         (batch_id,))
            return True

        return await self._call(work, write=True)

    async def done_lines(self, batch_id: str) -> set[int]:
        """The lines with a result."""
        def work(conn: sqlite3.Connection) -> set[int]:
            return {int(row[0]) for row in conn.execute(
                "SELECT line FROM batch_results WHERE batch_id = ?", (batch_id,))}

        return await self._call(work)

    async def batch_results(self, batch_id: str, ok: bool, *, after: int = -1,
                            limit: int = 1000) -> list[tuple[int, str]]:
        """Results in line order."""
        def work(conn: sqlite3.Connection) -> list[tuple[int, str]]:
            return [(int(row[0]), str(row[1])) for row in conn.execute(
                "SELECT line, data FROM batch_results WHERE batch_id = ? AND ok = ? AND "
                "line > ? ORDER BY line LIMIT ?", (batch_id, int(ok), after, limit))]

        return await self._call(work)

    async def claim_batch(self, batch_id: str, runner: str, *, stale: float) -> bool:
        """Claim a batch unless another runner renewed its claim within ``stale`` s."""
        now = time.time()

        def work(conn: sqlite3.Connection) -> bool:
            return conn.execute("UPDATE batches SET claimed_by = ?, claimed_at = ? WHERE id = ? "
                                "AND (claimed_by IS NULL OR claimed_by = ? OR claimed_at < ?)",
                                (runner, now, batch_id, runner, now - stale)).rowcount > 0

        return await self._call(work, write=True)

    async def release_batch(self, batch_id: str, runner: str) -> None:
        """Give up a claim."""
        def work(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE batches SET claimed_by = NULL, claimed_at = NULL WHERE id = ? "
                         "AND claimed_by = ?", (batch_id, runner))

        await self._call(work, write=True)
