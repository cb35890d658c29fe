"""The request path, built in one place: :func:`open_model` and the list :data:`PATH`.

Every caller (a :class:`~modelplex.manager.ChatManager` turn, ``modelplex chat``, each API of
``modelplex serve``, the seed-002 compatibility layer) asks :func:`open_model` for a stack and
talks to its top::

    caller -> open_model(spec) -> Lease
        mcp -> recording -> telemetry -> cache -> router -> provider

* ``provider:model``: the shared provider from the :class:`~modelplex.pool.ProviderPool`
  (built with the config's ``[providers.NAME]`` keywords), behind a router of one deployment
  kept in the pool with it, one per model and retry policy (retries honouring
  ``Retry-After``, backoff, the streaming rule; see docs/routing.md);
* a named model: its :class:`~modelplex.routing.Router` (shared through the pool) over pooled
  deployment providers, with its fallbacks;
* then, from the inside out, the layers of :data:`PATH` that are active for this stack: the
  response cache, the layers plugins register through ``register_layers`` (telemetry,
  guardrails), the recording of each exchange, and for a named model with ``mcp`` servers
  the loop that runs their tools.

The :class:`Lease` releases exactly what :func:`open_model` opened: the layers it built, the
cache it opened, its reference to the pooled provider or router.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import logging
import os
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from modelplex import _reopen, env
from modelplex.config import Config, RetryConfig, check_provider_config, get_config
from modelplex.errors import ConfigurationError, ModelplexError, PluginError
from modelplex.plugins import Plugins, get_plugins
from modelplex.pool import ProviderPool, config_key, get_pool, provider_key
from modelplex.provider import Provider
from modelplex.routing import Deployment, MemoryState, Router, RouterState
from modelplex.specs import parse_model_spec
from modelplex.stats import stats_for
from modelplex.wrapping import LayerContext, WrappingProvider

if TYPE_CHECKING:
    from modelplex.store.logs import LogStore

__all__ = [
    "PATH",
    "LayerFactory",
    "Lease",
    "layer_order",
    "open_model",
    "open_router",
    "release_model",
    "resolve_spec",
    "single_retries",
    "state_from_config",
]

log = logging.getLogger("modelplex.pipeline")
_exchange_log = logging.getLogger("modelplex.exchange")  # where RecordingProvider logs

LayerFactory = Callable[[Provider, LayerContext], "Provider | None"]

#: The request path from the caller inwards: the one list every stack is built from.
#:
#: ``mcp`` (a named model's MCP tools, :mod:`modelplex.mcp.layer`), ``recording`` and
#: ``cache`` are built in; ``telemetry`` is the slot of
#: :mod:`modelplex.telemetry` (registered by the built-ins; a plugin's own tracing layer goes
#: next to it with ``before=``/``after="telemetry"``); ``router`` (retries, fallbacks,
#: balancing) and ``provider`` are the base every stack has. Other layers registered through
#: ``register_layers(register)`` go where their ``before=``/``after=`` put them, above the
#: router.
PATH: tuple[str, ...] = ("mcp", "recording", "telemetry", "cache", "router", "provider")

_BASE = ("router", "provider")

_memory_state = MemoryState()  # one per process: every named model sees every cooldown


# -- the built-in layers -----------------------------------------------------------------------
def _recording_layer(inner: Provider, ctx: LayerContext) -> Provider | None:
    """One log record (and, with a log store, one stored exchange) per request."""
    if ctx.log_store is None and not _exchange_log.isEnabledFor(logging.INFO):
        return None
    from modelplex.recording import RecordingProvider

    return RecordingProvider(inner, ctx.log_store, ctx.conversation_id)


def _cache_layer(inner: Provider, ctx: LayerContext) -> Provider | None:
    """The response cache, when the stack has one."""
    return None if ctx.cache is None else ctx.cache.wrap(inner)


def _mcp_layer(inner: Provider, ctx: LayerContext) -> Provider | None:
    """The tool loop of a named model's MCP servers (``[models.NAME] mcp = [...]``)."""
    if not ctx.named or ctx.config is None or ctx.spec not in ctx.config.models \
            or not ctx.config.models[ctx.spec].mcp:
        return None
    from modelplex.mcp.layer import mcp_layer

    return mcp_layer(inner, ctx)


