"""The SQLite machinery every modelplex store shares: opening, transactions, the writer thread.

The conversation log, the SQLite response cache and ``modelplex-server``'s conversation store
open their files the same way and write them the same way:

- :func:`connect`: autocommit mode (transactions are explicit), WAL so readers never wait for
  a writer and several processes can share a file, a busy timeout, usable from any thread.
- :func:`storage_error` and :class:`StoreHealth`: any failure to use a store's file (a file
  that is not a database, a damaged one, a folder that cannot be made, a schema from a newer
  modelplex) as one :class:`~modelplex.errors.StorageError` that names the file and the fix,
  and the policy below. :func:`modelplex.store.migrations.open_database` opens a file at its
  schema's version with these.
- :func:`transaction`: ``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any error.
- :class:`Writer`: one background thread with its own connection that commits the work
  queued to it (each piece in a savepoint of one transaction per batch), so the event loop
  never waits on the disk or on another process's lock.
- :class:`FileStore`: the base of a store object over one file (path, health, writer,
  opening, closing), which :class:`~modelplex.store.logs.LogStore` and
  :class:`~modelplex.store.sqlite_cache.SQLiteCache` are.

The storage-failure policy built on these (:class:`StoreHealth`): a store never fails a
request (one warning, and the request is answered without the store), and a command that
manages a store prints the :class:`~modelplex.errors.StorageError`'s one line and exits 1.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import attrs

from modelplex.errors import ConfigurationError, StorageError

__all__ = ["FileStore", "StoreHealth", "Writer", "connect", "storage_error", "transaction"]

T = TypeVar("T")
Work = Callable[[sqlite3.Connection], Any]


def _is_damage(err: BaseException) -> bool:
    """Whether ``err`` says the file is not a usable database (SQLITE_CORRUPT, SQLITE_NOTADB:
    plain ``DatabaseError``), not a passing failure (locked, busy, full: ``OperationalError``)
    or a failure of one statement (``IntegrityError``, ...)."""
    if not isinstance(err, sqlite3.DatabaseError):
        return False
    text = str(err).lower()
    return type(err) is sqlite3.DatabaseError or any(
        word in text for word in ("malformed", "not a database", "corrupt"))


def storage_error(err: BaseException, path: Path | str, *, what: str, fix: str = "",
                  opening: bool = False) -> StorageError:
    """The :class:`~modelplex.errors.StorageError` for ``err`` (an ``OSError``, a
    ``sqlite3.Error`` or a :class:`~modelplex.errors.ConfigurationError` such as a schema
    newer than this modelplex) met while using the ``what`` at ``path`` (e.g. ``"log
    database"``), while ``opening`` it or later; ``fix`` says what else the user can do. A
    damaged file is told to be moved aside."""
    if isinstance(err, StorageError):
        return err
    reason = (err.strerror if isinstance(err, OSError) and err.strerror else str(err)) or \
        type(err).__name__
    damaged = _is_damage(err)
    if damaged:
        text = (f"the {what} {path} is damaged or not a SQLite database ({reason}): move it "
                f"aside (a new one is created){' or ' + fix if fix else ''}")
    elif isinstance(err, ConfigurationError):
        text = f"{reason}{'; or ' + fix if fix else ''}"
    else:
        verb = "open" if opening else "use"
        text = f"cannot {verb} the {what} {path}: {reason}{'; ' + fix if fix else ''}"
    return StorageError(text, where=str(path), reason=reason, damaged=damaged)


class StoreHealth:
    """The storage-failure policy of one store object over one file.

    A store that cannot open its file, or finds it damaged later, is *unavailable*
    (:meth:`unavailable`: :attr:`failure` holds the :class:`~modelplex.errors.StorageError`).
    From then on its reads and management calls raise :attr:`failure` (:meth:`check`), so a
    command prints one line naming the file and the fix; its writes and the reads of the
    request path do nothing but call :meth:`warn`, which logs that line once, with what the
    requests do meanwhile (``consequence``), so a request never fails because of the store.
    A passing failure (the database is locked, the disk is full) is converted by
    :meth:`error` but leaves the store available.
    """

    def __init__(self, path: Path, *, what: str, fix: str, consequence: str,
                 logger: logging.Logger) -> None:
        self.path = path
        self.what = what
        self.fix = fix
        self.consequence = consequence
        self.log = logger
        self.failure: StorageError | None = None
        self._warned = False

    def unavailable(self, err: BaseException, *, opening: bool = False) -> StorageError:
        """Make the store unavailable because of ``err`` (met while ``opening`` it, or later);
        returns its StorageError."""
        failure = storage_error(err, self.path, what=self.what, fix=self.fix, opening=opening)
        if self.failure is None:
            self.failure = failure
        return failure

    def error(self, err: BaseException) -> StorageError:
        """``err`` met while using the store, as a StorageError; a damaged file makes the
        store unavailable."""
        failure = storage_error(err, self.path, what=self.what, fix=self.fix)
        return self.unavailable(failure) if failure.damaged else failure

    def check(self) -> None:
        """Raise :attr:`failure` if the store is unavailable."""
        if self.failure is not None:
            raise self.failure

    def warn(self, err: BaseException | None = None) -> None:
        """Log ``err`` (else :attr:`failure`) as a warning, once for this store."""
        failure = self.failure if err is None else self.error(err)
        if failure is not None and not self._warned:
            self._warned = True
            self.log.warning("%s (%s)", failure, self.consequence)


def connect(path: Path | str, *, timeout: float = 10.0, rows: bool = False,
            foreign_keys: bool = False, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """A connection in autocommit mode and WAL, usable from any thread, that waits up to
    ``timeout`` seconds for another writer's lock; ``rows``: rows are :class:`sqlite3.Row`."""
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None,
                           check_same_thread=False)
    try:
        if rows:
            conn.row_factory = sqlite3.Row
        _wal(conn, timeout)
        conn.execute(f"PRAGMA synchronous={synchronous}")
        if foreign_keys:
            conn.execute("PRAGMA foreign_keys=ON")
    except BaseException:
        conn.close()
        raise
    return conn


