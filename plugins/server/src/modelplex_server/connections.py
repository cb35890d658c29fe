"""Slow, silent and surplus connections: closed, so they cannot starve the server.

Every connection the server accepts goes through a :class:`ConnectionGuard`:

- **header timeout** (``header_timeout``): from the moment a connection opens, or sends its
  first byte after an idle keep-alive pause, the complete request head must arrive within
  this many seconds; a silent socket or one dripping its headers is closed;
- **body timeout** (``body_timeout``): a request body that stalls that long between two reads
  is answered 408 and the connection closed (:func:`modelplex_server.schemas.read_body`);
- **idle timeout** (``idle_timeout``): a keep-alive connection with no request is closed;
- **send timeout** (``body_timeout`` too): a client that stops reading an answer (the
  kernel's buffers and the transport's are full, so writing is paused) for that long is cut
  off, which ends its request, frees its slot and cancels the upstream request;
- **caps**: at most ``max_connections_per_client`` connections from one client address and
  ``max_connections`` in all (default: half the process's file limit, as each request may
  hold an upstream connection too). At a cap the connection idle the longest gives way (one
  waiting for a request, or for the rest of a body, counts as idle); only when every one is
  busy with a request is the new one refused (a 503 with ``Retry-After``), so ``/health``
  keeps answering while sockets pile up.

A request the HTTP parser cannot read (a header line over 8190 bytes, a garbled
``Content-Length`` or chunk size) is answered 400 in OpenAI's error shape (its path is not
known yet), logged in one line (:class:`_ParseErrors`), and the connection closed.

A request is busy from its complete head until its handler returns, except while it waits
for the client (the rest of its body; a WebSocket's next frame while no answer streams);
:mod:`modelplex_server.ws` gives an unauthenticated socket ``header_timeout`` seconds to
authenticate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from modelplex.http import dumps
from modelplex_server.settings import ServerSettings

__all__ = ["CONNECTIONS", "ConnectionGuard", "GuardedSite", "default_max_connections",
           "track_middleware"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = logging.getLogger("modelplex.server")

_REFUSED_BODY = dumps({"error": {
    "message": "too many connections: the server is at its connection limit and every "
               "connection is busy; retry shortly", "type": "server_error", "param": None,
    "code": "too_many_connections"}})
REFUSED = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
           b"Retry-After: 1\r\nConnection: close\r\nContent-Length: "
           + str(len(_REFUSED_BODY)).encode() + b"\r\n\r\n" + _REFUSED_BODY)


def default_max_connections() -> int:
    """Half the process's soft limit of open files (each request may hold an upstream
    connection as well), at least 32."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):  # pragma: no cover - no such limit
        return 512
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return 4096
    return max(32, soft // 2)


class _Conn:
    """One accepted connection: its client, what it is doing, since when."""

    __slots__ = ("busy", "client", "header_timer", "receiving", "since", "transport",
                 "write_timer")

    def __init__(self, transport: asyncio.Transport, client: str, now: float) -> None:
        self.transport = transport
        self.client = client
        self.busy = 0
        self.receiving = False  # its handler waits for the client's body
        self.since = now
        self.header_timer: asyncio.TimerHandle | None = None
        self.write_timer: asyncio.TimerHandle | None = None


class _Protocol(asyncio.Protocol):
    """The server's protocol (aiohttp's request handler) with the guard told of its events."""

    def __init__(self, inner: asyncio.Protocol, guard: ConnectionGuard) -> None:
        self.inner = inner
        self.guard = guard
        self.conn: _Conn | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.inner.connection_made(transport)
        assert isinstance(transport, asyncio.Transport)
        self.conn = self.guard.opened(transport)

    def data_received(self, data: bytes) -> None:
        if self.conn is not None and not self.conn.busy and self.conn.header_timer is None:
            self.guard.arm(self.conn)  # the first byte of a request after an idle pause
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            self.guard.closed(self.conn)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()
        if self.conn is not None:
            self.guard.writing_paused(self.conn)

    def resume_writing(self) -> None:
        if self.conn is not None:
            self.guard.writing_resumed(self.conn)
        self.inner.resume_writing()


class ConnectionGuard:
    """Timeouts and caps for the connections of one server (see the module)."""

    def __init__(self, settings: ServerSettings) -> None:
        self.header_timeout = settings.header_timeout
        self.send_timeout = settings.body_timeout
        self.per_client = settings.max_connections_per_client
        self._total = settings.max_connections
        self._conns: dict[asyncio.Transport, _Conn] = {}
        self._clients: dict[str, dict[asyncio.Transport, _Conn]] = {}
        self.refused = 0
        self.evicted = 0
        self.timed_out = 0
        self.stalled = 0

    @property
    def total(self) -> int:
        """The cap on all connections (``max_connections``, else from the file limit now)."""
        return self._total or default_max_connections()

    def __len__(self) -> int:
        return len(self._conns)

    def protocol_factory(self, make: Callable[[], asyncio.Protocol]
                         ) -> Callable[[], asyncio.Protocol]:
        """``make`` (the aiohttp server) with every protocol it makes watched."""
        return lambda: _Protocol(make(), self)

    # -- events ------------------------------------------------------------------------------
    def opened(self, transport: asyncio.Transport) -> _Conn | None:
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        if not self._room(self._clients.get(client, {}), self.per_client) or \
                not self._room(self._conns, self.total):
            self.refused += 1
            with contextlib.suppress(Exception):
                transport.write(REFUSED)
            transport.close()
            return None
        conn = _Conn(transport, client, asyncio.get_running_loop().time())
        self._conns[transport] = conn
        self._clients.setdefault(client, {})[transport] = conn
        self.arm(conn)
        return conn

    def closed(self, conn: _Conn) -> None:
        self._disarm(conn)
        self.writing_resumed(conn)
        self._conns.pop(conn.transport, None)
        mine = self._clients.get(conn.client)
        if mine is not None:
            mine.pop(conn.transport, None)
            if not mine:
                del self._clients[conn.client]

    def request_started(self, transport: Any) -> None:
        conn = self._conns.get(transport)
        if conn is not None:
            conn.busy += 1
            self._disarm(conn)

    def request_finished(self, transport: Any) -> None:
        conn = self._conns.get(transport)
        if conn is not None:
            conn.busy = max(0, conn.busy - 1)
            conn.since = asyncio.get_running_loop().time()

    @contextlib.contextmanager
    def receiving(self, transport: Any) -> Iterator[None]:
        """While a handler waits for the client's body, its connection counts as idle: a
        client dripping bodies cannot hold the connection slots."""
        conn = self._conns.get(transport)
        if conn is None:
            yield
            return
        conn.receiving = True
        conn.since = asyncio.get_running_loop().time()
        try:
            yield
        finally:
            conn.receiving = False

    def writing_paused(self, conn: _Conn) -> None:
        """The client stopped taking the answer (the buffers are full): cut it off unless it
        reads again within the send timeout."""
        if conn.write_timer is None:
            conn.write_timer = asyncio.get_running_loop().call_later(
                self.send_timeout, self._stalled, conn)

    @staticmethod
    def writing_resumed(conn: _Conn) -> None:
        """The client reads again (or the connection closed)."""
        if conn.write_timer is not None:
            conn.write_timer.cancel()
            conn.write_timer = None

    def _stalled(self, conn: _Conn) -> None:
        conn.write_timer = None
        self.stalled += 1
        log.info("closed a connection from %s: it read nothing of its answer for %g s",
                 conn.client, self.send_timeout)
        conn.transport.abort()  # its buffered answer will never be read: drop it

    # -- timers and eviction -----------------------------------------------------------------
    def arm(self, conn: _Conn) -> None:
        """Start the header timeout of ``conn``."""
        self._disarm(conn)
        conn.header_timer = asyncio.get_running_loop().call_later(
            self.header_timeout, self._expire, conn)

    @staticmethod
    def _disarm(conn: _Conn) -> None:
        if conn.header_timer is not None:
            conn.header_timer.cancel()
            conn.header_timer = None

    def _expire(self, conn: _Conn) -> None:
        conn.header_timer = None
        if not conn.busy:
            self.timed_out += 1
            conn.transport.close()

    def _room(self, among: dict[asyncio.Transport, _Conn], cap: int) -> bool:
        """Whether one more connection fits beside ``among``: under ``cap``, or after closing
        the one idle the longest; false when all are busy."""
        if len(among) < cap:
            return True
        idle = [c for c in among.values()
                if (not c.busy or c.receiving) and not c.transport.is_closing()]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c.since)
        self.evicted += 1
        self.closed(oldest)
        oldest.transport.close()
        return True


