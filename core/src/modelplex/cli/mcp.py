"""``modelplex mcp list|tools|serve``: the configured MCP servers, their tools, and modelplex
as an MCP server (stdio) offering ``chat``, ``list_models`` and ``structured``.

Heavy modules (the ``mcp`` SDK) are imported inside the commands.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import TYPE_CHECKING, Any

import click

from modelplex.cli._common import print_table, run

if TYPE_CHECKING:
    from mcp.server.fastmcp import FastMCP

__all__ = ["ask_confirmation", "build_server", "mcp_group"]


@click.group("mcp")
def mcp_group() -> None:
    """MCP servers: the configured ones and their tools, and modelplex as one."""


@mcp_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def mcp_list(as_json: bool) -> None:
    """The MCP servers of the config file ([mcp.NAME] tables; secrets are not shown)."""
    from modelplex.config import get_config

    servers = get_config().mcp
    if as_json:
        click.echo(json.dumps({name: {"transport": "stdio" if s.command else "http",
                                      "command": s.command, "args": list(s.args),
                                      "url": s.url, "tools": list(s.tools)}
                               for name, s in servers.items()}, indent=2))
        return
    print_table(["NAME", "TRANSPORT", "TARGET"],
                [[name, "stdio" if s.command else "http",
                  " ".join([s.command, *s.args]) if s.command else str(s.url)]
                 for name, s in servers.items()])


@mcp_group.command("tools")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def mcp_tools(name: str, as_json: bool) -> None:
    """The tools MCP server NAME offers, each with its input schema (the server is started
    and stopped)."""
    from modelplex.mcp import McpHub

    async def listing() -> list[dict[str, Any]]:
        async with McpHub() as hub:
            server = await hub.server(name)
            return [{"name": t.name, "description": t.description or "",
                     "destructive": bool(t.annotations and t.annotations.destructiveHint),
                     "input_schema": t.inputSchema} for t in await server.list_tools()]

    tools = run(listing())
    if as_json:
        click.echo(json.dumps(tools, indent=2))
        return
    for tool in tools:
        flag = " (destructive)" if tool["destructive"] else ""
        click.echo(f"{tool['name']}{flag}: {tool['description'].strip()}")
        click.echo("  " + json.dumps(tool["input_schema"], sort_keys=True))


async def ask_confirmation(server: str, tool: str, arguments: dict[str, Any]) -> bool:
    """The CLI's ``confirm=``: a y/n question on the terminal (no terminal: refused)."""
    if not sys.stdin.isatty():
        return False
    question = f"Let MCP server {server!r} run the destructive tool {tool!r} " \
               f"with {json.dumps(arguments)}?"
    return bool(await asyncio.to_thread(click.confirm, question, default=False, err=True))


def build_server(name: str = "modelplex") -> FastMCP:
    """modelplex as an MCP server: ``chat``, ``list_models`` and ``structured`` tools."""
    from mcp.server.fastmcp import FastMCP

    from modelplex.manager import ChatManager

    server = FastMCP(name, log_level="WARNING")

    @server.tool()
    async def chat(prompt: str, model: str | None = None, system: str | None = None,
                   options: dict[str, Any] | None = None) -> str:
        """Ask a model (``provider:model`` or a named model of the config; the default when
        omitted) and return its answer."""
        async with ChatManager(model, system_prompt=system, options=options) as manager:
            meta = await manager.get_response_with_meta(prompt)
        return meta.content

    @server.tool()
    async def structured(prompt: str, schema: dict[str, Any], model: str | None = None,
                         system: str | None = None) -> dict[str, Any]:
        """Ask a model for a JSON value matching ``schema`` (a JSON schema); returns
        ``{"value": ...}``."""
        async with ChatManager(model, system_prompt=system) as manager:
            result = await manager.get_structured(prompt, schema)
        return {"value": result.value}

    @server.tool()
    async def list_models(query: str | None = None) -> dict[str, Any]:
        """The models modelplex reaches (installed providers and named models), as
        ``{"models": [{"model", "context_length", "capabilities"}], "errors": {...}}``."""
        from modelplex.cli.config import configured_providers
        from modelplex.registry import ModelRegistry

        async with configured_providers() as (get_provider, named), ModelRegistry(
                get_provider=get_provider, named_models=named) as registry:
            found = await registry.search(query)
            errors = await registry.errors()
        return {"models": [{"model": f"{m.provider}:{m.name}", "context_length": m.context_length,
                            "capabilities": m.capabilities} for m in found], "errors": errors}

    return server


@mcp_group.command("serve")
def mcp_serve() -> None:
    """Serve modelplex over MCP on stdio: tools chat, list_models and structured."""
    from modelplex.mcp import load_sdk

    load_sdk()
    build_server().run("stdio")
