"""The MCP servers of a conversation (:class:`McpHub`): their tools as loop tools, their
prompts rendered, their resources read as a message's context.

Servers are started on first use and reused (started again after one exited); a tool's
arguments are checked against its input schema before they are sent, a destructive tool runs
only when ``confirm`` says so, and results are cut to the server's ``max_result_chars``.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import inspect
import json
import re
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from modelplex.errors import ConfigurationError
from modelplex.mcp.session import Confirm, McpError, McpServer, McpToolError, server_config
from modelplex.tools import Tool, ToolOutput

if TYPE_CHECKING:
    from mcp import types as mcp_types

    from modelplex.config import Config

__all__ = ["McpHub", "cut", "tool_output"]

_SAFE = re.compile(r"[^A-Za-z0-9_-]")


def cut(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with a note saying so."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... cut: the result had {len(text)} characters, the limit is " \
                          f"{limit}]"


def _decoded(data: str) -> bytes | None:
    try:
        return base64.b64decode(data, validate=True)
    except ValueError:
        return None


def tool_output(result: mcp_types.CallToolResult, limit: int) -> str | ToolOutput:
    """What the model gets of a tool's result: its text, structured content and a note per
    image, audio or resource, cut to ``limit`` characters; images ride along as bytes (a
    :class:`~modelplex.tools.ToolOutput`) for providers that take images."""
    from mcp import types as t

    parts: list[str] = []
    images: list[bytes] = []
    for block in result.content:
        if isinstance(block, t.TextContent):
            parts.append(block.text)
        elif isinstance(block, t.ImageContent | t.AudioContent):
            kind = "image" if isinstance(block, t.ImageContent) else "audio"
            raw = _decoded(block.data)
            size = "invalid base64 data" if raw is None else f"{len(raw)} bytes"
            parts.append(f"[{kind}: {block.mimeType}, {size}]")
            if raw is not None and kind == "image":
                images.append(raw)
        elif isinstance(block, t.EmbeddedResource):
            res = block.resource
            text = getattr(res, "text", None)
            parts.append(text if isinstance(text, str) else f"[resource: {res.uri}]")
        else:
            parts.append(f"[resource: {block.uri}]")
    if result.structuredContent is not None and not parts:
        parts.append(json.dumps(result.structuredContent, default=str))
    text = cut("\n".join(parts), limit)
    return ToolOutput(text, tuple(images)) if images else text


def _parse_resource(spec: str) -> tuple[str, str]:
    server, sep, uri = spec.partition(":")
    if not sep or not server or "://" not in uri:
        raise ConfigurationError(f"resource {spec!r}: write it as 'SERVER:URI', e.g. "
                                 "'files:file:///notes/todo.txt' (`modelplex mcp resources "
                                 "SERVER` lists them)")
    return server, uri


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
                server = McpServer(name, server_config(self.config, name))
                await server.start()
                self.servers[name] = server
            return server

    # -- tools -------------------------------------------------------------------------------
    async def tools(self, names: Sequence[str],
                    allow: Mapping[str, Collection[str]] | None = None, *,
                    confirm: Confirm | None = None) -> list[Tool]:
        """The tools of servers ``names`` as loop tools; a tool whose name two servers share
        is named ``server__tool`` (both of them). ``allow`` narrows a server's tools to those
        named (beside its own ``tools`` list); ``confirm`` replaces the hub's for them."""
        listed: list[tuple[McpServer, mcp_types.Tool]] = []
        for name in dict.fromkeys(names):
            server = await self.server(name)
            only = (allow or {}).get(name)
            listed.extend((server, tool) for tool in await server.list_tools()
                          if not only or tool.name in only)
        counts: dict[str, int] = {}
        for _, tool in listed:
            safe = _SAFE.sub("_", tool.name)[:64]
            counts[safe] = counts.get(safe, 0) + 1
        result = []
        for server, tool in listed:
            safe = _SAFE.sub("_", tool.name)[:64]
            name = safe if counts[safe] == 1 else f"{_SAFE.sub('_', server.name)}__{safe}"[:64]
            result.append(self._as_tool(server, tool, name, confirm))
        return result

    def _as_tool(self, server: McpServer, tool: mcp_types.Tool, name: str,
                 confirm: Confirm | None) -> Tool:
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

        async def run(**arguments: Any) -> str | ToolOutput:
            if validator is not None:
                errors = sorted(validator.iter_errors(arguments), key=lambda e: list(e.path))
                if errors:
                    raise McpToolError("invalid arguments: " + "; ".join(
                        f"{'.'.join(map(str, e.path)) or 'arguments'}: {e.message}"
                        for e in errors[:5]))
            if destructive:
                ask = confirm or self.confirm
                allowed = ask is not None and ask(server.name, tool.name, dict(arguments))
                if inspect.isawaitable(allowed):
                    allowed = await allowed
                if not allowed:
                    raise McpToolError(f"{tool.name!r} is destructive and was not confirmed "
                                       "by the user; do not retry it")
            result = await server.call_tool(tool.name, dict(arguments))
            output = tool_output(result, limit)
            if result.isError:
                text = output.text if isinstance(output, ToolOutput) else output
                raise McpToolError(text or "the tool failed")
            return output

        description = tool.description or tool.title or ""
        return Tool(name=name, description=description, parameters=schema, function=run)

    # -- prompts -----------------------------------------------------------------------------
    async def prompt(self, server_name: str, name: str, fields: Mapping[str, Any]) -> str:
        """MCP prompt ``name`` of ``server_name`` rendered with ``fields`` (checked against
        the prompt's declared arguments first), as one text."""
        from mcp import types as t

        server = await self.server(server_name)
        declared = {p.name: p for p in await server.list_prompts()}
        if name not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise ConfigurationError(f"MCP server {server_name!r} has no prompt {name!r} "
                                     f"(its prompts: {known})")
        arguments = {a.name: a for a in declared[name].arguments or ()}
        shown = ", ".join(f"{a}{'' if arguments[a].required else '?'}" for a in arguments) \
            or "none"
        missing = [a for a, arg in arguments.items() if arg.required and a not in fields]
        unknown = [f for f in fields if f not in arguments]
        if missing or unknown:
            problems = []
            if missing:
                problems.append(f"missing required argument(s) {', '.join(missing)}")
            if unknown:
                problems.append(f"unknown argument(s) {', '.join(unknown)}")
            what = "; ".join(problems)
            raise ConfigurationError(f"MCP prompt 'mcp:{server_name}/{name}': {what} (its "
                                     f"arguments: {shown}; give them as -p NAME VALUE or "
                                     "keywords)")
        values = {k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()}
        result = await server.get_prompt(name, values)
        texts = []
        for message in result.messages:
            content = message.content
            if isinstance(content, t.TextContent):
                text = content.text
            elif isinstance(content, t.EmbeddedResource):
                text = str(getattr(content.resource, "text", f"[resource: "
                                                             f"{content.resource.uri}]"))
            else:
                text = f"[{content.type}]"
            texts.append(text if message.role == "user" else f"(assistant) {text}")
        return "\n\n".join(texts)

    # -- resources ---------------------------------------------------------------------------
    async def resource(self, spec: str, *, vision: bool) -> tuple[str, list[bytes]]:
        """Resource ``SERVER:URI`` as context: its text (cut to the server's
        ``max_result_chars``) and, for a provider that takes images, its images."""
        server_name, uri = _parse_resource(spec)
        server = await self.server(server_name)
        result = await server.read_resource(uri)
        texts: list[str] = []
        images: list[bytes] = []
        for item in result.contents:
            mime = item.mimeType or ""
            text = getattr(item, "text", None)
            if isinstance(text, str):
                texts.append(text)
                continue
            raw = _decoded(str(getattr(item, "blob", "")))
            if raw is not None and mime.startswith("image/") and vision:
                images.append(raw)
                continue
            why = "this model does not take images" if mime.startswith("image/") \
                else "only text resources (and images, for models that take them) can be " \
                     "attached"
            raise McpError(f"resource {spec!r} is binary ({mime or 'no MIME type'}): {why}")
        body = cut("\n".join(texts), server.config.max_result_chars)
        return f'<resource uri="{uri}" server="{server_name}">\n{body}\n</resource>', images

    async def inputs(self, manager: Any, text: str, images: Sequence[str | bytes] | None,
                     tools: Sequence[Any] | None, mcp: Sequence[str] | None,
                     resources: Sequence[str] | None
                     ) -> tuple[str, Sequence[str | bytes] | None, Sequence[Any] | None]:
        """A :class:`~modelplex.manager.ChatManager` message with its MCP parts: the text
        after the resources' contents, their images, the tools of the manager's servers and of
        ``mcp``."""
        names = (*manager.mcp_servers, *(mcp or ()))
        if names:
            tools = [*(tools or ()), *await self.tools(names)]
        if resources:
            provider, _, _ = await manager.request_context()
            vision = provider.capabilities.vision
            context: list[str] = []
            attached: list[str | bytes] = list(images or ())
            for spec in resources:
                block, found = await self.resource(spec, vision=vision)
                context.append(block)
                attached.extend(found)
            text = "\n\n".join([*context, text])
            images = attached or None
        return text, images, tools

    async def aclose(self) -> None:
        """Close every session and stop every stdio server."""
        if not self.servers:  # none started (a conversation without MCP): nothing to do
            return
        servers, self.servers = list(self.servers.values()), {}
        await asyncio.gather(*(s.aclose() for s in servers), return_exceptions=True)

    async def __aenter__(self) -> McpHub:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