#: The app key of the server's :class:`ConnectionGuard`.
CONNECTIONS: web.AppKey[ConnectionGuard] = web.AppKey("modelplex_connections",
                                                      ConnectionGuard)


@web.middleware
async def track_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Mark the request's connection busy while its handler runs."""
    guard = request.app[CONNECTIONS]
    transport = request.transport
    guard.request_started(transport)
    try:
        return await handler(request)
    finally:
        guard.request_finished(transport)


class GuardedSite(web.BaseSite):
    """A TCP site whose connections go through the app's :class:`ConnectionGuard`."""

    __slots__ = ("_guard", "_host", "_port", "_reuse_port")

    def __init__(self, runner: web.AppRunner, host: str, port: int, *, backlog: int,
                 guard: ConnectionGuard, reuse_port: bool = False) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._guard = guard
        self._reuse_port = reuse_port

    @property
    def name(self) -> str:
        """``http://host:port``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    @property
    def sockets(self) -> list[Any]:
        """The listening sockets (once started)."""
        server = self._server
        return list(getattr(server, "sockets", None) or [])

    async def start(self) -> None:
        """Listen."""
        await super().start()
        server = self._runner.server
        assert server is not None

        def make() -> asyncio.Protocol:
            handler = server()
            if type(handler) is RequestHandler:  # same layout: only handle_error differs
                handler.__class__ = _ParseErrors
            return handler

        self._server = await asyncio.get_running_loop().create_server(
            self._guard.protocol_factory(make), self._host, self._port,
            backlog=self._backlog, reuse_port=self._reuse_port or None)


class _ParseErrors(RequestHandler):
    """aiohttp's protocol, answering a request its parser refused (a 4xx) as JSON in OpenAI's
    error shape, logged in one line instead of a traceback (any client can send one)."""

    __slots__ = ()

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if not 400 <= status < 500:
            return super().handle_error(request, status, exc, message)
        text = (message or "").strip().split("\n", 1)[0][:200] or "malformed request"
        log.info("bad request from %s: %s", request.remote, text)
        text = f"the request could not be read: {text} (send valid HTTP/1.1)"
        # in OpenAI's shape: the parser refused the request before its path was known
        body = {"error": {"message": text, "type": "invalid_request_error", "param": None,
                          "code": "bad_http"}}
        resp = web.Response(status=status, body=dumps(body), content_type="application/json")
        resp.force_close()
        return resp
