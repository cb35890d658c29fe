"""A long batch run moves what is alive out of the collector's scans (gc.freeze) and raises
the youngest generation's threshold for the rest of the run, and puts both back when the run
ends; a process that froze objects itself, or turned the collector off, is left as it is, and
so is a threshold it set higher."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from modelplex import batch
from modelplex.batch import running
from modelplex.config import parse_config
from modelplex.pool import ProviderPool
from modelplex.testing.upstream import FaultyUpstream


@pytest.fixture(autouse=True)
def _unfrozen(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(running, "FREEZE_AFTER", 3)
    gc.unfreeze()
    yield
    gc.unfreeze()


async def _seen(rows: int, concurrency: int = 2) -> list[tuple[int, tuple[int, int, int]]]:
    """(freeze count, threshold) when each result arrives."""
    async with FaultyUpstream() as up:
        config = parse_config({"providers": {"openai": {
            "base_url": up.url + "/v1", "api_key": "sk-gc-test-123456"}}}, source="t.toml")
        seen = []
        async for result in batch.run([{"id": i, "prompt": f"q{i}"} for i in range(rows)],
                                      model="openai:fault", concurrency=concurrency,
                                      config=config, pool=ProviderPool()):
            assert result.ok
            seen.append((gc.get_freeze_count(), gc.get_threshold()))
        return seen


async def _frozen_counts(rows: int) -> list[int]:
    return [count for count, _ in await _seen(rows)]


async def test_a_long_run_freezes_after_its_first_results_and_thaws_at_its_end() -> None:
    seen = await _frozen_counts(6)
    assert seen[:2] == [0, 0] and all(count > 0 for count in seen[2:])
    assert gc.get_freeze_count() == 0


async def test_a_short_run_never_freezes() -> None:
    assert await _frozen_counts(2) == [0, 0]
    assert gc.get_freeze_count() == 0


async def test_the_callers_own_freeze_and_a_disabled_collector_are_left_alone() -> None:
    gc.freeze()
    before = gc.get_freeze_count()
    seen = await _frozen_counts(5)
    # neither frozen again (more objects) nor thawed (none); frozen objects freed leave it
    assert all(0 < count <= before for count in seen)
    assert 0 < gc.get_freeze_count() <= before
    gc.unfreeze()
    gc.disable()
    try:
        assert set(await _frozen_counts(5)) == {0}
    finally:
        gc.enable()
    assert gc.get_freeze_count() == 0


async def test_a_long_run_raises_the_young_threshold_and_puts_it_back() -> None:
    before = gc.get_threshold()
    gc.set_threshold(700, before[1], before[2])
    try:
        seen = await _seen(6, concurrency=8)
        young = [threshold[0] for _, threshold in seen]
        assert young[:2] == [700, 700]
        assert all(value == 8 * running.YOUNG_PER_ROW for value in young[2:])
        assert gc.get_threshold() == (700, before[1], before[2])
        gc.set_threshold(50_000, before[1], before[2])  # the process's own, higher: kept
        assert {threshold for _, threshold in await _seen(5, concurrency=8)} == {
            (50_000, before[1], before[2])}
        assert gc.get_threshold() == (50_000, before[1], before[2])
    finally:
        gc.set_threshold(*before)
