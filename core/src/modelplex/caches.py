"""Response caches, registered through ``register_caches``.

A :class:`Cache` maps string keys to values, with a time to live per entry and counters of
hits and misses. Values stored by modelplex itself (cached answers, embeddings) are plain
JSON data (dicts, lists, strings, numbers), so a backend may serialise them; the in-memory
cache keeps any object. Built in: ``memory`` (:class:`MemoryCache`) and ``sqlite``
(:class:`modelplex.sqlite_cache.SQLiteCache`); ``modelplex-redis`` adds ``redis``.

Caches are put in the request path by :class:`modelplex.caching.CachedProvider`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from modelplex.errors import ConfigurationError, UnsupportedOperationError

if TYPE_CHECKING:
    from modelplex.caching import CacheConfig

__all__ = ["Cache", "CacheStats", "MemoryCache"]


@attrs.define
class CacheStats:
    """Counters of a cache: ``hits``, ``misses`` and ``size`` (entries stored now, if known)."""

    backend: str
    hits: int = 0
    misses: int = 0
    size: int | None = None
    location: str | None = None

    @property
    def hit_rate(self) -> float | None:
        """Hits over lookups, or ``None`` before the first lookup."""
        total = self.hits + self.misses
        return self.hits / total if total else None

    def to_dict(self) -> dict[str, Any]:
        """A plain dict for JSON output."""
        return {**attrs.asdict(self), "hit_rate": self.hit_rate}


class Cache:
    """Base class of caches: async ``get``/``set`` by string key, so backends may do I/O.

    Subclasses implement :meth:`get` and :meth:`set`; real backends also implement
    :meth:`delete`, :meth:`clear` and :meth:`stats`. ``ttl`` in :meth:`set` is the time to
    live of that entry in seconds (``None``: the cache's default).
    """

    name: ClassVar[str]

    async def get(self, key: str) -> Any | None:
        """The cached value, or ``None``."""
        raise NotImplementedError

    async def set(self, key: str, value: Any, *, ttl: float | None = None) -> None:
        """Store a value (for ``ttl`` seconds, else the cache's default)."""
        raise NotImplementedError

    async def delete(self, key: str) -> bool:
        """Remove one entry; ``True`` if it was there."""
        raise UnsupportedOperationError(f"cache {self.name!r} cannot delete entries")

    async def clear(self) -> int:
        """Remove every entry; returns how many were removed (if known, else 0)."""
        raise UnsupportedOperationError(f"cache {self.name!r} cannot be cleared")

    async def stats(self) -> CacheStats:
        """Hits, misses and size (the base class knows none of them)."""
        return CacheStats(backend=self.name)

    async def aclose(self) -> None:
        """Free connections and threads."""

    @classmethod
    def from_config(cls, config: CacheConfig) -> Cache:
        """Build the cache a config section describes (``ttl``, ``path``, ``url``, ...).

        The default passes every field that is set as a keyword argument of the class.
        """
        kwargs = config.backend_kwargs()
        try:
            return cls(**kwargs)
        except TypeError as err:
            raise ConfigurationError(
                f"cache backend {config.backend!r} does not accept these settings "
                f"({', '.join(sorted(kwargs)) or 'none'}): {err}") from None
        except ValueError as err:
            raise ConfigurationError(f"cache: {err}") from None


class MemoryCache(Cache):
    """An in-process LRU cache with a time to live (seconds; ``None`` keeps entries)."""

    name: ClassVar[str] = "memory"

    def __init__(self, max_entries: int = 1024, ttl: float | None = 3600.0) -> None:
        if max_entries <= 0:
            raise ValueError("max_entries must be > 0")
        self.max_entries = max_entries
        self.ttl = ttl
        self.hits = 0
        self.misses = 0
        # key -> (expires at, monotonic clock; inf = never, value)
        self._data: OrderedDict[str, tuple[float, Any]] = OrderedDict()

    async def get(self, key: str) -> Any | None:
        """The cached value, or ``None`` if absent or expired."""
        item = self._data.get(key)
        if item is None:
            self.misses += 1
            return None
        expires, value = item
        if expires <= time.monotonic():
            del self._data[key]
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return value

    async def set(self, key: str, value: Any, *, ttl: float | None = None) -> None:
        """Store a value, evicting the least recently used beyond ``max_entries``."""
        ttl = self.ttl if ttl is None else ttl
        expires = float("inf") if ttl is None else time.monotonic() + ttl
        self._data[key] = (expires, value)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    async def delete(self, key: str) -> bool:
        """Remove one entry; ``True`` if it was there."""
        return self._data.pop(key, None) is not None

    async def clear(self) -> int:
        """Remove every entry."""
        count = len(self._data)
        self._data.clear()
        return count

    async def stats(self) -> CacheStats:
        """Hits and misses since this cache was created, and its size."""
        now = time.monotonic()
        size = sum(1 for expires, _ in self._data.values() if expires > now)
        return CacheStats(backend=self.name, hits=self.hits, misses=self.misses, size=size)
