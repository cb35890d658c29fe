"""Tools from MCP servers (the Model Context Protocol) in the tool loop.

Servers are configured in ``[mcp.NAME]`` tables (:class:`~modelplex.config.McpServerConfig`).
:class:`McpHub` starts (or connects to) each server once, lists its tools (cached until the
server sends ``notifications/tools/list_changed``) and turns them into
:class:`modelplex.tools.Tool` objects the loop runs like Python functions::

    async with McpHub(config) as hub:
        tools = await hub.tools(["files"])   # files__read_file, ... when names clash
        meta = await chat.get_response_with_meta("...", tools=tools)

A call's arguments are checked against the tool's input schema before they are sent; each
call has a timeout; results are cut to ``max_result_chars``; an ``isError`` result, a server
that crashed or a call that timed out becomes an error the model sees (with the tail of the
server's stderr). Tools annotated ``destructiveHint`` run only when ``confirm(server, tool,
arguments)`` returns true. The ``mcp`` SDK is imported only here (``pip install
'modelplex[mcp]'``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import importlib
import inspect
import json
import os
import re
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from modelplex.errors import ConfigurationError, ModelplexError
from modelplex.tools import Tool

if TYPE_CHECKING:
    from mcp import ClientSession, types as mcp_types

    from modelplex.config import Config, McpServerConfig

__all__ = ["Confirm", "McpError", "McpHub", "McpServer", "McpToolError", "load_sdk"]

#: ``confirm(server, tool, arguments)``: may this destructive call run? (sync or async)
Confirm = Callable[[str, str, dict[str, Any]], "bool | Awaitable[bool]"]

_SAFE = re.compile(r"[^A-Za-z0-9_-]")
_TAIL = 800


class McpError(ModelplexError):
    """An MCP server could not be started, answered wrongly, crashed or timed out."""


class McpToolError(McpError):
    """An MCP tool reported an error (``isError``) or was refused; the model sees it."""


def load_sdk() -> None:
    """Import the ``mcp`` SDK or explain how to install it."""
    try:
        import mcp  # noqa: F401
    except ImportError:
        raise ConfigurationError("MCP needs the mcp SDK: pip install 'modelplex[mcp]'") from None


def _server_config(config: Config, name: str) -> McpServerConfig:
    try:
        return config.mcp[name]
    except KeyError:
        known = ", ".join(sorted(config.mcp)) or "none"
        raise ConfigurationError(f"no MCP server named {name!r} is configured (known: {known});"
                                 f" add an [mcp.{name}] table with `command` or `url` to the "
                                 "config file") from None


def _text_of(result: mcp_types.CallToolResult, limit: int) -> str:
    """What the model reads of a tool's result: its text, structured content and a note per
    image, audio or resource, cut to ``limit`` characters."""
    from mcp import types as t

    parts: list[str] = []
    for block in result.content:
        if isinstance(block, t.TextContent):
            parts.append(block.text)
        elif isinstance(block, t.ImageContent | t.AudioContent):
            kind = "image" if isinstance(block, t.ImageContent) else "audio"
            try:
                size = f"{len(base64.b64decode(block.data, validate=True))} bytes"
            except ValueError:
                size = "invalid base64 data"
            parts.append(f"[{kind}: {block.mimeType}, {size}]")
        elif isinstance(block, t.EmbeddedResource):
            res = block.resource
            text = getattr(res, "text", None)
            parts.append(text if isinstance(text, str) else f"[resource: {res.uri}]")
        else:
            parts.append(f"[resource: {block.uri}]")
    if result.structuredContent is not None and not parts:
        parts.append(json.dumps(result.structuredContent, default=str))
    text = "\n".join(parts)
    if len(text) > limit:
        text = text[:limit] + f"\n[... cut: the result had {len(text)} characters, " \
                              f"the limit is {limit}]"
    return text


class McpServer:
    """One configured MCP server: its session runs in a task of its own (the SDK's context
    managers are entered and left there), so any task may call it and close it."""

    def __init__(self, name: str, config: McpServerConfig) -> None:
        self.name = name
        self.config = config
        self._session: ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._dead = asyncio.Event()
        self._error: BaseException | None = None
        self.broken = False  # the connection closed under a request (the server exited)
        self._tools: list[mcp_types.Tool] | None = None
        self._errlog: Any = None
        self.list_calls = 0  # tools/list round trips (the cache is checked by tests)

    # -- lifecycle ---------------------------------------------------------------------------
    def stderr_tail(self) -> str:
        """The last lines the server wrote to stderr (stdio servers)."""
        if self._errlog is None:
            return ""
        try:
            self._errlog.flush()
            size = self._errlog.seek(0, os.SEEK_END)
            self._errlog.seek(max(0, size - _TAIL))
            return str(self._errlog.read()).strip()
        except (OSError, ValueError):
            return ""

    def _describe(self, what: str) -> str:
        tail = self.stderr_tail()
        return f"MCP server {self.name!r}: {what}" + (f"; its stderr ends with:\n{tail}"
                                                       if tail else "")

    async def start(self) -> None:
        """Start the server and initialise the session (at most ``timeout`` seconds)."""
        if self._task is not None:
            return
        load_sdk()
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(ready), name=f"mcp:{self.name}")
        try:
            await asyncio.wait_for(asyncio.shield(ready), self.config.timeout)
        except TimeoutError:
            error = McpError(self._describe(
                f"no answer to initialize within {self.config.timeout:g} s"))
            await self.aclose()
            raise error from None
        except BaseException:
            await self.aclose()
            raise

    async def _run(self, ready: asyncio.Future[None]) -> None:
        from mcp import ClientSession, types

        async def on_message(message: Any) -> None:
            root = getattr(message, "root", None)
            if isinstance(root, types.ToolListChangedNotification):
                self._tools = None

        try:
            async with contextlib.AsyncExitStack() as stack:
                read, write = await self._transport(stack)
                session = await stack.enter_async_context(ClientSession(
                    read, write, message_handler=on_message,
                    read_timeout_seconds=timedelta(seconds=self.config.timeout)))
                await session.initialize()
                self._session = session
                if not ready.done():
                    ready.set_result(None)
                await self._stop.wait()
        except BaseException as err:  # reported to the caller
            self._error = err
            if not ready.done():
                what = _cause(err)
                ready.set_exception(McpError(self._describe(f"could not start: {what}")))
            if not isinstance(err, Exception):
                raise
        finally:
            self._session = None
            self._dead.set()

    async def _transport(self, stack: contextlib.AsyncExitStack) -> tuple[Any, Any]:
        cfg = self.config
        if cfg.command:
            from mcp import StdioServerParameters
            from mcp.client.stdio import get_default_environment, stdio_client

            if self._errlog is None:  # kept after the server stopped, for its tail
                self._errlog = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115
            env = {**get_default_environment(),
                   **{k: v.get_secret_value() for k, v in cfg.env.items()}}
            params = StdioServerParameters(command=cfg.command, args=list(cfg.args), env=env,
                                           cwd=cfg.cwd)
            read, write = await stack.enter_async_context(stdio_client(params, self._errlog))
            return read, write
        headers = {k: v.get_secret_value() for k, v in cfg.headers.items()}
        for header, variable in cfg.headers_env.items():
            value = os.environ.get(variable)
            if value is None:
                raise ConfigurationError(f"[mcp.{self.name}] headers_env: the variable "
                                         f"{variable!r} for header {header!r} is not set")
            headers[header] = value
        assert cfg.url is not None
        try:
            from mcp.client.streamable_http import streamable_http_client
        except ImportError:  # an mcp SDK before 1.2x
            from mcp.client.streamable_http import streamablehttp_client

            read, write, _ = await stack.enter_async_context(
                streamablehttp_client(cfg.url, headers=headers, timeout=cfg.timeout))
            return read, write
        import httpx
        from mcp.shared._httpx_utils import create_mcp_http_client

        client = await stack.enter_async_context(create_mcp_http_client(
            headers=headers, timeout=httpx.Timeout(cfg.timeout, read=max(300, cfg.timeout))))
        read, write, _ = await stack.enter_async_context(
            streamable_http_client(cfg.url, http_client=client))
        return read, write

    async def aclose(self) -> None:
        """Close the session and stop a stdio server (waits for it to exit)."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), 5)
        except (TimeoutError, Exception):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        if self._errlog is not None:
            self._errlog.close()
            self._errlog = None

    async def __aenter__(self) -> McpServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- requests ----------------------------------------------------------------------------
    async def _request(self, what: str,
                       call: Callable[[ClientSession], Awaitable[Any]]) -> Any:
        await self.start()
        session = self._session
        if session is None or self._dead.is_set() or self.broken:
            raise McpError(self._describe(f"not running ({_cause(self._error)})"))
        timeout = self.config.timeout
        request = asyncio.ensure_future(call(session))
        dead = asyncio.ensure_future(self._dead.wait())
        try:
            done, _ = await asyncio.wait({request, dead}, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            dead.cancel()
        if request in done:
            try:
                return request.result()
            except McpError:
                raise
            except Exception as err:
                if _closed(err):
                    self.broken = True
                    self._error = err
                    raise McpError(self._describe(f"exited during {what}")) from None
                raise McpError(self._describe(f"{what} failed: {_cause(err)}")) from None
        request.cancel()
        with contextlib.suppress(BaseException):
            await request
        if self._dead.is_set():
            raise McpError(self._describe(f"exited during {what}"))
        raise McpError(self._describe(f"{what} got no answer within {timeout:g} s"))

    async def list_tools(self) -> list[mcp_types.Tool]:
        """The server's tools (cached until it says they changed), filtered by ``tools``."""
        if self._tools is None:
            tools: list[mcp_types.Tool] = []
            cursor: str | None = None
            while True:
                page = await self._request("tools/list",
                                           functools.partial(_list_page, cursor=cursor))
                self.list_calls += 1
                tools.extend(page.tools)
                cursor = page.nextCursor
                if not cursor:
                    break
            allowed = set(self.config.tools)
            self._tools = [t for t in tools if not allowed or t.name in allowed]
        return self._tools

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> mcp_types.CallToolResult:
        """Call ``name`` (no schema check: see :meth:`McpHub.tools`)."""
        seconds = timedelta(seconds=self.config.timeout)
        result: mcp_types.CallToolResult = await self._request(
            f"the call of {name!r}",
            lambda s: s.call_tool(name, arguments, read_timeout_seconds=seconds))
        return result


def _list_page(session: ClientSession, cursor: str | None) -> Awaitable[Any]:
    return session.list_tools(cursor=cursor)


def _closed(err: BaseException) -> bool:
    """Whether ``err`` says the connection to the server is gone."""
    import anyio
    from mcp.shared.exceptions import McpError as SdkError

    if isinstance(err, anyio.ClosedResourceError | anyio.BrokenResourceError | anyio.EndOfStream):
        return True
    return isinstance(err, SdkError) and "connection closed" in str(err).lower()


def _cause(err: BaseException | None) -> str:
    """The innermost readable reason of an error (task groups wrap them)."""
    while isinstance(err, BaseExceptionGroup) and err.exceptions:
        err = err.exceptions[0]
    if err is None:
        return "stopped"
    if isinstance(err, McpError):
        return str(err)
    text = str(err) or type(err).__name__
    return f"{type(err).__name__}: {text}" if type(err).__name__ not in text else text


class McpHub:
    """The MCP servers of a conversation: started on first use, reused (started again on
    the next message after one exited), closed together."""

    def __init__(self, config: Config | None = None, *, confirm: Confirm | None = None) -> None:
        self._config = config
        self.confirm = confirm
        self.servers: dict[str, McpServer] = {}
        self._lock = asyncio.Lock()

    @property
    def config(self) -> Config:
        if self._config is None:
            from modelplex.config import get_config

            self._config = get_config()
        return self._config

    async def server(self, name: str) -> McpServer:
        """The running server ``name`` (started on first use)."""
        async with self._lock:
            server = self.servers.get(name)
            if server is not None and server.broken:  # it exited: start it again
                await server.aclose()
                server = None
            if server is None:
                server = McpServer(name, _server_config(self.config, name))
                await server.start()
                self.servers[name] = server
            return server

    async def tools(self, names: Sequence[str]) -> list[Tool]:
        """The tools of servers ``names`` as loop tools; a tool whose name two servers share
        is named ``server__tool`` (both of them)."""
        listed: list[tuple[McpServer, mcp_types.Tool]] = []
        for name in dict.fromkeys(names):
            server = await self.server(name)
            listed.extend((server, tool) for tool in await server.list_tools())
        counts: dict[str, int] = {}
        for _, tool in listed:
            counts[_SAFE.sub("_", tool.name)[:64]] = counts.get(_SAFE.sub("_", tool.name)[:64],
                                                                0) + 1
        result = []
        for server, tool in listed:
            safe = _SAFE.sub("_", tool.name)[:64]
            name = safe if counts[safe] == 1 else f"{_SAFE.sub('_', server.name)}__{safe}"[:64]
            result.append(self._as_tool(server, tool, name))
        return result

    def _as_tool(self, server: McpServer, tool: mcp_types.Tool, name: str) -> Tool:
        jsonschema: Any = importlib.import_module("jsonschema")  # a dependency of mcp
        schema = dict(tool.inputSchema or {"type": "object", "properties": {}})
        try:
            validator: Any = jsonschema.validators.validator_for(schema)(schema)
        except Exception:  # a schema the validator cannot read: the server checks
            validator = None
        annotations = tool.annotations
        destructive = bool(annotations is not None and annotations.destructiveHint
                           and not annotations.readOnlyHint)
        limit = server.config.max_result_chars

        async def run(**arguments: Any) -> str:
            if validator is not None:
                errors = sorted(validator.iter_errors(arguments), key=lambda e: list(e.path))
                if errors:
                    raise McpToolError("invalid arguments: " + "; ".join(
                        f"{'.'.join(map(str, e.path)) or 'arguments'}: {e.message}"
                        for e in errors[:5]))
            if destructive:
                allowed = self.confirm is not None and self.confirm(server.name, tool.name,
                                                                    dict(arguments))
                if inspect.isawaitable(allowed):
                    allowed = await allowed
                if not allowed:
                    raise McpToolError(f"{tool.name!r} is destructive and was not confirmed "
                                       "by the user; do not retry it")
            result = await server.call_tool(tool.name, dict(arguments))
            text = _text_of(result, limit)
            if result.isError:
                raise McpToolError(text or "the tool failed")
            return text

        description = tool.description or tool.title or ""
        return Tool(name=name, description=description, parameters=schema, function=run)

    async def aclose(self) -> None:
        """Close every session and stop every stdio server."""
        servers, self.servers = list(self.servers.values()), {}
        await asyncio.gather(*(s.aclose() for s in servers), return_exceptions=True)

    async def __aenter__(self) -> McpHub:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
