"""Routing: named models served by a router over deployments, and the state it shares.

* :mod:`~modelplex.routing.router`: :class:`Router`, a provider that picks a deployment per
  request (strategy, retries with backoff that honours ``Retry-After``, cooldowns,
  fallbacks, the streaming rule); a plain ``provider:model`` is a router of one deployment;
* :mod:`~modelplex.routing.attempts`: the attempts of one request (:class:`Trial`: budget,
  failures, the fallback chain) and which failures are retried (:func:`is_retriable`);
* :mod:`~modelplex.routing.deployments`: :class:`Deployment` and its :class:`Stats`;
* :mod:`~modelplex.routing.strategies`: how one deployment is picked
  (:func:`register_strategy` adds one);
* :mod:`~modelplex.routing.state`: :class:`RouterState` (cooldowns, in-flight counts, rate
  windows) and its in-process default :class:`MemoryState`;
* :mod:`~modelplex.routing.backends`: the config's ``[state]`` table and the backends
  registered through ``register_state_backends`` (:func:`open_state`).

The stacks that use a router are built by :func:`modelplex.pipeline.open_model`.
"""

from __future__ import annotations

from modelplex.routing.attempts import is_retriable, is_retriable_single
from modelplex.routing.backends import StateConfig, open_state
from modelplex.routing.deployments import Deployment, Stats
from modelplex.routing.router import RouteInfo, Router
from modelplex.routing.state import MemoryState, RouterState
from modelplex.routing.strategies import (
    STRATEGIES,
    Latency,
    LeastBusy,
    RandomChoice,
    RoundRobin,
    Strategy,
    Weighted,
    make_strategy,
    register_strategy,
)

__all__ = [
    "STRATEGIES",
    "Deployment",
    "Latency",
    "LeastBusy",
    "MemoryState",
    "RandomChoice",
    "RoundRobin",
    "RouteInfo",
    "Router",
    "RouterState",
    "StateConfig",
    "Stats",
    "Strategy",
    "Weighted",
    "is_retriable",
    "is_retriable_single",
    "make_strategy",
    "open_state",
    "register_strategy",
]
