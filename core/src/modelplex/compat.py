"""Seed 002's API (OneSim's ``models`` package), as a thin facade over config and router.

The seed's examples run as written with ``modelplex`` in place of ``onesim.models``
(``tests/seeds/test_seed_002.py`` runs each of them; custom back ends subclass
:class:`ModelAdapterBase`)::

    from modelplex import get_model_manager, configure_load_balancer, get_model
    from modelplex import SystemMessage, UserMessage

    get_model_manager().load_model_configs([
        {"config_name": "gpt-4", "model_type": "openai_chat", "model_name": "gpt-4",
         "api_key": "sk-..."},
        {"config_name": "local", "model_type": "ollama_chat", "model_name": "llama3.2"},
    ])
    configure_load_balancer(model_configs=["gpt-4", "local"], strategy="round_robin")
    model = get_model()                       # the default LLM load balancer
    response = model(model.format(SystemMessage("Be brief."), UserMessage("Hi")))
    print(response.text, response.model_info["config_name"])

Each config becomes a named model with one deployment; a load balancer becomes a named model
over those deployments, so retries, cooldowns and statistics are the router's.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from modelplex.chunks import Usage
from modelplex.config import Config, get_config, parse_config
from modelplex.errors import ConfigurationError, did_you_mean
from modelplex.types import ChatMessage

if TYPE_CHECKING:
    from modelplex.pipeline import Lease

__all__ = ["AssistantMessage", "ModelAdapter", "ModelAdapterBase", "ModelManager", "ModelResponse",
           "SystemMessage", "UserMessage", "configure_load_balancer", "get_embedding_model",
           "get_model",
           "get_model_manager"]

_SEED_KEYS = {"config_name", "model_type", "model_name", "api_key", "base_url", "client_args",
              "generate_args"}


def SystemMessage(content: str, **kw: Any) -> ChatMessage:
    """A system message."""
    return ChatMessage.system(content, **kw)


def UserMessage(content: str, **kw: Any) -> ChatMessage:
    """A user message."""
    return ChatMessage.user(content, **kw)


def AssistantMessage(content: str, **kw: Any) -> ChatMessage:
    """An assistant message."""
    return ChatMessage.assistant(content, **kw)


@attrs.define
class ModelResponse:
    """The seed's response: ``text`` (also ``content``), ``usage``, ``model_info`` (a dict
    with ``model_name``, ``config_name`` and ``provider``), ``embedding`` for embeddings and
    ``raw`` (the :class:`~modelplex.chunks.ChatResponse`)."""

    text: str = ""
    usage: Usage = attrs.Factory(Usage)
    model_info: dict[str, Any] = attrs.Factory(dict)
    embedding: list[list[float]] | None = None
    raw: Any = None

    @property
    def content(self) -> str:
        """The text (the seed's other name for it)."""
        return self.text


def _model_info(route: Any, fallback: str) -> dict[str, Any]:
    if route is None:
        return {"model_name": fallback, "config_name": fallback, "provider": None}
    return {"model_name": route.provider_model, "config_name": route.deployment,
            "provider": route.provider}


class ModelAdapter:
    """A configured model or load balancer: ``format()``, ``await acall()``, ``__call__()``."""

    def __init__(self, manager: ModelManager, name: str, kind: str) -> None:
        self.manager = manager
        self.config_name = name
        self.kind = kind
        self.config = manager.config()
        self._leases: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Lease] = (
            weakref.WeakKeyDictionary())
        self._keepers: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"<ModelAdapter {self.config_name!r} ({self.kind})>"

    @staticmethod
    def format(*messages: ChatMessage | Mapping[str, Any]
               | Sequence[ChatMessage | Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Messages (given one by one or as a list) as ``{"role", "content"}`` dicts."""
        flat: list[ChatMessage | Mapping[str, Any]] = []
        for item in messages:
            if isinstance(item, ChatMessage | Mapping):
                flat.append(item)
            else:
                flat.extend(item)
        return [{"role": m.role.value, "content": m.content} if isinstance(m, ChatMessage)
                else dict(m) for m in flat]

    async def _lease(self) -> Lease:
        """The stack of this model in the running loop (opened once per loop)."""
        loop = asyncio.get_running_loop()
        lease = self._leases.get(loop)
        if lease is None:
            from modelplex.pipeline import open_model

            lease = await open_model(self.config_name, config=self.config, caller="compat")
            self._leases[loop] = lease
            # the seed's API has no close(): give the stack back when the loop shuts down
            # (asyncio.run cancels this task), so no aiohttp session is left unclosed
            keeper = loop.create_task(self._release_at_shutdown(loop, lease))
            self._keepers.add(keeper)
            keeper.add_done_callback(self._keepers.discard)
        return lease

    async def _release_at_shutdown(self, loop: asyncio.AbstractEventLoop, lease: Lease) -> None:
        try:
            await asyncio.Event().wait()  # until cancelled: the loop is shutting down
        except asyncio.CancelledError:
            self._leases.pop(loop, None)
            await lease.release()
            raise

    async def acall(self, messages: Sequence[Any] | None = None, *,
                    texts: Sequence[str] | None = None, **kwargs: Any) -> ModelResponse:
        """Chat with the formatted ``messages``, or embed ``texts`` (embedding models)."""
        from modelplex.routing import Router

        lease = await self._lease()
        provider, router = lease.provider, lease.base
        assert isinstance(router, Router)
        if self.kind == "embedding" or texts is not None:
            if texts is None:
                texts = [m if isinstance(m, str) else m["content"] for m in messages or []]
            vectors, route = await router.embed_routed(list(texts), options=kwargs or None)
            return ModelResponse(embedding=vectors,
                                 model_info=_model_info(route, self.config_name))
        if not messages:
            raise ConfigurationError("acall() needs messages: pass model.format(...)")
        response = await provider.complete(self.format(messages), model=self.config_name,
                                           options=kwargs or None)
        return ModelResponse(text=response.content, usage=response.usage,
                             model_info=_model_info(response.route, self.config_name),
                             raw=response)

    def __call__(self, messages: Sequence[Any] | None = None, **kwargs: Any) -> ModelResponse:
        """Blocking :meth:`acall` (not inside a running event loop: use ``await acall``)."""
        response: ModelResponse = self.manager.run_sync(self.acall(messages, **kwargs))
        return response


class ModelAdapterBase:
    """The base of a custom back end in the seed's style: define ``__call__`` (blocking) or
    ``acall`` (async), or both; the other one is derived.

    A blocking-only adapter gets an ``acall`` that runs ``__call__`` in the loop's default
    executor (a thread), so it does not block the event loop; an async-only adapter gets a
    ``__call__`` that runs ``acall`` on the thread's shared event loop (outside a running
    loop only, like every blocking twin). ``format()`` is :meth:`ModelAdapter.format`.
    """

    format = staticmethod(ModelAdapter.format)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run :meth:`acall` to its end (define ``__call__`` yourself for a blocking client)."""
        if type(self).acall is ModelAdapterBase.acall:
            raise NotImplementedError(f"{type(self).__name__} defines neither __call__ nor acall")
        from modelplex._blocking import outside_loop
        from modelplex.pool import sync_runner

        outside_loop(f"{type(self).__name__}() was called", "await model.acall(...)")
        return sync_runner().run(self.acall(*args, **kwargs))

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        """Run ``__call__`` in the default executor (define ``acall`` for an async client)."""
        if type(self).__call__ is ModelAdapterBase.__call__:
            raise NotImplementedError(f"{type(self).__name__} defines neither __call__ nor acall")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, lambda: self(*args, **kwargs))


