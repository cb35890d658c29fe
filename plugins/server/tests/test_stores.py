"""The conversation stores that persist (SQLite, PostgreSQL) pass the same tests: the store
interface, a reopen (a restart), and upgrades from every schema version. PostgreSQL runs for
real (``initdb``/``pg_ctl`` into a temporary folder, see :mod:`modelplex_server.testing`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from datetime import UTC, datetime
from typing import Any

import pytest

from modelplex.chunks import Usage
from modelplex.errors import ConfigurationError
from modelplex.store.migrations import migrate as sqlite_migrate
from modelplex.types import ChatMessage, MessageRole
from modelplex_server import pg_store, sqlite_store
from modelplex_server.budgets import Spend
from modelplex_server.conversations import (
    Conversation,
    KeyExistsError,
    StoredKey,
    answer_metadata,
    message_columns,
)
from modelplex_server.settings import KeyConfig, hash_key
from modelplex_server.testing import StoreBackend


def msg(text: str, role: MessageRole = MessageRole.USER) -> ChatMessage:
    return ChatMessage(role=role, content=text)


def texts(item: Conversation | None) -> list[str]:
    assert item is not None
    return [str(m.content) for m in item.messages]


async def test_the_store_interface(store_backend: StoreBackend) -> None:
    store = store_backend.open()
    await store.open()
    try:
        first = await store.create(Conversation(model="fault:fault", provider="fault",
                                                title="First", system_prompt="Be brief.",
                                                owner="alice",
                                                messages=[msg("seed")]))
        second = await store.create(Conversation(model="fault:fault", provider="fault"))
        assert texts(await store.get(first.id)) == ["seed"]
        assert await store.get("missing") is None
        await store.append(first.id, [msg("q1"), msg("a1", MessageRole.ASSISTANT)])
        await store.append("missing", [msg("nowhere")])  # no conversation: nothing happens
        assert [c.id for c in await store.all()] == [first.id, second.id]  # most recent first
        await store.append(first.id, [msg("q2"), msg("a2", MessageRole.ASSISTANT)])
        await store.replace(first.id, 3, 5, [msg("q2"), msg("a2 again", MessageRole.ASSISTANT)])
        assert texts(await store.get(first.id)) == ["seed", "q1", "a1", "q2", "a2 again"]
        await store.replace(first.id, 1, 3, [msg("q1"), msg("a1 again", MessageRole.ASSISTANT)])
        assert texts(await store.get(first.id)) == ["seed", "q1", "a1 again", "q2", "a2 again"]
        await store.truncate(first.id, 3)
        assert texts(await store.get(first.id)) == ["seed", "q1", "a1 again"]
        updated = await store.update(first.id, title="Renamed", model="llamacpp:smollm2",
                                     provider="llamacpp", system_prompt=None)
        assert updated is not None and updated.title == "Renamed"
        assert updated.system_prompt is None and texts(updated) == ["seed", "q1", "a1 again"]
        assert await store.update("missing", title="x") is None
        with pytest.raises(ValueError, match="title must be a string"):
            await store.update(first.id, title=3)
        with pytest.raises(ValueError, match="cannot update owner"):
            await store.update(first.id, owner="mallory")
        # concurrent appends (two replicas at once) keep every message, each once
        await asyncio.gather(*(store.append(second.id, [msg(f"m{i}")]) for i in range(20)))
        assert sorted(texts(await store.get(second.id))) == sorted(f"m{i}" for i in range(20))
        assert await store.delete(second.id) is True
        assert await store.delete(second.id) is False
        assert await store_backend.message_rows(second.id) == 0
        await store.ping()
    finally:
        await store.aclose()

    again = store_backend.open()  # a restart
    try:
        kept = await again.get(first.id)
        assert kept is not None
        assert (kept.title, kept.model, kept.provider, kept.owner) == (
            "Renamed", "llamacpp:smollm2", "llamacpp", "alice")
        assert texts(kept) == ["seed", "q1", "a1 again"]
        assert kept.created_at == first.created_at
        assert [c.id for c in await again.all()] == [first.id]
    finally:
        await again.aclose()


#: an answer stored before schema version 5, with who wrote it in its metadata only
OLD_ANSWER = ChatMessage(role=MessageRole.ASSISTANT, content="old", metadata=answer_metadata(
    "fault:old", "fault", Usage(prompt_tokens=2, completion_tokens=1)))


async def _authors(backend: StoreBackend, conversation_id: str
                   ) -> list[tuple[str | None, str | None, dict[str, Any] | None]]:
    """The model, provider and usage columns of a conversation's stored messages."""
    if backend.kind == "sqlite":
        with contextlib.closing(sqlite3.connect(backend.location)) as db:
            rows = db.execute("SELECT model, provider, usage FROM messages WHERE "
                              "conversation_id = ? ORDER BY position",
                              (conversation_id,)).fetchall()
    else:
        import asyncpg

        conn = await asyncpg.connect(backend.location)
        try:
            rows = await conn.fetch("SELECT model, provider, usage FROM messages WHERE "
                                    "conversation_id = $1 ORDER BY position", conversation_id)
        finally:
            await conn.close()
    return [(r[0], r[1], json.loads(r[2]) if r[2] else None) for r in rows]


