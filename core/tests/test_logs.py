"""Conversations and logs in SQLite: migrations, recording, continuing, search, crash safety."""

from __future__ import annotations

import logging
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from modelplex.errors import ConfigurationError, StorageError, StreamError
from modelplex.manager import ChatManager
from modelplex.plugins import Plugins
from modelplex.store.logs import MIGRATIONS, LogStore, logs_enabled, set_logs_enabled
from modelplex.store.migrations import Migration, current_version, migrate, sql

LATEST = len(MIGRATIONS)


def _connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


# -- migrations ------------------------------------------------------------------------------
@pytest.mark.parametrize("start", range(LATEST))
def test_upgrade_from_every_earlier_version(tmp_path: Path, start: int) -> None:
    path = tmp_path / "logs.db"
    conn = _connect(path)
    assert migrate(conn, MIGRATIONS, upto=start) == start
    if start >= 1:  # data written by that version, in the columns it had
        conn.execute("INSERT INTO conversations (id, name, created_at) VALUES "
                     "('c1', 'old', '2026-01-01T00:00:00+00:00')")
        if start >= 3:  # that version keeps updated_at itself
            conn.execute("UPDATE conversations SET updated_at = '2026-01-02T00:00:00+00:00'")
        conn.execute("INSERT INTO exchanges (conversation_id, created_at, provider, model, "
                     "prompt, response, options, prompt_tokens, completion_tokens, latency) "
                     "VALUES ('c1', '2026-01-02T00:00:00+00:00', 'fake', 'echo', "
                     "'What is the capital of France?', 'Paris.', '{\"seed\": 1}', 8, 2, 0.5)")
    conn.close()

    store = LogStore(path)
    assert store.version == LATEST
    if start >= 1:
        [old] = store.recent()
        assert (old.prompt, old.response, old.options) == ("What is the capital of France?",
                                                           "Paris.", {"seed": 1})
        assert (old.prompt_tokens, old.completion_tokens, old.cached) == (8, 2, False)
        assert [e.id for e in store.search("capital")] == [old.id]  # indexed by the upgrade
        [conv] = store.conversations()
        assert conv.updated_at == "2026-01-02T00:00:00+00:00"
        assert conv.exchange_count == 1
    store.close()
    conn = _connect(path)
    rows = conn.execute("SELECT version, name FROM schema_migrations ORDER BY version").fetchall()
    assert [r[0] for r in rows] == list(range(1, LATEST + 1))
    assert [r[1] for r in rows] == [m.name for m in MIGRATIONS]
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_newer_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "logs.db"
    LogStore(path).close()
    conn = _connect(path)
    conn.execute("INSERT INTO schema_migrations VALUES (99, 'from the future', 'x')")
    conn.close()
    store = LogStore(path)  # unavailable, not raising: a store never fails a request
    assert store.failure is not None
    with pytest.raises(StorageError, match="schema version 99, newer than this "
                                           "modelplex knows"):
        store.recent()
    store.close()


def test_a_failing_migration_leaves_the_previous_version(tmp_path: Path) -> None:
    conn = _connect(tmp_path / "x.db")
    steps = [sql(1, "one", "CREATE TABLE a (x INTEGER)"),
             sql(2, "two", "CREATE TABLE b (x INTEGER);\nCREATE TABLE a (x INTEGER)")]
    with pytest.raises(sqlite3.OperationalError, match="already exists"):
        migrate(conn, steps)
    assert current_version(conn) == 1
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'b'").fetchone() is None
    with pytest.raises(ValueError, match="numbered"):
        migrate(conn, [Migration(2, "x", lambda c: None)])


