"""The server's conversations in PostgreSQL, shared by every worker and replica.

``[server] store = "postgresql://user:password@host:5432/modelplex"`` (or ``--store``) keeps
the conversations of ``/api`` and ``/ws`` in PostgreSQL through ``asyncpg`` (install
``modelplex-server[postgresql]``), so replicas behind a load balancer see the same ones: a
conversation started through one replica is continued through another.

The schema is the one of :mod:`modelplex_server.sqlite_store`, with the same numbered,
forward-only migrations (:data:`MIGRATIONS`): a database records the versions applied in
``schema_migrations``, and the missing ones are applied on open, each in its own transaction
with its row, under an advisory lock (replicas starting together migrate once). Each change
to a conversation is one transaction; appends lock the conversation's row, so two replicas
adding to one conversation at once keep both, in order.

While PostgreSQL is unreachable every call raises
:class:`~modelplex_server.conversations.StoreUnavailableError` (the API answers 503 with
``Retry-After``, ``/readyz`` says so): nothing is dropped silently, and a write either
happened or was refused. The connection pool reconnects on the next call once the database is
back. A server started while the database is down starts anyway (and is not ready); a wrong
password or database name stops it at start with an error naming the setting.

::

    store = PostgresConversationStore("postgresql://mpx@db/modelplex")
    app = create_app(settings, conversations=store)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import attrs

from modelplex.errors import ConfigurationError
from modelplex.types import ChatMessage
from modelplex_server import pg_batches
from modelplex_server.budgets import Spend
from modelplex_server.conversations import (
    Conversation,
    ConversationStore,
    ConversationSummary,
    KeyExistsError,
    StoredKey,
    StoreUnavailableError,
    check_room,
    dump_message,
    message_columns,
)
from modelplex_server.settings import KeyConfig

__all__ = ["MIGRATIONS", "PgMigration", "PostgresConversationStore", "is_postgres_url",
           "migrate", "redact"]

log = logging.getLogger("modelplex.server")

T = TypeVar("T")

#: Any asyncpg connection or pool.
Conn = Any


@attrs.frozen
class PgMigration:
    """One step of the PostgreSQL schema: ``version``, ``name`` and its SQL statements."""

    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: list[PgMigration] = [
    PgMigration(1, "server conversations and their messages", (
        """CREATE TABLE conversations (
            id TEXT PRIMARY KEY,
            title TEXT NOT NULL,
            model TEXT NOT NULL,
            provider TEXT NOT NULL,
            system_prompt TEXT,
            created_at TIMESTAMPTZ NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL
        )""",
        "CREATE INDEX conversations_updated ON conversations(updated_at)",
        """CREATE TABLE messages (
            conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            data TEXT NOT NULL,
            PRIMARY KEY (conversation_id, position)
        )""",
    )),
    PgMigration(2, "the API key that owns each conversation", (
        "ALTER TABLE conversations ADD COLUMN owner TEXT",
    )),
    PgMigration(3, "API keys made by `modelplex keys` and their spend per period", (
        """CREATE TABLE api_keys (
            name TEXT PRIMARY KEY,
            hash TEXT NOT NULL UNIQUE,
            settings TEXT NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            revoked_at TIMESTAMPTZ
        )""",
        """CREATE TABLE key_spend (
            name TEXT NOT NULL,
            period TEXT NOT NULL,
            tokens BIGINT NOT NULL DEFAULT 0,
            cost DOUBLE PRECISION NOT NULL DEFAULT 0,
            requests BIGINT NOT NULL DEFAULT 0,
            PRIMARY KEY (name, period)
        )""",
    )),
    PgMigration(4, "the files and batches of /v1/files and /v1/batches", pg_batches.STATEMENTS),
    PgMigration(5, "the model, provider and usage that wrote each message", (
        "ALTER TABLE messages ADD COLUMN model TEXT",
        "ALTER TABLE messages ADD COLUMN provider TEXT",
        "ALTER TABLE messages ADD COLUMN usage TEXT",
        """UPDATE messages SET model = data::jsonb #>> '{metadata,model}',
            provider = data::jsonb #>> '{metadata,provider}',
            usage = (data::jsonb #> '{metadata,usage}')::text
            WHERE jsonb_typeof(data::jsonb #> '{metadata,model}') = 'string'""",
    )),
    PgMigration(6, "an index for listing one owner's conversations, newest first", (
        "CREATE INDEX conversations_owner ON conversations(owner, updated_at, id)",)),
]

