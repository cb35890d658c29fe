"""Per-key limits: requests per minute, tokens per minute and requests at once.

A key (``[[server.keys]]``) may set ``rate_limit`` (requests per minute), ``tpm`` (tokens per
minute) and ``concurrency`` (requests at once). Each model request is *admitted* first
(:meth:`Limiter.admit`): it is refused with a 429 and ``Retry-After`` when the key made
``rate_limit`` requests in the last minute, used ``tpm`` tokens in the last minute, or has
``concurrency`` requests open; otherwise it is counted. Its tokens are added when its answer
ends (:meth:`Limiter.add_tokens`) and its concurrency slot is given back when the request
ends (:meth:`Admission.release`).

Where the counts live:

- :class:`MemoryLimiter` (the default): in this process. With ``--workers N`` or several
  replicas each process allows the full limit.
- :class:`RedisLimiter` (``[state] backend = "redis"``): in Redis, for every worker and
  replica together. Admission is one Lua script (check and count in one atomic step, no
  read-modify-write race), timed by the Redis server's clock. When Redis is unreachable the
  limiter logs one warning and goes on with a :class:`MemoryLimiter` of its own (per-process
  limits) until Redis answers again, and ``/readyz`` says so; a request never fails because
  of the limiter.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import socket
import time
from collections import defaultdict, deque
from collections.abc import AsyncGenerator, Callable, Coroutine, Mapping
from typing import Any

import attrs

from modelplex.chunks import ChatResponse, StreamChunk, Usage
from modelplex.errors import ConfigurationError
from modelplex.provider import ChatRequest, Provider
from modelplex.wrapping import WrappingProvider
from modelplex_server.settings import KeyConfig

__all__ = ["Admission", "Limiter", "MemoryLimiter", "MeteredProvider", "RedisLimiter",
           "Refusal", "limited", "open_limiter"]

log = logging.getLogger("modelplex.server")

WINDOW = 60.0


@attrs.frozen
class Refusal:
    """Why a request was not admitted, and the seconds until it may be."""

    reason: str  # "requests", "tokens" or "concurrency"
    wait: float


@attrs.define
class Admission:
    """A request admitted for a key: give its slot back with :meth:`release` (idempotent)."""

    limiter: Limiter | None
    key: str
    lease: str | None = None

    async def release(self) -> None:
        """End the request: free its concurrency slot."""
        limiter, self.limiter = self.limiter, None
        if limiter is not None and self.lease is not None:
            await limiter._release(self.key, self.lease)


def _limits(key: KeyConfig) -> tuple[int, int, int]:
    return (key.rate_limit or 0, key.tpm or 0, key.concurrency or 0)


def limited(key: KeyConfig | None) -> bool:
    """Whether ``key`` has any limit to enforce."""
    return key is not None and any(_limits(key))


class Limiter(abc.ABC):
    """Admits requests per key (see the module docs)."""

    @abc.abstractmethod
    async def admit(self, key: KeyConfig) -> Admission | Refusal:
        """Count one request for ``key``, or say why not."""

    @abc.abstractmethod
    async def add_tokens(self, key: KeyConfig, tokens: int) -> None:
        """Count ``tokens`` used by ``key`` now."""

    @abc.abstractmethod
    async def _release(self, key: str, lease: str) -> None:
        """Free a concurrency slot taken by :meth:`admit`."""

    async def readiness(self) -> dict[str, Any]:
        """What ``/readyz`` says about the limiter's backend."""
        return {"backend": "memory", "detail": "limits are per process"}

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Free connections."""


class MemoryLimiter(Limiter):
    """Limits counted in this process."""

    def __init__(self) -> None:
        self._requests: dict[str, deque[float]] = defaultdict(deque)
        self._tokens: dict[str, deque[tuple[float, int]]] = defaultdict(deque)
        self._open: dict[str, set[str]] = defaultdict(set)
        self._leases = itertools.count()

    async def admit(self, key: KeyConfig) -> Admission | Refusal:
        """Count one request for ``key``, or say why not."""
        rpm, tpm, concurrency = _limits(key)
        now = time.monotonic()
        stamps = self._requests[key.name]
        while stamps and stamps[0] <= now - WINDOW:
            stamps.popleft()
        if rpm and len(stamps) >= rpm:
            return Refusal("requests", stamps[0] + WINDOW - now)
        if tpm:
            used = self._tokens[key.name]
            while used and used[0][0] <= now - WINDOW:
                used.popleft()
            total = 0
            for stamp, count in used:
                total += count
                if total >= tpm:
                    return Refusal("tokens", stamp + WINDOW - now)
        lease = None
        if concurrency:
            leases = self._open[key.name]
            if len(leases) >= concurrency:
                return Refusal("concurrency", 1.0)
            lease = str(next(self._leases))
            leases.add(lease)
        if rpm:
            stamps.append(now)
        return Admission(self, key.name, lease)

    async def add_tokens(self, key: KeyConfig, tokens: int) -> None:
        """Count ``tokens`` used by ``key`` now."""
        if key.tpm and tokens > 0:
            self._tokens[key.name].append((time.monotonic(), tokens))

    async def _release(self, key: str, lease: str) -> None:
        self._open[key].discard(lease)


# Admission, atomically: KEYS = requests zset, tokens hash (second -> tokens), open-requests
# zset (lease -> expiry); ARGV = rpm, tpm, concurrency (0: none), member, lease ttl ms.
# Returns {0, 0} when admitted, else {1|2|3 (requests|tokens|concurrency), ms to wait}.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rpm = tonumber(ARGV[1])
local tpm = tonumber(ARGV[2])
local conc = tonumber(ARGV[3])
local window = 60000
if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  if redis.call('ZCARD', KEYS[1]) >= rpm then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {1, math.max(1, tonumber(oldest[2]) + window - now)}
  end
end
if tpm > 0 then
  local second = math.floor(now / 1000)
  local fields = redis.call('HGETALL', KEYS[2])
  local total = 0
  local oldest = nil
  for i = 1, #fields, 2 do
    local s = tonumber(fields[i])
    if s <= second - 60 then
      redis.call('HDEL', KEYS[2], fields[i])
    else
      total = total + tonumber(fields[i + 1])
      if oldest == nil or s < oldest then oldest = s end
    end
  end
  if total >= tpm then
    return {2, math.max(1, (oldest + 61) * 1000 - now)}
  end
end
if conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZCARD', KEYS[3]) >= conc then
    return {3, 1000}
  end
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[5]), ARGV[4])
  redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[5]))
end
if rpm > 0 then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], window)
end
return {0, 0}
"""

