"""``modelplex mcp list|tools|prompts|resources|serve``: the configured MCP servers, what they
offer, and modelplex as an MCP server (stdio, or streamable HTTP on 127.0.0.1 with an optional
bearer key) offering ``chat``, ``list_models`` and ``structured``.

Heavy modules (the ``mcp`` SDK) are imported inside the commands.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import socket
import sys
from typing import TYPE_CHECKING, Any

import click

from modelplex.cli._common import print_table, run

if TYPE_CHECKING:
    from mcp.server.fastmcp import FastMCP

__all__ = ["BearerKey", "BodyGuard", "ask_confirmation", "build_server", "mcp_group",
           "serve_http"]


@click.group("mcp")
def mcp_group() -> None:
    """MCP servers: the configured ones and their tools, and modelplex as one."""


@mcp_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def mcp_list(as_json: bool) -> None:
    """The MCP servers of the config file ([mcp.NAME] tables; secrets are not shown)."""
    from modelplex.config import get_config
    from modelplex.masking import mask

    servers = get_config().mcp
    if as_json:  # masked: a URL's password, `--token VALUE` in args
        click.echo(json.dumps(mask({name: {"transport": "stdio" if s.command else "http",
                                           "command": s.command, "args": list(s.args),
                                           "url": s.url, "tools": list(s.tools)}
                                    for name, s in servers.items()}), indent=2))
        return
    print_table(["NAME", "TRANSPORT", "TARGET"],
                [[name, "stdio" if s.command else "http",
                  " ".join([s.command, *mask(list(s.args))]) if s.command
                  else mask(str(s.url))]
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


@mcp_group.command("prompts")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def mcp_prompts(name: str, as_json: bool) -> None:
    """The prompts MCP server NAME offers, each with its arguments (use one as a template:
    `modelplex chat -t mcp:NAME/PROMPT -p ARG VALUE`)."""
    from modelplex.mcp import McpHub

    async def listing() -> list[dict[str, Any]]:
        async with McpHub() as hub:
            server = await hub.server(name)
            return [{"name": p.name, "template": f"mcp:{name}/{p.name}",
                     "description": p.description or "",
                     "arguments": [{"name": a.name, "required": bool(a.required),
                                    "description": a.description or ""}
                                   for a in p.arguments or ()]}
                    for p in await server.list_prompts()]

    prompts = run(listing())
    if as_json:
        click.echo(json.dumps(prompts, indent=2))
        return
    for prompt in prompts:
        click.echo(f"{prompt['template']}: {prompt['description'].strip()}")
        for arg in prompt["arguments"]:
            flag = "" if arg["required"] else " (optional)"
            click.echo(f"  -p {arg['name']}{flag}  {arg['description']}".rstrip())


@mcp_group.command("resources")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def mcp_resources(name: str, as_json: bool) -> None:
    """The resources MCP server NAME offers (attach one to a message as
    `resources=["NAME:URI"]`)."""
    from modelplex.mcp import McpHub

    async def listing() -> list[dict[str, Any]]:
        async with McpHub() as hub:
            server = await hub.server(name)
            return [{"uri": str(r.uri), "attach": f"{name}:{r.uri}", "name": r.name,
                     "mime_type": r.mimeType, "size": r.size,
                     "description": r.description or ""}
                    for r in await server.list_resources()]

    resources = run(listing())
    if as_json:
        click.echo(json.dumps(resources, indent=2))
        return
    print_table(["RESOURCE", "MIME TYPE", "DESCRIPTION"],
                [[r["attach"], r["mime_type"] or "", r["description"].strip()]
                 for r in resources])


async def ask_confirmation(server: str, tool: str, arguments: dict[str, Any]) -> bool:
    """The CLI's ``confirm=``: a y/n question on the terminal (no terminal: refused)."""
    if not sys.stdin.isatty():
        return False
    question = f"Let MCP server {server!r} run the destructive tool {tool!r} " \
               f"with {json.dumps(arguments)}?"
    return bool(await asyncio.to_thread(click.confirm, question, default=False, err=True))


def build_server(name: str = "modelplex", *, host: str = "127.0.0.1",
                 port: int = 8000) -> FastMCP:
    """modelplex as an MCP server: ``chat``, ``list_models`` and ``structured`` tools
    (``host``/``port``: where the streamable-HTTP transport listens)."""
    from mcp.server.fastmcp import FastMCP

    from modelplex.batch.rows import check_schema
    from modelplex.manager import ChatManager
    from modelplex.mcp.served import strict_protocol

    server = FastMCP(name, log_level="WARNING", host=host, port=port)

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
        check_schema(schema)  # a schema that is not one is refused before the model is asked
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

    strict_protocol(server)  # the spec's errors for unknown names, bad arguments, cursors
    return server