class ModelManager:
    """The seed's configuration registry: model configs and load balancers by name."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, Any]] = {}
        self._balancers: dict[str, dict[str, Any]] = {}
        self._defaults: dict[str, str] = {}
        self._adapters: dict[str, ModelAdapter] = {}
        self._config: Config | None = None
        self._runner: asyncio.Runner | None = None
        self._lock = threading.Lock()

    # -- configs ---------------------------------------------------------------------------
    def load_model_configs(self, configs: str | os.PathLike[str] | Mapping[str, Any]
                           | Sequence[Mapping[str, Any]]) -> None:
        """Add model configs: a JSON file path, one config dict, or a list of them."""
        source = "model config"
        data: Any = configs
        if isinstance(configs, str | os.PathLike):
            path = Path(configs)
            source = str(path)
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError) as err:
                raise ConfigurationError(f"cannot read model configs from {path}: {err}") \
                    from None
        items: list[Any] = [data] if isinstance(data, Mapping) else list(data)
        added = {self._check(item, f"{source}[{index}]"): dict(item)
                 for index, item in enumerate(items)}
        with self._lock:  # all or nothing: a bad config must not break the good ones
            before = dict(self._entries)
            self._entries.update(added)
            self._config = None
        try:
            self.config()
        except ConfigurationError:
            with self._lock:
                self._entries, self._config = before, None
            raise

    @staticmethod
    def _check(item: Any, where: str) -> str:
        if not isinstance(item, Mapping):
            raise ConfigurationError(f"{where}: a model config is a dict, got {item!r}")
        unknown = sorted(set(item) - _SEED_KEYS)
        if unknown:
            raise ConfigurationError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: "
                                     f"{', '.join(sorted(_SEED_KEYS))}"
                                     f"{did_you_mean(unknown[0], _SEED_KEYS)}")
        for key in ("config_name", "model_type"):
            if not isinstance(item.get(key), str) or not item[key]:
                raise ConfigurationError(f"{where}: {key!r} is required (a string)")
        provider, _, kind = item["model_type"].rpartition("_")
        if kind not in ("chat", "embedding") or not provider:
            raise ConfigurationError(
                f"{where}: model_type {item['model_type']!r} must be PROVIDER_chat or "
                "PROVIDER_embedding, e.g. openai_chat or ollama_embedding")
        if not isinstance(item.get("model_name"), str) or not item["model_name"].strip():
            raise ConfigurationError(f"{where}: 'model_name' is required: the provider's name "
                                     "of the model, e.g. 'gpt-4o-mini' or 'llama3.2'")
        for key in ("api_key", "base_url"):
            if item.get(key) is not None and not isinstance(item[key], str):
                raise ConfigurationError(f"{where}: {key!r} must be a string (got "
                                         f"{type(item[key]).__name__})")
        for key in ("client_args", "generate_args"):
            if item.get(key) is not None and not isinstance(item[key], Mapping):
                raise ConfigurationError(f"{where}: {key!r} must be a dict (got "
                                         f"{type(item[key]).__name__})")
        from modelplex.plugins import get_plugins

        try:
            get_plugins().get("providers", provider)
        except ConfigurationError as err:
            raise ConfigurationError(f"{where}: model_type {item['model_type']!r}: {err}"
                                     ) from None
        return str(item["config_name"])

    def configure_load_balancer(self, model_configs: Sequence[str], strategy: str = "round_robin",
                                config_name: str = "load_balancer",
                                model_type: str = "llm") -> None:
        """A load balancer over configs by name; the default of its type when first."""
        from modelplex.routing.strategies import make_strategy

        if model_type not in ("llm", "embedding"):
            raise ConfigurationError(f"model_type must be 'llm' or 'embedding' (got "
                                     f"{model_type!r})")
        if isinstance(model_configs, str) or not all(isinstance(n, str) for n in model_configs):
            raise ConfigurationError(f"load balancer {config_name!r}: model_configs must be a "
                                     f"list of config names, e.g. ['gpt-4', 'local'] (got "
                                     f"{model_configs!r})")
        make_strategy(strategy)  # a clear error for an unknown strategy, now
        missing = [name for name in model_configs if name not in self._entries]
        if missing:
            raise ConfigurationError(f"load balancer {config_name!r}: no model config named "
                                     f"{', '.join(map(repr, missing))}; load it first with "
                                     "get_model_manager().load_model_configs(...)")
        if not model_configs:
            raise ConfigurationError(f"load balancer {config_name!r} needs model_configs")
        self._balancers[config_name] = {"configs": list(model_configs), "strategy": strategy,
                                        "kind": "embedding" if model_type == "embedding"
                                        else "chat"}
        self._defaults[model_type] = config_name
        self._config = None

    def _deployment(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        from modelplex.plugins import get_plugins
        from modelplex.pool import _accepts

        provider = entry["model_type"].rpartition("_")[0]
        model_name = entry.get("model_name") or ""
        dep: dict[str, Any] = {"model": f"{provider}:{model_name}", "name": entry["config_name"],
                               "options": dict(entry.get("generate_args") or {})}
        client = dict(entry.get("client_args") or {})
        base_url = entry.get("base_url") or client.pop("base_url", None)
        if entry.get("api_key"):
            dep["api_key"] = entry["api_key"]
        if base_url:
            factory = get_plugins().get("providers", provider)
            dep["base_url" if _accepts(factory, "base_url") else "host"] = base_url
        dep.update(client)
        return dep

    def config(self) -> Config:
        """The configuration: the config file's, plus these configs and balancers."""
        with self._lock:
            if self._config is not None:
                return self._config
            base = get_config()
            models = base.model_dump()["models"]
            for name, entry in self._entries.items():
                kind = entry["model_type"].rpartition("_")[2]
                models[name] = {"deployments": [self._deployment(entry)], "kind": kind}
            for name, lb in self._balancers.items():
                models[name] = {"deployments": [self._deployment(self._entries[c])
                                                for c in lb["configs"]],
                                "strategy": lb["strategy"], "kind": lb["kind"]}
            data = {**base.model_dump(exclude={"models", "source"}), "models": models}
            self._config = parse_config(data, source=base.source or "model configs")
            return self._config

    # -- models ----------------------------------------------------------------------------
    def get_model(self, config_name: str | None = None) -> ModelAdapter:
        """A config or load balancer by name; without a name the default LLM balancer."""
        return self._adapter(config_name, "llm")

    def get_embedding_model(self, config_name: str | None = None) -> ModelAdapter:
        """An embedding config or balancer; without a name the default embedding balancer."""
        return self._adapter(config_name, "embedding")

    def _adapter(self, name: str | None, model_type: str) -> ModelAdapter:
        if name is None:
            name = self._defaults.get(model_type)
            if name is None:
                raise ConfigurationError(
                    f"no default {model_type} model: call configure_load_balancer(..., "
                    f"model_type={model_type!r}) or pass a config name")
        config = self.config()
        if name not in config.models:
            known = ", ".join(sorted(config.models)) or "none"
            raise ConfigurationError(f"no model config named {name!r} (known: {known}); load "
                                     "it with get_model_manager().load_model_configs(...)")
        adapter = self._adapters.get(name)
        if adapter is None or adapter.config is not config:  # one per name and config
            adapter = self._adapters[name] = ModelAdapter(self, name, config.models[name].kind)
        return adapter

    def run_sync(self, coro: Any) -> Any:
        """Run a coroutine on this manager's private event loop (the sync API)."""
        from modelplex._blocking import outside_loop
        from modelplex.pool import sync_runner

        outside_loop("a model was called synchronously", "await model.acall(...)", coro)
        if self._runner is None:
            self._runner = sync_runner()
        return self._runner.run(coro)


_manager: ModelManager | None = None
_manager_lock = threading.Lock()


def get_model_manager() -> ModelManager:
    """The process-wide :class:`ModelManager`."""
    global _manager
    if _manager is None:
        with _manager_lock:
            if _manager is None:
                _manager = ModelManager()
    return _manager


def get_model(config_name: str | None = None) -> ModelAdapter:
    """A model config or load balancer by name (default: the LLM load balancer)."""
    return get_model_manager().get_model(config_name)


def get_embedding_model(config_name: str | None = None) -> ModelAdapter:
    """An embedding model or balancer by name (default: the embedding load balancer)."""
    return get_model_manager().get_embedding_model(config_name)


def configure_load_balancer(model_configs: Sequence[str], strategy: str = "round_robin",
                            config_name: str = "load_balancer", model_type: str = "llm") -> None:
    """Balance requests over model configs (``round_robin`` or ``random``, or any router
    strategy)."""
    get_model_manager().configure_load_balancer(model_configs, strategy=strategy,
                                                config_name=config_name, model_type=model_type)
