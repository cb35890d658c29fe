"""Blocking twins of async methods, for scripts without an event loop.

``get_response_with_meta_sync = blocking(get_response_with_meta)`` in a class body makes the
twin: same arguments and docs, the result instead of a coroutine (``blocking_iter``: a
generator of the items instead of an async iterator; ``blocking_close``: ``close_sync`` from
``aclose``). Every twin of a thread runs on the thread's shared event loop
(:func:`modelplex.pool.sync_runner`), so that sync objects share pooled providers, which
belong to one loop. Called inside a running event loop, a twin raises a
:class:`~modelplex.errors.ModelplexError` that names the async method to await instead.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import AsyncIterator, Callable, Coroutine, Generator
from typing import Any, ParamSpec, TypeVar

from modelplex.errors import ModelplexError
from modelplex.pool import sync_runner

__all__ = ["Blocking", "blocking", "blocking_close", "blocking_iter", "outside_loop"]

P = ParamSpec("P")
S = TypeVar("S")
T = TypeVar("T")


def outside_loop(called: str, instead: str, coro: Coroutine[Any, Any, Any] | None = None
                 ) -> None:
    """Raise a :class:`~modelplex.errors.ModelplexError` (``"<called> inside a running event
    loop; use `<instead>` there instead"``) if this thread runs an event loop, closing
    ``coro`` (never run then)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    if coro is not None:
        coro.close()
    raise ModelplexError(f"{called} inside a running event loop; use `{instead}` there instead")


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
        outside_loop(f"{self.owner}.{name}_sync() was called", f"await {self.var}.{name}(...)",
                     coro)
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


def _twin(method: Callable[..., Any], run: Callable[[Blocking, Any, str], Any], doc: str,
          returns: str | None = None) -> Any:
    """``<name>_sync``: ``run(the instance's Blocking, what method returned, method's name)``,
    with ``method``'s signature (returning ``returns`` if given) and ``doc``."""
    name = method.__name__

    @functools.wraps(method)
    def twin(*args: Any, **kwargs: Any) -> Any:
        loop: Blocking = getattr(args[0], "_blocking")  # noqa: B009  (args[0] is self)
        return run(loop, method(*args, **kwargs), name)

    twin.__name__ = f"{name}_sync"
    twin.__qualname__ = f"{method.__qualname__}_sync"
    twin.__doc__ = doc.format(name=name)
    if returns is not None:
        signature = inspect.signature(method).replace(return_annotation=returns)
        setattr(twin, "__signature__", signature)  # noqa: B010  (not a declared attribute)
    return twin


def blocking(method: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """The blocking twin of the async ``method`` of a class whose instances keep their
    :class:`Blocking` as ``_blocking`` (see the module docs)."""
    twin: Callable[P, T] = _twin(method, Blocking.run, "Blocking :meth:`{name}`.")
    return twin


def blocking_iter(method: Callable[P, AsyncIterator[T]]
                  ) -> Callable[P, Generator[T, None, None]]:
    """The blocking twin of ``method``, which returns an async iterator: a generator of its
    items as they arrive (:meth:`Blocking.iterate`)."""
    twin: Callable[P, Generator[T, None, None]] = _twin(
        method, Blocking.iterate, "Blocking :meth:`{name}`: iterate the items as they arrive.",
        returns="Generator")
    return twin


def blocking_close(aclose: Callable[[S], Coroutine[Any, Any, None]]) -> Callable[[S], None]:
    """``close_sync`` from ``aclose``: it runs ``aclose`` if a twin ever ran (an object used
    from async code only is closed there) and forgets the loop (:meth:`Blocking.close`)."""

    @functools.wraps(aclose)
    def close_sync(self: S) -> None:
        loop: Blocking = getattr(self, "_blocking")  # noqa: B009
        loop.close(functools.partial(aclose, self))

    close_sync.__name__ = "close_sync"
    close_sync.__qualname__ = f"{aclose.__qualname__.removesuffix('aclose')}close_sync"
    close_sync.__doc__ = "Blocking :meth:`aclose` (after a twin ran)."
    return close_sync
