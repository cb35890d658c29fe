"""The model registry and the selector: listing, TTL cache, search, health, selection."""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

import pytest

from modelplex.errors import ProviderConnectionError
from modelplex.plugins import Plugins
from modelplex.provider import Capabilities
from modelplex.registry import ModelRegistry, is_local_provider, normalize_capabilities
from modelplex.selection import ModelCriteria, ModelSelector, NoSuitableModelError
from modelplex.types import HealthStatus, ModelInfo


@pytest.fixture
def registry_plugins(fake_cls: Any, make_plugin: Any) -> Plugins:
    """Three providers: 'local' (two described models), 'remote' (no per-model data, tools),
    and 'down' (cannot connect)."""

    class Local(fake_cls):  # type: ignore[misc,valid-type]
        name = "local"
        capabilities: ClassVar[Capabilities] = Capabilities(json_mode=True)
        listed = 0

        async def list_models(self) -> list[ModelInfo]:
            type(self).listed += 1
            await asyncio.sleep(0.01)
            return [
                ModelInfo(id="small", name="small", provider="x", family="llama",
                          parameter_count=1_000_000_000, size_bytes=700_000_000,
                          context_length=8192, capabilities=["completion", "embedding"]),
                ModelInfo(id="big", name="big", provider="x", family="qwen2",
                          parameter_count=7_000_000_000, size_bytes=4_000_000_000,
                          context_length=32768, capabilities=["completion", "tools", "vision"],
                          details={"description": "A multilingual model"}),
            ]

    class Remote(fake_cls):  # type: ignore[misc,valid-type]
        name = "remote"
        capabilities: ClassVar[Capabilities] = Capabilities(tools=True)
        base_url = "https://api.example.com/v1"

        async def list_models(self) -> list[ModelInfo]:
            return [ModelInfo(id="gpt-x", name="gpt-x", provider="remote")]

        async def health(self) -> HealthStatus:
            return HealthStatus(provider="remote", healthy=True, latency_ms=50.0)

    class Down(fake_cls):  # type: ignore[misc,valid-type]
        name = "down"
        host = "http://127.0.0.1:9"

        async def list_models(self) -> list[ModelInfo]:
            raise ProviderConnectionError("down: cannot connect", provider="down")

    plugins = Plugins(load_entrypoints=False)
    for cls in (Local, Remote, Down):
        plugins.register(make_plugin(provider_name=cls.name, cls=cls), name=f"p-{cls.name}")
    return plugins


async def test_lists_every_provider_and_reports_the_one_that_is_down(
        registry_plugins: Plugins) -> None:
    async with ModelRegistry(plugins=registry_plugins) as registry:
        listings = await registry.listings()
        assert set(listings) == {"local", "remote", "down"}
        assert listings["down"].error == "down: cannot connect"
        assert listings["down"].models == []
        ids = [m.id for m in await registry.list_models()]
        assert ids == ["local:small", "local:big", "remote:gpt-x"]
        assert await registry.errors() == {"down": "down: cannot connect"}
        assert listings["local"].local and listings["down"].local
        assert not listings["remote"].local


async def test_models_are_normalized(registry_plugins: Plugins) -> None:
    async with ModelRegistry(plugins=registry_plugins) as registry:
        small, big, remote = await registry.list_models()
    assert small.provider == "local"
    assert small.capabilities == ["completion", "embeddings", "json"]
    assert big.capabilities == ["completion", "tools", "vision", "json"]
    # nothing per model: the provider's capabilities, marked as such
    assert remote.capabilities == ["chat", "tools"]
    assert remote.details["capabilities_source"] == "provider"


