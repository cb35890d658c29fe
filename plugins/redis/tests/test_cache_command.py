"""``modelplex cache stats|clear -b redis`` when Redis is down or refuses the password: one
line naming the URL (without the password) and the fix, exit status 1, never a traceback
(issue 19, #14)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from modelplex.errors import StorageError
from modelplex.testing import Cli, CliResult
from modelplex_redis.cache import RedisCache
from modelplex_redis.testing import RedisServer

CLOSED = "redis://127.0.0.1:9/0"  # the discard port: nothing listens there


def cache_command(*args: str, home: Path) -> CliResult:
    """``modelplex cache ARGS`` with an empty config and its cache dir in ``home``."""
    (home / "empty.toml").write_text("")
    return Cli(home / "empty.toml", env={"MODELPLEX_CACHE_DIR": str(home)}).run("cache", *args)


def one_line(proc: CliResult) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


@pytest.mark.parametrize("command", ["stats", "clear"])
def test_redis_down_is_one_line(command: str, tmp_path: Path) -> None:
    line = one_line(cache_command(command, "-b", "redis", "--url", CLOSED, home=tmp_path))
    assert f"cannot reach the redis cache at {CLOSED}" in line
    assert "start Redis there or fix the URL" in line


def require_password(server: RedisServer, password: str) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(f"CONFIG SET requirepass {password}\r\n".encode())
        assert sock.recv(64).startswith(b"+OK")


@pytest.mark.parametrize("command", ["stats", "clear"])
def test_a_wrong_password_is_one_line(command: str, make_redis_server: Callable[[], RedisServer],
                                      tmp_path: Path) -> None:
    server = make_redis_server()
    require_password(server, "the-real-password")
    url = f"redis://:not-the-password-123@127.0.0.1:{server.port}/0"
    line = one_line(cache_command(command, "-b", "redis", "--url", url, home=tmp_path))
    assert "the redis cache at redis://" in line and f"@127.0.0.1:{server.port}/0" in line
    assert "refused the password" in line and "fix the password" in line
    assert "not-the-password-123" not in line


async def test_management_calls_raise_storage_error() -> None:
    cache = RedisCache(CLOSED, timeout=0.2)
    for call in (cache.stats, cache.clear, lambda: cache.delete("k")):
        with pytest.raises(StorageError, match="cannot reach the redis cache"):
            await call()
    await cache.aclose()