class BearerKey:
    """ASGI middleware: HTTP requests need ``Authorization: Bearer KEY`` (else 401)."""

    def __init__(self, app: Any, key: str) -> None:
        self.app = app
        self._expected = key.encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers") or ()).get(b"authorization", b"")
            scheme, _, token = given.partition(b" ")
            # the scheme is case-insensitive (RFC 7235): "bearer KEY" is as good
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(),
                                                                      self._expected):
                body = b'{"error": "invalid or missing bearer key"}'
                await send({"type": "http.response.start", "status": 401, "headers": [
                    (b"content-type", b"application/json"),
                    (b"www-authenticate", b"Bearer"),
                    (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


class BodyGuard:
    """ASGI middleware: a request body is read whole within ``timeout`` seconds (408 when it
    stalls), at most ``limit`` bytes (413), and JSON nested too deeply for the parser is a 400
    JSON-RPC parse error (the SDK answered it with a 500 and a logged traceback)."""

    def __init__(self, app: Any, *, limit: int = 4 * 1024 * 1024, timeout: float = 30.0) -> None:
        self.app, self.limit, self.timeout = app, limit, timeout

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    size += len(message.get("body", b""))
                    if size > self.limit:
                        await _refuse(send, 413, -32600, f"the request body is larger than "
                                      f"{self.limit} bytes: send smaller JSON-RPC messages")
                        return
                    chunks.append(message.get("body", b""))
                    if not message.get("more_body"):
                        break
        except TimeoutError:
            await _refuse(send, 408, -32600, f"the request body stalled for {self.timeout:g} "
                          "s: send it whole")
            return
        body = b"".join(chunks)
        try:
            json.loads(body)
        except RecursionError:
            await _refuse(send, 400, -32700, "Parse error: the JSON nests too deeply: send "
                          "at most a few hundred levels")
            return
        except ValueError:
            pass  # the SDK answers its own parse error
        sent = False

        async def replay() -> Any:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _refuse(send: Any, status: int, code: int, message: str) -> None:
    """A JSON-RPC error response (``id`` null) with HTTP ``status``."""
    body = json.dumps({"jsonrpc": "2.0", "id": None,
                       "error": {"code": code, "message": message}}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def listening_url(host: str, port: int) -> str:
    """The URL clients use for the streamable-HTTP endpoint on ``host``:``port``."""
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/mcp"


async def serve_http(server: FastMCP, key: str | None) -> None:
    """Serve ``server`` over streamable HTTP at ``/mcp`` (uvicorn; stops on SIGINT/SIGTERM),
    each request body bounded by :class:`BodyGuard`, behind :class:`BearerKey` with a key.
    Once it listens, ``MCP server listening on URL`` is written to stderr, with the port
    bound (the one picked for ``--port 0``). Ctrl-C stops it as SIGTERM does, letting the
    requests in flight end (a second one stops it at once); a client leaving is not logged
    as an error (:func:`modelplex.mcp.served.quiet_disconnects`)."""
    import signal

    import uvicorn

    from modelplex.mcp.served import quiet_disconnects

    quiet_disconnects()
    # uvicorn's own SIGINT handling (a graceful stop), not the command's (cancel everything)
    asyncio.get_running_loop().remove_signal_handler(signal.SIGINT)
    app: Any = BodyGuard(server.streamable_http_app())
    if key:
        app = BearerKey(app, key)
    config = uvicorn.Config(app, host=server.settings.host, port=server.settings.port,
                            log_level="warning", timeout_graceful_shutdown=5)

    class Announcing(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:
                port = self.servers[0].sockets[0].getsockname()[1]
                click.echo(f"MCP server listening on "
                           f"{listening_url(server.settings.host, port)}", err=True)

    await Announcing(config).serve(sockets=[_listen(server.settings.host,
                                                    server.settings.port)])


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host``:``port``, or one ``Error:`` line saying why not (uvicorn
    logged its own ``ERROR:`` line and exited with status 3)."""
    from modelplex.errors import ConfigurationError

    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as err:
        reason = str(err.strerror or err).split(" (while attempting")[0]
        raise ConfigurationError(f"cannot listen on {host}:{port}: {reason}; "
                                 "choose another --port (0 picks a free one) or --host"
                                 ) from None


@mcp_group.command("serve")
@click.option("--transport", type=click.Choice(["stdio", "http"]), default="stdio",
              show_default=True, help="stdio, or streamable HTTP at http://HOST:PORT/mcp.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="The address to listen on (http).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="The port to listen on (http; 0 picks a free one). The URL is written to "
                   "stderr once listening.")
@click.option("--key-env", metavar="VARIABLE",
              help="Require `Authorization: Bearer KEY` (http), KEY read from this variable.")
def mcp_serve(transport: str, host: str, port: int, key_env: str | None) -> None:
    """Serve modelplex over MCP: tools chat, list_models and structured."""
    import os

    from modelplex.errors import ConfigurationError
    from modelplex.mcp import load_sdk

    load_sdk()
    if transport == "stdio":
        if key_env:
            raise click.UsageError("--key-env is for --transport http (stdio has no clients "
                                   "but the one that started it)")
        build_server().run("stdio")
        return
    key = None
    if key_env:
        key = os.environ.get(key_env)
        if not key:
            raise ConfigurationError(f"--key-env {key_env}: the variable is not set or empty; "
                                     "export the key there")
    elif host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"warning: serving MCP on {host} without a key (--key-env): anyone who "
                   "reaches it can use your models", err=True)
    run(serve_http(build_server(host=host, port=port), key))