async def test_each_message_says_who_wrote_it(store_backend: StoreBackend) -> None:
    """Seed 003: every stored answer keeps the model, provider and usage that produced it
    (a conversation that changed model says who wrote what), in its metadata and in the
    store's columns, after replace and after a restart."""
    gpt = answer_metadata("openai:gpt-4o", "openai", Usage(prompt_tokens=3, completion_tokens=5))
    llama = answer_metadata("ollama:llama3.2", "ollama", None)
    store = store_backend.open()
    await store.open()
    try:
        made = await store.create(Conversation(model="openai:gpt-4o", provider="openai"))
        await store.append(made.id, [msg("q1"), ChatMessage.assistant("a1", metadata=gpt)])
        await store.update(made.id, model="ollama:llama3.2", provider="ollama")
        await store.append(made.id, [msg("q2"), ChatMessage.assistant("a2", metadata=llama)])
        await store.replace(made.id, 0, 2, [msg("q1"), ChatMessage.assistant(
            "a1 again", metadata={**gpt, "partial": True})])  # the tail keeps its columns
    finally:
        await store.aclose()
    again = store_backend.open()
    try:
        kept = await again.get(made.id)
        assert kept is not None
        assert [m.metadata for m in kept.messages] == [{}, {**gpt, "partial": True}, {}, llama]
        assert gpt["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "estimated": False}
    finally:
        await again.aclose()
    assert await _authors(store_backend, made.id) == [
        (None, None, None), ("openai:gpt-4o", "openai", gpt["usage"]), (None, None, None),
        ("ollama:llama3.2", "ollama", None)]


def _old_row(version: int) -> dict[str, Any]:
    stamp = datetime(2025, 1, 1, tzinfo=UTC)
    return {"id": f"v{version}", "title": f"made at v{version}", "model": "fault:fault",
            "provider": "fault", "system_prompt": None, "created_at": stamp,
            "updated_at": stamp}


async def _at_version(backend: StoreBackend, version: int) -> None:
    """Bring the backend's storage to schema ``version`` and leave a conversation of that
    schema in it (with one message)."""
    row = _old_row(version)
    if backend.kind == "sqlite":
        conn = sqlite3.connect(backend.location, isolation_level=None)
        sqlite_migrate(conn, sqlite_store.MIGRATIONS, upto=version, what="test")
        if version >= 1:
            conn.execute("INSERT INTO conversations (id, title, model, provider, system_prompt,"
                         " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (row["id"], row["title"], row["model"], row["provider"], None,
                          row["created_at"].isoformat(), row["updated_at"].isoformat()))
            if version >= 5:  # as a store of version 5 wrote it: with its author columns
                conn.execute("INSERT INTO messages (conversation_id, position, data, model, "
                             "provider, usage) VALUES (?, 0, ?, ?, ?, ?)",
                             (row["id"], OLD_ANSWER.model_dump_json(),
                              *message_columns(OLD_ANSWER)))
            else:
                conn.execute("INSERT INTO messages VALUES (?, 0, ?)",
                             (row["id"], OLD_ANSWER.model_dump_json()))
        conn.close()
        return
    import asyncpg

    conn = await asyncpg.connect(backend.location)
    try:
        await pg_store.migrate(conn, upto=version)
        if version >= 1:
            await conn.execute("INSERT INTO conversations (id, title, model, provider, "
                               "system_prompt, created_at, updated_at) VALUES ($1, $2, $3, "
                               "$4, $5, $6, $7)", *row.values())
            if version >= 5:  # as a store of version 5 wrote it: with its author columns
                await conn.execute("INSERT INTO messages (conversation_id, position, data, "
                                   "model, provider, usage) VALUES ($1, 0, $2, $3, $4, $5)",
                                   row["id"], OLD_ANSWER.model_dump_json(),
                                   *message_columns(OLD_ANSWER))
            else:
                await conn.execute("INSERT INTO messages VALUES ($1, 0, $2)", row["id"],
                                   OLD_ANSWER.model_dump_json())
    finally:
        await conn.close()


