"""The model registry: every provider's models, cached, searchable, with health per provider.

::

    async with ModelRegistry() as registry:
        for info in await registry.search("llama", capability="tools"):
            print(info.id, info.context_length)
        print((await registry.check_health())["ollama"].status.healthy)

Models are listed from every installed provider concurrently and cached per provider for
``ttl`` seconds (5 minutes by default). A read after the TTL returns the cached list at once
and refreshes it in the background; :meth:`ModelRegistry.refresh` fetches now. A provider that
is down is reported with its error (:attr:`ProviderListing.error`) while the others list.

Every model the registry returns has ``id == "provider:name"``, ``provider`` set to the name
it was listed under, and capabilities in one vocabulary (``chat``, ``completion``,
``embeddings``, ``tools``, ``vision``, ``json``, ``thinking``, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import ipaddress
import time
from collections.abc import Awaitable, Callable, Container, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Self
from urllib.parse import urlsplit

import attrs

from modelplex.errors import (
    ConfigurationError,
    ModelNotFoundError,
    ModelplexError,
    UnsupportedOperationError,
    did_you_mean,
)
from modelplex.masking import mask
from modelplex.plugins import Plugins, get_plugins
from modelplex.provider import Provider
from modelplex.types import HealthStatus, ModelInfo, ModelSize

__all__ = [
    "DEFAULT_TTL",
    "ModelRegistry",
    "ProviderHealth",
    "ProviderListing",
    "find_model",
    "is_local_provider",
    "normalize_capabilities",
    "resolve_bare_model",
]

DEFAULT_TTL = 300.0
#: Capability names providers use, mapped to the registry's vocabulary.
CAPABILITY_ALIASES = {"embedding": "embeddings", "embed": "embeddings", "image": "vision",
                      "json_mode": "json", "function_calling": "tools", "tool_use": "tools"}


def normalize_capabilities(names: Iterable[str]) -> list[str]:
    """Capability names in the registry's vocabulary, lower case, without duplicates."""
    out: list[str] = []
    for name in names:
        key = str(name).strip().lower()
        key = CAPABILITY_ALIASES.get(key, key)
        if key and key not in out:
            out.append(key)
    return out


