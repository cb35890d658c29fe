"""The ``redis`` response cache: entries shared by every process that uses the same server."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from redis.exceptions import AuthenticationError, ResponseError

from modelplex.caches import Cache, CacheStats
from modelplex.errors import StorageError, redact
from modelplex_redis.connection import ERRORS, RedisLink

__all__ = ["RedisCache", "storage_error"]

_COUNT_FLUSH = 256
_WHERE = "--url, the [cache] table's url, or MODELPLEX_REDIS_URL"


def storage_error(link: RedisLink, err: BaseException) -> StorageError:
    """What ``modelplex cache stats|clear`` says when Redis fails: one line naming the URL
    (without its password) and the fix."""
    reason = redact(f"{type(err).__name__}: {err}")
    if isinstance(err, AuthenticationError) or (
            isinstance(err, ResponseError) and "AUTH" in str(err).upper()):
        text = (f"the redis cache at {link.safe_url} refused the password ({reason}): fix the "
                f"password in the URL ({_WHERE})")
    else:
        text = (f"cannot reach the redis cache at {link.safe_url} ({reason}): start Redis "
                f"there or fix the URL ({_WHERE})")
    return StorageError(text, where=link.safe_url, reason=reason)


class RedisCache(Cache):
    """A cache on a Redis server (``url``, else ``$MODELPLEX_REDIS_URL``, else localhost).

    Entries are JSON strings under ``prefix`` with a time to live (``ttl`` seconds; ``None``
    keeps them until cleared). Hits and misses are counted in this process and added to the
    server's counters in batches. While Redis is unreachable every call raises at once (no
    waiting on a dead server), and the cache layer answers from the provider; ``stats``,
    ``clear`` and ``delete`` raise :class:`~modelplex.errors.StorageError` naming the URL
    (without its password) and the fix.

    Args:
        url: ``redis://[:password@]host:port/db`` (``rediss://`` for TLS).
        ttl: default time to live of an entry, seconds.
        prefix: the namespace of the keys (``clear`` removes only these).
        timeout: connect and read timeout of each command, seconds.
        retry_interval: seconds to wait after a failure before trying Redis again.
    """

    name: ClassVar[str] = "redis"

    def __init__(self, url: str | None = None, ttl: float | None = 3600.0, *,
                 prefix: str = "modelplex:cache:", timeout: float = 0.5,
                 retry_interval: float = 1.0, max_connections: int = 64) -> None:
        self.link = RedisLink(url, timeout=timeout, retry_interval=retry_interval,
                              max_connections=max_connections, report=False,
                              what="redis cache")
        self.ttl = ttl
        self.prefix = prefix
        self._stats_key = prefix.rstrip(":") + "-stats"
        self._hits = 0
        self._misses = 0

    def __repr__(self) -> str:
        return f"<RedisCache {self.link.safe_url!r} prefix={self.prefix!r}>"

    async def get(self, key: str) -> Any | None:
        """The cached value, or ``None``."""
        self.link.check()
        try:
            raw = await self.link.client.get(self.prefix + key)
        except ERRORS as err:
            self.link.failed(err)
            raise
        self.link.succeeded()
        if raw is None:
            self._misses += 1
            if self._hits + self._misses >= _COUNT_FLUSH:
                await self._flush_counts()
            return None
        self._hits += 1
        return json.loads(raw)

    def _count_commands(self, pipe: Any) -> None:
        if self._hits:
            pipe.hincrby(self._stats_key, "hits", self._hits)
        if self._misses:
            pipe.hincrby(self._stats_key, "misses", self._misses)
        self._hits = self._misses = 0

    async def _flush_counts(self) -> None:
        if not (self._hits or self._misses) or not self.link.available:
            return
        try:
            async with self.link.client.pipeline(transaction=False) as pipe:
                self._count_commands(pipe)
                await pipe.execute()
        except ERRORS as err:
            self.link.failed(err)

    async def set(self, key: str, value: Any, *, ttl: float | None = None) -> None:
        """Store a JSON-serialisable value for ``ttl`` seconds (else the default)."""
        self.link.check()
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        ttl = self.ttl if ttl is None else ttl
        try:
            async with self.link.client.pipeline(transaction=False) as pipe:
                pipe.set(self.prefix + key, text,
                         px=max(1, int(ttl * 1000)) if ttl is not None else None)
                self._count_commands(pipe)
                await pipe.execute()
        except ERRORS as err:
            self.link.failed(err)
            raise
        self.link.succeeded()

    async def delete(self, key: str) -> bool:
        """Remove one entry; ``True`` if it was there."""
        try:
            self.link.check()
            removed = await self.link.client.delete(self.prefix + key)
        except ERRORS as err:
            self.link.failed(err)
            raise storage_error(self.link, err) from err
        self.link.succeeded()
        return bool(removed)

    async def _keys(self) -> list[bytes]:
        return [key async for key in self.link.client.scan_iter(match=self.prefix + "*",
                                                                count=1000)]

    async def clear(self) -> int:
        """Remove every entry under the prefix and reset the counters."""
        try:
            self.link.check()
            keys = await self._keys()
            for start in range(0, len(keys), 1000):
                await self.link.client.unlink(*keys[start:start + 1000])
            await self.link.client.delete(self._stats_key)
        except ERRORS as err:
            self.link.failed(err)
            raise storage_error(self.link, err) from err
        self._hits = self._misses = 0
        self.link.succeeded()
        return len(keys)

    async def stats(self) -> CacheStats:
        """Hits and misses of every process using this server and prefix, and the size."""
        await self._flush_counts()
        try:
            self.link.check()
            counts = await self.link.client.hgetall(self._stats_key)
            size = len(await self._keys())
        except ERRORS as err:
            self.link.failed(err)
            raise storage_error(self.link, err) from err
        return CacheStats(backend=self.name, hits=int(counts.get(b"hits", 0)),
                          misses=int(counts.get(b"misses", 0)), size=size,
                          location=f"{self.link.safe_url} {self.prefix}*")

    async def aclose(self) -> None:
        """Write the counters and close the connections."""
        await self._flush_counts()
        await self.link.aclose()
