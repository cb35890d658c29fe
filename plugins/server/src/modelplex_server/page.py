"""The web chat page: static files shipped in the package, served at ``/`` and ``/ui/``.

The page (``static/``: ``index.html``, ES modules, ``style.css``) uses only the documented
REST API. Its files are public (they hold no data; the API calls they make need a key when
keys are configured) and are served with a strict Content-Security-Policy: scripts and
styles only from this server, no inline code, so even a rendering bug could not run what a
model wrote.
"""

from __future__ import annotations

import hashlib
from importlib import resources

from aiohttp import web

from modelplex_server.errors import ApiError

__all__ = ["CSP", "PUBLIC_PREFIX", "add_routes", "static_files"]

PUBLIC_PREFIX = "/ui/"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css",
          ".svg": "image/svg+xml", ".png": "image/png"}
_STATIC = web.AppKey("modelplex_static", dict)


def static_files() -> dict[str, tuple[bytes, str, str]]:
    """Every file of ``static/``: name -> (content, content type, ETag)."""
    out: dict[str, tuple[bytes, str, str]] = {}
    for entry in resources.files("modelplex_server").joinpath("static").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in _TYPES:
            data = entry.read_bytes()
            etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
            out[entry.name] = (data, _TYPES[suffix], etag)
    return out


def _file(request: web.Request, name: str) -> web.Response:
    found = request.app[_STATIC].get(name)
    if found is None:
        raise ApiError(404, f"no such file: {request.path}", code="not_found")
    data, content_type, etag = found
    headers = {"ETag": etag, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
               "Referrer-Policy": "no-referrer"}
    if content_type == "text/html":
        headers["Content-Security-Policy"] = CSP
        headers["X-Frame-Options"] = "DENY"
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=data, content_type=content_type, charset="utf-8"
                        if content_type.startswith("text/") else None, headers=headers)


async def index(request: web.Request) -> web.Response:
    """``GET /``: the chat page."""
    return _file(request, "index.html")


async def asset(request: web.Request) -> web.Response:
    """``GET /ui/{name}``: a script, style sheet or image of the page."""
    return _file(request, request.match_info["name"])


def add_routes(app: web.Application) -> None:
    """Register the page's routes (the files are read once, here)."""
    app[_STATIC] = static_files()
    app.router.add_get("/", index)
    app.router.add_get(PUBLIC_PREFIX + "{name}", asset)