async def test_ttl_cache_serves_stale_and_refreshes_in_background(
        registry_plugins: Plugins, monkeypatch: pytest.MonkeyPatch) -> None:
    # the registry's clock is driven by the test, so a busy machine cannot age a listing
    import types

    import modelplex.registry as registry_module

    now = [1000.0]
    clock = types.SimpleNamespace(time=lambda: now[0], perf_counter=time.perf_counter,
                                  monotonic=time.monotonic)
    monkeypatch.setattr(registry_module, "time", clock)
    async with ModelRegistry(plugins=registry_plugins, ttl=10) as registry:
        cls = type(registry.provider("local"))
        before = cls.listed
        await registry.list_models()
        await registry.list_models()
        assert cls.listed == before + 1  # cached
        first = (await registry.listings())["local"].fetched_at
        now[0] += 11
        stale = (await registry.listings())["local"]
        assert stale.fetched_at == first  # answered at once from the stale listing...
        for _ in range(500):  # ...and refreshed behind the scenes (waited for, bounded)
            fresh = (await registry.listings())["local"]
            if fresh.fetched_at > first:
                break
            await asyncio.sleep(0.01)
        assert fresh.fetched_at > first
        assert cls.listed == before + 2
        await registry.refresh("local")
        assert cls.listed == before + 3


async def test_concurrent_reads_share_one_fetch(registry_plugins: Plugins) -> None:
    async with ModelRegistry(plugins=registry_plugins) as registry:
        cls = type(registry.provider("local"))
        before = cls.listed
        await asyncio.gather(*(registry.list_models() for _ in range(20)))
        assert cls.listed == before + 1


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"query": "QWEN"}, ["local:big"]),
    ({"query": "multilingual qwen"}, ["local:big"]),
    ({"query": "llama qwen"}, []),
    ({"capability": "tools"}, ["local:big", "remote:gpt-x"]),
    ({"capability": ["tools", "vision"]}, ["local:big"]),
    ({"capability": "embedding"}, ["local:small"]),
    ({"provider": "remote"}, ["remote:gpt-x"]),
    ({"min_context": 16000}, ["local:big"]),
    ({"max_size_bytes": 1_000_000_000}, ["local:small"]),
    ({"max_parameters": 2_000_000_000}, ["local:small"]),
    ({"local": False}, ["remote:gpt-x"]),
    ({"local": True, "capability": "json"}, ["local:small", "local:big"]),
])
async def test_search(registry_plugins: Plugins, kwargs: dict[str, Any],
                      expected: list[str]) -> None:
    async with ModelRegistry(plugins=registry_plugins) as registry:
        query = kwargs.pop("query", None)
        assert [m.id for m in await registry.search(query, **kwargs)] == expected


async def test_get_model_falls_back_to_the_listing(registry_plugins: Plugins) -> None:
    async with ModelRegistry(plugins=registry_plugins) as registry:
        info = await registry.get_model("local", "big")
        assert info.id == "local:big"
        from modelplex.errors import ModelNotFoundError

        with pytest.raises(ModelNotFoundError, match="no model named 'nope'"):
            await registry.get_model("local", "nope")


async def test_health_and_monitor(registry_plugins: Plugins) -> None:
    async with ModelRegistry(plugins=registry_plugins) as registry:
        assert registry.last_health() == {}
        health = await registry.check_health()
        assert health["remote"].status.healthy
        assert health["remote"].status.latency_ms == 50.0
        assert not health["down"].status.healthy
        assert health["down"].to_dict()["error"] == "down: cannot connect"
        assert health["local"].status.latency_ms is not None  # measured when not reported
        registry._health.clear()
        registry.start_monitor(interval=0.01)
        for _ in range(100):
            if len(registry.last_health()) == 3:
                break
            await asyncio.sleep(0.01)
        assert set(registry.last_health()) == {"local", "remote", "down"}
        monitor = registry._monitor
    assert monitor is not None and monitor.done()  # stopped on close


async def test_named_models_are_listed(registry_plugins: Plugins) -> None:
    async with ModelRegistry(plugins=registry_plugins, providers=["local"],
                             named_models={"fast": "local:small"}) as registry:
        found = await registry.search("fast")
        assert [(m.id, m.details["target"]) for m in found] == [("named:fast", "local:small")]


