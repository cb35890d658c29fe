"""Ctrl-C for the ``modelplex`` command: it always ends the command promptly, with status 130.

Three ways a Ctrl-C (SIGINT) used to be lost or handled late, and what this module does:

* **Ignored from the start.** A process started with SIGINT ignored (a background job of a
  script, a test runner or service that ignores it) keeps it ignored: Python installs its
  handler only over the default. :func:`take_over` installs it anyway.
* **Between a check and a wait.** Python runs a signal's handler between two bytecodes; a
  signal that arrives after the last one and before a blocking call (the event loop's
  ``epoll_wait``, the ``read`` of ``input()``) leaves the handler waiting until that call
  returns -- on a stalled stream or at the prompt, never. :func:`run` has the event loop
  receive SIGINT itself (``loop.add_signal_handler`` wakes a waiting loop), and
  :func:`read_line` waits for a line and for the signal's wakeup descriptor at once.
* **A worker thread that never checks.** A call in a thread (llama.cpp loading a model or
  reading a long prompt, a plugin's blocking call) goes on after the request was cancelled,
  and the interpreter waits for it at exit. :func:`exit_interrupted` gives the exit
  :data:`EXIT_GRACE` seconds, then ends the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Coroutine
from typing import Any, NoReturn, TypeVar

__all__ = ["EXIT_GRACE", "exit_interrupted", "read_line", "run", "take_over"]

T = TypeVar("T")

#: Seconds the interpreter may take to exit after Ctrl-C before it is made to.
EXIT_GRACE = 2.0


def take_over() -> None:
    """Make SIGINT raise :class:`KeyboardInterrupt` in the main thread, even when the process
    was started with it ignored."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL, None):
        signal.signal(signal.SIGINT, signal.default_int_handler)


def run(coro: Coroutine[Any, Any, T], runner: asyncio.Runner | None = None) -> T:
    """Run ``coro`` (in ``runner``, else in a new event loop) so that Ctrl-C cancels it and
    then raises :class:`KeyboardInterrupt` -- a second Ctrl-C raises it at once. Unlike
    :func:`asyncio.run`'s own handling, a Ctrl-C is never left waiting for the loop to wake
    up."""
    if runner is None:
        with asyncio.Runner() as own:
            return run(coro, own)
    interrupted = False

    async def main() -> T:
        nonlocal interrupted
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()

        def on_sigint() -> None:
            nonlocal interrupted
            if interrupted or task is None or task.done():
                raise KeyboardInterrupt
            interrupted = True
            task.cancel()

        try:
            loop.add_signal_handler(signal.SIGINT, on_sigint)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            return await coro
        try:
            return await coro
        finally:
            loop.remove_signal_handler(signal.SIGINT)  # back to KeyboardInterrupt

    try:
        result = runner.run(main())
    except asyncio.CancelledError:
        if interrupted:
            raise KeyboardInterrupt from None
        raise
    if interrupted:  # the coroutine caught the cancellation: Ctrl-C still ends it
        raise KeyboardInterrupt
    return result


_pending = b""


def read_line(prompt: str) -> str:
    """The next line of standard input, without its end, after writing ``prompt`` (as
    :func:`input` does without a terminal); raises :class:`EOFError` at the end of input and
    :class:`KeyboardInterrupt` on Ctrl-C, wherever it arrives."""
    global _pending
    sys.stdout.write(prompt)
    sys.stdout.flush()
    fd = sys.stdin.fileno()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    try:
        old = signal.set_wakeup_fd(wake_w)
    except ValueError:  # not the main thread
        old = None
    try:
        while b"\n" not in _pending:
            ready, _, _ = select.select([fd, wake_r], [], [])
            if wake_r in ready:  # a signal: its handler runs now
                os.read(wake_r, 512)
                continue
            data = os.read(fd, 65536)
            if not data:
                if not _pending:
                    raise EOFError
                _pending += b"\n"
            _pending += data
        line, _, _pending = _pending.partition(b"\n")
    finally:
        if old is not None:
            signal.set_wakeup_fd(old)
        os.close(wake_r)
        os.close(wake_w)
    return line.decode(sys.stdin.encoding or "utf-8", "surrogateescape").removesuffix("\r")


def exit_interrupted() -> NoReturn:
    """Exit with status 130 now; if the interpreter is still waiting for a worker thread
    after :data:`EXIT_GRACE` seconds, end the process anyway."""
    def force_exit() -> None:
        time.sleep(EXIT_GRACE)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(130)

    threading.Thread(target=force_exit, name="modelplex-exit", daemon=True).start()
    sys.exit(130)
