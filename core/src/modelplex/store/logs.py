"""Conversations and logs in SQLite: every exchange with its model, usage, latency and errors.

The database is ``<data dir>/logs.db`` (``~/.local/share/modelplex/logs.db``, see
:mod:`modelplex.paths`) unless a path is given. It is in WAL mode; each exchange is committed
as soon as it ends, at once when the database is free, else by a background thread (the
caller awaits the commit without blocking the event loop), so a process killed at any moment
leaves every completed exchange on disk. The schema is versioned
(:mod:`modelplex.store.migrations`) and upgraded on open; both go through
:mod:`modelplex.store.sqlite`.

::

    store = LogStore()                      # or LogStore("path/to/logs.db")
    for exchange in store.recent(limit=5):
        print(exchange.conversation_id, exchange.prompt, "->", exchange.response)
    store.search("capital")                 # full-text search (SQLite FTS5)
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import attrs
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelplex._validation import describe
from modelplex.errors import ConfigurationError, StorageError
from modelplex.paths import data_dir
from modelplex.store.migrations import Migration, open_database, sql
from modelplex.store.sqlite import FileStore, Writer, connect

__all__ = ["MIGRATIONS", "Conversation", "ConversationsConfig", "Exchange", "LogStore",
           "logs_enabled", "new_conversation_id", "set_logs_enabled"]

log = logging.getLogger("modelplex.logs")  # the logger's name predates modelplex.store

MIGRATIONS: list[Migration] = [
    sql(1, "conversations and exchanges", """
        CREATE TABLE conversations (
            id TEXT PRIMARY KEY,
            name TEXT,
            created_at TEXT NOT NULL
        );
        CREATE TABLE exchanges (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            conversation_id TEXT REFERENCES conversations(id),
            created_at TEXT NOT NULL,
            provider TEXT NOT NULL,
            model TEXT NOT NULL,
            prompt TEXT NOT NULL,
            system_prompt TEXT,
            response TEXT NOT NULL,
            options TEXT NOT NULL DEFAULT '{}',
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            latency REAL,
            error TEXT
        );
        CREATE INDEX exchanges_conversation ON exchanges(conversation_id, id);
    """),
    sql(2, "full-text search", """
        CREATE VIRTUAL TABLE exchanges_fts USING fts5(
            prompt, response, content='exchanges', content_rowid='id');
        CREATE TRIGGER exchanges_ai AFTER INSERT ON exchanges BEGIN INSERT INTO exchanges_fts(rowid, prompt, response) VALUES (new.id, new.prompt, new.response); END;
        CREATE TRIGGER exchanges_ad AFTER DELETE ON exchanges BEGIN INSERT INTO exchanges_fts(exchanges_fts, rowid, prompt, response) VALUES ('delete', old.id, old.prompt, old.response); END;
        CREATE TRIGGER exchanges_au AFTER UPDATE ON exchanges BEGIN INSERT INTO exchanges_fts(exchanges_fts, rowid, prompt, response) VALUES ('delete', old.id, old.prompt, old.response); INSERT INTO exchanges_fts(rowid, prompt, response) VALUES (new.id, new.prompt, new.response); END;
        INSERT INTO exchanges_fts(exchanges_fts) VALUES ('rebuild');
    """),  # noqa: E501
    sql(3, "reasoning, tool calls, timings and cache hits", """
        ALTER TABLE exchanges ADD COLUMN reasoning TEXT;
        ALTER TABLE exchanges ADD COLUMN tool_calls TEXT;
        ALTER TABLE exchanges ADD COLUMN usage_estimated INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE exchanges ADD COLUMN time_to_first_token REAL;
        ALTER TABLE exchanges ADD COLUMN finish_reason TEXT;
        ALTER TABLE exchanges ADD COLUMN cached INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE conversations ADD COLUMN updated_at TEXT;
        UPDATE conversations SET updated_at = coalesce((SELECT max(created_at) FROM exchanges WHERE conversation_id = conversations.id), created_at);
        CREATE INDEX conversations_updated ON conversations(updated_at);
    """),  # noqa: E501
    sql(4, "cost (NULL: the price is unknown)", """
        ALTER TABLE exchanges ADD COLUMN cost REAL;
        ALTER TABLE exchanges ADD COLUMN cost_currency TEXT;
        CREATE INDEX exchanges_created ON exchanges(created_at);
    """),
]


class ConversationsConfig(BaseModel):
    """The ``conversations`` section of the config file.

    ``log``: whether ``modelplex chat`` stores conversations (``modelplex logs off`` also turns
    it off); ``path``: the database (default ``<data dir>/logs.db``).
    """

    model_config = ConfigDict(extra="forbid")

    log: bool = Field(default=True, description="Store modelplex chat conversations.")
    path: str | None = Field(default=None, description="The log database file.")

    @classmethod
    def parse(cls, value: Any) -> ConversationsConfig:
        """Validate a config section; a bad one raises :class:`ConfigurationError`."""
        if isinstance(value, ConversationsConfig):
            return value
        try:
            return cls.model_validate(value or {})
        except ValidationError as err:
            detail = describe(err, ConversationsConfig, "conversations")
            raise ConfigurationError(detail) from None


def default_path() -> Path:
    """``<data dir>/logs.db``."""
    return data_dir() / "logs.db"


def _off_marker() -> Path:
    return data_dir() / "logs-off"


def logs_enabled() -> bool:
    """Whether ``modelplex chat`` logs (``modelplex logs off`` turns it off)."""
    return not _off_marker().exists()


def set_logs_enabled(enabled: bool) -> None:
    """Turn logging by ``modelplex chat`` on or off (a marker file in the data dir)."""
    marker = _off_marker()
    if enabled:
        marker.unlink(missing_ok=True)
    else:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()


def new_conversation_id() -> str:
    """A short id that sorts by creation time: ``<seconds in hex><8 random hex>``."""
    return f"{int(time.time()):x}{secrets.token_hex(4)}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@attrs.define
class Exchange:
    """One request and its answer (or its error)."""

    provider: str
    model: str
    prompt: str
    response: str = ""
    conversation_id: str | None = None
    system_prompt: str | None = None
    options: dict[str, Any] = attrs.Factory(dict)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    usage_estimated: bool = False
    latency: float | None = None
    time_to_first_token: float | None = None
    finish_reason: str | None = None
    error: str | None = None
    cached: bool = False
    reasoning: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    created_at: str = attrs.Factory(_now)
    id: int | None = None
    cost: float | None = None  # None: unknown (modelplex.cost)
    cost_currency: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A plain dict for JSON output."""
        return attrs.asdict(self)


