"""Providers shared within a process: one instance per name and configuration, per event loop.

A host app holds many conversations; each :class:`~modelplex.manager.ChatManager` asks the
pool for its provider instead of building one, so a llama.cpp model is loaded once and an HTTP
provider keeps one connection pool. Entries are reference counted: :meth:`ProviderPool.release`
closes a provider when nobody else holds it, or, with a ``linger`` (the process pool's is
``MODELPLEX_POOL_LINGER``, 0 by default), once nobody has held it for that long, so a host app
that opens a manager per request keeps its connections warm. A lingering provider is
also closed when its event loop shuts down (``asyncio.run`` and ``asyncio.Runner`` cancel the
pool's idle timer, which then closes it). Instances are per event loop because an aiohttp
session (and asyncio locks) belong to the loop that made them.

The routers of named models live here too (:meth:`ProviderPool.acquire_shared`), so every
conversation on ``"fast"`` shares its cooldowns, counters and statistics.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hashlib
import inspect
import json
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import attrs
from pydantic import SecretStr

from modelplex import env
from modelplex.errors import ConfigurationError
from modelplex.plugins import Plugins, get_plugins
from modelplex.provider import Provider

__all__ = ["ProviderPool", "config_key", "get_pool", "provider_key", "provider_kwargs",
           "sync_runner"]

P = TypeVar("P", bound=Provider)


def _default(value: Any) -> Any:
    if isinstance(value, SecretStr):  # the key must tell secrets apart without holding them
        return "secret:" + hashlib.sha256(value.get_secret_value().encode()).hexdigest()
    if attrs.has(type(value)):
        return attrs.asdict(value)
    return repr(value)


def config_key(config: Mapping[str, Any]) -> str:
    """A stable key of a configuration (secrets hashed, never kept in clear)."""
    return json.dumps(config, sort_keys=True, default=_default)


def _accepts(factory: Callable[..., Any], keyword: str) -> bool:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return True
    return keyword in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def provider_kwargs(factory: Callable[..., Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """Resolve ``api_key_env`` for a provider whose constructor does not take it."""
    kwargs = dict(config)
    env = kwargs.get("api_key_env")
    if env and not _accepts(factory, "api_key_env"):
        del kwargs["api_key_env"]
        value = os.environ.get(str(env))
        if not value:
            raise ConfigurationError(f"api_key_env names {env!r}, which is not set: export "
                                     f"{env}=YOUR_KEY or remove api_key_env")
        kwargs.setdefault("api_key", SecretStr(value))
    return kwargs


def provider_key(name: str, plugins: Plugins, kwargs_key: str) -> str:
    """The pool key of provider ``name`` from ``plugins`` built with the keywords whose
    :func:`config_key` is ``kwargs_key``."""
    return f"provider:{name}:{id(plugins)}:{kwargs_key}"


@attrs.define(eq=False)
class _Entry:
    value: Any
    refs: int = 1
    idle_since: float = 0.0
    closer: asyncio.Task[None] | None = None
    attached: dict[Any, Any] = attrs.Factory(dict)  # what lives as long as value (attached())


class ProviderPool:
    """Reference-counted providers (and routers) per event loop.

    ``linger`` (seconds) keeps a provider nobody holds open that long before closing it;
    0 closes it as soon as the last holder releases it.
    """

    def __init__(self, *, linger: float = 0.0) -> None:
        self._linger = linger
        self._lock = threading.Lock()
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Entry]] = (
            weakref.WeakKeyDictionary())
        self._keys: dict[int, tuple[asyncio.AbstractEventLoop, str]] = {}
        self._building: dict[tuple[int, str], asyncio.Future[Any]] = {}
        #: the last loop asked about and its entries (most processes run one loop)
        self._last: tuple[weakref.ref[asyncio.AbstractEventLoop], dict[str, _Entry]] | None = None

    def _entries(self) -> dict[str, _Entry]:
        loop = asyncio.get_running_loop()
        last = self._last
        if last is not None and last[0]() is loop:
            return last[1]
        entries = self._loops.get(loop)
        if entries is None:
            entries = self._loops[loop] = {}
        self._last = (weakref.ref(loop), entries)
        return entries

    async def acquire(self, name: str, config: Mapping[str, Any] | None = None, *,
                      plugins: Plugins | None = None, key: str | None = None) -> Provider:
        """The shared provider ``name`` with constructor keywords ``config`` (``key``: their
        :func:`config_key`, when the caller has it already).

        Pass it back to :meth:`release` when done.
        """
        plugins = plugins or get_plugins()
        cfg = dict(config or {})
        key = provider_key(name, plugins, config_key(cfg) if key is None else key)
        entries = self._entries()
        with self._lock:  # held already (every conversation after the first): no build step
            entry = entries.get(key)
            if entry is not None:
                entry.refs += 1
                return entry.value  # type: ignore[no-any-return]

        async def build() -> Provider:
            from modelplex.specs import create_provider

            factory = plugins.get("providers", name)
            return create_provider(name, plugins, **provider_kwargs(factory, cfg))

        provider: Provider = await self.acquire_shared(key, build)
        return provider

    def hold(self, key: str, value: Any) -> bool:
        """One more reference to ``value``, pooled under ``key`` in this event loop (the key
        :meth:`acquire` or :meth:`acquire_shared` used), without building anything: ``False``
        when the pool no longer has it there (closed, or another value under ``key`` now)."""
        entries = self._entries()
        with self._lock:
            entry = entries.get(key)
            if entry is None or entry.value is not value:
                return False
            entry.refs += 1
            return True

    async def acquire_shared(self, key: str, build: Callable[[], Awaitable[P]]) -> P:
        """The shared object under ``key``, built by ``build()`` on first use."""
        entries = self._entries()
        with self._lock:
            entry = entries.get(key)
            if entry is not None:
                entry.refs += 1
                return entry.value  # type: ignore[no-any-return]
        loop = asyncio.get_running_loop()
        pending = self._building.get((id(loop), key))
        if pending is not None:  # another task is building it: share its result
            with contextlib.suppress(Exception):
                await asyncio.shield(pending)
            return await self.acquire_shared(key, build)
        future: asyncio.Future[Any] = loop.create_future()
        self._building[(id(loop), key)] = future
        try:
            value = await build()
        except BaseException as err:
            future.set_exception(err)
            future.exception()  # retrieved: waiters retry and build (and fail) themselves
            raise
        finally:
            del self._building[(id(loop), key)]
        with self._lock:
            entries[key] = _Entry(value)
            self._keys[id(value)] = (loop, key)
        if not future.done():
            future.set_result(None)
        return value

    async def release(self, value: Any) -> None:
        """Give back a provider or router; it is closed when nobody else holds it."""
        with self._lock:
            found = self._keys.get(id(value))
            if found is None:
                owned = False
            else:
                loop, key = found
                entries = self._loops.get(loop, {})
                entry = entries.get(key)
                if entry is None or entry.value is not value:
                    owned = False
                elif entry.refs == 0:  # released already, lingering: nothing to give back
                    return
                else:
                    owned = True
                    entry.refs -= 1
                    if entry.refs > 0:
                        return
                    if self._linger > 0 and loop is asyncio.get_running_loop():
                        entry.idle_since = loop.time()
                        if entry.closer is None:
                            entry.closer = loop.create_task(self._close_idle(entries, key, entry))
                        return
                    del entries[key]
                    del self._keys[id(value)]
        del owned  # a value not from this pool was owned by the caller alone: close it too
        await value.aclose()

    async def _close_idle(self, entries: dict[str, _Entry], key: str, entry: _Entry) -> None:
        """Close ``entry`` once nobody has held it for ``linger`` seconds, or when its loop
        shuts down (this task is cancelled then)."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                await asyncio.sleep(entry.idle_since + self._linger - loop.time())
                if entry.refs > 0:  # held again: a later release starts a new timer
                    entry.closer = None
                    return
                if loop.time() >= entry.idle_since + self._linger:
                    break
        finally:
            with self._lock:
                close = entry.refs == 0 and entries.get(key) is entry
                if close:
                    del entries[key]
                    del self._keys[id(entry.value)]
            if close:
                await entry.value.aclose()

    def attached(self, value: Any, key: Any, make: Callable[[], P]) -> P:
        """The object ``make()`` built for the pooled ``value`` under ``key`` (hashable),
        built once and kept as long as the pool keeps ``value`` (a plain model's router of
        one, over its shared provider); for a value not in the pool, a new one each call."""
        with self._lock:
            found = self._keys.get(id(value))
            entry = None if found is None else self._loops.get(found[0], {}).get(found[1])
            if entry is None or entry.value is not value:
                return make()
            made = entry.attached.get(key)
            if made is None:
                made = entry.attached[key] = make()
            return made

    def holders(self, value: Any) -> int:
        """How many holders share ``value`` (0 when it is not in the pool)."""
        with self._lock:
            found = self._keys.get(id(value))
            if found is None:
                return 0
            entry = self._loops.get(found[0], {}).get(found[1])
            return entry.refs if entry is not None and entry.value is value else 0

    def shared(self) -> list[Any]:
        """Everything the pool holds now, in every event loop."""
        with self._lock:
            return [entry.value for entries in list(self._loops.values())
                    for entry in entries.values()]


_pool: ProviderPool | None = None

_pool_lock = threading.Lock()


def get_pool() -> ProviderPool:
    """The process-wide :class:`ProviderPool`."""
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = ProviderPool(linger=env.pool_linger())
    return _pool


_sync = threading.local()


def sync_runner() -> asyncio.Runner:
    """The event loop the sync APIs of this thread share (``*_sync`` methods of
    ``ChatManager``, the seed-compatible models), so that they share providers too: pooled
    providers belong to one event loop. Closed when the interpreter exits."""
    runner: asyncio.Runner | None = getattr(_sync, "runner", None)
    if runner is None:
        runner = _sync.runner = asyncio.Runner()
        atexit.register(_close_runner, runner)
    return runner


def _close_runner(runner: asyncio.Runner) -> None:
    with contextlib.suppress(Exception):
        runner.close()
