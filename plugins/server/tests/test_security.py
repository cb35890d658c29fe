"""The server against a hostile web page and hostile clients (issue 19): origin, content type
and host checks (DNS rebinding), CORS on every answer, conversations per key, one schema per
route (types, nesting depth), regenerate beside a concurrent message, the error mapping of a
named model whose upstreams are all busy. Real sockets, real clients."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from modelplex.config import parse_config
from modelplex.plugins import Plugins
from modelplex.pool import ProviderPool
from modelplex.testing.upstream import FaultyUpstream
from modelplex_server.app import AppServer, create_app, server_registry, start
from modelplex_server.conversations import MemoryConversationStore
from modelplex_server.resolve import ModelResolver
from modelplex_server.settings import KeyConfig, ServerSettings, generate_key, hash_key
from modelplex_server.sqlite_store import SQLiteConversationStore

USER: list[Any] = [{"role": "user", "content": "hi"}]
EVIL = "http://evil.example"
JSON = {"Content-Type": "application/json"}


async def call(server: AppServer, method: str, path: str, *, body: Any = None,
               data: bytes | str | None = None, headers: dict[str, str] | None = None,
               ) -> tuple[int, Any, Any]:
    """One request with its own session: (status, JSON body or text, headers)."""
    if body is not None:
        data = json.dumps(body)
        headers = {**JSON, **(headers or {})}
    async with aiohttp.ClientSession() as session, session.request(
            method, server.url + path, data=data, headers=headers or {}) as resp:
        text = await resp.text()
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = text
        return resp.status, parsed, resp.headers


def host_of(server: AppServer) -> str:
    return server.url.removeprefix("http://")


# -- #3: origin, content type and host --------------------------------------------------------
async def test_a_foreign_origin_cannot_change_anything(serve: Callable[..., Any]) -> None:
    server = await serve(cors_origins=["http://app.example"])
    for path, body in [("/api/conversations", {"model": "fault:fault"}),
                       ("/v1/chat/completions", {"model": "fault:fault", "messages": USER}),
                       ("/api/chat", {"model": "fault:fault", "message": "hi"}),
                       ("/ollama/api/chat", {"model": "fault:fault", "messages": USER,
                                             "stream": False}),
                       ("/api/models/refresh", None)]:
        status, data, _ = await call(server, "POST", path, body=body or {},
                                     headers={"Origin": EVIL})
        assert status == 403, (path, data)
        if path.startswith("/ollama"):  # in Ollama's error shape
            assert data["error"].startswith("requests from the origin 'http://evil.example'")
        else:
            assert data["error"]["code"] == "origin_not_allowed"
    status, data, _ = await call(server, "GET", "/api/conversations")
    assert data["conversations"] == []
    # the server's own origin and the configured ones may
    for origin in (server.url, "http://app.example"):
        status, data, _ = await call(server, "POST", "/api/conversations",
                                     body={"model": "fault:fault"}, headers={"Origin": origin})
        assert status == 201, data
    # reading is not state-changing: a page may GET (the browser keeps the answer from it)
    status, _, headers = await call(server, "GET", "/api/conversations",
                                    headers={"Origin": EVIL})
    assert status == 200 and "Access-Control-Allow-Origin" not in headers


async def test_a_foreign_origin_cannot_open_the_websocket(server: AppServer) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await session.ws_connect(server.url + "/ws", origin=EVIL)
        assert info.value.status == 403
        async with session.ws_connect(server.url + "/ws", origin=server.url) as ws:
            await ws.send_json({"type": "ping"})
            assert (await ws.receive_json(timeout=5))["type"] == "pong"
        async with session.ws_connect(server.url + "/ws") as ws:  # not a browser: no Origin
            await ws.send_json({"type": "ping"})
            assert (await ws.receive_json(timeout=5))["type"] == "pong"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", None])
async def test_json_bodies_need_a_json_content_type(server: AppServer,
                                                    content_type: str | None) -> None:
    body = json.dumps({"model": "fault:fault"})
    headers = {"Content-Type": content_type} if content_type else {}
    async with aiohttp.ClientSession(skip_auto_headers=["Content-Type"]) as session, \
            session.post(server.url + "/api/conversations", data=body.encode(),
                         headers=headers) as resp:
        assert resp.status == 415
        error = (await resp.json())["error"]
        assert error["code"] == "unsupported_media_type"
        assert "application/json" in error["message"]
    status, data, _ = await call(server, "GET", "/api/conversations")
    assert data["conversations"] == []
    status, data, _ = await call(server, "POST", "/api/conversations", data=body,
                                 headers={"Content-Type": "application/json; charset=utf-8"})
    assert status == 201


async def test_without_keys_only_local_host_names_are_served(
        serve: Callable[..., Any]) -> None:
    server = await serve(allowed_hosts=["box.lan"])
    port = server.port
    for host in (f"evil.example:{port}", "evil.example", f"192.168.1.20:{port}",
                 f"localhost.evil.example:{port}"):
        for method, path in (("GET", "/api/conversations"), ("GET", "/health"),
                             ("GET", "/")):
            status, data, _ = await call(server, method, path, headers={"Host": host})
            assert status == 403, (host, path)
            assert data["error"]["code"] == "host_not_allowed"
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await session.ws_connect(server.url + "/ws", headers={"Host": "evil.example"})
        assert info.value.status == 403
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "LOCALHOST",
                 f"box.lan:{port}", f"127.0.0.2:{port}"):
        status, data, _ = await call(server, "GET", "/api/conversations",
                                     headers={"Host": host})
        assert status == 200, (host, data)
    # with keys the key is the guard: any host name
    key = generate_key()
    keyed = await serve(keys=[KeyConfig(name="a", hash=hash_key(key))])
    status, _, _ = await call(keyed, "GET", "/api/conversations",
                              headers={"Host": "api.example.com",
                                       "Authorization": f"Bearer {key}"})
    assert status == 200


async def test_behind_a_tls_proxy_the_page_of_the_same_host_may_post(
        serve: Callable[..., Any], caplog: pytest.LogCaptureFixture) -> None:
    key = generate_key()
    server = await serve(keys=[KeyConfig(name="a", hash=hash_key(key))])
    auth = {"Authorization": f"Bearer {key}", "Host": "chat.example.com"}
    status, data, _ = await call(server, "POST", "/api/conversations",
                                 body={"model": "fault:fault"},
                                 headers={**auth, "Origin": "https://chat.example.com"})
    assert status == 201, data
    for origin in ("https://evil.example", "https://chat.example.com:8443",
                   "https://chat.example.com.evil.example"):
        status, _, _ = await call(server, "POST", "/api/conversations",
                                  body={"model": "fault:fault"}, headers={**auth, "Origin": origin})
        assert status == 403, origin
    caplog.set_level(logging.WARNING)
    await serve(cors_origins=["*"])
    assert "any web page open in a browser on this machine can use this server" in caplog.text


# -- #9: CORS on every answer ------------------------------------------------------------------
async def test_cors_covers_streams_and_errors(serve: Callable[..., Any],
                                              upstream: FaultyUpstream) -> None:
    app = "http://app.example"
    key = generate_key()
    server = await serve(cors_origins=[app], keys=[
        KeyConfig(name="k", hash=hash_key(key), models=["fault:*"], rate_limit=4)])
    origin = {"Origin": app}
    auth = {**origin, "Authorization": f"Bearer {key}"}
    chat = {"model": "fault:fault", "messages": USER}
    answers = [
        (401, "GET", "/api/models", None, origin),
        (403, "POST", "/v1/chat/completions", {**chat, "model": "llamacpp:smollm2"}, auth),
        (404, "GET", "/api/conversations/nope", None, auth),
        (404, "GET", "/v1/nothing", None, auth),
        (200, "POST", "/v1/chat/completions", {**chat, "stream": True}, auth),
        (200, "POST", "/api/chat", {"model": "fault:fault", "message": "hi"}, auth),
        (200, "POST", "/v1/chat/completions", chat, auth),
        (429, "POST", "/v1/chat/completions", chat, auth),
    ]
    for status, method, path, body, headers in answers:
        got, data, resp_headers = await call(server, method, path, body=body,
                                             headers=headers)
        assert got == status, (path, data)
        assert resp_headers.get("Access-Control-Allow-Origin") == app, (status, path)
        assert "Origin" in resp_headers.get("Vary", "")
        if status == 429:
            assert "Retry-After" in resp_headers.get("Access-Control-Expose-Headers", "")
    # a preflight of any route, and of an unknown one
    for path in ("/v1/chat/completions", "/api/conversations/x"):
        status, _, headers = await call(server, "OPTIONS", path, headers={
            **origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"})
        assert status == 204
        assert headers["Access-Control-Allow-Origin"] == app
        assert "PATCH" in headers["Access-Control-Allow-Methods"]
    # another origin gets no CORS headers
    _, _, headers = await call(server, "GET", "/api/models", headers={"Origin": EVIL})
    assert "Access-Control-Allow-Origin" not in headers


# -- #4: conversations belong to their key -----------------------------------------------------
async def test_conversations_belong_to_the_key_that_made_them(
        serve: Callable[..., Any]) -> None:
    alice, bob, admin, limited_admin = (generate_key() for _ in range(4))
    server = await serve(keys=[
        KeyConfig(name="alice", hash=hash_key(alice)),
        KeyConfig(name="bob", hash=hash_key(bob), models=["fault:*"]),
        KeyConfig(name="root", hash=hash_key(admin), admin=True),
        KeyConfig(name="ops", hash=hash_key(limited_admin), admin=True, models=["fault:*"])])

    def auth(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    _, on_tools, _ = await call(server, "POST", "/api/conversations",
                                body={"model": "tools:gpt-4o", "title": "alice's"},
                                headers=auth(alice))
    _, on_fault, _ = await call(server, "POST", "/api/conversations",
                                body={"model": "fault:fault", "title": "alice's too"},
                                headers=auth(alice))
    _, bobs, _ = await call(server, "POST", "/api/conversations",
                            body={"model": "fault:fault", "title": "bob's"}, headers=auth(bob))

    async def titles(key: str) -> set[str]:
        _, data, _ = await call(server, "GET", "/api/conversations", headers=auth(key))
        return {c["title"] for c in data["conversations"]}

    assert await titles(alice) == {"alice's", "alice's too"}
    assert await titles(bob) == {"bob's"}
    assert await titles(admin) == {"alice's", "alice's too", "bob's"}
    assert await titles(limited_admin) == {"alice's too", "bob's"}  # never a model it may not use
    for conversation in (on_tools, on_fault):
        cid = conversation["id"]
        for method, path, body in [("GET", f"/api/conversations/{cid}", None),
                                   ("PATCH", f"/api/conversations/{cid}", {"title": "mine"}),
                                   ("DELETE", f"/api/conversations/{cid}", None),
                                   ("POST", "/api/chat", {"conversation_id": cid,
                                                          "message": "hi"})]:
            status, data, _ = await call(server, method, path, body=body, headers=auth(bob))
            assert status == 404, (method, path, data)
            assert data["error"]["code"] == "conversation_not_found"
        async with aiohttp.ClientSession() as session, session.ws_connect(
                server.url + "/ws", headers=auth(bob)) as ws:
            await ws.send_json({"type": "send_message", "conversation_id": cid,
                                "message": "hi"})
            event = await ws.receive_json(timeout=5)
            assert event["type"] == "error" and event["error"]["code"] == "conversation_not_found"
    status, _, _ = await call(server, "GET", f"/api/conversations/{on_tools['id']}",
                              headers=auth(limited_admin))
    assert status == 404
    status, data, _ = await call(server, "GET", f"/api/conversations/{bobs['id']}",
                                 headers=auth(admin))
    assert status == 200 and data["title"] == "bob's"
    assert await titles(alice) == {"alice's", "alice's too"}  # nothing was renamed or deleted


# -- #15: one schema per route, depth bounded before parsing ------------------------------------
@pytest.mark.parametrize(("change", "param"), [
    ({"system_prompt": {"a": 1}}, "system_prompt"),
    ({"title": [[1, 2]]}, "title"),
    ({"model": 42}, "model"),
    ({"title": ""}, "title"),
    ({"owner": "bob"}, "owner"),
])
async def test_conversation_changes_are_typed(server: AppServer, change: dict[str, Any],
                                              param: str) -> None:
    _, made, _ = await call(server, "POST", "/api/conversations", body={"model": "fault:fault"})
    status, data, _ = await call(server, "PATCH", f"/api/conversations/{made['id']}",
                                 body=change)
    assert status == 400, data
    assert data["error"]["param"] == param
    # nothing bad was stored: the conversation still answers
    status, data, _ = await call(server, "POST", "/api/chat",
                                 body={"conversation_id": made["id"], "message": "hi"})
    assert status == 200, data


@pytest.mark.parametrize("path", ["/api/conversations/{id}", "/v1/chat/completions",
                                  "/api/chat", "/ollama/api/chat", "/v1/embeddings"])
async def test_deep_nesting_is_a_400_before_parsing(server: AppServer, path: str,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    _, made, _ = await call(server, "POST", "/api/conversations", body={"model": "fault:fault"})
    method = "PATCH" if "{id}" in path else "POST"
    nested = '{"model": "fault:fault", "options": ' + "[" * 100_000 + "]" * 100_000 + "}"
    status, data, _ = await call(server, method, path.format(id=made["id"]), data=nested,
                                 headers=JSON)
    assert status == 400, data
    message = data["error"]["message"] if isinstance(data["error"], dict) else data["error"]
    assert "nested" in message
    assert not caplog.records


ASSISTANT_CALL = {"role": "assistant", "content": "x"}


@pytest.mark.parametrize(("path", "body"), [
    ("/ollama/api/chat", {"model": "fault:fault", "stream": False, "messages": [
        {**ASSISTANT_CALL, "tool_calls": [{"function": [1]}]}, *USER]}),
    ("/ollama/api/chat", {"model": "fault:fault", "stream": False, "messages": [
        {**ASSISTANT_CALL, "tool_calls": [{"function": {"name": 1}}]}, *USER]}),
    ("/ollama/api/chat", {"model": "fault:fault", "stream": False, "messages": [
        {**ASSISTANT_CALL, "tool_calls": [{"function": {"name": "f", "arguments": [1]}}]},
        *USER]}),
    ("/ollama/api/chat", {"model": "fault:fault", "stream": False, "messages": USER,
                          "format": [1]}),
    ("/v1/chat/completions", {"model": "fault:fault", "messages": USER, "seed": 10**30}),
    ("/v1/chat/completions", {"model": "fault:fault", "messages": USER,
                              "max_tokens": -(10**25)}),
    ("/v1/chat/completions", {"model": "fault:fault", "messages": USER,
                              "options": {"seed": 2**64}}),
    ("/v1/embeddings", {"model": "fault:fault", "input": ["a"], "dimensions": 10**30}),
    ("/api/chat", {"model": "fault:fault", "message": "hi", "options": {"seed": 10**20}}),
])
async def test_every_body_is_typed_and_bounded(server: AppServer, path: str,
                                               body: dict[str, Any]) -> None:
    status, data, _ = await call(server, "POST", path, body=body)
    assert status == 400, data


async def test_long_digits_in_text_are_only_text(server: AppServer) -> None:
    digits = "12345678901234567890123456789"
    status, data, _ = await call(server, "POST", "/v1/chat/completions", body={
        "model": "fault:fault", "messages": [{"role": "user", "content": digits}],
        "temperature": 0.12345678901234567890123, "top_p": 1e-30})
    assert status == 200, data


async def test_websocket_frames_are_validated_before_authentication(
        serve: Callable[..., Any], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    key = generate_key()
    server = await serve(keys=[KeyConfig(name="a", hash=hash_key(key))])
    async with aiohttp.ClientSession() as session, \
            session.ws_connect(server.url + "/ws") as ws:  # must authenticate
        await ws.send_str("[" * 100_000 + "]" * 100_000)
        event = await ws.receive_json(timeout=5)
        assert event["type"] == "error" and "nested" in event["error"]["message"]
        await ws.send_json({"type": "auth", "api_key": key})
        assert (await ws.receive_json(timeout=5))["type"] == "authenticated"
        for frame, param in [({"type": "send_message", "model": "fault:fault",
                               "message": {"a": 1}}, "message"),
                              ({"type": "send_message", "model": "fault:fault",
                                "message": "hi", "options": [[1, 2]]}, "options"),
                              ({"type": "stop", "conversation_id": [1]}, "conversation_id"),
                              ({"type": "launch"}, "type")]:
            await ws.send_json(frame)
            event = await ws.receive_json(timeout=5)
            assert event["type"] == "error", frame
            assert event["error"]["param"] == param, event
        await ws.send_json({"type": "send_message", "model": "fault:fault", "message": "hi",
                            "options": {"seed": 10**30}})
        event = await ws.receive_json(timeout=5)
        assert event["type"] == "error" and "64 bits" in event["error"]["message"]
        await ws.send_json({"type": "ping"})
        assert (await ws.receive_json(timeout=5))["type"] == "pong"
    assert not caplog.records


# -- #10: regenerate keeps what was added meanwhile ----------------------------------------------
@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_regenerate_keeps_messages_appended_while_it_ran(
        serve: Callable[..., Any], upstream: FaultyUpstream, store: str, tmp_path: Path) -> None:
    server = await serve(store=MemoryConversationStore() if store == "memory"
                         else SQLiteConversationStore(tmp_path / "c.db"))
    _, made, _ = await call(server, "POST", "/api/conversations", body={"model": "fault:fault"})
    cid = made["id"]
    status, _, _ = await call(server, "POST", "/api/chat",
                              body={"conversation_id": cid, "message": "first"})
    assert status == 200
    upstream.faults.extend(["delay:1.0", "ok"])  # the regenerate is slow; the next is not
    regenerating = asyncio.ensure_future(call(
        server, "POST", "/api/chat", body={"conversation_id": cid, "regenerate": True}))
    await asyncio.sleep(0.3)
    status, _, _ = await call(server, "POST", "/api/chat",
                              body={"conversation_id": cid, "message": "second"})
    assert status == 200
    status, _, _ = await regenerating
    assert status == 200
    _, data, _ = await call(server, "GET", f"/api/conversations/{cid}")
    roles = [(m["role"], m["content"] if m["role"] == "user" else "answer")
             for m in data["messages"]]
    assert roles == [("user", "first"), ("assistant", "answer"),
                     ("user", "second"), ("assistant", "answer")]


# -- #17: a named model whose upstreams are all busy ------------------------------------------
@pytest.fixture
async def busy_named(plugins: Plugins) -> AsyncIterator[tuple[AppServer, FaultyUpstream,
                                                              FaultyUpstream]]:
    async with FaultyUpstream() as a, FaultyUpstream() as b:
        config = parse_config({
            "providers": {"openai": {"api_key": "sk-server-busy-0123456789"}},
            "models": {"duo": {"deployments": [
                {"model": "openai:fault", "base_url": a.url + "/v1", "name": "a"},
                {"model": "openai:fault", "base_url": b.url + "/v1", "name": "b"}],
                "retries": {"attempts": 2, "backoff": 0.01, "timeout": 2}}}}, source="busy.toml")
        pool = ProviderPool()
        resolver = ModelResolver(config=config, plugins=plugins, pool=pool)
        registry = server_registry(resolver, providers=[], timeout=5)
        server = await start(create_app(ServerSettings(port=0, health_interval=None),
                                        resolver=resolver, registry=registry))
        try:
            yield server, a, b
        finally:
            await server.stop()


@pytest.mark.parametrize(("faults", "status", "retry_after"), [
    (("429:4", "429:6"), 429, "4"),
    (("503:5", "503:3"), 503, "3"),
    (("429:4", "503:9"), 503, "4"),
])
async def test_a_named_model_whose_upstreams_are_busy_keeps_the_status(
        busy_named: Any, faults: tuple[str, str], status: int, retry_after: str) -> None:
    server, a, b = busy_named
    a.faults.append(faults[0])
    b.faults.append(faults[1])
    async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x",
                                  max_retries=0) as client:
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(model="duo", messages=USER)
    assert info.value.status_code == status
    assert info.value.response.headers["retry-after"] == retry_after
    # now both cool down: no deployment can be tried, which is a 503 with Retry-After too
    async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x",
                                  max_retries=0) as client:
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(model="duo", messages=USER, stream=True)
    assert info.value.status_code == 503
    assert int(info.value.response.headers["retry-after"]) >= 1