_TOKENS = """
local t = redis.call('TIME')
redis.call('HINCRBY', KEYS[1], tostring(tonumber(t[1])), tonumber(ARGV[1]))
redis.call('EXPIRE', KEYS[1], 62)
return 1
"""

_REASONS = {1: "requests", 2: "tokens", 3: "concurrency"}


class RedisLimiter(Limiter):
    """Limits counted in Redis for every process (see the module docs).

    Args:
        url: the Redis server (else ``$MODELPLEX_REDIS_URL``, else localhost).
        prefix: the namespace of the keys.
        timeout: connect and read timeout of each command, seconds.
        retry_interval: seconds between attempts while Redis is unreachable.
        lease_ttl: seconds after which a request still counted as open is forgotten (the
            slots of a process that died with requests open come back after this).
        max_connections: connections to Redis at most; more requests at once wait for one
            (up to ``pool_timeout`` seconds).
    """

    def __init__(self, url: str | None = None, *, prefix: str = "modelplex:limits:",
                 timeout: float = 0.25, retry_interval: float = 1.0,
                 lease_ttl: float = 600.0, max_connections: int = 64,
                 pool_timeout: float = 2.0, **_ignored: Any) -> None:
        from modelplex_redis.connection import RedisLink

        # A request waits for a free connection (up to ``pool_timeout``) instead of failing
        # at once: a burst of more requests than connections is not an outage.
        self.link = RedisLink(url, timeout=timeout, retry_interval=retry_interval,
                              max_connections=max_connections, pool_timeout=pool_timeout,
                              what="server limits")
        self.prefix = prefix
        self.lease_ttl_ms = max(1000, int(lease_ttl * 1000))
        self.local = MemoryLimiter()
        self.process = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._members = itertools.count()
        self._admit = self.link.client.register_script(_ADMIT)
        self._tokens = self.link.client.register_script(_TOKENS)

    def __repr__(self) -> str:
        return f"<RedisLimiter {self.link.safe_url!r} prefix={self.prefix!r}>"

    def _key(self, kind: str, name: str) -> str:
        return f"{self.prefix}{kind}:{name}"

    @property
    def _errors(self) -> tuple[type[BaseException], ...]:
        from modelplex_redis.connection import ERRORS

        return ERRORS

    async def admit(self, key: KeyConfig) -> Admission | Refusal:
        """Count one request for ``key`` in Redis (or locally while Redis is down)."""
        if self.link.available:
            rpm, tpm, concurrency = _limits(key)
            member = f"{self.process}:{next(self._members)}"
            try:
                code, wait_ms = await self._admit(
                    keys=[self._key("rpm", key.name), self._key("tpm", key.name),
                          self._key("open", key.name)],
                    args=[rpm, tpm, concurrency, member, self.lease_ttl_ms])
            except self._errors as err:
                self.link.failed(err)
            else:
                self.link.succeeded()
                if int(code):
                    return Refusal(_REASONS[int(code)], int(wait_ms) / 1000)
                return Admission(self, key.name, member if concurrency else None)
        return await self.local.admit(key)

    async def add_tokens(self, key: KeyConfig, tokens: int) -> None:
        """Count ``tokens`` used by ``key`` now, in Redis (or locally)."""
        if not key.tpm or tokens <= 0:
            return
        if self.link.available:
            try:
                await self._tokens(keys=[self._key("tpm", key.name)], args=[tokens])
            except self._errors as err:
                self.link.failed(err)
            else:
                self.link.succeeded()
                return
        await self.local.add_tokens(key, tokens)

    async def _release(self, key: str, lease: str) -> None:
        if self.link.available:
            try:
                await self.link.client.zrem(self._key("open", key), lease)
            except self._errors as err:
                self.link.failed(err)
            else:
                self.link.succeeded()
        await self.local._release(key, lease)

    async def readiness(self) -> dict[str, Any]:
        """Whether Redis answers now (``degraded`` while it does not)."""
        if self.link.available:
            try:
                await self.link.client.ping()
            except self._errors as err:
                self.link.failed(err)
            else:
                self.link.succeeded()
        if self.link.down:
            return {"backend": "redis", "degraded": True,
                    "detail": f"Redis at {self.link.safe_url} is unreachable: limits are "
                              "per process until it is back"}
        return {"backend": "redis", "detail": f"Redis at {self.link.safe_url}"}

    async def aclose(self) -> None:
        """Close the connections."""
        await self.link.aclose()


