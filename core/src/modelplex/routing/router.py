"""The router: a :class:`~modelplex.provider.Provider` over deployments of one named model.

Per request it picks a deployment with its strategy, retries retriable failures (connection,
timeout, 408/409/429/5xx/529) with full-jitter exponential backoff that honours
``Retry-After`` within a budget of attempts and seconds, cools down a deployment that answered
429/503/529 or refused the connection, and falls back to other named models when every
deployment failed or is cooling. A request that fails with 400/401/404 fails at once.

Streaming rule: failover happens only before the first chunk reached the caller. After it, a
failure raises the provider's error with the partial answer kept (``err.partial_content``);
no second request is made, so text is never duplicated or spliced from two models.

A plain ``provider:model`` is a router of one deployment (:meth:`Router.single`): the same
attempts, backoff and streaming rule, but only what waiting can fix is retried (connection
failures, 429/502/503/504/529, after ``Retry-After`` when it fits the budget), nothing cools
down, and when it gives up the provider's own error is raised, not a :class:`RoutingError`.

Cooldowns, in-flight counts and rpm windows live in a :class:`~modelplex.routing.state.RouterState`
(by default in memory); a backend that raises is treated as having no information.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from typing import Any, TypeVar

import attrs
from pydantic import ValidationError

from modelplex import telemetry
from modelplex.chunks import ChatResponse, StreamChunk
from modelplex.config import RetryConfig
from modelplex.errors import (
    ConfigurationError,
    ProviderConnectionError,
    ProviderError,
    ProviderStatusError,
    ProviderTimeoutError,
    RateLimitError,
    RoutingError,
)
from modelplex.provider import Capabilities, ChatRequest, CommonOptions, Provider, options_error
from modelplex.routing.deployments import Deployment, Stats
from modelplex.routing.state import MemoryState, RouterState
from modelplex.routing.strategies import Strategy, make_strategy
from modelplex.types import HealthStatus, ModelInfo, PullProgress

__all__ = ["RouteInfo", "Router", "is_retriable", "is_retriable_single"]

log = logging.getLogger("modelplex.routing")
T = TypeVar("T")

RETRIABLE_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})


def is_retriable(err: ProviderError) -> bool:
    """Whether another attempt may succeed: connection, timeout, 408/409/429/5xx/529."""
    if err.retriable:
        return True
    return isinstance(err, ProviderStatusError) and err.status_code in RETRIABLE_STATUSES


SINGLE_RETRIABLE_STATUSES = frozenset({429, 502, 503, 504, 529})


def is_retriable_single(err: ProviderError) -> bool:
    """Whether waiting and asking the same deployment again may succeed: a connection
    failure, 429/502/503/504/529. Not a timeout (its budget is spent already) nor another
    status or a stream error (the same server gives the same answer)."""
    if isinstance(err, ProviderTimeoutError):
        return False
    if isinstance(err, ProviderConnectionError):
        return True
    return isinstance(err, ProviderStatusError) and err.status_code in SINGLE_RETRIABLE_STATUSES


@attrs.frozen
class RouteInfo:
    """Which deployment answered a routed request, and after how many attempts.

    ``model`` is the named model asked for; ``group`` the one that answered (a fallback's name
    when a fallback did); ``deployment`` its label; ``provider``/``provider_model`` what it is.
    """

    model: str
    group: str
    deployment: str
    provider: str
    provider_model: str
    attempts: int


# -- state access that never fails a request ---------------------------------------------------
_warned: set[int] = set()


async def _safe(state: RouterState, call: Awaitable[T], default: T) -> T:
    try:
        return await call
    except Exception as err:  # a broken backend is "no information", never a failed request
        if id(state) not in _warned:
            _warned.add(id(state))
            log.warning("router state %s failed (%s: %s); using no shared state for now",
                        type(state).__name__, type(err).__name__, err)
        return default


_NO_STATE = MemoryState()  # plain routers: never asked (nothing cools down, no rpm)


# -- the router --------------------------------------------------------------------------------
class _Trial:
    """The attempts of one routed request: budget, failures, and the chain of fallbacks."""

    __slots__ = ("deadline", "failed", "group_index", "groups", "out_of_time", "records",
                 "retry_after", "router", "tries", "waits")

    def __init__(self, router: Router) -> None:
        self.router = router
        self.deadline = time.monotonic() + router.retries.timeout
        self.records: list[tuple[str, ProviderError]] = []
        self.groups = router.chain
        self.group_index = 0
        self.tries = 0
        self.failed: set[int] = set()
        self.waits: list[float] = []
        self.retry_after: float | None = None
        self.out_of_time = False

    def budget(self) -> asyncio.Timeout:
        """The deadline of one attempt: the end of the budget (``retries.timeout``) of a named
        model; none for a plain ``provider:model``, whose budget bounds only the waits
        between attempts (its provider's own timeouts bound an attempt)."""
        if self.router.plain:
            return asyncio.timeout(None)
        return asyncio.timeout(self.deadline - time.monotonic())

    def ran_out(self, dep: Deployment) -> ProviderError:
        """The attempt on ``dep`` was cancelled at the end of the budget: the error to raise."""
        seconds = self.router.retries.timeout
        err = ProviderTimeoutError(
            f"{dep.label}: no answer before the retry budget of {seconds:g} s "
            "(retries.timeout) ran out; the attempt was cancelled",
            phase="total", timeout=seconds, provider=dep.provider.name)
        dep.stats.failure(err)
        self.records.append((dep.label, err))
        self.out_of_time = True
        return self.error()

    async def next(self) -> tuple[Router, Deployment]:
        """The next deployment to try; raises :class:`RoutingError` when none is left."""
        groups = self.groups
        while self.group_index < len(groups):
            group = groups[self.group_index]
            if self.tries < group.retries.attempts:
                last_group = self.group_index == len(groups) - 1
                dep = await group._pick(self, last_group)
                if dep is not None:
                    self.tries += 1
                    return group, dep
            self.group_index += 1
            self.tries = 0
        raise self.error()

    async def failed_attempt(self, group: Router, dep: Deployment, err: ProviderError) -> None:
        """Record a failed attempt; re-raise it when it must not be retried."""
        dep.stats.failure(err)
        self.records.append((dep.label, err))
        if group.plain:  # one deployment: wait (Retry-After) and ask it again, no cooldown
            if not is_retriable_single(err):
                raise err
            self.retry_after = getattr(err, "retry_after", None)
            return
        if not is_retriable(err):
            raise err
        self.failed.add(id(dep))
        cool: float | None = None
        if isinstance(err, RateLimitError):
            cool = err.retry_after if err.retry_after is not None else group.retries.cooldown
        elif isinstance(err, ProviderConnectionError):
            cool = group.retries.cooldown
        if cool:
            await _safe(group.state, group.state.start_cooldown(dep.key, cool), None)

    def error(self) -> ProviderError:
        if self.router.plain and self.records:  # one deployment: its own, typed error
            return self.records[-1][1]
        name = self.router.name
        names = [g.name for g in self.groups]
        scope = repr(name) + (f" and its fallbacks ({', '.join(map(repr, names[1:]))})"
                              if len(names) > 1 else "")
        if not self.records:
            soon = f" (the first is free in {min(self.waits):.1f} s)" if self.waits else ""
            message = (f"model {scope}: no deployment could be tried: every one is cooling "
                       f"down or at its rate limit{soon}; try again later")
        else:
            listed = "; ".join(f"{i}. {label}: {_describe(err)}"
                               for i, (label, err) in enumerate(self.records, 1))
            message = f"model {scope}: all {len(self.records)} attempts failed: {listed}"
            if self.out_of_time:
                message = (f"model {scope}: the retry budget of {self.router.retries.timeout:g}"
                           f" s (retries.timeout) ran out after {len(self.records)} "
                           f"attempt(s): {listed}")
        err = RoutingError(message, attempts=list(self.records), provider=name)
        err.retry_after = min(self.waits) if self.waits else None
        if self.records:
            err.__cause__ = self.records[-1][1]
            err.partial_chunks = []
        return err


def _describe(err: ProviderError) -> str:
    status = getattr(err, "status_code", None)
    return f"{type(err).__name__}" + (f" (HTTP {status})" if status else "") + f": {err}"


class Router(Provider):
    """A named model: a provider that routes each request to one of its deployments.

    Args:
        name: the named model (what users type).
        deployments: the :class:`Deployment` objects.
        strategy: ``round_robin``, ``random``, ``weighted``, ``least_busy``, ``latency``, a
            registered name or a :class:`Strategy`.
        fallbacks: other routers tried, in order, when every deployment failed or is cooling.
        retries: a :class:`~modelplex.config.RetryConfig` (attempts, timeout, backoff,
            cooldown).
        state: where cooldowns, in-flight counts and rpm windows live (default: memory).
        options: provider options applied to every deployment.
        on_close: called by :meth:`aclose` instead of closing the deployments' providers
            (the pipeline passes one that releases them to the pool).
        plain: one deployment standing for its provider (see :meth:`single`).
    """

    name: str = "router"

    def __init__(self, name: str, deployments: Iterable[Deployment], *,
                 strategy: str | Strategy = "round_robin", fallbacks: Iterable[Router] = (),
                 retries: RetryConfig | None = None, state: RouterState | None = None,
                 options: Mapping[str, Any] | None = None,
                 on_close: Callable[[], Awaitable[None]] | None = None,
                 plain: bool = False) -> None:
        self.name = name
        self.plain = plain
        self.deployments = list(deployments)
        if not self.deployments:
            raise ConfigurationError(f"model {name!r} has no deployments")
        self.strategy = make_strategy(strategy)
        self.fallbacks = list(fallbacks)
        self.retries = retries or RetryConfig()
        self.state: RouterState = state or MemoryState()
        self.default_model = name
        self.stats_total = Stats()
        self._on_close = on_close
        self._keys = tuple(d.key for d in self.deployments)
        self._chain: list[Router] | None = None
        self._limited = any(d.rpm for d in self.deployments)
        labels = Counter(d.label for d in self.deployments)
        for index, dep in enumerate(self.deployments, 1):
            if labels[dep.label] > 1:  # two deployments of one model: tell them apart
                dep.label = f"{dep.label}#{index}"
        kinds = {d.provider.Options for d in self.deployments}
        self._options_cls: type[CommonOptions] = kinds.pop() if len(kinds) == 1 else CommonOptions
        self.Options = self._options_cls  # type: ignore[misc]
        first = self.deployments[0].provider
        self.capabilities: Capabilities = first.capabilities  # type: ignore[misc]
        if plain:
            if len(self.deployments) != 1 or self.fallbacks:
                raise ConfigurationError("a plain router has one deployment, no fallbacks")
            self.default_model = first.default_model
        #: deployment providers with checks of their own beyond their Options model
        self._checkers = list({id(d.provider): d.provider for d in self.deployments
                               if d.provider.Options is self._options_cls
                               and type(d.provider).parse_options is not Provider.parse_options
                               }.values())
        for dep in self.deployments:
            if options:
                dep.options = {**options, **dep.options}
            dep._same_options = (not dep.options
                                 and dep.provider.Options is self._options_cls)

    @classmethod
    def single(cls, provider: Provider, model: str, *, retries: RetryConfig | None = None,
               on_close: Callable[[], Awaitable[None]] | None = None) -> Router:
        """A plain ``provider:model``: a router of one deployment that stands for
        ``provider`` (its name, options and default model; requests keep their model name).

        It retries what waiting can fix (:func:`is_retriable_single`), after ``Retry-After``
        when that fits in ``retries.timeout``, else after a jittered backoff; nothing cools
        down; after the last attempt the provider's own error is raised.
        """
        return cls(provider.name, [Deployment(provider, model)], retries=retries,
                   state=_NO_STATE, on_close=on_close, plain=True)

    def __repr__(self) -> str:
        return f"<Router {self.name!r} {[d.label for d in self.deployments]}>"

    @property
    def chain(self) -> list[Router]:
        """This router, then its fallbacks (theirs too), each once."""
        if self._chain is None:
            chain: list[Router] = []
            todo = [self]
            while todo:
                router = todo.pop(0)
                if all(router is not seen for seen in chain):
                    chain.append(router)
                    todo.extend(router.fallbacks)
            self._chain = chain
        return self._chain

    def parse_options(self, options: Mapping[str, Any] | CommonOptions | None) -> CommonOptions:
        """Validate options for every deployment (their provider's options when they share one
        provider type, else the common options)."""
        cls = self._options_cls
        if not isinstance(options, cls):
            if isinstance(options, CommonOptions):
                options = options.set_values()
            try:
                options = cls.model_validate(dict(options or {}))
            except ValidationError as err:
                raise options_error(err, cls, self.name) from None
        # each provider's own checks too (llamacpp refuses load-time settings per instance)
        for provider in self._checkers:
            provider.parse_options(options)
        return options

    # -- picking ---------------------------------------------------------------------------
    async def _pick(self, trial: _Trial, last_group: bool) -> Deployment | None:
        """A deployment to try now, after any wait the budget allows; ``None``: give up here."""
        if self.plain:
            if trial.records:  # a retry: after Retry-After, else a jittered backoff
                cap = min(self.retries.max_backoff,
                          self.retries.backoff * 2 ** max(0, len(trial.records) - 1))
                delay = max(random.uniform(0, cap), trial.retry_after or 0.0)
                if time.monotonic() + delay > trial.deadline:
                    return None
                await asyncio.sleep(delay)
            return self.deployments[0]
        state = self.state
        while True:
            cooling = await _safe(state, state.cooldowns(self._keys), {})
            deps = self.deployments
            delay = 0.0
            usable = [d for d in deps if d.key not in cooling] if cooling else deps
            failed = trial.failed
            fresh = [d for d in usable if id(d) not in failed] if failed else usable
            if fresh:
                pool = fresh
            elif usable:  # each usable one already failed in this request: back off first
                pool = usable
                cap = min(self.retries.max_backoff,
                          self.retries.backoff * 2 ** max(0, len(trial.records) - 1))
                delay = random.uniform(0, cap)
            else:  # everything is cooling
                wait = min(cooling.values())
                trial.waits.append(wait)
                if not last_group:
                    return None  # a fallback answers now
                pool, delay = deps, wait
            if delay:
                if time.monotonic() + delay > trial.deadline:
                    trial.waits.append(delay)
                    return None
                await asyncio.sleep(delay)
                if not fresh and not usable:
                    continue  # cooled down: look again
            if len(pool) > 1 and any(d.semaphore is not None for d in pool):
                free = [d for d in pool if d.semaphore is None or not d.semaphore.locked()]
                pool = free or pool
            in_flight = None
            if self.strategy.needs_in_flight and len(pool) > 1:
                in_flight = await _safe(state, state.in_flight(d.key for d in pool), None)
            if not self._limited:
                return self.strategy.choose(pool, in_flight)
            pool = list(pool)
            waits: list[float] = []
            while pool:
                dep = self.strategy.choose(pool, in_flight)
                if not dep.rpm:
                    return dep
                wait = await _safe(state, state.take_rate_slot(dep.key, dep.rpm), 0.0)
                if wait <= 0:
                    return dep
                waits.append(wait)
                pool.remove(dep)
            soonest = min(waits)
            if time.monotonic() + soonest > trial.deadline:
                trial.waits.append(soonest)
                return None
            await asyncio.sleep(soonest)  # a slot frees then: no busy waiting

    async def _enter(self, dep: Deployment) -> None:
        # counted before waiting for a slot, so least_busy spreads the queue too
        dep.active += 1
        if self.strategy.needs_in_flight:
            await _safe(self.state, self.state.add_in_flight(dep.key, 1), None)
        if dep.semaphore is not None:
            try:
                await dep.semaphore.acquire()
            except BaseException:
                dep.active -= 1
                if self.strategy.needs_in_flight:
                    await _safe(self.state, self.state.add_in_flight(dep.key, -1), None)
                raise

    async def _leave(self, dep: Deployment) -> None:
        dep.active -= 1
        if dep.semaphore is not None:
            dep.semaphore.release()
        if self.strategy.needs_in_flight:
            await _safe(self.state, self.state.add_in_flight(dep.key, -1), None)

    def _route(self, group: Router, dep: Deployment, trial: _Trial) -> RouteInfo:
        return RouteInfo(model=self.name, group=group.name, deployment=dep.label,
                         provider=dep.provider.name, provider_model=dep.model,
                         attempts=len(trial.records) + 1)

    # -- requests --------------------------------------------------------------------------
    def stream_request(self, request: ChatRequest) -> AsyncGenerator[StreamChunk, None]:
        """Stream from one deployment; retry and fail over only before the first chunk."""
        return self._routed_stream(request)

    async def _routed_stream(self, request: ChatRequest) -> AsyncGenerator[StreamChunk, None]:
        trial = _Trial(self)
        started = time.perf_counter()
        plain = self.plain
        while True:
            try:
                group, dep = await trial.next()
            except ProviderError as err:
                self.stats_total.failure(err)
                raise
            sub = request if plain else dep.prepare(request)
            await group._enter(dep)
            start = time.perf_counter()
            stream = dep.provider.stream_request(sub)
            attempt = telemetry.start_attempt(group, dep, len(trial.records) + 1)  # for a span
            failure: ProviderError | None = None
            try:
                budget = trial.budget()  # the attempt ends with the budget, hung or not
                try:
                    async with budget:
                        first = await anext(stream)
                except StopAsyncIteration:
                    first = None
                except TimeoutError:
                    if not budget.expired():
                        raise
                    spent = trial.ran_out(dep)
                    failure = trial.records[-1][1]
                    self.stats_total.failure(spent)
                    raise spent from failure
                except ProviderError as err:
                    failure = err
                    try:
                        await trial.failed_attempt(group, dep, err)
                    except ProviderError:
                        self.stats_total.failure(err)
                        raise
                    continue
                ttft = time.perf_counter() - start
                dep.observe(ttft)
                chunk = first
                if first is not None:
                    if not plain:
                        first.route = self._route(group, dep, trial)
                    try:
                        yield first
                        async for chunk in stream:
                            yield chunk
                    except ProviderError as err:  # after the first chunk: no failover
                        failure = err
                        dep.stats.failure(err)
                        self.stats_total.failure(err)
                        raise
                now = time.perf_counter()
                usage = chunk.usage if chunk is not None else None
                dep.stats.success(now - start, ttft, usage)
                self.stats_total.success(now - started, ttft + start - started, usage)
                return
            finally:
                telemetry.end_attempt(attempt, failure)
                await stream.aclose()
                await group._leave(dep)

    async def _call(self, call: Callable[[Deployment], Awaitable[T]]) -> tuple[T, RouteInfo]:
        """Run one non-streaming call on a deployment, with retries and fallbacks."""
        trial = _Trial(self)
        started = time.perf_counter()
        while True:
            try:
                group, dep = await trial.next()
            except ProviderError as err:
                self.stats_total.failure(err)
                raise
            await group._enter(dep)
            start = time.perf_counter()
            budget = trial.budget()  # the attempt ends with the budget, hung or not
            try:
                async with budget:
                    with telemetry.attempt_span(group, dep, len(trial.records) + 1):
                        result = await call(dep)
            except TimeoutError:
                if not budget.expired():
                    raise
                spent = trial.ran_out(dep)
                self.stats_total.failure(spent)
                raise spent from trial.records[-1][1]
            except ProviderError as err:
                try:
                    await trial.failed_attempt(group, dep, err)
                except ProviderError:
                    self.stats_total.failure(err)
                    raise
                continue
            finally:
                await group._leave(dep)
            now = time.perf_counter()
            usage = result.usage if isinstance(result, ChatResponse) else None
            dep.observe(now - start)
            dep.stats.success(now - start, None, usage)
            self.stats_total.success(now - started, None, usage)
            return result, self._route(group, dep, trial)

    async def _complete(self, request: ChatRequest) -> ChatResponse:
        if self.plain:
            response, _ = await self._call(lambda dep: dep.provider.complete_request(request))
            return response
        response, route = await self._call(
            lambda dep: dep.provider.complete_request(dep.prepare(request)))
        response.route = route
        return response

    def _stream(self, request: ChatRequest) -> Any:  # pragma: no cover - stream_request is used
        return self._routed_stream(request)

    async def embed(self, texts: Sequence[str], *, model: str = "",
                    options: Mapping[str, Any] | None = None) -> list[list[float]]:
        """Embed on one deployment, with retries and fallbacks (a plain router sends
        ``model``, a named one its deployment's)."""
        if self.plain:
            async def call(dep: Deployment) -> list[list[float]]:
                return await dep.provider.embed(texts, model=model or dep.model,
                                                options=options)

            vectors, _ = await self._call(call)
            return vectors
        vectors, _ = await self.embed_routed(texts, options=options)
        return vectors

    async def embed_routed(self, texts: Sequence[str], *,
                           options: Mapping[str, Any] | None = None
                           ) -> tuple[list[list[float]], RouteInfo]:
        """:meth:`embed`, and which deployment answered."""
        async def call(dep: Deployment) -> list[list[float]]:
            merged = {**dep.options, **(options or {})}
            return await dep.provider.embed(texts, model=dep.model, options=merged or None)

        return await self._call(call)

    # -- a plain router's model management is its provider's ------------------------------
    def _only(self, operation: str) -> Provider:
        if not self.plain:
            raise self._unsupported(operation)
        return self.deployments[0].provider

    async def list_models(self) -> list[ModelInfo]:
        """The provider's models (a plain router only)."""
        return await self._only("listing models").list_models()

    async def show_model(self, name: str) -> ModelInfo:
        """The provider's model details (a plain router only)."""
        return await self._only("showing models").show_model(name)

    def pull_model(self, name: str) -> AsyncIterator[PullProgress]:
        """The provider's download (a plain router only)."""
        return self._only("pulling models").pull_model(name)

    async def delete_model(self, name: str) -> None:
        """The provider's delete (a plain router only)."""
        await self._only("deleting models").delete_model(name)

    async def list_loaded_models(self) -> list[ModelInfo]:
        """The provider's loaded models (a plain router only)."""
        return await self._only("listing loaded models").list_loaded_models()

    async def health(self) -> HealthStatus:
        """The provider's health (a plain router), else whether a deployment is healthy."""
        if self.plain:
            return await self.deployments[0].provider.health()
        return await super().health()

    # -- stats and lifecycle ---------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Usage statistics of this named model and of each deployment."""
        return {"model": self.name, "strategy": type(self.strategy).__name__,
                **self.stats_total.snapshot(),
                "deployments": {d.label: {**d.stats.snapshot(), "in_flight": d.active}
                                for d in self.deployments}}

    async def aclose(self) -> None:
        """Release the deployments (to the pool, or close them when built by hand)."""
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            await on_close()
            return
        seen: set[int] = set()
        for dep in self.deployments:
            if id(dep.provider) not in seen:
                seen.add(id(dep.provider))
                await dep.provider.aclose()
