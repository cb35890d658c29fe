"""Fault injection: every HTTP provider against a real misbehaving upstream on 127.0.0.1.

For each fault the provider must raise the right typed error within its configured timeout,
keep what it streamed before the failure, leak no connection, leave no task pending and emit
no "unclosed" warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
import time
import warnings
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from modelplex import create_provider
from modelplex.errors import (
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
    ResponseTooLargeError,
    ServerBusyError,
    ServerError,
    StreamError,
)
from modelplex.http import HttpClient, Timeouts
from modelplex.provider import Provider
from modelplex.testing.upstream import PIECE, FaultyUpstream, closed_port_url

TIMEOUTS = Timeouts(connect=2.0, first_byte=0.6, between_chunks=0.4, total=None)
MESSAGES = [{"role": "user", "content": "hello"}]

ProviderFactory = Callable[[str], Provider]
PROVIDERS: dict[str, ProviderFactory] = {
    "ollama": lambda url: create_provider("ollama", host=url, timeouts=TIMEOUTS,
                                          max_parallel=64),
    "openai": lambda url: create_provider("openai", base_url=url + "/v1",
                                          api_key="sk-fault-test-secret-123456",
                                          timeouts=TIMEOUTS),
    "lmstudio": lambda url: create_provider("lmstudio", host=url, timeouts=TIMEOUTS),
    "anthropic": lambda url: create_provider("anthropic", base_url=url,
                                             api_key="sk-ant-fault-test-secret-123456",
                                             timeouts=TIMEOUTS),
    "huggingface": lambda url: create_provider("huggingface", base_url=url + "/v1",
                                               api_key="hf_faulttestsecret123456",
                                               timeouts=TIMEOUTS),
    "tgi": lambda url: create_provider("tgi", base_url=url, timeouts=TIMEOUTS),
}

# Providers whose request and stream path is another provider's class: the soak of that one
# covers them (each soak costs up to 40 s).
SOAKED_AS = {"huggingface": "openai"}


def http_client(provider: Provider) -> HttpClient:
    """The provider's HttpClient, wherever it keeps it."""
    for value in vars(provider).values():
        if isinstance(value, HttpClient):
            return value
    raise AssertionError(f"{provider!r} holds no HttpClient")


def open_connections(provider: Provider) -> int:
    """Connections the provider's pool holds (idle or in use)."""
    session = http_client(provider)._session
    if session is None or session.closed:
        return 0
    connector: Any = session.connector
    idle = sum(len(conns) for conns in connector._conns.values())
    return idle + len(connector._acquired)


@pytest.fixture(params=sorted(PROVIDERS))
def provider_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def upstream() -> AsyncIterator[FaultyUpstream]:
    async with FaultyUpstream(chunks=5, oversize_bytes=9 * 1024 * 1024) as server:
        yield server


@pytest.fixture
async def provider(provider_name: str, upstream: FaultyUpstream) -> AsyncIterator[Provider]:
    provider = PROVIDERS[provider_name](upstream.url)
    yield provider
    await provider.aclose()


async def consume(provider: Provider, model: str = "fault") -> list[str]:
    return [c.content async for c in provider.chat(MESSAGES, model=model)]


def assert_clean() -> None:
    """No client task is pending (the upstream's own connection handlers are allowed)."""
    current = asyncio.current_task()
    pending = [t for t in asyncio.all_tasks() if t is not current and not t.done()
               and not t.get_coro().__qualname__.startswith("RequestHandler.")]
    assert not pending, f"tasks left pending: {pending}"


async def test_normal_streams_reuse_one_pooled_connection(provider: Provider) -> None:
    for _ in range(3):
        assert "".join(await consume(provider)) == PIECE * 5
    # The body's tail after the end marker was read, so the connection went back to the pool.
    assert open_connections(provider) == 1


# fault -> (error type, phase or None, text streamed before the failure)
STREAM_FAULTS: dict[str, tuple[type[ProviderError], str | None, str]] = {
    "hang": (ProviderTimeoutError, "first_byte", ""),
    "stall_headers": (ProviderTimeoutError, "between_chunks", ""),
    "stall_mid": (ProviderTimeoutError, "between_chunks", PIECE * 2),
    "reset": (StreamError, None, PIECE * 2),
    "malformed": (StreamError, None, PIECE),
    "oversize": (ResponseTooLargeError, None, PIECE),
    "no_end": (StreamError, None, PIECE * 5),
    "error_event": (StreamError, None, PIECE * 2),
}


