"""The server's conversations in a real SQLite file (and, the same test, in a real PostgreSQL):
the REST API over real sockets, then a restart of the application on the same storage keeps
them."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from modelplex.errors import ConfigurationError
from modelplex.store.migrations import migrate
from modelplex.testing.upstream import PIECE, FaultyUpstream
from modelplex.types import ChatMessage, MessageRole
from modelplex_server.app import AppServer
from modelplex_server.conversations import Conversation, MemoryConversationStore
from modelplex_server.settings import ServerSettings
from modelplex_server.sqlite_store import (
    MIGRATIONS,
    SQLiteConversationStore,
    default_path,
    open_store,
)
from modelplex_server.testing import StoreBackend

ANSWER = PIECE.strip() + (" " + PIECE.strip()) * 4


async def call(server: AppServer, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One request to ``server``: (status, JSON body); chat's SSE comes back as its events."""
    async with aiohttp.ClientSession(base_url=server.url) as session, session.request(
            method, path, json=body) as resp:
        text = await resp.text()
        if resp.headers.get("Content-Type", "").startswith("text/event-stream"):
            return resp.status, [json.loads(line[6:]) for line in text.splitlines()
                                 if line.startswith("data: ")]
        return resp.status, json.loads(text) if text else None


async def test_conversations_survive_a_restart(serve: Callable[..., Any],
                                               store_backend: StoreBackend,
                                               upstream: FaultyUpstream) -> None:
    server = await serve(store=store_backend.open())
    status, first = await call(server, "POST", "/api/conversations",
                               {"model": "fault:fault", "title": "First",
                                "system_prompt": "Be brief."})
    assert status == 201
    _, second = await call(server, "POST", "/api/conversations", {"model": "fault:fault"})
    _, gone = await call(server, "POST", "/api/conversations", {"model": "fault:fault"})
    for text in ("Hello", "Again"):
        status, events = await call(server, "POST", "/api/chat",
                                    {"conversation_id": first["id"], "message": text})
        assert status == 200 and events[-1]["finish_reason"] == "stop"
    # regenerate: the last answer is replaced (truncate, then append)
    upstream.faults.append("error_event")  # first a failed regenerate keeps the user message
    await call(server, "POST", "/api/chat", {"conversation_id": first["id"],
                                             "regenerate": True})
    _, kept = await call(server, "GET", f"/api/conversations/{first['id']}")
    assert [m["content"] for m in kept["messages"]] == ["Hello", ANSWER, "Again"]
    status, events = await call(server, "POST", "/api/chat",
                                {"conversation_id": first["id"], "regenerate": True})
    assert status == 200 and events[-1]["finish_reason"] == "stop"
    status, renamed = await call(server, "PATCH", f"/api/conversations/{first['id']}",
                                 {"title": "Renamed", "model": "llamacpp:smollm2"})
    assert status == 200 and renamed["title"] == "Renamed"
    assert renamed["provider"] == "llamacpp"
    status, _ = await call(server, "DELETE", f"/api/conversations/{gone['id']}")
    assert status == 204
    _, before = await call(server, "GET", f"/api/conversations/{first['id']}")
    await server.stop()  # closes the store

    server = await serve(store=store_backend.open())  # a restart on the same storage
    _, after = await call(server, "GET", f"/api/conversations/{first['id']}")
    assert after == before
    assert after["title"] == "Renamed" and after["model"] == "llamacpp:smollm2"
    assert after["system_prompt"] == "Be brief."
    assert [(m["role"], m["content"]) for m in after["messages"]] == [
        ("user", "Hello"), ("assistant", ANSWER), ("user", "Again"), ("assistant", ANSWER)]
    # seed 003: each answer says which model and provider wrote it and what it used
    usage = {"prompt_tokens": 3, "completion_tokens": 5, "estimated": False}
    assert [m["metadata"] for m in after["messages"]] == [
        {}, {"model": "fault:fault", "provider": "fault", "usage": usage}] * 2
    _, listing = await call(server, "GET", "/api/conversations")
    assert [c["id"] for c in listing["conversations"]] == [first["id"], second["id"]]
    assert listing["conversations"][0]["message_count"] == 4
    status, _ = await call(server, "GET", f"/api/conversations/{gone['id']}")
    assert status == 404
    # the restarted server goes on with the stored history
    status, events = await call(server, "POST", "/api/chat", {
        "conversation_id": first["id"], "message": "Third", "model": "fault:fault"})
    assert status == 200
    _, full = await call(server, "GET", f"/api/conversations/{first['id']}")
    assert [m["content"] for m in full["messages"]][-2:] == ["Third", ANSWER]
    assert await store_backend.message_rows(gone["id"]) == 0  # deleted with its conversation


def test_open_store_choices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELPLEX_DATA_DIR", str(tmp_path / "data"))
    assert isinstance(open_store("memory"), MemoryConversationStore)
    default = open_store(None)
    assert isinstance(default, SQLiteConversationStore)
    assert default.path == default_path() == tmp_path / "data" / "server-conversations.db"
    assert default.path.exists()
    default.close()
    chosen = open_store(str(tmp_path / "mine.db"))
    assert isinstance(chosen, SQLiteConversationStore)
    assert chosen.path == tmp_path / "mine.db"
    chosen.close()
    assert ServerSettings(conversations="memory").conversations == "memory"


def test_unusable_files_are_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigurationError, match=r"server\.conversations"):
        SQLiteConversationStore(blocker / "conversations.db")
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a SQLite database" * 200)
    with pytest.raises(ConfigurationError, match="not a usable conversation database"):
        SQLiteConversationStore(garbage)


async def test_owner_and_replace_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)  # a file of the first schema (no owners yet)
    migrate(conn, MIGRATIONS[:1], what="test")
    conn.execute("INSERT INTO conversations VALUES ('old', 't', 'fault:fault', 'fault', NULL, "
                 "'2025-01-01T00:00:00+00:00', '2025-01-01T00:00:00+00:00')")
    conn.commit()
    conn.close()
    store = SQLiteConversationStore(path)
    try:
        old = await store.get("old")
        assert old is not None and old.owner is None  # made before keys: no owner
        made = await store.create(Conversation(model="fault:fault", provider="fault",
                                               owner="alice"))
        texts = ["q1", "a1", "q2", "a2"]
        await store.append(made.id, [ChatMessage(role=MessageRole.USER if i % 2 == 0 else
                                                 MessageRole.ASSISTANT, content=t)
                                     for i, t in enumerate(texts)])
        await store.replace(made.id, 0, 2, [ChatMessage.user("q1"),
                                            ChatMessage(role=MessageRole.ASSISTANT,
                                                        content="a1 again")])
        again = await store.get(made.id)
        assert again is not None and again.owner == "alice"
        assert [m.content for m in again.messages] == ["q1", "a1 again", "q2", "a2"]
        with pytest.raises(ValueError, match="system_prompt must be a string"):
            await store.update(made.id, system_prompt={"a": 1})
    finally:
        store.close()
