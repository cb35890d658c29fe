"""What conversations share on the request path, and what is never served stale.

A plain ``provider:model``'s router of one lives in the pool with its provider (one per model
and retries), so a manager per conversation does not build one; the layers' order is placed
once per set of registered layers. Sharing never outlives the provider, never crosses a
configuration, a model or a retry policy, and a release by one holder never closes what
another still uses.
"""

from __future__ import annotations

from typing import Any

from modelplex.config import parse_config
from modelplex.manager import ChatManager
from modelplex.pool import ProviderPool
from modelplex.routing import Router
from modelplex.wrapping import WrappingProvider


def _router(manager: ChatManager) -> Router:
    provider = manager._provider
    while isinstance(provider, WrappingProvider):
        provider = provider.inner
    assert isinstance(provider, Router) and provider.plain
    return provider


async def test_two_managers_on_a_plain_model_share_one_router(fake_plugins: Any,
                                                              fake_plugin: Any) -> None:
    pool, config = ProviderPool(), parse_config({})
    a = ChatManager("fake:echo", plugins=fake_plugins, pool=pool, config=config)
    b = ChatManager("fake:echo", plugins=fake_plugins, pool=pool, config=config)
    await a.get_response_with_meta("one")
    await b.get_response_with_meta("two")
    router = _router(a)
    assert _router(b) is router
    [provider] = fake_plugin.created
    assert pool.holders(provider) == 2
    await a.aclose()  # one conversation ends: the other goes on, on the same router
    assert not provider.closed and pool.holders(provider) == 1
    assert (await b.get_response_with_meta("three")).content
    assert _router(b) is router
    await b.aclose()
    assert provider.closed and pool.shared() == []
    async with ChatManager("fake:echo", plugins=fake_plugins, pool=pool,
                           config=config) as c:  # the provider was closed: a new router
        await c.get_response_with_meta("four")
        assert _router(c) is not router
        assert _router(c).deployments[0].provider is fake_plugin.created[1]


async def test_another_model_or_retry_policy_gets_its_own_router(fake_plugins: Any,
                                                                 fake_plugin: Any) -> None:
    pool, config = ProviderPool(), parse_config({})
    echo = ChatManager("fake:echo", plugins=fake_plugins, pool=pool, config=config)
    other = ChatManager("fake:other", plugins=fake_plugins, pool=pool, config=config)
    no_retries = ChatManager("fake:echo", plugins=fake_plugins, pool=pool, config=config,
                             retries=0)
    default = ChatManager("fake", plugins=fake_plugins, pool=pool, config=config)
    for manager in (echo, other, no_retries, default):
        await manager.initialize()
    assert len(fake_plugin.created) == 1  # one provider for all four
    assert _router(other) is not _router(echo)
    assert _router(other).deployments[0].model == "other"
    assert _router(no_retries) is not _router(echo)
    assert _router(no_retries).retries.attempts == 1
    assert _router(echo).retries.attempts == 2
    assert _router(default) is _router(echo)  # its default model is "echo": the same
    for manager in (echo, other, no_retries, default):
        await manager.aclose()
    assert pool.shared() == []


async def test_a_changed_configuration_is_not_served_from_a_cache(fake_plugins: Any,
                                                                  fake_plugin: Any) -> None:
    pool = ProviderPool()
    first = parse_config({"providers": {"fake": {"reply": "one"}}})
    second = parse_config({"providers": {"fake": {"reply": "two"}}})
    a = ChatManager("fake:echo", plugins=fake_plugins, pool=pool, config=first)
    b = ChatManager("fake:echo", plugins=fake_plugins, pool=pool, config=second)
    await a.initialize()
    await b.initialize()
    assert [p.reply for p in fake_plugin.created] == ["one", "two"]
    assert _router(a) is not _router(b)
    first.providers["fake"]["reply"] = "changed"  # a table changed in place
    c = ChatManager("fake:echo", plugins=fake_plugins, pool=pool, config=first)
    await c.initialize()
    assert fake_plugin.created[-1].reply == "changed"
    assert _router(c).deployments[0].provider is fake_plugin.created[-1]
    overridden = ChatManager("fake:echo", plugins=fake_plugins, pool=pool, config=first,
                             provider_config={"fake": {"reply": "code"}})
    await overridden.initialize()
    assert fake_plugin.created[-1].reply == "code"
    for manager in (a, b, c, overridden):
        await manager.aclose()
    assert pool.shared() == []


