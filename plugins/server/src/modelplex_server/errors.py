"""Errors as HTTP answers, in OpenAI's shape (used by every endpoint of the server).

Every error body is ``{"error": {"message", "type", "param", "code"}}``, so the official
``openai`` client raises the matching exception class (``BadRequestError`` for 400,
``AuthenticationError`` for 401, ``NotFoundError`` for 404, ``RateLimitError`` for 429,
``InternalServerError`` for 5xx).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from modelplex import errors
from modelplex.http import dumps

__all__ = ["ApiError", "error_body", "error_response", "from_exception"]


class ApiError(Exception):
    """An error the server answers with: HTTP status, OpenAI type and code, optional param."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}


def error_body(err: ApiError) -> dict[str, Any]:
    """The JSON body of an error."""
    return {"error": {"message": err.message, "type": err.type, "param": err.param,
                      "code": err.code}}


def error_response(err: ApiError) -> web.Response:
    """The HTTP response of an error."""
    return web.Response(body=dumps(error_body(err)), status=err.status,
                        content_type="application/json", headers=err.headers)


def _retry_headers(seconds: float | None) -> dict[str, str]:
    return {"Retry-After": str(max(1, round(seconds)))} if seconds else {}


def from_exception(err: BaseException) -> ApiError:
    """The :class:`ApiError` for an exception raised while serving a request."""
    if isinstance(err, ApiError):
        return err
    message = errors.redact(str(err))
    if isinstance(err, errors.UnknownProviderError | errors.ModelNotFoundError):
        return ApiError(404, message, code="model_not_found", param="model")
    if isinstance(err, errors.ConfigurationError | errors.UnsupportedOperationError):
        return ApiError(400, message)
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
