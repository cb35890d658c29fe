"""``modelplex chat -c/--cid``, ``modelplex logs`` and ``modelplex cache`` end to end, with the
real SmolLM2 model and real SQLite files in a temporary data and cache dir."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelplex.testing import Cli, CliResult


def run(*args: str, home: Path) -> CliResult:
    """``modelplex ARGS`` with its data and cache dirs in ``home``."""
    return Cli(env={"MODELPLEX_DATA_DIR": str(home / "data"),
                    "MODELPLEX_CACHE_DIR": str(home / "cache")}).run(*args)


@pytest.mark.slow
def test_chat_is_logged_continued_searched_cached_and_can_be_turned_off(tmp_path: Path
                                                                       ) -> None:
    small = ["-o", "max_tokens", "12", "-o", "temperature", "0"]
    question = ["--cache", "sqlite", "-m", "llamacpp:smollm2", *small,
                "What is the capital of France?"]
    first = run("chat", *question, home=tmp_path)
    assert first.returncode == 0, first.stderr
    # -c continues the last conversation, with the model it used
    second = run("chat", "-c", *small, "And of Italy?", home=tmp_path)
    assert second.returncode == 0, second.stderr
    listed = json.loads(run("logs", "list", "--json", home=tmp_path).stdout)
    assert [e["prompt"] for e in listed] == ["And of Italy?", "What is the capital of France?"]
    cid = listed[0]["conversation_id"]
    assert listed[1]["conversation_id"] == cid
    assert listed[0]["provider"] == "llamacpp" and listed[0]["model"] == "smollm2"
    assert listed[0]["response"] == second.stdout.strip()
    assert listed[0]["options"] == {"max_tokens": 12, "temperature": 0}
    assert listed[0]["completion_tokens"] > 0 and listed[0]["latency"] > 0

    shown = run("logs", "show", cid, home=tmp_path)
    assert shown.stdout.index("What is the capital") < shown.stdout.index("And of Italy?")
    found = json.loads(run("logs", "search", "italy", "--json", home=tmp_path).stdout)
    assert [e["prompt"] for e in found] == ["And of Italy?"]
    convs = run("logs", "list", "-c", home=tmp_path).stdout
    assert convs.startswith(cid) and "2 exchanges" in convs

    unknown = run("chat", "--cid", "nope", "hi", home=tmp_path)
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == ("Error: no conversation with id 'nope'; "
                                      "`modelplex logs list -c` lists them")

    assert run("logs", "off", home=tmp_path).stdout.strip() == "Logging is off."
    third = run("chat", *question, home=tmp_path)  # the same question: from the cache
    assert third.returncode == 0, third.stderr
    assert third.stdout == first.stdout
    stats = json.loads(run("cache", "stats", "--json", home=tmp_path).stdout)
    assert (stats["hits"], stats["size"]) == (1, 1)
    assert stats["location"] == str(tmp_path / "cache" / "cache.db")
    assert len(json.loads(run("logs", "list", "--json", home=tmp_path).stdout)) == 2
    assert "Logging is off." in run("logs", "status", home=tmp_path).stdout
    run("logs", "on", home=tmp_path)
    assert "Logging is on." in run("logs", "status", home=tmp_path).stdout


def test_cache_stats_and_clear(tmp_path: Path) -> None:
    import asyncio

    from modelplex.store.sqlite_cache import SQLiteCache

    async def fill() -> None:
        cache = SQLiteCache(tmp_path / "cache" / "cache.db")
        await cache.set("a", 1)
        await cache.set("b", 2)
        await cache.get("a")
        await cache.get("zzz")
        await cache.aclose()

    asyncio.run(fill())
    stats = json.loads(run("cache", "stats", "--json", home=tmp_path).stdout)
    assert (stats["size"], stats["hits"], stats["misses"], stats["hit_rate"]) == (2, 1, 1, 0.5)
    assert run("cache", "clear", home=tmp_path).stdout.strip() == "Removed 2 entries."
    bad = run("cache", "stats", "-b", "nope", home=tmp_path)
    assert bad.returncode == 1
    assert bad.stderr.startswith("Error: no cache named 'nope'; available: ")



def test_the_config_files_cache_and_conversations_tables(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f"""
[cache]
backend = "sqlite"
path = "{tmp_path / 'elsewhere' / 'answers.db'}"

[conversations]
path = "{tmp_path / 'talks.db'}"
""")

    run_with_config = Cli(config, env={"MODELPLEX_DATA_DIR": str(tmp_path / "data")}).run

    stats = json.loads(run_with_config("cache", "stats", "--json").stdout)
    assert stats["location"] == str(tmp_path / "elsewhere" / "answers.db")
    assert run_with_config("logs", "path").stdout.strip() == str(tmp_path / "talks.db")
