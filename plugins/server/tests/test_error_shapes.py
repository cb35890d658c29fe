"""Refusals in each API's own shape and bounds: the Ollama API's middleware refusals (keys,
the browser guard, unknown routes, bodies over the limit) come back as Ollama's
``{"error": "..."}``, and the server's ``Retry-After`` is capped by the config's
``max_retry_after`` (:func:`modelplex.errors.max_retry_after`), as every client wait is."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import aiohttp
import ollama
import pytest

from modelplex import errors
from modelplex.config import parse_config, set_config
from modelplex_server.app import AppServer
from modelplex_server.errors import from_exception
from modelplex_server.settings import KeyConfig, generate_key, hash_key

USER = [{"role": "user", "content": "Hi"}]
CHAT = {"model": "fault:fault", "messages": USER, "stream": False}


async def call(server: AppServer, method: str, path: str, *, body: Any = None,
               data: str | None = None, headers: dict[str, str] | None = None
               ) -> tuple[int, Any, dict[str, str]]:
    async with aiohttp.ClientSession() as session, session.request(
            method, server.url + path, json=body, data=data, headers=headers or {}) as resp:
        return resp.status, await resp.json(content_type=None), dict(resp.headers)


async def test_ollama_routes_refuse_in_ollamas_shape(serve: Any) -> None:
    secret = generate_key()
    server: AppServer = await serve(keys=[KeyConfig(name="k", hash=hash_key(secret))],
                                    max_body_bytes=4096)
    auth = {"Authorization": f"Bearer {secret}"}
    refusals = {
        "no key": await call(server, "POST", "/ollama/api/chat", body=CHAT),
        "wrong key": await call(server, "POST", "/ollama/api/chat", body=CHAT,
                                headers={"Authorization": "Bearer nope"}),
        "foreign origin": await call(server, "POST", "/ollama/api/chat", body=CHAT,
                                     headers={**auth, "Origin": "http://evil.example"}),
        "not JSON": await call(server, "POST", "/ollama/api/chat", data="hi",
                               headers={**auth, "Content-Type": "text/plain"}),
        "too large": await call(server, "POST", "/ollama/api/chat", headers=auth,
                                body={**CHAT, "messages": USER * 200}),
        "no such route": await call(server, "GET", "/ollama/api/nothing", headers=auth),
    }
    statuses = {what: status for what, (status, _, _) in refusals.items()}
    assert statuses == {"no key": 401, "wrong key": 401, "foreign origin": 403,
                        "not JSON": 415, "too large": 413, "no such route": 404}
    for what, (_, body, headers) in refusals.items():
        assert set(body) == {"error"} and isinstance(body["error"], str), (what, body)
        assert body["error"], what
        assert int(headers["Content-Length"]) > 0
    assert "origin 'http://evil.example'" in refusals["foreign origin"][1]["error"]
    assert refusals["no key"][1]["error"].startswith("You didn't provide an API key")
    # the other APIs keep OpenAI's shape; the Ollama client reads the message and status
    status, body, _ = await call(server, "POST", "/v1/chat/completions", body=CHAT)
    assert status == 401 and body["error"]["code"] == "missing_api_key"
    client = ollama.AsyncClient(host=server.url + "/ollama", headers={"Origin": "http://x.y"})
    with pytest.raises(ollama.ResponseError) as info:
        await client.chat(model="fault:fault", messages=USER)
    assert info.value.status_code == 403
    assert info.value.error.startswith("requests from the origin 'http://x.y' are not allowed")


@pytest.fixture
def retry_cap() -> Iterator[None]:
    old = set_config(parse_config({"max_retry_after": 7200}))
    try:
        yield
    finally:
        set_config(old)


def test_retry_after_is_capped_by_the_configs_max_retry_after(retry_cap: None) -> None:
    assert errors.max_retry_after() == 7200
    wait = from_exception(errors.RateLimitError("slow down", retry_after=5000))
    assert wait.status == 429 and wait.headers["Retry-After"] == "5000"  # was capped at 3600
    busy = from_exception(errors.ServerBusyError("busy", retry_after=1e9))
    assert busy.status == 503 and busy.headers["Retry-After"] == "7200"
    set_config(parse_config({"max_retry_after": 30}))
    wait = from_exception(errors.RateLimitError("slow down", retry_after=5000))
    assert wait.headers["Retry-After"] == "30"
