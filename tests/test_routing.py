"""The router over real sockets: named models of a config, served by FaultyUpstream servers.

Every rule of modelplex.routing is driven by a real fault on a real HTTP upstream (the
openai provider talking to modelplex.testing's fault server): failover on 429/503 with
Retry-After, the listing error within the budget, the streaming rule, no retry of a 401,
cooldown expiry, weights, max_concurrency under load, and fallbacks.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from modelplex import ChatManager
from modelplex.config import Config, parse_config
from modelplex.errors import (
    AuthenticationError,
    ProviderTimeoutError,
    RoutingError,
    ServerBusyError,
    StreamError,
)
from modelplex.http import Timeouts
from modelplex.pipeline import open_model, release_model
from modelplex.pool import ProviderPool
from modelplex.routing import Deployment, MemoryState, Router, RouterState
from modelplex.testing import Cli
from modelplex.testing.upstream import PIECE, FaultyUpstream, closed_port_url

TIMEOUTS = Timeouts(connect=2.0, first_byte=2.0, between_chunks=0.4, total=None)
MESSAGES = [{"role": "user", "content": "hello"}]
ANSWER = PIECE * 5


def deployment(url: str, **extra: Any) -> dict[str, Any]:
    """One openai-protocol deployment on ``url``."""
    return {"model": "openai:fault", "base_url": url + "/v1",
            "api_key": "sk-routing-test-secret-123456", "timeouts": TIMEOUTS, **extra}


def config(models: dict[str, Any], **tables: Any) -> Config:
    return parse_config({"models": models, **tables}, source="test.toml")


@pytest.fixture
async def two() -> AsyncIterator[tuple[FaultyUpstream, FaultyUpstream]]:
    async with FaultyUpstream() as a, FaultyUpstream() as b:
        yield a, b


@pytest.fixture
def pool() -> ProviderPool:
    return ProviderPool()


async def ask(router: Any, text: str = "hello") -> tuple[str, Any]:
    chunks = [c async for c in router.chat([{"role": "user", "content": text}], model="")]
    return "".join(c.content for c in chunks), chunks[0].route


async def test_retry_after_7_fails_over_at_once_and_cools_down(
        two: tuple[FaultyUpstream, FaultyUpstream], pool: ProviderPool) -> None:
    a, b = two
    cfg = config({"duo": {"deployments": [deployment(a.url), deployment(b.url)]}})
    router, _ = await open_model("duo", config=cfg, pool=pool)
    try:
        a.faults.append("503:7")
        start = time.perf_counter()
        text, route = await ask(router)
        assert time.perf_counter() - start < 1.0
        assert text == ANSWER
        assert (route.deployment, route.attempts) == ("openai:fault#2", 2)
        assert a.requests == 1 and b.requests == 1
        # a is cooling for 7 s: the next requests all go to b, none to a
        for _ in range(4):
            text, route = await ask(router)
            assert route.attempts == 1
        assert a.requests == 1
        assert b.requests == 5
        stats = router.stats()  # type: ignore[attr-defined]
        assert stats["requests"] == 5 and stats["errors"] == {}
        assert sum(d["errors"].get("ServerBusyError", 0)
                   for d in stats["deployments"].values()) == 1
    finally:
        await release_model(router, pool=pool)


async def test_429_on_one_deployment_is_answered_by_the_other(
        two: tuple[FaultyUpstream, FaultyUpstream], pool: ProviderPool) -> None:
    a, b = two
    cfg = config({"duo": {"deployments": [deployment(a.url), deployment(b.url)]}})
    router, _ = await open_model("duo", config=cfg, pool=pool)
    try:
        a.faults.append("429:7")
        start = time.perf_counter()
        async with ChatManager("duo", config=cfg, pool=pool) as chat:
            meta = await chat.get_response_with_meta("hi")
        assert time.perf_counter() - start < 1.0
        assert meta.content == ANSWER.strip() or meta.content == ANSWER
        assert meta.attempts == 2
        assert meta.provider == "openai"
    finally:
        await release_model(router, pool=pool)


async def test_every_deployment_failing_lists_each_attempt_within_the_budget(
        two: tuple[FaultyUpstream, FaultyUpstream], pool: ProviderPool) -> None:
    a, b = two
    cfg = config({"duo": {"deployments": [deployment(a.url), deployment(b.url)],
                          "retries": {"attempts": 3, "timeout": 2.0, "backoff": 0.05}}})
    a.faults.extend(["500"] * 5)
    b.faults.extend(["500"] * 5)
    router, _ = await open_model("duo", config=cfg, pool=pool)
    try:
        start = time.perf_counter()
        with pytest.raises(RoutingError) as info:
            await ask(router)
        assert time.perf_counter() - start < 2.0
        err = info.value
        assert len(err.attempts) == 3
        assert a.requests + b.requests == 3
        assert str(err).count("ServerError (HTTP 500)") == 3
        assert "all 3 attempts failed" in str(err)
        assert err.__cause__ is err.attempts[-1][1]
        assert "sk-routing-test-secret" not in str(err)
    finally:
        await release_model(router, pool=pool)


async def test_all_cooling_fails_fast_with_retry_after(pool: ProviderPool) -> None:
    async with FaultyUpstream() as a:
        cfg = config({"one": {"deployments": [deployment(a.url)],
                              "retries": {"timeout": 1.0}}})
        a.faults.append("503:7")
        router, _ = await open_model("one", config=cfg, pool=pool)
        try:
            start = time.perf_counter()
            with pytest.raises(RoutingError) as info:
                await ask(router)
            assert time.perf_counter() - start < 0.5  # 7 s does not fit a 1 s budget
            assert isinstance(info.value.attempts[0][1], ServerBusyError)
            with pytest.raises(RoutingError, match="cooling down"):
                await ask(router)  # the single deployment is cooling: not retried again
            assert a.requests == 1
        finally:
            await release_model(router, pool=pool)


@pytest.mark.parametrize("fault", ["reset", "stall_mid"])
async def test_failure_after_the_first_chunk_keeps_the_partial_answer_and_stops(
        two: tuple[FaultyUpstream, FaultyUpstream], pool: ProviderPool, fault: str) -> None:
    a, b = two
    cfg = config({"duo": {"deployments": [deployment(a.url), deployment(b.url)]}})
    a.faults.append(fault)
    router, _ = await open_model("duo", config=cfg, pool=pool)
    try:
        received: list[str] = []
        with pytest.raises((StreamError, ProviderTimeoutError)) as info:
            async for chunk in router.chat(MESSAGES, model=""):
                received.append(chunk.content)
        assert "".join(received) == PIECE * 2
        assert info.value.partial_content == PIECE * 2
        assert a.requests + b.requests == 1  # no second request: nothing spliced
    finally:
        await release_model(router, pool=pool)


async def test_401_is_not_retried(two: tuple[FaultyUpstream, FaultyUpstream],
                                  pool: ProviderPool) -> None:
    a, b = two
    cfg = config({"duo": {"deployments": [deployment(a.url), deployment(b.url)]}})
    a.faults.append("401")
    router, _ = await open_model("duo", config=cfg, pool=pool)
    try:
        with pytest.raises(AuthenticationError, match=r"(?i)invalid api key"):
            await ask(router)
        assert a.requests + b.requests == 1
    finally:
        await release_model(router, pool=pool)


async def test_cooldown_expires_and_the_deployment_returns(
        two: tuple[FaultyUpstream, FaultyUpstream], pool: ProviderPool) -> None:
    a, b = two
    cfg = config({"duo": {"deployments": [deployment(a.url), deployment(b.url)]}})
    a.faults.append("503:0.3")
    router, _ = await open_model("duo", config=cfg, pool=pool)
    try:
        await ask(router)
        for _ in range(3):
            await ask(router)
        assert a.requests == 1  # cooling
        await asyncio.sleep(0.35)
        for _ in range(4):
            await ask(router)
        assert a.requests == 3  # back in the rotation: round robin gives it half
    finally:
        await release_model(router, pool=pool)


async def test_weights_converge() -> None:
    async with FaultyUpstream() as up:
        cfg = config({"w": {"strategy": "weighted", "deployments": [
            deployment(up.url, name="heavy", weight=3), deployment(up.url, name="light")]}})
        pool = ProviderPool()
        router, _ = await open_model("w", config=cfg, pool=pool)
        try:
            assert isinstance(router, Router)
            picks = Counter(router.strategy.choose(router.deployments).label
                            for _ in range(4000))
            assert abs(picks["heavy"] / 4000 - 0.75) <= 0.75 * 0.05
            served = Counter()
            for _ in range(40):
                served[(await ask(router))[1].deployment] += 1
            assert served == {"heavy": 30, "light": 10}
        finally:
            await release_model(router, pool=pool)


async def test_max_concurrency_is_never_exceeded_under_500_requests(pool: ProviderPool) -> None:
    async with FaultyUpstream(chunks=3) as a, FaultyUpstream(chunks=3) as b:
        cfg = config({"capped": {"strategy": "least_busy", "deployments": [
            deployment(a.url, max_concurrency=5), deployment(b.url, max_concurrency=3)]}})
        for up in (a, b):
            up.faults.extend(["delay:0.01"] * 600)
        router, _ = await open_model("capped", config=cfg, pool=pool)
        try:
            results = await asyncio.gather(*(ask(router) for _ in range(500)))
            assert all(text == PIECE * 3 for text, _ in results)
            assert a.peak_active <= 5 and b.peak_active <= 3
            assert a.requests + b.requests == 500
            assert a.requests > 100 and b.requests > 100  # the queue is spread too
        finally:
            await release_model(router, pool=pool)


async def test_fallback_to_another_named_model_when_the_group_is_down(
        pool: ProviderPool) -> None:
    async with FaultyUpstream() as backup:
        cfg = config({
            "main": {"deployments": [deployment(closed_port_url()),
                                     deployment(closed_port_url())],
                     "fallbacks": ["backup"]},
            "backup": {"deployments": [deployment(backup.url, name="backup-box")]},
        })
        async with ChatManager("main", config=cfg, pool=pool) as chat:
            meta = await chat.get_response_with_meta("hi")
            assert meta.deployment == "backup-box"
            assert meta.attempts == 3  # two refused connections, then the fallback
            start = time.perf_counter()
            meta = await chat.get_response_with_meta("again")  # main is cooling: straight on
            assert time.perf_counter() - start < 0.5
            assert (meta.deployment, meta.attempts) == ("backup-box", 1)
            assert len(chat.history) == 4


class BrokenState(RouterState):
    """A state backend whose every call fails (a Redis server that went away)."""

    async def start_cooldown(self, key: str, seconds: float) -> None:
        raise ConnectionError("state backend is down")

    async def cooldowns(self, keys: Any) -> dict[str, float]:
        raise ConnectionError("state backend is down")

    async def add_in_flight(self, key: str, delta: int) -> None:
        raise ConnectionError("state backend is down")

    async def in_flight(self, keys: Any) -> dict[str, int]:
        raise ConnectionError("state backend is down")

    async def take_rate_slot(self, key: str, limit: int, window: float = 60.0) -> float:
        raise ConnectionError("state backend is down")


async def test_a_failing_state_backend_never_fails_a_request(
        two: tuple[FaultyUpstream, FaultyUpstream]) -> None:
    a, b = two
    from modelplex import create_provider

    providers = [create_provider("openai", base_url=up.url + "/v1", api_key="sk-x-12345678",
                                 timeouts=TIMEOUTS) for up in (a, b)]
    router = Router("r", [Deployment(p, "fault", rpm=100, key=f"k{i}")
                          for i, p in enumerate(providers)],
                    strategy="least_busy", state=BrokenState())
    async with router:
        a.faults.append("503")
        text, route = await ask(router)
        assert text == ANSWER and route.attempts == 2


async def test_rpm_limit_is_respected_without_busy_waiting() -> None:
    async with FaultyUpstream() as a:
        from modelplex import create_provider

        provider = create_provider("openai", base_url=a.url + "/v1", api_key="sk-x-12345678",
                                   timeouts=TIMEOUTS)
        state = MemoryState()
        router = Router("r", [Deployment(provider, "fault", rpm=2)], state=state)
        async with router:
            await ask(router)
            await ask(router)
            with pytest.raises(RoutingError, match="rate limit"):
                await ask(router)  # the next slot frees in 60 s: beyond the 30 s budget
            assert a.requests == 2


async def test_latency_strategy_prefers_the_faster_deployment(pool: ProviderPool) -> None:
    async with FaultyUpstream() as slow, FaultyUpstream() as fast:
        slow.faults.extend(["delay:0.15"] * 20)
        cfg = config({"lat": {"strategy": "latency", "deployments": [
            deployment(slow.url, name="slow"), deployment(fast.url, name="fast")]}})
        router, _ = await open_model("lat", config=cfg, pool=pool)
        try:
            served = Counter([(await ask(router))[1].deployment for _ in range(10)])
            assert served == {"slow": 1, "fast": 9}  # each tried once, then the fastest
        finally:
            await release_model(router, pool=pool)


async def test_a_hanging_deployment_times_out_and_the_other_answers(pool: ProviderPool) -> None:
    async with FaultyUpstream() as a, FaultyUpstream() as b:
        quick = Timeouts(connect=1.0, first_byte=0.3, between_chunks=0.3)
        cfg = config({"duo": {"deployments": [deployment(a.url, timeouts=quick, name="a"),
                                              deployment(b.url, timeouts=quick, name="b")]}})
        a.faults.append("stall_headers")
        router, _ = await open_model("duo", config=cfg, pool=pool)
        try:
            start = time.perf_counter()
            text, route = await ask(router)
            assert time.perf_counter() - start < 1.0
            assert (text, route.deployment, route.attempts) == (ANSWER, "b", 2)
        finally:
            await release_model(router, pool=pool)


async def test_tool_loop_and_structured_output_through_a_named_model(pool: ProviderPool) -> None:
    from modelplex.testing import Reply

    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    async with FaultyUpstream() as up, FaultyUpstream() as busy:
        busy.faults.extend(["503:7"] * 5)
        cfg = config({"m": {"deployments": [deployment(busy.url, name="busy"),
                                            deployment(up.url, name="scripted")]}})
        up.replies.extend([Reply(tool_calls=[{"name": "add", "arguments": {"a": 1, "b": 2}}]),
                           Reply("The sum is 3."), Reply('{"answer": 3}')])
        async with ChatManager("m", config=cfg, pool=pool) as chat:
            meta = await chat.get_response_with_meta("What is 1 + 2?", tools=[add])
            assert meta.content == "The sum is 3."
            assert meta.deployment == "scripted"
            assert up.bodies[1]["messages"][-1]["role"] == "tool"
            result = await chat.get_structured("Answer as JSON.", {"type": "object"})
            assert result.value == {"answer": 3}
        assert busy.requests == 1  # cooling after its 503: the rest went straight on


async def test_a_fallback_cycle_does_not_depend_on_opening_order() -> None:
    """Issue 19 #8: with a -> b -> a, opening a first must not publish a b without its
    fallback under b's own pool key."""
    async with FaultyUpstream() as up:
        cfg = parse_config({
            "providers": {"openai": {"api_key": "sk-local-test-key",
                                     "base_url": up.url + "/v1"}},
            "models": {"a": {"model": "openai:fault", "fallbacks": ["b"]},
                       "b": {"model": "openai:fault", "fallbacks": ["a"]}}})
        pool = ProviderPool()
        first = await open_model("a", config=cfg, pool=pool)
        second = await open_model("b", config=cfg, pool=pool)
        try:
            assert [r.name for r in first.base.chain] == ["a", "b"]  # type: ignore[attr-defined]
            assert [r.name for r in second.base.chain] == ["b", "a"]  # type: ignore[attr-defined]
        finally:
            await first.release()
            await second.release()
        assert pool.shared() == []