def open_limiter(state: Mapping[str, Any] | None) -> Limiter:
    """The limiter a ``[state]`` table names: Redis for ``backend = "redis"`` (its ``url``
    and the other keywords of the table), else in memory."""
    table = {"backend": state} if isinstance(state, str) else dict(state or {})
    backend = str(table.pop("backend", "memory"))
    if backend == "memory":
        return MemoryLimiter()
    if backend != "redis":
        return MemoryLimiter()  # a plugin's backend: the limiter stays per process
    try:
        import modelplex_redis  # noqa: F401
    except ImportError:
        raise ConfigurationError("[state] backend = 'redis' needs the modelplex-redis "
                                 "package: pip install modelplex-redis") from None
    url = table.pop("url", None)
    return RedisLimiter(url, **{k: v for k, v in table.items()
                                if k in ("timeout", "retry_interval")})


class MeteredProvider(WrappingProvider):
    """A provider whose answers' token counts are reported to ``record`` (in the background,
    once the answer ends: a client that goes away mid-stream still has what it received
    counted when the provider reported usage)."""

    def __init__(self, inner: Provider,
                 record: Callable[[Usage], Coroutine[Any, Any, None]]) -> None:
        super().__init__(inner)
        self._record = record

    def _count(self, usage: Usage | None) -> None:
        if usage is None or usage.cached or not usage.total_tokens:
            return
        task = asyncio.get_running_loop().create_task(self._record(usage))
        _PENDING.add(task)
        task.add_done_callback(_finished)

    def stream_request(self, request: ChatRequest) -> AsyncGenerator[StreamChunk, None]:
        """The inner stream; its usage is counted when it ends."""
        return self._metered(request)

    async def _metered(self, request: ChatRequest) -> AsyncGenerator[StreamChunk, None]:
        usage: Usage | None = None
        stream = self.inner.stream_request(request)
        try:
            async for chunk in stream:
                if chunk.usage is not None:
                    usage = chunk.usage
                yield chunk
        finally:
            with contextlib.suppress(RuntimeError):  # no loop left: nothing to count on
                self._count(usage)
            await stream.aclose()

    async def complete_request(self, request: ChatRequest) -> ChatResponse:
        """The inner answer; its usage is counted."""
        response = await self.inner.complete_request(request)
        self._count(response.usage)
        return response


_PENDING: set[asyncio.Task[None]] = set()


def _finished(task: asyncio.Task[None]) -> None:
    _PENDING.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.warning("could not count a request's tokens: %s", task.exception())