_FIELDS = ("title", "model", "provider", "system_prompt")
_COLUMNS = "data, model, provider, usage"  # a message's columns, in _row's order
_LOCK_ID = 0x6D70785F73746F  # the advisory lock taken while migrating ("mpx_sto")
_CONVERSATIONS_LOCK = 0x6D7843  # an owner's advisory lock class, to count and insert


def _row(message: ChatMessage) -> tuple[str | None, ...]:
    """A message's columns: its JSON, then who wrote it and the usage (schema version 5)."""
    return (dump_message(message), *message_columns(message))


def is_postgres_url(value: str | None) -> bool:
    """Whether a store setting names PostgreSQL (``postgresql://`` or ``postgres://``)."""
    return bool(value) and str(value).strip().lower().startswith(("postgresql://",
                                                                  "postgres://"))


def redact(url: str) -> str:
    """The URL without its password, for logs and ``/readyz``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _unavailable_errors() -> tuple[type[BaseException], ...]:
    import asyncpg

    return (OSError, TimeoutError, asyncpg.PostgresConnectionError,
            asyncpg.exceptions.OperatorInterventionError,
            asyncpg.exceptions.TooManyConnectionsError, asyncpg.InterfaceError)


async def current_version(conn: Conn) -> int:
    """The highest migration applied (0 for a new database)."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations"))


async def migrate(conn: Conn, migrations: Sequence[PgMigration] = MIGRATIONS, *,
                  upto: int | None = None, what: str = "conversation database") -> int:
    """Apply the migrations ``conn``'s database lacks (up to ``upto``); the version reached.

    Each step runs in its own transaction with its ``schema_migrations`` row, under an
    advisory lock. A database newer than ``migrations`` raises :class:`ConfigurationError`.
    """
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(migrations) + 1)):
        raise ValueError("migrations must be numbered 1, 2, 3, ... in order")
    latest = len(migrations)
    target = latest if upto is None else upto
    found = await current_version(conn)
    if found > latest:
        raise ConfigurationError(
            f"the {what} is at schema version {found}, newer than this modelplex knows "
            f"({latest}): upgrade modelplex to use it")
    while found < target:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_ID)
            await conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER "
                               "PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT "
                               "NULL)")
            found = await current_version(conn)  # another replica may have migrated meanwhile
            if found >= target:
                break
            step = migrations[found]
            for statement in step.statements:
                await conn.execute(statement)
            await conn.execute("INSERT INTO schema_migrations (version, name, applied_at) "
                               "VALUES ($1, $2, $3)", step.version, step.name, _now())
        found = step.version
    return found


def _now() -> datetime:
    return datetime.now(UTC)


