"""A real PostgreSQL for tests: ``initdb`` and ``pg_ctl`` into a temporary folder, on a free
port of 127.0.0.1, no durability (``fsync=off``), trust authentication.

::

    server = PostgresServer.start_new()      # needs Debian's postgresql (initdb, pg_ctl)
    url = server.create_database()           # a fresh, empty database's URL
    ...
    server.stop(); server.start()            # an outage: the data stays
    server.destroy()                         # stop and delete the folder

When the tests run as root (PostgreSQL refuses to), the server runs as the ``postgres`` user
of the Debian package. The pytest fixtures ``postgres_server`` (one per session),
``postgres_url`` (a fresh database per test) and ``store_backend`` (each persistent store
kind: SQLite, PostgreSQL) are here too; a test module imports them.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["PostgresServer", "ServeProcess", "StoreBackend", "find_postgres_bin", "postgres_server",
           "postgres_url", "require_postgres", "store_backend"]

INSTALL_HINT = ("PostgreSQL is not installed: `apt-get install postgresql` (.ci/run "
                "installs it)")


def find_postgres_bin() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl`` (the newest Debian version), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: [int(x) for x in p.split("/")[4].split(".") if x.isdigit()])
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).parent
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster in a folder of its own (see the module docs)."""

    def __init__(self, directory: str | os.PathLike[str] | None = None,
                 bin_dir: Path | None = None) -> None:
        found = bin_dir or find_postgres_bin()
        if found is None:
            raise FileNotFoundError(INSTALL_HINT)
        self.bin = found
        self.directory = Path(directory or tempfile.mkdtemp(prefix="modelplex-pg-"))
        self.data = self.directory / "data"
        self.port = _free_port()
        self.user: str | None = None
        if os.geteuid() == 0:  # postgres refuses to run as root: use the package's user
            self.user = "postgres"
            entry = pwd.getpwnam(self.user)
            os.chmod(self.directory, 0o700)
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)
        self._names = itertools.count(1)

    @classmethod
    def start_new(cls, directory: str | os.PathLike[str] | None = None) -> PostgresServer:
        """A new cluster, initialised and started."""
        server = cls(directory)
        server.init()
        server.start()
        return server

    def _run(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, Any] = {"user": self.user} if self.user else {}
        result = subprocess.run([str(self.bin / args[0]), *args[1:]], capture_output=True,
                                text=True, timeout=timeout, cwd=self.directory, check=False,
                                **kwargs)
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({result.returncode}): "
                               f"{result.stderr.strip() or result.stdout.strip()}")
        return result

    def init(self) -> None:
        """``initdb``: a new cluster with the superuser ``postgres``, trusted on loopback."""
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
                  "-E", "UTF8", "--no-sync", "--locale=C")

    @property
    def url(self) -> str:
        """The URL of the ``postgres`` database."""
        return self.url_of("postgres")

    def url_of(self, database: str) -> str:
        """``postgresql://postgres@127.0.0.1:<port>/<database>``."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def running(self) -> bool:
        """Whether the server accepts connections now."""
        with contextlib.suppress(OSError), socket.create_connection(
                ("127.0.0.1", self.port), timeout=0.5):
            return True
        return False

    def start(self, timeout: float = 60.0) -> None:
        """``pg_ctl start`` on the port, waiting until it accepts connections."""
        options = (f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                   "-c max_connections=200")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l",
                  str(self.directory / "postgres.log"), "-w", "-t", str(int(timeout)),
                  "start", timeout=timeout + 10)
        deadline = time.monotonic() + timeout
        while not self.running:
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not listen on {self.port}")
            time.sleep(0.05)

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop`` (``fast``: connections are cut, the data stays)."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; its URL."""
        name = name or f"test_{os.getpid()}_{next(self._names)}"
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return self.url_of(name)

    def destroy(self) -> None:
        """Stop the server and delete its folder."""
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.directory, ignore_errors=True)


