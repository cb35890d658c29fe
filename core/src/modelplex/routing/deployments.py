"""A deployment of a named model (one provider and model the router can send a request to)
and the usage statistics kept for it and for the whole model."""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from modelplex.chunks import Usage
from modelplex.errors import ConfigurationError
from modelplex.provider import ChatRequest, Provider

__all__ = ["Deployment", "Stats"]


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _with(request: ChatRequest, model: str, options: Any) -> ChatRequest:
    """``attrs.evolve(request, model=model, options=options)`` without its per-call look-up
    of the fields (every routed request makes one)."""
    if type(request) is not ChatRequest:  # a subclass: its own fields and __init__
        return attrs.evolve(request, model=model, options=options)
    return ChatRequest(model, request.messages, options, request.tools, request.tool_choice,
                       request.response_format, request.cache, request.conversation_id)


class Stats:
    """Usage statistics of a deployment or a named model (the seed's ModelStats).

    Requests, successes, errors by class, prompt/completion tokens, and the last
    ``window`` latencies and times to first token (seconds) for percentiles.
    """

    def __init__(self, window: int = 2048) -> None:
        self.requests = 0
        self.successes = 0
        self.errors: Counter[str] = Counter()
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.latencies: deque[float] = deque(maxlen=window)
        self.ttfts: deque[float] = deque(maxlen=window)
        self.latency_sum = 0.0  # of every answered request (the mean's numerator)

    def success(self, latency: float, ttft: float | None, usage: Usage | None) -> None:
        """Count one answered request."""
        self.requests += 1
        self.successes += 1
        self.latencies.append(latency)
        self.latency_sum += latency
        if ttft is not None:
            self.ttfts.append(ttft)
        if usage is not None:
            self.prompt_tokens += usage.prompt_tokens
            self.completion_tokens += usage.completion_tokens

    def failure(self, err: BaseException) -> None:
        """Count one failed request."""
        self.requests += 1
        self.errors[type(err).__name__] += 1

    def snapshot(self) -> dict[str, Any]:
        """Plain numbers: counts, error rate, tokens, latency and TTFT percentiles (ms)."""
        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 3)

        lat, ttft = list(self.latencies), list(self.ttfts)
        failed = sum(self.errors.values())
        return {
            "requests": self.requests,
            "successes": self.successes,
            "errors": dict(self.errors),
            "error_rate": round(failed / self.requests, 4) if self.requests else 0.0,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "latency_ms": {"p50": ms(_percentile(lat, 0.5)), "p90": ms(_percentile(lat, 0.9)),
                           "p99": ms(_percentile(lat, 0.99))},
            "ttft_ms": {"p50": ms(_percentile(ttft, 0.5)), "p90": ms(_percentile(ttft, 0.9)),
                        "p99": ms(_percentile(ttft, 0.99))},
        }


class Deployment:
    """One provider and model a named model can send a request to.

    Args:
        provider: the provider instance (shared through the pool when built from config).
        model: the provider's model name.
        name: the label in stats and errors (default ``provider:model``).
        weight: share of requests for the ``weighted`` and ``random`` strategies.
        max_concurrency: most requests in flight at once on it (in this process).
        rpm: most requests started per minute (through the router's state).
        options: provider options applied to every request on it (under the caller's).
        key: the state key (cooldowns, rpm, in-flight); deployments with the same key share
            them across named models and, with a shared state backend, across processes.
    """

    def __init__(self, provider: Provider, model: str, *, name: str | None = None,
                 weight: float = 1.0, max_concurrency: int | None = None,
                 rpm: int | None = None, options: Mapping[str, Any] | None = None,
                 key: str | None = None) -> None:
        if weight <= 0:
            raise ConfigurationError(f"deployment {name or model!r}: weight must be > 0 "
                                     f"(got {weight})")
        self.provider = provider
        self.model = model
        self.label = name or f"{provider.name}:{model}"
        self.key = key or f"{provider.name}:{model}"
        self.weight = float(weight)
        self.max_concurrency = max_concurrency
        self.rpm = rpm
        self.options = dict(options or {})
        self.semaphore = asyncio.Semaphore(max_concurrency) if max_concurrency else None
        self.active = 0
        self.ttft_average: float | None = None
        self.stats = Stats()
        self._same_options = False  # set by the router: requests pass through unchanged

    def __repr__(self) -> str:
        return f"<Deployment {self.label!r}>"

    def prepare(self, request: ChatRequest) -> ChatRequest:
        """The request for this deployment: its model name and its options."""
        if self._same_options:
            return _with(request, self.model, request.options)
        options = self.provider.parse_options({**self.options,
                                               **request.options.set_values()})
        return _with(request, self.model, options)

    def observe(self, ttft: float) -> None:
        """Update the moving average of the time to first token (``latency`` strategy)."""
        avg = self.ttft_average
        self.ttft_average = ttft if avg is None else avg * 0.8 + ttft * 0.2