@attrs.define
class Conversation:
    """A conversation: its id, when it started and was last used, and how many exchanges."""

    id: str
    name: str | None
    created_at: str
    updated_at: str | None
    exchange_count: int = 0
    model: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A plain dict for JSON output."""
        return attrs.asdict(self)


_COLUMNS = ("id, conversation_id, created_at, provider, model, prompt, system_prompt, response, "
            "options, prompt_tokens, completion_tokens, latency, error, reasoning, tool_calls, "
            "usage_estimated, time_to_first_token, finish_reason, cached, cost, cost_currency")


def _exchange(row: sqlite3.Row) -> Exchange:
    return Exchange(
        id=row["id"], conversation_id=row["conversation_id"], created_at=row["created_at"],
        provider=row["provider"], model=row["model"], prompt=row["prompt"],
        system_prompt=row["system_prompt"], response=row["response"],
        options=json.loads(row["options"] or "{}"), prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"], latency=row["latency"],
        error=row["error"], reasoning=row["reasoning"],
        tool_calls=json.loads(row["tool_calls"]) if row["tool_calls"] else None,
        usage_estimated=bool(row["usage_estimated"]),
        time_to_first_token=row["time_to_first_token"], finish_reason=row["finish_reason"],
        cached=bool(row["cached"]), cost=row["cost"], cost_currency=row["cost_currency"])


#: What a damaged or unusable log database's error tells the user to do.
FIX = ("set [conversations] path in the config file (`modelplex config path`) or turn logging "
       "off (`modelplex logs off`)")

_Read = TypeVar("_Read")


class LogStore(FileStore):
    """The conversations and exchanges database.

    Reads (:meth:`recent`, :meth:`search`, ...) run on the caller's thread; :meth:`record`
    commits at once when the database is free, else hands the write to a background thread
    and waits for its commit without blocking the event loop.

    A file that cannot be used (it cannot be created, it is damaged or not a database, its
    schema is newer than this modelplex) does not stop the store from being made: it is
    *unavailable* (:attr:`failure`). Then :meth:`record` stores nothing and logs one warning
    on ``modelplex.logs`` naming the file and the fix, so a request never fails because of its
    log, and every read raises that :class:`~modelplex.errors.StorageError`. A database that
    turns out damaged while in use becomes unavailable the same way.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        path = Path(path).expanduser() if path is not None else default_path()
        super().__init__(path, Writer(path, owner="LogStore", thread_name="modelplex-logs",
                                      timeout=30.0, rows=True, logger=log),
                         what="log database", fix=FIX, logger=log,
                         consequence="conversations are not stored meanwhile")
        self.version = 0

        def migrated() -> sqlite3.Connection:
            conn, self.version = open_database(path, what="log database", fix=FIX,
                                               migrations=MIGRATIONS, rows=True)
            return conn

        # writes try the second connection first: it never waits for a lock (timeout 0)
        self._conn, self._fast = self._open(migrated,
                                            lambda: connect(path, timeout=0.0, rows=True))

    # -- writing ----------------------------------------------------------------------------------
    async def _write(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Commit ``fn`` at once on the caller's thread if the database is free and nothing is
        queued before it (one short transaction, no waiting), else on the writer thread."""
        self.health.check()
        assert self._fast is not None
        try:
            done, result = self._writer.try_now(self._fast, fn)
            if done:
                return result
            return await asyncio.wrap_future(self._writer.submit(fn))
        except (OSError, sqlite3.Error) as err:
            raise self.health.error(err) from err

    async def start_conversation(self, conversation_id: str | None = None, *,
                                 name: str | None = None) -> str:
        """Create a conversation (if ``conversation_id`` is new) and return its id."""
        cid = conversation_id or new_conversation_id()

        def insert(conn: sqlite3.Connection) -> None:
            now = _now()
            conn.execute("INSERT OR IGNORE INTO conversations (id, name, created_at, "
                         "updated_at) VALUES (?, ?, ?, ?)", (cid, name, now, now))

        await self._write(insert)
        return cid

    async def record(self, exchange: Exchange) -> int:
        """Store one exchange (committed when this returns); returns its id, or 0 when the
        store is unavailable (see the class docs: one warning, nothing raised).

        The short insert is done at once when the database is free; when another process
        holds the write lock it is handed to the writer thread, which waits for it, so the
        event loop never does. A passing failure (a full disk, a lock held too long) raises
        :class:`~modelplex.errors.StorageError`.
        """
        if self.health.failure is None:
            try:
                return int(await self._write(lambda c: self._insert(c, exchange)))
            except StorageError as err:
                if not err.damaged:
                    raise
        self.health.warn()
        return 0

    def record_sync(self, exchange: Exchange) -> int:
        """Blocking :meth:`record`."""
        if self.health.failure is None:
            try:
                return int(self._writer.submit(lambda c: self._insert(c, exchange)).result())
            except (OSError, sqlite3.Error) as err:
                failure = self.health.error(err)
                if not failure.damaged:
                    raise failure from err
        self.health.warn()
        return 0

    @staticmethod
    def _insert(conn: sqlite3.Connection, ex: Exchange) -> int:
        if ex.conversation_id is not None:
            conn.execute("INSERT OR IGNORE INTO conversations (id, created_at, updated_at) "
                         "VALUES (?, ?, ?)", (ex.conversation_id, ex.created_at, ex.created_at))
            conn.execute("UPDATE conversations SET updated_at = ? WHERE id = ?",
                         (ex.created_at, ex.conversation_id))
        cur = conn.execute(
            f"INSERT INTO exchanges ({_COLUMNS.removeprefix('id, ')}) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (ex.conversation_id, ex.created_at, ex.provider, ex.model, ex.prompt,
             ex.system_prompt, ex.response, json.dumps(ex.options, default=str),
             ex.prompt_tokens, ex.completion_tokens, ex.latency, ex.error, ex.reasoning,
             json.dumps(ex.tool_calls) if ex.tool_calls else None, int(ex.usage_estimated),
             ex.time_to_first_token, ex.finish_reason, int(ex.cached), ex.cost,
             ex.cost_currency))
        return int(cur.lastrowid or 0)

    async def delete_conversation(self, conversation_id: str) -> int:
        """Delete a conversation and its exchanges; returns how many exchanges there were."""
        def delete(conn: sqlite3.Connection) -> int:
            cur = conn.execute("DELETE FROM exchanges WHERE conversation_id = ?",
                               (conversation_id,))
            conn.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
            return cur.rowcount

        return int(await self._write(delete))

    # -- reading ----------------------------------------------------------------------------------
    def _read(self, fn: Callable[[sqlite3.Connection], _Read]) -> _Read:
        """``fn(connection)``; any failure of the file is a StorageError naming it."""
        self.health.check()
        assert self._conn is not None
        try:
            return fn(self._conn)
        except (OSError, sqlite3.Error) as err:
            raise self.health.error(err) from None

    def recent(self, *, limit: int | None = 20, conversation_id: str | None = None
             ) -> list[Exchange]:
        """The newest exchanges first (of one conversation, if given)."""
        where, args = ("WHERE conversation_id = ?", [conversation_id]) if conversation_id \
            else ("", [])
        rows = self._read(lambda conn: conn.execute(
            f"SELECT {_COLUMNS} FROM exchanges {where} ORDER BY id DESC LIMIT ?",
            [*args, -1 if limit is None else limit]).fetchall())
        return [_exchange(r) for r in rows]

    def exchanges(self, conversation_id: str) -> list[Exchange]:
        """Every exchange of a conversation, oldest first."""
        rows = self._read(lambda conn: conn.execute(
            f"SELECT {_COLUMNS} FROM exchanges WHERE conversation_id = ? ORDER BY id",
            (conversation_id,)).fetchall())
        return [_exchange(r) for r in rows]

    def get(self, exchange_id: int) -> Exchange | None:
        """One exchange by id."""
        row = self._read(lambda conn: conn.execute(
            f"SELECT {_COLUMNS} FROM exchanges WHERE id = ?", (exchange_id,)).fetchone())
        return _exchange(row) if row is not None else None

    def exchange_count(self) -> int:
        """How many exchanges are stored."""
        return int(self._read(
            lambda conn: conn.execute("SELECT count(*) FROM exchanges").fetchone()[0]))

    def conversations(self, *, limit: int | None = 20) -> list[Conversation]:
        """Conversations, the most recently used first."""
        rows = self._read(lambda conn: conn.execute(
            "SELECT c.id, c.name, c.created_at, c.updated_at, count(e.id) AS n, "
            "(SELECT model FROM exchanges WHERE conversation_id = c.id ORDER BY id DESC "
            "LIMIT 1) AS model FROM conversations c LEFT JOIN exchanges e ON "
            "e.conversation_id = c.id GROUP BY c.id ORDER BY c.updated_at DESC, c.id DESC "
            "LIMIT ?", (-1 if limit is None else limit,)).fetchall())
        return [Conversation(id=r["id"], name=r["name"], created_at=r["created_at"],
                             updated_at=r["updated_at"], exchange_count=r["n"],
                             model=r["model"]) for r in rows]

    def conversation(self, conversation_id: str) -> Conversation | None:
        """One conversation by id."""
        for conv in self.conversations(limit=None):
            if conv.id == conversation_id:
                return conv
        return None

    def last_conversation_id(self) -> str | None:
        """The conversation used most recently."""
        row = self._read(lambda conn: conn.execute(
            "SELECT id FROM conversations ORDER BY updated_at DESC, id DESC LIMIT 1"
        ).fetchone())
        return str(row[0]) if row is not None else None

    def search(self, query: str, *, limit: int = 20) -> list[Exchange]:
        """Exchanges whose prompt or response match ``query`` (FTS5 syntax; plain words
        match all of them), the best matches first."""
        def match(conn: sqlite3.Connection) -> list[sqlite3.Row] | None:
            try:
                return conn.execute(
                    f"SELECT {', '.join('e.' + c for c in _COLUMNS.split(', '))} FROM "
                    "exchanges_fts JOIN exchanges e ON e.id = exchanges_fts.rowid WHERE "
                    "exchanges_fts MATCH ? ORDER BY rank LIMIT ?", (query, limit)).fetchall()
            except sqlite3.OperationalError as err:
                if "malformed" in str(err) or "corrupt" in str(err):
                    raise
                return None  # not FTS syntax

        rows = self._read(match)
        if rows is None:  # search the words as phrases
            quoted = " ".join('"' + word.replace('"', '""') + '"' for word in query.split())
            if not quoted:
                return []
            return self.search(quoted, limit=limit) if quoted != query else []
        return [_exchange(r) for r in rows]