async def test_named_models_come_first_and_rank_by_their_routers_latency(
        registry_plugins: Plugins) -> None:
    stats = {"slow": {"latency_ms": {"p50": 900.0}}, "quick": {"latency_ms": {"p50": 5.0}}}
    async with ModelRegistry(plugins=registry_plugins, providers=["local"],
                             named_models={"slow": "local:big", "quick": "local:small",
                                           "new": "local:small"},
                             named_stats=stats.get) as registry:
        ids = [m.id for m in await registry.list_models()]
        assert ids == ["named:slow", "named:quick", "named:new", "local:small", "local:big"]
        assert registry.named_latency("quick") == 5.0
        assert registry.named_latency("new") is None  # no requests yet
        ranked = await ModelSelector(registry).candidates(ModelCriteria(providers=["named"]))
        assert [m.name for m in ranked] == ["quick", "slow", "new"]


async def test_a_crashing_plugin_does_not_take_the_others_down(
        registry_plugins: Plugins, fake_cls: Any, make_plugin: Any) -> None:
    class Broken(fake_cls):  # type: ignore[misc,valid-type]
        name = "broken"

        async def list_models(self) -> list[ModelInfo]:
            raise RuntimeError("bug in the plugin")

    registry_plugins.register(make_plugin(provider_name="broken", cls=Broken), name="p-broken")
    async with ModelRegistry(plugins=registry_plugins) as registry:
        listings = await registry.listings()
        error = listings["broken"].error or ""
        assert error.startswith("broken: ")
        assert "RuntimeError: bug in the plugin" in error
        assert len(await registry.list_models()) == 3


async def test_selector_ranks_and_filters(registry_plugins: Plugins) -> None:
    async with ModelRegistry(plugins=registry_plugins) as registry:
        selector = ModelSelector(registry)
        assert (await selector.select_model(capabilities=["tools"])).id == "local:big"
        assert (await selector.select_model(capabilities=["tools"],
                                            providers=["remote", "local"])).id == "remote:gpt-x"
        assert (await selector.select_model(prefer_smaller=True)).id == "local:small"
        assert (await selector.select_model(prefer=["gpt-x"])).id == "remote:gpt-x"
        assert (await selector.select_model(local_only=True, capabilities=["tools"])).id == \
            "local:big"
        with pytest.raises(NoSuitableModelError, match=r"min_context.*down: cannot connect"):
            await selector.select_model(ModelCriteria(min_context=1_000_000))


async def test_selector_skips_unhealthy_providers(registry_plugins: Plugins) -> None:
    async with ModelRegistry(plugins=registry_plugins) as registry:
        await registry.check_health()
        registry._health["local"].status = HealthStatus(provider="local", healthy=False)
        chosen = await ModelSelector(registry).select_model(capabilities=["tools"])
        assert chosen.id == "remote:gpt-x"


def test_capability_vocabulary_and_locality(fake_cls: Any) -> None:
    assert normalize_capabilities(["Embedding", "image", "tools", "tools"]) == \
        ["embeddings", "vision", "tools"]
    provider = fake_cls()
    assert is_local_provider(provider)
    for url, local in (("http://localhost:11434", True), ("127.0.0.1:8080", True),
                       ("http://[::1]:8000/v1", True), ("https://api.openai.com/v1", False),
                       ("http://gpu-box:11434", False)):
        provider.host = url
        assert is_local_provider(provider) is local, url


async def test_chat_manager_selects_the_model(registry_plugins: Plugins) -> None:
    from modelplex.manager import ChatManager

    async with ChatManager("auto", select={"capabilities": ["tools"], "prefer_smaller": True},
                           plugins=registry_plugins) as chat:
        assert (chat.session.provider, chat.session.model) == ("local", "big")
    async with ChatManager(select=ModelCriteria(providers=["remote"]),
                           plugins=registry_plugins) as chat:
        session = await chat.initialize_model()
        assert (session.provider, session.model) == ("remote", "gpt-x")
    with pytest.raises(NoSuitableModelError):
        async with ChatManager("auto", select={"min_context": 10**7},
                               plugins=registry_plugins):
            pass
