"""Per-key limits (requests and tokens per minute, requests at once): in one process, in a
real Redis shared by several limiters (atomic: exactly the limit is admitted), through Redis
outages (requests keep being served with per-process limits, said once in the log and in
/readyz), and across two real ``modelplex serve`` processes sharing one ``redis-server``."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from modelplex.testing.upstream import FaultyUpstream
from modelplex_server.app import AppServer
from modelplex_server.budgets import period_bounds
from modelplex_server.limits import Admission, MemoryLimiter, RedisLimiter, Refusal, open_limiter
from modelplex_server.settings import KeyConfig, generate_key, hash_key
from modelplex_server.testing import ServeProcess

redis_testing = pytest.importorskip("modelplex_redis.testing")
RedisServer = redis_testing.RedisServer

BODY = {"model": "fault:fault", "messages": [{"role": "user", "content": "Hi"}]}


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real redis-server of this test's own (skipped, or failed under CI, without it)."""
    if redis_testing.find_redis_server() is None:
        message = "redis-server is not installed: `apt-get install redis-server`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    server = RedisServer.start_new(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


async def post(session: aiohttp.ClientSession, url: str, key: str,
               body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any], Any]:
    async with session.post(url + "/v1/chat/completions", json=body or BODY,
                            headers={"Authorization": f"Bearer {key}"}) as resp:
        return resp.status, dict(resp.headers), await resp.json()


def key_config(name: str, secret: str, **limits: Any) -> KeyConfig:
    return KeyConfig(name=name, hash=hash_key(secret), **limits)


