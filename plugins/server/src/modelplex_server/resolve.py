"""From a model id in a request to the provider that answers it: the server's one seam.

Every endpoint that talks to a model awaits :meth:`ModelResolver.resolve_model`; the server
never builds requests to providers another way. It is one more caller of
:func:`modelplex.pipeline.open_model`, the path ``ChatManager`` and ``modelplex chat`` take,
so the stack is the same: mcp -> recording -> telemetry -> cache -> router -> provider (the
``mcp`` layer runs the MCP tools of a named model with ``mcp = [...]``). A model id is a named
model of the config (``[models.fast]``: a router with its deployments, strategy,
retries and fallbacks) or ``provider:model`` (``ollama:llama3.2``, ``llamacpp:smollm2``: a
router of one deployment), over the shared :class:`~modelplex.pool.ProviderPool` with the
config's ``[providers.NAME]`` keywords; the config's ``[cache]`` table caches answers as it
does for ``modelplex chat``.

The resolver holds each stack it opened (a :class:`~modelplex.pipeline.Lease` per model id)
until the server stops (:meth:`ModelResolver.aclose` releases them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from modelplex.caching import CacheLayer
from modelplex.config import Config, get_config, parse_config
from modelplex.errors import ConfigurationError
from modelplex.pipeline import Lease, open_model
from modelplex.plugins import Plugins, get_plugins
from modelplex.pool import ProviderPool, get_pool
from modelplex.provider import Provider
from modelplex.routing import Router
from modelplex.specs import parse_model_spec

if TYPE_CHECKING:
    from modelplex.store.logs import LogStore

__all__ = ["ModelResolver", "named_model_targets"]

log = logging.getLogger("modelplex.server")


def named_model_targets(config: Config) -> dict[str, str]:
    """Each named model of ``config`` and what it stands for (its deployments, then
    ``-> fallback`` for each fallback), as the model lists show it."""
    out = {}
    for name, model in config.models.items():
        target = ", ".join(dep.model for dep in model.deployments)
        out[name] = " -> ".join([target, *model.fallbacks])
    return out


def _with_legacy_models(config: Config, named_models: Mapping[str, str]) -> Config:
    """``config`` with ``{"name": "provider:model"}`` entries added as one-deployment named
    models (the server's older ``[server.models]`` table); the config's own win."""
    extra = {name: {"model": target} for name, target in named_models.items()
             if name not in config.models}
    if not extra:
        return config
    data = config.model_dump(mode="python")
    data["models"] = {**data.get("models", {}), **extra}
    return parse_config(data, source=config.source or "<server settings>")


class ModelResolver:
    """Resolves model ids to ``(provider, model name)`` through the shared request path.

    Args:
        config: the modelplex configuration (default: the process-wide one, from
            ``MODELPLEX_CONFIG``): its ``[providers.NAME]``, ``[models.NAME]``, ``[cache]``
            and ``[retries]`` tables.
        plugins: where providers come from (default: the process-wide plugins).
        pool: the provider pool (default: the process-wide one).
        named_models: extra named models as ``{"name": "provider:model"}``.
        provider_config: keyword configuration per provider name, over the config's.
        logs: the :class:`~modelplex.store.logs.LogStore` (or its path) every exchange is stored
            in, as ``modelplex chat`` does (``modelplex serve`` passes the same database);
            ``None``: exchanges are only logged (``modelplex.exchange`` at INFO).
    """

    def __init__(self, *, config: Config | None = None, plugins: Plugins | None = None,
                 pool: ProviderPool | None = None,
                 named_models: Mapping[str, str] | None = None,
                 provider_config: Mapping[str, Mapping[str, Any]] | None = None,
                 logs: LogStore | str | os.PathLike[str] | None = None) -> None:
        self.plugins = plugins or get_plugins()
        self.config = _with_legacy_models(config or get_config(), named_models or {})
        self.pool = pool or get_pool()
        self._provider_config = {name: dict(cfg)
                                 for name, cfg in (provider_config or {}).items()}
        self._logs = logs
        self._store: LogStore | None = None
        self._cache: CacheLayer | None = None
        self._cache_opened = False
        self._leases: dict[str, Lease] = {}
        self._providers: dict[str, Provider] = {}
        self._lock = asyncio.Lock()

    @property
    def named_models(self) -> dict[str, str]:
        """The named models (model ids of the config) and what they stand for."""
        return named_model_targets(self.config)

    def _shared_layers(self) -> tuple[CacheLayer | None, LogStore | None]:
        """The cache of the config's ``[cache]`` table and the log store, opened once for
        every model (closed by :meth:`aclose`)."""
        if not self._cache_opened:
            self._cache_opened = True
            if self.config.cache:
                self._cache, _ = CacheLayer.open(self.config.cache, self.plugins)
        if self._store is None and self._logs is not None:
            from modelplex.store.logs import LogStore

            if isinstance(self._logs, LogStore):
                self._store = self._logs
            else:
                try:
                    self._store = LogStore(self._logs)
                except Exception as err:  # storage failing never fails a request
                    log.warning("exchanges are not stored: the log database %s cannot be "
                                "used: %s", self._logs, err)
                    self._logs = None
        return self._cache, self._store

    async def lease(self, model_id: str) -> Lease:
        """The stack serving ``model_id`` (opened on first use, held until closed)."""
        lease = self._leases.get(model_id)
        if lease is None:
            async with self._lock:
                lease = self._leases.get(model_id)
                if lease is None:
                    cache, store = self._shared_layers()
                    lease = await open_model(
                        model_id, config=self.config, pool=self.pool, plugins=self.plugins,
                        provider_config=self._provider_config, cache=cache or False,
                        logs=store, caller="server")
                    self._leases[model_id] = lease
        return lease

    async def provider(self, name: str) -> Provider:
        """The shared instance of provider ``name`` for model management (listing, pulling;
        from the pool, held until closed); requests go through :meth:`resolve_model`."""
        provider = self._providers.get(name)
        if provider is None:
            async with self._lock:
                provider = self._providers.get(name)
                if provider is None:  # the keywords open_model uses: the same pooled instance
                    kwargs = {**self.config.provider_kwargs(name),
                              **self._provider_config.get(name, {})}
                    provider = await self.pool.acquire(name, kwargs, plugins=self.plugins)
                    self._providers[name] = provider
        return provider

    def router(self, name: str) -> Router | None:
        """The router of named model ``name`` when a request opened it already."""
        lease = self._leases.get(name)
        return lease.base if lease is not None and isinstance(lease.base, Router) \
            and not lease.base.plain else None

    async def resolve_model(self, model_id: str) -> tuple[Provider, str]:
        """The top of the stack serving ``model_id`` and the model name to send it.

        Raises :class:`~modelplex.errors.UnknownProviderError` (no such provider) or
        :class:`~modelplex.errors.ConfigurationError` (not a model id).
        """
        if not model_id:
            raise ConfigurationError("model is required: name one as 'provider:model' or a "
                                     "named model (GET /v1/models lists them)")
        if model_id not in self.config.models:
            parse_model_spec(model_id, self.plugins)  # an unknown provider fails here
        lease = await self.lease(model_id)
        return lease.provider, lease.model

    async def aclose(self) -> None:
        """Give every stack and provider opened back, and close the cache and log store."""
        leases, self._leases = list(self._leases.values()), {}
        for lease in leases:
            with contextlib.suppress(Exception):
                await lease.release()
        providers, self._providers = list(self._providers.values()), {}
        for provider in providers:
            with contextlib.suppress(Exception):
                await self.pool.release(provider)
        cache, self._cache = self._cache, None
        self._cache_opened = False
        if cache is not None:
            with contextlib.suppress(Exception):
                await cache.cache.aclose()
        store, self._store = self._store, None
        if store is not None and store is not self._logs:
            with contextlib.suppress(Exception):
                await store.aclose()