class PostgresConversationStore(pg_batches.PgBatches, ConversationStore):
    """Conversations in PostgreSQL (see the module docs), and the files and batches of
    ``/v1/files`` and ``/v1/batches`` (:mod:`modelplex_server.pg_batches`).

    Args:
        url: ``postgresql://user:password@host:port/database`` (libpq's URL form; asyncpg
            also reads ``PGPASSWORD`` and the other ``PG*`` variables).
        min_size, max_size: the connection pool's bounds.
        timeout: seconds a connection attempt or a query may take before the store counts
            as unavailable.
    """

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 10,
                 timeout: float = 5.0) -> None:
        try:
            import asyncpg  # noqa: F401
        except ImportError:
            raise ConfigurationError(
                "a postgresql:// store needs asyncpg: pip install "
                "'modelplex-server[postgresql]'") from None
        self.url = url
        self.min_size = min_size
        self.max_size = max_size
        self.timeout = timeout
        self._pool: Any = None
        self._lock = asyncio.Lock()
        self._closed = False
        self._errors = _unavailable_errors()

    def __repr__(self) -> str:
        return f"PostgresConversationStore({redact(self.url)!r})"

    def describe(self) -> str:
        """Where the conversations are (no password)."""
        return f"PostgreSQL at {redact(self.url)}"

    # -- connections --------------------------------------------------------------------------
    def _unavailable(self, err: BaseException) -> StoreUnavailableError:
        detail = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        return StoreUnavailableError(f"the conversation store ({self.describe()}) is "
                                     f"unavailable ({detail}); retry shortly")

    async def _open_pool(self) -> Any:
        import asyncpg

        async def setup(conn: Conn) -> None:
            await migrate(conn)

        pool = await asyncpg.create_pool(
            self.url, min_size=self.min_size, max_size=self.max_size,
            timeout=self.timeout, command_timeout=self.timeout, init=None)
        try:
            async with pool.acquire() as conn:
                await setup(conn)
        except BaseException:
            await pool.close()
            raise
        return pool

    async def _get_pool(self) -> Any:
        if self._closed:
            raise StoreUnavailableError("the conversation store is closed")
        pool = self._pool
        if pool is not None:
            return pool
        async with self._lock:
            if self._pool is None:
                try:
                    self._pool = await self._open_pool()
                except self._errors as err:
                    raise self._unavailable(err) from err
                except ConfigurationError:
                    raise
                except Exception as err:
                    raise self._fatal(err) from err
            return self._pool

    def _fatal(self, err: BaseException) -> ConfigurationError:
        return ConfigurationError(
            f"cannot use the conversation store {self.describe()}: {type(err).__name__}: "
            f"{err}; fix server.store (or --store)")

    async def _run(self, work: Callable[[Conn], Awaitable[T]], *, write: bool = False) -> T:
        pool = await self._get_pool()
        try:
            async with pool.acquire(timeout=self.timeout) as conn:
                if not write:
                    return await work(conn)
                async with conn.transaction():
                    return await work(conn)
        except self._errors as err:
            raise self._unavailable(err) from err

    async def open(self) -> None:
        """Connect and migrate now (at start-up): a wrong password or database is a
        :class:`ConfigurationError`; an unreachable server is logged and retried on use."""
        try:
            await self._get_pool()
        except StoreUnavailableError as err:
            log.warning("%s; starting anyway: /readyz reports it until the database answers",
                        err)

    async def ping(self) -> None:
        """Raise when the database does not answer."""
        await self._run(lambda conn: conn.fetchval("SELECT 1"))

    # -- rows ---------------------------------------------------------------------------------
    @staticmethod
    async def _load(conn: Conn, rows: list[Any]) -> list[Conversation]:
        if not rows:
            return []
        ids = [row["id"] for row in rows]
        messages: dict[str, list[ChatMessage]] = {i: [] for i in ids}
        for m in await conn.fetch("SELECT conversation_id, data FROM messages WHERE "
                                  "conversation_id = ANY($1::text[]) ORDER BY "
                                  "conversation_id, position", ids):
            messages[m["conversation_id"]].append(ChatMessage.model_validate_json(m["data"]))
        return [Conversation(id=row["id"], title=row["title"], model=row["model"],
                             provider=row["provider"], system_prompt=row["system_prompt"],
                             owner=row["owner"], messages=messages[row["id"]],
                             created_at=row["created_at"], updated_at=row["updated_at"])
                for row in rows]

    @staticmethod
    async def _touch(conn: Conn, conversation_id: str) -> bool:
        """Update the time (and lock the row until the transaction ends)."""
        found = await conn.fetchval("UPDATE conversations SET updated_at = $1 WHERE id = $2 "
                                    "RETURNING 1", _now(), conversation_id)
        return found is not None

    @staticmethod
    async def _insert(conn: Conn, conversation_id: str, start: int,
                      rows: Sequence[Sequence[str | None]]) -> None:
        if rows:
            await conn.executemany(f"INSERT INTO messages (conversation_id, position, "
                                   f"{_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)",
                                   [(conversation_id, start + i, *row)
                                    for i, row in enumerate(rows)])

    # -- the interface --------------------------------------------------------------------------
    async def create(self, conversation: Conversation, *,
                     most: int | None = None) -> Conversation | None:
        """Store a new conversation (with ``most``: counted and inserted in one transaction
        under the owner's advisory lock)."""
        c = conversation

        async def work(conn: Conn) -> bool:
            if most is not None:
                await conn.execute("SELECT pg_advisory_xact_lock($1::int4, hashtext($2::text))",
                                   _CONVERSATIONS_LOCK, "" if c.owner is None else "key:" + c.owner)
                if await conn.fetchval("SELECT COUNT(*) FROM conversations WHERE owner IS NOT "
                                       "DISTINCT FROM $1", c.owner) >= most:
                    return False
            await conn.execute(
                "INSERT INTO conversations (id, title, model, provider, system_prompt, owner, "
                "created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                c.id, c.title, c.model, c.provider, c.system_prompt, c.owner, c.created_at,
                c.updated_at)
            await self._insert(conn, c.id, 0, [_row(m) for m in c.messages])
            return True

        return conversation if await self._run(work, write=True) else None

    async def get(self, conversation_id: str) -> Conversation | None:
        """The conversation, or None."""
        async def work(conn: Conn) -> Conversation | None:
            rows = await conn.fetch("SELECT * FROM conversations WHERE id = $1",
                                    conversation_id)
            loaded = await self._load(conn, rows)
            return loaded[0] if loaded else None

        return await self._run(work, write=True)  # one snapshot for the row and messages

    async def all(self) -> list[Conversation]:
        """Every conversation, most recently updated first."""
        async def work(conn: Conn) -> list[Conversation]:
            rows = await conn.fetch("SELECT * FROM conversations ORDER BY updated_at DESC")
            return await self._load(conn, rows)

        return await self._run(work, write=True)

    async def summaries(self, owner: str | None, *, after: str | None = None,
                        limit: int = 100) -> list[ConversationSummary] | None:
        """A page of ``owner``'s conversations, filtered, ordered and limited in the query;
        no message is read."""
        async def work(conn: Conn) -> list[ConversationSummary] | None:
            where, args = "($1::text IS NULL OR owner = $1)", [owner, limit]
            if after is not None:
                if await conn.fetchval(f"SELECT 1 FROM conversations WHERE {where} AND "
                                       "id = $2", owner, after) is None:
                    return None
                where += (" AND (updated_at, id) < (SELECT updated_at, id FROM conversations "
                          "WHERE id = $3)")
                args.append(after)
            rows = await conn.fetch(
                "SELECT id, title, model, provider, system_prompt, owner, created_at, "
                "updated_at, (SELECT COUNT(*) FROM messages WHERE conversation_id = c.id) "
                f"AS message_count FROM conversations AS c WHERE {where} "
                "ORDER BY updated_at DESC, id DESC LIMIT $2", *args)
            return [ConversationSummary(**dict(row)) for row in rows]

        return await self._run(work, write=True)  # one snapshot for the cursor and page

    async def append(self, conversation_id: str, messages: list[ChatMessage], *,
                     most: int | None = None) -> None:
        """Add messages (with ``most``: counted and added under the conversation's row lock)."""
        async def work(conn: Conn) -> None:
            start = await _locked_count(conn, conversation_id)
            if start is None or not await self._touch(conn, conversation_id):
                return
            check_room(start, messages, most)  # raising rolls the transaction back
            await self._insert(conn, conversation_id, start, [_row(m) for m in messages])

        await self._run(work, write=True)

    async def append_at(self, conversation_id: str, count: int,
                        messages: list[ChatMessage], *, most: int | None = None) -> bool:
        """Add messages if the conversation holds ``count`` (and, with ``most``, room for
        them), in one transaction under the conversation's row lock."""
        async def work(conn: Conn) -> bool:
            if await _locked_count(conn, conversation_id) != count \
                    or not await self._touch(conn, conversation_id):
                return False
            check_room(count, messages, most)
            await self._insert(conn, conversation_id, count, [_row(m) for m in messages])
            return True

        return await self._run(work, write=True)

    async def truncate(self, conversation_id: str, keep: int) -> None:
        """Keep only the first ``keep`` messages (to answer a message again)."""
        async def work(conn: Conn) -> None:
            if await self._touch(conn, conversation_id):
                await conn.execute("DELETE FROM messages WHERE conversation_id = $1 AND "
                                   "position >= $2", conversation_id, max(keep, 0))

        await self._run(work, write=True)

    async def replace(self, conversation_id: str, start: int, end: int,
                      messages: list[ChatMessage]) -> None:
        """Put ``messages`` in place of the messages ``start`` to ``end`` (those after
        ``end`` follow them), in one transaction."""
        async def work(conn: Conn) -> None:
            if not await self._touch(conn, conversation_id):
                return
            tail = [tuple(row) for row in await conn.fetch(
                f"SELECT {_COLUMNS} FROM messages WHERE conversation_id = $1 AND "
                "position >= $2 ORDER BY position", conversation_id, max(end, 0))]
            await conn.execute("DELETE FROM messages WHERE conversation_id = $1 AND "
                               "position >= $2", conversation_id, max(start, 0))
            await self._insert(conn, conversation_id, max(start, 0),
                               [_row(m) for m in messages] + tail)

        await self._run(work, write=True)

    async def update(self, conversation_id: str, **fields: Any) -> Conversation | None:
        """Change a conversation's ``title``, ``model``, ``provider`` or ``system_prompt``;
        None if there is none (a value of the wrong type is a ``ValueError``)."""
        unknown = set(fields) - set(_FIELDS)
        if unknown:
            raise ValueError(f"cannot update {', '.join(sorted(unknown))}")
        for name, value in fields.items():
            if not (isinstance(value, str) or (name == "system_prompt" and value is None)):
                raise ValueError(f"{name} must be a string")

        async def work(conn: Conn) -> Conversation | None:
            columns = [*fields, "updated_at"]
            values = [*fields.values(), _now()]
            assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(columns, 2))
            rows = await conn.fetch(f"UPDATE conversations SET {assignments} WHERE id = $1 "
                                    "RETURNING *", conversation_id, *values)
            loaded = await self._load(conn, rows)
            return loaded[0] if loaded else None

        return await self._run(work, write=True)

    async def delete(self, conversation_id: str) -> bool:
        """Delete a conversation; false if there was none."""
        async def work(conn: Conn) -> bool:
            found = await conn.fetchval("DELETE FROM conversations WHERE id = $1 RETURNING 1",
                                        conversation_id)
            return found is not None

        return await self._run(work, write=True)

    async def delete_at(self, conversation_id: str, count: int) -> bool:
        """Delete a conversation holding ``count`` messages, in one transaction under its
        row lock."""
        async def work(conn: Conn) -> bool:
            return await _locked_count(conn, conversation_id) == count and await conn.fetchval(
                "DELETE FROM conversations WHERE id = $1 RETURNING 1",
                conversation_id) is not None

        return await self._run(work, write=True)

    # -- keys --------------------------------------------------------------------------------
    @staticmethod
    def _key(row: Any) -> StoredKey:
        return StoredKey(key=KeyConfig.model_validate_json(row["settings"]),
                         created_at=row["created_at"], revoked_at=row["revoked_at"])

    async def create_key(self, stored: StoredKey) -> None:
        """Keep a new key; :class:`KeyExistsError` if its name is taken."""
        import asyncpg

        async def work(conn: Conn) -> None:
            await conn.execute("INSERT INTO api_keys (name, hash, settings, created_at) VALUES "
                               "($1, $2, $3, $4)", stored.key.name, stored.key.hash,
                               stored.key.model_dump_json(), stored.created_at)

        try:
            await self._run(work, write=True)
        except asyncpg.UniqueViolationError:
            raise KeyExistsError(f"a key named {stored.key.name!r} (or with that hash) "
                                 "exists already") from None

    async def find_key(self, hashed: str) -> StoredKey | None:
        """The key (not revoked) whose hash is ``hashed``."""
        async def work(conn: Conn) -> StoredKey | None:
            row = await conn.fetchrow("SELECT * FROM api_keys WHERE hash = $1 AND "
                                      "revoked_at IS NULL", hashed)
            return None if row is None else self._key(row)

        return await self._run(work)

    async def list_keys(self) -> list[StoredKey]:
        """Every key, oldest first."""
        async def work(conn: Conn) -> list[StoredKey]:
            return [self._key(row) for row in await conn.fetch(
                "SELECT * FROM api_keys ORDER BY created_at, name")]

        return await self._run(work)

    async def revoke_key(self, name: str) -> bool:
        """Revoke a key; false if there is no such (unrevoked) key."""
        async def work(conn: Conn) -> bool:
            found = await conn.fetchval("UPDATE api_keys SET revoked_at = $1 WHERE name = $2 "
                                        "AND revoked_at IS NULL RETURNING 1", _now(), name)
            return found is not None

        return await self._run(work, write=True)

    async def add_spend(self, name: str, period: str, tokens: int, cost: float) -> None:
        """Add one answer's tokens and cost to key ``name``'s spend in ``period`` (one
        atomic upsert: replicas adding at once all count)."""
        async def work(conn: Conn) -> None:
            await conn.execute(
                "INSERT INTO key_spend AS s (name, period, tokens, cost, requests) VALUES "
                "($1, $2, $3, $4, 1) ON CONFLICT (name, period) DO UPDATE SET tokens = "
                "s.tokens + excluded.tokens, cost = s.cost + excluded.cost, "
                "requests = s.requests + 1", name, period, tokens, cost)

        await self._run(work)

    async def get_spend(self, name: str, period: str) -> Spend:
        """Key ``name``'s spend in ``period``."""
        async def work(conn: Conn) -> Spend:
            row = await conn.fetchrow("SELECT tokens, cost, requests FROM key_spend WHERE "
                                      "name = $1 AND period = $2", name, period)
            return Spend() if row is None else Spend(int(row[0]), float(row[1]), int(row[2]))

        return await self._run(work)

    async def aclose(self) -> None:
        """Close the connection pool (idempotent)."""
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), self.timeout)
            except Exception:  # a dead server: drop the connections instead
                pool.terminate()


async def _locked_count(conn: Conn, conversation_id: str) -> int | None:
    """How many messages the conversation holds, with its row locked until the transaction
    ends (``None``: no such conversation)."""
    if await conn.fetchval("SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE",
                           conversation_id) is None:
        return None
    held: int = await conn.fetchval("SELECT COUNT(*) FROM messages WHERE conversation_id = $1",
                                    conversation_id)
    return held
