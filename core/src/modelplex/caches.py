"""Response caches, registered through ``register_caches``.

A :class:`Cache` maps string keys to values, with a time to live per entry and counters of
hits and misses. Values stored by modelplex itself (cached answers, embeddings) are plain
JSON data (dicts, lists, strings, numbers), so a backend may serialise them; the in-memory
cache keeps any object. Built in: ``memory`` (:class:`MemoryCache`) and ``sqlite``
(:class:`modelplex.store.sqlite_cache.SQLiteCache`); ``modelplex-redis`` adds ``redis``.

:class:`CacheConfig` is the ``[cache]`` table of the config file (or
``ChatManager(cache=...)``) and :func:`open_cache` builds the cache it names. Caches are put
in the request path by the cache layer, :class:`modelplex.caching.CachedProvider`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, ClassVar

import attrs
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from modelplex._validation import describe
from modelplex.errors import ConfigurationError, UnsupportedOperationError

__all__ = ["Cache", "CacheConfig", "CacheStats", "MemoryCache", "open_cache"]


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


class CacheConfig(BaseModel):
    """The ``cache`` section of the config file, or ``ChatManager(cache=...)``.

    ``"sqlite"`` alone is short for ``{"backend": "sqlite"}``.
    """

    model_config = ConfigDict(extra="forbid")

    backend: str = Field(default="memory", min_length=1,
                         description="A registered cache: memory, sqlite, redis, ...")
    ttl: float | None = Field(default=3600.0, gt=0,
                              description="Seconds an answer is kept (None: until cleared).")
    path: str | None = Field(default=None, description="sqlite: the database file.")
    url: str | None = Field(default=None, description="redis: the server URL.")
    max_entries: int | None = Field(default=None, gt=0, description="memory: LRU size.")
    nondeterministic: bool = Field(
        default=False, description="Also cache requests with temperature > 0 and no seed.")
    options: dict[str, Any] = Field(default_factory=dict,
                                    description="Other keyword arguments of the backend.")

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        return {"backend": value} if isinstance(value, str) else value

    def backend_kwargs(self) -> dict[str, Any]:
        """The keyword arguments for the backend's class: the fields that are set."""
        kwargs: dict[str, Any] = {"ttl": self.ttl}
        for field in ("path", "url", "max_entries"):
            value = getattr(self, field)
            if value is not None:
                kwargs[field] = value
        kwargs.update(self.options)
        return kwargs

    @classmethod
    def parse(cls, value: Any) -> CacheConfig:
        """Validate a config section; a bad one raises :class:`ConfigurationError`."""
        if isinstance(value, CacheConfig):
            return value
        try:
            return cls.model_validate(value)
        except ValidationError as err:
            detail = describe(err, CacheConfig, "cache")
            raise ConfigurationError(f"{detail} (see docs/caches.md)") from None


def open_cache(config: CacheConfig | str | Mapping[str, Any], plugins: Any = None) -> Cache:
    """Build the cache a config names, from the caches registered by plugins."""
    from modelplex.plugins import get_plugins

    cfg = CacheConfig.parse(config)
    cls = (plugins or get_plugins()).get("caches", cfg.backend)
    cache = cls.from_config(cfg) if hasattr(cls, "from_config") else cls(**cfg.backend_kwargs())
    if not isinstance(cache, Cache):
        raise ConfigurationError(f"cache backend {cfg.backend!r} built {cache!r}, "
                                 "not a modelplex.caches.Cache")
    return cache