def test_the_layer_order_follows_the_registered_layers(fake_plugins: Any) -> None:
    from modelplex import hookimpl
    from modelplex.pipeline import layer_order

    before = [name for name, _ in layer_order(fake_plugins)]
    assert layer_order(fake_plugins) == layer_order(fake_plugins)

    class LayerPlugin:
        @hookimpl
        def register_layers(self, register: Any) -> None:
            register(lambda inner, ctx: None, name="late", before="cache")

    fake_plugins.register(LayerPlugin(), name="late-layer")  # registered after a stack
    after = [name for name, _ in layer_order(fake_plugins)]
    assert after == [*before[:-1], "late", before[-1]]


def test_a_misplaced_layer_warns_on_every_stack(fake_plugins: Any, caplog: Any) -> None:
    from modelplex import hookimpl
    from modelplex.pipeline import layer_order

    class LayerPlugin:
        @hookimpl
        def register_layers(self, register: Any) -> None:
            register(lambda inner, ctx: None, name="lost", after="nowhere")

    fake_plugins.register(LayerPlugin(), name="lost-layer")
    for _ in range(2):
        caplog.clear()
        assert "lost" not in [name for name, _ in layer_order(fake_plugins)]
        assert "no layer 'nowhere'" in caplog.text


async def test_a_second_conversation_reopens_the_plain_base_without_parsing_again(
        fake_plugins: Any, fake_plugin: Any, monkeypatch: Any) -> None:
    from modelplex import _reopen

    calls: list[str] = []
    plain_kwargs = _reopen.plain_kwargs
    monkeypatch.setattr(_reopen, "plain_kwargs",
                        lambda config, name, overrides: (calls.append(name),
                                                         plain_kwargs(config, name, overrides))[1])
    pool, config = ProviderPool(), parse_config({})
    a = ChatManager("fake:echo", plugins=fake_plugins, pool=pool, config=config)
    b = ChatManager("fake:echo", plugins=fake_plugins, pool=pool, config=config)
    await a.initialize()
    await b.initialize()
    assert calls == ["fake"]  # the second found what the first opened
    [provider] = fake_plugin.created
    assert _router(a) is _router(b) and pool.holders(provider) == 2  # its own reference
    await a.aclose()
    assert not provider.closed and (await b.get_response_with_meta("on")).content
    await b.aclose()
    assert provider.closed
    async with ChatManager("fake:echo", plugins=fake_plugins, pool=pool, config=config) as c:
        assert calls == ["fake", "fake"]  # the pool closed it: opened again, not served stale
        assert _router(c).deployments[0].provider is fake_plugin.created[1]
    other = ProviderPool()  # another pool never gets this pool's provider
    async with ChatManager("fake:echo", plugins=fake_plugins, pool=other, config=config) as d:
        assert _router(d).deployments[0].provider is fake_plugin.created[2]
    retried = ChatManager("fake:echo", plugins=fake_plugins, pool=pool, config=config,
                          retries=3)
    async with retried:
        assert _router(retried).retries.attempts == 4
    assert pool.shared() == [] and other.shared() == []


async def test_the_layers_are_built_for_every_conversation(fake_plugins: Any,
                                                           fake_plugin: Any) -> None:
    from modelplex import hookimpl

    seen: list[Any] = []

    class LayerPlugin:
        @hookimpl
        def register_layers(self, register: Any) -> None:
            register(lambda inner, ctx: seen.append(ctx), name="watch", before="cache")

    fake_plugins.register(LayerPlugin(), name="watch-layer")
    pool, config = ProviderPool(), parse_config({})
    for _ in range(2):
        async with ChatManager("fake:echo", plugins=fake_plugins, pool=pool, config=config):
            pass
    assert len(seen) == 2 and seen[0] == seen[1]
    assert (seen[0].spec, seen[0].model, seen[0].provider_name, seen[0].config) == (
        "fake:echo", "echo", "fake", config)
