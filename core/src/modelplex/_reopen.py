"""What opening the same stack again reuses: the request path's memo of plain models.

A :class:`~modelplex.manager.ChatManager` per conversation opens the same ``provider:model``
stack over and over. :func:`modelplex.pipeline.open_model` keeps here what it worked out the
first time (the provider's keywords and their pool key, the pooled provider and its router of
one, the layers' :class:`~modelplex.wrapping.LayerContext`), each entry checked against its
inputs on every use (the config object and its ``[providers.NAME]`` table, the pool still
holding the provider) so that a change is never served stale. A few recent entries are kept.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from modelplex.pool import config_key
from modelplex.wrapping import LayerContext

if TYPE_CHECKING:
    from modelplex.config import Config
    from modelplex.provider import Provider
    from modelplex.routing import Router

__all__ = ["PLAIN_CACHE_SIZE", "PlainBase", "layer_context", "plain_bases", "plain_kwargs"]


@attrs.define(eq=False)
class PlainBase:
    """What the pipeline opened for a plain ``provider:model``, to open again for the same
    pool, config object, spec, plugins and retries (no ``provider_config``) without parsing,
    hashing or looking it up again: served only while the config's
    ``[providers.NAME]`` table equals ``kwargs`` and the pool still holds ``provider`` under
    ``pool_key`` (a new reference is taken there, as :meth:`ProviderPool.acquire` would)."""

    config: Config
    kwargs: dict[str, Any]
    pool_key: str
    provider: Provider
    router: Router
    model_name: str
    provider_name: str
    stats: tuple[str, str]
    release: Callable[[], Awaitable[None]]


#: (pool, config, spec, plugins, retries) -> the plain base opened for them (see PlainBase)
plain_bases: dict[tuple[int, int, str | None, int, Any], PlainBase] = {}


#: (config, provider name) -> (the provider's keywords, their pool key, its short hash): the
#: key is computed once per config object and table (a changed config, or a table changed
#: in place, is computed again, never served from here); a few recent configs are kept.
plain_cache: dict[tuple[int, str], tuple[Config, dict[str, Any], str, str]] = {}
PLAIN_CACHE_SIZE = 32


def plain_kwargs(config: Config, provider_name: str,
                 overrides: Mapping[str, Any] | None) -> tuple[dict[str, Any], str, str]:
    """The constructor keywords of a plain ``provider:model``'s provider (``[providers.NAME]``
    then ``overrides``), their key (:func:`~modelplex.pool.config_key`) and its short hash
    (as ``modelplex.pipeline`` shortens them)."""
    if overrides:
        kwargs = {**config.provider_kwargs(provider_name), **dict(overrides)}
        kwargs_key = config_key(kwargs)
        return kwargs, kwargs_key, hashlib.sha256(kwargs_key.encode()).hexdigest()[:12]
    kwargs = config.provider_kwargs(provider_name)
    cached = plain_cache.get((id(config), provider_name))
    if cached is not None and cached[0] is config and cached[1] == kwargs:
        return kwargs, cached[2], cached[3]
    kwargs_key = config_key(kwargs)
    short = hashlib.sha256(kwargs_key.encode()).hexdigest()[:12]
    if len(plain_cache) >= PLAIN_CACHE_SIZE:
        del plain_cache[next(iter(plain_cache))]
    plain_cache[(id(config), provider_name)] = (config, dict(kwargs), kwargs_key, short)
    return kwargs, kwargs_key, short


def layer_context(spec: str | None, model: str, provider_name: str, config: Config, caller: str,
             named: bool, cache: Any, store: Any, conversation_id: str | None) -> LayerContext:
    """The (frozen) :class:`LayerContext` of a stack: one made before for the same values is
    given again when the stack has no cache, log store or conversation."""
    if cache is not None or store is not None or conversation_id is not None:
        return LayerContext(spec=spec, model=model, provider_name=provider_name, config=config,
                            caller=caller, named=named, cache=cache, log_store=store,
                            conversation_id=conversation_id)
    key = (spec, model, provider_name, id(config), caller, named)
    ctx = contexts.get(key)
    if ctx is None or ctx.config is not config:
        if len(contexts) >= PLAIN_CACHE_SIZE:
            del contexts[next(iter(contexts))]
        ctx = contexts[key] = LayerContext(spec=spec, model=model, provider_name=provider_name,
                                            config=config, caller=caller, named=named)
    return ctx


contexts: dict[tuple[Any, ...], LayerContext] = {}  # see layer_context