@pytest.mark.parametrize("fault", sorted(STREAM_FAULTS))
async def test_stream_fault_raises_typed_error_and_keeps_partial(
        provider: Provider, upstream: FaultyUpstream, fault: str) -> None:
    error_type, phase, partial = STREAM_FAULTS[fault]
    upstream.faults.append(fault)
    started = time.monotonic()
    with pytest.raises(error_type) as info:
        await consume(provider)
    elapsed = time.monotonic() - started
    if phase is not None:
        assert isinstance(info.value, ProviderTimeoutError)
        assert info.value.phase == phase
        limit = TIMEOUTS.first_byte if phase == "first_byte" else TIMEOUTS.between_chunks
        assert limit is not None
        assert elapsed < limit + 1.0, f"{fault}: raised after {elapsed:.2f} s"
    assert info.value.partial_content == partial
    assert info.value.provider == provider.name
    # The failed connection is not kept; the provider still answers.
    assert open_connections(provider) <= 1
    assert "".join(await consume(provider)) == PIECE * 5
    assert await upstream.wait_idle()
    assert_clean()


@pytest.mark.parametrize(("status", "error_type", "retry_after"), [
    ("429", RateLimitError, 2.0),
    ("503", ServerBusyError, 2.0),
    ("500", ServerError, None),
    ("529", ServerBusyError, None),
])
async def test_status_fault_raises_typed_error(provider: Provider, upstream: FaultyUpstream,
                                               status: str, error_type: type[ProviderError],
                                               retry_after: float | None) -> None:
    upstream.faults.append(status)
    with pytest.raises(error_type) as info:
        await consume(provider)
    assert info.value.retriable
    assert getattr(info.value, "status_code", None) == int(status)
    if retry_after is not None:
        assert getattr(info.value, "retry_after", None) == retry_after
        assert str(info.value).endswith("(retry after 2 s)")  # the user is told how long
    assert open_connections(provider) <= 1
    assert_clean()


async def test_refused_connection(provider_name: str) -> None:
    provider = PROVIDERS[provider_name](closed_port_url())
    started = time.monotonic()
    with pytest.raises(ProviderConnectionError):
        await consume(provider)
    assert time.monotonic() - started < 2.0
    await provider.aclose()
    assert_clean()


async def test_consumer_stopping_early_closes_upstream(provider: Provider,
                                                       upstream: FaultyUpstream) -> None:
    """Leaving a stream after one chunk closes its connection; the server sees it."""
    upstream.faults.append("stall_mid")
    stream = provider.chat(MESSAGES, model="fault")
    async for chunk in stream:
        if chunk.content:
            break
    await stream.aclose()
    assert await upstream.wait_idle(2.0), "the upstream still serves the abandoned stream"
    assert upstream.disconnects == 1
    assert open_connections(provider) == 0
    assert_clean()


async def test_cancelled_consumer_closes_upstream_promptly(provider: Provider,
                                                           upstream: FaultyUpstream) -> None:
    upstream.faults.append("stall_mid")
    got_chunk = asyncio.Event()

    async def reader() -> None:
        async for chunk in provider.chat(MESSAGES, model="fault"):
            if chunk.content:
                got_chunk.set()

    task = asyncio.create_task(reader())
    await asyncio.wait_for(got_chunk.wait(), 2)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await upstream.wait_idle(1.0)
    assert time.monotonic() - started < 1.0
    assert open_connections(provider) == 0
    assert_clean()


async def test_no_unclosed_warnings_after_faults(provider_name: str,
                                                 upstream: FaultyUpstream) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        provider = PROVIDERS[provider_name](upstream.url)
        for fault in ("ok", "reset", "stall_mid", "503", "error_event", "ok"):
            upstream.faults.append(fault)
            with contextlib.suppress(ProviderError):
                await consume(provider)
        await provider.aclose()
        del provider
        gc.collect()
        await asyncio.sleep(0)
    unclosed = [w for w in caught if "nclosed" in str(w.message)]
    assert not unclosed, [str(w.message) for w in unclosed]
    assert_clean()


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    import resource

    return pages * resource.getpagesize() / 2**20


@pytest.mark.slow
async def test_memory_stays_flat_over_many_requests_with_faults(provider_name: str) -> None:
    """Up to 10,000 requests (bounded to 40 s per provider) with faults mixed in."""
    if provider_name in SOAKED_AS:
        pytest.skip(f"{provider_name} streams through {SOAKED_AS[provider_name]}'s code, "
                    "soaked there")
    async with FaultyUpstream(chunks=5, tail_delay=0) as upstream:
        await _soak(provider_name, upstream)


