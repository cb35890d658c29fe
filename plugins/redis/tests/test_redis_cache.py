"""The ``redis`` cache against a real redis-server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis

from modelplex.caches import open_cache
from modelplex.caching import CachedProvider
from modelplex.chunks import StreamChunk, Usage
from modelplex.errors import ConfigurationError
from modelplex.provider import ChatRequest, Provider
from modelplex_redis.cache import RedisCache


class Counting(Provider):
    """Answers ``Paris.`` in two chunks and counts its requests."""

    name = "counting"
    default_model = "m"

    def __init__(self) -> None:
        self.calls = 0

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        self.calls += 1
        yield StreamChunk(content="Par")
        yield StreamChunk(content="is.")
        yield StreamChunk(finish_reason="stop", usage=Usage(5, 2))


async def test_get_set_ttl_delete_clear_stats(redis_url: str) -> None:
    cache = RedisCache(redis_url, ttl=60)
    other = RedisCache(redis_url, prefix="someone-else:")
    await other.set("k", "theirs")
    await cache.set("k", {"answer": ["Paris", 1]})
    assert await cache.get("k") == {"answer": ["Paris", 1]}
    assert await cache.get("nope") is None
    await cache.set("short", 1, ttl=0.05)
    await asyncio.sleep(0.1)
    assert await cache.get("short") is None  # expired by Redis
    client = redis.Redis.from_url(redis_url)
    assert 0 < client.pttl("modelplex:cache:k") <= 60_000
    stats = await cache.stats()
    assert (stats.hits, stats.misses, stats.size) == (1, 2, 1)
    assert await cache.delete("k") is True
    assert await cache.delete("k") is False
    await cache.set("a", 1)
    await cache.set("b", 2)
    assert await cache.clear() == 2
    assert (await cache.stats()).size == 0
    assert await other.get("k") == "theirs"  # another prefix is left alone
    client.close()
    await cache.aclose()
    await other.aclose()


async def test_two_caches_share_answers(redis_url: str) -> None:
    first, second = Counting(), Counting()
    a = CachedProvider(first, RedisCache(redis_url))
    b = CachedProvider(second, RedisCache(redis_url))
    messages = [{"role": "user", "content": "Capital of France?"}]
    assert (await a.complete(messages, model="m")).content == "Paris."
    answer = await b.complete(messages, model="m")
    assert answer.content == "Paris."
    assert answer.usage.cached and answer.usage.completion_tokens == 2
    assert (first.calls, second.calls) == (1, 0)
    await a.cache.aclose()
    await b.cache.aclose()


async def test_registered_and_configured(redis_url: str, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    monkeypatch.setenv("MODELPLEX_REDIS_URL", redis_url)
    cache = open_cache({"backend": "redis", "ttl": 5, "options": {"prefix": "t:"}})
    assert isinstance(cache, RedisCache)
    assert cache.link.url == redis_url and cache.prefix == "t:" and cache.ttl == 5
    await cache.set("x", 1)
    assert await cache.get("x") == 1
    await cache.aclose()
    with pytest.raises(ConfigurationError, match="bad Redis URL"):
        open_cache({"backend": "redis", "url": "http://nope"})


def test_the_password_stays_out_of_reprs_and_errors() -> None:
    cache = RedisCache("redis://:hunter2secret@127.0.0.1:1/0", timeout=0.2)
    assert "hunter2secret" not in repr(cache)
    assert "***" in repr(cache)

    async def fail() -> str:
        with contextlib.suppress(redis.RedisError):
            await cache.get("x")  # connection refused
        try:
            await cache.get("x")  # down: refused at once, with a message
        except ConnectionError as err:
            return str(err)
        finally:
            await cache.aclose()
        return ""

    message = asyncio.run(fail())
    assert "unreachable" in message and "hunter2secret" not in message


async def test_down_server_fails_fast(make_redis_server: Any) -> None:
    server = make_redis_server()
    cache = RedisCache(server.url, retry_interval=30)
    provider = CachedProvider(Counting(), cache)
    messages = [{"role": "user", "content": "hi"}]
    await provider.complete(messages, model="m")
    server.stop()
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(20):  # the provider answers; the cache is skipped, not waited on
        assert (await provider.complete(messages, model="m")).content == "Paris."
    assert loop.time() - start < 2.0
    assert provider.inner.calls == 21  # type: ignore[attr-defined]
    await cache.aclose()
