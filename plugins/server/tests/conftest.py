"""Servers for the tests: ``modelplex serve``'s application on a free port, backed by the real
embedded model (llamacpp), by the core's fault-injecting upstream through the openai provider
(as the endpoint ``fault``; ``upstream``, the repository's root conftest), and by a replay of
OpenAI's recorded tool-call stream (``tools``); and the :class:`Probe` of the hostile-input
tests, which checks every answer against the rules for a hostile client.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web
from yarl import URL

import modelplex
import modelplex_server
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
from modelplex_server.settings import KeyConfig, ServerSettings, generate_key, hash_key
from modelplex_server.testing import (  # noqa: F401 - fixtures: a real PostgreSQL
    StoreBackend,
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

# -- the hostile-input tests (test_hostile_inputs.py, test_hostile_transport.py) ---------------
HOSTILE_LIMIT = 64 * 1024  # their servers' max_body_bytes
GOOD_CHAT = {"model": "fault:fault", "messages": [{"role": "user", "content": "hi"}]}
#: Ollama's model management, refused with a 501 on purpose (ollama_models.py)
NOT_IMPLEMENTED = ("/ollama/api/push", "/ollama/api/create", "/ollama/api/copy",
                   "/ollama/api/delete", "/ollama/api/blobs/")
#: what a body must never show: this checkout, the interpreter's prefix, the temporary folders
LOCAL_PATHS = sorted({str(Path(modelplex_server.__file__).resolve().parents[3]),
                      str(Path(modelplex.__file__).resolve().parents[2]), sys.prefix,
                      sys.base_prefix, os.environ.get("XDG_DATA_HOME", "/nonexistent"),
                      "site-packages", 'File "'} - {"/", "/usr"})


def api_of(path: str) -> str:
    """Whose error shape ``path`` answers in."""
    if path.startswith("/ollama/"):
        return "ollama"
    if path.startswith("/v1/messages"):
        return "anthropic"
    return "openai"


def shape_problem(api: str, body: Any) -> str | None:
    """What is wrong with an error body of ``api``; None when it has the API's shape."""
    if api == "ollama":
        ok = isinstance(body, dict) and set(body) == {"error"} and isinstance(body["error"], str)
        return None if ok and body["error"] else f"not Ollama's error shape: {body!r:.300}"
    if api == "anthropic":
        ok = (isinstance(body, dict) and body.get("type") == "error"
              and isinstance(body.get("error"), dict)
              and isinstance(body["error"].get("type"), str)
              and isinstance(body["error"].get("message"), str) and body["error"]["message"])
        return None if ok else f"not Anthropic's error shape: {body!r:.300}"
    ok = (isinstance(body, dict) and isinstance(body.get("error"), dict)
          and {"message", "type", "param", "code"} <= set(body["error"])
          and isinstance(body["error"]["message"], str) and body["error"]["message"])
    return None if ok else f"not OpenAI's error shape: {body!r:.300}"


class Probe:
    """Sends requests to one server and collects every broken rule."""

    def __init__(self, server: AppServer, session: aiohttp.ClientSession,
                 headers: dict[str, str] | None = None) -> None:
        self.server = server
        self.headers = headers or {}
        self.session = session
        self.problems: list[str] = []
        self.sent = 0
        self.answers: list[tuple[int, str, str]] = []
        self.local_paths = LOCAL_PATHS
        self.shape_problem = shape_problem
        self.api_of = api_of

    async def send(self, case: str, method: str, path: str, *, data: bytes | None = None,
                   content_type: str | None = "application/json",
                   params: dict[str, str] | None = None, ok: Iterable[int] = (),
                   headers: dict[str, str] | None = None, refuse: bool = False,
                   naming: str | None = None) -> int:
        """One request; its status (the rules broken are kept in :attr:`problems`):
        ``refuse``: it must be a 4xx; ``naming``: a 400 whose body holds this (the field)."""
        self.sent += 1
        url = URL(self.server.url + path, encoded=True)
        if params:
            url = url.update_query(params)
        sent = {"Content-Type": content_type} if content_type and data is not None else {}
        sent.update(self.headers)
        sent.update(headers or {})
        where = f"{case}: {method} {path}"
        try:
            async with asyncio.timeout(30), self.session.request(
                    method, url, data=data, headers=sent) as resp:
                raw = await resp.read()
                status, ctype = resp.status, resp.content_type
        except TimeoutError:
            self.problems.append(f"{where}: no answer in 30 s")
            return 0
        except aiohttp.ClientError as err:
            self.problems.append(f"{where}: {type(err).__name__}: {err}")
            return 0
        text = raw.decode("utf-8", "replace")
        self.answers.append((status, where, text[:200]))  # to look at: pytest --pdb
        if status >= 500 and status not in ok and not (
                status == 501 and path.startswith(NOT_IMPLEMENTED)):
            self.problems.append(f"{where}: {status} {text[:300]}")
        for local in self.local_paths:
            if local in text:
                at = text.index(local)
                self.problems.append(f"{where}: the body shows {local!r}: "
                                     f"...{text[max(0, at - 150):at + 100]}...")
        if "Traceback" in text:
            self.problems.append(f"{where}: a traceback: {text[:300]}")
        if 400 <= status < 502 and not path.startswith("/ui/") and path != "/" \
                and method != "HEAD":  # an answer to HEAD has no body
            try:
                body = json.loads(text) if ctype == "application/json" else None
            except ValueError:
                body = None
            problem = shape_problem(api_of(path), body)
            if problem:
                self.problems.append(f"{where}: {status} {problem}")
        if naming is not None and not (status == 400 and naming in text):
            self.problems.append(f"{where}: not a 400 naming {naming!r}: {status} "
                                 f"{text[:300]}")
        if refuse and not 400 <= status < 500:
            self.problems.append(f"{where}: {status}, not a 4xx: {text[:200]}")
        return status

    async def still_answers(self, after: str) -> None:
        """A good request (the upstream answers) still works."""
        status = await self.send(f"good request after {after}", "POST",
                                 "/v1/chat/completions", data=json.dumps(GOOD_CHAT).encode())
        if status != 200:
            self.problems.append(f"a good request after {after} got {status}")

    def check(self) -> None:
        assert not self.problems, f"{len(self.problems)} of {self.sent} broke a rule:\n" + \
            "\n".join(self.problems)


@pytest.fixture
async def probe(serve: ServeFactory) -> AsyncIterator[Probe]:
    """A :class:`Probe` on a server without keys (bodies up to 64 KiB)."""
    server = await serve(max_body_bytes=HOSTILE_LIMIT)
    async with aiohttp.ClientSession() as session:
        yield Probe(server, session)


@pytest.fixture
async def admin_probe(serve: ServeFactory,
                      store_backend: StoreBackend,  # noqa: F811 - the imported fixture
                      ) -> AsyncIterator[Probe]:
    """A :class:`Probe` with an admin key, on a server whose conversations and keys are kept
    in SQLite, then PostgreSQL."""
    secret = generate_key()
    server = await serve(max_body_bytes=HOSTILE_LIMIT, store=store_backend.open(),
                         keys=[KeyConfig(name="admin", hash=hash_key(secret), admin=True)])
    async with aiohttp.ClientSession() as session:
        yield Probe(server, session, {"Authorization": f"Bearer {secret}"})
