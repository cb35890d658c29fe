"""The server's conversations in a SQLite file, so they survive a restart of ``modelplex serve``.

The file is ``<data dir>/server-conversations.db`` by default (``~/.local/share/modelplex``,
see :mod:`modelplex.paths`), next to ``modelplex chat``'s ``logs.db`` but separate from it: the
server's conversations are editable (renamed, truncated to answer again, re-pointed at another
model), the chat log is an append-only record. The schema is versioned with
:mod:`modelplex.store.migrations` and upgraded on open; the database is in WAL mode and each
change is one transaction, run in a worker thread so the event loop never waits on the disk
(opened and written with the core's :mod:`modelplex.store.sqlite` helpers).

::

    store = SQLiteConversationStore()                  # or SQLiteConversationStore("x.db")
    app = create_app(settings, conversations=store)
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from modelplex.errors import ConfigurationError, StorageError
from modelplex.paths import data_dir
from modelplex.store.migrations import Migration, open_database, sql
from modelplex.store.sqlite import transaction
from modelplex.types import ChatMessage
from modelplex_server import sqlite_batches
from modelplex_server.budgets import Spend
from modelplex_server.conversations import (
    Conversation,
    ConversationStore,
    ConversationSummary,
    KeyExistsError,
    MemoryConversationStore,
    StoredKey,
    check_room,
    dump_message,
    message_columns,
)
from modelplex_server.settings import KeyConfig

__all__ = ["MIGRATIONS", "SQLiteConversationStore", "default_path", "dump_message",
           "open_store"]

T = TypeVar("T")

MIGRATIONS: list[Migration] = [
    sql(1, "server conversations and their messages", """
        CREATE TABLE conversations (
            id TEXT PRIMARY KEY,
            title TEXT NOT NULL,
            model TEXT NOT NULL,
            provider TEXT NOT NULL,
            system_prompt TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX conversations_updated ON conversations(updated_at);
        CREATE TABLE messages (
            conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            data TEXT NOT NULL,
            PRIMARY KEY (conversation_id, position)
        );
    """),
    sql(2, "the API key that owns each conversation", """
        ALTER TABLE conversations ADD COLUMN owner TEXT;
    """),
    sql(3, "API keys made by `modelplex keys` and their spend per period", """
        CREATE TABLE api_keys (
            name TEXT PRIMARY KEY,
            hash TEXT NOT NULL UNIQUE,
            settings TEXT NOT NULL,
            created_at TEXT NOT NULL,
            revoked_at TEXT
        );
        CREATE TABLE key_spend (
            name TEXT NOT NULL,
            period TEXT NOT NULL,
            tokens INTEGER NOT NULL DEFAULT 0,
            cost REAL NOT NULL DEFAULT 0,
            requests INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (name, period)
        );
    """),
    sql(4, "the files and batches of /v1/files and /v1/batches", sqlite_batches.SCHEMA),
    sql(5, "the model, provider and usage that wrote each message", """
        ALTER TABLE messages ADD COLUMN model TEXT;
        ALTER TABLE messages ADD COLUMN provider TEXT;
        ALTER TABLE messages ADD COLUMN usage TEXT;
        UPDATE messages SET model = json_extract(data, '$.metadata.model'),
            provider = json_extract(data, '$.metadata.provider'),
            usage = json_extract(data, '$.metadata.usage')
            WHERE json_valid(data) AND json_type(data, '$.metadata.model') = 'text';
    """),
    sql(6, "an index for listing one owner's conversations, newest first", """
        CREATE INDEX conversations_owner ON conversations(owner, updated_at, id);
    """),
]

_FIELDS = ("title", "model", "provider", "system_prompt")
_COLUMNS = "data, model, provider, usage"  # a message's columns, in _row's order


def _row(message: ChatMessage) -> tuple[str | None, ...]:
    """A message's columns: its JSON, then who wrote it and the usage (schema version 5)."""
    return (dump_message(message), *message_columns(message))


def default_path() -> Path:
    """``<data dir>/server-conversations.db``."""
    return data_dir() / "server-conversations.db"


def _now() -> datetime:
    return datetime.now(UTC)


class SQLiteConversationStore(sqlite_batches.SQLiteBatches, ConversationStore):
    """Conversations in a SQLite file (default ``<data dir>/server-conversations.db``), and
    the files and batches of ``/v1/files`` and ``/v1/batches``
    (:mod:`modelplex_server.sqlite_batches`)."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_path()
        fix = "fix server.conversations (or --conversations), or use 'memory'"
        try:
            conn, _ = open_database(self.path, what="server conversation database",
                                    migrations=MIGRATIONS, timeout=5.0, rows=True,
                                    foreign_keys=True, synchronous="FULL")
        except StorageError as err:
            if err.damaged:
                raise ConfigurationError(f"{self.path} is not a usable conversation database "
                                         f"({err.reason}); {fix}") from None
            raise ConfigurationError(f"cannot open the server's conversation database "
                                     f"{self.path}: {err.reason}; {fix}") from None
        self._conn: sqlite3.Connection | None = conn
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SQLiteConversationStore({str(self.path)!r})"

    # -- the worker-thread side ----------------------------------------------------------------
    def _run(self, work: Callable[[sqlite3.Connection], T], *, write: bool = False) -> T:
        with self._lock:
            conn = self._conn
            if conn is None:
                raise RuntimeError("the conversation store is closed")
            if not write:
                return work(conn)
            with transaction(conn):
                return work(conn)

    async def _call(self, work: Callable[[sqlite3.Connection], T], *,
                    write: bool = False) -> T:
        return await asyncio.to_thread(self._run, work, write=write)

    @staticmethod
    def _load(conn: sqlite3.Connection, row: sqlite3.Row) -> Conversation:
        messages = [ChatMessage.model_validate_json(m["data"]) for m in conn.execute(
            "SELECT data FROM messages WHERE conversation_id = ? ORDER BY position",
            (row["id"],))]
        return Conversation(id=row["id"], title=row["title"], model=row["model"],
                            provider=row["provider"], system_prompt=row["system_prompt"],
                            owner=row["owner"], messages=messages,
                            created_at=datetime.fromisoformat(row["created_at"]),
                            updated_at=datetime.fromisoformat(row["updated_at"]))

    @staticmethod
    def _insert(conn: sqlite3.Connection, conversation_id: str, start: int,
                rows: list[tuple[Any, ...]]) -> None:
        conn.executemany(f"INSERT INTO messages (conversation_id, position, {_COLUMNS}) "
                         "VALUES (?, ?, ?, ?, ?, ?)",
                         [(conversation_id, start + i, *row) for i, row in enumerate(rows)])

    @staticmethod
    def _touch(conn: sqlite3.Connection, conversation_id: str) -> bool:
        cur = conn.execute("UPDATE conversations SET updated_at = ? WHERE id = ?",
                           (_now().isoformat(), conversation_id))
        return cur.rowcount > 0

    # -- the interface ---------------------------------------------------------------------------
    async def create(self, conversation: Conversation, *,
                     most: int | None = None) -> Conversation | None:
        """Store a new conversation (with ``most``: counted and inserted in one write
        transaction, ``BEGIN IMMEDIATE``)."""
        c = conversation

        def work(conn: sqlite3.Connection) -> bool:
            if most is not None and conn.execute(
                    "SELECT COUNT(*) FROM conversations WHERE owner IS ?",
                    (c.owner,)).fetchone()[0] >= most:
                return False
            conn.execute("INSERT INTO conversations (id, title, model, provider, system_prompt,"
                         " owner, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (c.id, c.title, c.model, c.provider, c.system_prompt, c.owner,
                          c.created_at.isoformat(), c.updated_at.isoformat()))
            self._insert(conn, c.id, 0, [_row(m) for m in c.messages])
            return True

        return conversation if await self._call(work, write=True) else None

    async def get(self, conversation_id: str) -> Conversation | None:
        """The conversation, or None."""
        def work(conn: sqlite3.Connection) -> Conversation | None:
            row = conn.execute("SELECT * FROM conversations WHERE id = ?",
                               (conversation_id,)).fetchone()
            return None if row is None else self._load(conn, row)

        return await self._call(work)

    async def all(self) -> list[Conversation]:
        """Every conversation, most recently updated first."""
        def work(conn: sqlite3.Connection) -> list[Conversation]:
            rows = conn.execute("SELECT * FROM conversations ORDER BY updated_at DESC").fetchall()
            return [self._load(conn, row) for row in rows]

        return await self._call(work)

    async def summaries(self, owner: str | None, *, after: str | None = None,
                        limit: int = 100) -> list[ConversationSummary] | None:
        """A page of ``owner``'s conversations, filtered, ordered and limited in the query;
        no message is read (``message_count`` is counted on the messages' key)."""
        def work(conn: sqlite3.Connection) -> list[ConversationSummary] | None:
            where, args = "(? IS NULL OR owner = ?)", [owner, owner]
            if after is not None:
                cursor = conn.execute(f"SELECT updated_at, id FROM conversations WHERE {where} "
                                      "AND id = ?", (*args, after)).fetchone()
                if cursor is None:
                    return None
                where += " AND (updated_at, id) < (?, ?)"
                args += [cursor[0], cursor[1]]
            rows = conn.execute(
                "SELECT id, title, model, provider, system_prompt, owner, created_at, "
                "updated_at, (SELECT COUNT(*) FROM messages WHERE conversation_id = c.id) "
                f"AS message_count FROM conversations AS c WHERE {where} "
                "ORDER BY updated_at DESC, id DESC LIMIT ?", (*args, limit)).fetchall()
            return [ConversationSummary(**dict(row)) for row in rows]

        return await self._call(work)

    async def append(self, conversation_id: str, messages: list[ChatMessage], *,
                     most: int | None = None) -> None:
        """Add messages to a conversation's history (with ``most``: counted and added in one
        write transaction)."""
        def work(conn: sqlite3.Connection) -> None:  # the write lock is held from the start
            if not self._touch(conn, conversation_id):
                return
            start = conn.execute("SELECT coalesce(max(position) + 1, 0) FROM messages "
                                 "WHERE conversation_id = ?", (conversation_id,)).fetchone()[0]
            check_room(start, messages, most)  # raising rolls the transaction back
            self._insert(conn, conversation_id, start, [_row(m) for m in messages])

        await self._call(work, write=True)

    async def append_at(self, conversation_id: str, count: int,
                        messages: list[ChatMessage], *, most: int | None = None) -> bool:
        """Add messages if the conversation holds ``count`` (and, with ``most``, room for
        them), in one write transaction."""
        def work(conn: sqlite3.Connection) -> bool:  # the write lock is held from the start
            held = conn.execute("SELECT COUNT(*) FROM messages WHERE conversation_id = ?",
                                (conversation_id,)).fetchone()[0]
            if held != count or not self._touch(conn, conversation_id):
                return False
            check_room(count, messages, most)
            self._insert(conn, conversation_id, count, [_row(m) for m in messages])
            return True

        return await self._call(work, write=True)

    async def truncate(self, conversation_id: str, keep: int) -> None:
        """Keep only the first ``keep`` messages (to answer a message again)."""
        def work(conn: sqlite3.Connection) -> None:
            if self._touch(conn, conversation_id):
                conn.execute("DELETE FROM messages WHERE conversation_id = ? AND position >= ?",
                             (conversation_id, max(keep, 0)))

        await self._call(work, write=True)

    async def replace(self, conversation_id: str, start: int, end: int,
                      messages: list[ChatMessage]) -> None:
        """Put ``messages`` in place of the messages ``start`` to ``end`` (those after
        ``end`` follow them), in one transaction."""
        def work(conn: sqlite3.Connection) -> None:
            if not self._touch(conn, conversation_id):
                return
            tail = [tuple(row) for row in conn.execute(
                f"SELECT {_COLUMNS} FROM messages WHERE conversation_id = ? AND position >= ? "
                "ORDER BY position", (conversation_id, max(end, 0)))]
            conn.execute("DELETE FROM messages WHERE conversation_id = ? AND position >= ?",
                         (conversation_id, max(start, 0)))
            self._insert(conn, conversation_id, max(start, 0),
                         [_row(m) for m in messages] + tail)

        await self._call(work, write=True)

    async def update(self, conversation_id: str, **fields: Any) -> Conversation | None:
        """Change a conversation's ``title``, ``model``, ``provider`` or ``system_prompt``;
        None if there is none (a value of the wrong type is a ``ValueError``)."""
        unknown = set(fields) - set(_FIELDS)
        if unknown:
            raise ValueError(f"cannot update {', '.join(sorted(unknown))}")
        for name, value in fields.items():
            if not (isinstance(value, str) or (name == "system_prompt" and value is None)):
                raise ValueError(f"{name} must be a string")

        def work(conn: sqlite3.Connection) -> Conversation | None:
            columns = [*fields, "updated_at"]
            values = [*fields.values(), _now().isoformat(), conversation_id]
            assignments = ", ".join(f"{name} = ?" for name in columns)
            conn.execute(f"UPDATE conversations SET {assignments} WHERE id = ?",
                         values)
            row = conn.execute("SELECT * FROM conversations WHERE id = ?",
                               (conversation_id,)).fetchone()
            return None if row is None else self._load(conn, row)

        return await self._call(work, write=True)

    async def delete(self, conversation_id: str) -> bool:
        """Delete a conversation; false if there was none."""
        def work(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM conversations WHERE id = ?",
                                (conversation_id,)).rowcount > 0

        return await self._call(work, write=True)

    async def delete_at(self, conversation_id: str, count: int) -> bool:
        """Delete a conversation holding ``count`` messages, in one write transaction."""
        def work(conn: sqlite3.Connection) -> bool:  # the write lock is held from the start
            held = conn.execute("SELECT COUNT(*) FROM messages WHERE conversation_id = ?",
                                (conversation_id,)).fetchone()[0]
            return held == count and conn.execute(
                "DELETE FROM conversations WHERE id = ?", (conversation_id,)).rowcount > 0

        return await self._call(work, write=True)

    # -- keys --------------------------------------------------------------------------------
    @staticmethod
    def _key(row: sqlite3.Row) -> StoredKey:
        return StoredKey(key=KeyConfig.model_validate_json(row["settings"]),
                         created_at=datetime.fromisoformat(row["created_at"]),
                         revoked_at=datetime.fromisoformat(row["revoked_at"])
                         if row["revoked_at"] else None)

    async def create_key(self, stored: StoredKey) -> None:
        """Keep a new key; :class:`KeyExistsError` if its name is taken."""
        def work(conn: sqlite3.Connection) -> None:
            try:
                conn.execute("INSERT INTO api_keys (name, hash, settings, created_at) "
                             "VALUES (?, ?, ?, ?)",
                             (stored.key.name, stored.key.hash, stored.key.model_dump_json(),
                              stored.created_at.isoformat()))
            except sqlite3.IntegrityError:
                raise KeyExistsError(f"a key named {stored.key.name!r} (or with that hash) "
                                     "exists already") from None

        await self._call(work, write=True)

    async def find_key(self, hashed: str) -> StoredKey | None:
        """The key (not revoked) whose hash is ``hashed``."""
        def work(conn: sqlite3.Connection) -> StoredKey | None:
            row = conn.execute("SELECT * FROM api_keys WHERE hash = ? AND "
                               "revoked_at IS NULL", (hashed,)).fetchone()
            return None if row is None else self._key(row)

        return await self._call(work)

    async def list_keys(self) -> list[StoredKey]:
        """Every key, oldest first."""
        def work(conn: sqlite3.Connection) -> list[StoredKey]:
            return [self._key(row) for row in conn.execute(
                "SELECT * FROM api_keys ORDER BY created_at, name")]

        return await self._call(work)

    async def revoke_key(self, name: str) -> bool:
        """Revoke a key; false if there is no such (unrevoked) key."""
        def work(conn: sqlite3.Connection) -> bool:
            return conn.execute("UPDATE api_keys SET revoked_at = ? WHERE name = ? AND "
                                "revoked_at IS NULL", (_now().isoformat(), name)).rowcount > 0

        return await self._call(work, write=True)

    async def add_spend(self, name: str, period: str, tokens: int, cost: float) -> None:
        """Add one answer's tokens and cost to key ``name``'s spend in ``period``."""
        def work(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO key_spend (name, period, tokens, cost, requests) VALUES "
                         "(?, ?, ?, ?, 1) ON CONFLICT (name, period) DO UPDATE SET tokens = "
                         "tokens + excluded.tokens, cost = cost + excluded.cost, "
                         "requests = requests + 1", (name, period, tokens, cost))

        await self._call(work, write=True)

    async def get_spend(self, name: str, period: str) -> Spend:
        """Key ``name``'s spend in ``period``."""
        def work(conn: sqlite3.Connection) -> Spend:
            row = conn.execute("SELECT tokens, cost, requests FROM key_spend WHERE name = ? "
                               "AND period = ?", (name, period)).fetchone()
            return Spend() if row is None else Spend(int(row[0]), float(row[1]), int(row[2]))

        return await self._call(work)

    async def ping(self) -> None:
        """Raise when the database cannot be read."""
        await self._call(lambda conn: conn.execute("SELECT 1").fetchone())

    def describe(self) -> str:
        """The database file."""
        return f"SQLite {self.path}"

    async def aclose(self) -> None:
        """Close the database."""
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Close the database (idempotent)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def open_store(setting: str | None) -> ConversationStore:
    """The store a ``server.store`` (or ``server.conversations``) setting names:
    ``"memory"``, a ``postgresql://`` URL (:mod:`modelplex_server.pg_store`), a SQLite file
    path, or None for the default file (``<data dir>/server-conversations.db``)."""
    if setting is not None and setting.strip().lower() == "memory":
        return MemoryConversationStore()
    if setting is not None and setting.strip().lower().startswith(("postgresql://",
                                                                    "postgres://")):
        from modelplex_server.pg_store import PostgresConversationStore

        return PostgresConversationStore(setting.strip())
    return SQLiteConversationStore(setting.strip() if setting else None)
