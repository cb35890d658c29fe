"""MemoryState: the router's local state backend."""

from __future__ import annotations

import asyncio

from modelplex.routing import MemoryState


async def test_cooldown_expires_and_is_never_shortened() -> None:
    state = MemoryState()
    await state.start_cooldown("a", 0.2)
    await state.start_cooldown("a", 0.01)  # a shorter one does not shorten it
    left = await state.cooldowns(["a", "b"])
    assert set(left) == {"a"}
    assert 0.1 < left["a"] <= 0.2
    await asyncio.sleep(0.25)
    assert await state.cooldowns(["a"]) == {}


async def test_in_flight_counts_never_go_negative() -> None:
    state = MemoryState()
    await state.add_in_flight("a", 1)
    await state.add_in_flight("a", 1)
    await state.add_in_flight("b", -1)
    assert await state.in_flight(["a", "b", "c"]) == {"a": 2, "b": 0, "c": 0}


async def test_rate_window_refuses_past_the_limit_and_says_how_long() -> None:
    state = MemoryState()
    assert await state.take_rate_slot("a", 2, window=0.2) == 0.0
    assert await state.take_rate_slot("a", 2, window=0.2) == 0.0
    wait = await state.take_rate_slot("a", 2, window=0.2)
    assert 0.0 < wait <= 0.2
    await asyncio.sleep(wait + 0.01)
    assert await state.take_rate_slot("a", 2, window=0.2) == 0.0