def is_local_provider(provider: Provider) -> bool:
    """True for in-process providers and for servers on a loopback address."""
    url = getattr(provider, "host", None) or getattr(provider, "base_url", None)
    if not isinstance(url, str) or not url:
        return True
    host = urlsplit(url if "://" in url else f"http://{url}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@attrs.define
class ProviderListing:
    """One provider's models as last fetched, or why they could not be.

    ``fetched_at`` is a :func:`time.time` timestamp; ``latency_ms`` how long the listing took.
    ``missing`` names what the user must set when the provider is not configured
    (:meth:`~modelplex.provider.Provider.missing_setting`, e.g. ``ANTHROPIC_API_KEY``): it
    was not contacted and lists nothing.
    """

    provider: str
    models: list[ModelInfo] = attrs.Factory(list)
    error: str | None = None
    fetched_at: float = 0.0
    latency_ms: float | None = None
    local: bool = False
    missing: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the last listing succeeded (a provider not configured did not fail)."""
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (without the models): ``status`` is ``ok``, ``error`` or
        ``not_configured`` (then ``missing`` names the variable to set)."""
        status = "not_configured" if self.missing else "ok" if self.ok else "error"
        return {"provider": self.provider, "status": status,
                "available": self.ok and not self.missing, "error": mask(self.error),
                "missing": self.missing, "models_count": len(self.models),
                "local": self.local, "fetched_at": _iso(self.fetched_at),
                "latency_ms": self.latency_ms}


@attrs.define
class ProviderHealth:
    """The last health check of one provider: its status and when it was taken."""

    status: HealthStatus
    checked_at: float
    raised: bool = False
    """Whether the check itself raised (the provider could not be created, or its
    ``health()`` failed instead of answering): ``status`` is then ``"error"``."""
    missing: str | None = None
    """What the user must set: the provider is not configured and was not contacted."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (seed 003's provider health shape, plus the check time):
        ``status`` is ``healthy``, ``unhealthy``, ``error`` (the check raised) or
        ``not_configured`` (``missing`` names the variable to set; nothing was contacted)."""
        s = self.status
        state = ("not_configured" if self.missing else "error" if self.raised
                 else "healthy" if s.healthy else "unhealthy")
        detail = mask(s.detail)  # an error can quote a URL with its password
        return {"provider": s.provider, "status": state, "available": s.healthy,
                "error": None if s.healthy or self.missing else detail,
                "detail": detail, "missing": self.missing, "version": s.version,
                "models_count": s.model_count, "latency_ms": s.latency_ms,
                "checked_at": _iso(self.checked_at)}


def _iso(stamp: float) -> str | None:
    return datetime.fromtimestamp(stamp, UTC).isoformat() if stamp else None


def _matches(info: ModelInfo, terms: Sequence[str]) -> bool:
    details = info.details
    text = " ".join(str(part) for part in (
        info.id, info.family or "", info.parameter_size or "", info.quantization or "",
        info.description or details.get("description") or "",
        " ".join(map(str, details.get("families") or ())),
        details.get("general.name") or "", details.get("target") or "")).lower()
    return all(term in text for term in terms)


class ModelRegistry:
    """Models of every provider, cached with a TTL, searchable, with per-provider health.

    Args:
        plugins: where providers come from (default: the process-wide plugins).
        get_provider: returns (or returns an awaitable of) the provider instance for a name;
            pass your own to share providers (a server's pool). By default the registry
            creates them and closes them in :meth:`aclose`.
        providers: the provider names to list (default: every installed provider).
        named_models: configured model names and what they stand for (``{"fast":
            "ollama:llama3.2"}``), listed first, under the provider ``named``.
        named_stats: returns a named model's router statistics (``Router.stats()``) or None;
            their median latency becomes the named model's ``details["latency_ms"]``.
        ttl: seconds a listing stays fresh; a failed listing is retried after at most 30 s.
        timeout: seconds one provider may take to list its models.
    """

    def __init__(self, *, plugins: Plugins | None = None,
                 get_provider: Callable[[str], Provider | Awaitable[Provider]] | None = None,
                 providers: Sequence[str] | None = None,
                 named_models: Mapping[str, str] | None = None,
                 named_stats: Callable[[str], Mapping[str, Any] | None] | None = None,
                 ttl: float = DEFAULT_TTL, timeout: float = 15.0) -> None:
        self._plugins = plugins
        self._get_provider = get_provider
        self._owned: dict[str, Provider] = {}
        self._names = list(providers) if providers is not None else None
        self.named_models = dict(named_models or {})
        self.named_stats = named_stats
        self.ttl = ttl
        self.error_ttl = min(ttl, 30.0)
        self.timeout = timeout
        self._listings: dict[str, ProviderListing] = {}
        self._inflight: dict[str, asyncio.Task[ProviderListing]] = {}
        self._health: dict[str, ProviderHealth] = {}
        self._monitor: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- providers --------------------------------------------------------------------------
    @property
    def plugins(self) -> Plugins:
        """The plugins providers come from."""
        return self._plugins or get_plugins()

    def provider_names(self) -> list[str]:
        """The providers this registry lists."""
        return list(self._names) if self._names is not None else self.plugins.provider_names()

    def provider(self, name: str) -> Provider:
        """The provider instance of ``name`` (shared with the caller's pool when given; use
        :meth:`aprovider` when ``get_provider`` is asynchronous)."""
        if self._get_provider is not None:
            got = self._get_provider(name)
            if inspect.isawaitable(got):
                close = getattr(got, "close", None)
                if close is not None:
                    close()
                raise TypeError("get_provider is asynchronous: use `await registry.aprovider()`")
            return got
        provider = self._owned.get(name)
        if provider is None:
            from modelplex.specs import create_provider

            provider = self._owned[name] = create_provider(name, self.plugins)
        return provider

    async def aprovider(self, name: str) -> Provider:
        """:meth:`provider`, for synchronous and asynchronous ``get_provider`` alike."""
        if self._get_provider is not None:
            got = self._get_provider(name)
            return await got if inspect.isawaitable(got) else got
        return self.provider(name)

    # -- listing ----------------------------------------------------------------------------
    def _fresh(self, listing: ProviderListing, now: float) -> bool:
        return now - listing.fetched_at < (self.ttl if listing.ok else self.error_ttl)

    def _fetch(self, name: str) -> asyncio.Task[ProviderListing]:
        task = self._inflight.get(name)
        if task is None or task.done():
            task = asyncio.ensure_future(self._list_one(name))
            self._inflight[name] = task
            task.add_done_callback(functools.partial(self._fetched, name))
        return task

    def _fetched(self, name: str, task: asyncio.Task[ProviderListing]) -> None:
        if self._inflight.get(name) is task:
            del self._inflight[name]
        if not task.cancelled() and task.exception() is None:
            self._listings[name] = task.result()

    async def _list_one(self, name: str) -> ProviderListing:
        start = time.perf_counter()
        local = False
        try:
            provider = await self.aprovider(name)
            local = is_local_provider(provider)
            missing = provider.missing_setting()
            if missing:  # not configured: never contacted
                return ProviderListing(name, fetched_at=time.time(), local=local,
                                       missing=missing)
            infos = await asyncio.wait_for(provider.list_models(), self.timeout)
        except UnsupportedOperationError:
            infos = []
        except TimeoutError:
            return ProviderListing(name, error=f"{name}: no answer within {self.timeout:g} s",
                                   fetched_at=time.time(), local=local)
        except ModelplexError as err:
            return ProviderListing(name, error=str(err), fetched_at=time.time(), local=local)
        except Exception as err:  # a broken plugin must not take the others down
            return ProviderListing(name, error=f"{name}: {type(err).__name__}: {err}",
                                   fetched_at=time.time(), local=local)
        latency = (time.perf_counter() - start) * 1000
        models = [self._normalize(name, provider, info) for info in infos]
        return ProviderListing(name, models=models, fetched_at=time.time(),
                               latency_ms=latency, local=local)

    @staticmethod
    def _normalize(name: str, provider: Provider, info: ModelInfo) -> ModelInfo:
        caps = normalize_capabilities(info.capabilities)
        flags = provider.capabilities
        update: dict[str, Any] = {"id": f"{name}:{info.name}", "provider": name}
        if not caps:  # the API says nothing per model: what the provider can do
            caps = ["chat"]
            caps += [cap for cap, on in (("tools", flags.tools), ("vision", flags.vision),
                                         ("json", flags.json_mode)) if on]
            update["details"] = {**info.details, "capabilities_source": "provider"}
        elif flags.json_mode and "json" not in caps and \
                {"chat", "completion"} & set(caps):
            caps.append("json")
        update["capabilities"] = caps
        return info.model_copy(update=update)

    def named_latency(self, name: str) -> float | None:
        """The median latency (ms) a named model's router observed, when known."""
        stats = self.named_stats(name) if self.named_stats is not None else None
        latency = (stats or {}).get("latency_ms") or {}
        p50 = latency.get("p50") if isinstance(latency, Mapping) else None
        return float(p50) if p50 is not None else None

    def _named(self) -> ProviderListing:
        models = []
        for alias, target in self.named_models.items():
            details: dict[str, Any] = {"target": target}
            latency = self.named_latency(alias)
            if latency is not None:
                details["latency_ms"] = latency
            models.append(ModelInfo(id=f"named:{alias}", name=alias, provider="named",
                                    details=details))
        return ProviderListing("named", models=models, fetched_at=time.time())

    async def listings(self, *, refresh: bool = False,
                       provider: str | None = None) -> dict[str, ProviderListing]:
        """Each provider's listing; stale ones are returned and refreshed in the background.

        ``refresh`` fetches now instead; ``provider`` limits to one provider.
        """
        names = [provider] if provider else self.provider_names()
        now = time.time()
        waits: dict[str, asyncio.Task[ProviderListing]] = {}
        for name in names:
            listing = self._listings.get(name)
            if refresh or listing is None:
                waits[name] = self._fetch(name)
            elif not self._fresh(listing, now):
                self._fetch(name)  # stale while revalidating
        if waits:
            await asyncio.gather(*waits.values())
        out: dict[str, ProviderListing] = {}
        if self.named_models and provider in (None, "named"):
            out["named"] = self._named()  # first: the names users configured
        out.update({name: waits[name].result() if name in waits else self._listings[name]
                    for name in names})
        return out

    async def list_models(self, *, refresh: bool = False) -> list[ModelInfo]:
        """Every model of every provider that answered."""
        listings = await self.listings(refresh=refresh)
        return [info for listing in listings.values() for info in listing.models]

    async def errors(self) -> dict[str, str]:
        """The providers whose last listing failed, with the error."""
        return {name: listing.error for name, listing in (await self.listings()).items()
                if listing.error}

    async def refresh(self, provider: str | None = None) -> dict[str, ProviderListing]:
        """Fetch the listings now (one provider, or all)."""
        return await self.listings(refresh=True, provider=provider)

    def invalidate(self, provider: str | None = None) -> None:
        """Forget cached listings so the next read fetches them."""
        if provider is None:
            self._listings.clear()
        else:
            self._listings.pop(provider, None)

    async def search(self, query: str | None = None, *, provider: str | Sequence[str] | None = None,
                     capability: str | Sequence[str] | None = None,
                     min_context: int | None = None, max_size_bytes: int | None = None,
                     max_parameters: int | None = None, local: bool | None = None,
                     size: ModelSize | str | Sequence[ModelSize | str] | None = None,
                     refresh: bool = False) -> list[ModelInfo]:
        """Models matching every given filter.

        ``query`` is split into words that must all appear (case-insensitively) in the id,
        family, parameter size, quantization or description. ``capability`` names one or more
        capabilities the model must have. A model whose context length or size is unknown
        does not pass ``min_context`` or a size limit. ``size`` keeps the models of one or more
        :class:`~modelplex.types.ModelSize` categories (``"small"``: under 5 GB, ``"medium"``:
        5 to 20 GB, ``"large"``); a model of unknown size does not pass it.
        """
        sizes = None if size is None else {ModelSize(s) for s in (
            [size] if isinstance(size, str) else size)}
        listings = await self.listings(refresh=refresh)
        providers = {provider} if isinstance(provider, str) else \
            set(provider) if provider is not None else None
        wanted = normalize_capabilities([capability] if isinstance(capability, str)
                                        else capability or [])
        terms = (query or "").lower().split()
        found = []
        for name, listing in listings.items():
            if providers is not None and name not in providers:
                continue
            if local is not None and listing.local != local:
                continue
            for info in listing.models:
                if wanted and not set(wanted) <= set(info.capabilities):
                    continue
                if min_context is not None and (info.context_length or 0) < min_context:
                    continue
                if max_size_bytes is not None and (info.size_bytes is None
                                                   or info.size_bytes > max_size_bytes):
                    continue
                if max_parameters is not None and (info.parameter_count is None
                                                   or info.parameter_count > max_parameters):
                    continue
                if sizes is not None and ModelSize.of(info) not in sizes:
                    continue
                if terms and not _matches(info, terms):
                    continue
                found.append(info)
        return found

    async def get_model(self, provider: str, name: str) -> ModelInfo:
        """One model's details: the provider's own description, else the cached listing.

        Raises :class:`~modelplex.errors.ModelNotFoundError` when neither knows it.
        """
        prov = await self.aprovider(provider)
        try:
            info = await asyncio.wait_for(prov.show_model(name), self.timeout)
        except (UnsupportedOperationError, TimeoutError, ModelNotFoundError):
            listing = (await self.listings(provider=provider))[provider]
            for cached in listing.models:
                if name in (cached.name, cached.id):
                    return cached
            raise ModelNotFoundError(f"{provider}: no model named {name!r}", status_code=404,
                                     provider=provider) from None
        return self._normalize(provider, prov, info)

    async def model_exists(self, model: str) -> bool:
        """Whether ``"provider:model"`` exists: the provider describes it or lists it."""
        provider, _, name = model.partition(":")
        if not name:
            raise ValueError(f"model_exists wants 'provider:model' (got {model!r})")
        try:
            await self.get_model(provider, name)
        except ModelNotFoundError:
            return False
        return True

    # -- health -----------------------------------------------------------------------------
    async def _check(self, name: str) -> ProviderHealth:
        start = time.perf_counter()
        raised = False
        missing = None
        try:
            provider = await self.aprovider(name)
            missing = provider.missing_setting()
            if missing:  # not configured: never contacted
                status = HealthStatus(provider=name, healthy=False,
                                      detail=f"not configured: set {missing}")
            else:
                status = await asyncio.wait_for(provider.health(), self.timeout)
        except TimeoutError:
            status = HealthStatus(provider=name, healthy=False,
                                  detail=f"no answer within {self.timeout:g} s")
        except Exception as err:  # a broken plugin is reported, not raised
            status = HealthStatus(provider=name, healthy=False, detail=str(err))
            raised = True
        if status.latency_ms is None:
            status = status.model_copy(update={"latency_ms":
                                               (time.perf_counter() - start) * 1000})
        health = ProviderHealth(status=status.model_copy(update={"provider": name}),
                                checked_at=time.time(), raised=raised, missing=missing)
        self._health[name] = health
        return health

    async def check_health(self, provider: str | None = None) -> dict[str, ProviderHealth]:
        """Check providers now (one, or all concurrently) and return their health."""
        names = [provider] if provider else self.provider_names()
        results = await asyncio.gather(*(self._check(name) for name in names))
        return dict(zip(names, results, strict=True))

    def last_health(self) -> dict[str, ProviderHealth]:
        """The health of each provider as last checked (by :meth:`check_health` or the
        monitor), without checking again."""
        return dict(self._health)

    def start_monitor(self, interval: float = 60.0) -> None:
        """Check every provider's health every ``interval`` seconds, and refresh stale
        listings, in a background task until :meth:`aclose`."""
        if self._monitor is not None and not self._monitor.done():
            return

        async def monitor() -> None:
            while True:
                await self.check_health()
                await self.listings()
                await asyncio.sleep(interval)

        self._monitor = asyncio.ensure_future(monitor())

    async def aclose(self) -> None:
        """Stop the monitor and background refreshes; close providers the registry opened."""
        tasks = [t for t in (self._monitor, *self._inflight.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._monitor = None
        owned, self._owned = list(self._owned.values()), {}
        for provider in owned:
            with contextlib.suppress(Exception):
                await provider.aclose()


def _lists(info: ModelInfo, model: str) -> bool:
    """Whether ``info`` is ``model`` (Ollama-style ``name:latest`` counts as ``name``)."""
    return info.name in (model, f"{model}:latest")


async def find_model(model: str, *, plugins: Plugins | None = None,
                     provider_config: Mapping[str, Mapping[str, Any]] | None = None,
                     list_timeout: float = 10.0) -> tuple[list[str], dict[str, str]]:
    """The installed providers whose model listing has ``model`` (sorted), and the providers
    that could not be listed with their errors.

    Each provider is created with its ``provider_config`` keywords, listed once and closed.
    :func:`resolve_bare_model` resolves a bare model name (``"llama3.2"``) with it.
    """
    from modelplex.specs import create_provider

    plugins = plugins or get_plugins()
    config = provider_config or {}
    created: list[Provider] = []

    def get_provider(name: str) -> Provider:
        provider = create_provider(name, plugins, **dict(config.get(name, {})))
        created.append(provider)
        return provider

    registry = ModelRegistry(plugins=plugins, get_provider=get_provider,
                             timeout=list_timeout)
    try:
        listings = await registry.listings(refresh=True)
    finally:
        await registry.aclose()
        for provider in created:
            with contextlib.suppress(Exception):
                await provider.aclose()
    found = sorted(name for name, listing in listings.items()
                   if any(_lists(info, model) for info in listing.models))
    errors = {name: listing.error for name, listing in listings.items() if listing.error}
    return found, errors


async def resolve_bare_model(model: str | None, *, plugins: Plugins,
                             named: Container[str] = (),
                             provider_config: Mapping[str, Mapping[str, Any]] | None = None
                             ) -> str | None:
    """``"provider:model"`` for a bare model name that exactly one installed provider lists
    (the name as asked is sent, so ``model_name`` reports it); ``provider:model`` specs,
    provider names and the ``named`` models of the config are returned unchanged.

    Raises :class:`~modelplex.errors.ConfigurationError` when no provider or several list it.
    """
    if not model or ":" in model or model in plugins.provider_names() or model in named:
        return model
    candidates, errors = await find_model(model, plugins=plugins,
                                          provider_config=provider_config)
    if len(candidates) == 1:
        return f"{candidates[0]}:{model}"
    if candidates:
        raise ConfigurationError(
            f"model {model!r} is served by several providers: "
            f"{', '.join(f'{name}:{model}' for name in candidates)}; name one of them")
    unreachable = f" (could not list: {', '.join(sorted(errors))})" if errors else ""
    known = [*plugins.provider_names(), *(named if isinstance(named, Iterable) else ())]
    raise ConfigurationError(
        f"model {model!r}{did_you_mean(model, known)} does not name a provider and no "
        "installed provider lists it"
        f"{unreachable}; write it as 'provider:model' (installed providers: "
        f"{', '.join(plugins.provider_names())})")
