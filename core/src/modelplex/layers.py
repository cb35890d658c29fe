"""What a :class:`~modelplex.manager.ChatManager` asks of the request path, and owns.

The stack itself is built by :func:`modelplex.pipeline.open_model` (recording -> telemetry ->
cache -> router -> provider); :class:`ManagerLayers` holds the manager's ``cache``,
``conversation`` and ``logs`` settings, opens the cache and the conversation database they
name (once, for every model the manager switches to) and closes what it opened.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from modelplex.caches import Cache, CacheConfig

if TYPE_CHECKING:
    from modelplex.caching import CacheLayer
    from modelplex.plugins import Plugins
    from modelplex.provider import Provider
    from modelplex.store.logs import LogStore
    from modelplex.types import ChatMessage

__all__ = ["ManagerLayers"]


class ManagerLayers:
    """The cache and conversation settings of one manager, and what they opened.

    A bad ``cache`` setting raises :class:`~modelplex.errors.ConfigurationError` here, when
    the manager is created.
    """

    def __init__(self, *, cache: Cache | CacheConfig | str | Mapping[str, Any] | bool | None,
                 conversation: str | bool | None,
                 logs: LogStore | str | os.PathLike[str] | None) -> None:
        if cache is not None and not isinstance(cache, bool | Cache):
            cache = CacheConfig.parse(cache)
        self.cache_setting = cache
        self._layer: CacheLayer | None = None
        self._owns_cache = False
        self.conversation = conversation
        self.logs = logs
        self.store: LogStore | None = None
        self._conversation_id: str | None = None

    def cache_layer(self, plugins: Plugins, default: Mapping[str, Any] | None = None
                    ) -> CacheLayer | None:
        """The cache layer (its cache opened on first use), or ``None`` without a cache.

        ``default`` (the config file's ``cache`` section) applies when the manager was given
        no ``cache``.
        """
        setting = self.cache_setting
        if setting is None and default:
            setting = self.cache_setting = CacheConfig.parse(default)
        if setting is None or setting is False:
            return None
        if self._layer is None:
            from modelplex.caching import CacheLayer

            self._layer, self._owns_cache = CacheLayer.open(setting, plugins)
        return self._layer

    # -- conversations ---------------------------------------------------------------------
    def log_store(self) -> LogStore | None:
        """The conversation database, opened on first use (``None`` without a conversation)."""
        if self.conversation is None or self.conversation is False:
            return None
        if self.store is None:
            from modelplex.store.logs import LogStore, new_conversation_id

            logs = self.logs
            self.store = logs if isinstance(logs, LogStore) else LogStore(logs)
            if self._conversation_id is None:
                self._conversation_id = (self.conversation
                                         if isinstance(self.conversation, str)
                                         else new_conversation_id())
        return self.store

    @property
    def conversation_id(self) -> str | None:
        """The id of the stored conversation, else ``None``."""
        self.log_store()
        return self._conversation_id

    def history(self) -> tuple[list[ChatMessage], str | None]:
        """The stored conversation's messages and last system prompt (empty without one)."""
        store = self.log_store()
        if store is None or self._conversation_id is None:
            return [], None
        from modelplex.store.conversations import history_of

        return history_of(store, self._conversation_id)

    def restart_conversation(self, provider: Provider | None) -> None:
        """Store what follows as a new conversation (after the history was cleared)."""
        if self.store is None:
            return
        from modelplex.recording import RecordingProvider
        from modelplex.store.logs import new_conversation_id

        self._conversation_id = new_conversation_id()
        layer: Any = provider
        while layer is not None:  # the recording and telemetry layers, wherever they sit
            if isinstance(layer, RecordingProvider) or "conversation_id" in vars(layer):
                layer.conversation_id = self._conversation_id
            layer = getattr(layer, "wrapped", None)

    async def aclose(self) -> None:
        """Close the database and the cache if they were opened here."""
        store, self.store = self.store, None
        if store is not None and store is not self.logs:
            await store.aclose()
        layer, self._layer = self._layer, None
        if layer is not None and self._owns_cache:
            with contextlib.suppress(Exception):
                await layer.cache.aclose()
