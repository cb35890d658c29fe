"""An MCP server over stdio for the tests, written with the SDK's server API (FastMCP).

``python mcp_fixture_server.py [--hang] [--name NAME] [--http PORT]``: ``--hang`` never
answers ``initialize``, ``--http PORT`` serves streamable HTTP at ``/mcp`` instead of stdio
(``--sse PORT``: the older HTTP+SSE transport at ``/sse``); the
tools are ``add``, ``slow``, ``fail``, ``image``, ``delete_all``
(destructive), ``crash`` (exits mid-call), ``secret`` (echoes an environment variable) and
``grow`` (adds a tool and tells the client the list changed); the prompts ``summarize``
(``topic``, ``style?``) and ``review`` (two messages); the resources ``note://todo``,
``note://big`` (5000 characters), ``blob://data`` (bytes) and ``image://pixel`` (a PNG).
"""

from __future__ import annotations

import sys
import time

if "--hang" in sys.argv:  # before the SDK's slow import, so the stderr tail shows it
    print("hanging before initialize", file=sys.stderr, flush=True)
    time.sleep(600)

import asyncio
import base64
import os

from mcp.server.fastmcp import Context, FastMCP, Image
from mcp.types import ToolAnnotations

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAE"
                       "hQGAhKmMIQAAAABJRU5ErkJggg==")

name = sys.argv[sys.argv.index("--name") + 1] if "--name" in sys.argv else "fixture"
transport = "sse" if "--sse" in sys.argv else "streamable-http" if "--http" in sys.argv else "stdio"
flag = {"sse": "--sse", "streamable-http": "--http"}.get(transport)
port = int(sys.argv[sys.argv.index(flag) + 1]) if flag else 8000
server = FastMCP(name, log_level="WARNING", port=port)


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
async def slow(seconds: float) -> str:
    """Sleep, then answer."""
    await asyncio.sleep(seconds)
    return f"slept {seconds}"


@server.tool()
def fail(reason: str) -> str:
    """Always raises."""
    raise RuntimeError(f"failed on purpose: {reason}")


@server.tool()
def image() -> Image:
    """A one-pixel PNG."""
    return Image(data=PNG, format="png")


@server.tool(annotations=ToolAnnotations(destructiveHint=True, readOnlyHint=False))
def delete_all(path: str) -> str:
    """Delete everything under path (pretends to)."""
    return f"deleted {path}"


@server.tool()
def crash() -> str:
    """Exit the server process in the middle of the call."""
    print("about to crash: boom", file=sys.stderr, flush=True)
    os._exit(3)


@server.tool()
def secret() -> str:
    """The value of FIXTURE_SECRET."""
    return os.environ.get("FIXTURE_SECRET", "")


@server.tool()
async def grow(ctx: Context) -> str:  # type: ignore[type-arg]
    """Add a tool named `extra` and say the tool list changed."""

    @server.tool()
    def extra() -> str:
        """Added later."""
        return "extra"

    await ctx.session.send_tool_list_changed()
    return "grown"


@server.tool()
def whoami(ctx: Context) -> str:  # type: ignore[type-arg]
    """The X-Key header of the HTTP request (streamable HTTP only)."""
    request = ctx.request_context.request
    return str(request.headers.get("x-key")) if request is not None else "stdio"


@server.prompt()
def summarize(topic: str, style: str = "short") -> str:
    """Ask for a summary of a topic."""
    return f"Summarize {topic} in a {style} paragraph."


@server.prompt()
def review(code: str) -> list[dict[str, str]]:
    """Two messages: the code, and the assistant's opening."""
    return [{"role": "user", "content": f"Review this code: {code}"},
            {"role": "assistant", "content": "I will look at it."}]


@server.resource("note://todo", mime_type="text/plain")
def todo() -> str:
    """The todo list."""
    return "1. buy milk\n2. call Ada"


@server.resource("note://big", mime_type="text/plain")
def big() -> str:
    """A long text."""
    return "x" * 5000


@server.resource("blob://data", mime_type="application/octet-stream")
def data() -> bytes:
    """Some bytes."""
    return b"\x00\x01\x02"


@server.resource("image://pixel", mime_type="image/png")
def pixel() -> bytes:
    """A one-pixel PNG."""
    return PNG


if __name__ == "__main__":
    server.run(transport)  # type: ignore[arg-type]
