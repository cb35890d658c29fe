"""A server program in a child process for a test: started, waited on until it answers, and
stopped, with what it wrote kept in a log file to show when it fails. ``free_port()`` picks a
port of 127.0.0.1 for a program that must be told one.

::

    port = free_port()
    with server_process(["llama-server", "--model", str(gguf), "--port", str(port)],
                        ready_url=f"http://127.0.0.1:{port}/health",
                        log=tmp_path / "llama-server.log"):
        ...  # it answered 200 at /health

Readiness is an HTTP ``GET`` answered with a 2xx, asked again (a refused connection, a 503
while a model loads) until a deadline generous enough for a busy machine; the wait between
two asks is a wait on the process, so an exit is seen at once and reported with the end of
its log (:class:`ServerProcessError`), as is a deadline passed.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

__all__ = ["ServerProcessError", "free_port", "server_process"]

#: how much of the log's end an error shows
LOG_TAIL = 3000


class ServerProcessError(RuntimeError):
    """The server exited, or did not answer in time; the message ends with its log's end."""


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on now (the system's pick), for a program
    that must be given one on its command line; prefer port 0 where the program can say
    which port it bound."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return 200 <= int(resp.status) < 300
    except (OSError, http.client.HTTPException):  # refused, reset, a 503 while it loads
        return False


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-LOG_TAIL:]
    except OSError as err:
        return f"(no log: {err})"


@contextmanager
def server_process(argv: Sequence[str | os.PathLike[str]], *, ready_url: str, log: Path,
                   name: str | None = None, timeout: float = 300.0,
                   env: Mapping[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` (stdout and stderr to the file ``log``, stdin closed) and yield the process
    once ``GET ready_url`` answers with a 2xx. :class:`ServerProcessError` if it exits first
    or has not answered after ``timeout`` seconds (a guard against a hang, not a speed
    check: keep it generous). On leaving the block it is stopped: SIGTERM to its pid, SIGKILL
    after 15 s. ``name`` names it in errors (the program's file name by default); ``env``
    replaces the environment."""
    name = name or Path(os.fspath(argv[0])).name
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen([os.fspath(a) for a in argv], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=None if env is None else dict(env))
    try:
        deadline = time.monotonic() + timeout
        pause = 0.05
        while not _answers(ready_url, timeout=max(0.1, min(10.0, deadline - time.monotonic()))):
            left = deadline - time.monotonic()
            if left <= 0:
                raise ServerProcessError(f"{name} did not answer {ready_url} within "
                                         f"{timeout:g} s; its log {log}:\n{_tail(log)}")
            try:  # the pause: returns at once if it exits
                code = proc.wait(timeout=min(pause, left))
            except subprocess.TimeoutExpired:
                pause = min(pause * 2, 1.0)
                continue
            raise ServerProcessError(f"{name} exited with {code} before it answered "
                                     f"{ready_url}; its log {log}:\n{_tail(log)}")
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()  # SIGTERM to this pid only
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)