def require_postgres() -> None:
    """Skip (fail under CI) when PostgreSQL's binaries are missing."""
    import pytest

    if find_postgres_bin() is None:
        if os.environ.get("CI"):
            pytest.fail(INSTALL_HINT)
        pytest.skip(INSTALL_HINT)


def _fixtures() -> tuple[Any, Any]:
    import pytest

    @pytest.fixture(scope="session")
    def postgres_server() -> Iterator[PostgresServer]:
        """One PostgreSQL for the test session (skipped without the binaries)."""
        require_postgres()
        server = PostgresServer.start_new()
        try:
            yield server
        finally:
            server.destroy()

    @pytest.fixture
    def postgres_url(postgres_server: PostgresServer) -> str:
        """A fresh database of the session's PostgreSQL (started again if a test stopped
        it)."""
        if not postgres_server.running:
            postgres_server.start()
        return postgres_server.create_database()

    return postgres_server, postgres_url


postgres_server, postgres_url = _fixtures()


class StoreBackend:
    """One kind of conversation store over one storage (a SQLite file, a PostgreSQL
    database), for tests that run the same on each: :meth:`open` makes a store (again: a
    restart), :meth:`message_rows` counts a conversation's stored messages."""

    def __init__(self, kind: str, location: str) -> None:
        self.kind = kind
        self.location = location

    def __repr__(self) -> str:
        return f"StoreBackend({self.kind!r})"

    def open(self) -> Any:
        """A new store on the storage (a :class:`ConversationStore`)."""
        from modelplex_server.sqlite_store import open_store

        return open_store(self.location)

    async def message_rows(self, conversation_id: str) -> int:
        """How many message rows the storage holds for ``conversation_id``."""
        if self.kind == "sqlite":
            import sqlite3

            with contextlib.closing(sqlite3.connect(self.location)) as db:
                return int(db.execute("SELECT count(*) FROM messages WHERE conversation_id "
                                      "= ?", (conversation_id,)).fetchone()[0])
        import asyncpg

        conn = await asyncpg.connect(self.location)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM messages WHERE "
                                           "conversation_id = $1", conversation_id))
        finally:
            await conn.close()


def _store_fixture() -> Any:
    import pytest

    @pytest.fixture(params=["sqlite", "postgresql"])
    def store_backend(request: Any, tmp_path: Path) -> StoreBackend:
        """Each persistent store kind in turn (postgresql: a fresh database of the session's
        server; skipped without PostgreSQL's binaries)."""
        if request.param == "sqlite":
            return StoreBackend("sqlite", str(tmp_path / "conversations.db"))
        return StoreBackend("postgresql", request.getfixturevalue("postgres_url"))

    return store_backend


store_backend = _store_fixture()


class ServeProcess:
    """``python -m modelplex serve ARGS`` in a subprocess, as users run it
    (:class:`modelplex.testing.cli.Cli`'s command line and environment): :attr:`url` once
    it listens, :attr:`log` (its stderr lines so far, read in a thread so the pipe never
    fills), :meth:`stop` (SIGTERM, then the exit code)."""

    def __init__(self, *args: str, env: Mapping[str, str] | None = None,
                 timeout: float = 120.0) -> None:
        import re
        import threading

        from modelplex.testing.cli import Cli

        cli = Cli(drop=())  # this process's environment, with ``env``
        self.proc = subprocess.Popen(cli.command("serve", *args), stderr=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, text=True,
                                     env=cli.environ(env))
        self.log: list[str] = []
        self.url = ""
        ready = threading.Event()
        pattern = re.compile(r"serving on (http://\S+)")

        def read() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.log.append(line)
                match = pattern.search(line)
                if match and not self.url:
                    self.url = match.group(1)
                    ready.set()
            ready.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        ready.wait(timeout)
        if not self.url:
            self.stop()
            raise RuntimeError("modelplex serve did not start:\n" + "".join(self.log))

    @property
    def text(self) -> str:
        """Everything it logged so far."""
        return "".join(self.log)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, wait (SIGKILL after ``timeout``); the exit code."""
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reader.join(10)
        return int(self.proc.returncode)