# -- recording and continuing ----------------------------------------------------------------
async def test_conversation_is_stored_and_continued(fake_plugins: Plugins, fake_plugin: Any,
                                                    tmp_path: Path) -> None:
    path = tmp_path / "logs.db"
    async with ChatManager("fake:echo", plugins=fake_plugins, conversation=True, logs=path,
                           system_prompt="Be brief.", options={"max_tokens": 9}) as chat:
        await chat.get_response_with_meta("What is the capital of France?")
        await chat.get_response_with_meta("And of Italy?")
        cid = chat.conversation_id
    assert cid is not None
    store = LogStore(path)
    first, second = store.exchanges(cid)
    assert (first.provider, first.model, first.prompt) == ("fake", "echo",
                                                           "What is the capital of France?")
    assert first.response == "The capital of France is Paris."
    assert first.system_prompt == "Be brief."
    assert first.options == {"max_tokens": 9}
    assert first.completion_tokens == 6 and first.prompt_tokens is not None
    assert first.latency is not None and first.latency > 0
    assert first.finish_reason == "stop" and first.error is None
    assert second.prompt == "And of Italy?"
    assert store.last_conversation_id() == cid

    # a new manager (as in a new process) continues: the history goes with the next message
    async with ChatManager("fake:echo", plugins=fake_plugins, conversation=cid,
                           logs=store) as chat:
        assert [m.content for m in chat.history] == [
            "What is the capital of France?", "The capital of France is Paris.",
            "And of Italy?", "The capital of France is Paris."]
        assert chat.session.system_prompt == "Be brief."  # restored
        # seed 003: each stored answer says which model and provider wrote it, and its usage
        assert chat.history[0].metadata == {}
        assert chat.history[1].metadata == {
            "model": "fake:echo", "provider": "fake",
            "usage": {"prompt_tokens": first.prompt_tokens, "completion_tokens": 6,
                      "estimated": first.usage_estimated}}
        await chat.get_response_with_meta("And of Spain?")
    request = fake_plugin.created[-1].requests[-1]
    assert request.messages[0].content == "Be brief."
    assert len(request.messages) == 6
    assert len(store.exchanges(cid)) == 3
    store.close()


async def test_failures_are_logged_but_not_continued(fake_plugins: Plugins, tmp_path: Path
                                                     ) -> None:
    path = tmp_path / "logs.db"
    async with ChatManager("fake:echo", plugins=fake_plugins, conversation="c-1", logs=path,
                           provider_config={"fake": {"fail_after": 2}}) as chat:
        with pytest.raises(StreamError):
            await chat.get_response_with_meta("hi")
    store = LogStore(path)
    [failed] = store.exchanges("c-1")
    assert failed.error == "StreamError: fake: the upstream broke off"
    assert failed.response == "The capital"
    async with ChatManager("fake:echo", plugins=fake_plugins, conversation="c-1",
                           logs=store) as chat:
        await chat.initialize_model()
        assert chat.history == []
    store.close()


async def test_search_and_listing(fake_plugins: Plugins, tmp_path: Path) -> None:
    store = LogStore(tmp_path / "logs.db")
    async with ChatManager("fake:echo", plugins=fake_plugins, conversation="a",
                           logs=store) as chat:
        await chat.get_response_with_meta("Where is the Eiffel tower?")
    async with ChatManager("fake:echo", plugins=fake_plugins, conversation="b",
                           logs=store, provider_config={"fake": {"reply": "Rome it is"}}) as c:
        await c.get_response_with_meta("Capital of Italy?")
    assert [e.conversation_id for e in store.search("eiffel")] == ["a"]
    assert [e.conversation_id for e in store.search("rome")] == ["b"]
    assert [e.conversation_id for e in store.search('eiffel" (')] == ["a"]  # not FTS syntax
    assert store.search("") == []
    assert [e.conversation_id for e in store.search('"Eiffel tower')] == ["a"]
    assert [c.id for c in store.conversations()] == ["b", "a"]
    assert [e.prompt for e in store.recent(limit=1)] == ["Capital of Italy?"]
    assert await store.delete_conversation("a") == 1
    assert store.search("eiffel") == []
    store.close()


async def test_one_log_record_per_exchange_without_text(fake_plugins: Plugins,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="modelplex.exchange"):
        async with ChatManager("fake:echo", plugins=fake_plugins) as chat:
            await chat.get_response_with_meta("my secret question sk-abcdef1234567890")
    [record] = [r for r in caplog.records if r.name == "modelplex.exchange"]
    assert record.provider == "fake" and record.model == "echo"  # type: ignore[attr-defined]
    assert record.status == "ok" and record.latency > 0  # type: ignore[attr-defined]
    assert record.completion_tokens == 6  # type: ignore[attr-defined]
    assert "secret" not in record.getMessage()
    assert "sk-" not in str(record.__dict__)


def test_logs_on_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELPLEX_DATA_DIR", str(tmp_path))
    assert logs_enabled()
    set_logs_enabled(False)
    assert not logs_enabled()
    set_logs_enabled(True)
    assert logs_enabled()


