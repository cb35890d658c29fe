"""A response cache on disk in SQLite, shared by every process of the user.

The database is in WAL mode, so readers never wait for a writer and several processes can
use one file. Lookups are one indexed read on the caller's thread (WAL readers take no lock
a writer holds); every write goes to one background thread per cache, so a ``set`` only
enqueues and never blocks the event loop; the writer commits what arrived within 20 ms in one
transaction. An entry written but not committed yet is served from memory, so a process
always sees its own writes.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import json
import logging
import queue
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

from modelplex.caches import Cache, CacheStats
from modelplex.paths import cache_dir

__all__ = ["SQLiteCache"]

log = logging.getLogger("modelplex.cache.sqlite")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    expires REAL
);
CREATE INDEX IF NOT EXISTS entries_expires ON entries(expires);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""
_COUNT_FLUSH = 256  # lookups counted in memory before the counters are written
_PRUNE_EVERY = 60.0  # seconds between deletions of expired entries
_BATCH_DELAY = 0.02  # seconds the writer waits for more writes before committing


def default_path() -> Path:
    """``<cache dir>/cache.db`` (see :mod:`modelplex.paths`)."""
    return cache_dir() / "cache.db"


def _connect(path: Path, timeout: float) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None,
                           check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


class SQLiteCache(Cache):
    """A cache in a SQLite file (default ``~/.cache/modelplex/cache.db``).

    Args:
        path: the database file; created with its folder if missing.
        ttl: default time to live of an entry in seconds (``None``: kept until cleared).
    """

    name: ClassVar[str] = "sqlite"

    def __init__(self, path: str | Path | None = None, ttl: float | None = 7 * 86400.0) -> None:
        self.path = Path(path).expanduser() if path is not None else default_path()
        self.ttl = ttl
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._reader = _connect(self.path, timeout=0.1)  # WAL readers rarely wait at all
        with self._reader:
            self._reader.executescript(_SCHEMA)
        self._pending: dict[str, tuple[str, float | None]] = {}
        self._hits = 0
        self._misses = 0
        self._queue: queue.Queue[tuple[Any, ...] | None] = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._writer, name="modelplex-sqlite-cache",
                                        daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def __repr__(self) -> str:
        return f"<SQLiteCache {str(self.path)!r}>"

    # -- the hot path -------------------------------------------------------------------------
    async def get(self, key: str) -> Any | None:
        """The cached value, or ``None`` if absent or expired."""
        pending = self._pending.get(key)
        if pending is not None:
            text, expires = pending
        else:
            row = self._reader.execute("SELECT value, expires FROM entries WHERE key = ?",
                                       (key,)).fetchone()
            if row is None:
                self._count(hit=False)
                return None
            text, expires = row
        if expires is not None and expires <= time.time():
            self._count(hit=False)
            return None
        self._count(hit=True)
        return json.loads(text)

    def _count(self, *, hit: bool) -> None:
        if hit:
            self._hits += 1
        else:
            self._misses += 1
        if self._hits + self._misses >= _COUNT_FLUSH:
            self._flush_counts()

    def _flush_counts(self) -> None:
        if self._hits or self._misses:
            self._queue.put(("count", self._hits, self._misses))
            self._hits = self._misses = 0

    async def set(self, key: str, value: Any, *, ttl: float | None = None) -> None:
        """Store a JSON-serialisable value; written by the background thread."""
        if self._closed:
            raise RuntimeError("this SQLiteCache is closed")
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        ttl = self.ttl if ttl is None else ttl
        expires = None if ttl is None else time.time() + ttl
        self._pending[key] = (text, expires)
        self._queue.put(("set", key, text, expires))

    # -- maintenance (waits for the writer) -----------------------------------------------------
    def _call(self, *op: Any) -> concurrent.futures.Future[Any]:
        if self._closed:
            raise RuntimeError("this SQLiteCache is closed")
        self._flush_counts()
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._queue.put((*op, future))
        return future

    async def _wait(self, *op: Any) -> Any:
        import asyncio

        return await asyncio.wrap_future(self._call(*op))

    async def delete(self, key: str) -> bool:
        """Remove one entry; ``True`` if it was there."""
        return bool(await self._wait("delete", key))

    async def clear(self) -> int:
        """Remove every entry and reset the counters; returns how many entries there were."""
        return int(await self._wait("clear"))

    async def stats(self) -> CacheStats:
        """Hits and misses of every process using this file, and the live entries."""
        hits, misses, size = await self._wait("stats")
        return CacheStats(backend=self.name, hits=hits, misses=misses, size=size,
                          location=str(self.path))

    async def aclose(self) -> None:
        """Write what is queued and stop the writer thread."""
        import asyncio

        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Blocking :meth:`aclose` (also run at interpreter exit)."""
        if self._closed:
            return
        self._flush_counts()
        self._closed = True
        self._queue.put(None)
        self._thread.join()
        self._reader.close()
        atexit.unregister(self.close)

    # -- the writer thread ------------------------------------------------------------------------
    def _writer(self) -> None:
        conn = _connect(self.path, timeout=10.0)
        last_prune = 0.0
        try:
            while True:
                item = self._queue.get()
                if item is not None and item[0] in ("set", "count"):
                    time.sleep(_BATCH_DELAY)  # gather the writes of many requests in one commit
                batch = [item]
                while item is not None:  # take everything queued into one transaction
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    batch.append(item)
                stop = batch[-1] is None
                ops = [op for op in batch if op is not None]
                if time.monotonic() - last_prune > _PRUNE_EVERY:
                    last_prune = time.monotonic()
                    ops.insert(0, ("prune",))
                self._apply(conn, ops)
                if stop:
                    return
        finally:
            conn.close()

    def _apply(self, conn: sqlite3.Connection, ops: list[tuple[Any, ...]]) -> None:
        results: list[tuple[concurrent.futures.Future[Any], Any]] = []
        written: list[tuple[str, str]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op in ops:
                kind = op[0]
                if kind == "set":
                    _, key, text, expires = op
                    conn.execute("INSERT OR REPLACE INTO entries (key, value, expires) "
                                 "VALUES (?, ?, ?)", (key, text, expires))
                    written.append((key, text))
                elif kind == "count":
                    for name, delta in (("hits", op[1]), ("misses", op[2])):
                        conn.execute("INSERT INTO counters (name, value) VALUES (?, ?) ON "
                                     "CONFLICT(name) DO UPDATE SET value = value + ?",
                                     (name, delta, delta))
                elif kind == "prune":
                    conn.execute("DELETE FROM entries WHERE expires IS NOT NULL AND "
                                 "expires <= ?", (time.time(),))
                elif kind == "delete":
                    cur = conn.execute("DELETE FROM entries WHERE key = ?", (op[1],))
                    self._pending.pop(op[1], None)
                    results.append((op[-1], cur.rowcount > 0))
                elif kind == "clear":
                    cur = conn.execute("DELETE FROM entries")
                    conn.execute("DELETE FROM counters")
                    self._pending.clear()
                    results.append((op[-1], cur.rowcount))
                elif kind == "stats":
                    counts = dict(conn.execute("SELECT name, value FROM counters").fetchall())
                    size = conn.execute("SELECT count(*) FROM entries WHERE expires IS NULL "
                                        "OR expires > ?", (time.time(),)).fetchone()[0]
                    results.append((op[-1], (counts.get("hits", 0), counts.get("misses", 0),
                                             size)))
            conn.execute("COMMIT")
        except sqlite3.Error as err:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            log.warning("sqlite cache %s: write failed: %s", self.path, err)
            for future, _ in results:
                future.set_exception(err)
            for op in ops:
                if op[0] in ("delete", "clear", "stats") and not op[-1].done():
                    op[-1].set_exception(err)
            for key, _ in written:
                self._pending.pop(key, None)
            return
        for key, text in written:  # served from disk from now on (unless set again)
            if self._pending.get(key, (None,))[0] == text:
                self._pending.pop(key, None)
        for future, value in results:
            future.set_result(value)
