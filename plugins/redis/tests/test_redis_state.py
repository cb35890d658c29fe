"""The ``redis`` router state against a real redis-server: the RouterState contract, sharing
between instances, and Redis stopped and restarted mid-run."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import redis

from modelplex.errors import ConfigurationError, PluginError
from modelplex.routing import MemoryState, RouterState, open_state
from modelplex_redis.state import RedisState


@pytest.fixture(params=["memory", "redis"])
async def state(request: pytest.FixtureRequest, redis_url: str) -> Any:
    backend: RouterState = MemoryState() if request.param == "memory" else RedisState(redis_url)
    yield backend
    await backend.aclose()


# -- the contract, the same as MemoryState's --------------------------------------------------
async def test_cooldown_expires_and_is_never_shortened(state: RouterState) -> None:
    await state.start_cooldown("a", 0.3)
    await state.start_cooldown("a", 0.01)
    left = await state.cooldowns(["a", "b"])
    assert set(left) == {"a"}
    assert 0.15 < left["a"] <= 0.3
    await asyncio.sleep(0.35)
    assert await state.cooldowns(["a"]) == {}


async def test_in_flight_counts_never_go_negative(state: RouterState) -> None:
    await state.add_in_flight("a", 1)
    await state.add_in_flight("a", 1)
    await state.add_in_flight("b", -1)
    assert await state.in_flight(["a", "b", "c"]) == {"a": 2, "b": 0, "c": 0}


async def test_rate_window(state: RouterState) -> None:
    assert await state.take_rate_slot("a", 2, window=0.3) == 0.0
    assert await state.take_rate_slot("a", 2, window=0.3) == 0.0
    wait = await state.take_rate_slot("a", 2, window=0.3)
    assert 0.0 < wait <= 0.3
    await asyncio.sleep(wait + 0.02)
    assert await state.take_rate_slot("a", 2, window=0.3) == 0.0


# -- shared between instances (processes are in test_two_processes.py) --------------------------
async def test_instances_share_cooldowns_counts_and_rates(redis_url: str) -> None:
    a = RedisState(redis_url, sync_interval=0.05)
    b = RedisState(redis_url, sync_interval=0.05)
    await a.start_cooldown("dep-1", 30)
    left = await b.cooldowns(["dep-1", "dep-2"])
    assert set(left) == {"dep-1"} and 29 < left["dep-1"] <= 30

    await a.add_in_flight("dep-2", 1)
    await a.add_in_flight("dep-2", 1)
    await b.add_in_flight("dep-2", 1)
    await asyncio.sleep(0.1)  # the counts are written in the background; b syncs every 50 ms
    assert await b.in_flight(["dep-2"]) == {"dep-2": 3}
    assert await a.in_flight(["dep-2"]) == {"dep-2": 3}
    await a.add_in_flight("dep-2", -1)
    await asyncio.sleep(0.1)
    assert await b.in_flight(["dep-2"]) == {"dep-2": 2}
    await a.aclose()  # its counts leave with it
    await asyncio.sleep(0.1)
    assert await b.in_flight(["dep-2"]) == {"dep-2": 1}

    c = RedisState(redis_url)
    assert await b.take_rate_slot("dep-3", 3) == 0.0
    assert await c.take_rate_slot("dep-3", 3) == 0.0
    assert await b.take_rate_slot("dep-3", 3) == 0.0
    assert 59 < await c.take_rate_slot("dep-3", 3) <= 60  # the limit holds for both
    await b.aclose()
    await c.aclose()


async def test_registered_as_a_state_backend(redis_url: str) -> None:
    state = open_state({"backend": "redis", "url": redis_url, "sync_interval": 0.5})
    assert isinstance(state, RedisState) and state.sync_interval == 0.5
    await state.aclose()
    assert isinstance(open_state(None), MemoryState)
    with pytest.raises(ConfigurationError, match="state backend 'redis' could not be "
                                                 "configured with colour, url"):
        open_state({"backend": "redis", "url": redis_url, "colour": "red"})
    with pytest.raises(PluginError, match="no state backend named 'nope'"):
        open_state("nope")


# -- Redis stops and comes back ------------------------------------------------------------------
async def test_redis_stopped_and_restarted_mid_run(make_redis_server: Any,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    server = make_redis_server()
    a = RedisState(server.url, retry_interval=0.2, sync_interval=0.0)
    b = RedisState(server.url, retry_interval=0.2, sync_interval=0.0)
    await a.add_in_flight("x", 1)
    await asyncio.sleep(0.05)
    assert await b.in_flight(["x"]) == {"x": 1}

    server.stop()
    loop = asyncio.get_running_loop()
    start = loop.time()
    with caplog.at_level(logging.WARNING, logger="modelplex.redis"):
        for _ in range(50):  # the router keeps going on local state, and never waits long
            await a.start_cooldown("down-1", 60)
            assert "down-1" in await a.cooldowns(["down-1"])
            assert (await a.in_flight(["x"]))["x"] == 1
            await a.add_in_flight("x", 1)
            await a.add_in_flight("x", -1)
            assert await a.take_rate_slot("r", 1000) == 0.0
    assert loop.time() - start < 3.0
    warnings = [r for r in caplog.records if r.name == "modelplex.redis"]
    assert len(warnings) == 1  # one per outage and per state object that noticed it
    assert "unreachable" in warnings[0].getMessage()

    server.start()  # the same port, an empty server
    await asyncio.sleep(0.25)  # past the retry interval
    await a.cooldowns(["down-1"])  # the first call reconnects and re-sends running cooldowns
    await a.add_in_flight("x", 1)
    await asyncio.sleep(0.05)
    client = redis.Redis.from_url(server.url)
    assert client.pttl("modelplex:state:cool:down-1") > 50_000
    assert not a.link.down
    left = await b.cooldowns(["down-1"])
    assert 50 < left["down-1"] <= 60
    assert await b.in_flight(["x"]) == {"x": 2}  # a's absolute count, rewritten
    client.close()
    await a.aclose()
    await b.aclose()


async def test_the_config_files_state_table(redis_url: str) -> None:
    from modelplex.pipeline import state_from_config

    state = state_from_config({"backend": "redis", "url": redis_url, "sync_interval": 0.3})
    assert isinstance(state, RedisState) and state.sync_interval == 0.3
    await state.aclose()
    with pytest.raises(ConfigurationError, match=r"state\.backend = 'rediss' cannot be used: "
                                                 r"no state backend named 'rediss'"):
        state_from_config({"backend": "rediss"})


async def test_a_burst_of_more_commands_than_connections_is_not_an_outage(
        redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="modelplex.redis")
    state = RedisState(redis_url, max_connections=2, prefix="modelplex:burst:")
    other = RedisState(redis_url, prefix="modelplex:burst:")
    try:
        # 100 rate slots at once over 2 connections: they wait for a connection, in Redis
        waits = await asyncio.gather(*(state.take_rate_slot("burst", 100) for _ in range(100)))
        assert waits == [0.0] * 100
        assert not state.link.down
        assert not [r for r in caplog.records if "unreachable" in r.getMessage()]
        assert await other.take_rate_slot("burst", 100) > 0  # counted in Redis, not locally
    finally:
        await state.aclose()
        await other.aclose()
