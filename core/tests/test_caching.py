"""Caches in the request path: CachedProvider, the cache key, ChatManager(cache=...)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from modelplex.caches import Cache, CacheConfig, MemoryCache, open_cache
from modelplex.caching import CachedProvider, cache_key
from modelplex.errors import ConfigurationError, PluginError, StreamError
from modelplex.manager import ChatManager
from modelplex.plugins import Plugins
from modelplex.store.sqlite_cache import SQLiteCache
from modelplex.types import ChatMessage


class BrokenCache(Cache):
    """A backend that is down: every call raises."""

    name: ClassVar[str] = "broken"

    def __init__(self) -> None:
        self.calls = 0

    async def get(self, key: str) -> Any | None:
        self.calls += 1
        raise ConnectionError("cache server unreachable")

    async def set(self, key: str, value: Any, *, ttl: float | None = None) -> None:
        self.calls += 1
        raise ConnectionError("cache server unreachable")


async def test_second_identical_message_is_a_hit(fake_plugins: Plugins, fake_plugin: Any) -> None:
    cache = MemoryCache()
    async with ChatManager("fake:echo", plugins=fake_plugins, cache=cache) as chat:
        streamed = [c async for c in chat.send_message("What is the capital of France?")]
        chat.clear_history()
        chunks = [c async for c in chat.send_message("What is the capital of France?")]
        chat.clear_history()
        again = await chat.get_response_with_meta("What is the capital of France?")
    provider = fake_plugin.created[0]
    assert provider.streams_started == 1
    first = streamed[-1].usage
    assert first is not None and not first.cached
    assert again.cache_hit  # a whole answer from the entry the stream stored
    assert again.content == "".join(c.content for c in streamed)
    assert again.content == "The capital of France is Paris."
    assert (again.prompt_tokens, again.completion_tokens) == (first.prompt_tokens,
                                                              first.completion_tokens)
    # replayed as the same stream: one chunk per word, then the final one with usage
    assert [c.content for c in chunks] == [*provider.words(), ""]
    assert chunks[-1].usage is not None and chunks[-1].usage.cached
    assert chunks[-1].finish_reason == "stop"
    assert (await cache.stats()).hits == 2


async def test_key_covers_what_changes_the_answer(fake_plugins: Plugins) -> None:
    provider = fake_plugins.get("providers", "fake")()

    def key(*, model: str = "echo", text: str = "hi", **kw: Any) -> str:
        request = provider.build_request([ChatMessage.user(text)], model=model, **kw)
        return cache_key("fake", request)

    base = key()
    assert key() == base  # new message ids and timestamps: same key
    assert key(text="hello") != base
    assert key(model="other") != base
    assert key(options={"max_tokens": 5}) != base
    assert key(options={"shout": True}) != base
    assert key(tools=[{"type": "function", "function": {"name": "f"}}]) != base
    assert key(response_format="json") != base
    other = provider.build_request([ChatMessage.user("hi")], model="echo")
    assert cache_key("other-provider", other) != base


async def test_sampled_requests_are_cached_only_on_request(fake_plugins: Plugins,
                                                          fake_plugin: Any) -> None:
    async with ChatManager("fake:echo", plugins=fake_plugins, cache="memory",
                           options={"temperature": 0.7}) as chat:
        for _ in range(2):
            assert not (await chat.get_response_with_meta("hi")).cache_hit
            chat.clear_history()
        provider = fake_plugin.created[0]
        assert provider.streams_started == 2
        # a seed makes it reproducible: cached
        await chat.get_response_with_meta("hi", options={"seed": 1})
        chat.clear_history()
        assert (await chat.get_response_with_meta("hi", options={"seed": 1})).cache_hit
        chat.clear_history()
        # the caller can ask for it
        await chat.get_response_with_meta("yo", cache=True)
        chat.clear_history()
        assert (await chat.get_response_with_meta("yo", cache=True)).cache_hit
        chat.clear_history()
        # and can bypass the cache for one message
        assert not (await chat.get_response_with_meta("hi", options={"seed": 1},
                                                      cache=False)).cache_hit
    assert provider.streams_started == 5


async def test_config_nondeterministic(fake_plugins: Plugins, fake_plugin: Any) -> None:
    async with ChatManager("fake:echo", plugins=fake_plugins, mode="creative",
                           cache={"backend": "memory", "nondeterministic": True}) as chat:
        await chat.get_response_with_meta("hi")
        chat.clear_history()
        assert (await chat.get_response_with_meta("hi")).cache_hit


async def test_failed_and_abandoned_answers_are_not_stored(fake_plugins: Plugins,
                                                         fake_cls: Any) -> None:
    cache = MemoryCache()
    broken = CachedProvider(fake_cls(fail_after=2), cache)
    with pytest.raises(StreamError) as info:
        async for _ in broken.chat([{"role": "user", "content": "hi"}], model="echo"):
            pass
    assert info.value.partial_content == "The capital"
    assert cache._data == {}
    working = CachedProvider(fake_cls(), cache)
    stream = working.chat([{"role": "user", "content": "hi"}], model="echo")
    async for _ in stream:
        break  # the caller stops reading after the first chunk
    await stream.aclose()
    assert cache._data == {}
    assert working.inner.streams_closed_early == 1  # type: ignore[attr-defined]
    answer = await working.complete([{"role": "user", "content": "hi"}], model="echo")
    assert answer.content == "The capital of France is Paris."
    assert len(cache._data) == 1


async def test_a_failing_cache_never_fails_a_request(fake_cls: Any,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    cache = BrokenCache()
    provider = CachedProvider(fake_cls(), cache)
    with caplog.at_level(logging.WARNING, logger="modelplex.cache"):
        for _ in range(3):
            answer = await provider.complete([{"role": "user", "content": "hi"}], model="echo")
            assert answer.content == "The capital of France is Paris."
    assert cache.calls == 6  # tried every time
    warnings = [r for r in caplog.records if r.name == "modelplex.cache"]
    assert len(warnings) == 1  # one warning per outage, not per request
    assert "unreachable" in warnings[0].getMessage()
    assert warnings[0].provider == "fake"  # type: ignore[attr-defined]


async def test_embeddings_are_cached_per_text(fake_cls: Any) -> None:
    class Embedder(fake_cls):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.embedded: list[str] = []

        async def embed(self, texts: Sequence[str], *, model: str,
                        options: Any = None) -> list[list[float]]:
            self.embedded.extend(texts)
            return [[float(len(t)), 1.0] for t in texts]

    inner = Embedder()
    provider = CachedProvider(inner, MemoryCache())
    assert await provider.embed(["a", "bb"], model="e") == [[1.0, 1.0], [2.0, 1.0]]
    assert await provider.embed(["bb", "ccc", "a"], model="e") == [[2.0, 1.0], [3.0, 1.0],
                                                                   [1.0, 1.0]]
    assert inner.embedded == ["a", "bb", "ccc"]
    await provider.embed(["a"], model="other")
    assert inner.embedded[-1] == "a"


async def test_memory_cache_delete_clear_stats_and_ttl_per_entry() -> None:
    cache = MemoryCache(ttl=None)
    await cache.set("a", 1)
    await cache.set("b", 2, ttl=0.001)
    await asyncio.sleep(0.01)
    assert await cache.get("b") is None
    assert await cache.get("a") == 1
    stats = await cache.stats()
    assert (stats.hits, stats.misses, stats.size) == (1, 1, 1)
    assert stats.hit_rate == 0.5
    assert await cache.delete("a") is True
    assert await cache.delete("a") is False
    await cache.set("c", 3)
    assert await cache.clear() == 1
    assert await cache.get("c") is None


# -- SQLite ------------------------------------------------------------------------------------
async def test_sqlite_cache_persists_and_counts(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "cache.db"
    cache = SQLiteCache(path, ttl=60)
    await cache.set("k", {"answer": ["Paris", 1]})
    assert await cache.get("k") == {"answer": ["Paris", 1]}  # before the writer committed
    assert await cache.get("missing") is None
    await cache.set("short", "x", ttl=0.001)
    await asyncio.sleep(0.01)
    await cache.aclose()

    again = SQLiteCache(path)
    assert await again.get("k") == {"answer": ["Paris", 1]}
    assert await again.get("short") is None
    stats = await again.stats()
    assert (stats.hits, stats.misses, stats.size) == (2, 2, 1)
    assert stats.location == str(path)
    assert await again.delete("k") is True
    assert await again.delete("k") is False
    await again.set("x", 1)
    await again.set("y", 2)
    assert await again.clear() == 2
    assert (await again.stats()).size == 0
    await again.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await again.set("z", 1)


async def test_sqlite_cache_in_the_request_path(fake_plugins: Plugins, fake_plugin: Any,
                                                tmp_path: Path) -> None:
    config = {"backend": "sqlite", "path": str(tmp_path / "c.db")}
    async with ChatManager("fake:echo", plugins=fake_plugins, cache=config) as chat:
        assert not (await chat.get_response_with_meta("hi")).cache_hit
    # a new manager (as a new process would) is answered from disk
    async with ChatManager("fake:echo", plugins=fake_plugins, cache=config) as chat:
        meta = await chat.get_response_with_meta("hi")
    assert meta.cache_hit
    assert meta.content == "The capital of France is Paris."
    assert sum(p.streams_started for p in fake_plugin.created) == 1


def test_sqlite_cache_with_several_writing_processes(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "shared.db"
    script = (
        "import asyncio, sys\n"
        "from modelplex.store.sqlite_cache import SQLiteCache\n"
        "async def main():\n"
        "    cache = SQLiteCache(sys.argv[1])\n"
        "    for i in range(200):\n"
        "        await cache.set(f'{sys.argv[2]}-{i}', {'i': i})\n"
        "        await cache.get(f'{sys.argv[2]}-{i // 2}')\n"
        "    await cache.aclose()\n"
        "asyncio.run(main())\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(path), name])
             for name in ("a", "b", "c")]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]

    async def check() -> None:
        cache = SQLiteCache(path)
        stats = await cache.stats()
        assert stats.size == 600
        assert stats.hits == 600
        assert await cache.get("b-199") == {"i": 199}
        await cache.aclose()

    asyncio.run(check())


# -- configuration -----------------------------------------------------------------------------
def test_cache_config_errors_name_the_field(fake_plugins: Plugins) -> None:
    assert CacheConfig.parse("sqlite").backend == "sqlite"
    with pytest.raises(ConfigurationError, match=r"cache\.ttl: Input should be greater than 0"):
        CacheConfig.parse({"backend": "memory", "ttl": -1})
    with pytest.raises(ConfigurationError, match=r"cache\.colour: unknown key"):
        CacheConfig.parse({"colour": "red"})
    with pytest.raises(PluginError, match="no cache named 'nope'; available: memory, sqlite"):
        open_cache("nope", fake_plugins)
    with pytest.raises(ConfigurationError, match="cache backend 'memory' does not accept"):
        open_cache({"backend": "memory", "url": "redis://x"}, fake_plugins)
    assert isinstance(open_cache({"backend": "memory", "max_entries": 3}, fake_plugins),
                      MemoryCache)


async def test_reasoning_tool_calls_and_models_replay_exactly(fake_cls: Any) -> None:
    from collections.abc import AsyncIterator

    from modelplex.chunks import StreamChunk, ToolCall, Usage
    from modelplex.provider import ChatRequest

    class Thinker(fake_cls):  # type: ignore[misc, valid-type]
        async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
            self.streams_started += 1
            yield StreamChunk(reasoning="Let me think.", model="m-1")
            yield StreamChunk(content="Calling.", model="m-1")
            yield StreamChunk(content=" Other", model="m-2")
            yield StreamChunk(tool_calls=[ToolCall("lookup", {"q": "Paris"}, id="c1")],
                              model="m-1")
            yield StreamChunk(finish_reason="tool_calls", model="m-1",
                              usage=Usage(3, 4, estimated=True, timings={"eval": 0.5}))

    inner = Thinker()
    provider = CachedProvider(inner, MemoryCache())
    messages = [{"role": "user", "content": "hi"}]
    first = [c async for c in provider.chat(messages, model="echo")]
    second = [c async for c in provider.chat(messages, model="echo")]
    assert inner.streams_started == 1
    assert second[-1].usage == Usage(3, 4, estimated=True, timings={"eval": 0.5}, cached=True)
    first[-1].usage.cached = True
    assert second == first


# -- the request pipeline and the config file -------------------------------------------------
async def test_the_config_files_cache_section_and_the_pipeline(fake_plugins: Plugins,
                                                               fake_plugin: Any,
                                                               tmp_path: Path) -> None:
    from modelplex.config import parse_config
    from modelplex.pipeline import open_model, release_model
    from modelplex.pool import ProviderPool

    config = parse_config({"cache": {"backend": "sqlite", "path": str(tmp_path / "c.db")}})
    for expected_hit in (False, True):
        async with ChatManager("fake:echo", plugins=fake_plugins, config=config,
                               pool=ProviderPool()) as chat:
            assert (await chat.get_response_with_meta("hi")).cache_hit is expected_hit
    assert sum(p.streams_started for p in fake_plugin.created) == 1
    with pytest.raises(ConfigurationError, match=r"cache\.ttl"):
        async with ChatManager("fake:echo", plugins=fake_plugins, pool=ProviderPool(),
                               config=parse_config({"cache": {"ttl": 0}})) as chat:
            pass

    pool = ProviderPool()
    cache = MemoryCache()
    provider, model = await open_model("fake:echo", plugins=fake_plugins, pool=pool,
                                       cache=cache, config=parse_config({}))
    assert isinstance(provider, CachedProvider) and provider.cache is cache
    assert model == "echo"
    await release_model(provider, pool=pool)  # the lease is released, the provider closed
    assert fake_plugin.created[-1].closed  # the cache is the caller's: still open
