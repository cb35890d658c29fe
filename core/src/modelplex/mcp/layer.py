"""The request path's ``mcp`` layer: a named model's MCP tools, run wherever it is used.

A named model with ``mcp = ["files", { server = "search", tools = ["web_search"] }]`` gets
this layer at the top of its stack (``modelplex.pipeline.PATH``), so every caller (a
``ChatManager`` turn, each API of ``modelplex serve``: ``/v1/chat/completions``, ``/api/chat``,
``/ws``, ...) sees a model that answers after running its MCP tools::

    caller -> mcp -> recording -> telemetry -> cache -> router -> provider

For each request the layer offers the servers' tools beside the caller's own tools, and runs
the rounds of the tool loop below itself: each round is an ordinary request through the
layers under it (recorded, traced, cached), the calls of one answer run concurrently, errors go
back to the model as results, at most :data:`MAX_STEPS` rounds of calls, then one more request
without the MCP tools. A stream passes the text of every round through as it comes (rounds
joined by a blank line) and ends with the last round's finish reason and the usage of all of
them; the whole answer (``complete_request``) is the same text.

An answer that calls one of the caller's own tools goes back to the caller with just those
calls (the MCP calls of that answer are not run: the model can ask again). A request with
``tool_choice="none"`` passes through unchanged. A tool the caller names too is the caller's.

The servers are started on first use, once per process and event loop: every layer (every
named model, every request) with the same ``[mcp]`` tables shares one
:class:`~modelplex.mcp.hub.McpHub`; the last layer released closes it (no process is left). A
destructive tool runs only when the model's ``mcp`` entry names it in its ``tools``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncGenerator, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from modelplex.chunks import ChatResponse, StreamChunk, ToolCall, Usage
from modelplex.errors import ConfigurationError
from modelplex.provider import ChatRequest, Provider
from modelplex.tools import Tool, ToolBox
from modelplex.types import ChatMessage, MessageRole
from modelplex.wrapping import LayerContext, WrappingProvider

if TYPE_CHECKING:
    from modelplex.config import Config, McpUse
    from modelplex.mcp.hub import McpHub

__all__ = ["MAX_STEPS", "McpToolLayer", "mcp_layer"]

#: rounds of MCP calls per request before the model is asked to answer without them
MAX_STEPS = 5

_hubs: dict[tuple[int, str], list[Any]] = {}  # (loop, servers' config) -> [hub, holders]


def mcp_layer(inner: Provider, ctx: LayerContext) -> Provider | None:
    """The layer for a named model with ``mcp`` servers (``None`` for any other stack)."""
    config = ctx.config
    if not ctx.named or config is None or ctx.spec is None:
        return None
    model = config.models.get(ctx.spec)
    if model is None or not model.mcp:
        return None
    if not inner.capabilities.tools:
        models = ", ".join(repr(d.model) for d in model.deployments) or repr(inner.name)
        raise ConfigurationError(f"models.{ctx.spec}.mcp: the model's deployment {models} "
                                 "cannot call tools (its provider's Capabilities.tools is "
                                 "false); remove `mcp` or use a model whose provider can")
    return McpToolLayer(inner, config, model.mcp)


def _key(config: Config) -> str:
    """The identity of the config's ``[mcp]`` tables (secrets included, hashed)."""
    tables = config.mcp
    text = repr(sorted((name, table.model_dump_json()) for name, table in tables.items()))
    # SecretStr values dump masked; the env/header values are part of the identity too
    secrets = repr(sorted((name, sorted((k, v.get_secret_value()) for k, v in
                                        [*table.env.items(), *table.headers.items()]))
                          for name, table in tables.items()))
    return hashlib.sha256((text + secrets).encode()).hexdigest()


def _usage(total: Usage | None, usage: Usage | None) -> Usage | None:
    if usage is None:
        return total
    if total is None:
        return Usage(usage.prompt_tokens, usage.completion_tokens, usage.estimated,
                     cached=usage.cached)
    total.prompt_tokens += usage.prompt_tokens
    total.completion_tokens += usage.completion_tokens
    total.estimated = total.estimated or usage.estimated
    total.cached = total.cached and usage.cached
    return total


