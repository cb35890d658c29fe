"""The request path, built in one place: cache -> router -> provider.

:func:`open_model` turns what a user typed (``"ollama:llama3.2"``, a named model such as
``"fast"``, or nothing for the default) into one :class:`~modelplex.provider.Provider`:

* ``provider:model``: the shared provider from the :class:`~modelplex.pool.ProviderPool`,
  built with the ``[providers.NAME]`` keywords of the config;
* a named model: a :class:`~modelplex.routing.Router` (itself a provider, shared through the
  pool too) over pooled deployment providers, with its fallbacks.

``ChatManager`` and the server both call it; give the provider back with
:func:`release_model`.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
from collections.abc import Mapping
from typing import Any

from modelplex import env
from modelplex.config import Config, get_config
from modelplex.errors import ConfigurationError
from modelplex.plugins import Plugins, get_plugins
from modelplex.pool import ProviderPool, config_key, get_pool
from modelplex.provider import Provider
from modelplex.routing import Deployment, Router
from modelplex.state import MemoryState, RouterState

__all__ = ["open_model", "open_model_named", "open_router", "release_model", "resolve_spec",
           "state_from_config"]

_memory_state = MemoryState()  # one per process: every named model sees every cooldown


def resolve_spec(spec: str | None, config: Config) -> str | None:
    """The model asked for: ``spec``, else the configured default (environment over file)."""
    return spec or env.default_model() or config.default_model or None


def state_from_config(table: Mapping[str, Any]) -> RouterState:
    """The router state of a ``[state]`` table: ``backend = "memory"`` (default), a name
    registered through ``register_state_backends`` (``"redis"`` with modelplex-redis), or
    ``"module:Class"``, built with the other keys."""
    backend = str(table.get("backend", "memory"))
    if backend == "memory":
        return _memory_state
    if ":" not in backend:  # a name registered through register_state_backends
        from modelplex.errors import PluginError
        from modelplex.state_backends import open_state

        try:
            return open_state(dict(table))
        except PluginError as err:
            hint = " (pip install modelplex-redis)" if backend == "redis" else ""
            raise ConfigurationError(f"state.backend = {backend!r} cannot be used{hint}: "
                                     f"{err}") from None
    target = backend
    module_name, _, class_name = target.partition(":")
    kwargs = {k: v for k, v in table.items() if k != "backend"}
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
        state = cls(**kwargs)
    except (ImportError, AttributeError, TypeError, ValueError) as err:
        raise ConfigurationError(f"state.backend = {backend!r} cannot be used: "
                                 f"{type(err).__name__}: {err}") from None
    if not isinstance(state, RouterState):
        raise ConfigurationError(f"state.backend = {backend!r} is not a RouterState")
    return state


def _short(value: Any) -> str:
    return hashlib.sha256(config_key(value).encode()).hexdigest()[:12]


async def open_router(name: str, *, config: Config | None = None,
                      pool: ProviderPool | None = None, plugins: Plugins | None = None,
                      provider_config: Mapping[str, Mapping[str, Any]] | None = None,
                      _opening: frozenset[str] = frozenset()) -> Router:
    """The shared router of the named model ``name`` (release it with :func:`release_model`).

    A deployment's provider is built with the ``[providers.NAME]`` keywords, then
    ``provider_config[NAME]`` (code, e.g. the command's timeouts), then the deployment's own.
    """
    config = config or get_config()
    pool = pool or get_pool()
    plugins = plugins or get_plugins()
    if name not in config.models:
        raise ConfigurationError(f"no named model {name!r}; define [models.{name}] in "
                                 f"{config.source or 'the config'}")
    model = config.models[name]
    where = config.source or "the config"
    overrides = {k: dict(v) for k, v in (provider_config or {}).items()}
    key = f"router:{name}:{id(plugins)}:{_short([config.model_dump(), overrides])}"

    async def build() -> Router:
        held: list[Any] = []
        try:
            deployments = []
            for index, dep in enumerate(model.deployments):
                kwargs = {**config.provider_kwargs(dep.provider),
                          **overrides.get(dep.provider, {}), **dep.provider_kwargs}
                try:
                    provider = await pool.acquire(dep.provider, kwargs, plugins=plugins)
                except ConfigurationError as err:
                    raise ConfigurationError(
                        f"{where}: models.{name}.deployments.{index} ({dep.model}): {err}"
                    ) from None
                held.append(provider)
                deployments.append(Deployment(
                    provider, dep.model_name, name=dep.label, weight=dep.weight,
                    max_concurrency=dep.max_concurrency, rpm=dep.rpm, options=dep.options,
                    key=f"{dep.model}@{_short(kwargs)}"))
            fallbacks = []
            for fallback in model.fallbacks:
                if fallback in _opening or fallback == name:
                    continue  # a cycle: the chain already holds it
                router = await open_router(fallback, config=config, pool=pool, plugins=plugins,
                                           provider_config=provider_config,
                                           _opening=_opening | {name})
                held.append(router)
                fallbacks.append(router)
            state = state_from_config(config.state)
        except BaseException:
            for value in reversed(held):
                await pool.release(value)
            raise

        async def release_all() -> None:
            for value in reversed(held):
                await pool.release(value)
            if state is not _memory_state:  # a backend built for this router (e.g. Redis)
                with contextlib.suppress(Exception):
                    await state.aclose()

        try:
            return Router(name, deployments, strategy=model.strategy, fallbacks=fallbacks,
                          retries=model.retries, state=state, options=model.options,
                          on_close=release_all)
        except ConfigurationError as err:
            await release_all()
            raise ConfigurationError(f"{where}: models.{name}: {err}") from None

    router: Router = await pool.acquire_shared(key, build)
    return router


async def open_model(spec: str | None = None, *, config: Config | None = None,
                     pool: ProviderPool | None = None, cache: Any = None,
                     plugins: Plugins | None = None,
                     provider_config: Mapping[str, Mapping[str, Any]] | None = None
                     ) -> tuple[Provider, str]:
    """The provider that serves ``spec`` and the model name to send it.

    ``spec`` is ``"provider:model"``, a provider name, a named model of the config, or
    ``None`` for the configured default. ``provider_config`` adds constructor keywords per
    provider name over the config's ``[providers.NAME]`` tables. Give the provider back with
    :func:`release_model` when done.
    """
    provider, model_name, _ = await open_model_named(
        spec, config=config, pool=pool, cache=cache, plugins=plugins,
        provider_config=provider_config)
    return provider, model_name


async def open_model_named(spec: str | None = None, *, config: Config | None = None,
                           pool: ProviderPool | None = None, cache: Any = None,
                           plugins: Plugins | None = None,
                           provider_config: Mapping[str, Mapping[str, Any]] | None = None
                           ) -> tuple[Provider, str, str]:
    """:func:`open_model`, and the name to show as the provider: the provider's registered
    name (``"ollama"``), or the named model's."""
    from modelplex.specs import parse_model_spec

    config = config or get_config()
    pool = pool or get_pool()
    plugins = plugins or get_plugins()
    spec = resolve_spec(spec, config)
    provider: Provider
    if spec is not None and spec in config.models:
        # -- router layer: retries, fallbacks, balancing over pooled providers ----------------
        provider = await open_router(spec, config=config, pool=pool, plugins=plugins,
                                     provider_config=provider_config)
        model_name = provider_name = spec
    else:
        # -- provider layer: one shared instance per name and configuration -------------------
        provider_name, requested = parse_model_spec(spec, plugins)
        kwargs = {**config.provider_kwargs(provider_name),
                  **dict((provider_config or {}).get(provider_name, {}))}
        provider = await pool.acquire(provider_name, kwargs, plugins=plugins)
        model_name = requested or provider.default_model or ""
        if not model_name:
            await pool.release(provider)
            raise ConfigurationError(f"provider {provider_name!r} has no default model: "
                                     f"name one as '{provider_name}:MODEL'")
    # -- cache layer: a response cache in front of the router or provider --------------------
    if cache is not None:
        provider = _with_cache(provider, cache)
    return provider, model_name, provider_name


def _with_cache(provider: Provider, cache: Any) -> Provider:
    """``provider`` behind ``cache``: a :class:`~modelplex.caching.CacheLayer` or a
    :class:`~modelplex.caches.Cache` (opened, and closed, by the caller)."""
    from modelplex.caches import Cache
    from modelplex.caching import CachedProvider, CacheLayer

    if isinstance(cache, CacheLayer):
        return cache.wrap(provider)
    if isinstance(cache, Cache):
        return CachedProvider(provider, cache)
    raise ConfigurationError(f"cache must be a modelplex Cache or CacheLayer (got {cache!r})")


async def release_model(provider: Provider, *, pool: ProviderPool | None = None) -> None:
    """Give back a provider from :func:`open_model` (wrapping layers are unwrapped first)."""
    pool = pool or get_pool()
    while pool.holders(provider) == 0 and getattr(provider, "wrapped", None) is not None:
        provider = provider.wrapped  # type: ignore[attr-defined]
    await pool.release(provider)
