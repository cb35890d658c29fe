"""A response cache on disk in SQLite, shared by every process of the user.

The database is in WAL mode, so readers never wait for a writer and several processes can
use one file. Lookups are one indexed read on the caller's thread (WAL readers take no lock
a writer holds); every write goes to one background thread per cache
(:class:`modelplex.store.sqlite.Writer`), so a ``set`` only enqueues and never blocks the event
loop; the writer commits what arrived within 20 ms in one transaction. An entry written but
not committed yet is served from memory, so a process always sees its own writes.

A file that cannot be used (it cannot be created, it is damaged or not a database) makes the
cache *unavailable* rather than failing whoever opened it: lookups miss, writes do nothing,
one warning names the file and the fix, and :meth:`SQLiteCache.stats`/``clear``/``delete``
raise that :class:`~modelplex.errors.StorageError` (``modelplex cache stats`` prints it).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any, ClassVar

from modelplex.caches import Cache, CacheStats
from modelplex.paths import cache_dir
from modelplex.store.migrations import Migration, open_database, sql
from modelplex.store.sqlite import FileStore, Writer

__all__ = ["MIGRATIONS", "SQLiteCache"]

log = logging.getLogger("modelplex.cache.sqlite")

MIGRATIONS: list[Migration] = [
    # IF NOT EXISTS: files made before the cache's schema was versioned already have them
    sql(1, "entries and counters", """
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
    """),
]
#: What a damaged or unusable cache file's error tells the user to do.
FIX = "choose another file ([cache] path, or --path of `modelplex cache`)"
_COUNT_FLUSH = 256  # lookups counted in memory before the counters are written
_PRUNE_EVERY = 60.0  # seconds between deletions of expired entries
_BATCH_DELAY = 0.02  # seconds the writer waits for more writes before committing


def default_path() -> Path:
    """``<cache dir>/cache.db`` (see :mod:`modelplex.paths`)."""
    return cache_dir() / "cache.db"


def _prune(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM entries WHERE expires IS NOT NULL AND expires <= ?",
                 (time.time(),))


class SQLiteCache(FileStore, Cache):
    """A cache in a SQLite file (default ``~/.cache/modelplex/cache.db``).

    Args:
        path: the database file; created with its folder if missing.
        ttl: default time to live of an entry in seconds (``None``: kept until cleared).
    """

    name: ClassVar[str] = "sqlite"

    def __init__(self, path: str | Path | None = None, ttl: float | None = 7 * 86400.0) -> None:
        path = Path(path).expanduser() if path is not None else default_path()
        super().__init__(path, Writer(path, owner="SQLiteCache",
                                      thread_name="modelplex-sqlite-cache", timeout=10.0,
                                      batch_delay=_BATCH_DELAY, every=(_PRUNE_EVERY, _prune),
                                      logger=log),
                         what="cache", fix=FIX, logger=log,
                         consequence="answering without the cache meanwhile")
        self.ttl = ttl

        def reader() -> sqlite3.Connection:
            conn, _ = open_database(path, what="cache", fix=FIX, migrations=MIGRATIONS,
                                    timeout=10.0)
            conn.execute("PRAGMA busy_timeout = 100")  # WAL readers rarely wait
            return conn

        [self._reader] = self._open(reader)
        self._pending: dict[str, tuple[str, float | None]] = {}
        self._hits = 0
        self._misses = 0

    # -- the hot path -------------------------------------------------------------------------
    async def get(self, key: str) -> Any | None:
        """The cached value, or ``None`` if absent or expired."""
        pending = self._pending.get(key)
        if pending is not None:
            text, expires = pending
        else:
            if self._reader is None or self.health.failure is not None:
                self.health.warn()
                return None
            try:
                row = self._reader.execute("SELECT value, expires FROM entries WHERE key = ?",
                                           (key,)).fetchone()
            except (OSError, sqlite3.Error) as err:
                failure = self.health.error(err)
                if not failure.damaged:
                    raise failure from None  # a passing failure: the cache layer warns
                self.health.warn()
                return None
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
            hits, misses = self._hits, self._misses
            self._hits = self._misses = 0

            def count(conn: sqlite3.Connection) -> None:
                for name, delta in (("hits", hits), ("misses", misses)):
                    conn.execute("INSERT INTO counters (name, value) VALUES (?, ?) ON "
                                 "CONFLICT(name) DO UPDATE SET value = value + ?",
                                 (name, delta, delta))

            self._writer.post(count)

    async def set(self, key: str, value: Any, *, ttl: float | None = None) -> None:
        """Store a JSON-serialisable value; written by the background thread."""
        if self._writer.closed:
            raise RuntimeError("this SQLiteCache is closed")
        if self.health.failure is not None:
            self.health.warn()
            return
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        ttl = self.ttl if ttl is None else ttl
        expires = None if ttl is None else time.time() + ttl
        self._pending[key] = (text, expires)

        def write(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR REPLACE INTO entries (key, value, expires) VALUES (?, ?, ?)",
                         (key, text, expires))

        def written(error: BaseException | None) -> None:
            # served from disk from now on (unless set again meanwhile); dropped if it failed
            if error is not None or self._pending.get(key, (None,))[0] == text:
                self._pending.pop(key, None)
            if error is not None and self.health.error(error).damaged:
                self.health.warn()

        self._writer.post(write, written)

    # -- maintenance (waits for the writer) -----------------------------------------------------
    async def _wait(self, work: Any) -> Any:
        import asyncio

        self.health.check()
        self._flush_counts()
        try:
            return await asyncio.wrap_future(self._writer.submit(work))
        except (OSError, sqlite3.Error) as err:
            raise self.health.error(err) from None

    async def delete(self, key: str) -> bool:
        """Remove one entry; ``True`` if it was there."""
        def delete(conn: sqlite3.Connection) -> bool:
            removed = conn.execute("DELETE FROM entries WHERE key = ?", (key,)).rowcount > 0
            self._pending.pop(key, None)
            return removed

        return bool(await self._wait(delete))

    async def clear(self) -> int:
        """Remove every entry and reset the counters; returns how many entries there were."""
        def clear(conn: sqlite3.Connection) -> int:
            removed = conn.execute("DELETE FROM entries").rowcount
            conn.execute("DELETE FROM counters")
            self._pending.clear()
            return int(removed)

        return int(await self._wait(clear))

    async def stats(self) -> CacheStats:
        """Hits and misses of every process using this file, and the live entries."""
        def stats(conn: sqlite3.Connection) -> tuple[int, int, int]:
            counts = dict(conn.execute("SELECT name, value FROM counters").fetchall())
            size = conn.execute("SELECT count(*) FROM entries WHERE expires IS NULL OR "
                                "expires > ?", (time.time(),)).fetchone()[0]
            return counts.get("hits", 0), counts.get("misses", 0), size

        hits, misses, size = await self._wait(stats)
        return CacheStats(backend=self.name, hits=hits, misses=misses, size=size,
                          location=str(self.path))

    def close(self) -> None:
        """Write what is queued and stop the writer thread (also run at interpreter exit)."""
        if not self._writer.closed and self.health.failure is None:
            self._flush_counts()
        super().close()
