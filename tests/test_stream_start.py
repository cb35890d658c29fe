"""A stream's request leaves in the same turn of the event loop as raw aiohttp's.

The time to first token of many streams started together (docs/performance.md, M2-32) is
mostly what runs on the one client core before each request is written. Every ``await``
that really suspends before the write (a lock, an event, a new task, ``sleep(0)``) lets every
other stream's start-up run first, so each path must write its request after as many turns
of the loop as raw aiohttp does (one on Python 3.11: its body-writer task), never more. The
count is deterministic, unlike a time. ``benchmarks/start_cost.py`` measures the same (and
the CPU) against the benchmark's upstream.

Also the small pieces of the start path made cheaper for it, each checked to behave as
before: a routed request's copy, a message's id, the telemetry settings per stack.
"""

from __future__ import annotations

import asyncio
import asyncio.selector_events
import os
import re
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import attrs
import pytest

from modelplex import ChatManager, create_provider
from modelplex.config import parse_config
from modelplex.errors import ConfigurationError
from modelplex.pipeline import open_model
from modelplex.pool import get_pool
from modelplex.provider import ChatRequest, CommonOptions
from modelplex.routing.deployments import _with
from modelplex.telemetry.settings import TelemetrySettings, settings_for
from modelplex.testing.upstream import FaultyUpstream
from modelplex.types import ChatMessage, ChatSession, _new_id

_PROMPT = re.compile(rb"unique prompt (\d+)")
Stream = Callable[[int], AsyncIterator[str]]


class _Turns:
    """Counts the loop's turns (a callback that puts itself back runs once per turn) and
    notes the turn in which each request (found by its prompt) was written to a socket."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 0
        self.sent: dict[int, int] = {}
        self.chain: object | None = None
        transport = asyncio.selector_events._SelectorSocketTransport
        write = transport.write

        def watched(sock: Any, data: Any) -> None:
            found = _PROMPT.search(bytes(data))
            if found:
                self.sent.setdefault(int(found.group(1)), self.now)
            write(sock, data)

        monkeypatch.setattr(transport, "write", watched)

    def _tick(self, chain: object) -> None:
        if self.chain is chain:  # one chain at a time: an earlier one stops here
            self.now += 1
            asyncio.get_running_loop().call_soon(self._tick, chain)

    async def before_send(self, stream: Stream, i: int) -> int:
        """Turns from ``stream(i)``'s start to its request being written (read to the end)."""
        self.chain = chain = object()
        asyncio.get_running_loop().call_soon(self._tick, chain)
        start = self.now
        async for _ in stream(i):
            pass
        self.chain = None
        return self.sent[i] - start


def _raw(session: aiohttp.ClientSession, url: str) -> Stream:
    async def stream(i: int) -> AsyncIterator[str]:
        body = {"model": "m", "stream": True,
                "messages": [{"role": "user", "content": f"unique prompt {i}"}]}
        async with session.post(url + "/v1/chat/completions", json=body) as resp:
            async for line in resp.content:
                yield line.decode()
    return stream


async def _turns_of(turns: _Turns, stream: Stream, first: int) -> list[int]:
    """Turns before the send of two streams, after one that opened the connection."""
    async for _ in stream(first):
        pass
    return [await turns.before_send(stream, first + n) for n in (1, 2)]


