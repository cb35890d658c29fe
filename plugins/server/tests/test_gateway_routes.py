"""What every API route of the gateway shares (issue 21): keys, the key's rate limit with
Retry-After, unknown models, upstream failures and bad JSON, each answered with the right
status in the error shape of that API (OpenAI's, or Anthropic's on ``/v1/messages``), never
a 500."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from modelplex.config import parse_config
from modelplex.plugins import Plugins
from modelplex.store.logs import LogStore
from modelplex.testing.upstream import FaultyUpstream
from modelplex_server.app import AppServer, create_app, start
from modelplex_server.resolve import ModelResolver
from modelplex_server.settings import KeyConfig, ServerSettings, hash_key

KEY, LIMITED, FAULT_ONLY = "k" * 24, "l" * 24, "f" * 24
ROUTES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"messages": [{"role": "user", "content": "hi"}]},
    "/v1/responses": {"input": "hi"},
    "/v1/messages": {"max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]},
    "/v1/messages/count_tokens": {"messages": [{"role": "user", "content": "hi"}]},
    "/v1/completions": {"prompt": "hi"},
    "/v1/embeddings": {"input": "hi"},
}


def error_of(path: str, status: int, data: Any) -> tuple[str, str]:
    """The error's type and message, checking the body is in the route's API's shape."""
    if path.startswith("/v1/messages"):
        assert set(data) == {"type", "error", "request_id"} and data["type"] == "error"
        return data["error"]["type"], data["error"]["message"]
    assert set(data) == {"error"}
    assert set(data["error"]) == {"message", "type", "param", "code"}
    return data["error"]["type"], data["error"]["message"]


async def call(server: AppServer, path: str, body: Any, key: str | None = None,
               header: str = "Authorization") -> tuple[int, Any, Any]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers[header] = f"Bearer {key}" if header == "Authorization" else key
    data = body if isinstance(body, str) else json.dumps(body)
    async with aiohttp.ClientSession() as session, session.post(
            server.url + path, data=data, headers=headers) as resp:
        if resp.content_type == "text/event-stream":  # a stream: its text
            return resp.status, await resp.text(), resp.headers
        return resp.status, await resp.json(), resp.headers


@pytest.fixture
async def keyed(serve: Callable[..., Any]) -> AppServer:
    server: AppServer = await serve(keys=[
        KeyConfig(name="alice", hash=hash_key(KEY)),
        KeyConfig(name="bob", hash=hash_key(LIMITED), rate_limit=1),
        KeyConfig(name="carol", hash=hash_key(FAULT_ONLY), models=["fault:*"])])
    return server


@pytest.mark.parametrize("path", list(ROUTES))
async def test_keys_and_rate_limits(keyed: AppServer, path: str) -> None:
    body = {"model": "fault:fault", **ROUTES[path]}
    status, data, _ = await call(keyed, path, body)
    assert status == 401
    assert error_of(path, status, data)[0] in ("invalid_request_error", "authentication_error")
    status, data, _ = await call(keyed, path, body, key="wrong-key-0123456789")
    assert status == 401
    for header in ("Authorization", "x-api-key"):
        status, data, _ = await call(keyed, path, body, key=KEY, header=header)
        assert status == 200, data
    status, data, _ = await call(keyed, path, {**body, "model": "llamacpp:smollm2"},
                                 key=FAULT_ONLY)
    assert status == 403
    assert error_of(path, status, data)[0] == "permission_error"
    status, data, _ = await call(keyed, path, body, key=LIMITED)
    assert status == 200
    status, data, headers = await call(keyed, path, body, key=LIMITED)
    assert status == 429 and int(headers["Retry-After"]) >= 1
    kind, _ = error_of(path, status, data)
    assert kind in ("requests", "rate_limit_error")


@pytest.mark.parametrize("path", [p for p in ROUTES if p not in (
    "/v1/messages/count_tokens", "/v1/embeddings")])
