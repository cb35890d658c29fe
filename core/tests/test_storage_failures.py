"""The storage-failure policy in Python (issue 19, #11 and #13): a store whose file cannot be
used never fails a request (one warning naming the file and the fix, the answer anyway); its
reads and management calls raise one :class:`StorageError` saying the same; never a raw
``sqlite3`` error."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from modelplex import ChatManager
from modelplex.errors import ModelplexError, StorageError
from modelplex.plugins import Plugins
from modelplex.store.logs import Exchange, LogStore
from modelplex.store.sqlite import storage_error
from modelplex.store.sqlite_cache import SQLiteCache

GARBAGE = bytes(range(256)) * 64
ANSWER = "The capital of France is Paris."


def garbage(path: Path) -> Path:
    path.write_bytes(GARBAGE)
    return path


def store_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and r.name.startswith("modelplex")]


@pytest.mark.parametrize("setting", ["config", "instance"])
async def test_a_damaged_sqlite_cache_never_fails_a_request(
        fake_plugins: Plugins, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        setting: str) -> None:
    path = garbage(tmp_path / "cache.db")
    cache: Any = {"backend": "sqlite", "path": str(path)} if setting == "config" else \
        SQLiteCache(path)
    with caplog.at_level(logging.WARNING):
        async with ChatManager("fake:echo", plugins=fake_plugins, cache=cache) as chat:
            for _ in range(3):
                meta = await chat.get_response_with_meta("hi")
                assert meta.content == ANSWER and not meta.cache_hit
    found = store_warnings(caplog)
    assert len(found) == 1, found
    assert str(path) in found[0] and "move it aside" in found[0]
    assert path.read_bytes() == GARBAGE


async def test_a_damaged_sqlite_cache_is_one_clear_error_to_manage(tmp_path: Path) -> None:
    path = garbage(tmp_path / "cache.db")
    cache = SQLiteCache(path)
    assert isinstance(cache.failure, StorageError)
    for call in (cache.stats, cache.clear):
        with pytest.raises(StorageError, match="damaged or not a SQLite database") as caught:
            await call()
        assert caught.value.where == str(path) and caught.value.damaged
    with pytest.raises(StorageError):
        await cache.delete("k")
    assert await cache.get("k") is None  # a miss
    await cache.set("k", 1)  # nothing, and no error
    await cache.aclose()


async def test_a_cache_file_damaged_while_open(tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "cache.db"
    cache = SQLiteCache(path)
    await cache.set("k", {"v": 1})
    assert (await cache.stats()).size == 1
    assert cache._reader is not None
    cache._reader.close()
    # what a reader sees when the file under it goes bad
    cache._reader = _raising(  # type: ignore[assignment]
        sqlite3.DatabaseError("database disk image is malformed"))
    with caplog.at_level(logging.WARNING):
        assert await cache.get("other") is None
        assert await cache.get("other") is None
    assert len(store_warnings(caplog)) == 1
    with pytest.raises(StorageError, match="malformed"):
        await cache.stats()
    await cache.aclose()


class _raising:
    def __init__(self, err: Exception) -> None:
        self.err = err

    def execute(self, *args: Any) -> Any:
        raise self.err

    def close(self) -> None:
        pass


def _exchange(text: str = "hi") -> Exchange:
    return Exchange(provider="fake", model="echo", prompt=text, response=ANSWER,
                    conversation_id="c1")


@pytest.mark.parametrize("damage", ["garbage", "unopenable", "newer"])
async def test_an_unusable_log_database_never_fails_a_request(
        fake_plugins: Plugins, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        damage: str) -> None:
    path = tmp_path / "logs.db"
    if damage == "garbage":
        garbage(path)
    elif damage == "unopenable":
        (tmp_path / "file").write_text("")
        path = tmp_path / "file" / "logs.db"
    else:
        LogStore(path).close()
        conn = sqlite3.connect(path)
        conn.execute("INSERT INTO schema_migrations VALUES (99, 'from the future', 'x')")
        conn.commit()
        conn.close()
    with caplog.at_level(logging.WARNING):
        for conversation in (True, "c1"):
            caplog.clear()
            async with ChatManager("fake:echo", plugins=fake_plugins, logs=path,
                                   conversation=conversation) as chat:
                assert (await chat.get_response_with_meta("hi")).content == ANSWER
                assert (await chat.get_response_with_meta("again")).content == ANSWER
            found = store_warnings(caplog)
            assert len(found) == 1, found
            assert str(path) in found[0]
    store = LogStore(path)
    assert await store.record(_exchange()) == 0  # not stored, not raised
    for read in (store.recent, store.conversations, store.last_conversation_id,
                 lambda: store.search("x"), lambda: store.exchanges("c1")):
        with pytest.raises(StorageError) as caught:
            read()
        assert str(path) in str(caught.value)
        assert isinstance(caught.value, ModelplexError)
    store.close()


async def test_a_log_database_damaged_while_open(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    store = LogStore(tmp_path / "logs.db")
    assert await store.record(_exchange()) > 0
    assert store._conn is not None
    store._conn.close()
    store._conn = _raising(sqlite3.DatabaseError("database disk image is malformed"))  # type: ignore[assignment]
    with pytest.raises(StorageError, match="damaged or not a SQLite database"):
        store.recent()
    with caplog.at_level(logging.WARNING):
        assert await store.record(_exchange()) == 0  # unavailable now: one warning was given
    assert store.failure is not None
    store.close()


def test_what_counts_as_a_damaged_file(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    damaged = storage_error(sqlite3.DatabaseError("file is not a database"), path, what="cache",
                            fix="choose another file")
    assert damaged.damaged and str(damaged) == (
        f"the cache {path} is damaged or not a SQLite database (file is not a database): "
        "move it aside (a new one is created) or choose another file")
    for passing in (sqlite3.IntegrityError("UNIQUE constraint failed: x.y"),
                    sqlite3.OperationalError("database is locked")):
        error = storage_error(passing, path, what="cache")
        assert not error.damaged and str(error).startswith(f"cannot use the cache {path}: ")
    unopenable = storage_error(NotADirectoryError(20, "Not a directory"), path, what="cache",
                               fix="choose another file", opening=True)
    assert str(unopenable) == f"cannot open the cache {path}: Not a directory; choose another file"
    assert unopenable.where == str(path) and not unopenable.damaged



def test_opening_a_new_file_waits_for_another_process_setting_it_up(tmp_path: Path) -> None:
    # SQLite refuses "PRAGMA journal_mode=WAL" at once ("database is locked", without its
    # busy timeout) while another connection writes the new file before it is in WAL: two
    # server workers starting on one fresh conversations file failed about one time in seven
    import threading

    from modelplex.store.sqlite import connect

    path = tmp_path / "shared.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE t (x INTEGER)")  # another process's first migration
    done = threading.Event()

    def commit_later() -> None:
        done.wait(0.3)
        other.execute("COMMIT")

    committer = threading.Thread(target=commit_later)
    committer.start()
    try:
        conn = connect(path, timeout=60)  # waits for the other's commit
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("t",)]
        conn.close()
    finally:
        done.set()
        committer.join()
        other.close()
