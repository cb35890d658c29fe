"""The MCP specification's error rules for ``modelplex mcp serve``, which the SDK's FastMCP
server leaves out (spec 2025-11-25, the version it negotiates):

* an unknown tool is a JSON-RPC error -32602 (FastMCP answered a tool result with
  ``isError``);
* a tool's arguments are checked against its input schema before it runs, and a mismatch
  is a tool result with ``isError`` naming the field (FastMCP's was pydantic's dump with a
  link);
* a cursor is an error -32602: this server lists everything in one page and never gives one
  (FastMCP ignored it and listed again);
* an unknown prompt is -32602 and an unknown resource -32002 (FastMCP answered with the
  invalid code 0 and logged a traceback);
* ``initialize`` names modelplex's version in ``serverInfo`` (FastMCP gave the SDK's).

:func:`strict_protocol` wraps the request handlers of a built server with these checks.

Also :func:`quiet_disconnects`: a client that leaves mid-request (or a stop cutting a request
short) is normal, yet the SDK's streamable-HTTP transport logs it as an error with a
traceback (``Error in standalone SSE writer``: anyio's ``ClosedResourceError``). Its loggers
get :class:`QuietDisconnects`, which turns such a record into one line at INFO (shown only
when INFO is on) and keeps every other error as it is.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from mcp.server.fastmcp import FastMCP

__all__ = ["INVALID_PARAMS", "RESOURCE_NOT_FOUND", "QuietDisconnects", "quiet_disconnects",
           "strict_protocol"]

#: the loggers of the SDK and of uvicorn that report a client's leaving as an error
SERVING_LOGGERS = ("mcp.server.streamable_http", "mcp.server.streamable_http_manager",
                   "mcp.server.lowlevel.server", "uvicorn.error")


def _left(exc: BaseException) -> bool:
    """Whether ``exc`` (or every exception of its group) is what a stream raises once the
    other end went away."""
    import anyio

    if isinstance(exc, BaseExceptionGroup):
        return all(_left(inner) for inner in exc.exceptions)
    return isinstance(exc, anyio.ClosedResourceError | anyio.BrokenResourceError
                      | anyio.EndOfStream)


class QuietDisconnects(logging.Filter):
    """A logger filter: a record carrying a client-gone exception becomes one INFO line
    without its traceback (dropped unless INFO is enabled); other records pass unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or not _left(exc):
            return True
        record.msg = f"{record.getMessage()}: the client went away ({type(exc).__name__})"
        record.args = ()
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.INFO, "INFO"
        return logging.getLogger(record.name).isEnabledFor(logging.INFO)


def quiet_disconnects() -> None:
    """Put :class:`QuietDisconnects` on the serving loggers (once)."""
    for name in SERVING_LOGGERS:
        target = logging.getLogger(name)
        if not any(isinstance(f, QuietDisconnects) for f in target.filters):
            target.addFilter(QuietDisconnects())

INVALID_PARAMS = -32602
RESOURCE_NOT_FOUND = -32002

Handler = Callable[[Any], Awaitable[Any]]


def _fail(code: int, message: str, data: Any = None) -> NoReturn:
    from mcp import types
    from mcp.shared.exceptions import McpError

    raise McpError(types.ErrorData(code=code, message=message, data=data))


def strict_protocol(server: FastMCP) -> None:
    """Put the checks of this module in front of ``server``'s request handlers (call it once
    its tools, prompts and resources are registered)."""
    from mcp import types

    jsonschema: Any = importlib.import_module("jsonschema")  # a dependency of mcp

    from modelplex import __version__

    server._mcp_server.version = __version__
    handlers: dict[type, Handler] = server._mcp_server.request_handlers  # FastMCP's own
    validators: dict[str, Any] = {}

    def one_page(kind: type) -> None:
        inner = handlers[kind]

        async def handler(req: Any) -> Any:
            # the SDK asks its own tools/list handler with no request (req None)
            cursor = getattr(getattr(req, "params", None), "cursor", None)
            if cursor is not None:
                _fail(INVALID_PARAMS, f"invalid cursor {cursor!r}: this server lists "
                                      "everything in one page and gives no nextCursor; list "
                                      "without a cursor")
            return await inner(req)

        handlers[kind] = handler

    for kind in (types.ListToolsRequest, types.ListPromptsRequest, types.ListResourcesRequest,
                 types.ListResourceTemplatesRequest):
        if kind in handlers:
            one_page(kind)

    call = handlers[types.CallToolRequest]

    async def call_tool(req: types.CallToolRequest) -> Any:
        name = req.params.name
        tools = {t.name: t for t in await server.list_tools()}
        tool = tools.get(name)
        if tool is None:
            _fail(INVALID_PARAMS, f"Unknown tool: {name!r}; the tools are "
                                  f"{', '.join(sorted(tools))} (tools/list describes them)")
        if name not in validators:
            validators[name] = jsonschema.validators.validator_for(tool.inputSchema)(
                tool.inputSchema)
        try:
            validators[name].validate(req.params.arguments or {})
        except jsonschema.ValidationError as err:
            where = "/".join(str(part) for part in err.absolute_path) or "arguments"
            text = f"invalid arguments for tool {name!r}: {where}: {err.message} " \
                   "(tools/list gives the tool's input schema)"
            return types.ServerResult(types.CallToolResult(
                content=[types.TextContent(type="text", text=text)], isError=True))
        return await call(req)

    handlers[types.CallToolRequest] = call_tool

    if types.GetPromptRequest in handlers:
        get_prompt = handlers[types.GetPromptRequest]

        async def prompt(req: types.GetPromptRequest) -> Any:
            names = sorted(p.name for p in await server.list_prompts())
            if req.params.name not in names:
                _fail(INVALID_PARAMS, f"Unknown prompt: {req.params.name!r}; the prompts are "
                                      f"{', '.join(names) or 'none'} (prompts/list)")
            return await get_prompt(req)

        handlers[types.GetPromptRequest] = prompt

    if types.ReadResourceRequest in handlers:
        read = handlers[types.ReadResourceRequest]

        async def resource(req: types.ReadResourceRequest) -> Any:
            uri = str(req.params.uri)
            if not await server.list_resource_templates() \
                    and uri not in {str(r.uri) for r in await server.list_resources()}:
                _fail(RESOURCE_NOT_FOUND, f"Resource not found: {uri} (resources/list lists "
                                          "the resources)", {"uri": uri})
            return await read(req)

        handlers[types.ReadResourceRequest] = resource
