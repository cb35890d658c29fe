"""One MCP server's session: :class:`McpServer` starts (or connects to) a configured server
and sends it requests (tools, prompts, resources) with the config's timeout, turning every
fault into an :class:`McpError` with the tail of the server's stderr.

The session runs in a task of its own (the SDK's context managers are entered and left there),
so any task may call it and close it. The ``mcp`` SDK is imported only inside this package
(``pip install 'modelplex[mcp]'``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import tempfile
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from modelplex.errors import ConfigurationError, ModelplexError

if TYPE_CHECKING:
    from mcp import ClientSession, types as mcp_types

    from modelplex.config import Config, McpServerConfig

__all__ = ["Confirm", "McpError", "McpServer", "McpToolError", "load_sdk", "server_config"]

#: ``confirm(server, tool, arguments)``: may this destructive call run? (sync or async)
Confirm = Callable[[str, str, dict[str, Any]], "bool | Awaitable[bool]"]

_SAFE = re.compile(r"[^A-Za-z0-9_-]")
_TAIL = 800
_MAX_PAGES = 100  # pages of one */list request


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


def server_config(config: Config, name: str) -> McpServerConfig:
    try:
        return config.mcp[name]
    except KeyError:
        known = ", ".join(sorted(config.mcp)) or "none"
        raise ConfigurationError(f"no MCP server named {name!r} is configured (known: {known});"
                                 f" add an [mcp.{name}] table with `command` or `url` to the "
                                 "config file") from None


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
        self._ended: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self.broken = False  # the connection closed under a request (the server exited)
        self._tools: list[mcp_types.Tool] | None = None
        self._changes = 0  # tools/list_changed notifications seen
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
        self._ended = asyncio.get_running_loop().create_future()  # done when _run ends
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
                self._changes += 1

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
            if self._ended is not None and not self._ended.done():
                self._ended.set_result(None)

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
        if cfg.uses_sse:  # the older HTTP+SSE transport
            from mcp.client.sse import sse_client

            read, write = await stack.enter_async_context(sse_client(
                cfg.url, headers=headers, timeout=cfg.timeout,
                sse_read_timeout=max(300, cfg.timeout)))
            return read, write
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
        assert self._ended is not None
        try:
            done, _ = await asyncio.wait({request, self._ended}, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the caller went away: so does its request
            request.cancel()
            raise
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
            seen = self._changes
            tools: list[mcp_types.Tool] = await self._listed("tools", "tools")
            self.list_calls += 1
            allowed = set(self.config.tools)
            listed = [t for t in tools if not allowed or t.name in allowed]
            if self._changes != seen:  # changed while listing: this answer may be stale
                return listed
            self._tools = listed
        return self._tools

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> mcp_types.CallToolResult:
        """Call ``name`` (no schema check: see :meth:`McpHub.tools`).

        Sent as a plain ``tools/call`` request: the SDK's ``call_tool`` also validates the
        structured result against the tool's output schema, compiling the schema on every
        call (half the client's CPU time of a call); the model reads the result as text.
        """
        from mcp import types

        seconds = timedelta(seconds=self.config.timeout)
        request = types.ClientRequest(types.CallToolRequest(
            method="tools/call", params=types.CallToolRequestParams(name=name,
                                                                    arguments=arguments)))
        result: mcp_types.CallToolResult = await self._request(
            f"the call of {name!r}",
            lambda s: s.send_request(request, types.CallToolResult,
                                     request_read_timeout_seconds=seconds))
        return result


    async def _listed(self, what: str, field: str) -> list[Any]:
        """Every page of a ``*/list`` request (``tools``, ``prompts``, ``resources``)."""
        found: list[Any] = []
        cursor: str | None = None
        for _ in range(_MAX_PAGES):
            page = await self._request(f"{what}/list",
                                       functools.partial(_list_page, what, cursor=cursor))
            found.extend(getattr(page, field))
            cursor = page.nextCursor
            if not cursor:
                break
        return found

    async def list_prompts(self) -> list[mcp_types.Prompt]:
        """The server's prompts (each with its declared arguments)."""
        prompts: list[mcp_types.Prompt] = await self._listed("prompts", "prompts")
        return prompts

    async def get_prompt(self, name: str, arguments: dict[str, str]
                         ) -> mcp_types.GetPromptResult:
        """Prompt ``name`` rendered by the server with ``arguments``."""
        result: mcp_types.GetPromptResult = await self._request(
            f"prompts/get of {name!r}", lambda s: s.get_prompt(name, arguments))
        return result

    async def list_resources(self) -> list[mcp_types.Resource]:
        """The server's resources (uri, name, MIME type, size when known)."""
        resources: list[mcp_types.Resource] = await self._listed("resources", "resources")
        return resources

    async def read_resource(self, uri: str) -> mcp_types.ReadResourceResult:
        """The contents of resource ``uri``."""
        from pydantic import AnyUrl

        result: mcp_types.ReadResourceResult = await self._request(
            f"resources/read of {uri!r}", lambda s: s.read_resource(AnyUrl(uri)))
        return result


def _list_page(what: str, session: ClientSession, cursor: str | None) -> Awaitable[Any]:
    method: Any = {"tools": session.list_tools, "prompts": session.list_prompts,
                   "resources": session.list_resources}[what]
    page: Awaitable[Any] = method(cursor=cursor)
    return page


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