@pytest.mark.parametrize("version", range(len(sqlite_store.MIGRATIONS)))
async def test_upgrades_from_every_version(store_backend: StoreBackend, version: int) -> None:
    assert len(sqlite_store.MIGRATIONS) == len(pg_store.MIGRATIONS)  # one schema story
    await _at_version(store_backend, version)
    store = store_backend.open()
    await store.open()
    try:
        items = await store.all()
        if version >= 1:
            (old,) = items
            assert old.id == f"v{version}" and old.owner is None and texts(old) == ["old"]
            assert old.messages[0].metadata == OLD_ANSWER.metadata
            # version 5 filled the new columns from what the message's JSON said
            assert (await _authors(store_backend, old.id))[0] == (
                "fault:old", "fault", OLD_ANSWER.metadata["usage"])
            await store.append(old.id, [msg("new")])
            assert texts(await store.get(old.id)) == ["old", "new"]
            (listed,) = await store.summaries(None) or []  # version 6's index lists it
            assert listed.id == old.id and listed.message_count == 2
        else:
            assert items == []
        made = await store.create(Conversation(model="fault:fault", provider="fault",
                                               owner="bob"))
        got = await store.get(made.id)
        assert got is not None and got.owner == "bob"
    finally:
        await store.aclose()


async def test_a_newer_database_is_refused(store_backend: StoreBackend) -> None:
    store = store_backend.open()
    await store.open()
    await store.aclose()
    if store_backend.kind == "sqlite":
        with sqlite3.connect(store_backend.location) as db:
            db.execute("INSERT INTO schema_migrations VALUES (99, 'future', 'now')")
        with pytest.raises(ConfigurationError, match="newer than this modelplex knows"):
            store_backend.open()
        return
    import asyncpg

    conn = await asyncpg.connect(store_backend.location)
    await conn.execute("INSERT INTO schema_migrations VALUES (99, 'future', now())")
    await conn.close()
    store = store_backend.open()
    with pytest.raises(ConfigurationError, match="newer than this modelplex knows"):
        await store.open()
    await store.aclose()


