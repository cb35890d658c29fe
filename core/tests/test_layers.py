"""Layers of the request path: every layer is a WrappingProvider that forwards what it does
not override, and answers whole requests (``complete_request``) as well as streams."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from modelplex.caches import MemoryCache
from modelplex.caching import CachedProvider
from modelplex.chunks import ChatResponse, Usage
from modelplex.provider import ChatRequest
from modelplex.recording import RecordingProvider
from modelplex.store.logs import LogStore
from modelplex.wrapping import WrappingProvider


def _embedding_provider(fake_cls: Any) -> Any:
    class Embedding(fake_cls):  # type: ignore[misc, valid-type]
        embedded: list[list[str]]

        async def embed(self, texts: Sequence[str], *, model: str,
                        options: Mapping[str, Any] | None = None) -> list[list[float]]:
            self.embedded = [*getattr(self, "embedded", []), list(texts)]
            return [[float(len(t)), 1.0] for t in texts]

        async def _complete(self, request: ChatRequest) -> ChatResponse:
            self.completes = getattr(self, "completes", 0) + 1
            return ChatResponse(content="whole", model=request.model, provider=self.name,
                                finish_reason="stop",
                                usage=Usage(prompt_tokens=3, completion_tokens=1))

    return Embedding()


def test_layers_are_wrapping_providers(fake_cls: Any) -> None:
    inner = fake_cls()
    assert isinstance(CachedProvider(inner, MemoryCache()), WrappingProvider)
    assert isinstance(RecordingProvider(inner), WrappingProvider)
    assert RecordingProvider(inner).wrapped is inner


async def test_embed_through_every_layer(fake_cls: Any, tmp_path: Path) -> None:
    inner = _embedding_provider(fake_cls)
    store = LogStore(tmp_path / "logs.db")
    stack = RecordingProvider(CachedProvider(inner, MemoryCache()), store, "c")
    assert await stack.embed(["ab", "abc"], model="e") == [[2.0, 1.0], [3.0, 1.0]]
    assert await stack.embed(["ab"], model="e") == [[2.0, 1.0]]  # from the cache
    assert inner.embedded == [["ab", "abc"]]
    assert (await stack.list_models())[0].name == "echo"  # forwarded too
    store.close()


async def test_whole_answers_are_cached_and_recorded_once(fake_cls: Any,
                                                          tmp_path: Path) -> None:
    inner = _embedding_provider(fake_cls)
    store = LogStore(tmp_path / "logs.db")
    stack = RecordingProvider(CachedProvider(inner, MemoryCache()), store, "c")
    messages = [{"role": "user", "content": "hi"}]
    first = await stack.complete(messages, model="echo")
    again = await stack.complete(messages, model="echo")
    assert first.content == again.content == "whole"
    assert inner.completes == 1 and inner.streams_started == 0  # never streamed
    assert not first.usage.cached and again.usage.cached
    streamed = [c async for c in stack.chat(messages, model="echo")]  # the same entry
    assert "".join(c.content for c in streamed) == "whole" and inner.streams_started == 0
    stored = store.exchanges("c")
    assert [(e.response, e.cached) for e in stored] == [("whole", False), ("whole", True),
                                                        ("whole", True)]
    assert stored[0].completion_tokens == 1 and stored[0].finish_reason == "stop"
    store.close()


async def test_request_conversation_id_wins(fake_cls: Any, tmp_path: Path) -> None:
    store = LogStore(tmp_path / "logs.db")
    stack = RecordingProvider(fake_cls(), store, "manager")
    request = stack.build_request([{"role": "user", "content": "hi"}], model="echo")
    request.conversation_id = "server-conv"
    await stack.complete_request(request)
    assert [e.prompt for e in store.exchanges("server-conv")] == ["hi"]
    assert store.exchanges("manager") == []
    store.close()


# -- register_layers: a plugin's layer at its position ------------------------------------------
class _Probe(WrappingProvider):
    """A layer that counts the requests it sees."""

    seen = 0

    def stream_request(self, request: ChatRequest) -> Any:
        type(self).seen += 1
        return self.inner.stream_request(request)

    async def complete_request(self, request: ChatRequest) -> ChatResponse:
        type(self).seen += 1
        return await self.inner.complete_request(request)


def _layer_plugin(**position: Any) -> Any:
    from modelplex import hookimpl

    class LayerPlugin:
        @hookimpl
        def register_layers(self, register: Any) -> None:
            register(lambda inner, ctx: _Probe(inner) if ctx.caller == "chat" else None,
                     name=position.pop("name", "probe"), **position)
            register(lambda inner, ctx: None, name="absent", after="recording")

    return LayerPlugin()


def _chain(provider: Any) -> list[str]:
    names = []
    while provider is not None:
        names.append(type(provider).__name__)
        provider = getattr(provider, "wrapped", None)
    return names


async def test_a_registered_layer_sits_at_its_position_for_chat_manager(
        fake_plugins: Any, tmp_path: Path) -> None:
    from modelplex.manager import ChatManager
    from modelplex.pipeline import PATH, layer_order

    assert PATH == ("mcp", "recording", "telemetry", "cache", "router", "provider")
    fake_plugins.register(_layer_plugin(before="cache"), name="layer")
    assert [name for name, _ in layer_order(fake_plugins)] == [
        "mcp", "recording", "absent", "telemetry", "probe", "cache"]
    async with ChatManager("fake:echo", plugins=fake_plugins, cache=MemoryCache(),
                           conversation=True, logs=tmp_path / "logs.db") as chat:
        assert _chain(chat._provider) == ["RecordingProvider", "_Probe", "CachedProvider",
                                          "Router"]
        before = _Probe.seen
        meta = await chat.get_response_with_meta("hi")
        assert meta.content == "The capital of France is Paris."
        assert _Probe.seen == before + 1


async def test_a_layer_named_telemetry_fills_its_slot(fake_plugins: Any) -> None:
    from modelplex.pipeline import layer_order

    fake_plugins.register(_layer_plugin(name="telemetry"), name="layer")
    order = layer_order(fake_plugins)
    assert [name for name, _ in order] == ["mcp", "recording", "absent", "telemetry", "cache"]
    assert order[3][1] is not None


def test_a_layer_below_the_router_is_refused(fake_plugins: Any) -> None:
    from modelplex.pipeline import layer_order

    fake_plugins.register(_layer_plugin(after="router"), name="bad-layer")
    assert [name for name, _ in layer_order(fake_plugins)] == [
        "mcp", "recording", "absent", "telemetry", "cache"]
    [info] = [i for i in fake_plugins.list_plugins() if i.name == "bad-layer"]
    assert info.error is not None and "above the router" in info.error


# -- a plain provider:model is a router of one deployment -------------------------------------
def _flaky_plugins(make_plugin: Any, fake_cls: Any, errors: list[Exception]) -> Any:
    from modelplex.plugins import Plugins

    class Flaky(fake_cls):  # type: ignore[misc, valid-type]
        """Raises the queued errors before its first chunk, then answers."""

        async def _stream(self, request: ChatRequest) -> Any:
            if errors:
                self.requests.append(request)
                raise errors.pop(0)
            async for chunk in super()._stream(request):
                yield chunk

    plugins = Plugins(load_entrypoints=False)
    plugins.register(make_plugin(provider_name="fake", cls=Flaky), name="flaky")
    return plugins


async def test_a_plain_model_retries_what_waiting_can_fix(make_plugin: Any,
                                                          fake_cls: Any) -> None:
    import time

    from modelplex.errors import ProviderConnectionError, ServerBusyError
    from modelplex.manager import ChatManager

    errors: list[Exception] = [ServerBusyError("busy", status_code=503, retry_after=0.2,
                                               provider="fake")]
    plugins = _flaky_plugins(make_plugin, fake_cls, errors)
    async with ChatManager("fake:echo", plugins=plugins) as chat:
        start = time.monotonic()
        meta = await chat.get_response_with_meta("hi")  # Retry-After honoured, then answered
        assert time.monotonic() - start >= 0.2
        assert meta.content == "The capital of France is Paris." and meta.deployment is None
        errors.append(ProviderConnectionError("refused", provider="fake"))
        assert (await chat.get_response_with_meta("hi")).content  # backoff, then answered


async def test_a_plain_model_raises_the_providers_typed_error(make_plugin: Any,
                                                              fake_cls: Any) -> None:
    import time

    import pytest

    from modelplex.errors import (
        ProviderTimeoutError,
        RateLimitError,
        ServerBusyError,
        ServerError,
    )
    from modelplex.manager import ChatManager

    errors: list[Exception] = []
    plugins = _flaky_plugins(make_plugin, fake_cls, errors)
    async with ChatManager("fake:echo", plugins=plugins) as chat:
        for error, kind, attempts in [
            (ServerError("boom", status_code=500, provider="fake"), ServerError, 1),
            (ProviderTimeoutError("slow", phase="first_byte", timeout=1.0, provider="fake"),
             ProviderTimeoutError, 1),
            (RateLimitError("later", status_code=429, retry_after=60, provider="fake"),
             RateLimitError, 1),  # Retry-After beyond the budget: raised at once
            (ServerBusyError("busy", status_code=503, provider="fake"), ServerBusyError, 2),
        ]:
            errors[:] = [error] * 3
            start = time.monotonic()
            with pytest.raises(kind) as info:
                await chat.get_response_with_meta("hi")
            assert type(info.value) is kind and time.monotonic() - start < 2
            assert len(errors) == 3 - attempts, error
        assert info.value.retry_after is None  # type: ignore[attr-defined]


async def test_retries_zero_turns_them_off(make_plugin: Any, fake_cls: Any) -> None:
    import pytest

    from modelplex.config import parse_config
    from modelplex.errors import ServerBusyError
    from modelplex.manager import ChatManager

    errors: list[Exception] = []
    plugins = _flaky_plugins(make_plugin, fake_cls, errors)
    busy = ServerBusyError("busy", status_code=503, provider="fake")
    for kwargs in ({"retries": 0}, {"config": parse_config({"retries": {"attempts": 1}})}):
        async with ChatManager("fake:echo", plugins=plugins, **kwargs) as chat:
            errors[:] = [busy, busy]
            with pytest.raises(ServerBusyError):
                await chat.get_response_with_meta("hi")
            assert len(errors) == 1


# -- the lease -----------------------------------------------------------------------------------
async def test_a_lease_releases_exactly_what_it_opened(fake_plugins: Any, fake_plugin: Any,
                                                       tmp_path: Path) -> None:
    from modelplex.config import parse_config
    from modelplex.pipeline import open_model, release_model
    from modelplex.pool import ProviderPool

    pool, config = ProviderPool(), parse_config({})
    lease = await open_model("fake:echo", plugins=fake_plugins, pool=pool, config=config,
                             cache={"backend": "sqlite", "path": str(tmp_path / "c.db")},
                             logs=tmp_path / "logs.db")
    other = await open_model("fake", plugins=fake_plugins, pool=pool, config=config)
    assert _chain(lease.provider) == ["RecordingProvider", "CachedProvider", "Router"]
    assert (lease.model, lease.provider_name, other.model) == ("echo", "fake", "echo")
    store, cache = lease.layers[0].store, lease.layers[1].cache  # type: ignore[attr-defined]
    async with lease:
        reply = await lease.provider.complete([{"role": "user", "content": "hi"}],
                                              model=lease.model)
        assert reply.content == "The capital of France is Paris."
    assert store.closed and cache.closed  # opened for this lease, closed with it
    [provider] = fake_plugin.created
    assert not provider.closed and pool.shared() == [provider]  # still held by `other`
    await lease.release()  # again: nothing more to give back
    assert pool.holders(provider) == 1
    await release_model(other.provider)  # the older way: the top provider
    assert provider.closed and pool.shared() == []


async def test_whole_answers_get_the_same_retries(make_plugin: Any, fake_cls: Any) -> None:
    from modelplex.config import parse_config
    from modelplex.errors import ProviderConnectionError
    from modelplex.pipeline import open_model
    from modelplex.pool import ProviderPool

    errors: list[Exception] = [ProviderConnectionError("refused", provider="fake")]
    plugins = _flaky_plugins(make_plugin, fake_cls, errors)
    async with await open_model("fake:echo", plugins=plugins, pool=ProviderPool(),
                                config=parse_config({})) as lease:
        reply = await lease.provider.complete([{"role": "user", "content": "hi"}],
                                              model=lease.model)
        assert reply.content == "The capital of France is Paris." and errors == []
        assert lease.base.stats()["deployments"]["fake:echo"]["errors"] == {  # type: ignore[attr-defined]
            "ProviderConnectionError": 1}


async def test_a_plain_models_attempt_is_bounded_by_the_provider_not_the_retry_budget(
        make_plugin: Any, fake_cls: Any) -> None:
    """``retries.timeout`` bounds the waits between a plain model's attempts; an attempt itself
    runs as long as the provider's own timeouts allow (a model loading, a long answer)."""
    import asyncio

    from modelplex.config import RetryConfig, parse_config
    from modelplex.pipeline import open_model
    from modelplex.plugins import Plugins
    from modelplex.pool import ProviderPool

    class Slow(fake_cls):  # type: ignore[misc, valid-type]
        async def _stream(self, request: ChatRequest) -> Any:
            await asyncio.sleep(0.3)  # e.g. loading the model before the first token
            async for chunk in super()._stream(request):
                yield chunk

    plugins = Plugins(load_entrypoints=False)
    plugins.register(make_plugin(provider_name="fake", cls=Slow), name="slow")
    budget = RetryConfig(attempts=2, timeout=0.1)
    async with await open_model("fake:echo", plugins=plugins, pool=ProviderPool(),
                                config=parse_config({}), retries=budget) as lease:
        messages = [{"role": "user", "content": "hi"}]
        assert (await lease.provider.complete(messages, model=lease.model)).content
        chunks = [c async for c in lease.provider.chat(messages, model=lease.model)]
        assert "".join(c.content for c in chunks) == "The capital of France is Paris."


async def test_a_failed_whole_answer_is_recorded_with_what_arrived(fake_cls: Any,
                                                                   tmp_path: Path) -> None:
    import pytest

    from modelplex.errors import StreamError

    store = LogStore(tmp_path / "logs.db")
    stack = RecordingProvider(fake_cls(fail_after=2), store, "c")
    with pytest.raises(StreamError):
        await stack.complete([{"role": "user", "content": "hi"}], model="echo")
    [failed] = store.exchanges("c")
    assert (failed.response, failed.error) == ("The capital",
                                               "StreamError: fake: the upstream broke off")
    store.close()
