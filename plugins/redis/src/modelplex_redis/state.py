"""The ``redis`` router state: cooldowns, in-flight counts and rate windows across processes.

Every process keeps a local mirror (a :class:`~modelplex.routing.MemoryState`) so the router's
questions are answered from memory:

- cooldowns: a cooldown is started locally and in Redis (one round trip, rare: on failures);
  :meth:`~RedisState.cooldowns` refreshes the asked keys from Redis at most every
  ``sync_interval`` seconds (one pipelined round trip for all of them) and answers from the
  mirror. Times are Redis key expiries, so hosts need no synchronised clocks.
- in-flight counts: each process writes its own count per key (``HSET key <process> n``) in
  the background, batched, so ``add_in_flight`` never waits on the network; readers add the
  other processes' counts (refreshed every ``sync_interval``) to their own. A count is
  absolute, not a delta, so nothing drifts when Redis restarts; the fields of a process that
  died expire with the key after ``in_flight_ttl`` idle seconds.
- rate windows: one atomic Lua script per request on a sorted set, timed by the Redis
  server's clock, so the limit holds for all processes together.

When Redis is unreachable the state logs one warning and works from the local mirror (this
process's view only); it tries Redis again every ``retry_interval`` seconds, and when Redis is
back it re-sends the cooldowns that are still running. It never raises to the router.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import socket
import time
from collections.abc import Iterable
from typing import Any

from modelplex.routing import MemoryState, RouterState
from modelplex_redis.connection import ERRORS, RedisLink

__all__ = ["RedisState"]

_COOLDOWN = """
local ms = tonumber(ARGV[1])
if redis.call('PTTL', KEYS[1]) < ms then
  redis.call('SET', KEYS[1], '1', 'PX', ms)
end
return 1
"""

_RATE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now)
"""


