"""Store keys by hash, cached per process (see :mod:`modelplex_server.keys`)."""

from __future__ import annotations

import time
from collections import OrderedDict

from modelplex_server.conversations import ConversationStore
from modelplex_server.settings import KeyConfig

__all__ = ["CACHE_SECONDS", "KeyLookup"]

#: Seconds a store key lookup (found or not) is reused.
CACHE_SECONDS = 5.0
_CACHE_SIZE = 10_000


class KeyLookup:
    """Store keys by hash, cached per process (see the module docs)."""

    def __init__(self, store: ConversationStore) -> None:
        self.store = store
        self._cache: OrderedDict[str, tuple[float, KeyConfig | None]] = OrderedDict()

    async def find(self, hashed: str) -> KeyConfig | None:
        """The store's key whose hash is ``hashed`` (None: none, or revoked)."""
        now = time.monotonic()
        cached = self._cache.get(hashed)
        if cached is not None and cached[0] > now:
            return cached[1]
        stored = await self.store.find_key(hashed)
        key = stored.key if stored is not None else None
        self._cache[hashed] = (now + CACHE_SECONDS, key)
        self._cache.move_to_end(hashed)
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return key

    def forget(self, name: str | None = None) -> None:
        """Drop cached lookups (of the key ``name``, or all)."""
        if name is None:
            self._cache.clear()
            return
        for hashed, (_, key) in list(self._cache.items()):
            if key is not None and key.name == name:
                del self._cache[hashed]