_BUILTIN: dict[str, LayerFactory] = {"mcp": _mcp_layer, "recording": _recording_layer,
                                     "cache": _cache_layer}


def layer_order(plugins: Plugins | None = None) -> list[tuple[str, LayerFactory | None]]:
    """The layers above the router, outside in: :data:`PATH` with the plugins' layers put in
    (a slot nobody filled has ``None``)."""
    return list(_placed(plugins or get_plugins())[0])


def _placed(plugins: Plugins) -> tuple[tuple[tuple[str, LayerFactory | None], ...],
                                       tuple[tuple[str, LayerFactory], ...]]:
    """:func:`layer_order`, and its layers that have a factory inside out (what
    :func:`_build_layers` walks)."""
    registered = tuple(plugins.registry("layers").values())
    cached = _order_cache.get("last")
    if cached is not None and cached[0] == registered:
        return cached[1], cached[2]
    order, clean = _place(registered)
    walk = tuple((name, factory) for name, factory in reversed(order) if factory is not None)
    if clean:  # an order that warned is placed (and warns) again on every stack
        _order_cache["last"] = (registered, tuple(order), walk)
    return tuple(order), walk


#: the last registrations placed without a warning, their order and its walk inside out:
#: placed once, not per stack (a registration added, removed or changed is placed again)
_order_cache: dict[str, tuple[tuple[Any, ...], tuple[tuple[str, LayerFactory | None], ...],
                              tuple[tuple[str, LayerFactory], ...]]] = {}


def _place(registered: tuple[Any, ...]) -> tuple[list[tuple[str, LayerFactory | None]], bool]:
    """The order of :func:`layer_order` and whether it was placed without a warning."""
    clean = True
    order: list[tuple[str, LayerFactory | None]] = [
        (name, _BUILTIN.get(name)) for name in PATH if name not in _BASE]
    pending = list(registered)
    while pending:
        placed = []
        for reg in pending:
            names = [name for name, _ in order]
            before, after = reg.position
            if reg.name in names:  # a slot of PATH ("telemetry")
                index = names.index(reg.name)
                if order[index][1] is not None:
                    clean = False
                    log.warning("layer %r of %s is ignored: that layer is built in",
                                reg.name, reg.distribution or reg.plugin)
                else:
                    order[index] = (reg.name, reg.obj)
            elif before == "router" or (before is None and after is None):
                order.append((reg.name, reg.obj))
            elif before in names:
                order.insert(names.index(before), (reg.name, reg.obj))
            elif after in names:
                order.insert(names.index(after) + 1, (reg.name, reg.obj))
            else:
                continue  # placed relative to a layer not placed yet
            placed.append(reg)
        if not placed:
            clean = False
            for reg in pending:
                log.warning("layer %r of %s is ignored: no layer %r to put it next to",
                            reg.name, reg.distribution or reg.plugin,
                            reg.position[0] or reg.position[1])
            break
        pending = [reg for reg in pending if reg not in placed]
    return order, clean


def _build_layers(base: Provider, ctx: LayerContext, plugins: Plugins
                  ) -> tuple[Provider, list[Provider]]:
    """``base`` behind every active layer, and the layers built (outside in)."""
    provider = base
    built: list[Provider] = []
    for name, factory in _placed(plugins)[1]:
        try:
            layer = factory(provider, ctx)
        except ModelplexError:
            raise
        except Exception as err:
            raise PluginError(f"layer {name!r} could not be built: {type(err).__name__}: "
                              f"{err}") from err
        if layer is None:
            continue
        if not isinstance(layer, Provider):
            raise PluginError(f"layer {name!r} built {layer!r}, not a modelplex Provider")
        provider = layer
        built.append(layer)
    built.reverse()
    return provider, built


