"""``[server] max_conversation_messages`` bounds one stored conversation: the store counts
and adds in one step (real SQLite on disk and the real PostgreSQL of
:mod:`modelplex_server.testing`), ``POST /api/chat`` and the WebSocket refuse a message past
it with the modelplex error JSON, the Responses API with OpenAI's (the official ``openai``
client), and a refused turn stores nothing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from modelplex.errors import ConfigurationError
from modelplex.testing.upstream import FaultyUpstream
from modelplex.types import ChatMessage
from modelplex_server.conversations import (
    Conversation,
    ConversationFullError,
    ConversationStore,
    MemoryConversationStore,
)
from modelplex_server.settings import ServerSettings, load_server_config
from modelplex_server.testing import StoreBackend


def _messages(n: int, tag: str = "m") -> list[ChatMessage]:
    return [ChatMessage.user(f"{tag}{i}") for i in range(n)]


async def check_store(first: ConversationStore, second: ConversationStore) -> None:
    """At the cap an append raises and adds nothing; below it adds; six appends of two at
    once, through two store objects, keep exactly the three that fit."""
    item = await first.create(Conversation(model="fault:fault", provider="fault",
                                           messages=_messages(3)))
    assert item is not None
    with pytest.raises(ConversationFullError, match="holds 3 messages of at most 4"):
        await second.append(item.id, _messages(2, "x"), most=4)
    with pytest.raises(ConversationFullError):
        await first.append_at(item.id, 3, _messages(2, "x"), most=4)
    assert [m.content for m in (await first.get(item.id) or item).messages] == \
        ["m0", "m1", "m2"]  # nothing half-stored
    await second.append(item.id, _messages(1, "y"), most=4)  # exactly at the cap: fits
    assert await first.append_at(item.id, 4, [], most=4)
    assert len((await first.get(item.id) or item).messages) == 4

    empty = await first.create(Conversation(model="fault:fault", provider="fault"))
    assert empty is not None
    done = await asyncio.gather(*((first, second)[i % 2].append(empty.id, _messages(2, f"t{i}"),
                                                                most=6) for i in range(6)),
                                return_exceptions=True)
    assert sum(r is None for r in done) == 3 and \
        sum(isinstance(r, ConversationFullError) for r in done) == 3, done
    kept = (await second.get(empty.id) or empty).messages
    assert len(kept) == 6
    assert all(kept[i].content[:2] == kept[i + 1].content[:2] for i in (0, 2, 4))  # whole turns


async def test_memory_store_bounds_messages() -> None:
    store = MemoryConversationStore()
    await check_store(store, store)


async def test_persistent_store_bounds_messages(store_backend: StoreBackend) -> None:
    stores: list[Any] = [store_backend.open(), store_backend.open()]
    for store in stores:
        await store.open()
    try:
        await check_store(stores[0], stores[1])
    finally:
        for store in stores:
            await store.aclose()


async def _chat(session: aiohttp.ClientSession, url: str, cid: str, text: str
                ) -> tuple[int, Any]:
    """Status and the error (JSON, or the SSE ``error`` event), or None when ``done``."""
    async with session.post(url + "/api/chat",
                            json={"conversation_id": cid, "message": text}) as resp:
        if resp.status != 200:
            return resp.status, (await resp.json())["error"]
        events = (await resp.text()).strip().split("\n\n")
        name, data = events[-1].split("\n", 1)
        return 200, json.loads(data.removeprefix("data: "))["error"] \
            if name == "event: error" else None


async def test_chat_and_websocket_refuse_a_full_conversation(
        serve: Any, store_backend: StoreBackend, upstream: FaultyUpstream) -> None:
    """Below the cap a message is answered and stored; at it, ``POST /api/chat`` and the
    WebSocket get a 400 ``conversation_too_long`` naming the setting and the fix before the
    model is asked, and the conversation is kept as it was; two messages at once into the
    last place: one is kept whole, the other stores nothing."""
    server = await serve(store=store_backend.open(), max_conversation_messages=4)
    async with aiohttp.ClientSession() as session:
        async def create() -> str:
            async with session.post(server.url + "/api/conversations",
                                    json={"model": "fault:fault"}) as resp:
                assert resp.status == 201
                return str((await resp.json())["id"])

        async def stored(cid: str) -> list[dict[str, Any]]:
            async with session.get(f"{server.url}/api/conversations/{cid}") as resp:
                return list((await resp.json())["messages"])

        cid = await create()
        assert await _chat(session, server.url, cid, "one") == (200, None)
        assert await _chat(session, server.url, cid, "two") == (200, None)
        before, asked = await stored(cid), len(upstream.chat_requests())
        assert len(before) == 4
        status, error = await _chat(session, server.url, cid, "three")
        assert status == 400 and error["code"] == "conversation_too_long"
        assert error["param"] == "conversation_id"
        assert "max_conversation_messages = 4" in error["message"]
        assert "start a new conversation" in error["message"]
        async with session.ws_connect(server.url + "/ws") as ws:
            await ws.send_json({"type": "send_message", "conversation_id": cid,
                                "message": "three"})
            frame = await ws.receive_json(timeout=30)
        assert frame["type"] == "error" and frame["status"] == 400
        assert frame["error"]["code"] == "conversation_too_long"
        assert len(upstream.chat_requests()) == asked  # refused before the model was asked
        assert await stored(cid) == before  # intact

        race = await create()
        assert await _chat(session, server.url, race, "first") == (200, None)
        results = await asyncio.gather(*(_chat(session, server.url, race, f"r{i}")
                                         for i in range(2)))
        assert sorted(r[1] is None for r in results) == [False, True], results
        refused = next(r for r in results if r[1] is not None)
        assert refused[1]["code"] == "conversation_too_long"
        kept = [m["content"] for m in await stored(race)]
        assert len(kept) == 4 and kept[2] in ("r0", "r1")  # the other one's message: not kept
        assert ("r1" if kept[2] == "r0" else "r0") not in kept


async def test_responses_refuse_a_chain_past_the_cap(
        serve: Any, store_backend: StoreBackend, upstream: FaultyUpstream) -> None:
    """A stored response whose chain would pass the cap is a 400 ``conversation_too_long``
    in OpenAI's shape naming ``previous_response_id``, before the model is asked; the chain
    stays retrievable as it was; ``store=false`` and a new chain still work."""
    server = await serve(store=store_backend.open(), max_conversation_messages=4)
    async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused",
                                  max_retries=0) as oai:
        first = await oai.responses.create(model="fault:fault", input="a")
        second = await oai.responses.create(model="fault:fault", input="b",
                                            previous_response_id=first.id)
        asked = len(upstream.chat_requests())
        for stream in (False, True):
            with pytest.raises(openai.BadRequestError) as caught:
                await oai.responses.create(model="fault:fault", input="c", stream=stream,
                                           previous_response_id=second.id)
            assert caught.value.status_code == 400
            assert caught.value.code == "conversation_too_long"
            assert caught.value.param == "previous_response_id"
            assert "max_conversation_messages = 4" in caught.value.message
            assert "start a new conversation" in caught.value.message
        with pytest.raises(openai.BadRequestError, match="max_conversation_messages"):
            await oai.responses.create(model="fault:fault", input=[  # 4 input items + answer
                {"role": "user", "content": f"q{i}"} for i in range(4)])
        assert len(upstream.chat_requests()) == asked
        assert (await oai.responses.retrieve(second.id)).output_text == second.output_text
        items = await oai.responses.input_items.list(second.id)
        assert [i.content[0].text for i in items.data] == ["b"]  # type: ignore[index,union-attr]
        async with aiohttp.ClientSession() as session, \
                session.get(server.url + "/api/conversations") as resp:
            listed = (await resp.json())["conversations"]
        assert [c["message_count"] for c in listed] == [4]  # nothing of the refused turns

        unstored = await oai.responses.create(model="fault:fault", input="c", store=False,
                                              previous_response_id=second.id)
        assert unstored.output_text
        fresh = await oai.responses.create(model="fault:fault", input="c")
        assert fresh.output_text


def test_the_setting_is_validated(tmp_path: Path) -> None:
    """A positive integer, 1000 by default; anything else names the key."""
    assert ServerSettings().max_conversation_messages == 1000
    for bad in ("0", "-5", '"many"'):
        path = tmp_path / "modelplex.toml"
        path.write_text(f"[server]\nmax_conversation_messages = {bad}\n")
        with pytest.raises(ConfigurationError, match=r"server\.max_conversation_messages"):
            load_server_config(path)