@pytest.mark.parametrize("stream", [False, True])
async def test_tokens_per_minute_count_every_answer(serve: Callable[..., Any], path: str,
                                                    stream: bool) -> None:
    server = await serve(keys=[KeyConfig(name="t", hash=hash_key(KEY), tpm=5)])
    body = {"model": "fault:fault", **ROUTES[path], "stream": stream}
    status, _, _ = await call(server, path, body, key=KEY, header="x-api-key")
    assert status == 200  # 8 tokens: over the 5 a minute
    status, data, headers = await call(server, path, body, key=KEY, header="x-api-key")
    assert status == 429 and int(headers["Retry-After"]) >= 1
    assert "token limit" in error_of(path, status, data)[1]


@pytest.mark.parametrize("path", list(ROUTES))
async def test_unknown_model_and_bad_json(server: AppServer, path: str) -> None:
    status, data, _ = await call(server, path, {"model": "nope:model", **ROUTES[path]})
    assert status == 404
    kind, message = error_of(path, status, data)
    assert kind in ("invalid_request_error", "not_found_error") and "nope" in message
    for bad in ('{"model": ', "[1, 2]", '{"model": "fault:fault", "stream": "yes"}',
                "[" * 5000 + "]" * 5000):
        status, data, _ = await call(server, path, bad)
        assert status == 400, (bad[:20], data)
        assert error_of(path, status, data)[0] == "invalid_request_error"


async def test_bodies_over_the_limit_are_413(serve: Callable[..., Any]) -> None:
    server = await serve(max_body_bytes=2000)
    for path, body in ROUTES.items():
        big = {"model": "fault:fault", **body, "user": "x" * 5000}
        status, data, _ = await call(server, path, big)
        assert status == 413
        kind, _ = error_of(path, status, data)
        assert kind in ("invalid_request_error", "request_too_large")


@pytest.mark.parametrize("path", [p for p in ROUTES if p not in (
    "/v1/messages/count_tokens", "/v1/embeddings")])
@pytest.mark.parametrize(("fault", "status"), [("500", 502), ("503", 503), ("429", 429)])
async def test_upstream_failures(server: AppServer, upstream: FaultyUpstream, path: str,
                                 fault: str, status: int) -> None:
    for stream in (False, True):
        upstream.faults.clear()
        upstream.faults.extend([fault] * 5)
        got, data, headers = await call(server, path, {"model": "fault:fault",
                                                       **ROUTES[path], "stream": stream})
        assert got == status, data
        error_of(path, got, data)
        if status in (429, 503):
            assert headers["Retry-After"] == "2"


async def test_every_route_records_and_caches_through_the_one_path(
        plugins: Plugins, upstream: FaultyUpstream, tmp_path: Path) -> None:
    config = parse_config({"cache": {"backend": "memory"}})
    resolver = ModelResolver(config=config, plugins=plugins, logs=tmp_path / "logs.db")
    server = await start(create_app(ServerSettings(port=0, health_interval=None),
                                    resolver=resolver))
    chats = [p for p in ROUTES if p not in ("/v1/messages/count_tokens", "/v1/embeddings")]
    try:
        for path in chats:  # each asked twice: the second answer is the cache's
            for _ in range(2):
                status, data, _ = await call(server, path, {"model": "fault:fault",
                                                            **ROUTES[path], "temperature": 0})
                assert status == 200, data
        status, first, _ = await call(server, "/v1/responses",
                                      {"model": "fault:fault", "input": "remember"})
        status, data, _ = await call(server, "/v1/responses", {
            "model": "fault:fault", "input": "go on", "previous_response_id": first["id"]})
        assert status == 200 and data["previous_response_id"] == first["id"]
    finally:
        await server.stop()
    store = LogStore(tmp_path / "logs.db")
    recorded = list(reversed(store.recent(limit=20)))
    assert len(recorded) == 2 * len(chats) + 2
    assert all(e.cached for e in recorded[1:2 * len(chats):2])  # every second ask: a hit
    assert upstream.requests <= len(chats) + 2
    chain = first["id"].split("_")[1]
    assert [e.prompt for e in store.exchanges(chain)] == ["remember", "go on"]
    store.close()