# -- in one process ---------------------------------------------------------------------------
async def test_limits_in_one_process(serve: Any, upstream: FaultyUpstream) -> None:
    rpm, tpm, one = generate_key(), generate_key(), generate_key()
    server: AppServer = await serve(keys=[key_config("rpm", rpm, rate_limit=3),
                                          key_config("tpm", tpm, tpm=20),
                                          key_config("one", one, concurrency=1)])
    async with aiohttp.ClientSession() as session:
        statuses = [(await post(session, server.url, rpm))[0] for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        status, headers, body = await post(session, server.url, rpm)
        assert status == 429 and 55 <= int(headers["Retry-After"]) <= 60
        assert body["error"]["type"] == "requests"
        assert "rate limit of 3 requests per minute" in body["error"]["message"]

        # 8 tokens an answer (3 prompt, 5 completion): the fourth would pass 20 a minute
        for _ in range(3):
            status, _, body = await post(session, server.url, tpm)
            assert status == 200 and body["usage"]["total_tokens"] == 8
            await asyncio.sleep(0.05)  # the tokens are counted as the answer ends
        status, headers, body = await post(session, server.url, tpm)
        assert status == 429 and body["error"]["type"] == "tokens"
        assert "token limit of 20 tokens per minute" in body["error"]["message"]
        assert 1 <= int(headers["Retry-After"]) <= 61

        # one at a time: a second request while the first streams is refused
        upstream.faults.append("delay:0.5")
        first = asyncio.ensure_future(post(session, server.url, one))
        await asyncio.sleep(0.2)
        status, headers, body = await post(session, server.url, one)
        assert status == 429 and body["error"]["type"] == "concurrency"
        assert headers["Retry-After"] == "1"
        assert (await first)[0] == 200
        assert (await post(session, server.url, one))[0] == 200  # its slot came back


async def test_memory_limiter_frees_slots_of_refused_requests() -> None:
    limiter = MemoryLimiter()
    key = key_config("k", generate_key(), rate_limit=2, concurrency=2)
    first = await limiter.admit(key)
    assert isinstance(first, Admission)
    await first.release()
    await first.release()  # idempotent
    second = await limiter.admit(key)
    assert isinstance(second, Admission)
    third = await limiter.admit(key)  # the rate, not the concurrency, refuses it
    assert isinstance(third, Refusal) and third.reason == "requests"


# -- over /ws: the same limits, budgets and counts as HTTP --------------------------------------
async def ask(ws: aiohttp.ClientWebSocketResponse, request_id: str,
              wait: bool = True) -> list[dict[str, Any]]:
    """Send a message over ``/ws``; its events until ``done``, ``error`` or ``stopped``."""
    await ws.send_json({"type": "send_message", "model": "fault:fault", "message": "Hi",
                        "request_id": request_id})
    events: list[dict[str, Any]] = []
    while wait and (not events or events[-1]["type"] not in ("done", "error", "stopped")):
        events.append(await ws.receive_json(timeout=30))
    return events


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_ws_messages_go_through_the_per_key_limits(
        backend: str, serve: Any, upstream: FaultyUpstream,
        request: pytest.FixtureRequest) -> None:
    limiter = (RedisLimiter(request.getfixturevalue("redis_server").url)
               if backend == "redis" else MemoryLimiter())
    a, b = generate_key(), generate_key()
    server: AppServer = await serve(keys=[key_config("a", a, rate_limit=3),
                                          key_config("b", b, concurrency=1)], limits=limiter)
    async with aiohttp.ClientSession() as session, \
            session.ws_connect(server.url + "/ws", headers=bearer(a)) as ws_a, \
            session.ws_connect(server.url + "/ws") as ws_b:
        # key a: one HTTP request and two messages over /ws are its 3 requests a minute
        assert (await post(session, server.url, a))[0] == 200
        for i in range(2):
            assert (await ask(ws_a, f"a{i}"))[-1]["type"] == "done"
        refused = (await ask(ws_a, "a2"))[-1]
        assert refused["type"] == "error" and refused["request_id"] == "a2", refused
        assert refused["status"] == 429 and 55 <= refused["retry_after"] <= 60
        assert refused["error"]["type"] == "requests"
        assert refused["error"]["code"] == "rate_limit_exceeded"
        assert refused["error"]["message"] == (
            f"rate limit of 3 requests per minute reached for key 'a'; retry in "
            f"{refused['retry_after']} s")
        status, headers, _ = await post(session, server.url, a)  # one count for both
        assert status == 429 and 55 <= int(headers["Retry-After"]) <= 60
        assert upstream.requests == 3

        # key b (one request at once), authenticated in its first frame as the page does:
        # not limited by a's refusal; a message holds the slot only while it streams
        await ws_b.send_json({"type": "auth", "api_key": b})
        assert (await ws_b.receive_json(timeout=30))["type"] == "authenticated"
        for i in range(3):
            assert (await ask(ws_b, f"b{i}"))[-1]["type"] == "done"
        upstream.faults.append("stall_mid")  # two chunks, then silence
        await ask(ws_b, "slow", wait=False)
        assert [(await ws_b.receive_json(timeout=30))["type"] for _ in range(2)] == \
            ["chunk", "chunk"]
        busy = (await ask(ws_b, "second"))[-1]
        assert (busy["status"], busy["retry_after"], busy["error"]["type"]) == \
            (429, 1, "concurrency"), busy
        assert busy["error"]["message"] == ("limit of 1 requests at once reached for key "
                                            "'b'; retry in 1 s")
        await ws_b.send_json({"type": "stop", "request_id": "slow"})
        assert (await ws_b.receive_json(timeout=30))["type"] == "stopped"
        assert (await ask(ws_b, "after"))[-1]["type"] == "done"  # the slot came back
        assert not ws_a.closed and not ws_b.closed


async def test_ws_messages_count_against_the_key_budget(serve: Any,
                                                        upstream: FaultyUpstream) -> None:
    team, other = generate_key(), generate_key()
    server: AppServer = await serve(keys=[key_config("team", team, budget="20 tokens/day"),
                                          key_config("other", other, budget="20 tokens/day")])

    async def spent(secret: str) -> float:
        async with aiohttp.ClientSession() as http, http.get(
                server.url + "/api/keys/me", headers=bearer(secret)) as resp:
            return float((await resp.json())["budget"]["spent"])

    async def spent_reaches(secret: str, tokens: float) -> None:
        for _ in range(300):  # an answer's tokens are counted as it ends, in the background
            if await spent(secret) >= tokens:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"spend stayed at {await spent(secret)}")

    async with aiohttp.ClientSession() as session, \
            session.ws_connect(server.url + "/ws", headers=bearer(team)) as ws:
        # 8 tokens an answer: two streamed over /ws and one over HTTP spend 24 of 20
        for i in range(2):
            assert (await ask(ws, f"t{i}"))[-1]["type"] == "done"
        await spent_reaches(team, 16)
        assert (await post(session, server.url, team))[0] == 200
        await spent_reaches(team, 24)
        refused = (await ask(ws, "t3"))[-1]
        assert refused["type"] == "error" and refused["status"] == 429, refused
        assert refused["error"]["code"] == "budget_exceeded"
        assert refused["error"]["type"] == "budget"
        _, _, end = period_bounds("day")
        resets = end.isoformat().replace("+00:00", "Z")
        assert refused["error"]["message"] == (
            f"budget exceeded: key 'team' spent 24 tokens of its budget of 20 tokens/day; "
            f"it resets at {resets}")
        assert 0 < refused["retry_after"] <= 86400
        assert (await post(session, server.url, team))[0] == 429  # over HTTP too
        assert upstream.requests == 3
        async with session.ws_connect(server.url + "/ws", headers=bearer(other)) as ws_other:
            assert (await ask(ws_other, "o"))[-1]["type"] == "done"  # another key's budget