async def _soak(provider_name: str, upstream: FaultyUpstream) -> None:
    provider = PROVIDERS[provider_name](upstream.url)
    mix = ["ok"] * 14 + ["503", "error_event", "reset", "malformed", "429", "no_end"]
    deadline = time.monotonic() + 40
    baseline = 0.0
    done = 0
    for i in range(10_000):
        upstream.faults.append(mix[i % len(mix)])
        with contextlib.suppress(ProviderError):
            await consume(provider)
        done += 1
        if i == 1000:
            gc.collect()
            baseline = _rss_mb()
        if time.monotonic() > deadline:
            break
    gc.collect()
    grown = _rss_mb() - baseline
    await provider.aclose()
    assert done > 1000
    assert grown < 15, f"RSS grew {grown:.1f} MB over {done - 1000} requests"
    assert open_connections(provider) == 0


# -- issue #8 ------------------------------------------------------------------------------------
SPELLINGS: dict[str, Any] = {
    "mapping": {"connect": 2, "first_byte": 0.6, "between_chunks": 0.4},
    "Timeouts": TIMEOUTS,
}


def address(provider_name: str, url: str) -> dict[str, Any]:
    """The keyword arguments that point a provider at the upstream ``url``."""
    if provider_name in ("openai", "huggingface"):
        return {"base_url": url + "/v1"}
    if provider_name in ("anthropic", "tgi"):
        return {"base_url": url}
    return {"host": url}


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
async def test_every_provider_takes_every_timeout_spelling(
        provider_name: str, upstream: FaultyUpstream, spelling: str) -> None:
    """One parser in the core: a mapping works for each HTTP provider, and is honoured."""
    provider = create_provider(provider_name, **address(provider_name, upstream.url),
                               timeouts=SPELLINGS[spelling])
    try:
        assert http_client(provider).timeouts == TIMEOUTS
        assert "".join(await consume(provider)) == PIECE * 5
        upstream.faults.append("stall_mid")
        started = time.monotonic()
        with pytest.raises(ProviderTimeoutError) as info:
            await consume(provider)
        assert info.value.phase == "between_chunks"
        assert time.monotonic() - started < 1.4
    finally:
        await provider.aclose()


def test_a_number_is_the_total_timeout(provider_name: str) -> None:
    provider = create_provider(provider_name, **address(provider_name, "http://127.0.0.1:1"),
                               timeouts=2)
    assert http_client(provider).timeouts == Timeouts(total=2.0)


async def test_no_stream_leaves_generators_for_the_garbage_collector(
        provider: Provider, upstream: FaultyUpstream) -> None:
    """Line readers and provider generators are closed explicitly, never by the event loop's
    finalizer (which shows up as hundreds of pending tasks after many streams)."""
    finalized: list[Any] = []
    hooks = sys.get_asyncgen_hooks()

    def counting_finalizer(agen: Any) -> None:
        finalized.append(agen.__qualname__)
        assert hooks.finalizer is not None
        hooks.finalizer(agen)

    sys.set_asyncgen_hooks(firstiter=hooks.firstiter, finalizer=counting_finalizer)
    try:
        for i in range(30):
            stream = provider.chat(MESSAGES, model="fault")
            if i % 3:
                assert "".join([c.content async for c in stream]) == PIECE * 5
            else:
                async for _ in stream:
                    break
                await stream.aclose()
            del stream
        gc.collect()
        await asyncio.sleep(0)
    finally:
        sys.set_asyncgen_hooks(firstiter=hooks.firstiter, finalizer=hooks.finalizer)
    assert finalized == []
    assert_clean()


@pytest.mark.parametrize("how", ["library timeout", "asyncio timeout"])
async def test_history_after_a_stall_is_the_same_either_way(upstream: FaultyUpstream,
                                                            how: str) -> None:
    from modelplex import ChatManager

    config = {"openai": {"base_url": upstream.url + "/v1", "api_key": "sk-x" * 5,
                         "timeouts": TIMEOUTS}}
    async def read(reply: Any) -> None:  # a streamed answer keeps its part (awaited: whole)
        async for _ in reply:
            pass

    async with ChatManager("openai:fault", provider_config=config) as chat:
        upstream.faults.append("stall_mid")
        if how == "library timeout":
            with pytest.raises(ProviderTimeoutError):
                await read(chat.send_message("hello"))
        else:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await read(chat.send_message("hello"))
        assert [(m.role.value, m.content, m.metadata) for m in chat.history] == [
            ("user", "hello", {}), ("assistant", (PIECE * 2).strip(), {
                "partial": True, "model": "openai:fault", "provider": "openai",
                "usage": None})]
        await chat.send_message("again")
        sent = upstream.chat_requests()[-1].json["messages"]
        assert [m["content"] for m in sent] == ["hello", (PIECE * 2).strip(), "again"]
