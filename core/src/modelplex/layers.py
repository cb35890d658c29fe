"""What a :class:`~modelplex.manager.ChatManager` asks of the request path, and owns.

The stack itself is built by :func:`modelplex.pipeline.open_model` (mcp -> recording ->
telemetry -> cache -> router -> provider); :class:`ManagerLayers` holds the manager's settings
for it (config, pool, plugins, provider keywords, retries, ``cache``, ``conversation`` and
``logs``), resolves the model asked for (``"auto"`` by the selection criteria, a bare model
name through the registry), opens its stack (:meth:`ManagerLayers.open`), opens the cache
and the conversation database the settings name (once, for every model the manager switches
to) and releases or closes everything it opened.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from modelplex.caches import Cache, CacheConfig
from modelplex.config import Config, RetryConfig, check_provider_config, get_config
from modelplex.errors import ConfigurationError
from modelplex.pipeline import open_model
from modelplex.plugins import Plugins, get_plugins
from modelplex.pool import ProviderPool
from modelplex.registry import resolve_bare_model
from modelplex.selection import select_model_spec

if TYPE_CHECKING:
    from modelplex.caching import CacheLayer
    from modelplex.pipeline import Lease
    from modelplex.provider import Provider
    from modelplex.store.logs import LogStore
    from modelplex.types import ChatMessage

__all__ = ["ManagerLayers"]


def _check_settings(config: Any, pool: Any, plugins: Any, conversation: Any, logs: Any,
                    retries: Any) -> None:
    """Refuse a setting of the wrong type when the manager is made, naming it and what it
    takes (instead of an ``AttributeError`` from deep inside the first message)."""
    wrong = None
    if config is not None and not isinstance(config, Config):
        wrong = "config", config, ("a Config (modelplex.config.load_config() or "
                                   "parse_config({...}))")
    elif pool is not None and not isinstance(pool, ProviderPool):
        wrong = "pool", pool, "a ProviderPool (modelplex.pool.get_pool())"
    elif plugins is not None and not isinstance(plugins, Plugins):
        wrong = "plugins", plugins, "a Plugins (modelplex.plugins.get_plugins())"
    elif conversation is not None and not isinstance(conversation, str | bool):
        wrong = "conversation", conversation, ("True (a new stored conversation) or the id "
                                               "of one to go on with")
    elif retries is not None and not isinstance(retries, RetryConfig) and (
            isinstance(retries, bool) or not isinstance(retries, int) or retries < 0):
        wrong = "retries", retries, "a whole number of retries, 0 or more"
    elif logs is not None and not isinstance(logs, str | os.PathLike):
        from modelplex.store.logs import LogStore  # only for a store object given

        if not isinstance(logs, LogStore):
            wrong = "logs", logs, "the path of the conversation database, or a LogStore"
    if wrong is not None:
        name, value, takes = wrong
        raise ConfigurationError(f"ChatManager: {name} must be {takes} "
                                 f"(got {type(value).__name__})")


class ManagerLayers:
    """The request-path settings of one manager (see :class:`~modelplex.manager.ChatManager`
    for each), and what they opened.

    A bad ``cache`` setting raises :class:`~modelplex.errors.ConfigurationError` here, when
    the manager is created.
    """

    def __init__(self, *, cache: Cache | CacheConfig | str | Mapping[str, Any] | bool | None,
                 conversation: str | bool | None,
                 logs: LogStore | str | os.PathLike[str] | None,
                 config: Config | None = None, pool: ProviderPool | None = None,
                 plugins: Plugins | None = None, select: Any = None,
                 provider_config: Mapping[str, Mapping[str, Any]] | None = None,
                 retries: int | RetryConfig | None = None) -> None:
        if config is not None or pool is not None or plugins is not None or \
                conversation is not None or logs is not None or retries is not None:
            _check_settings(config, pool, plugins, conversation, logs, retries)
        self.config = config
        self.pool = pool
        self.chosen_plugins = plugins
        self.select = select
        self.provider_config = check_provider_config(provider_config)  # {} at no cost
        self.retries = retries
        self._leases: dict[tuple[str, str], Lease] = {}
        if cache is not None and not isinstance(cache, bool | Cache):
            cache = CacheConfig.parse(cache)
        self.cache_setting = cache
        self._layer: CacheLayer | None = None
        self._owns_cache = False
        self.conversation = conversation
        self.logs = logs
        self.store: LogStore | None = None
        self._conversation_id: str | None = None

    @property
    def plugins(self) -> Plugins:
        """The plugins providers come from (the process-wide ones unless given)."""
        return self.chosen_plugins or get_plugins()

    async def open(self, model: str | None) -> Lease:
        """The stack serving ``model`` (``"auto"``, or ``None`` with ``select`` criteria: the
        model they select; a bare model name: the one provider that lists it), opened through
        :func:`~modelplex.pipeline.open_model`. It replaces the stack held for the same model
        (the fresh one records under the current conversation id)."""
        plugins = self.chosen_plugins or get_plugins()
        if model == "auto" or (model is None and self.select is not None):
            model = await select_model_spec(self.select or {}, plugins=plugins)
        config = self.config or get_config()
        if model is not None and ":" not in model:  # "provider:model" is returned unchanged
            model = await resolve_bare_model(model, plugins=plugins, named=config.models,
                                             provider_config=self.provider_config)
        cache = self.cache_layer(plugins, default=config.cache)
        store = self.log_store()
        lease = await open_model(
            model, config=config, pool=self.pool, plugins=plugins,
            provider_config=self.provider_config, cache=cache or False,
            logs=store, conversation_id=self._conversation_id if store is not None else None,
            retries=self.retries, caller="chat")
        key = (lease.provider_name, lease.model)
        held = self._leases.pop(key, None)
        self._leases[key] = lease
        if held is not None:
            with contextlib.suppress(Exception):
                await held.release()
        return lease

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
        if self.store is None:  # opened (and the id made) on first use
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
        """Give back every stack opened (closed when no other manager uses it), and close
        the database and the cache if they were opened here."""
        leases, self._leases = list(self._leases.values()), {}
        for lease in leases:
            with contextlib.suppress(Exception):
                await lease.release()
        store, self.store = self.store, None
        if store is not None and store is not self.logs:
            await store.aclose()
        layer, self._layer = self._layer, None
        if layer is not None and self._owns_cache:
            with contextlib.suppress(Exception):
                await layer.cache.aclose()
