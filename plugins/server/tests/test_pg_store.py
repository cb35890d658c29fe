"""The server on a real PostgreSQL that goes away mid-run: writes are refused with a clear 503
(nothing is dropped silently, an answer that could not be kept ends in an error event), the
probes say so, and once the database is back everything written before is there."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from modelplex.errors import ConfigurationError
from modelplex.testing.upstream import PIECE, FaultyUpstream
from modelplex_server.app import AppServer
from modelplex_server.pg_store import PostgresConversationStore, is_postgres_url, redact
from modelplex_server.settings import ServerSettings
from modelplex_server.sqlite_store import open_store
from modelplex_server.testing import PostgresServer

ANSWER = PIECE.strip() + (" " + PIECE.strip()) * 4


async def call(server: AppServer, method: str, path: str,
               body: Any = None) -> tuple[int, Any, dict[str, str]]:
    """(status, JSON body or the SSE events as (name, data), headers)."""
    async with aiohttp.ClientSession(base_url=server.url) as session, session.request(
            method, path, json=body) as resp:
        text = await resp.text()
        if resp.headers.get("Content-Type", "").startswith("text/event-stream"):
            names = [line[7:] for line in text.splitlines() if line.startswith("event: ")]
            datas = [json.loads(line[6:]) for line in text.splitlines()
                     if line.startswith("data: ")]
            return resp.status, list(zip(names, datas, strict=True)), dict(resp.headers)
        return resp.status, json.loads(text) if text else None, dict(resp.headers)


async def test_postgres_stops_mid_run(serve: Any, postgres_server: PostgresServer,
                                      postgres_url: str, upstream: FaultyUpstream) -> None:
    server = await serve(store=PostgresConversationStore(postgres_url, timeout=2.0))
    status, made, _ = await call(server, "POST", "/api/conversations",
                                 {"model": "fault:fault", "title": "Before"})
    assert status == 201
    status, events, _ = await call(server, "POST", "/api/chat",
                                   {"conversation_id": made["id"], "message": "Hello"})
    assert status == 200 and events[-1][0] == "done"
    _, before, _ = await call(server, "GET", f"/api/conversations/{made['id']}")
    assert [m["content"] for m in before["messages"]] == ["Hello", ANSWER]

    # the database stops while an answer streams: the answer is sent, but it could not be
    # kept, so the stream ends in an error (not "done")
    upstream.faults.append("delay:1.0")
    streaming = asyncio.ensure_future(call(server, "POST", "/api/chat",
                                           {"conversation_id": made["id"],
                                            "message": "Lost?"}))
    await asyncio.sleep(0.3)
    await asyncio.to_thread(postgres_server.stop)
    status, events, _ = await streaming
    assert status == 200
    assert [name for name, _ in events] == ["chunk"] * 5 + ["error"]
    error = events[-1][1]["error"]
    assert error["code"] == "store_unavailable"
    assert "conversation store" in error["message"] and "PostgreSQL" in error["message"]

    # while it is down: every store call is a 503 with Retry-After, no password shown
    for method, path, body in [
            ("POST", "/api/conversations", {"model": "fault:fault"}),
            ("GET", "/api/conversations", None),
            ("GET", f"/api/conversations/{made['id']}", None),
            ("PATCH", f"/api/conversations/{made['id']}", {"title": "x"}),
            ("DELETE", f"/api/conversations/{made['id']}", None),
            ("POST", "/api/chat", {"conversation_id": made["id"], "message": "Now?"})]:
        status, body_, headers = await call(server, method, path, body)
        assert status == 503, (method, path, body_)
        assert body_["error"]["code"] == "store_unavailable"
        assert headers["Retry-After"] == "2"
    status, ready, _ = await call(server, "GET", "/readyz")
    assert status == 503 and ready["checks"]["store"]["ok"] is False
    assert "PostgreSQL at postgresql://postgres@127.0.0.1" in ready["checks"]["store"]["detail"]
    status, _, _ = await call(server, "GET", "/healthz")
    assert status == 200
    # a chat without a conversation does not need the store
    status, events, _ = await call(server, "POST", "/api/chat",
                                   {"model": "fault:fault", "message": "Stateless"})
    assert status == 200 and events[-1][0] == "done"

    await asyncio.to_thread(postgres_server.start)
    status, after, _ = await call(server, "GET", f"/api/conversations/{made['id']}")
    assert status == 200
    assert after == before  # all that was written before; nothing half-written
    status, _, _ = await call(server, "GET", "/readyz")
    assert status == 200
    status, events, _ = await call(server, "POST", "/api/chat",
                                   {"conversation_id": made["id"], "message": "Back"})
    assert status == 200 and events[-1][0] == "done"
    _, full, _ = await call(server, "GET", f"/api/conversations/{made['id']}")
    assert [m["content"] for m in full["messages"]] == ["Hello", ANSWER, "Back", ANSWER]


async def test_a_server_starts_while_postgres_is_down(serve: Any,
                                                      postgres_server: PostgresServer,
                                                      postgres_url: str) -> None:
    await asyncio.to_thread(postgres_server.stop)
    try:
        server = await serve(store=PostgresConversationStore(postgres_url, timeout=2.0))
        status, ready, _ = await call(server, "GET", "/readyz")
        assert status == 503 and ready["checks"]["store"]["ok"] is False
    finally:
        await asyncio.to_thread(postgres_server.start)
    status, _, _ = await call(server, "GET", "/readyz")
    assert status == 200  # connected and migrated on first use
    status, _, _ = await call(server, "POST", "/api/conversations", {"model": "fault:fault"})
    assert status == 201


async def test_a_wrong_database_is_a_configuration_error(postgres_server: PostgresServer
                                                         ) -> None:
    store = PostgresConversationStore(postgres_server.url_of("no_such_database"))
    with pytest.raises(ConfigurationError, match=r"fix server\.store"):
        await store.open()
    await store.aclose()


def test_store_settings() -> None:
    assert is_postgres_url("postgresql://db/x") and is_postgres_url("postgres://db/x")
    assert not is_postgres_url("/srv/c.db") and not is_postgres_url(None)
    assert redact("postgresql://mpx:secret@db:5432/mpx") == "postgresql://mpx:***@db:5432/mpx"
    store = open_store("postgresql://mpx:secret@db:5432/mpx")
    assert isinstance(store, PostgresConversationStore)
    assert "secret" not in repr(store) and "secret" not in store.describe()
    assert ServerSettings(store="postgresql://db/x").store == "postgresql://db/x"
