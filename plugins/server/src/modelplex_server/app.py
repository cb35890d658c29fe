"""The aiohttp application and the server around it.

::

    from modelplex_server import app as server

    application = server.create_app(server.ServerSettings(port=8000))
    await server.serve(application)          # until SIGINT/SIGTERM, then a graceful stop

Middlewares, outermost first: connection tracking (a connection is busy while a handler runs:
:mod:`modelplex_server.connections`, which also times out slow and silent connections and
caps them), errors (every failure becomes an OpenAI-shaped JSON error),
the browser guard (host, origin and content type checks, CORS preflights:
:mod:`modelplex_server.guard`), then API keys. CORS headers are added to every response as it
is prepared, streams and errors included. A client that disconnects cancels its
handler (``handler_cancellation``), which closes the provider stream and so the upstream
request. On shutdown the server stops accepting, gives in-flight requests
``shutdown_timeout`` seconds to finish, then closes the providers.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from modelplex.config import Config
from modelplex.errors import ConfigurationError, ModelplexError
from modelplex.plugins import Plugins
from modelplex.pool import ProviderPool
from modelplex.registry import ModelRegistry
from modelplex.routing import RouterState
from modelplex_server import (
    anthropic_api,
    batches_api,
    completions_api,
    files_api,
    keys,
    metrics,
    models_api,
    ollama_api,
    openai_api,
    page,
    probes,
    responses_api,
    rest_api,
    ws,
)
from modelplex_server.batch_runner import BATCHES, BatchRunner
from modelplex_server.connections import (
    CONNECTIONS,
    ConnectionGuard,
    GuardedSite,
    track_middleware,
)
from modelplex_server.conversations import ConversationStore
from modelplex_server.errors import ApiError, error_response, from_exception
from modelplex_server.gateway import GATEWAY, KEY, Gateway, admissions
from modelplex_server.guard import cors_headers, guard_middleware
from modelplex_server.limits import Limiter, open_limiter
from modelplex_server.openapi import openapi_handler
from modelplex_server.resolve import ModelResolver
from modelplex_server.settings import ServerSettings, hash_key, is_loopback

if TYPE_CHECKING:
    from modelplex.store.logs import LogStore

__all__ = ["AppServer", "create_app", "serve", "server_registry", "start"]

log = logging.getLogger("modelplex.server")
access_log = logging.getLogger("modelplex.server.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PUBLIC_PATHS = frozenset({"/health", "/openapi.json", "/", *probes.PROBE_PATHS})


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as ``{"error": {...}}`` with the right status."""
    try:
        _check_size(request)
        _check_nul(request)
        return await handler(request)
    except ApiError as err:
        resp = error_response(err)
        if err.close:  # answer, then close: what is left of the body is not worth waiting for
            resp.force_close()
            await resp.prepare(request)
            await resp.write_eof()
            request.protocol.force_close()
        return resp
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        limit = request.app[GATEWAY].settings.max_body_bytes
        message = {413: f"the request body is larger than the limit of {limit} bytes",
                   404: f"no such endpoint: {request.method} {request.path}",
                   405: f"{request.method} is not allowed on {request.path}"}.get(
            exc.status, exc.reason)
        code = {413: "request_too_large", 404: "not_found", 405: "method_not_allowed"}.get(
            exc.status)
        return error_response(ApiError(exc.status, message, code=code))
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except RequestPayloadError:  # a body cut short, or not in its declared Content-Encoding
        unread = ApiError(400, "the request body could not be read: it is cut short or not in "
                               "its Content-Encoding (send it uncompressed, or as valid gzip, "
                               "deflate or br)", code="invalid_body")
        resp = error_response(unread)
        resp.force_close()  # what is left of the body cannot be told from the next request
        return resp
    except Exception as err:
        api = from_exception(err)
        if not isinstance(err, ModelplexError):
            log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(api)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bearer keys: 401 without a valid one (when keys are configured)."""
    settings = request.app[GATEWAY].settings
    if not settings.keys_required or request.path in PUBLIC_PATHS \
            or request.method == "OPTIONS" or request.path.startswith(page.PUBLIC_PREFIX):
        return await handler(request)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if not scheme and request.headers.get("x-api-key"):  # Anthropic's clients send this
        scheme, token = "bearer", request.headers["x-api-key"]
    if scheme.lower() == "bearer" and token.strip():
        key = await request.app[GATEWAY].find_key(hash_key(token.strip()))
        if key is None:
            raise ApiError(401, "Incorrect API key provided. Ask the server's operator for a "
                                "key (`modelplex server-key` makes one).",
                           code="invalid_api_key")
        request[KEY] = key
        return await handler(request)
    if request.path == "/ws":
        request[ws.NEEDS_AUTH] = True
        return await handler(request)
    raise ApiError(401, "You didn't provide an API key: send it as 'Authorization: Bearer "
                        "KEY' (or 'x-api-key: KEY').", code="missing_api_key")


@web.middleware
async def limits_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Free the per-key limit slots a request took (:meth:`Gateway.check_rate`) when its
    handler ends, streams included."""
    async with admissions():
        return await handler(request)


