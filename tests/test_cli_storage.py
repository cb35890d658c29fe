"""One storage-failure policy, end to end (issue 19, #11 and #13).

A damaged or unusable SQLite cache or log database never fails ``modelplex chat``: the answer
comes, with one warning that names the file and the fix. The commands that manage a store
(``cache stats|clear``, ``logs list|show|search|status``, ``chat -c``) print one line naming
the file and the fix and exit 1. Never a traceback.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from modelplex.store.logs import Exchange
from modelplex.testing import Cli
from modelplex.testing.upstream import PIECE, FaultyUpstream

GARBAGE = bytes(range(256)) * 64  # 16 KiB that are not a SQLite database


def env_for(home: Path, upstream: FaultyUpstream | None = None,
            **extra: str) -> dict[str, str | None]:
    env: dict[str, str | None] = {}
    (home / "empty.toml").write_text("")
    env.update(MODELPLEX_DATA_DIR=str(home / "data"), MODELPLEX_CACHE_DIR=str(home / "cache"),
               MODELPLEX_CONFIG=str(home / "empty.toml"), MODELPLEX_LOAD_PLUGINS="openai",
               OPENAI_API_KEY="sk-dummy-0123456789",
               OPENAI_BASE_URL=(upstream.url if upstream else "http://127.0.0.1:9") + "/v1")
    env.update(extra)
    return env


#: ``modelplex ARGS`` in a child process, awaited, without the developer's MODELPLEX_* settings
run = Cli().arun


def garbage(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(GARBAGE)
    return path


def malformed(path: Path) -> Path:
    """A real log database whose pages after the first were overwritten: it opens, but reading
    its tables fails ("database disk image is malformed")."""
    from modelplex.store.logs import LogStore

    path.parent.mkdir(parents=True, exist_ok=True)
    store = LogStore(path)
    for i in range(200):
        store.record_sync(_exchange(i))
    store.close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big") or 65536
    data[page:] = GARBAGE * (len(data[page:]) // len(GARBAGE) + 1)
    path.write_bytes(bytes(data[:len(path.read_bytes())]))
    return path


def _exchange(i: int) -> Exchange:
    return Exchange(provider="openai", model="m", prompt=f"question {i} " * 20,
                    response=f"answer {i} " * 40, conversation_id=f"c{i % 7}")


def answered(code: int, out: str, err: str, *, names: str) -> None:
    """The chat answered, and said once on stderr which file it could not use and the fix."""
    assert code == 0, err
    assert out.strip() == (PIECE * 5).strip()
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert names in lines[0]


def one_line_error(code: int, out: str, err: str, *, names: str) -> str:
    assert code == 1, (out, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("Error: ") and names in lines[0], err
    return lines[0]


# -- the response cache (#11) ---------------------------------------------------------------------
async def test_a_damaged_cache_file_never_fails_chat(tmp_path: Path) -> None:
    cache = garbage(tmp_path / "cache" / "cache.db")
    async with FaultyUpstream() as upstream:
        env = env_for(tmp_path, upstream)
        answered(*await run("chat", "--no-log", "--cache", "sqlite", "-m", "openai:m", "hi",
                            env=env), names=str(cache))
        # the [cache] table of the config file, with a path of its own
        other = garbage(tmp_path / "other.db")
        config = tmp_path / "config.toml"
        config.write_text(f'[cache]\nbackend = "sqlite"\npath = "{other}"\n')
        code, out, err = await run("chat", "--no-log", "-m", "openai:m", "hi",
                                   env={**env, "MODELPLEX_CONFIG": str(config)})
        answered(code, out, err, names=str(other))
        assert "move it aside" in err
    assert cache.read_bytes() == GARBAGE  # nothing the user had is overwritten


async def test_cache_stats_and_clear_on_a_damaged_file_are_one_line(tmp_path: Path) -> None:
    cache = garbage(tmp_path / "cache" / "cache.db")
    env = env_for(tmp_path)
    for args in (["cache", "stats"], ["cache", "stats", "--json"], ["cache", "clear"],
                 ["cache", "clear", "-b", "sqlite", "--path", str(cache)]):
        line = one_line_error(*await run(*args, env=env), names=str(cache))
        assert "damaged or not a SQLite database" in line and "move it aside" in line
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    line = one_line_error(*await run("cache", "stats", "--path", str(blocked / "c.db"),
                                     env=env), names=str(blocked / "c.db"))
    assert "cannot open the cache" in line


# -- the log database (#13) -------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["garbage", "malformed", "unopenable", "newer"])
async def test_an_unusable_log_database_never_fails_chat(tmp_path: Path, damage: str) -> None:
    logs = tmp_path / "data" / "logs.db"
    extra: dict[str, str] = {}
    if damage == "garbage":
        garbage(logs)
    elif damage == "malformed":
        malformed(logs)
    elif damage == "newer":
        from modelplex.store.logs import LogStore

        LogStore(logs).close()
        conn = sqlite3.connect(logs)
        conn.execute("INSERT INTO schema_migrations VALUES (99, 'from the future', 'x')")
        conn.commit()
        conn.close()
    else:  # the data folder cannot be made: a file is in the way
        (tmp_path / "blocker").write_text("")
        logs = tmp_path / "blocker" / "data" / "logs.db"
        extra["MODELPLEX_DATA_DIR"] = str(logs.parent)
    async with FaultyUpstream() as upstream:
        env = env_for(tmp_path, upstream, **extra)
        answered(*await run("chat", "-m", "openai:m", "hi", env=env), names=str(logs))
    for args in (["logs", "list"], ["logs", "list", "-c"], ["logs", "search", "answer"],
                 ["logs", "show", "c1"], ["logs", "status"], ["chat", "-c", "hi"],
                 ["chat", "--cid", "c1", "hi"]):
        if damage == "unopenable" and args == ["logs", "status"]:
            continue  # it says where the database would be; there is none to open
        line = one_line_error(*await run(*args, env=env), names=str(logs))
        if damage in ("garbage", "malformed"):
            assert "move it aside" in line, args
        if damage == "newer":
            assert "newer than this modelplex knows" in line, args
