"""Providers are shared within a process: N ChatManagers, one provider instance.

With the real llama.cpp provider (the tiny generated GGUF) the model is loaded once for all
managers; with an HTTP provider the managers share one aiohttp session. Closing a manager
closes only what no other manager uses.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from modelplex import ChatManager
from modelplex.config import parse_config
from modelplex.http import HttpClient, Timeouts
from modelplex.pool import ProviderPool
from modelplex.provider import Provider
from modelplex.routing import Router
from modelplex.testing.upstream import FaultyUpstream
from modelplex.wrapping import WrappingProvider


def _pooled(manager: ChatManager) -> Provider:
    """The pooled provider (or named model's router) under a manager's stack."""
    provider = manager._provider
    while isinstance(provider, WrappingProvider):
        provider = provider.inner
    if isinstance(provider, Router) and provider.plain:
        provider = provider.deployments[0].provider
    assert provider is not None
    return provider


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from modelplex_llamacpp.tiny_gguf import write_tiny_gguf

    folder = tmp_path_factory.mktemp("models")
    write_tiny_gguf(folder / "tiny.gguf", seed=0)
    return folder


@pytest.mark.slow
async def test_four_llamacpp_managers_load_the_model_once(models_dir: Path) -> None:
    pool = ProviderPool()
    cfg = parse_config({"providers": {"llamacpp": {"models_dir": str(models_dir)}}})
    managers = [ChatManager("llamacpp:tiny", config=cfg, pool=pool,
                            options={"max_tokens": 4}) for _ in range(4)]
    for manager in managers:
        await manager.initialize_model("llamacpp:tiny")
    metas = await asyncio.gather(*(m.get_response_with_meta("hi") for m in managers))
    assert all(meta.completion_tokens > 0 for meta in metas)
    providers = {id(_pooled(m)) for m in managers}
    assert len(providers) == 1  # one instance ...
    provider = _pooled(managers[0])
    assert len(provider._loaded) == 1  # type: ignore[union-attr]  # ... one copy of the model
    assert pool.holders(provider) == 4
    for manager in managers[:3]:
        await manager.aclose()
    assert len(provider._loaded) == 1  # type: ignore[union-attr]  # still used by the last
    assert (await managers[3].get_response_with_meta("again")).completion_tokens > 0
    await managers[3].aclose()
    assert provider._loaded == {}  # type: ignore[union-attr]  # the last one freed it
    assert pool.shared() == []


async def test_http_managers_share_one_session() -> None:
    pool = ProviderPool()
    async with FaultyUpstream() as up:
        cfg = parse_config({"providers": {"openai": {
            "base_url": up.url + "/v1", "api_key": "sk-pool-test-1234567890",
            "timeouts": Timeouts(first_byte=5)}}})
        managers = [ChatManager("openai:fault", config=cfg, pool=pool) for _ in range(8)]
        metas = await asyncio.gather(*(m.get_response_with_meta("hi") for m in managers))
        assert all(meta.content for meta in metas)
        provider = _pooled(managers[0])
        assert all(_pooled(m) is provider for m in managers)
        clients = [v for v in vars(provider).values() if isinstance(v, HttpClient)]
        session = clients[0]._session
        assert session is not None and not session.closed
        other = ChatManager("openai:fault", config=cfg, pool=pool,
                            provider_config={"openai": {"headers": {"X-Team": "b"}}})
        await other.initialize_model()
        assert _pooled(other) is not provider  # another configuration: another instance
        await other.aclose()
        for manager in managers[:-1]:
            await manager.aclose()
        assert not session.closed
        await managers[-1].aclose()
        assert session.closed
        assert pool.shared() == []


async def test_named_model_routers_are_shared_and_released() -> None:
    pool = ProviderPool()
    async with FaultyUpstream() as up:
        cfg = parse_config({"models": {"fast": {"deployments": [
            {"model": "openai:fault", "base_url": up.url + "/v1", "api_key": "sk-x-12345678"},
        ]}}})
        a = ChatManager("fast", config=cfg, pool=pool)
        b = ChatManager("fast", config=cfg, pool=pool)
        await a.get_response_with_meta("one")
        await b.get_response_with_meta("two")
        assert _pooled(a) is _pooled(b)
        assert _pooled(a).stats()["requests"] == 2  # type: ignore[union-attr]
        assert len(pool.shared()) == 2  # the router and its one provider
        await a.aclose()
        await b.aclose()
        assert pool.shared() == []


@pytest.mark.slow
def test_sync_managers_of_a_thread_share_the_model(models_dir: Path) -> None:
    pool = ProviderPool()
    cfg = parse_config({"providers": {"llamacpp": {"models_dir": str(models_dir)}}})
    with ChatManager("llamacpp:tiny", config=cfg, pool=pool, options={"max_tokens": 4}) as one, \
            ChatManager("llamacpp:tiny", config=cfg, pool=pool,
                        options={"max_tokens": 4}) as two:
        assert one.get_response_with_meta_sync("hi").completion_tokens > 0
        assert two.get_response_with_meta_sync("hi").completion_tokens > 0
        assert _pooled(one) is _pooled(two)
        assert len(_pooled(one)._loaded) == 1  # type: ignore[union-attr]
    assert pool.shared() == []


async def test_a_lingering_provider_is_reused_then_closed_when_idle() -> None:
    pool = ProviderPool(linger=0.2)
    async with FaultyUpstream() as up:
        cfg = parse_config({"providers": {"openai": {
            "base_url": up.url + "/v1", "api_key": "sk-pool-test-1234567890"}}})
        async with ChatManager("openai:fault", config=cfg, pool=pool) as first:
            assert (await first.get_response_with_meta("hi")).content
            provider = _pooled(first)
        async with ChatManager("openai:fault", config=cfg, pool=pool) as second:
            assert _pooled(second) is provider  # released, but still open: reused
            assert (await second.get_response_with_meta("again")).content
        clients = [v for v in vars(provider).values() if isinstance(v, HttpClient)]
        session = clients[0]._session
        assert session is not None and not session.closed
        assert pool.shared() == [provider]
        await pool.release(provider)  # a second release of a lingering provider: no effect
        assert not session.closed and pool.shared() == [provider]
        await asyncio.sleep(0.5)
        assert session.closed  # idle for longer than the linger: closed by the pool
        assert pool.shared() == []


def test_a_lingering_provider_is_closed_when_its_loop_shuts_down() -> None:
    pool = ProviderPool(linger=60)

    async def use() -> object:
        async with FaultyUpstream() as up:
            cfg = parse_config({"providers": {"openai": {
                "base_url": up.url + "/v1", "api_key": "sk-pool-test-1234567890"}}})
            async with ChatManager("openai:fault", config=cfg, pool=pool) as manager:
                assert (await manager.get_response_with_meta("hi")).content
                provider = _pooled(manager)
            assert pool.shared() == [provider]
            return provider

    provider = asyncio.run(use())  # the loop ends long before the linger
    clients = [v for v in vars(provider).values() if isinstance(v, HttpClient)]
    assert clients[0]._session is None or clients[0]._session.closed
    assert pool.shared() == []


def test_the_linger_of_the_process_pool_comes_from_the_environment() -> None:
    from modelplex import env
    from modelplex.errors import ConfigurationError

    assert env.pool_linger({}) == 0.0  # default: closed when the last holder releases it
    assert env.pool_linger({"MODELPLEX_POOL_LINGER": "0.5"}) == 0.5
    assert env.pool_linger({"MODELPLEX_POOL_LINGER": "off"}) == 0.0
    with pytest.raises(ConfigurationError, match=r"MODELPLEX_POOL_LINGER='soon'.*seconds >= 0"):
        env.pool_linger({"MODELPLEX_POOL_LINGER": "soon"})