# -- the lease ---------------------------------------------------------------------------------
@attrs.define(eq=False)
class Lease:
    """A stack opened by :func:`open_model`: use ``provider``, then :meth:`release` it (or
    ``async with``).

    ``provider`` is the top of the stack, ``model`` the model name to send it,
    ``provider_name`` the name to show (the provider's, or the named model's), ``base`` the
    router under the layers and ``layers`` the layers built for this lease, outside in.
    Unpacking gives ``(provider, model)``, the form ``open_model`` returned before.
    """

    provider: Provider
    model: str
    provider_name: str
    base: Provider
    layers: tuple[Provider, ...] = ()
    _close: Callable[[], Awaitable[None]] | None = attrs.field(default=None, repr=False)
    released: bool = False

    def __iter__(self) -> Iterator[Any]:
        return iter((self.provider, self.model))

    async def __aenter__(self) -> Lease:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()

    async def release(self) -> None:
        """Give back what :func:`open_model` opened (once; later calls do nothing)."""
        if self.released:
            return
        self.released = True
        held = _leases.get(id(self.provider))
        if held is not None and self in held:
            held.remove(self)
            if not held:
                del _leases[id(self.provider)]
        try:
            for layer in self.layers:
                if isinstance(layer, WrappingProvider):
                    with contextlib.suppress(Exception):
                        await layer.close_layer()
        finally:
            if self._close is not None:
                await self._close()


_leases: dict[int, list[Lease]] = {}  # open leases by their top provider (release_model)


# -- configuration -----------------------------------------------------------------------------
def resolve_spec(spec: str | None, config: Config) -> str | None:
    """The model asked for: ``spec``, else the configured default (environment over file)."""
    return spec or env.default_model() or config.default_model or None


def single_retries(retries: int | RetryConfig | None, config: Config) -> RetryConfig:
    """The retries of a plain ``provider:model`` (a router of one deployment): ``retries``
    (attempts after the first, or a :class:`RetryConfig`), else the config's ``[retries]``,
    else :data:`SINGLE_RETRIES`."""
    if isinstance(retries, RetryConfig):
        return retries
    if retries is not None:
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ConfigurationError(f"retries must be a whole number >= 0 (got {retries!r})")
        return SINGLE_RETRIES.model_copy(update={"attempts": retries + 1})
    return config.retries or SINGLE_RETRIES


SINGLE_RETRIES = RetryConfig(attempts=2, timeout=10.0, backoff=0.1, max_backoff=1.0,
                             cooldown=0.0)
"""A plain ``provider:model``'s retries by default: one more attempt after a connection
failure or a 429/502/503/504/529 (after ``Retry-After`` when it fits in 10 s), none after a
timeout or any other status (see docs/routing.md). ``timeout`` bounds the waits between
attempts; an attempt is bounded by the provider's own timeouts."""


def state_from_config(table: Mapping[str, Any]) -> RouterState:
    """The router state of a ``[state]`` table: ``backend = "memory"`` (default), a name
    registered through ``register_state_backends`` (``"redis"`` with modelplex-redis), or
    ``"module:Class"``, built with the other keys."""
    backend = str(table.get("backend", "memory"))
    if backend == "memory":
        return _memory_state
    if ":" not in backend:  # a name registered through register_state_backends
        from modelplex.routing import open_state

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


