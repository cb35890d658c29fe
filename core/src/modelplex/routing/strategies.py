"""Routing strategies: how the router picks one deployment among the usable ones.

Built in: ``round_robin``, ``random`` (weighted by ``weight``), ``weighted`` (smooth weighted
round robin: exact shares), ``least_busy`` (fewest requests in flight) and ``latency`` (lowest
moving average time to first token). Subclass :class:`Strategy` and call
:func:`register_strategy` to add one; the config names it as ``strategy = "NAME"``.
"""

from __future__ import annotations

import abc
import itertools
import random
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

from modelplex.errors import ConfigurationError, did_you_mean

if TYPE_CHECKING:
    from modelplex.routing.deployments import Deployment

__all__ = [
    "STRATEGIES",
    "Latency",
    "LeastBusy",
    "RandomChoice",
    "RoundRobin",
    "Strategy",
    "Weighted",
    "make_strategy",
    "register_strategy",
]


class Strategy(abc.ABC):
    """Picks one deployment among the usable ones; subclass and :func:`register_strategy`.

    ``needs_in_flight``: the router passes in-flight counts per state key (from its state).
    """

    needs_in_flight: ClassVar[bool] = False

    @abc.abstractmethod
    def choose(self, candidates: Sequence[Deployment],
               in_flight: Mapping[str, int] | None = None) -> Deployment:
        """One of ``candidates`` (never empty)."""


class RoundRobin(Strategy):
    """Each deployment in turn."""

    def __init__(self) -> None:
        self._counter = itertools.count()

    def choose(self, candidates: Sequence[Deployment],
               in_flight: Mapping[str, int] | None = None) -> Deployment:
        """The next deployment in order."""
        return candidates[next(self._counter) % len(candidates)]


class RandomChoice(Strategy):
    """A random deployment, in proportion to the weights."""

    def choose(self, candidates: Sequence[Deployment],
               in_flight: Mapping[str, int] | None = None) -> Deployment:
        """A random deployment."""
        if len(candidates) == 1:
            return candidates[0]
        return random.choices(candidates, weights=[d.weight for d in candidates])[0]


class Weighted(Strategy):
    """Smooth weighted round robin: exact shares by weight, spread evenly over time."""

    def __init__(self) -> None:
        self._current: dict[int, float] = {}

    def choose(self, candidates: Sequence[Deployment],
               in_flight: Mapping[str, int] | None = None) -> Deployment:
        """The deployment furthest behind its share."""
        current = self._current
        total = 0.0
        best: Deployment | None = None
        best_value = 0.0
        for dep in candidates:
            value = current.get(id(dep), 0.0) + dep.weight
            current[id(dep)] = value
            total += dep.weight
            if best is None or value > best_value:
                best, best_value = dep, value
        assert best is not None
        current[id(best)] -= total
        return best


class LeastBusy(Strategy):
    """The deployment with the fewest requests in flight (ties in turn)."""

    needs_in_flight = True

    def __init__(self) -> None:
        self._counter = itertools.count()

    def choose(self, candidates: Sequence[Deployment],
               in_flight: Mapping[str, int] | None = None) -> Deployment:
        """The least busy deployment."""
        counts = in_flight or {}
        low = min(counts.get(d.key, d.active) for d in candidates)
        idle = [d for d in candidates if counts.get(d.key, d.active) == low]
        return idle[next(self._counter) % len(idle)]


class Latency(Strategy):
    """The deployment with the lowest moving average time to first token (untried first)."""

    def choose(self, candidates: Sequence[Deployment],
               in_flight: Mapping[str, int] | None = None) -> Deployment:
        """The fastest deployment so far."""
        for dep in candidates:
            if dep.ttft_average is None:
                return dep
        return min(candidates, key=lambda d: d.ttft_average or 0.0)


STRATEGIES: dict[str, Callable[[], Strategy]] = {
    "round_robin": RoundRobin,
    "random": RandomChoice,
    "weighted": Weighted,
    "least_busy": LeastBusy,
    "latency": Latency,
}


def register_strategy(name: str, factory: Callable[[], Strategy]) -> None:
    """Make a strategy available by name (``strategy = "NAME"`` in the config)."""
    STRATEGIES[name] = factory


def make_strategy(strategy: str | Strategy) -> Strategy:
    """A strategy instance from a name or an instance."""
    if isinstance(strategy, Strategy):
        return strategy
    factory = STRATEGIES.get(strategy)
    if factory is None:
        raise ConfigurationError(f"unknown routing strategy {strategy!r}"
                                 f"{did_you_mean(strategy, STRATEGIES)}; use one of "
                                 f"{', '.join(sorted(STRATEGIES))}")
    return factory()
