"""A real ``redis-server`` (Debian package ``redis-server``) on a free port in a temp dir.

``redis_server`` starts one per test module; ``make_redis_server`` gives a test its own, to
stop and restart. Without the binary the tests fail under CI (``CI`` set) and are skipped
elsewhere with the command that installs it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from modelplex_redis.testing import RedisServer, find_redis_server


def _require_binary() -> None:
    if find_redis_server() is None:
        message = ("redis-server is not installed: `apt-get install redis-server` "
                   "(.ci/run installs it)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def make_redis_server(tmp_path_factory: pytest.TempPathFactory
                      ) -> Iterator[Callable[[], RedisServer]]:
    """Start a fresh server (stopped after the test)."""
    _require_binary()
    servers: list[RedisServer] = []

    def make() -> RedisServer:
        server = RedisServer.start_new(tmp_path_factory.mktemp("redis"))
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One server for the tests of a module."""
    _require_binary()
    server = RedisServer.start_new(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The shared server's URL, with the database emptied after the test."""
    yield redis_server.url
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
