"""``modelplex cache stats|clear -b redis`` when Redis is down or refuses the password: one
line naming the URL (without the password) and the fix, exit status 1, never a traceback
(issue 19, #14)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from modelplex.errors import StorageError
from modelplex_redis.cache import RedisCache
from modelplex_redis.testing import RedisServer

CLOSED = "redis://127.0.0.1:9/0"  # the discard port: nothing listens there


def cache_command(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPLEX_")}
    (home / "empty.toml").write_text("")
    env.update(MODELPLEX_CONFIG=str(home / "empty.toml"), MODELPLEX_CACHE_DIR=str(home))
    return subprocess.run([sys.executable, "-m", "modelplex", "cache", *args],
                          capture_output=True, text=True, timeout=120, env=env,
                          stdin=subprocess.DEVNULL, check=False)


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
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