# -- in Redis ----------------------------------------------------------------------------------
async def test_redis_limits_are_atomic_across_processes(redis_server: Any) -> None:
    limiters = [RedisLimiter(redis_server.url) for _ in range(3)]  # three "processes"
    try:
        key = key_config("team", generate_key(), rate_limit=60)
        results = await asyncio.gather(*(limiters[i % 3].admit(key) for i in range(150)))
        admitted = [r for r in results if isinstance(r, Admission)]
        refused = [r for r in results if isinstance(r, Refusal)]
        assert len(admitted) == 60 and len(refused) == 90
        assert all(r.reason == "requests" and 0 < r.wait <= 60 for r in refused)

        busy = key_config("busy", generate_key(), concurrency=2)
        a = await limiters[0].admit(busy)
        b = await limiters[1].admit(busy)
        c = await limiters[2].admit(busy)
        assert isinstance(a, Admission) and isinstance(b, Admission)
        assert isinstance(c, Refusal) and c.reason == "concurrency"
        await a.release()
        assert isinstance(await limiters[2].admit(busy), Admission)

        tokens = key_config("tokens", generate_key(), tpm=100)
        assert isinstance(await limiters[0].admit(tokens), Admission)
        await limiters[0].add_tokens(tokens, 60)
        await limiters[1].add_tokens(tokens, 40)
        refusal = await limiters[2].admit(tokens)
        assert isinstance(refusal, Refusal) and refusal.reason == "tokens"
        assert 1 <= refusal.wait <= 61
        assert (await limiters[0].readiness())["detail"] == f"Redis at {redis_server.url}"
    finally:
        for limiter in limiters:
            await limiter.aclose()


async def test_redis_down_keeps_serving(serve: Any, redis_server: Any,
                                        caplog: pytest.LogCaptureFixture) -> None:
    secret = generate_key()
    limiter = RedisLimiter(redis_server.url, retry_interval=0.2)
    server: AppServer = await serve(keys=[key_config("k", secret, rate_limit=5)],
                                    limits=limiter)
    caplog.set_level(logging.INFO, logger="modelplex.redis")
    async with aiohttp.ClientSession() as session:
        assert (await post(session, server.url, secret))[0] == 200
        redis_server.stop()
        # never failed by the limiter: per process now (4 left of the Redis count is not
        # known here, so this process allows its own 5)
        statuses = [(await post(session, server.url, secret))[0] for _ in range(7)]
        assert statuses == [200] * 5 + [429] * 2
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING
                    and "unreachable" in r.getMessage()]
        assert len(warnings) == 1  # said once
        assert "server limits" in warnings[0].getMessage()
        async with session.get(server.url + "/readyz") as resp:
            assert resp.status == 200  # still ready: serving with per-process limits
            state = (await resp.json())["checks"]["state"]
        assert state["ok"] is True and state["degraded"] is True
        assert "limits are per process" in state["detail"]

        redis_server.start()  # back (empty): Redis counts again
        await asyncio.sleep(0.3)
        async with session.get(server.url + "/readyz") as resp:
            state = (await resp.json())["checks"]["state"]
        assert "degraded" not in state
        assert (await post(session, server.url, secret))[0] == 200
    assert any("reachable again" in r.getMessage() for r in caplog.records)