# -- the router layer --------------------------------------------------------------------------
async def open_router(name: str, *, config: Config | None = None,
                      pool: ProviderPool | None = None, plugins: Plugins | None = None,
                      provider_config: Mapping[str, Mapping[str, Any]] | None = None,
                      _opening: frozenset[str] = frozenset()) -> Router:
    """The shared router of the named model ``name`` alone, without layers (give it back
    with :func:`release_model`); :func:`open_model` is the whole stack.

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
    # a fallback already in the chain being opened is cut (a cycle a -> b -> a); a router cut
    # that way is shared only with chains that cut the same, never under its own full key
    cut = sorted(f for f in model.fallbacks if f in _opening)
    key = (f"router:{name}:{id(plugins)}:{_short([config.model_dump(), overrides])}"
           + (f":without:{','.join(cut)}" if cut else ""))

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
            built = Router(name, deployments, strategy=model.strategy, fallbacks=fallbacks,
                           retries=model.retries, state=state, options=model.options,
                           on_close=release_all)
        except ConfigurationError as err:
            await release_all()
            raise ConfigurationError(f"{where}: models.{name}: {err}") from None
        built.stats_total = stats_for(name, key)  # kept beyond this router (modelplex.stats)
        return built

    router: Router = await pool.acquire_shared(key, build)
    return router


async def _open_base(spec: str | None, config: Config, pool: ProviderPool, plugins: Plugins,
                     provider_config: Mapping[str, Mapping[str, Any]] | None,
                     retries: int | RetryConfig | None
                     ) -> tuple[Router, str, str, bool, Callable[[], Awaitable[None]]]:
    """The router serving ``spec``, the model name, the name shown, whether it is a named
    model, and how to give it back."""
    if spec is not None and spec in config.models:
        # retries, fallbacks, balancing over pooled providers: shared by every caller
        router = await open_router(spec, config=config, pool=pool, plugins=plugins,
                                   provider_config=provider_config)

        async def release_router() -> None:
            await pool.release(router)

        return router, spec, spec, True, release_router
    # one shared provider instance per name and configuration, behind a router of one kept
    # with it in the pool (one per model and retries, shared by every caller)
    reuse = not provider_config and (retries is None or (type(retries) is int and retries >= 0))
    if reuse:  # the base opened last time for the same inputs, if the pool still holds it
        found = _reopen.plain_bases.get((id(pool), id(config), spec, id(plugins), retries))
        if (found is not None and found.config is config
                and config.provider_kwargs(found.provider_name) == found.kwargs
                and pool.hold(found.pool_key, found.provider)):
            stats_for(*found.stats)
            return (found.router, found.model_name, found.provider_name, False,
                    found.release)
    provider_name, requested = parse_model_spec(spec, plugins)
    overrides = (provider_config or {}).get(provider_name)
    policy = single_retries(retries, config)  # a bad value fails before anything is opened
    kwargs, kwargs_key, short = _reopen.plain_kwargs(config, provider_name, overrides)
    provider = await pool.acquire(provider_name, kwargs, plugins=plugins, key=kwargs_key)
    model_name = requested or provider.default_model or ""
    if not model_name:
        await pool.release(provider)
        raise ConfigurationError(f"provider {provider_name!r} has no default model: "
                                 f"name one as '{provider_name}:MODEL'")

    def make() -> Router:  # the pool closes the provider, not the router
        return Router.single(provider, model_name, retries=policy, on_close=_nothing)

    async def release_provider() -> None:
        await pool.release(provider)

    single = pool.attached(provider, ("single", model_name, policy), make)
    # one count per provider:model and configuration, kept across leases (modelplex.stats)
    stats = (f"{provider_name}:{model_name}", f"{provider_name}:{model_name}:{id(plugins)}:{short}")
    single.stats_total = stats_for(*stats)
    if reuse:
        bases = _reopen.plain_bases
        if len(bases) >= _reopen.PLAIN_CACHE_SIZE:
            del bases[next(iter(bases))]
        bases[(id(pool), id(config), spec, id(plugins), retries)] = _reopen.PlainBase(
            config, dict(kwargs), provider_key(provider_name, plugins, kwargs_key), provider,
            single, model_name, provider_name, stats, release_provider)
    return single, model_name, provider_name, False, release_provider




async def _nothing() -> None:
    """A shared router of one closes nothing: its provider is released by each lease."""


def _cache_for(cache: Any, config: Config, plugins: Plugins
               ) -> tuple[Any, Callable[[], Awaitable[None]] | None]:
    """The open :class:`~modelplex.caching.CacheLayer` for ``cache`` and, when it was opened
    here, how to close it."""
    if cache is False:
        return None, None
    if cache is None:
        if not config.cache:
            return None, None
        cache = config.cache
    from modelplex.caches import Cache
    from modelplex.caching import CacheLayer

    if isinstance(cache, CacheLayer):
        return cache, None
    if isinstance(cache, Cache):
        return CacheLayer(cache), None
    layer, owned = CacheLayer.open(cache, plugins)
    return layer, (layer.cache.aclose if owned else None)


def _log_store(logs: Any) -> tuple[LogStore | None, Callable[[], Awaitable[None]] | None]:
    if logs is None or logs is False:
        return None, None
    from modelplex.store.logs import LogStore

    if isinstance(logs, LogStore):
        return logs, None
    if isinstance(logs, str | os.PathLike):
        store = LogStore(logs)
        return store, store.aclose
    raise ConfigurationError(f"logs must be a LogStore or a path (got {logs!r})")


async def open_model(spec: str | None = None, *, config: Config | None = None,
                     pool: ProviderPool | None = None, cache: Any = None,
                     plugins: Plugins | None = None,
                     provider_config: Mapping[str, Mapping[str, Any]] | None = None,
                     logs: Any = None, conversation_id: str | None = None,
                     retries: int | RetryConfig | None = None,
                     caller: str = "chat") -> Lease:
    """Open the stack that serves ``spec``; returns a :class:`Lease`.

    Args:
        spec: ``"provider:model"``, a provider name, a named model of the config, or
            ``None`` for the configured default.
        config: the :class:`~modelplex.config.Config` (default: the config file's).
        pool: where providers and routers are shared (default: the process-wide pool).
        cache: the response cache: ``None`` for the config's ``[cache]`` table (none
            without one), ``False`` for none, an open :class:`~modelplex.caches.Cache` or
            :class:`~modelplex.caching.CacheLayer` (the caller's), or a setting
            (``"sqlite"``, a dict, a :class:`~modelplex.caches.CacheConfig`) opened here and
            closed by the lease.
        plugins: the plugins providers and layers come from.
        provider_config: constructor keywords per provider name over ``[providers.NAME]``.
        logs: a :class:`~modelplex.store.logs.LogStore` (or its path, opened here) where each
            exchange is stored; without it exchanges are only logged (``modelplex.exchange``
            at INFO).
        conversation_id: the conversation recorded exchanges belong to, unless a request says.
        retries: a plain ``provider:model``'s retries after the first attempt (``0``: none)
            or a :class:`~modelplex.config.RetryConfig`; default the config's ``[retries]``,
            else one retry (see docs/routing.md). Named models use their own ``retries``.
        caller: who opens it (``"chat"``, ``"cli"``, ``"server"``, ``"compat"``), for layers.
    """
    config = config or get_config()
    pool = pool or get_pool()
    plugins = plugins or get_plugins()
    if provider_config is not None:  # a clear error for a bad shape
        provider_config = check_provider_config(provider_config)
    spec = resolve_spec(spec, config)
    base, model_name, provider_name, named, close_base = await _open_base(
        spec, config, pool, plugins, provider_config, retries)
    closers: list[Callable[[], Awaitable[None]]] = [close_base]
    try:
        cache_layer, close_cache = _cache_for(cache, config, plugins)
        if close_cache is not None:
            closers.append(close_cache)
        store, close_store = _log_store(logs)
        if close_store is not None:
            closers.append(close_store)
        ctx = _reopen.layer_context(spec, model_name, provider_name, config, caller, named,
                                    cache_layer, store, conversation_id)
        top, built = _build_layers(base, ctx, plugins)
    except BaseException:
        await _close_all(closers)
        raise
    lease = Lease(top, model_name, provider_name, base, tuple(built),
                  functools.partial(_close_all, closers) if len(closers) > 1
                  else close_base)  # one: no loop to run
    held = _leases.get(id(top))
    if held is None:  # (not setdefault: its new list would be made for every lease)
        held = _leases[id(top)] = []
    held.append(lease)
    return lease


async def _close_all(closers: list[Callable[[], Awaitable[None]]]) -> None:
    """Run ``closers`` last first; every one runs, then the first error is raised."""
    errors = []
    for closer in reversed(closers):
        try:
            await closer()
        except Exception as err:  # close the rest, then report the first
            errors.append(err)
    if errors:
        raise errors[0]


async def release_model(provider: Provider | Lease, *, pool: ProviderPool | None = None
                        ) -> None:
    """Give back a stack from :func:`open_model` (its lease, or its top provider), or a
    router from :func:`open_router`."""
    if isinstance(provider, Lease):
        await provider.release()
        return
    held = _leases.get(id(provider))
    if held:
        await held[-1].release()
        return
    pool = pool or get_pool()
    await pool.release(provider)
