"""The attempts of one routed request: which failures are retried, the budget, the fallbacks.

A :class:`~modelplex.routing.router.Router` makes one :class:`Trial` per request. The trial
walks the chain of the router and its fallbacks, counts the attempts of each against its
``retries`` (attempts and the ``retries.timeout`` budget), records each failure (and cools
down a deployment that answered 429/503/529 or refused the connection), and builds the error
raised when no attempt is left: the provider's own for a plain ``provider:model``, else a
:class:`~modelplex.errors.RoutingError` that lists every attempt.

:func:`is_retriable` and :func:`is_retriable_single` say which failures another attempt may
fix; :func:`safe` reads the shared :class:`~modelplex.routing.state.RouterState` so that a
broken backend never fails a request.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, TypeVar

from modelplex.errors import (
    ProviderConnectionError,
    ProviderError,
    ProviderStatusError,
    ProviderTimeoutError,
    RateLimitError,
    RoutingError,
)

if TYPE_CHECKING:
    from modelplex.routing.deployments import Deployment
    from modelplex.routing.router import Router
    from modelplex.routing.state import RouterState

__all__ = ["RETRIABLE_STATUSES", "SINGLE_RETRIABLE_STATUSES", "Trial", "is_retriable",
           "is_retriable_single", "safe"]

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


_warned: set[int] = set()


async def safe(state: RouterState, call: Awaitable[T], default: T) -> T:
    """``await call``, or ``default`` when the state backend raises (warned once per
    backend): a broken backend is "no information", never a failed request."""
    try:
        return await call
    except Exception as err:  # a broken backend is "no information", never a failed request
        if id(state) not in _warned:
            _warned.add(id(state))
            log.warning("router state %s failed (%s: %s); using no shared state for now",
                        type(state).__name__, type(err).__name__, err)
        return default


class Trial:
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

    def backoff(self, group: Router) -> float:
        """A full-jitter exponential backoff before the next attempt on ``group``: up to
        ``retries.backoff * 2 ** (failures - 1)``, at most ``retries.max_backoff``."""
        cap = min(group.retries.max_backoff,
                  group.retries.backoff * 2 ** max(0, len(self.records) - 1))
        return random.uniform(0, cap)

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
            await safe(group.state, group.state.start_cooldown(dep.key, cool), None)

    def error(self) -> ProviderError:
        """The error to raise when the attempts ran out: a plain router's last own error, else
        a :class:`RoutingError` listing every attempt."""
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
            listed = _listing(self.records)
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


def _listing(records: list[tuple[str, ProviderError]]) -> str:
    """The attempts as ``1. label: error; 2. ...``; attempts that failed alike in a row are
    one entry (``1-3. label: error``), so a server that is down is not described thrice."""
    entries: list[tuple[int, int, str]] = []
    for index, (label, err) in enumerate(records, 1):
        text = f"{label}: {_describe(err)}"
        if entries and entries[-1][2] == text:
            entries[-1] = (entries[-1][0], index, text)
        else:
            entries.append((index, index, text))
    return "; ".join(f"{first}{f'-{last}' if last != first else ''}. {text}"
                     for first, last, text in entries)
