"""The browser guard: what keeps a web page from driving the server through a visitor's browser.

A server without keys (the default) trusts whoever can reach it, and only this machine can
(it binds loopback only). A web page open in this machine's browser can reach it too, so
every request passes :func:`guard_middleware` first:

- **Host** (without keys): only ``localhost``, a loopback address or a name of
  ``[server] allowed_hosts``. A page whose own host name an attacker re-points at 127.0.0.1
  (DNS rebinding) sends its own name, and is refused: the browser treats such a page as
  same-origin with the server, so the Host header is what tells them apart.
- **Origin**: a state-changing request (any method but GET, HEAD, OPTIONS) and a WebSocket
  handshake that carry an ``Origin`` must come from the server's own origin or one of
  ``cors_origins``. Browsers send ``Origin`` on exactly these requests, even ``no-cors``
  ones, so a page of another origin can neither post nor open ``/ws``; clients that are not
  browsers send none and are not affected.
- **Content type**: a request with a body must declare it JSON (``application/json`` or
  ``application/*+json``). The content types a page may send without a CORS preflight
  (``text/plain``, forms) are refused, whatever the origin check decided. The one exception
  is an upload to ``/v1/files``, a multipart form as OpenAI's clients send it: a page of
  another origin is still refused by the origin check (browsers send ``Origin`` on a
  cross-origin POST), and keys are checked as for any request.

CORS (``cors_origins``) is answered here too, on every response: errors (401, 403, 404, 429,
...) and streams included, since the headers are added as each response is prepared.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web
from yarl import URL

from modelplex_server.errors import ApiError
from modelplex_server.gateway import GATEWAY
from modelplex_server.settings import ServerSettings, is_loopback

__all__ = ["cors_headers", "guard_middleware", "host_allowed", "origin_allowed"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CORS_METHODS = "GET, POST, PATCH, DELETE"
CORS_HEADERS = "Authorization, Content-Type, x-api-key, anthropic-version, anthropic-beta"
EXPOSED = "Retry-After"


def _split_host(host: str) -> tuple[str, int | None]:
    """A Host header's name (no brackets, lower case, no final dot) and port (if given)."""
    host = host.strip().lower()
    port: int | None = None
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
    else:
        name, colon, after = host.rpartition(":")
        if colon and after.isdigit() and ":" not in name:
            port = int(after)
        else:
            name = host
    return name.rstrip("."), port


def _hostname(host: str) -> str:
    """The name part of a Host header."""
    return _split_host(host)[0]


def host_allowed(settings: ServerSettings, host: str | None) -> bool:
    """Whether a request for ``host`` (its Host header) is served: always with keys, else only
    for localhost, loopback addresses and ``allowed_hosts``."""
    if settings.keys_required:
        return True
    name = _hostname(host or "")
    allowed = settings.allowed_hosts
    return is_loopback(name) or "*" in allowed or name in {h.lower().rstrip(".")
                                                            for h in allowed}


def _origin_key(origin: str) -> tuple[str, str, int | None] | None:
    try:
        url = URL(origin.strip())
    except ValueError:
        return None
    if not url.scheme or not url.host:
        return None
    return url.scheme.lower(), url.host.lower().rstrip("."), url.port


def _cors_allowed(settings: ServerSettings, origin: str) -> bool:
    origins = settings.cors_origins
    if "*" in origins:
        return True
    key = _origin_key(origin)
    return key is not None and any(_origin_key(o) == key for o in origins)


def _same_host(request: web.Request, origin: str) -> bool:
    """Whether ``origin`` names the host (and port) the request was sent to, whatever the
    scheme: behind a proxy that ends TLS the page is https, the request to the server http."""
    try:
        url = URL(origin.strip())
    except ValueError:
        return False
    if not url.host:
        return False
    name, port = _split_host(request.host)
    default = (None, 80, 443)
    return (url.host.lower().rstrip(".") == name and
            (url.explicit_port if url.explicit_port not in default else None) ==
            (port if port not in default else None))


def origin_allowed(request: web.Request, origin: str) -> bool:
    """Whether ``origin`` is the server's own (the host the request was sent to) or one of
    ``cors_origins``."""
    return _same_host(request, origin) or _cors_allowed(request.app[GATEWAY].settings, origin)


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json"))


def _is_upload(request: web.Request) -> bool:
    """A file upload of OpenAI's Files API (``POST /v1/files``, a multipart form)."""
    return request.path == "/v1/files" and request.content_type == "multipart/form-data"


def _is_preflight(request: web.Request) -> bool:
    return (request.method == "OPTIONS" and hdrs.ORIGIN in request.headers
            and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers)


@web.middleware
async def guard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse foreign hosts (without keys), foreign origins on state-changing and WebSocket
    requests, and bodies that are not declared JSON; answer CORS preflights."""
    settings = request.app[GATEWAY].settings
    if not host_allowed(settings, request.host):
        raise ApiError(403, f"the host name {_hostname(request.host)[:100]!r} is not served: "
                            "without API keys only localhost and loopback addresses are "
                            "(against DNS rebinding); add it to [server] allowed_hosts, or "
                            "configure keys", type="permission_error",
                       code="host_not_allowed")
    origin = request.headers.get(hdrs.ORIGIN)
    if _is_preflight(request) and origin is not None and _cors_allowed(settings, origin):
        return web.Response(status=204)
    upgrade = request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"
    if origin is not None and (request.method not in SAFE_METHODS or upgrade) \
            and not origin_allowed(request, origin):
        raise ApiError(403, f"requests from the origin {origin[:100]!r} are not allowed: add it "
                            "to [server] cors_origins to let its pages use this server",
                       type="permission_error", code="origin_not_allowed")
    if request.method not in SAFE_METHODS and request.body_exists \
            and not _is_json(request.content_type) and not _is_upload(request):
        if request.path == "/v1/files":
            raise ApiError(415, "send the file as a multipart form (Content-Type: "
                                "multipart/form-data) with the fields 'purpose' and 'file'",
                           code="unsupported_media_type", param="file")
        raise ApiError(415, "the request body must be JSON: send it with 'Content-Type: "
                            "application/json'", code="unsupported_media_type")
    return await handler(request)


async def cors_headers(request: web.Request, resp: web.StreamResponse) -> None:
    """``on_response_prepare``: the CORS headers for an allowed origin, on every response
    (errors, streams, WebSocket handshakes, preflights)."""
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None:
        return
    settings = request.app[GATEWAY].settings
    if not settings.cors_origins or not _cors_allowed(settings, origin):
        return
    headers = resp.headers
    headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = "*" if "*" in settings.cors_origins else origin
    vary = headers.get(hdrs.VARY)
    if vary is None or "origin" not in vary.lower():
        headers[hdrs.VARY] = f"{vary}, Origin" if vary else "Origin"
    headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = EXPOSED
    if _is_preflight(request):
        headers[hdrs.ACCESS_CONTROL_ALLOW_METHODS] = CORS_METHODS
        headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = CORS_HEADERS
        headers[hdrs.ACCESS_CONTROL_MAX_AGE] = "600"