def _wal(conn: sqlite3.Connection, timeout: float) -> None:
    """``PRAGMA journal_mode=WAL``, waiting up to ``timeout`` seconds for another process
    doing the same: SQLite answers "database is locked" at once, without its busy timeout,
    while another connection switches a new file to WAL (two server workers opening one fresh
    file together failed one time in seven)."""
    deadline = time.monotonic() + timeout
    pause = 0.002
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(0.1, pause * 2)


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` (take the write lock now, waiting up to the busy timeout), then
    ``COMMIT``, or ``ROLLBACK`` if anything fails, the commit included."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


@attrs.define(slots=True)
class _Item:
    work: Work
    future: concurrent.futures.Future[Any] | None
    then: Callable[[BaseException | None], None] | None = None
    posted: bool = False


class Writer:
    """A background thread with its own connection that commits the work queued to it.

    :meth:`submit` hands it a function of the connection and returns a future of its result,
    resolved once committed; :meth:`post` hands it one nobody waits for (a failure is logged
    once per batch), and the thread waits ``batch_delay`` seconds for more before committing,
    so the writes of many requests share one commit. Each piece of work runs in a savepoint:
    one that raises is undone alone and its future gets the error. ``every`` is an optional
    ``(seconds, work)`` run at the start of a batch at most that often (e.g. pruning).
    The thread starts with the first piece of work; :meth:`close` commits what is queued and
    stops it.
    """

    def __init__(self, path: Path, *, owner: str, thread_name: str, timeout: float = 30.0,
                 batch_delay: float = 0.0, every: tuple[float, Work] | None = None,
                 logger: logging.Logger | None = None, rows: bool = False) -> None:
        self.path = path
        self.owner = owner
        self._thread_name = thread_name
        self._timeout = timeout
        self._delay = batch_delay
        self._every = every
        self._log = logger or logging.getLogger("modelplex.store")
        self._rows = rows
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._queued = 0

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def _put(self, item: _Item) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"this {self.owner} is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, daemon=True,
                                                name=self._thread_name)
                self._thread.start()
            self._queued += 1
        self._queue.put(item)

    def submit(self, work: Work) -> concurrent.futures.Future[Any]:
        """Queue ``work(conn)``; the future holds its result once committed (or its error)."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._put(_Item(work, future))
        return future

    def post(self, work: Work, then: Callable[[BaseException | None], None] | None = None
             ) -> None:
        """Queue ``work(conn)`` without waiting for it; ``then(error or None)`` runs on the
        writer thread after the commit (or the failure)."""
        self._put(_Item(work, None, then, posted=True))

    def try_now(self, conn: sqlite3.Connection, work: Work) -> tuple[bool, Any]:
        """Commit ``work`` at once on the caller's thread with ``conn`` (whose busy timeout
        should be 0) if nothing is queued before it and no other process holds the write
        lock: ``(True, result)``; else ``(False, None)`` and the caller queues it."""
        if self._queued or self._closed:
            return False, None
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:  # another process is writing: the thread waits
            return False, None
        try:
            result = work(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return True, result

    def close(self) -> None:
        """Commit what is queued and stop the thread (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join()

    # -- the thread -------------------------------------------------------------------------------
    def _loop(self) -> None:
        conn: sqlite3.Connection | None = None
        failure: BaseException | None = None
        try:
            conn = connect(self.path, timeout=self._timeout, rows=self._rows)
        except (OSError, sqlite3.Error) as err:
            failure = err  # every piece of work fails with it; the thread keeps draining
        last = 0.0
        try:
            while True:
                item = self._queue.get()
                if item is not None and item.posted and self._delay:
                    time.sleep(self._delay)  # gather the writes of many requests in one commit
                batch = [item]
                while item is not None:  # take everything queued into one transaction
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    batch.append(item)
                items = [i for i in batch if i is not None]
                if self._every is not None and items and \
                        time.monotonic() - last > self._every[0]:
                    last = time.monotonic()
                    items.insert(0, _Item(self._every[1], None, posted=True))
                    with self._lock:
                        self._queued += 1
                self._commit(conn, items, failure)
                if batch[-1] is None:
                    return
        finally:
            if conn is not None:
                conn.close()

    def _commit(self, conn: sqlite3.Connection | None, items: list[_Item],
                failure: BaseException | None) -> None:
        outcomes: list[tuple[_Item, BaseException | None, Any]] = []
        try:
            if conn is None:
                raise failure or RuntimeError("no connection")
            with transaction(conn):
                for item in items:
                    conn.execute("SAVEPOINT work")
                    try:
                        value = item.work(conn)
                    except Exception as err:
                        conn.execute("ROLLBACK TO work")
                        conn.execute("RELEASE work")
                        outcomes.append((item, err, None))
                    else:
                        conn.execute("RELEASE work")
                        outcomes.append((item, None, value))
        except Exception as err:  # the whole batch failed: the lock, the disk, a damaged file
            outcomes = [(item, err, None) for item in items]
        with self._lock:
            self._queued -= len(items)
        logged = False
        for item, error, value in outcomes:
            if item.future is not None:
                if error is None:
                    item.future.set_result(value)
                else:
                    item.future.set_exception(error)
            elif error is not None and not logged:
                logged = True
                self._log.warning("%s %s: write failed: %s", self.owner, self.path, error)
            if item.then is not None:
                item.then(error)


class FileStore:
    """What every store object over one SQLite file shares (the conversation log, the SQLite
    cache): its ``path``, its :class:`StoreHealth`, its :class:`Writer`, the opening that
    makes the store unavailable instead of raising (:meth:`_open`), ``repr``, and a
    :meth:`close` that also runs at interpreter exit."""

    def __init__(self, path: Path, writer: Writer, *, what: str, fix: str, consequence: str,
                 logger: logging.Logger) -> None:
        self.path = path
        self.health = StoreHealth(path, what=what, fix=fix, consequence=consequence,
                                  logger=logger)
        self._writer = writer
        self._connections: list[sqlite3.Connection] = []
        atexit.register(self.close)

    def _open(self, *openers: Callable[[], sqlite3.Connection]
              ) -> list[sqlite3.Connection | None]:
        """The store's connections, one an opener (closed by :meth:`close`), or all ``None``
        when the file cannot be used: the store is then unavailable (:attr:`failure`)."""
        try:
            for opener in openers:
                self._connections.append(opener())
        except (OSError, sqlite3.Error, StorageError) as err:
            self.health.unavailable(err, opening=True)
            for conn in self._connections:
                conn.close()
            self._connections = []
            return [None] * len(openers)
        return list(self._connections)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {str(self.path)!r}>"

    @property
    def failure(self) -> StorageError | None:
        """Why the store is unavailable, or ``None`` while it works."""
        return self.health.failure

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` (or ``aclose``) was called."""
        return self._writer.closed

    def close(self) -> None:
        """Commit what is queued, stop the writer and close the connections (idempotent)."""
        if self._writer.closed:
            return
        self._writer.close()
        for conn in self._connections:
            conn.close()
        atexit.unregister(self.close)

    async def aclose(self) -> None:
        """:meth:`close` without blocking the event loop."""
        await asyncio.to_thread(self.close)
