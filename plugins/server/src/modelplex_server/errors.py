"""Errors as HTTP answers, in OpenAI's shape (used by every endpoint of the server).

Every error body is ``{"error": {"message", "type", "param", "code"}}``, so the official
``openai`` client raises the matching exception class (``BadRequestError`` for 400,
``AuthenticationError`` for 401, ``NotFoundError`` for 404, ``RateLimitError`` for 429,
``InternalServerError`` for 5xx).
"""

from __future__ import annotations

import math
import sys
from typing import Any

from aiohttp import web

from modelplex import errors
from modelplex.http import dumps
from modelplex_server.conversations import StoreUnavailableError

__all__ = ["ApiError", "error_body", "error_response", "from_exception"]


class ApiError(Exception):
    """An error the server answers with: HTTP status, OpenAI type and code, optional param."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}
        self.close = close  # close the connection after answering (a body left unread)


def error_body(err: ApiError) -> dict[str, Any]:
    """The JSON body of an error."""
    return {"error": {"message": err.message, "type": err.type, "param": err.param,
                      "code": err.code}}


def error_response(err: ApiError) -> web.Response:
    """The HTTP response of an error."""
    return web.Response(body=dumps(error_body(err)), status=err.status,
                        content_type="application/json", headers=err.headers)


def _retry_headers(seconds: float | None, *, always: bool = False) -> dict[str, str]:
    """``Retry-After`` in whole seconds, at least 1 and at most the config's
    ``max_retry_after`` (:func:`modelplex.errors.max_retry_after`: an upstream's value may be
    garbage); absent when unknown unless ``always`` (then 1)."""
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        return {"Retry-After": "1"} if always else {}
    cap = max(1, math.floor(errors.max_retry_after()))
    return {"Retry-After": str(max(1, min(cap, math.ceil(seconds))))}


def _busy(err: errors.RoutingError, message: str) -> ApiError | None:
    """The 429/503 of a named model none of whose deployments could answer because each was
    rate limited or overloaded (or cooling down from it), as for a single provider."""
    if err.attempts and not all(isinstance(e, errors.RateLimitError) for _, e in err.attempts):
        return None
    waits = [e.retry_after for _, e in err.attempts
             if isinstance(e, errors.RateLimitError) and e.retry_after is not None]
    if err.retry_after is not None:
        waits.append(err.retry_after)
    wait = min(waits) if waits else None
    if err.attempts and all(type(e) is errors.RateLimitError for _, e in err.attempts):
        return ApiError(429, message, type="rate_limit_error", code="rate_limit_exceeded",
                        headers=_retry_headers(wait, always=True))
    return ApiError(503, message, type="server_error", code="upstream_overloaded",
                    headers=_retry_headers(wait, always=True))


def _mcp_failure(err: BaseException) -> ApiError | None:
    """The 502 of an MCP server (of a named model's ``mcp = [...]``) that failed to start or
    answer: its first line names the server and what went wrong; the tail of the server's
    stderr (which may echo anything) stays out of the answer."""
    session = sys.modules.get("modelplex.mcp.session")  # loaded whenever an McpError exists
    if session is None or not isinstance(err, session.McpError):
        return None
    head = str(err).split("\n", 1)[0].split("; its stderr ends with", 1)[0]
    return ApiError(502, errors.redact(head) + " (a tool server of this model failed; the "
                    "server's operator can see why in its [mcp] config and logs)",
                    type="server_error", code="mcp_server_error")


def from_exception(err: BaseException) -> ApiError:
    """The :class:`ApiError` for an exception raised while serving a request."""
    if isinstance(err, ApiError):
        return err
    mcp = _mcp_failure(err)
    if mcp is not None:
        return mcp
    message = errors.redact(str(err))
    if isinstance(err, StoreUnavailableError):
        return ApiError(503, message, type="server_error", code="store_unavailable",
                        headers={"Retry-After": "2"})
    if isinstance(err, errors.UnknownProviderError | errors.ModelNotFoundError):
        return ApiError(404, message, code="model_not_found", param="model")
    if isinstance(err, errors.ConfigurationError | errors.UnsupportedOperationError):
        return ApiError(400, message)
    if isinstance(err, errors.RoutingError):
        busy = _busy(err, message)
        if busy is not None:
            return busy
    if isinstance(err, errors.ServerBusyError):
        return ApiError(503, message, type="server_error", code="upstream_overloaded",
                        headers=_retry_headers(err.retry_after))
    if isinstance(err, errors.RateLimitError):
        return ApiError(429, message, type="rate_limit_error", code="rate_limit_exceeded",
                        headers=_retry_headers(err.retry_after))
    if isinstance(err, errors.BadRequestError):
        return ApiError(400, message, code="upstream_bad_request")
    if isinstance(err, errors.ProviderTimeoutError):
        return ApiError(504, message, type="server_error", code="upstream_timeout")
    if isinstance(err, errors.ProviderError):
        return ApiError(502, message, type="server_error", code="upstream_error")
    if isinstance(err, errors.ModelplexError):
        return ApiError(500, message, type="server_error")
    return ApiError(500, "internal server error", type="server_error")