async def test_every_path_sends_its_request_in_the_turn_raw_aiohttp_does(
        monkeypatch: pytest.MonkeyPatch) -> None:
    turns = _Turns(monkeypatch)
    async with FaultyUpstream(chunks=3, tail_delay=0) as upstream:
        async with aiohttp.ClientSession() as session:
            raw = await _turns_of(turns, _raw(session, upstream.url), 100)
        url = upstream.url + "/v1"

        provider = create_provider("openai", base_url=url, api_key="sk-test")

        async def direct(i: int) -> AsyncIterator[str]:
            messages = [{"role": "user", "content": f"unique prompt {i}"}]
            async for chunk in provider.chat(messages, model="m"):
                yield chunk.content

        config = parse_config({"providers": {"openai": {"base_url": url,
                                                        "api_key": "sk-test"}}})

        async def conversation(i: int) -> AsyncIterator[str]:
            async with ChatManager("openai:m", config=config) as chat:
                async for chunk in chat.send_message(f"unique prompt {i}"):
                    yield chunk.content

        named = parse_config({"models": {"m2": {"deployments": [
            {"model": "openai:m", "name": f"d{n}", "base_url": url, "api_key": "sk-test"}
            for n in range(2)]}}})
        router, _ = await open_model("m2", config=named)

        async def routed(i: int) -> AsyncIterator[str]:
            messages = [{"role": "user", "content": f"unique prompt {i}"}]
            async for chunk in router.chat(messages, model="m2"):
                yield chunk.content

        held = await get_pool().acquire("openai", dict(config.providers["openai"]))
        try:
            found = {"provider": await _turns_of(turns, direct, 200),
                     "ChatManager per conversation": await _turns_of(turns, conversation, 300),
                     "named model, two deployments": await _turns_of(turns, routed, 400)}
        finally:
            await get_pool().release(held)
            await router.aclose()
            await provider.aclose()
    assert raw[0] == raw[1]
    assert found == dict.fromkeys(found, raw)


def test_a_routed_request_keeps_every_field_but_model_and_options() -> None:
    values: dict[str, Any] = {field.name: object() for field in attrs.fields(ChatRequest)}
    request = ChatRequest(**values)
    options = CommonOptions(temperature=0.5)
    copied = _with(request, "other", options)
    assert copied is not request
    assert copied.model == "other"
    assert copied.options is options
    for field in attrs.fields(ChatRequest):
        if field.name not in ("model", "options"):
            assert getattr(copied, field.name) is values[field.name], field.name


def test_a_message_id_is_a_random_version_4_uuid() -> None:
    ids = [ChatMessage.user("hi").id, ChatSession(model="m").id, _new_id(), _new_id()]
    assert len(set(ids)) == len(ids)
    for value in ids:
        assert type(value) is uuid.UUID
        assert value.version == 4
        assert value.variant == uuid.RFC_4122
        assert value == uuid.UUID(str(value))
        assert value.is_safe is uuid.SafeUUID.unknown
    copy = ChatMessage.model_validate_json(ChatMessage.user("hi").model_dump_json())
    assert isinstance(copy.id, uuid.UUID)


def test_telemetry_settings_follow_the_config_and_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELPLEX_OTEL", raising=False)
    monkeypatch.delenv("MODELPLEX_OTEL_CAPTURE_CONTENT", raising=False)
    config = parse_config({"telemetry": {"enabled": True}})
    assert settings_for(config) == TelemetrySettings(enabled=True, capture_content=False)
    assert settings_for(config) is settings_for(config)  # parsed once
    config.telemetry["capture_content"] = True  # a table changed in place is read again
    assert settings_for(config) == TelemetrySettings(enabled=True, capture_content=True)
    monkeypatch.setenv("MODELPLEX_OTEL", "0")  # so is a variable changed
    assert settings_for(config).enabled is False
    monkeypatch.setenv("MODELPLEX_OTEL_CAPTURE_CONTENT", "0")
    assert settings_for(config).capture_content is False
    assert settings_for(None) == TelemetrySettings.from_config(None)
    config.telemetry["colour"] = "blue"  # a bad table raises every time
    for _ in range(2):
        with pytest.raises(ConfigurationError, match=r"telemetry\.colour"):
            settings_for(config)
    assert os.environ["MODELPLEX_OTEL"] == "0"


async def test_a_router_skips_asking_a_state_where_nothing_cools() -> None:
    from modelplex.routing import MemoryState

    state = MemoryState()
    assert state.cools_nothing
    await state.start_cooldown("k", 30)
    assert not state.cools_nothing
    assert set(await state.cooldowns(["k", "j"])) == {"k"}
    await state.start_cooldown("j", 0)  # expires at once: pruned when asked
    assert set(await state.cooldowns(["k", "j"])) == {"k"}
