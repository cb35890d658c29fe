"""``GET /api/conversations`` lists one key's conversations a bounded page at a time (the store
filters, orders and limits in its query, reading no message), and ``[server]
max_conversations`` caps what one key keeps, counted and inserted in one store step: in
memory, real SQLite and the real PostgreSQL of :mod:`modelplex_server.testing`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from modelplex.types import ChatMessage, MessageRole
from modelplex_server.conversations import (
    Conversation,
    ConversationStore,
    MemoryConversationStore,
)
from modelplex_server.settings import KeyConfig, generate_key, hash_key
from modelplex_server.testing import StoreBackend

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _conv(i: int, owner: str | None, same_time: bool = False) -> Conversation:
    when = T0 if same_time else T0 + timedelta(minutes=i)
    return Conversation(id=f"c{i:03d}", title=f"t{i}", model="fault:fault", provider="fault",
                        owner=owner, created_at=when, updated_at=when,
                        messages=[ChatMessage(role=MessageRole.USER, content="q")] * (i % 3))


async def _walk(store: ConversationStore, owner: str | None, limit: int) -> list[str]:
    seen: list[str] = []
    after = None
    while True:
        page = await store.summaries(owner, after=after, limit=limit)
        assert page is not None and len(page) <= limit
        if not page:
            return seen
        seen += [c.id for c in page]
        after = page[-1].id


async def check_listing(store: ConversationStore) -> None:
    """Per owner, newest first, bounded, walked to the end without duplicates or gaps."""
    for i in range(23):
        await store.create(_conv(i, "alice" if i % 2 else "bob"))
    for i in range(30, 37):  # ties on updated_at: the id orders them
        await store.create(_conv(i, "alice", same_time=True))
    alice = [c.id for c in sorted(
        [_conv(i, "alice") for i in range(1, 23, 2)]
        + [_conv(i, "alice", True) for i in range(30, 37)],
        key=lambda c: (c.updated_at, c.id), reverse=True)]
    first = await store.summaries("alice", limit=5)
    assert first is not None and [c.id for c in first] == alice[:5]
    assert first[0].message_count == 21 % 3 and first[0].title == "t21"
    assert first[0].owner == "alice" and first[0].updated_at == T0 + timedelta(minutes=21)
    for limit in (1, 4, 7, 100):
        assert await _walk(store, "alice", limit) == alice
    assert len(await _walk(store, None, 6)) == 30  # everyone's (an admin key, no keys)
    assert {c.owner for c in await store.summaries("bob", limit=100) or []} == {"bob"}
    assert await store.summaries("alice", after="c000") is None  # bob's: not a cursor
    assert await store.summaries("alice", after="missing") is None
    assert await store.summaries("carol") == []


async def check_cap(first: ConversationStore, second: ConversationStore) -> None:
    """Eight creates at once, half through each store object: exactly ``most`` are kept."""
    made = await asyncio.gather(*((first, second)[i % 2].create(_conv(100 + i, "dave"), most=3)
                                  for i in range(8)))
    kept = [c.id for c in made if c is not None]
    assert len(kept) == 3
    assert sorted(c.id for c in await first.summaries("dave") or []) == sorted(kept)
    refused = next(i for i, c in enumerate(made) if c is None)
    assert await second.get(f"c{100 + refused:03d}") is None
    assert await first.create(_conv(120, "erin"), most=3) is not None  # per owner
    assert await second.create(_conv(121, "dave")) is not None  # no limit asked
    assert await first.delete(kept[0]) and await first.delete("c121")
    assert await second.create(_conv(122, "dave"), most=3) is not None  # a place freed
    assert await first.create(_conv(123, None), most=1) is not None  # no key: its own count
    assert await second.create(_conv(124, None), most=1) is None


async def test_memory_store_listing_and_cap() -> None:
    await check_listing(MemoryConversationStore())
    store = MemoryConversationStore()
    await check_cap(store, store)


async def test_persistent_store_listing_and_cap(store_backend: StoreBackend) -> None:
    """SQLite and PostgreSQL; the cap through two store objects on one database (two
    workers or replicas)."""
    stores: list[Any] = [store_backend.open(), store_backend.open(), store_backend.open()]
    for store in stores:
        await store.open()
    try:
        await check_listing(stores[0])
        await check_cap(stores[1], stores[2])
    finally:
        for store in stores:
            await store.aclose()


async def test_the_listing_api_pages_per_key(serve: Any, store_backend: StoreBackend) -> None:
    """Each key sees its own conversations, newest first, in pages (``limit``, ``after``,
    ``has_more``, ``last_id``) that end without duplicates or gaps; a bad ``limit`` or
    ``after`` is a 400 naming it; one conversation more than ``max_conversations`` is a 400
    naming the setting and the fix."""
    secrets = {name: generate_key() for name in ("alice", "bob", "root")}
    keys = [KeyConfig(name=n, hash=hash_key(s), admin=n == "root") for n, s in secrets.items()]
    server = await serve(store=store_backend.open(), keys=keys, max_conversations=12)
    async with aiohttp.ClientSession() as session:
        async def call(method: str, path: str, who: str, **kw: Any) -> tuple[int, Any]:
            headers = {"Authorization": f"Bearer {secrets[who]}"}
            async with session.request(method, server.url + path, headers=headers,
                                       **kw) as resp:
                return resp.status, await resp.json() if resp.status != 204 else None

        made: dict[str, list[str]] = {"alice": [], "bob": []}
        for i in range(14):
            who = "alice" if i < 12 else "bob"
            status, body = await call("POST", "/api/conversations", who,
                                      json={"model": "fault:fault", "title": f"n{i}"})
            assert status == 201
            made[who].append(body["id"])
        status, body = await call("POST", "/api/conversations", "alice",
                                  json={"model": "fault:fault"})
        assert status == 400 and body["error"]["code"] == "conversations_limit_reached"
        assert "max_conversations" in body["error"]["message"]
        assert "DELETE /api/conversations" in body["error"]["message"]

        seen: list[str] = []
        query: dict[str, str] = {"limit": "5"}
        while True:
            status, page = await call("GET", "/api/conversations", "alice", params=query)
            assert status == 200 and len(page["conversations"]) <= 5
            seen += [c["id"] for c in page["conversations"]]
            assert all("messages" not in c for c in page["conversations"])
            if not page["has_more"]:
                break
            query["after"] = page["last_id"]
        assert seen == made["alice"][::-1]  # newest first, each once
        _, default = await call("GET", "/api/conversations", "bob")
        assert [c["id"] for c in default["conversations"]] == made["bob"][::-1]
        assert default["has_more"] is False and default["last_id"] == made["bob"][0]
        _, everyone = await call("GET", "/api/conversations", "root", params={"limit": "1000"})
        assert len(everyone["conversations"]) == 14

        for bad in ("0", "1001", "-1", "abc", ""):
            status, body = await call("GET", "/api/conversations", "alice",
                                      params={"limit": bad})
            assert status == 400 and body["error"]["param"] == "limit", bad
        for cursor in ("missing", made["bob"][0]):  # another key's id is no cursor either
            status, body = await call("GET", "/api/conversations", "alice",
                                      params={"after": cursor})
            assert status == 400 and body["error"]["param"] == "after"
            assert "without 'after'" in body["error"]["message"]
        assert (await call("DELETE", f"/api/conversations/{made['alice'][0]}", "alice"))[0] \
            == 204
        status, _ = await call("POST", "/api/conversations", "alice",
                               json={"model": "fault:fault"})
        assert status == 201  # a place was freed
