"""One Redis client per cache or state object, and what to do while Redis is unreachable.

The client pools its connections (``max_connections``) and every command has a connect and
a read timeout, so a Redis that hangs costs at most ``timeout`` seconds. The pool blocks: a
command that finds every connection busy waits for one (up to ``pool_timeout`` seconds), so a
burst of more commands than connections is not taken for an outage. After a failure the
link is *down* for ``retry_interval`` seconds: callers skip Redis at once (no waiting on a
dead server) and use their local fallback; the first call after that tries Redis again, and
the link is up as soon as one command succeeds. One warning is logged per outage (when
``report`` is on) and one info record when Redis is back.
"""

from __future__ import annotations

import logging
import time
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from modelplex.env import get_str

__all__ = ["DEFAULT_URL", "ERRORS", "RedisLink", "RedisUnavailableError", "redact_url",
           "resolve_url"]

DEFAULT_URL = "redis://localhost:6379/0"

log = logging.getLogger("modelplex.redis")


class RedisUnavailableError(ConnectionError):
    """Redis failed recently; it is not tried again until the retry interval passed."""


ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)
"""What a failing Redis raises (connection refused, timeouts, server errors)."""


def resolve_url(url: str | None) -> str:
    """``url``, else ``$MODELPLEX_REDIS_URL``, else ``redis://localhost:6379/0``."""
    return url or get_str("MODELPLEX_REDIS_URL") or DEFAULT_URL


def redact_url(url: str) -> str:
    """The URL without its password, for logs and reprs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class RedisLink:
    """A ``redis.asyncio`` client with outage bookkeeping (see the module docs)."""

    def __init__(self, url: str | None = None, *, timeout: float = 0.5,
                 retry_interval: float = 1.0, max_connections: int = 64,
                 pool_timeout: float = 2.0, report: bool = True,
                 what: str = "redis") -> None:
        if timeout <= 0:
            raise ValueError("timeout must be > 0 seconds")
        if pool_timeout <= 0:
            raise ValueError("pool_timeout must be > 0 seconds")
        self.url = resolve_url(url)
        self.safe_url = redact_url(self.url)
        self.retry_interval = retry_interval
        self.report = report
        self.what = what
        try:
            pool = aioredis.BlockingConnectionPool.from_url(
                self.url, max_connections=max_connections, timeout=pool_timeout,
                socket_timeout=timeout, socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 1), health_check_interval=30)
        except ValueError as err:
            raise ValueError(f"bad Redis URL {self.safe_url!r}: {err}") from None
        self.client: aioredis.Redis = aioredis.Redis.from_pool(pool)  # closes the pool too
        self.down = False
        self._retry_at = 0.0

    @property
    def available(self) -> bool:
        """Whether to try Redis now (up, or down long enough to try again)."""
        return not self.down or time.monotonic() >= self._retry_at

    def check(self) -> None:
        """Raise :class:`RedisUnavailableError` while the link is down."""
        if not self.available:
            raise RedisUnavailableError(f"{self.what}: Redis at {self.safe_url} is unreachable; "
                                        f"trying again within {self.retry_interval:g} s")

    def failed(self, err: BaseException) -> None:
        """Record a failed command: down for ``retry_interval`` seconds."""
        self._retry_at = time.monotonic() + self.retry_interval
        if not self.down:
            self.down = True
            if self.report:
                log.warning("%s: Redis at %s is unreachable (%s); using local state until "
                            "it is back", self.what, self.safe_url,
                            f"{type(err).__name__}: {err}",
                            extra={"redis_url": self.safe_url, "backend": self.what})

    def succeeded(self) -> bool:
        """Record a command that worked; ``True`` if this ends an outage."""
        if not self.down:
            return False
        self.down = False
        log.info("%s: Redis at %s is reachable again", self.what, self.safe_url,
                 extra={"redis_url": self.safe_url, "backend": self.what})
        return True

    async def aclose(self) -> None:
        """Close the client and its pool."""
        await self.client.aclose()