async def test_a_whole_answer_fails_over_too(two: tuple[FaultyUpstream, FaultyUpstream],
                                             pool: ProviderPool) -> None:
    """complete_request goes through the router: retries and failover for non-streaming."""
    a, b = two
    cfg = config({"duo": {"deployments": [deployment(a.url), deployment(b.url)]}})
    async with await open_model("duo", config=cfg, pool=pool) as lease:
        a.faults.append("503:7")
        reply = await lease.provider.complete([{"role": "user", "content": "hello"}],
                                              model=lease.model)
        assert reply.content == ANSWER
        assert (reply.route.deployment, reply.route.attempts) == ("openai:fault#2", 2)
        assert [r.json.get("stream") for r in (*a.chat_requests(), *b.chat_requests())] \
            == [None, None]  # the providers' non-streaming request, twice


# -- issue 19 #5: a Retry-After of inf, 1e400 or a date in 2099 never cools a deployment forever
@pytest.mark.parametrize("value", ["inf", "1e400", "99999999999", "Thu, 01 Jan 2099 00:00:00 GMT"])
async def test_a_huge_retry_after_cools_down_only_for_max_retry_after(
        two: tuple[FaultyUpstream, FaultyUpstream], pool: ProviderPool, value: str) -> None:
    from modelplex.config import set_config

    a, b = two
    cfg = config({"duo": {"deployments": [deployment(a.url), deployment(b.url)]}},
                 max_retry_after=1)
    old = set_config(cfg)
    router, _ = await open_model("duo", config=cfg, pool=pool)
    try:
        a.faults.append(f"429:{value}")
        text, route = await ask(router)
        assert text == ANSWER and route.attempts == 2
        keys = [d.key for d in router.deployments]  # type: ignore[attr-defined]
        cooling = await router.state.cooldowns(keys)  # type: ignore[attr-defined]
        assert list(cooling.values()) and max(cooling.values()) <= 1.0
        await asyncio.sleep(1.1)
        for _ in range(2):  # cooled down: round robin reaches a again
            await ask(router)
        assert a.requests == 2
    finally:
        set_config(old)
        await release_model(router, pool=pool)


