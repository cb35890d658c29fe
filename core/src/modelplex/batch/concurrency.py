"""Bounded concurrency: :func:`bounded` runs a coroutine function over items at most N at once,
:func:`answer_each` asks several messages on one turn's provider, and the default
concurrency of a model.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from modelplex.errors import ConfigurationError

if TYPE_CHECKING:
    from modelplex.config import Config
    from modelplex.exchange import Turn
    from modelplex.types import ChatMessage


T = TypeVar("T")
R = TypeVar("R")

DEFAULT_CONCURRENCY = 8


# -- bounded concurrency ------------------------------------------------------------------------
async def bounded(items: Iterable[T] | AsyncIterable[T], operation: Callable[[T], Awaitable[R]],
                  max_concurrent: int = 3, *, return_exceptions: bool = False) -> list[R]:
    """``operation(item)`` for every item, at most ``max_concurrent`` at once; the results
    in the order of the items (a ``batch_model_operation`` for any coroutine).

    The first exception is raised once the others have finished (or, with
    ``return_exceptions=True``, each is returned in its item's place).
    """
    if not callable(operation):
        raise ConfigurationError(f"operation must be an async function taking one item "
                                 f"(got {operation!r})")
    _check_concurrency(max_concurrent, "max_concurrent")
    if not isinstance(items, Iterable | AsyncIterable) or isinstance(items, str | bytes):
        raise ConfigurationError(f"items must be a list or another iterable (got "
                                 f"{type(items).__name__})")
    results: dict[int, Any] = {}
    gate = asyncio.Semaphore(max_concurrent)

    async def one(index: int, item: T) -> None:
        try:
            value = operation(item)
            if not isinstance(value, Awaitable):
                raise ConfigurationError(f"operation must be an async function: it returned "
                                         f"{type(value).__name__}, not an awaitable")
            results[index] = await value
        except Exception as err:
            results[index] = _Failed(err)
        finally:
            gate.release()

    tasks: set[asyncio.Task[None]] = set()
    count = 0
    try:
        async for item in _aiter(items):
            await gate.acquire()
            task = asyncio.ensure_future(one(count, item))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            count += 1
        if tasks:
            await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
    out: list[Any] = []
    for index in range(count):
        value = results[index]
        if isinstance(value, _Failed):
            if not return_exceptions:
                raise value.error
            value = value.error
        out.append(value)
    return out


@attrs.define
class _Failed:
    error: Exception


async def _aiter(items: Iterable[T] | AsyncIterable[T]) -> AsyncIterator[T]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


def _check_concurrency(value: Any, name: str = "concurrency") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name} must be a whole number >= 1 (got {value!r})")
    return value


def default_concurrency(model: str | None, config: Config | None = None) -> int:
    """The concurrency for ``model``: the sum of its deployments' ``max_concurrency`` when
    each sets one, else at most ``rpm / 6`` (what ``rpm`` allows in 10-second requests),
    else :data:`DEFAULT_CONCURRENCY`."""
    from modelplex.config import get_config

    config = config or get_config()
    named = config.models.get(model) if model else None
    if named is None or not named.deployments:
        return DEFAULT_CONCURRENCY
    caps = [dep.max_concurrency for dep in named.deployments]
    if all(caps):
        return max(1, sum(c for c in caps if c))
    rpms = [dep.rpm for dep in named.deployments]
    if all(rpms):
        return max(1, min(DEFAULT_CONCURRENCY * 8, sum(r for r in rpms if r) // 6))
    return DEFAULT_CONCURRENCY


batch_model_operation = bounded  # the name seed 000 gives it


async def answer_each(turn: Turn, messages: Sequence[str], *, max_concurrent: int = 5,
                      return_exceptions: bool = False) -> list[Any]:
    """The whole answer to each of ``messages``, asked independently on ``turn``'s provider,
    system prompt and options (not its history, which is left unchanged), at most
    ``max_concurrent`` at once, in the order of ``messages`` (what
    ``ChatManager.process_message_batch`` runs).
    """
    from modelplex.exchange import Turn as _Turn
    from modelplex.types import ChatSession

    if isinstance(messages, str) or not isinstance(messages, Sequence):
        raise ConfigurationError("messages must be a list of texts (got "
                                 f"{type(messages).__name__})")
    users = []
    for index, text in enumerate(messages):
        if not isinstance(text, str):
            raise ConfigurationError(f"messages[{index}] must be text (got "
                                     f"{type(text).__name__})")
        users.append(turn.user_message(text))
    session = turn.session

    async def one(user: ChatMessage) -> Any:
        alone = ChatSession(model=session.model, provider=session.provider,
                            system_prompt=session.system_prompt)
        single = _Turn(turn.provider, alone, turn.options, cache=turn.cache,
                       conversation_id=turn.conversation_id, prices=turn.prices)
        return await single.answer(user)

    return await bounded(users, one, max_concurrent, return_exceptions=return_exceptions)
