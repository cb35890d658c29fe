"""Usage statistics of every model this process used, named or plain (the seed's
``ModelStats``).

The router under every stack counts each request (:class:`~modelplex.routing.Stats`): a
named model's router, and the router of one a plain ``provider:model`` stands behind. The
pipeline keeps those counts here, per model and configuration, so they outlive one lease
(a plain model's router lives as long as its lease) and every caller of the one request path
adds to the same numbers::

    from modelplex.stats import model_stats

    stats = model_stats("ollama:llama3.2")     # or a named model: model_stats("fast")
    if stats is not None:
        print(stats.total_tokens, stats.average_latency, stats.error_rate)
        stats.to_dict()                        # {"tokens": ..., "latency": ..., "errors": ...}

At most :data:`MAX_MODELS` models are kept (the least recently used go first), each with a
bounded window of latencies (:class:`~modelplex.routing.Stats`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from modelplex.routing.deployments import Stats

__all__ = ["MAX_MODELS", "ModelStats", "all_model_stats", "model_stats", "reset_model_stats",
           "snapshot", "stats_for"]

#: the most models whose statistics are kept (the least recently used are dropped)
MAX_MODELS = 1024


@dataclass(frozen=True)
class ModelStats:
    """A model's usage: the seed's ``total_tokens``, ``average_latency`` (seconds, over the
    answered requests) and ``error_rate`` (failed / all requests), with the counts behind
    them."""

    total_tokens: int
    average_latency: float
    error_rate: float
    requests: int = 0
    successes: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def to_dict(self) -> dict[str, float]:
        """The seed's dict: ``tokens``, ``latency`` (seconds) and ``errors`` (the rate)."""
        return {"tokens": self.total_tokens, "latency": self.average_latency,
                "errors": self.error_rate}

    @classmethod
    def of(cls, stats: Stats) -> ModelStats:
        """The summary of a router's :class:`~modelplex.routing.Stats`."""
        failed = stats.requests - stats.successes
        return cls(total_tokens=stats.prompt_tokens + stats.completion_tokens,
                   average_latency=stats.latency_sum / stats.successes
                   if stats.successes else 0.0,
                   error_rate=failed / stats.requests if stats.requests else 0.0,
                   requests=stats.requests, successes=stats.successes,
                   prompt_tokens=stats.prompt_tokens,
                   completion_tokens=stats.completion_tokens)


_lock = threading.Lock()
_kept: OrderedDict[str, Stats] = OrderedDict()  # by model and configuration
_latest: dict[str, str] = {}  # a model's name -> the key of its most recent configuration


def stats_for(model: str, key: str | None = None) -> Stats:
    """The counts kept for ``model`` (``provider:model`` or a named model) under ``key`` (its
    configuration; default the name), made on first use: what the pipeline gives the router
    serving it. ``model_stats(model)`` then reads the most recent configuration's."""
    key = key or model
    with _lock:
        stats = _kept.get(key)
        if stats is None:
            stats = _kept[key] = Stats()
            while len(_kept) > MAX_MODELS:
                old, _ = _kept.popitem(last=False)
                for name in [n for n, k in _latest.items() if k == old]:
                    del _latest[name]
        else:
            _kept.move_to_end(key)
        _latest[model] = key
        return stats


def model_stats(model: str) -> ModelStats | None:
    """``model``'s statistics in this process (``provider:model`` or a named model), or None
    when it served no request through the pipeline."""
    with _lock:
        key = _latest.get(model)
        stats = _kept.get(key) if key is not None else None
    return ModelStats.of(stats) if stats is not None and stats.requests else None


def all_model_stats() -> dict[str, ModelStats]:
    """Every model that served a request in this process, by name."""
    with _lock:
        found = {name: _kept[key] for name, key in _latest.items() if key in _kept}
    return {name: ModelStats.of(stats) for name, stats in sorted(found.items())
            if stats.requests}


def reset_model_stats() -> None:
    """Forget every model's statistics (tests, or a fresh measurement)."""
    with _lock:
        _kept.clear()
        _latest.clear()


def snapshot(model: str) -> dict[str, Any] | None:
    """``model``'s full counts (percentiles, errors by class), as ``Router.stats()`` gives
    them, or None."""
    with _lock:
        key = _latest.get(model)
        stats = _kept.get(key) if key is not None else None
    return stats.snapshot() if stats is not None else None
