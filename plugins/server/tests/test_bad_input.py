"""Bad input and hostile conditions: malformed bodies, wrong types, oversized bodies, keys,
rate and concurrency limits, a client that disconnects mid-stream, binding without keys."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import aiohttp
import openai
import pytest

from modelplex.testing.upstream import FaultyUpstream
from modelplex_server.app import AppServer
from modelplex_server.gateway import Gateway
from modelplex_server.settings import KeyConfig, generate_key, hash_key

USER = [{"role": "user", "content": "hi"}]


async def post(server: AppServer, path: str, data: bytes | str,
               headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.post(
            server.url + path, data=data,
            headers={"Content-Type": "application/json", **(headers or {})}) as resp:
        return resp.status, await resp.json()


@pytest.mark.parametrize(("body", "param", "fragment"), [
    ('{"model": "fault:fault", "messages": [', None, "not valid JSON"),
    ("", None, "empty"),
    ('["a list"]', None, "JSON object"),
    ('{"messages": [{"role": "user", "content": "hi"}]}', "model", "'model' is required"),
    ('{"model": "fault:fault", "messages": "hi"}', "messages", "valid array"),
    ('{"model": "fault:fault", "messages": [{"role": "user", "content": "hi"}], '
     '"stream": "yes"}', "stream", "valid boolean"),
    ('{"model": "fault:fault", "messages": [{"role": "user", "content": "hi"}], '
     '"temperature": "hot"}', "temperature", "valid number"),
    ('{"model": 42, "messages": [{"role": "user", "content": "hi"}]}', "model", "valid string"),
    ('{"model": "fault:fault", "messages": [{"role": "user", "content": "hi"}], '
     '"tools": [{"type": "function", "function": {"name": "bad name!"}}]}',
     "tools.0.function.name", "pattern"),
    ('{"model": "fault:fault", "messages": [{"role": "assistant", "tool_calls": [{"id": "c", '
     '"type": "function", "function": {"name": "f", "arguments": "{not json"}}]}]}',
     "messages.0.tool_calls.0.function.arguments", "JSON object"),
    ('{"model": "fault:fault", "messages": [{"role": "user", "content": '
     '[{"type": "input_audio"}]}]}', "messages.0.content.0", "unsupported content part"),
])
async def test_invalid_bodies_are_400_naming_the_field(server: AppServer, body: str,
                                                       param: str | None,
                                                       fragment: str) -> None:
    status, data = await post(server, "/v1/chat/completions", body)
    assert status == 400
    assert data["error"]["type"] == "invalid_request_error"
    assert data["error"]["param"] == param
    assert fragment in data["error"]["message"]


async def test_unknown_route_and_method(server: AppServer) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(server.url + "/v1/nothing") as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["code"] == "not_found"
        async with session.get(server.url + "/v1/chat/completions") as resp:
            assert resp.status == 405
            assert (await resp.json())["error"]["code"] == "method_not_allowed"


async def test_oversized_body_is_413(serve: Callable[..., Any]) -> None:
    server = await serve(max_body_bytes=2000)
    big = '{"model": "fault:fault", "messages": [{"role": "user", "content": "' + \
        "a" * 5000 + '"}]}'
    status, data = await post(server, "/v1/chat/completions", big)
    assert status == 413
    assert data["error"]["code"] == "request_too_large"

    async def chunked() -> Any:  # no Content-Length: the limit holds while reading
        for _ in range(10):
            yield b"a" * 1000

    async with aiohttp.ClientSession() as session, session.post(
            server.url + "/v1/chat/completions", data=chunked(),
            headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 413
        assert "2000 bytes" in (await resp.json())["error"]["message"]


@pytest.fixture
def key() -> str:
    return generate_key()


@pytest.fixture
async def keyed(serve: Callable[..., Any], key: str) -> tuple[AppServer, str, str]:
    limited = generate_key()
    server = await serve(keys=[
        KeyConfig(name="alice", hash=hash_key(key)),
        KeyConfig(name="bob", hash=hash_key(limited), models=["fault:*"], rate_limit=2)])
    return server, key, limited


async def test_keys(keyed: tuple[AppServer, str, str], caplog: pytest.LogCaptureFixture
                    ) -> None:
    server, key, limited = keyed
    caplog.set_level(logging.DEBUG)
    base = server.url + "/v1"
    async with openai.AsyncOpenAI(base_url=base, api_key=key, max_retries=0) as good:
        reply = await good.chat.completions.create(model="fault:fault", messages=USER)
        assert reply.choices[0].message.content
    async with openai.AsyncOpenAI(base_url=base, api_key="mpx-wrong", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError) as info:
            await bad.chat.completions.create(model="fault:fault", messages=USER)
        assert info.value.code == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            await bad.models.list()
    async with aiohttp.ClientSession() as session:
        async with session.get(server.url + "/api/models") as resp:
            assert resp.status == 401
            assert (await resp.json())["error"]["code"] == "missing_api_key"
        async with session.get(server.url + "/health") as resp:  # public
            assert resp.status == 200
        async with session.get(server.url + "/openapi.json") as resp:  # public
            assert resp.status == 200
    async with openai.AsyncOpenAI(base_url=base, api_key=limited, max_retries=0) as bob:
        with pytest.raises(openai.PermissionDeniedError, match="may not use"):
            await bob.chat.completions.create(model="llamacpp:smollm2", messages=USER)
        ids = [m.id async for m in bob.models.list()]
        assert ids == ["fault:fault"]  # only the models the key may use
        await bob.chat.completions.create(model="fault:fault", messages=USER)
        with pytest.raises(openai.RateLimitError) as limit:
            await bob.chat.completions.create(model="fault:fault", messages=USER)
        assert int(limit.value.response.headers["retry-after"]) >= 1
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert key not in logged and limited not in logged


async def test_keys_are_never_stored_or_shown(key: str) -> None:
    config = KeyConfig(name="alice", hash=hash_key(key))
    assert key not in repr(config) and key not in config.model_dump_json()
    with pytest.raises(ValueError, match="hash"):
        KeyConfig(name="alice", hash=key)  # a plain key is refused where a hash belongs


async def test_concurrency_limit(serve: Callable[..., Any], upstream: FaultyUpstream,
                                 gateway: Callable[[AppServer], Gateway]) -> None:
    server = await serve(max_concurrency=1)
    upstream.faults.append("stall_mid")
    async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x",
                                  max_retries=0) as client:
        held = await client.chat.completions.create(model="fault:fault", messages=USER,
                                                    stream=True)
        await anext(aiter(held))
        with pytest.raises(openai.InternalServerError) as info:
            await client.chat.completions.create(model="fault:fault", messages=USER)
        assert info.value.status_code == 503
        assert info.value.response.headers["retry-after"] == "1"
        await held.close()
        for _ in range(200):
            if gateway(server).in_flight == 0:
                break
            await asyncio.sleep(0.01)
        reply = await client.chat.completions.create(model="fault:fault", messages=USER)
        assert reply.choices[0].message.content


async def test_client_disconnect_cancels_the_upstream_request(
        server: AppServer, client: openai.AsyncOpenAI, upstream: FaultyUpstream,
        gateway: Callable[[AppServer], Gateway]) -> None:
    upstream.faults.append("stall_mid")  # two chunks, then the upstream keeps the line open
    stream = await client.chat.completions.create(model="fault:fault", messages=USER,
                                                  stream=True)
    received = [await anext(aiter(stream)) for _ in range(2)]
    assert received[1].choices[0].delta.content
    assert upstream.active == 1 and gateway(server).in_flight == 1
    await stream.close()  # the client goes away mid-stream
    assert await upstream.wait_idle(5.0), "the upstream request was not cancelled"
    assert upstream.disconnects == 1
    for _ in range(200):
        if gateway(server).in_flight == 0 and gateway(server).streams_open == 0:
            break
        await asyncio.sleep(0.01)
    assert gateway(server).in_flight == 0 and gateway(server).streams_open == 0
    # and the server still answers
    reply = await client.chat.completions.create(model="fault:fault", messages=USER)
    assert reply.choices[0].message.content


async def test_disconnect_before_the_first_chunk_cancels_too(
        server: AppServer, upstream: FaultyUpstream,
        gateway: Callable[[AppServer], Gateway]) -> None:
    upstream.faults.append("hang")
    async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0,
                                  timeout=0.5) as client:
        with pytest.raises(openai.APITimeoutError):
            await client.chat.completions.create(model="fault:fault", messages=USER)
    assert await upstream.wait_idle(5.0)
    assert upstream.disconnects == 1
    for _ in range(200):
        if gateway(server).in_flight == 0:
            break
        await asyncio.sleep(0.01)
    assert gateway(server).in_flight == 0


async def test_without_keys_only_localhost_binds(serve: Callable[..., Any],
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    server = await serve(host="0.0.0.0")
    assert server.host == "127.0.0.1"
    assert "no API keys are configured" in caplog.text
    keyed = await serve(host="0.0.0.0", keys=[KeyConfig(name="a", hash=hash_key("k" * 20))])
    assert keyed.host == "0.0.0.0"


@pytest.mark.slow
async def test_graceful_shutdown_finishes_in_flight_streams(
        serve: Callable[..., Any], gateway: Callable[[AppServer], Gateway]) -> None:
    server = await serve(shutdown_timeout=20)
    async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x",
                                  max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="llamacpp:smollm2", max_tokens=40, stream=True,
            messages=[{"role": "user", "content": "Tell me about Paris."}],
            extra_body={"options": {"repeat_penalty": 1.3}})
        assert (await anext(aiter(stream))).choices
        stopping = asyncio.ensure_future(server.stop())
        await asyncio.sleep(0.05)
        assert not stopping.done() and gateway(server).in_flight == 1
        rest = [c async for c in stream]
        await stopping
    assert rest[-1].choices[0].finish_reason in ("stop", "length")
    assert len(rest) > 5