class RedisState(RouterState):
    """Router state shared through Redis (see the module docs).

    Args:
        url: the server (else ``$MODELPLEX_REDIS_URL``, else ``redis://localhost:6379/0``).
        prefix: the namespace of the keys.
        timeout: connect and read timeout of each command, seconds.
        retry_interval: seconds between attempts while Redis is unreachable.
        sync_interval: how stale another process's cooldowns and counts may be, seconds.
        in_flight_ttl: seconds after which an idle in-flight key (and the counts of processes
            that died with requests open) expires.
        max_connections: connections to Redis at most; a command that finds them all busy
            waits for one, up to ``pool_timeout`` seconds (a burst is not an outage).
    """

    def __init__(self, url: str | None = None, *, prefix: str = "modelplex:state:",
                 timeout: float = 0.25, retry_interval: float = 1.0,
                 sync_interval: float = 0.1, in_flight_ttl: float = 300.0,
                 max_connections: int = 32, pool_timeout: float = 2.0) -> None:
        self.link = RedisLink(url, timeout=timeout, retry_interval=retry_interval,
                              max_connections=max_connections, pool_timeout=pool_timeout,
                              what="router state")
        self.prefix = prefix
        self.sync_interval = sync_interval
        self.in_flight_ttl_ms = max(1000, int(in_flight_ttl * 1000))
        self.local = MemoryState()
        self.process = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._cooldown_script = self.link.client.register_script(_COOLDOWN)
        self._rate_script = self.link.client.register_script(_RATE)
        self._cooldowns_synced: dict[str, float] = {}
        self._others: dict[str, tuple[float, int]] = {}  # key -> (synced at, other processes)
        self._dirty: set[str] = set()
        self._written: set[str] = set()
        self._flusher: asyncio.Task[None] | None = None
        self._members = itertools.count()

    def __repr__(self) -> str:
        return f"<RedisState {self.link.safe_url!r} prefix={self.prefix!r}>"

    def _key(self, kind: str, key: str) -> str:
        return f"{self.prefix}{kind}:{key}"

    def _failed(self, err: BaseException) -> None:
        self.link.failed(err)

    async def _succeeded(self) -> None:
        if self.link.succeeded():
            await self._resend_cooldowns()
            self._dirty.update(self._written)  # the server may have restarted empty

    # -- cooldowns --------------------------------------------------------------------------
    async def start_cooldown(self, key: str, seconds: float) -> None:
        """Skip ``key`` for ``seconds``, in this process and for every other one."""
        await self.local.start_cooldown(key, seconds)
        ms = int(seconds * 1000)
        if ms <= 0 or not self.link.available:
            return
        try:
            await self._cooldown_script(keys=[self._key("cool", key)], args=[ms])
        except ERRORS as err:
            self._failed(err)
            return
        await self._succeeded()

    async def _resend_cooldowns(self) -> None:
        left = await self.local.cooldowns(list(self.local._cooling))
        with contextlib.suppress(*ERRORS):
            for key, seconds in left.items():
                await self._cooldown_script(keys=[self._key("cool", key)],
                                            args=[max(1, int(seconds * 1000))])

    async def cooldowns(self, keys: Iterable[str]) -> dict[str, float]:
        """Seconds left for each of ``keys`` cooling down in any process."""
        keys = list(keys)
        now = time.monotonic()
        synced = self._cooldowns_synced
        stale = [k for k in keys if now - synced.get(k, -1e9) >= self.sync_interval]
        if stale and self.link.available:
            try:
                async with self.link.client.pipeline(transaction=False) as pipe:
                    for key in stale:
                        pipe.pttl(self._key("cool", key))
                    left = await pipe.execute()
            except ERRORS as err:
                self._failed(err)
            else:
                for key, ms in zip(stale, left, strict=True):
                    synced[key] = now
                    if ms > 0:
                        await self.local.start_cooldown(key, ms / 1000)
                await self._succeeded()
        return await self.local.cooldowns(keys)

    # -- in flight --------------------------------------------------------------------------
    async def add_in_flight(self, key: str, delta: int) -> None:
        """Change this process's count on ``key``; written to Redis in the background."""
        await self.local.add_in_flight(key, delta)
        self._dirty.add(key)
        if self._flusher is None and self.link.available:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while self._dirty and self.link.available:
                keys, self._dirty = self._dirty, set()
                counts = await self.local.in_flight(keys)
                try:
                    async with self.link.client.pipeline(transaction=False) as pipe:
                        for key, count in counts.items():
                            name = self._key("busy", key)
                            pipe.hset(name, self.process, count)
                            pipe.pexpire(name, self.in_flight_ttl_ms)
                        await pipe.execute()
                except ERRORS as err:
                    self._dirty |= keys  # written when Redis is back
                    self._failed(err)
                    return
                self._written |= keys
                await self._succeeded()
        finally:
            self._flusher = None

    async def in_flight(self, keys: Iterable[str]) -> dict[str, int]:
        """Requests in flight on each of ``keys`` in every process."""
        keys = list(keys)
        mine = await self.local.in_flight(keys)
        now = time.monotonic()
        others = self._others
        stale = [k for k in keys if now - others.get(k, (-1e9, 0))[0] >= self.sync_interval]
        if stale and self.link.available:
            try:
                async with self.link.client.pipeline(transaction=False) as pipe:
                    for key in stale:
                        pipe.hgetall(self._key("busy", key))
                    found = await pipe.execute()
            except ERRORS as err:
                self._failed(err)
            else:
                me = self.process.encode()
                for key, fields in zip(stale, found, strict=True):
                    count = sum(max(0, int(v)) for f, v in fields.items() if f != me)
                    others[key] = (now, count)
                await self._succeeded()
        if self.link.down:
            return mine
        return {k: mine[k] + others.get(k, (0.0, 0))[1] for k in keys}

    # -- rate windows ------------------------------------------------------------------------
    async def take_rate_slot(self, key: str, limit: int, window: float = 60.0) -> float:
        """Count one request on ``key`` across all processes if under ``limit`` in the last
        ``window`` seconds (then ``0.0``), else the seconds until a slot frees."""
        if self.link.available:
            member = f"{self.process}:{next(self._members)}"
            try:
                wait_ms = await self._rate_script(
                    keys=[self._key("rate", key)],
                    args=[limit, max(1, int(window * 1000)), member])
            except ERRORS as err:
                self._failed(err)
            else:
                await self._succeeded()
                return float(wait_ms) / 1000
        return await self.local.take_rate_slot(key, limit, window)

    # -- closing ------------------------------------------------------------------------------
    async def aclose(self) -> None:
        """Remove this process's in-flight counts from Redis and close the connections."""
        flusher = self._flusher
        if flusher is not None:
            with contextlib.suppress(Exception):
                await flusher
        if self._written and self.link.available:
            with contextlib.suppress(*ERRORS):
                async with self.link.client.pipeline(transaction=False) as pipe:
                    for key in self._written:
                        pipe.hdel(self._key("busy", key), self.process)
                    await pipe.execute()
        await self.link.aclose()

    def snapshot(self) -> dict[str, Any]:
        """What this process knows, for debugging: link state and local counts."""
        return {"url": self.link.safe_url, "down": self.link.down, "process": self.process,
                "cooling": sorted(self.local._cooling), "in_flight": dict(
                    self.local._in_flight)}
