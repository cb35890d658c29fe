"""Configuration and transport against a real local aiohttp server speaking Ollama's API:
host resolution, API key and headers, lines split across reads, a connection cut mid-stream,
the per-model limit on requests in flight, and cancellation that closes the connection."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr

from modelplex.errors import (
    BadRequestError,
    ConfigurationError,
    ProviderConnectionError,
    StreamError,
)
from modelplex.http import Timeouts
from modelplex_ollama.connection import is_local_host, parse_host
from modelplex_ollama.provider import OllamaProvider

Start = Callable[[dict[tuple[str, str], Any]], Awaitable[str]]
USER = [{"role": "user", "content": "Hi"}]


@pytest.mark.parametrize(("given", "expected"), [
    (None, "http://127.0.0.1:11434"),
    ("", "http://127.0.0.1:11434"),
    ("1.2.3.4", "http://1.2.3.4:11434"),
    (":56789", "http://127.0.0.1:56789"),
    ("1.2.3.4:56789", "http://1.2.3.4:56789"),
    ("http://1.2.3.4", "http://1.2.3.4:80"),
    ("https://1.2.3.4", "https://1.2.3.4:443"),
    ("https://1.2.3.4:56789", "https://1.2.3.4:56789"),
    ("example.com", "http://example.com:11434"),
    ("example.com:56789/", "http://example.com:56789"),
    ("https://example.com/ollama/", "https://example.com:443/ollama"),
    ("[::1]:11434", "http://[::1]:11434"),
    ("0.0.0.0", "http://0.0.0.0:11434"),
])
def test_parse_host_like_the_official_client(given: str | None, expected: str) -> None:
    assert parse_host(given) == expected


def test_bad_port_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="invalid port"):
        parse_host("example.com:99999")


@pytest.mark.parametrize(("url", "local"), [
    ("http://127.0.0.1:11434", True), ("http://localhost:11434", True),
    ("http://[::1]:11434", True), ("http://127.0.0.2:1", True), ("http://0.0.0.0:11434", True),
    ("http://10.0.0.7:11434", False), ("https://ollama.com:443", False),
])
def test_is_local_host(url: str, local: bool) -> None:
    assert is_local_host(url) is local


def test_ollama_base_url_is_another_name_for_ollama_host(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    monkeypatch.setenv("OLLAMA_BASE_URL", "http://gpu-box:11434")
    assert OllamaProvider().host == "http://gpu-box:11434"
    monkeypatch.setenv("OLLAMA_HOST", "other:1234")  # OLLAMA_HOST wins when both are set
    assert OllamaProvider().host == "http://other:1234"


def test_environment_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "gpu-box:8080")
    monkeypatch.setenv("OLLAMA_API_KEY", "ollama-key-0123456789")
    monkeypatch.setenv("OLLAMA_NUM_PARALLEL", "4")
    provider = OllamaProvider()
    assert provider.host == "http://gpu-box:8080"
    assert isinstance(provider.api_key, SecretStr)
    assert provider.max_parallel == 4
    assert "ollama-key" not in repr(provider)
    assert "ollama-key" not in repr(provider.api_key)
    assert "ollama-key" not in repr(provider.http)
    assert OllamaProvider(host="other", max_parallel=2).host == "http://other:11434"
    monkeypatch.setenv("OLLAMA_NUM_PARALLEL", "many")
    with pytest.raises(ConfigurationError, match="OLLAMA_NUM_PARALLEL"):
        OllamaProvider()


def test_timeouts_forms() -> None:
    assert OllamaProvider(timeouts=30).http.timeouts.total == 30
    t = OllamaProvider(timeouts={"connect": 2, "between_chunks": 5}).http.timeouts
    assert (t.connect, t.between_chunks, t.first_byte) == (2, 5, Timeouts().first_byte)
    with pytest.raises(ConfigurationError, match="unknown timeout"):
        OllamaProvider(timeouts={"read": 1})
    with pytest.raises(ConfigurationError, match="max_parallel"):
        OllamaProvider(max_parallel=-1)


def final_line(**extra: Any) -> bytes:
    return json.dumps({"model": "m", "message": {"role": "assistant", "content": ""},
                       "done": True, "done_reason": "stop", "prompt_eval_count": 3,
                       "eval_count": 2, **extra}).encode() + b"\n"


def word(text: str) -> bytes:
    return json.dumps({"model": "m", "message": {"role": "assistant", "content": text},
                       "done": False}).encode() + b"\n"


async def test_api_key_and_custom_headers_are_sent(local_server: Start) -> None:
    seen: dict[str, str] = {}

    async def version(request: web.Request) -> web.Response:
        seen.update(request.headers)
        return web.json_response({"version": "0.12.3"})

    base = await local_server({("GET", "/api/version"): version})
    async with OllamaProvider(host=base, api_key="secret-key-0123456789",
                              headers={"X-Proxy-Token": "abc"}) as provider:
        assert await provider.version() == "0.12.3"
    assert seen["Authorization"] == "Bearer secret-key-0123456789"
    assert seen["X-Proxy-Token"] == "abc"
    assert seen["User-Agent"].startswith("modelplex-ollama/")


async def test_api_key_never_appears_in_errors(local_server: Start) -> None:
    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"error": f"bad token {request.headers['Authorization']}"},
                                 status=400)

    base = await local_server({("GET", "/api/tags"): echo})
    async with OllamaProvider(host=base, api_key="secret-key-0123456789") as provider:
        with pytest.raises(BadRequestError) as info:
            await provider.list_models()
    assert "secret-key-0123456789" not in str(info.value)
    assert "bad token" in str(info.value)


async def test_line_split_across_network_reads(local_server: Start) -> None:
    body = word("Hello") + word(", wörld") + final_line()
    pieces = [body[:7], body[7:40], body[40:41], body[41:90], body[90:]]

    async def chat(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        for piece in pieces:
            await resp.write(piece)
            await asyncio.sleep(0.02)  # each piece is its own network read
        await resp.write_eof()
        return resp

    base = await local_server({("POST", "/api/chat"): chat})
    async with OllamaProvider(host=base) as provider:
        chunks = [c async for c in provider.chat(USER, model="m")]
    assert [c.content for c in chunks] == ["Hello", ", wörld", ""]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2


async def test_connection_dropped_mid_stream(local_server: Start) -> None:
    async def chat(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        await resp.write(word("The") + word(" sky"))
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.close()  # the server dies without finishing the chunked body
        return resp

    base = await local_server({("POST", "/api/chat"): chat})
    async with OllamaProvider(host=base) as provider:
        with pytest.raises(StreamError) as info:
            async for _ in provider.chat(USER, model="m"):
                pass
    assert info.value.partial_content == "The sky"


async def test_refused_connection_says_ollama_is_not_running(closed_port: int) -> None:
    async with OllamaProvider(host=f"127.0.0.1:{closed_port}") as provider:
        with pytest.raises(ProviderConnectionError, match=r"Ollama is not running.*ollama serve"):
            async for _ in provider.chat(USER, model="m"):
                pass


def slow_chat_server(active: list[int], peak: list[int], disconnected: asyncio.Event
                     ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def chat(request: web.Request) -> web.StreamResponse:
        active[0] += 1
        peak[0] = max(peak[0], active[0])
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        try:
            await resp.prepare(request)
            for _ in range(5):
                await resp.write(word("x"))
                await asyncio.sleep(0.03)
            await resp.write(final_line())
        except (ConnectionResetError, asyncio.CancelledError):
            disconnected.set()
            raise
        finally:
            active[0] -= 1
        return resp

    return chat


async def test_one_request_in_flight_per_model_by_default(local_server: Start) -> None:
    active, peak = [0], [0]
    base = await local_server({("POST", "/api/chat"):
                               slow_chat_server(active, peak, asyncio.Event())})
    async with OllamaProvider(host=base) as provider:
        async def run(model: str) -> str:
            return "".join([c.content async for c in provider.chat(USER, model=model)])

        results = await asyncio.gather(run("m"), run("m:latest"), run("m"))
        assert results == ["xxxxx"] * 3
        assert peak[0] == 1  # queued on the client: m and m:latest are the same model
        peak[0] = 0
        await asyncio.gather(run("a"), run("b"))
        assert peak[0] == 2  # different models do not wait for each other


async def test_max_parallel_is_configurable(local_server: Start) -> None:
    active, peak = [0], [0]
    base = await local_server({("POST", "/api/chat"):
                               slow_chat_server(active, peak, asyncio.Event())})
    async with OllamaProvider(host=base, max_parallel=3) as provider:
        async def run() -> None:
            async for _ in provider.chat(USER, model="m"):
                pass

        await asyncio.gather(*(run() for _ in range(5)))
    assert peak[0] == 3


async def test_cancelled_stream_closes_connection_and_frees_slot(local_server: Start) -> None:
    active, peak = [0], [0]
    disconnected = asyncio.Event()
    base = await local_server({("POST", "/api/chat"):
                               slow_chat_server(active, peak, disconnected)})
    async with OllamaProvider(host=base) as provider:
        stream = provider.chat(USER, model="m")
        first = await anext(stream)
        assert first.content == "x"
        assert provider.in_flight("m") == 1
        await stream.aclose()
        assert provider.in_flight("m") == 0
        await asyncio.wait_for(disconnected.wait(), 2)  # the server saw the client leave
        chunks = [c async for c in provider.chat(USER, model="m")]
        assert chunks[-1].usage is not None


async def test_task_cancelled_while_queued_does_not_leak_a_slot(local_server: Start) -> None:
    active, peak = [0], [0]
    base = await local_server({("POST", "/api/chat"):
                               slow_chat_server(active, peak, asyncio.Event())})
    async with OllamaProvider(host=base) as provider:
        async def run() -> None:
            async for _ in provider.chat(USER, model="m"):
                pass

        first = asyncio.create_task(run())
        await asyncio.sleep(0.01)
        queued = asyncio.create_task(run())
        await asyncio.sleep(0.01)
        queued.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await queued
        await first
        assert provider.in_flight("m") == 0