class McpToolLayer(WrappingProvider):
    """Runs the MCP tools of a named model (see the module docstring)."""

    def __init__(self, inner: Provider, config: Config, uses: Sequence[McpUse]) -> None:
        super().__init__(inner)
        self._config = config
        self._uses = tuple(uses)
        self._named = {use.server: set(use.tools) for use in uses}
        self._key: tuple[int, str] | None = None
        self._hub: McpHub | None = None
        self._lock = asyncio.Lock()

    async def _confirm(self, server: str, tool: str, arguments: dict[str, Any]) -> bool:
        return tool in self._named.get(server, ())

    async def _acquire(self) -> McpHub:
        async with self._lock:
            if self._hub is None:
                from modelplex.mcp.hub import McpHub

                key = (id(asyncio.get_running_loop()), _key(self._config))
                entry = _hubs.get(key)
                if entry is None:
                    entry = _hubs[key] = [McpHub(self._config), 0]
                entry[1] += 1
                self._key, self._hub = key, entry[0]
            return self._hub

    async def close_layer(self) -> None:
        """Give the servers back (closed when no other layer holds them)."""
        key, self._key, self._hub = self._key, None, None
        entry = _hubs.get(key) if key is not None else None
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del _hubs[key]  # type: ignore[arg-type]
            await entry[0].aclose()

    async def _tools(self, request: ChatRequest) -> dict[str, Tool]:
        """The MCP tools to offer beside the request's own (a name the caller uses is
        the caller's)."""
        if request.tool_choice == "none":
            return {}
        hub = await self._acquire()
        allow = {server: tools for server, tools in self._named.items() if tools}
        theirs = {str((t.get("function") or t).get("name")) for t in request.tools or ()}
        listed = await hub.tools([use.server for use in self._uses], allow,
                                 confirm=self._confirm)
        return {t.name: t for t in listed if t.name not in theirs}

    def _round(self, request: ChatRequest, messages: list[ChatMessage],
               tools: dict[str, Tool], step: int) -> ChatRequest:
        offered = [*(request.tools or ()), *(t.spec() for t in tools.values())]
        return attrs.evolve(request, messages=list(messages), tools=offered or None,
                            tool_choice=request.tool_choice if step == 0 else None)

    async def _run(self, calls: list[ToolCall], tools: dict[str, Tool], step: int,
                   messages: list[ChatMessage], content: str) -> None:
        """Run one answer's calls and add it and their results to ``messages``."""
        calls = [c if c.id else ToolCall(c.name, c.arguments, f"call_mcp_{step}_{i}")
                 for i, c in enumerate(calls)]
        messages.append(ChatMessage(role=MessageRole.ASSISTANT, content=content,
                                    tool_calls=tuple(c.to_dict() for c in calls)))
        box = ToolBox(tools=tools)
        results = await asyncio.gather(*(box.run_call(c) for c in calls))
        vision = self.capabilities.vision
        messages.extend(r.message(vision) for r in results)

    # -- requests ----------------------------------------------------------------------------
    async def complete_request(self, request: ChatRequest) -> ChatResponse:
        """The answer after the model's MCP calls were run (text of every round)."""
        tools = await self._tools(request)
        if not tools:
            return await self.inner.complete_request(request)
        messages = list(request.messages)
        texts: list[str] = []
        usage: Usage | None = None
        for step in range(MAX_STEPS + 1):
            offer = tools if step < MAX_STEPS else {}
            response = await self.inner.complete_request(
                self._round(request, messages, offer, step))
            usage = _usage(usage, response.usage)
            mine = [c for c in response.tool_calls if c.name in offer]
            if not mine or len(mine) < len(response.tool_calls):
                response.tool_calls = [c for c in response.tool_calls if c.name not in offer]
                if not response.tool_calls and response.finish_reason == "tool_calls":
                    response.finish_reason = "stop"
                response.content = "\n\n".join(t for t in [*texts, response.content] if t)
                response.usage = usage or response.usage
                return response
            if response.content:
                texts.append(response.content)
            await self._run(mine, tools, step, messages, response.content)
        raise AssertionError("unreachable: the last round offers no MCP tool")

    def stream_request(self, request: ChatRequest) -> AsyncGenerator[StreamChunk, None]:
        """The rounds' chunks as they come; the MCP calls are run, not passed on."""
        return self._stream_rounds(request)

    async def _stream_rounds(self, request: ChatRequest) -> AsyncGenerator[StreamChunk, None]:
        tools = await self._tools(request)
        if not tools:
            stream = self.inner.stream_request(request)
            async with contextlib.aclosing(stream):
                async for chunk in stream:
                    yield chunk
            return
        messages = list(request.messages)
        usage: Usage | None = None
        wrote = False
        for step in range(MAX_STEPS + 1):
            offer = tools if step < MAX_STEPS else {}
            mine: list[ToolCall] = []
            theirs = False
            last: StreamChunk | None = None
            parts: list[str] = []
            stream = self.inner.stream_request(self._round(request, messages, offer, step))
            async with contextlib.aclosing(stream):
                async for chunk in stream:
                    calls = chunk.tool_calls or []
                    mine.extend(c for c in calls if c.name in offer)
                    passed = [c for c in calls if c.name not in offer] or None
                    theirs = theirs or passed is not None
                    if chunk.finish_reason is not None or chunk.usage is not None:
                        last = chunk
                    if chunk.content and wrote and not parts:
                        chunk.content = "\n\n" + chunk.content  # a new round's text
                    if chunk.content:
                        parts.append(chunk.content)
                    if chunk.content or chunk.reasoning or passed:
                        yield StreamChunk(content=chunk.content, reasoning=chunk.reasoning,
                                          tool_calls=passed, model=chunk.model,
                                          route=chunk.route)
            usage = _usage(usage, last.usage if last is not None else None)
            wrote = wrote or bool(parts)
            if not mine or theirs:
                reason = last.finish_reason if last is not None else None
                if not theirs and reason == "tool_calls":
                    reason = "stop"
                yield StreamChunk(finish_reason=reason or "stop",
                                  usage=usage or Usage(estimated=True),
                                  model=last.model if last is not None else None)
                return
            await self._run(mine, tools, step, messages, "".join(parts).removeprefix("\n\n"))

