"""Blocking twins of async methods, for scripts without an event loop.

``get_response_with_meta_sync = blocking(get_response_with_meta)`` in a class body makes the
twin: same arguments, the result instead of a coroutine. Every twin of a thread runs on the
thread's shared event loop (:func:`modelplex.pool.sync_runner`), so that sync objects share
pooled providers, which belong to one loop. Called inside a running event loop, a twin raises
a :class:`~modelplex.errors.ModelplexError` that names the async method to await instead.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Coroutine, Generator
from typing import Any, ParamSpec, TypeVar

from modelplex.errors import ModelplexError
from modelplex.pool import sync_runner

__all__ = ["Blocking", "blocking"]

P = ParamSpec("P")
T = TypeVar("T")


class Blocking:
    """The event loop an object's blocking twins run on (the thread's shared one, taken on
    first use); ``owner`` (the class) and ``var`` (an instance, ``chat``) name them in
    errors."""

    __slots__ = ("owner", "runner", "var")

    def __init__(self, owner: str, var: str) -> None:
        self.owner = owner
        self.var = var
        self.runner: asyncio.Runner | None = None

    def run(self, coro: Coroutine[Any, Any, T], name: str) -> T:
        """Run ``coro`` (the coroutine of the async method ``name``) to its end."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            coro.close()
            raise ModelplexError(
                f"{self.owner}.{name}_sync() was called inside a running event loop; "
                f"use `await {self.var}.{name}(...)` there instead")
        if self.runner is None:
            self.runner = sync_runner()
        return self.runner.run(coro)

    def iterate(self, stream: AsyncIterator[T], name: str) -> Generator[T, None, None]:
        """The items of ``stream`` as they arrive; the stream is closed when the iteration
        ends or is abandoned."""

        async def next_item() -> tuple[T] | None:
            try:
                return (await anext(stream),)
            except StopAsyncIteration:
                return None

        try:
            while (item := self.run(next_item(), name)) is not None:
                yield item[0]
        finally:
            close = getattr(stream, "aclose", None)
            if self.runner is not None and close is not None:
                self.runner.run(close())

    def close(self, aclose: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``aclose()`` if a twin ever ran, and forget the loop."""
        if self.runner is not None:
            self.run(aclose(), "aclose")
            self.runner = None


def blocking(method: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """The blocking twin of the async ``method`` of a class whose instances keep their
    :class:`Blocking` as ``_blocking`` (see the module docs)."""
    name = method.__name__

    @functools.wraps(method)
    def twin(*args: P.args, **kwargs: P.kwargs) -> T:
        loop: Blocking = getattr(args[0], "_blocking")  # noqa: B009  (args[0] is self)
        return loop.run(method(*args, **kwargs), name)

    twin.__name__ = f"{name}_sync"
    twin.__qualname__ = f"{method.__qualname__}_sync"
    twin.__doc__ = f"Blocking :meth:`{name}`."
    return twin