async def test_keys_and_their_spend(store_backend: StoreBackend) -> None:
    store = store_backend.open()
    await store.open()
    try:
        alice = StoredKey(key=KeyConfig(name="alice", hash=hash_key("a"), tpm=5,
                                        budget="50/month", models=["fast"]))
        await store.create_key(alice)
        await store.create_key(StoredKey(key=KeyConfig(name="bob", hash=hash_key("b"))))
        with pytest.raises(KeyExistsError):
            await store.create_key(StoredKey(key=KeyConfig(name="alice", hash=hash_key("c"))))
        found = await store.find_key(hash_key("a"))
        assert found is not None and found.key == alice.key and found.revoked_at is None
        assert await store.find_key(hash_key("nobody")) is None
        assert await store.revoke_key("bob") is True
        assert await store.revoke_key("bob") is False
        assert await store.find_key(hash_key("b")) is None
        listed = await store.list_keys()
        assert [k.key.name for k in listed] == ["alice", "bob"]
        assert listed[1].revoked_at is not None
        await asyncio.gather(*(store.add_spend("alice", "month:2026-12", 8, 0.5)
                               for _ in range(10)))
        assert await store.get_spend("alice", "month:2026-12") == Spend(80, 5.0, 10)
        assert await store.get_spend("alice", "month:2027-01") == Spend()
    finally:
        await store.aclose()
    again = store_backend.open()
    try:
        assert await again.get_spend("alice", "month:2026-12") == Spend(80, 5.0, 10)
        assert [k.key.name for k in await again.list_keys()] == ["alice", "bob"]
    finally:
        await again.aclose()


async def check_append_at(first: Any, second: Any) -> None:
    """``append_at``: added only while the conversation holds ``count`` messages, checked
    and added in one step: of eight at once, through two stores, exactly one is kept."""
    made = await first.create(Conversation(model="fault:fault", provider="fault",
                                           messages=[msg("start"), msg("first", ASSISTANT)]))
    before = (await first.get(made.id)).updated_at
    added = await asyncio.gather(*((first, second)[i % 2].append_at(
        made.id, 2, [msg(f"q{i}"), msg(f"a{i}", ASSISTANT)]) for i in range(8)))
    assert sum(added) == 1
    i = added.index(True)
    assert texts(await second.get(made.id)) == ["start", "first", f"q{i}", f"a{i}"]
    assert not await first.append_at(made.id, 2, [msg("late")])
    assert await first.append_at(made.id, 4, [msg("next")])
    assert not await second.append_at("missing", 0, [msg("x")])
    assert (await first.get(made.id)).updated_at >= before


ASSISTANT = MessageRole.ASSISTANT


async def test_append_at_in_memory() -> None:
    from modelplex_server.conversations import MemoryConversationStore

    store = MemoryConversationStore()
    await check_append_at(store, store)


async def test_append_at_across_connections(store_backend: StoreBackend) -> None:
    """Two store objects on one database, as two workers or replicas have."""
    first: Any = store_backend.open()
    second: Any = store_backend.open()
    await first.open()
    await second.open()
    try:
        await check_append_at(first, second)
    finally:
        await first.aclose()
        await second.aclose()


async def check_delete_at(first: Any, second: Any) -> None:
    """``delete_at``: a conversation is deleted only while it holds ``count`` messages, so a
    follow-up appended at the same time is never lost with it: of the two, exactly one
    happens, whichever order they run in."""
    for _ in range(4):
        made = await first.create(Conversation(model="fault:fault", provider="fault",
                                               messages=[msg("start"), msg("one", ASSISTANT)]))
        appended, deleted = await asyncio.gather(
            first.append_at(made.id, 2, [msg("two"), msg("three", ASSISTANT)]),
            second.delete_at(made.id, 2))
        assert appended != deleted
        kept = await first.get(made.id)
        assert (kept is not None and len(kept.messages) == 4) if appended else kept is None
    made = await first.create(Conversation(model="fault:fault", provider="fault",
                                           messages=[msg("start")]))
    assert not await second.delete_at(made.id, 2)
    assert await second.delete_at(made.id, 1) and not await first.delete_at(made.id, 1)


async def test_delete_at_in_memory() -> None:
    from modelplex_server.conversations import MemoryConversationStore

    store = MemoryConversationStore()
    await check_delete_at(store, store)


async def test_delete_at_across_connections(store_backend: StoreBackend) -> None:
    first: Any = store_backend.open()
    second: Any = store_backend.open()
    await first.open()
    await second.open()
    try:
        await check_delete_at(first, second)
    finally:
        await first.aclose()
        await second.aclose()
