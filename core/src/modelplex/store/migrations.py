"""Forward-only schema migrations for modelplex's SQLite databases.

A database records the migrations applied to it in a ``schema_migrations`` table (version,
name, time). :func:`migrate` applies the missing ones in order, each in its own transaction
together with its row, so a process killed mid-upgrade leaves the database at the previous
version, never half-way. Several processes opening the same database at once are safe: the
version is read again under the write lock. Migrations are never edited once released; a
change of schema is a new migration at the end of the list. :func:`open_database` opens a
store's file at its schema's version (see :mod:`modelplex.store.sqlite`).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import attrs

from modelplex.errors import ConfigurationError
from modelplex.store.sqlite import connect, storage_error, transaction

__all__ = ["Migration", "current_version", "migrate", "open_database", "sql"]


@attrs.frozen
class Migration:
    """One step of a schema: ``version`` (1, 2, ...), a ``name``, and ``apply(conn)``."""

    version: int
    name: str
    apply: Callable[[sqlite3.Connection], None]


def _script(sql: str) -> Callable[[sqlite3.Connection], None]:
    def apply(conn: sqlite3.Connection) -> None:
        for statement in sql.split(";\n"):
            if statement.strip():
                conn.execute(statement)
    return apply


def sql(version: int, name: str, statements: str) -> Migration:
    """A migration made of SQL statements separated by ``;`` at the end of a line."""
    return Migration(version, name, _script(statements))


def current_version(conn: sqlite3.Connection) -> int:
    """The highest migration applied (0 for a new database)."""
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                          "name = 'schema_migrations'").fetchone()
    if not exists:
        return 0
    row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
    return int(row[0] or 0)


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration], *,
            what: str = "database", upto: int | None = None) -> int:
    """Apply the migrations ``conn`` lacks (up to ``upto``); returns the version reached.

    ``conn`` must be in autocommit mode (``isolation_level=None``). A database newer than
    ``migrations`` raises :class:`ConfigurationError`: it was written by a newer modelplex.
    """
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(migrations) + 1)):
        raise ValueError("migrations must be numbered 1, 2, 3, ... in order")
    target = len(migrations) if upto is None else upto
    latest = len(migrations)
    found = current_version(conn)
    if found > latest:
        raise ConfigurationError(
            f"the {what} is at schema version {found}, newer than this modelplex knows "
            f"({latest}): upgrade modelplex to use it")
    while found < target:
        with transaction(conn):
            conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER "
                         "PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)")
            found = current_version(conn)  # another process may have migrated meanwhile
            if found >= target:
                break
            step = migrations[found]
            step.apply(conn)
            conn.execute("INSERT INTO schema_migrations (version, name, applied_at) "
                         "VALUES (?, ?, ?)",
                         (step.version, step.name, datetime.now(UTC).isoformat()))
        found = step.version
    return found


def open_database(path: Path | str | os.PathLike[str], *, what: str, fix: str = "",
                  migrations: Sequence[Migration] = (), timeout: float = 10.0,
                  rows: bool = False, foreign_keys: bool = False,
                  synchronous: str = "NORMAL") -> tuple[sqlite3.Connection, int]:
    """Create the folder, connect (:func:`modelplex.store.sqlite.connect`) and apply
    ``migrations``; returns the connection and the schema version reached. Any failure, a
    database written by a newer modelplex included, is a
    :class:`~modelplex.errors.StorageError` naming the ``what`` at ``path`` (e.g. ``"log
    database"``) and the ``fix``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = connect(path, timeout=timeout, rows=rows, foreign_keys=foreign_keys,
                       synchronous=synchronous)
    except (OSError, sqlite3.Error) as err:
        raise storage_error(err, path, what=what, fix=fix, opening=True) from None
    try:
        version = migrate(conn, migrations, what=f"{what} {path}") if migrations else 0
    except (OSError, sqlite3.Error, ConfigurationError) as err:
        conn.close()
        raise storage_error(err, path, what=what, fix=fix, opening=True) from None
    except BaseException:
        conn.close()
        raise
    return conn, version
