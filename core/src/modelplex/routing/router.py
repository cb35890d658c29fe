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
(by default in memory); a backend that raises is treated as having no information. The
attempts of one request (which failures are retried, the budget, the fallback chain, the error
raised at the end) are a :class:`~modelplex.routing.attempts.Trial`.
"""

from __future__ import annotations

import asyncio
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
from typing import Any, Protocol, TypeVar

import attrs
from pydantic import ValidationError

from modelplex import telemetry
from modelplex.chunks import ChatResponse, StreamChunk
from modelplex.config import RetryConfig
from modelplex.errors import (
    ConfigurationError,
    ProviderError,
)
from modelplex.provider import Capabilities, ChatRequest, CommonOptions, Provider, options_error
from modelplex.routing.attempts import Trial, safe
from modelplex.routing.deployments import Deployment, Stats
from modelplex.routing.state import MemoryState, RouterState
from modelplex.routing.strategies import Strategy, make_strategy
from modelplex.types import HealthStatus, ModelInfo, PullProgress

__all__ = ["RouteInfo", "Router"]

T = TypeVar("T")


class StreamWatch(Protocol):
    """What a layer right over a router learns of a stream without wrapping it
    (:meth:`Router.watched_stream`): ``begin`` when the stream starts, ``first`` with the
    first chunk, ``chunks`` counted, ``end`` with the last chunk, the error, and whether the
    stream was read to its end (neither: the caller stopped early)."""

    chunks: int

    def begin(self) -> None: ...

    def first(self, chunk: StreamChunk) -> None: ...

    def end(self, last: StreamChunk | None, err: BaseException | None, done: bool) -> None: ...


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


_NO_STATE = MemoryState()  # plain routers: never asked (nothing cools down, no rpm)


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
        self._bounded = any(d.semaphore is not None for d in self.deployments)
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

        It retries what waiting can fix
        (:func:`~modelplex.routing.attempts.is_retriable_single`), after ``Retry-After``
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
    async def _pick(self, trial: Trial, last_group: bool) -> Deployment | None:
        """A deployment to try now, after any wait the budget allows; ``None``: give up here."""
        if self.plain:
            if trial.records:  # a retry: after Retry-After, else a jittered backoff
                delay = max(trial.backoff(self), trial.retry_after or 0.0)
                if time.monotonic() + delay > trial.deadline:
                    return None
                await asyncio.sleep(delay)
            return self.deployments[0]
        state = self.state
        while True:
            cooling = ({} if type(state) is MemoryState and state.cools_nothing
                       else await safe(state, state.cooldowns(self._keys), {}))
            deps = self.deployments
            delay = 0.0
            usable = [d for d in deps if d.key not in cooling] if cooling else deps
            failed = trial.failed
            fresh = [d for d in usable if id(d) not in failed] if failed else usable
            if fresh:
                pool = fresh
            elif usable:  # each usable one already failed in this request: back off first
                pool = usable
                delay = trial.backoff(self)
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
            if len(pool) > 1 and self._bounded and any(d.semaphore is not None for d in pool):
                free = [d for d in pool if d.semaphore is None or not d.semaphore.locked()]
                pool = free or pool
            in_flight = None
            if self.strategy.needs_in_flight and len(pool) > 1:
                in_flight = await safe(state, state.in_flight(d.key for d in pool), None)
            if not self._limited:
                return self.strategy.choose(pool, in_flight)
            pool = list(pool)
            waits: list[float] = []
            while pool:
                dep = self.strategy.choose(pool, in_flight)
                if not dep.rpm:
                    return dep
                wait = await safe(state, state.take_rate_slot(dep.key, dep.rpm), 0.0)
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
            await safe(self.state, self.state.add_in_flight(dep.key, 1), None)
        if dep.semaphore is not None:
            try:
                await dep.semaphore.acquire()
            except BaseException:
                dep.active -= 1
                if self.strategy.needs_in_flight:
                    await safe(self.state, self.state.add_in_flight(dep.key, -1), None)
                raise

    async def _leave(self, dep: Deployment) -> None:
        dep.active -= 1
        if dep.semaphore is not None:
            dep.semaphore.release()
        if self.strategy.needs_in_flight:
            await safe(self.state, self.state.add_in_flight(dep.key, -1), None)

    def _route(self, group: Router, dep: Deployment, trial: Trial) -> RouteInfo:
        return RouteInfo(model=self.name, group=group.name, deployment=dep.label,
                         provider=dep.provider.name, provider_model=dep.model,
                         attempts=len(trial.records) + 1)

    # -- requests --------------------------------------------------------------------------
    def stream_request(self, request: ChatRequest) -> AsyncGenerator[StreamChunk, None]:
        """Stream from one deployment; retry and fail over only before the first chunk."""
        return self._routed_stream(request)

    def watched_stream(self, request: ChatRequest,
                       watch: StreamWatch) -> AsyncGenerator[StreamChunk, None]:
        """:meth:`stream_request` reporting to ``watch``: the telemetry layer over a router
        has its span begun, given the first chunk and ended here instead of wrapping the
        stream, so telemetry adds no generator step per chunk."""
        return self._routed_stream(request, watch)

    async def _routed_stream(self, request: ChatRequest,
                             watch: StreamWatch | None = None,
                             ) -> AsyncGenerator[StreamChunk, None]:
        if watch is not None:
            watch.begin()
        chunk: StreamChunk | None = None
        raised: BaseException | None = None
        done = False
        try:
            trial = Trial(self)
            started = time.perf_counter()
            plain = self.plain
            pick = not plain  # a plain router's first attempt: its one deployment, no pick
            while True:
                if pick:
                    try:
                        group, dep = await trial.next()
                    except ProviderError as err:
                        self.stats_total.failure(err)
                        raise
                else:
                    group, dep, pick = self, self.deployments[0], True
                    trial.tries = 1  # what trial.next() counts
                sub = request if plain else dep.prepare(request)
                await group._enter(dep)
                start = time.perf_counter()
                stream = dep.provider.stream_request(sub)
                attempt = telemetry.start_attempt(group, dep, len(trial.records) + 1)  # for a span
                failure: ProviderError | None = None
                try:
                    # the attempt ends with the budget, hung or not (a plain provider:model
                    # has none: its provider's own timeouts bound an attempt)
                    budget = None if plain else trial.budget()
                    try:
                        if budget is None:
                            first = await anext(stream)
                        else:
                            async with budget:
                                first = await anext(stream)
                    except StopAsyncIteration:
                        first = None
                    except TimeoutError:
                        if budget is None or not budget.expired():
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
                        if watch is not None:
                            watch.first(first)
                        try:
                            yield first
                            if watch is None:
                                async for chunk in stream:
                                    yield chunk
                            else:  # per chunk: a counter, nothing else
                                async for chunk in stream:
                                    watch.chunks += 1
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
                    done = True
                    return
                finally:
                    telemetry.end_attempt(attempt, failure)
                    await stream.aclose()
                    await group._leave(dep)
        except Exception as error:
            raised = error
            raise
        finally:
            if watch is not None:
                watch.end(chunk, raised, done)

    async def _call(self, call: Callable[[Deployment], Awaitable[T]]) -> tuple[T, RouteInfo]:
        """Run one non-streaming call on a deployment, with retries and fallbacks."""
        trial = Trial(self)
        started = time.perf_counter()
        while True:
            try:
                group, dep = await trial.next()
            except ProviderError as err:
                self.stats_total.failure(err)
                raise
            await group._enter(dep)
            start = time.perf_counter()
            # the attempt ends with the budget, hung or not (a plain provider:model has none:
            # its provider's own timeouts bound an attempt)
            budget = None if self.plain else trial.budget()
            try:
                if budget is None:
                    result = await _attempt(call, group, dep, len(trial.records) + 1)
                else:
                    async with budget:
                        result = await _attempt(call, group, dep, len(trial.records) + 1)
            except TimeoutError:
                if budget is None or not budget.expired():
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


async def _attempt(call: Callable[[Deployment], Awaitable[T]], group: Router, dep: Deployment,
                   number: int) -> T:
    """One non-streaming attempt on ``dep``, noted as attempt ``number`` for telemetry (what
    :func:`telemetry.attempt_span` does, without a context manager's cost per request)."""
    attempt = telemetry.start_attempt(group, dep, number)
    try:
        result = await call(dep)
    except BaseException as err:
        telemetry.end_attempt(attempt, err)
        raise
    telemetry.end_attempt(attempt)
    return result