def _check_size(request: web.Request) -> None:
    """413 before reading a body whose declared length is over the limit (for an upload to
    ``/v1/files``: ``max_file_bytes`` and a little for the form around the file)."""
    settings = request.app[GATEWAY].settings
    limit = settings.max_body_bytes
    if request.path == files_api.FILES_PATH and request.method == "POST":
        limit = max(limit, settings.max_file_bytes + 64 * 1024)
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, f"the request body is {request.content_length} bytes, larger than "
                            f"the limit of {limit} bytes", code="request_too_large")


def _check_nul(request: web.Request) -> None:
    """A 400 for a path or query parameter holding a NUL character: no id or name has one
    (and PostgreSQL cannot even compare a text with one)."""
    params = [*request.match_info.items(), *request.query.items()]
    for name, value in params:
        if "\x00" in value:
            raise ApiError(400, f"the parameter {name!r} holds a NUL character (%00): no id or "
                                "name has one; remove it", param=name)


def create_app(settings: ServerSettings | None = None, *, plugins: Plugins | None = None,
               resolver: ModelResolver | None = None, registry: ModelRegistry | None = None,
               conversations: ConversationStore | None = None,
               state: RouterState | None = None, config: Config | None = None,
               pool: ProviderPool | None = None,
               logs: LogStore | str | os.PathLike[str] | None = None,
               limits: Limiter | None = None) -> web.Application:
    """The web application: OpenAI-compatible ``/v1`` (with ``/v1/files`` and ``/v1/batches``
    run in the background: :mod:`modelplex_server.batch_runner`), the REST ``/api``, ``/ws``,
    Ollama-compatible ``/ollama/api``, ``/health``, the probes ``/healthz`` and ``/readyz``
    (:mod:`modelplex_server.probes`), ``/openapi.json`` and the web chat page
    (``/``, ``/ui/``).

    Every part can be passed in (a shared router state, a persistent conversation store);
    by default models resolve through :mod:`modelplex.pipeline` like everywhere else:
    ``config`` (default: the process-wide one, ``MODELPLEX_CONFIG``) gives the
    ``[providers.NAME]`` keywords and the named models (``[models.NAME]``), the providers and
    routers come from ``pool`` (default: the process-wide one) and are given back when the
    server stops. ``logs`` (a :class:`~modelplex.store.logs.LogStore` or its path) stores every
    exchange, as ``modelplex chat`` does (``modelplex serve`` passes the same database).
    Per-key limits are counted by ``limits`` (default: from the config's ``[state]``
    table: in Redis for ``backend = "redis"``, else in this process).
    """
    settings = settings or ServerSettings()
    if "*" in settings.cors_origins and not settings.keys_required:
        log.warning("cors_origins allows any origin and no API keys are configured: any web "
                    "page open in a browser on this machine can use this server")
    resolver = resolver or ModelResolver(config=config, plugins=plugins, pool=pool,
                                         named_models=settings.models,
                                         provider_config=settings.providers, logs=logs)
    registry = registry or server_registry(resolver, ttl=settings.registry_ttl)
    limits = limits or open_limiter(resolver.config.state)
    gateway = Gateway(settings, resolver=resolver, registry=registry,
                      conversations=conversations, state=state, limits=limits)
    middlewares: list[Any] = [track_middleware, errors_middleware, guard_middleware,
                              auth_middleware, limits_middleware]
    app = web.Application(middlewares=middlewares, client_max_size=settings.max_body_bytes)
    app[GATEWAY] = gateway
    app[CONNECTIONS] = ConnectionGuard(settings)
    app[BATCHES] = BatchRunner(gateway)
    app.on_startup.append(_on_startup)
    app.on_shutdown.append(_on_shutdown)
    app.on_cleanup.append(_on_cleanup)
    app.on_response_prepare.append(_no_server_header)
    app.on_response_prepare.append(cors_headers)
    openai_api.add_routes(app)
    models_api.add_routes(app)
    anthropic_api.add_routes(app)
    responses_api.add_routes(app)
    completions_api.add_routes(app)
    files_api.add_routes(app)
    batches_api.add_routes(app)
    rest_api.add_routes(app)
    ws.add_routes(app)
    ollama_api.add_routes(app)
    page.add_routes(app)
    probes.add_routes(app)
    keys.add_routes(app)
    metrics.setup(app)  # /metrics and W3C trace context (modelplex_server.metrics)
    app.router.add_get("/openapi.json", openapi_handler)
    return app


