"""A real ``redis-server`` for tests: on a free port, in a folder of its own, no persistence.

::

    server = RedisServer.start_new(tmp_path)     # needs the redis-server binary
    cache = RedisCache(server.url)
    ...
    server.stop()

``server.stop()`` and ``server.start()`` again (same port, empty data) simulate an outage.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["RedisServer", "find_redis_server"]


def find_redis_server() -> str | None:
    """The path of the ``redis-server`` binary, or ``None``."""
    return shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/sbin/redis-server") if os.path.exists(p)),
        None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1: :meth:`start`, :meth:`stop`, :attr:`url`."""

    def __init__(self, directory: str | os.PathLike[str], binary: str | None = None) -> None:
        found = binary or find_redis_server()
        if found is None:
            raise FileNotFoundError("redis-server is not installed "
                                    "(Debian/Ubuntu: apt-get install redis-server)")
        self.binary = found
        self.directory = Path(directory)
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def start_new(cls, directory: str | os.PathLike[str]) -> RedisServer:
        """A started server keeping its files in ``directory``."""
        server = cls(directory)
        server.start()
        return server

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> None:
        """Start the server and wait until it answers ``PING``."""
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
             str(self.directory), "--save", "", "--appendonly", "no", "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer PING within {timeout:g} s")

    def stop(self) -> None:
        """Stop the server (its data is gone: nothing is saved)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