def test_open_limiter_from_the_state_table(redis_server: Any) -> None:
    assert isinstance(open_limiter(None), MemoryLimiter)
    assert isinstance(open_limiter({"backend": "memory"}), MemoryLimiter)
    redis = open_limiter({"backend": "redis", "url": redis_server.url, "sync_interval": 0.1})
    assert isinstance(redis, RedisLimiter) and redis.link.safe_url == redis_server.url
    asyncio.run(redis.aclose())


# -- two server processes ------------------------------------------------------------------
def _config(path: Path, redis_url: str, secret: str) -> Path:
    path.write_text(f'[server]\naccess_log = false\nhealth_interval = 3600\n'
                    f'conversations = "memory"\n'
                    f'[[server.keys]]\nname = "team"\nhash = "{hash_key(secret)}"\n'
                    f'rate_limit = 60\n'
                    f'[state]\nbackend = "redis"\nurl = "{redis_url}"\n')
    return path


def serve_env(upstream: FaultyUpstream, tmp_path: Path) -> dict[str, str]:
    """The environment of a ``modelplex serve`` subprocess whose ``fault`` provider is
    ``upstream``."""
    (tmp_path / "openai.toml").write_text("")
    return {"MODELPLEX_OPENAI_ENDPOINTS": json.dumps({"fault": {"base_url":
                                                                upstream.url + "/v1"}}),
            "MODELPLEX_OPENAI_CONFIG": str(tmp_path / "openai.toml"),
            "MODELPLEX_LOAD_PLUGINS": "openai,server,redis",
            "MODELPLEX_DATA_DIR": str(tmp_path / "data")}


@pytest.mark.slow
async def test_two_servers_share_one_rate_limit(redis_server: Any, upstream: FaultyUpstream,
                                                tmp_path: Path) -> None:
    secret = generate_key()
    config = _config(tmp_path / "server.toml", redis_server.url, secret)
    env = serve_env(upstream, tmp_path)
    args = ("--config", str(config), "--port", "0")
    servers = await asyncio.gather(asyncio.to_thread(ServeProcess, *args, env=env),
                                   asyncio.to_thread(ServeProcess, *args, env=env))
    try:
        async with aiohttp.ClientSession() as session:
            results = await asyncio.gather(*(post(session, servers[i % 2].url, secret)
                                             for i in range(100)))
        ok = [r for r in results if r[0] == 200]
        limited = [r for r in results if r[0] == 429]
        assert len(ok) == 60 and len(limited) == 40, sorted({r[0] for r in results})
        assert all(1 <= int(h["Retry-After"]) <= 60 for _, h, _ in limited)
        assert all(b["error"]["code"] == "rate_limit_exceeded" for _, _, b in limited)
        assert upstream.requests == 60
    finally:
        codes = await asyncio.gather(*(asyncio.to_thread(s.stop) for s in servers))
    assert codes == [0, 0], [s.text for s in servers]


async def test_one_socket_streams_a_bounded_number_of_answers(
        server: AppServer, upstream: FaultyUpstream) -> None:
    """Distinct request ids on one socket: the first MAX_ANSWERS stream, the next is a 429
    ``error`` event naming the bound, the socket stays open (was: no bound per socket)."""
    from modelplex_server.ws import MAX_ANSWERS

    upstream.faults.extend(["stall_mid"] * MAX_ANSWERS)
    async with aiohttp.ClientSession() as session, \
            session.ws_connect(server.url + "/ws") as ws:
        for i in range(MAX_ANSWERS):
            await ask(ws, f"s{i}", wait=False)
        while upstream.requests < MAX_ANSWERS:  # every one reached the upstream
            assert (await ws.receive_json(timeout=30))["type"] == "chunk"
        await ask(ws, "over", wait=False)
        while (event := await ws.receive_json(timeout=30)).get("request_id") != "over":
            assert event["type"] == "chunk"
        assert (event["type"], event["status"], event["error"]["code"]) == (
            "error", 429, "too_many_answers"), event
        assert f"{MAX_ANSWERS} answers are streaming" in event["error"]["message"]
        assert upstream.requests == MAX_ANSWERS and not ws.closed
        await ws.send_json({"type": "ping"})
        while (event := await ws.receive_json(timeout=30))["type"] != "pong":
            assert event["type"] == "chunk"
