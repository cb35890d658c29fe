"""``modelplex serve --workers N``: N processes serving one port, supervised by the parent.

The parent reserves the address (a socket bound with ``SO_REUSEPORT``, never listening, so
``--port 0`` is one free port for all) and starts N workers, each ``modelplex serve`` with
``--workers 1`` on that port: each binds its own listening socket with ``SO_REUSEPORT`` and
the kernel spreads new connections across them; each has its own event loop, provider pool
and connections. A worker says it is ready (one byte on a pipe) only once its socket listens,
that is once it is in the port's ``SO_REUSEPORT`` group; the parent says it serves only when
every worker did. A pipe that ends without that byte is a worker that died starting, never a
ready one (taking it for one let the parent serve with a worker short, and every connection
went to the others until its replacement listened). Then the parent supervises:

- a worker that exits (crashes, is killed) is started again (at once, then waiting up to 5 s
  between attempts while new workers keep dying within a second of starting); clients of the
  other workers are not affected, and new connections go to the workers that listen;
- SIGTERM or SIGINT drains every worker: each stops accepting, lets its requests finish for
  up to ``--graceful-timeout`` (``shutdown_timeout``) seconds and exits; the parent waits that
  long (plus 5 s) and kills what is left; its exit code is 0;
- a worker whose parent is gone (killed with SIGKILL) stops itself.

What a worker keeps in memory is per worker: the per-key limits count in the process unless
``[state] backend = "redis"`` (then in Redis, for all workers and replicas), the router's
cooldowns likewise, and conversations need a store every worker shares (SQLite file or
PostgreSQL; ``memory`` is per worker).

``SO_REUSEPORT`` spreads connections on Linux (and DragonFly BSD); where the platform lacks
it, ``--workers`` above 1 is an error: run several ``modelplex serve`` on different ports
behind a proxy instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from modelplex.errors import ConfigurationError

__all__ = ["WORKER_ENV", "Supervisor", "reserve_port", "watch_parent", "worker_ready"]

log = logging.getLogger("modelplex.server")

#: Set in a worker's environment: ``<index>:<fd of the ready pipe>``.
WORKER_ENV = "MODELPLEX_SERVER_WORKER"
#: Seconds a worker may take to start listening.
START_TIMEOUT = 120.0
#: What a worker writes on its ready pipe once it listens (:func:`worker_ready`).
READY = b"1"


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` with ``SO_REUSEPORT`` (not listening): holds the port
    (a free one for 0) for the workers. ``OSError`` when another server listens there, even
    one that shares its port: workers never join another server's group."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ConfigurationError(
            "--workers above 1 needs SO_REUSEPORT, which this platform lacks: run one "
            "`modelplex serve` per port behind a proxy instead")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if port:  # a server already there (sharing the port or not) is an error, not a partner
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def worker_ready(sockets: Sequence[Any] = ()) -> None:
    """In a worker: tell the parent it listens (no-op outside a worker).

    Call it once the listening ``sockets`` are listening (``listen()`` puts a socket in the
    port's ``SO_REUSEPORT`` group, from which the kernel picks the socket of each new
    connection): each is checked to be listening with ``SO_REUSEPORT``, so a worker never says
    it is ready while the kernel cannot give it connections yet. The parent takes only the
    ready byte as readiness: a worker that exits (or closes the pipe) first is not ready."""
    value = os.environ.get(WORKER_ENV, "")
    _, _, fd = value.partition(":")
    if not fd.isdigit():
        return
    for sock in sockets:
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) \
                or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT):
            raise RuntimeError(f"the worker's socket {sock.getsockname()} is not listening "
                               "with SO_REUSEPORT")
    with contextlib.suppress(OSError):
        os.write(int(fd), READY)
        os.close(int(fd))


def watch_parent(interval: float = 0.5) -> None:
    """In a worker: SIGTERM itself (a graceful stop) once its parent is gone."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="modelplex-parent-watch", daemon=True).start()


class _Worker:
    def __init__(self, index: int, proc: subprocess.Popen[bytes], ready_fd: int) -> None:
        self.index = index
        self.proc = proc
        self.ready_fd: int | None = ready_fd
        self.started = time.monotonic()


