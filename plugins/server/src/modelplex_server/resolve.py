"""From a model id in a request to the provider that answers it: the server's one seam.

Every endpoint that talks to a model awaits :meth:`ModelResolver.resolve_model`; the server
never builds requests to providers another way. It is one more caller of
:func:`modelplex.pipeline.open_model_named`, the path ``ChatManager`` takes: a model id is a
named model of the config (``[models.fast]``: a router with its deployments, strategy, retries
and fallbacks) or ``provider:model`` (``ollama:llama3.2``, ``llamacpp:smollm2``), served by the
shared :class:`~modelplex.pool.ProviderPool` with the config's ``[providers.NAME]`` keywords.

The resolver holds each provider (or router) it opened until the server stops
(:meth:`ModelResolver.aclose` gives them back to the pool).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

from modelplex.config import Config, get_config, parse_config
from modelplex.errors import ConfigurationError
from modelplex.pipeline import open_model_named, release_model
from modelplex.plugins import Plugins, get_plugins
from modelplex.pool import ProviderPool, get_pool
from modelplex.provider import Provider
from modelplex.routing import Router
from modelplex.specs import parse_model_spec

__all__ = ["ModelResolver", "named_model_targets"]


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
            ``MODELPLEX_CONFIG``): its ``[providers.NAME]`` and ``[models.NAME]`` tables.
        plugins: where providers come from (default: the process-wide plugins).
        pool: the provider pool (default: the process-wide one).
        named_models: extra named models as ``{"name": "provider:model"}``.
        provider_config: keyword configuration per provider name, over the config's.
    """

    def __init__(self, *, config: Config | None = None, plugins: Plugins | None = None,
                 pool: ProviderPool | None = None,
                 named_models: Mapping[str, str] | None = None,
                 provider_config: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.plugins = plugins or get_plugins()
        self.config = _with_legacy_models(config or get_config(), named_models or {})
        self.pool = pool or get_pool()
        self._provider_config = {name: dict(cfg)
                                 for name, cfg in (provider_config or {}).items()}
        self._held: dict[str, Provider] = {}
        self._lock = asyncio.Lock()

    @property
    def named_models(self) -> dict[str, str]:
        """The named models (model ids of the config) and what they stand for."""
        return named_model_targets(self.config)

    async def _open(self, key: str, name: str, *, named: bool) -> Provider:
        provider = self._held.get(key)
        if provider is None:
            async with self._lock:
                provider = self._held.get(key)
                if provider is None:
                    if named:
                        provider, _, _ = await open_model_named(
                            name, config=self.config, pool=self.pool, plugins=self.plugins,
                            provider_config=self._provider_config)
                    else:  # the keywords open_model_named uses: the same pooled instance
                        kwargs = {**self.config.provider_kwargs(name),
                                  **self._provider_config.get(name, {})}
                        provider = await self.pool.acquire(name, kwargs, plugins=self.plugins)
                    self._held[key] = provider
        return provider

    async def provider(self, name: str) -> Provider:
        """The shared instance of provider ``name`` (from the pool, held until closed)."""
        return await self._open(f"provider:{name}", name, named=False)

    def router(self, name: str) -> Router | None:
        """The router of named model ``name`` when a request opened it already."""
        held = self._held.get(f"model:{name}")
        return held if isinstance(held, Router) else None

    async def resolve_model(self, model_id: str) -> tuple[Provider, str]:
        """The provider and model name for ``model_id``.

        Raises :class:`~modelplex.errors.UnknownProviderError` (no such provider) or
        :class:`~modelplex.errors.ConfigurationError` (not a model id).
        """
        if not model_id:
            raise ConfigurationError("model is required: name one as 'provider:model' or a "
                                     "named model (GET /v1/models lists them)")
        if model_id in self.config.models:
            return await self._open(f"model:{model_id}", model_id, named=True), model_id
        provider_name, model = parse_model_spec(model_id, self.plugins)
        provider = await self.provider(provider_name)
        model = model or provider.default_model
        if not model:
            raise ConfigurationError(f"provider {provider_name!r} has no default model: "
                                     f"name one as '{provider_name}:MODEL'")
        return provider, model

    async def aclose(self) -> None:
        """Give every provider and router opened back to the pool."""
        held, self._held = list(self._held.values()), {}
        for provider in held:
            with contextlib.suppress(Exception):
                await release_model(provider, pool=self.pool)
