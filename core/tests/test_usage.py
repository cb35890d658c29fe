"""``modelplex usage`` / ``modelplex logs stats`` over a seeded log database."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from modelplex.cli import cli
from modelplex.errors import ConfigurationError
from modelplex.store.logs import Exchange, LogStore
from modelplex.usage import parse_since, usage_report

NOW = datetime.now(UTC)


def at(days: float) -> str:
    return (NOW - timedelta(days=days)).isoformat(timespec="milliseconds")


def seed(path: Path) -> None:
    store = LogStore(path)
    rows = [
        # two priced gpt-4o-mini answers today, one failed request
        Exchange(provider="openai", model="gpt-4o-mini", prompt="a", prompt_tokens=100,
                 completion_tokens=10, latency=1.0, time_to_first_token=0.2, cost=0.01,
                 cost_currency="USD", created_at=at(0.1)),
        Exchange(provider="openai", model="gpt-4o-mini", prompt="b", prompt_tokens=300,
                 completion_tokens=30, latency=3.0, time_to_first_token=0.4, cost=0.03,
                 cost_currency="USD", created_at=at(0.2)),
        Exchange(provider="openai", model="gpt-4o-mini", prompt="c", error="RateLimitError: 429",
                 latency=0.1, created_at=at(0.3)),
        # a local model: free; a cached answer
        Exchange(provider="llamacpp", model="smollm2", prompt="d", prompt_tokens=20,
                 completion_tokens=5, latency=0.5, time_to_first_token=0.05, cost=0.0,
                 cost_currency="USD", created_at=at(1.5)),
        Exchange(provider="llamacpp", model="smollm2", prompt="e", prompt_tokens=20,
                 completion_tokens=5, latency=0.01, cached=True, cost=0.0,
                 cost_currency="USD", created_at=at(1.6)),
        # an unknown price: a private model nobody priced
        Exchange(provider="openai", model="my-finetune", prompt="f", prompt_tokens=50,
                 completion_tokens=5, latency=2.0, created_at=at(2.5)),
        # old: outside 7 days
        Exchange(provider="openai", model="gpt-4o-mini", prompt="g", prompt_tokens=1000,
                 completion_tokens=100, latency=1.0, cost=1.0, cost_currency="USD",
                 created_at=at(30)),
    ]
    for row in rows:
        store.record_sync(row)
    store.close()


def test_usage_by_model_over_the_last_week(tmp_path: Path) -> None:
    seed(tmp_path / "logs.db")
    store = LogStore(tmp_path / "logs.db")
    try:
        rows = {r.key: r for r in usage_report(store, since="7d", by="model")}
    finally:
        store.close()
    assert set(rows) == {"openai:gpt-4o-mini", "llamacpp:smollm2", "openai:my-finetune"}
    mini = rows["openai:gpt-4o-mini"]
    assert (mini.requests, mini.errors, mini.input_tokens, mini.output_tokens) == (3, 1, 400, 40)
    assert mini.cost == {"USD": pytest.approx(0.04)} and mini.unknown_cost == 0
    assert mini.latency_p50 == 1.0 and mini.latency_p95 == 3.0  # failures left out
    assert mini.ttft_p50 == 0.2
    local = rows["llamacpp:smollm2"]
    assert local.cost == {"USD": 0.0} and local.cache_hits == 1
    assert local.cost_text() == "$0.0000"
    private = rows["openai:my-finetune"]
    assert private.cost == {} and private.unknown_cost == 1
    assert private.cost_text() == "unknown" and private.to_dict()["cost"] is None


def test_usage_by_provider_and_day_and_mixed_known_and_unknown(tmp_path: Path) -> None:
    seed(tmp_path / "logs.db")
    store = LogStore(tmp_path / "logs.db")
    try:
        by_provider = {r.key: r for r in usage_report(store, since="7d", by="provider")}
        by_day = usage_report(store, since="all", by="day")
    finally:
        store.close()
    openai = by_provider["openai"]
    assert openai.requests == 4 and openai.unknown_cost == 1
    assert openai.cost_text() == "$0.0400 + unknown (1)"
    assert openai.to_dict()["cost"] == {"USD": pytest.approx(0.04)}
    assert [r.key for r in by_day] == sorted({at(d)[:10] for d in (0.1, 0.2, 0.3, 1.5, 1.6,
                                                                   2.5, 30)})
    assert sum(r.requests for r in by_day) == 7


def test_the_command_prints_a_table_and_json(tmp_path: Path) -> None:
    db = tmp_path / "logs.db"
    seed(db)
    runner = CliRunner()
    table = runner.invoke(cli, ["usage", "--database", str(db)])
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    assert lines[0].startswith("Usage since ") and lines[0].endswith("by model:")
    assert lines[1].split()[:3] == ["model", "requests", "errors"]
    finetune = next(line for line in lines if line.startswith("openai:my-finetune"))
    assert "unknown" in finetune and "$0" not in finetune
    stats = runner.invoke(cli, ["logs", "stats", "--database", str(db), "--since", "all",
                                "--by", "provider", "--json"])
    assert stats.exit_code == 0, stats.output
    data = json.loads(stats.output)
    assert data["by"] == "provider" and data["since"] is None
    rows = {r["key"]: r for r in data["rows"]}
    assert rows["openai"]["requests"] == 5 and rows["openai"]["cost"]["USD"] == pytest.approx(1.04)
    assert rows["openai"]["unknown_cost"] == 1


def test_an_empty_database_and_a_period_without_rows(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(cli, ["usage", "--database", str(tmp_path / "empty.db")])
    assert missing.exit_code != 0 and "no such file" in str(missing.exception)
    assert not (tmp_path / "empty.db").exists()  # a misspelt path makes no database
    LogStore(tmp_path / "empty.db").close()
    empty = runner.invoke(cli, ["usage", "--database", str(tmp_path / "empty.db")])
    assert empty.exit_code == 0, empty.output
    assert empty.output.startswith("No requests since ")
    as_json = runner.invoke(cli, ["usage", "--database", str(tmp_path / "empty.db"), "--json"])
    assert json.loads(as_json.output)["rows"] == []
    seed(tmp_path / "logs.db")
    quiet = runner.invoke(cli, ["usage", "--database", str(tmp_path / "logs.db"), "--since",
                                "1m"])
    assert quiet.exit_code == 0 and quiet.output.startswith("No requests since ")


def test_parse_since() -> None:
    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    assert parse_since("7d", now=now) == now - timedelta(days=7)
    assert parse_since("36h", now=now) == now - timedelta(hours=36)
    assert parse_since("2w", now=now) == now - timedelta(weeks=2)
    assert parse_since("2026-12-01") == datetime(2026, 12, 1, tzinfo=UTC)
    assert parse_since("all") is None
    with pytest.raises(ConfigurationError, match="--since 'yesterday' is not a period"):
        parse_since("yesterday")
    bad = CliRunner().invoke(cli, ["usage", "--since", "soon"])
    assert bad.exit_code != 0 and "is not a period" in str(bad.exception)
