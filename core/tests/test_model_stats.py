"""Seed 000's ``ModelStats`` for every model: a plain ``provider:model`` and a named model
both count their requests, tokens, latency and errors through the one request path, and the
counts outlive a lease."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

import modelplex
from modelplex import ChatManager
from modelplex.config import Config, set_config
from modelplex.errors import StreamError
from modelplex.pipeline import open_model
from modelplex.plugins import Plugins
from modelplex.stats import (
    ModelStats,
    all_model_stats,
    model_stats,
    reset_model_stats,
    stats_for,
)


@pytest.fixture(autouse=True)
def fresh_stats() -> Iterator[None]:
    reset_model_stats()
    yield
    reset_model_stats()


async def test_a_plain_model_has_stats_across_leases(fake_plugins: Plugins) -> None:
    assert model_stats("fake:echo") is None  # nothing served yet
    for _ in range(2):  # two managers: two leases, one count
        async with ChatManager("fake:echo", plugins=fake_plugins, config=Config()) as chat:
            await chat.get_response_with_meta("What is the capital of France?")
    stats = model_stats("fake:echo")
    assert stats is not None
    assert (stats.requests, stats.successes, stats.error_rate) == (2, 2, 0.0)
    assert stats.completion_tokens == 12 and stats.total_tokens == (
        stats.prompt_tokens + stats.completion_tokens)
    assert stats.average_latency > 0
    assert stats.to_dict() == {"tokens": stats.total_tokens, "latency": stats.average_latency,
                               "errors": 0.0}
    assert modelplex.ModelStats is ModelStats
    assert set(all_model_stats()) == {"fake:echo"}


async def test_failures_count_in_the_error_rate(fake_plugins: Plugins) -> None:
    async with ChatManager("fake:echo", plugins=fake_plugins, config=Config(),
                           provider_config={"fake": {"fail_after": 1}}) as chat:
        with pytest.raises(StreamError):
            await chat.get_response_with_meta("hi")
    lease = await open_model("fake:echo", plugins=fake_plugins, config=Config(),
                             provider_config={"fake": {"fail_after": 1}})
    async with lease:  # the same model and configuration: the same counts
        assert lease.base.stats()["requests"] == 1  # type: ignore[attr-defined]
    stats = model_stats("fake:echo")
    assert stats is not None and (stats.requests, stats.successes) == (1, 0)
    assert stats.error_rate == 1.0 and stats.average_latency == 0.0


async def test_a_named_model_keeps_its_stats(fake_plugins: Plugins) -> None:
    config = Config.model_validate({"models": {"fast": {"model": "fake:echo"}}})
    for _ in range(3):
        async with ChatManager("fast", plugins=fake_plugins, config=config) as chat:
            await chat.get_response_with_meta("hi")
    stats = model_stats("fast")
    assert stats is not None and stats.requests == 3 and stats.error_rate == 0.0


def test_the_kept_models_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import modelplex.stats

    monkeypatch.setattr(modelplex.stats, "MAX_MODELS", 3)
    for i in range(5):
        stats_for(f"p:m{i}").success(0.1, None, None)
    assert set(all_model_stats()) == {"p:m2", "p:m3", "p:m4"}


def test_cli_stats_of_a_plain_model(fake_plugins: Plugins, monkeypatch: pytest.MonkeyPatch
                                    ) -> None:
    import json

    from modelplex.cli import cli
    from modelplex.plugins import set_plugins

    old_plugins = set_plugins(fake_plugins)
    old_config = set_config(Config())
    try:
        result = CliRunner().invoke(cli, ["stats", "-m", "fake:echo", "-p", "hi", "-n", "2",
                                           "--json"])
    finally:
        set_plugins(old_plugins)
        set_config(old_config)
    assert result.exit_code == 0, result.output
    [entry] = json.loads(result.output)
    assert entry["model"] == "fake:echo" and entry["requests"] == 2
    assert entry["completion_tokens"] == 12




def test_cli_stats_text_shows_a_dash_for_what_was_not_measured(
        fake_plugins: Plugins) -> None:
    """No ``None ms``: a model without requests (or without streams) shows ``-``."""
    from modelplex.cli import cli
    from modelplex.plugins import set_plugins

    old_plugins = set_plugins(fake_plugins)
    old_config = set_config(Config())
    try:
        result = CliRunner().invoke(cli, ["stats", "-m", "fake:echo", "-p", "hi", "-n", "2"])
    finally:
        set_plugins(old_plugins)
        set_config(old_config)
    assert result.exit_code == 0, result.output
    assert "None" not in result.output
    assert "TTFT p50 -" in result.output
    assert re.search(r"latency p50 \d+\.\d ms p99 \d+\.\d ms", result.output), result.output
