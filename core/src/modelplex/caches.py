"""Response caches, registered through ``register_caches``."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, ClassVar

__all__ = ["Cache", "MemoryCache"]


class Cache:
    """Base class of caches: ``get``/``set`` by string key, async so backends may do I/O."""

    name: ClassVar[str]

    async def get(self, key: str) -> Any | None:
        """The cached value, or ``None``."""
        raise NotImplementedError

    async def set(self, key: str, value: Any) -> None:
        """Store a value."""
        raise NotImplementedError


class MemoryCache(Cache):
    """An in-process LRU cache with a time to live (seconds; ``None`` keeps entries)."""

    name: ClassVar[str] = "memory"

    def __init__(self, max_entries: int = 1024, ttl: float | None = 3600.0) -> None:
        if max_entries <= 0:
            raise ValueError("max_entries must be > 0")
        self.max_entries = max_entries
        self.ttl = ttl
        self._data: OrderedDict[str, tuple[float, Any]] = OrderedDict()

    async def get(self, key: str) -> Any | None:
        """The cached value, or ``None`` if absent or expired."""
        item = self._data.get(key)
        if item is None:
            return None
        stored, value = item
        if self.ttl is not None and time.monotonic() - stored > self.ttl:
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

    async def set(self, key: str, value: Any) -> None:
        """Store a value, evicting the least recently used beyond ``max_entries``."""
        self._data[key] = (time.monotonic(), value)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)
