"""Servers for the tests: ``modelplex serve``'s application on a free port, backed by the real
embedded model (llamacpp), by the core's fault-injecting upstream through the openai provider
(as the endpoint ``fault``; ``upstream``, the repository's root conftest), and by a replay of
OpenAI's recorded tool-call stream (``tools``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import openai
import pytest
from aiohttp import web

from modelplex.config import parse_config
from modelplex.plugins import Plugins
from modelplex.pool import ProviderPool
from modelplex.registry import ModelRegistry
from modelplex.testing import FaultyUpstream, closed_port_url, serve_app
from modelplex_server.app import AppServer, create_app, server_registry, start
from modelplex_server.conversations import ConversationStore
from modelplex_server.gateway import GATEWAY, Gateway
from modelplex_server.limits import Limiter
from modelplex_server.resolve import ModelResolver
from modelplex_server.settings import ServerSettings
from modelplex_server.testing import (  # noqa: F401 - fixtures: a real PostgreSQL
    postgres_server,
    postgres_url,
    store_backend,
)

# protocols.md 2.3: OpenAI's recorded tool-call stream (test_parse_pydantic_tool), shortened
TOOL_STREAM = [
    {"role": "assistant", "content": None, "tool_calls": [{
        "index": 0, "id": "call_c91SqDXlYFuETYv8mUHzz6pp", "type": "function",
        "function": {"name": "GetWeatherArgs", "arguments": ""}}], "refusal": None},
    {"tool_calls": [{"index": 0, "function": {"arguments": "{\""}}]},
    {"tool_calls": [{"index": 0, "function": {"arguments": "city"}}]},
    {"tool_calls": [{"index": 0, "function": {"arguments": "\":\""}}]},
    {"tool_calls": [{"index": 0, "function": {"arguments": "Ed"}}]},
    {"tool_calls": [{"index": 0, "function": {"arguments": "inburgh"}}]},
    {"tool_calls": [{"index": 0, "function": {"arguments": "\"}"}}]},
]
# protocols.md 2.2: the spec's non-streaming tool-call example
TOOL_REPLY = {"id": "chatcmpl-abc123", "object": "chat.completion", "created": 1699896916,
              "model": "gpt-4o-mini", "choices": [{"index": 0, "message": {
                  "role": "assistant", "content": None, "tool_calls": [{
                      "id": "call_abc123", "type": "function", "function": {
                          "name": "get_current_weather",
                          "arguments": "{\n\"location\": \"Boston, MA\"\n}"}}]},
                  "logprobs": None, "finish_reason": "tool_calls"}],
              "usage": {"prompt_tokens": 82, "completion_tokens": 17, "total_tokens": 99}}


class ToolUpstream:
    """An OpenAI-style server replaying the recorded tool-call answers; keeps request bodies."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.url = ""
        self._serving = AsyncExitStack()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        if not body.get("stream"):
            return web.json_response(TOOL_REPLY)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        head = {"id": "chatcmpl-ABfw8AOXnoa2kzy11vVTSjuQhHCQr",
                "object": "chat.completion.chunk", "created": 1727346176,
                "model": "gpt-4o-2024-08-06"}
        for delta in TOOL_STREAM:
            event = {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                          "finish_reason": None}]}
            await resp.write(b"data: " + json.dumps(event).encode() + b"\n\n")
        end = {**head, "choices": [{"index": 0, "delta": {}, "logprobs": None,
                                    "finish_reason": "tool_calls"}]}
        usage = {**head, "choices": [], "usage": {"prompt_tokens": 76, "completion_tokens": 24,
                                                  "total_tokens": 100}}
        for event in (end, usage):
            await resp.write(b"data: " + json.dumps(event).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def __aenter__(self) -> ToolUpstream:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self.url = await self._serving.enter_async_context(serve_app(app))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._serving.aclose()


@pytest.fixture
async def tool_upstream() -> AsyncIterator[ToolUpstream]:
    """The recorded tool-call upstream (``tools:gpt-4o`` through the server)."""
    async with ToolUpstream() as up:
        yield up


@pytest.fixture
def plugins(upstream: FaultyUpstream, tool_upstream: ToolUpstream,
            monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Plugins:
    """The installed plugins, with three OpenAI-compatible endpoints configured the way users
    do it: ``fault`` and ``tools`` (the upstreams above), ``down`` (nothing listens) and
    ``broken`` (a configuration error: the provider cannot be created)."""
    endpoints = {"fault": {"base_url": upstream.url + "/v1"},
                 "tools": {"base_url": tool_upstream.url + "/v1"},
                 "down": {"base_url": closed_port_url() + "/v1"},
                 "broken": {"base_url": "ftp://nowhere"}}
    monkeypatch.setenv("MODELPLEX_OPENAI_ENDPOINTS", json.dumps(endpoints))
    (tmp_path / "openai.toml").write_text("")
    monkeypatch.setenv("MODELPLEX_OPENAI_CONFIG", str(tmp_path / "openai.toml"))
    monkeypatch.setenv("MODELPLEX_LOAD_PLUGINS", "openai,llamacpp,server")
    return Plugins()


LISTED = ["fault", "tools", "down", "broken", "llamacpp"]

ServeFactory = Callable[..., Awaitable[AppServer]]


@pytest.fixture
async def serve(plugins: Plugins) -> AsyncIterator[ServeFactory]:
    """Start the server application on a free port: ``server = await serve(keys=[...])``
    (``store=`` a conversation store; memory by default; ``limits=`` a per-key limiter)."""
    running: list[AppServer] = []

    async def factory(*, store: ConversationStore | None = None, limits: Limiter | None = None,
                      **settings: Any) -> AppServer:
        config = ServerSettings(**{"port": 0, "health_interval": None, **settings})
        resolver = ModelResolver(plugins=plugins, named_models=config.models,
                                 provider_config=config.providers)
        registry = ModelRegistry(plugins=plugins, get_provider=resolver.provider,
                                 providers=LISTED, named_models=config.models, timeout=5)
        server = await start(create_app(config, resolver=resolver, registry=registry,
                                        conversations=store, limits=limits))
        running.append(server)
        return server

    yield factory
    for server in running:
        await server.stop()


@pytest.fixture
async def server(serve: ServeFactory) -> AppServer:
    """A server without keys."""
    return await serve()


def gateway_of(server: AppServer) -> Gateway:
    """The server's gateway (its counters and parts)."""
    app = server.runner.app
    return app[GATEWAY]


@pytest.fixture
def gateway() -> Callable[[AppServer], Gateway]:
    """``gateway(server)``: a running server's :class:`Gateway`."""
    return gateway_of


@pytest.fixture
async def client(server: AppServer) -> AsyncIterator[openai.AsyncOpenAI]:
    """The official openai client pointed at the server (no retries)."""
    async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused",
                                  max_retries=0) as c:
        yield c


# -- the gateway APIs (issue 21): a scripted upstream for tool calls and a named model whose
# first deployment answers 503 -------------------------------------------------------------------
class GatewayServer:
    """A server whose config names ``scripted`` (a :class:`FaultyUpstream`: script its
    ``replies``) and ``duo`` (deployments ``a`` then ``b``: put faults on ``a``)."""

    def __init__(self, server: AppServer, scripted: FaultyUpstream, a: FaultyUpstream,
                 b: FaultyUpstream) -> None:
        self.server = server
        self.url = server.url
        self.scripted = scripted
        self.a = a
        self.b = b


@pytest.fixture
async def gw(plugins: Plugins) -> AsyncIterator[GatewayServer]:
    """A :class:`GatewayServer` (no keys; ``fault:fault`` and ``llamacpp:smollm2`` too)."""
    async with FaultyUpstream() as scripted, FaultyUpstream() as a, FaultyUpstream() as b:
        config = parse_config({
            "providers": {"openai": {"api_key": "sk-gateway-test-0123456789"}},
            "models": {
                "scripted": {"deployments": [{"model": "openai:scripted",
                                              "base_url": scripted.url + "/v1"}]},
                "duo": {"deployments": [
                    {"model": "openai:fault", "base_url": a.url + "/v1", "name": "a"},
                    {"model": "openai:fault", "base_url": b.url + "/v1", "name": "b"}]}}},
            source="gateway-test.toml")
        pool = ProviderPool()
        resolver = ModelResolver(config=config, plugins=plugins, pool=pool)
        registry = ModelRegistry(plugins=plugins, get_provider=resolver.provider,
                                 providers=LISTED, named_models=resolver.named_models,
                                 timeout=5)
        server = await start(create_app(ServerSettings(port=0, health_interval=None),
                                        resolver=resolver, registry=registry))
        try:
            yield GatewayServer(server, scripted, a, b)
        finally:
            await server.stop()


async def _thinking_upstream(request: web.Request) -> web.StreamResponse:
    """An OpenAI-style upstream whose model reasons (``reasoning_content``) before answering."""
    body = await request.json()
    head = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "thinker"}
    if not body.get("stream"):
        return web.json_response({**head, "object": "chat.completion", "choices": [{
            "index": 0, "finish_reason": "stop", "message": {
                "role": "assistant", "content": "42", "reasoning_content": "6 times 7"}}],
            "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}})
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for delta, finish in (({"reasoning_content": "6 times"}, None),
                          ({"reasoning_content": " 7"}, None), ({"content": "42"}, None),
                          ({}, "stop")):
        event = {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        await resp.write(b"data: " + json.dumps(event).encode() + b"\n\n")
    await resp.write(b"data: [DONE]\n\n")
    return resp


@pytest.fixture
async def thinker(plugins: Plugins) -> AsyncIterator[str]:
    """A server whose named model ``thinker`` reasons before answering; its URL."""
    upstream = web.Application()
    upstream.router.add_post("/v1/chat/completions", _thinking_upstream)
    async with serve_app(upstream) as upstream_url:
        config = parse_config({
            "providers": {"openai": {"api_key": "sk-gateway-test-0123456789"}},
            "models": {"thinker": {"deployments": [{
                "model": "openai:thinker", "base_url": upstream_url + "/v1"}]}}},
            source="thinker.toml")
        resolver = ModelResolver(config=config, plugins=plugins, pool=ProviderPool())
        server = await start(create_app(ServerSettings(port=0, health_interval=None),
                                        resolver=resolver,
                                        registry=server_registry(resolver, providers=[])))
        try:
            yield server.url
        finally:
            await server.stop()