def server_registry(resolver: ModelResolver, **kwargs: Any) -> ModelRegistry:
    """A model registry over ``resolver``'s providers, listing its named models first (with
    their routers' observed latency once they served requests)."""
    def stats(name: str) -> dict[str, Any] | None:
        router = resolver.router(name)
        return router.stats() if router is not None else None

    return ModelRegistry(plugins=resolver.plugins, get_provider=resolver.provider,
                         named_models=resolver.named_models, named_stats=stats, **kwargs)


async def _no_server_header(request: web.Request, resp: web.StreamResponse) -> None:
    resp.headers.pop("Server", None)


async def _on_startup(app: web.Application) -> None:
    gateway = app[GATEWAY]
    await gateway.conversations.open()
    if gateway.settings.health_interval:
        gateway.registry.start_monitor(gateway.settings.health_interval)
    await app[BATCHES].start()


async def _on_shutdown(app: web.Application) -> None:
    await app[BATCHES].stop()  # lines in flight run again when the batch resumes


async def _on_cleanup(app: web.Application) -> None:
    gateway = app[GATEWAY]
    await gateway.registry.aclose()
    await gateway.resolver.aclose()
    with contextlib.suppress(Exception):
        await gateway.conversations.aclose()
    with contextlib.suppress(Exception):
        await gateway.limits.aclose()


def bind_host(settings: ServerSettings) -> str:
    """The address to listen on: ``settings.host``, but only loopback without keys."""
    if settings.keys_required or is_loopback(settings.host):
        return settings.host
    log.warning("no API keys are configured: listening on 127.0.0.1 only instead of %s. "
                "Add keys (`modelplex server-key`) to serve other machines.", settings.host)
    return "127.0.0.1"


def _bind_error(host: str, port: int, err: OSError) -> str:
    """One line saying why the server cannot listen on ``host:port`` and what to do."""
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if err.errno == errno.EADDRINUSE:
        why = ("the address is already in use (another server is running there): stop it, "
               "or choose another port (--port, or 0 for a free one)")
    elif err.errno == errno.EACCES:
        why = "permission denied (ports below 1024 need privileges): choose another --port"
    elif err.errno == errno.EADDRNOTAVAIL:
        why = "this machine has no such address: fix --host"
    else:
        why = (err.strerror or str(err)).lower()
    return f"cannot listen on {address}: {why}"


class AppServer:
    """A running server: its runner, the address it listens on, and how to stop it."""

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        self.runner = runner
        self.host = host
        self.port = port

    @property
    def sockets(self) -> list[Any]:
        """The listening sockets."""
        return [sock for site in self.runner.sites for sock in getattr(site, "sockets", ())]

    @property
    def url(self) -> str:
        """``http://host:port``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (``shutdown_timeout``), clean up."""
        await self.runner.cleanup()


async def start(app: web.Application, *, reuse_port: bool = False) -> AppServer:
    """Start ``app`` on its settings' host and port (port 0 picks a free one);
    ``reuse_port``: share the port with other processes (``SO_REUSEPORT``, the workers of
    :mod:`modelplex_server.workers`)."""
    settings = app[GATEWAY].settings
    host = bind_host(settings)
    runner = web.AppRunner(app, handler_cancellation=True,
                           shutdown_timeout=settings.shutdown_timeout,
                           access_log=access_log if settings.access_log else None,
                           keepalive_timeout=settings.idle_timeout,
                           lingering_time=min(10.0, settings.body_timeout))
    await runner.setup()
    site = GuardedSite(runner, host, settings.port, backlog=settings.backlog,
                       guard=app[CONNECTIONS], reuse_port=reuse_port)
    try:
        await site.start()
    except OSError as err:
        await runner.cleanup()  # close what start-up opened (providers, the store)
        raise ConfigurationError(_bind_error(host, settings.port, err)) from None
    sockets = site.sockets
    port = sockets[0].getsockname()[1] if sockets else settings.port
    return AppServer(runner, host, port)


async def serve(app: web.Application, *,
                on_ready: Callable[[AppServer], None] | None = None,
                reuse_port: bool = False) -> None:
    """Run ``app`` until SIGINT or SIGTERM, then stop gracefully."""
    server = await start(app, reuse_port=reuse_port)
    if on_ready is not None:
        on_ready(server)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("shutting down: waiting up to %.0f s for %d requests in flight",
                 app[GATEWAY].settings.shutdown_timeout, app[GATEWAY].in_flight)
        await server.stop()