class Supervisor:
    """Starts ``count`` workers running ``command`` and keeps them running (module docs).

    Args:
        command: a worker's command line (``modelplex serve ... --workers 1``).
        count: how many workers.
        graceful_timeout: seconds a worker has to finish its requests on SIGTERM.
        env: the workers' environment (default: this process's).
    """

    def __init__(self, command: Sequence[str], count: int, *, graceful_timeout: float,
                 env: dict[str, str] | None = None) -> None:
        self.command = list(command)
        self.count = count
        self.graceful_timeout = graceful_timeout
        self.env = dict(os.environ if env is None else env)
        self.workers: dict[int, _Worker] = {}
        self.restarts = 0
        self._stopping = False
        self._delay = 0.0

    def _spawn(self, index: int) -> _Worker:
        read_fd, write_fd = os.pipe()
        env = {**self.env, WORKER_ENV: f"{index}:{write_fd}"}
        try:
            proc = subprocess.Popen(self.command, env=env, pass_fds=(write_fd,))
        finally:
            os.close(write_fd)
        return _Worker(index, proc, read_fd)

    def _stop_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def _ready(self, timeout: float) -> tuple[list[_Worker], list[_Worker]]:
        """Wait up to ``timeout`` for ready pipes: the workers that said they listen, and the
        workers whose pipe closed without it (they exited, or are exiting, before listening:
        an end of file is never readiness)."""
        pending = {w.ready_fd: w for w in self.workers.values() if w.ready_fd is not None}
        if not pending:
            if timeout:
                time.sleep(timeout)
            return [], []
        readable, _, _ = select.select(list(pending), [], [], timeout)
        ready: list[_Worker] = []
        failed: list[_Worker] = []
        for fd in readable:
            worker = pending[fd]
            try:
                said = os.read(fd, 1)
            except OSError:
                said = b""
            os.close(fd)
            worker.ready_fd = None
            (ready if said == READY else failed).append(worker)
        return ready, failed

    def start(self) -> None:
        """Start every worker and wait until each listens (a worker that exits or closes its
        ready pipe first, or does not listen within ``START_TIMEOUT``, is an error)."""
        for index in range(1, self.count + 1):
            self.workers[index] = self._spawn(index)
        deadline = time.monotonic() + START_TIMEOUT
        waiting = set(self.workers)
        while waiting:
            ready, failed = self._ready(0.1)
            for worker in ready:
                waiting.discard(worker.index)
            dead = [w for w in self.workers.values() if w.proc.poll() is not None]
            if failed or dead or time.monotonic() > deadline or self._stopping:
                why = None
                if failed or dead:
                    worker = (failed or dead)[0]
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        worker.proc.wait(1.0)  # a pipe at its end: the process is exiting
                    code = worker.proc.poll()
                    why = (f"worker {worker.index} exited with code {code} before it listened "
                           "(its error is above)" if code is not None else
                           f"worker {worker.index} closed its ready pipe before it listened")
                self.stop()
                raise ConfigurationError(why or ("the workers did not start"
                                                 if not self._stopping
                                                 else "stopped while starting"))

    def run(self, on_ready: Callable[[], None] | None = None) -> int:
        """Start, supervise until SIGTERM/SIGINT, drain; the exit code (0)."""
        previous = {sig: signal.signal(sig, self._stop_signal)
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            if on_ready is not None:
                on_ready()
            while not self._stopping:
                ready, failed = self._ready(0.1)
                for worker in ready:
                    log.info("worker %d (pid %d) is serving again", worker.index,
                             worker.proc.pid)
                for worker in failed:  # it exits: _restart_dead starts another
                    with contextlib.suppress(ProcessLookupError):
                        worker.proc.kill()
                    worker.proc.wait()
                self._restart_dead()
            self.stop()
            return 0
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _restart_dead(self) -> None:
        for index, worker in list(self.workers.items()):
            code = worker.proc.poll()
            if code is None or self._stopping:
                continue
            if worker.ready_fd is not None:
                os.close(worker.ready_fd)
            quick = time.monotonic() - worker.started < 1.0
            self._delay = min(5.0, max(0.1, self._delay * 2)) if quick else 0.0
            log.warning("worker %d (pid %d) exited with code %s; starting a new one%s",
                        index, worker.proc.pid, code,
                        f" in {self._delay:.1f} s" if self._delay else "")
            if self._delay:
                time.sleep(self._delay)
            self.workers[index] = self._spawn(index)
            self.restarts += 1

    def stop(self) -> None:
        """SIGTERM every worker, wait ``graceful_timeout`` (plus 5 s), kill what is left."""
        self._stopping = True
        for worker in self.workers.values():
            if worker.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.graceful_timeout + 5.0
        for worker in self.workers.values():
            try:
                worker.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker %d (pid %d) did not stop within %.0f s: killing it",
                            worker.index, worker.proc.pid, self.graceful_timeout + 5.0)
                worker.proc.kill()
                worker.proc.wait()
            if worker.ready_fd is not None:
                with contextlib.suppress(OSError):
                    os.close(worker.ready_fd)
                worker.ready_fd = None


def worker_command(args: Sequence[str]) -> list[str]:
    """The command line of a worker: this interpreter running ``modelplex`` with ``args``."""
    return [sys.executable, "-m", "modelplex", *args]