def test_the_servers_error_path_survives_an_infinite_retry_after() -> None:
    from modelplex.errors import RateLimitError
    from modelplex_server.errors import from_exception

    for cls in (RateLimitError, ServerBusyError):
        api = from_exception(cls("busy", retry_after=float("inf")))
        assert api.headers == {"Retry-After": "300"}


# -- issue 19 #7: retries.timeout bounds each attempt, a hung one included ----------------------
SLOW_TIMEOUTS = Timeouts(connect=30.0, first_byte=30.0, between_chunks=30.0, total=None)


@pytest.mark.parametrize("streaming", [True, False], ids=["stream", "complete"])
async def test_the_budget_cancels_a_hung_attempt(pool: ProviderPool, streaming: bool) -> None:
    async with FaultyUpstream() as a:
        cfg = config({"one": {"deployments": [deployment(a.url, timeouts=SLOW_TIMEOUTS)],
                              "retries": {"timeout": 1.0}}})
        a.faults.append("hang")
        router, _ = await open_model("one", config=cfg, pool=pool)
        try:
            start = time.monotonic()
            with pytest.raises(RoutingError) as info:
                if streaming:
                    await ask(router)
                else:
                    await router.complete(MESSAGES, model="")
            elapsed = time.monotonic() - start
            # the provider's own timeouts are 30 s: only the budget can end it this soon
            assert 0.9 <= elapsed < 10, elapsed
            assert "the retry budget of 1 s (retries.timeout) ran out" in str(info.value)
            timeout = info.value.attempts[-1][1]
            assert isinstance(timeout, ProviderTimeoutError) and timeout.phase == "total"
            assert info.value.__cause__ is timeout
            assert await a.wait_idle(5)  # the hung request was closed, not left behind
            assert a.disconnects == 1
        finally:
            await release_model(router, pool=pool)


async def test_the_cli_ends_when_the_budget_does(tmp_path: Any) -> None:
    async with FaultyUpstream() as a:
        conf = tmp_path / "config.toml"
        conf.write_text(f"""
[models.hung]
deployments = [{{ model = "openai:fault", base_url = "{a.url}/v1" }}]
retries = {{ timeout = 2 }}
""")
        a.faults.append("hang")
        cli = Cli(conf, env={"MODELPLEX_LOAD_PLUGINS": "openai",
                             "OPENAI_API_KEY": "sk-dummy-0123456789"})
        async with cli.start("chat", "-m", "hung", "--no-log", "hi") as proc:
            async with asyncio.timeout(60):  # the process has started when the request came
                while not a.requests:  # noqa: ASYNC110 - a counter of the upstream, no event
                    await asyncio.sleep(0.02)
            asked = time.monotonic()
            _, err = await asyncio.wait_for(proc.communicate(), 60)
            elapsed = time.monotonic() - asked
    assert proc.returncode == 1, err
    assert err.decode().startswith("Error: model 'hung': the retry budget of 2 s")
    assert elapsed < 5, elapsed  # the budget (2 s) and the exit; 8.9 s before the fix