# -- crash safety ----------------------------------------------------------------------------
WRITER = textwrap.dedent("""
    import asyncio, sys
    from collections.abc import AsyncIterator
    from modelplex import ChatManager, hookimpl
    from modelplex.chunks import StreamChunk, Usage
    from modelplex.plugins import Plugins
    from modelplex.provider import ChatRequest, Provider

    class Slow(Provider):
        name = "slow"
        default_model = "m"

        async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
            for i in range(20):
                await asyncio.sleep(0.005)
                yield StreamChunk(content=f"w{i} ")
            yield StreamChunk(finish_reason="stop", usage=Usage(1, 20))

    class Plugin:
        @hookimpl
        def register_providers(self, register):
            register(Slow)

    async def main() -> None:
        plugins = Plugins(load_entrypoints=False)
        plugins.register(Plugin(), name="slow")
        async with ChatManager("slow:m", plugins=plugins, conversation="crash",
                               logs=sys.argv[1]) as chat:
            for n in range(10_000):
                await chat.get_response_with_meta(f"question {n}")
                print(f"done {n}", flush=True)

    asyncio.run(main())
""")


def test_killing_a_writer_mid_exchange_keeps_every_completed_one(tmp_path: Path) -> None:
    path = tmp_path / "logs.db"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    done = []
    for line in proc.stdout:
        done.append(int(line.split()[1]))
        if len(done) == 5:
            break
    # the next exchange is streaming now (each takes ~100 ms): kill without any cleanup
    import time

    time.sleep(0.03)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    store = LogStore(path)
    stored = store.exchanges("crash")
    prompts = [e.prompt for e in stored]
    assert prompts[:5] == [f"question {n}" for n in done]
    assert all(e.error is None and e.response.startswith("w0 w1") for e in stored)
    assert len(stored) <= 7
    store.close()
    conn = _connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


async def test_a_busy_database_is_waited_for_off_the_event_loop(tmp_path: Path) -> None:
    import asyncio

    from modelplex.store.logs import Exchange

    path = tmp_path / "logs.db"
    store = LogStore(path)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another process is writing
    loop = asyncio.get_running_loop()
    loop.call_later(0.2, other.execute, "COMMIT")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    exchange_id = await store.record(Exchange(provider="p", model="m", prompt="q",
                                              response="a"))
    task.cancel()
    assert ticks >= 10  # the loop kept running while the writer thread waited for the lock
    assert store.get(exchange_id) is not None
    # the database is free again: the next write is done at once
    assert await store.record(Exchange(provider="p", model="m", prompt="q2")) == exchange_id + 1
    store.close()
    other.close()


async def test_clearing_the_history_starts_a_new_stored_conversation(fake_plugins: Plugins,
                                                                    tmp_path: Path) -> None:
    store = LogStore(tmp_path / "logs.db")
    async with ChatManager("fake:echo", plugins=fake_plugins, conversation="first",
                           logs=store) as chat:
        await chat.get_response_with_meta("one")
        chat.clear_history()
        second = chat.conversation_id
        await chat.get_response_with_meta("two")
    assert second is not None and second != "first"
    assert [e.prompt for e in store.exchanges("first")] == ["one"]
    assert [e.prompt for e in store.exchanges(second)] == ["two"]
    store.close()


async def test_a_key_in_an_error_is_not_stored(tmp_path: Path) -> None:
    from collections.abc import AsyncIterator

    from modelplex.chunks import StreamChunk
    from modelplex.errors import AuthenticationError
    from modelplex.provider import ChatRequest, Provider
    from modelplex.recording import RecordingProvider

    class Refusing(Provider):
        name = "refusing"

        async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
            raise AuthenticationError("invalid key sk-live1234567890abcdef", status_code=401,
                                      provider=self.name)
            yield StreamChunk()  # pragma: no cover

    store = LogStore(tmp_path / "logs.db")
    provider = RecordingProvider(Refusing(), store, "c")
    with pytest.raises(AuthenticationError):
        await provider.complete([{"role": "user", "content": "hi"}], model="m")
    [stored] = store.exchanges("c")
    assert stored.error is not None and stored.error.startswith("AuthenticationError")
    assert "sk-live" not in stored.error and "***" in stored.error
    store.close()


def test_conversations_config() -> None:
    from modelplex.store.logs import ConversationsConfig

    assert ConversationsConfig.parse(None) == ConversationsConfig(log=True, path=None)
    assert ConversationsConfig.parse({"log": False, "path": "x.db"}).path == "x.db"
    with pytest.raises(ConfigurationError,
                       match=r"conversations\.pth: unknown key \(did you mean .path.\?\)"):
        ConversationsConfig.parse({"pth": "x.db"})
