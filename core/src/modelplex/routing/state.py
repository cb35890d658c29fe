"""State the router keeps about its deployments, behind one small interface.

The router (:mod:`modelplex.routing`) records three things per deployment key: cooldowns (a
deployment that answered 429/503/529 or failed to connect is skipped until it expires),
requests in flight (for the ``least_busy`` strategy) and requests per minute (for ``rpm``
limits). :class:`MemoryState` keeps them in this process; ``modelplex-redis`` provides a
:class:`RouterState` shared by every process that points at the same Redis server.

A backend that fails must not fail a request: the router treats any exception from a backend
as "no information" and carries on with local state (the Redis backend does this itself and
logs one warning).
"""

from __future__ import annotations

import abc
import time
from collections import defaultdict, deque
from collections.abc import Iterable

__all__ = ["MemoryState", "RouterState"]


class RouterState(abc.ABC):
    """Cooldowns, in-flight counts and request-rate windows per deployment key.

    Keys are opaque strings chosen by the router (one per deployment). Times are seconds.
    Every method is async so that a backend may do I/O; :class:`MemoryState` never waits.
    """

    @abc.abstractmethod
    async def start_cooldown(self, key: str, seconds: float) -> None:
        """Skip ``key`` for ``seconds`` from now (an existing longer cooldown is kept)."""

    @abc.abstractmethod
    async def cooldowns(self, keys: Iterable[str]) -> dict[str, float]:
        """Seconds left for each of ``keys`` that is cooling down now (absent = available)."""

    @abc.abstractmethod
    async def add_in_flight(self, key: str, delta: int) -> None:
        """Change the number of requests in flight on ``key`` by ``delta`` (+1 / -1)."""

    @abc.abstractmethod
    async def in_flight(self, keys: Iterable[str]) -> dict[str, int]:
        """Requests in flight on each of ``keys`` (0 for unknown keys)."""

    @abc.abstractmethod
    async def take_rate_slot(self, key: str, limit: int, window: float = 60.0) -> float:
        """Count one request on ``key`` if fewer than ``limit`` were counted in the last
        ``window`` seconds and return ``0.0``; otherwise count nothing and return the seconds
        until a slot frees."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, nothing to free by default
        """Free connections."""


class MemoryState(RouterState):
    """Router state in this process only (the default)."""

    def __init__(self) -> None:
        self._cooling: dict[str, float] = {}
        self._in_flight: dict[str, int] = defaultdict(int)
        self._windows: dict[str, deque[float]] = defaultdict(deque)

    @property
    def cools_nothing(self) -> bool:
        """No key is cooling down: :meth:`cooldowns` would answer ``{}`` (a router then does
        not ask it)."""
        return not self._cooling

    async def start_cooldown(self, key: str, seconds: float) -> None:
        """Skip ``key`` for ``seconds`` from now (an existing longer cooldown is kept)."""
        until = time.monotonic() + max(0.0, seconds)
        if until > self._cooling.get(key, 0.0):
            self._cooling[key] = until

    async def cooldowns(self, keys: Iterable[str]) -> dict[str, float]:
        """Seconds left for each of ``keys`` that is cooling down now."""
        if not self._cooling:
            return {}
        now = time.monotonic()
        left: dict[str, float] = {}
        for key in keys:
            until = self._cooling.get(key)
            if until is None:
                continue
            if until > now:
                left[key] = until - now
            else:
                del self._cooling[key]
        return left

    async def add_in_flight(self, key: str, delta: int) -> None:
        """Change the number of requests in flight on ``key`` by ``delta``."""
        self._in_flight[key] = max(0, self._in_flight[key] + delta)

    async def in_flight(self, keys: Iterable[str]) -> dict[str, int]:
        """Requests in flight on each of ``keys``."""
        counts = self._in_flight
        return {key: counts.get(key, 0) for key in keys}

    async def take_rate_slot(self, key: str, limit: int, window: float = 60.0) -> float:
        """Count one request if under ``limit`` in the last ``window`` seconds (then ``0.0``),
        else the seconds until a slot frees."""
        now = time.monotonic()
        stamps = self._windows[key]
        while stamps and stamps[0] <= now - window:
            stamps.popleft()
        if len(stamps) < limit:
            stamps.append(now)
            return 0.0
        return stamps[0] + window - now
