"""M11: what an MCP tool call costs over the same Python function, and a second message.

    python benchmarks/mcp_overhead.py [--calls 300] [--rounds 5] [--json results/mcp.json]

(Not ``mcp.py``: run as a script, that name would shadow the ``mcp`` SDK it imports.)

Two arms run the same function, ``add(a, b)``, through the tool loop's own path
(``ToolBox.run_call``: lookup, validation, the telemetry span, the call): a Python tool
(``python``), and the tool of an MCP server over stdio written with the SDK's server API
(FastMCP, started once, as a conversation does; ``mcp``). A third arm, ``sdk``, calls the same
server through the SDK's ``ClientSession.call_tool`` directly: the floor modelplex's MCP
client sits on. A fourth, ``mcp-lean``, is ``mcp`` against a server written with the SDK's
low-level ``Server`` (no FastMCP validation and output wrapping): how much of a call is the
server's. The arms are interleaved in rounds so that machine noise hits them alike;
reported per call: wall time (p50, mean), this process's CPU time and the server process's
CPU time (from ``/proc``, 10 ms ticks over every call of an arm), and the overhead (MCP -
Python) against the 2 ms target, in wall time (what a conversation waits, at the mercy of the
machine's load) and in CPU time (client + server, what the machine spends).

Then a conversation (``ChatManager`` with ``mcp=[...]`` and an in-process provider that calls
``add`` once, then answers) sends two messages: the second must cost no ``tools/list`` round
trip (the list is cached), and both messages' times are shown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from modelplex import ChatManager, hookimpl
from modelplex.chunks import StreamChunk, ToolCall, Usage
from modelplex.config import parse_config
from modelplex.mcp import McpHub
from modelplex.plugins import Plugins
from modelplex.provider import Capabilities, ChatRequest, Provider
from modelplex.tools import Tool, ToolBox
from modelplex.types import MessageRole

TARGET_MS = 2.0

SERVER = '''
from mcp.server.fastmcp import FastMCP

server = FastMCP("bench", log_level="WARNING")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


if __name__ == "__main__":
    server.run("stdio")
'''

LEAN = '''
import anyio
from mcp import types
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

server = Server("lean")
SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
          "required": ["a", "b"]}


@server.list_tools()
async def list_tools():
    return [types.Tool(name="add", description="Add two integers.", inputSchema=SCHEMA)]


@server.call_tool()
async def call_tool(name, arguments):
    return [types.TextContent(type="text", text=str(arguments["a"] + arguments["b"]))]


async def main():
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


anyio.run(main)
'''


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class Caller(Provider):
    """Calls ``add`` when the last message is the user's, else answers (no I/O)."""

    name = "openai"
    capabilities = Capabilities(tools=True)

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        usage = Usage(prompt_tokens=10, completion_tokens=2)
        if request.messages[-1].role is MessageRole.USER:
            yield StreamChunk(tool_calls=[ToolCall("add", {"a": 1, "b": 2}, "c1")],
                              finish_reason="tool_calls", usage=usage)
        else:
            yield StreamChunk(content="3", finish_reason="stop", usage=usage)


class Plugin:
    @hookimpl
    def register_providers(self, register: Any) -> None:
        register(lambda **kw: Caller(), name="openai")


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's live children: the MCP servers (the
    idle one adds nothing)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[1] == str(os.getpid()):
                total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


async def timed(box: ToolBox | Any, calls: int) -> tuple[list[float], float, float]:
    """Per-call wall times (s), and the client's and the server's CPU time per call (s), of
    ``calls`` calls (``box``: a ToolBox, or the SDK's ClientSession)."""
    walls = []
    server = children_cpu()
    cpu = time.process_time()
    for i in range(calls):
        start = time.perf_counter()
        if isinstance(box, ToolBox):
            result = await box.run_call(ToolCall("add", {"a": i, "b": 1}, f"c{i}"))
            content = result.content
        else:
            content = (await box.call_tool("add", {"a": i, "b": 1})).content[0].text
        walls.append(time.perf_counter() - start)
        assert content == str(i + 1), content
    client = (time.process_time() - cpu) / calls
    return walls, client, (children_cpu() - server) / calls


async def main(calls: int, rounds: int) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="modelplex-bench-mcp-"))
    (folder / "server.py").write_text(SERVER)
    (folder / "lean.py").write_text(LEAN)
    config = parse_config({"mcp": {
        "bench": {"command": sys.executable, "args": [str(folder / "server.py")]},
        "lean": {"command": sys.executable, "args": [str(folder / "lean.py")]}}})
    walls: dict[str, list[float]] = {"python": [], "mcp": [], "sdk": [], "mcp-lean": []}
    cpus: dict[str, list[float]] = {arm: [] for arm in walls}
    server_cpus: dict[str, list[float]] = {arm: [] for arm in walls}
    async with McpHub(config) as hub, McpHub(config) as lean:
        tools = await hub.tools(["bench"])
        boxes = {"python": ToolBox(tools={"add": Tool.from_function(add)}),
                 "mcp": ToolBox(tools={t.name: t for t in tools}),
                 "sdk": hub.servers["bench"]._session,
                 "mcp-lean": ToolBox(tools={t.name: t for t in await lean.tools(["lean"])})}
        for box in boxes.values():  # warm up
            await timed(box, 20)
        for _ in range(rounds):
            for arm, box in boxes.items():
                wall, cpu, server_cpu = await timed(box, calls)
                walls[arm].extend(wall)
                cpus[arm].append(cpu)
                server_cpus[arm].append(server_cpu)

    plugins = Plugins(load_entrypoints=False)
    plugins.register(Plugin(), name="bench")
    messages = []
    async with ChatManager("openai:bench", config=config, plugins=plugins,
                           mcp=["bench"]) as chat:
        for question in ("1+2?", "again?"):
            start = time.perf_counter()
            meta = await chat.get_response_with_meta(question)
            messages.append(time.perf_counter() - start)
            assert meta.content == "3"
        assert chat._mcp is not None
        list_calls = chat._mcp.servers["bench"].list_calls

    def ms(values: list[float], how: Any) -> float:
        return round(how(values) * 1000, 3)

    arms = {arm: {"wall p50 ms": ms(walls[arm], statistics.median),
                  "wall mean ms": ms(walls[arm], statistics.fmean),
                  "client CPU ms": ms(cpus[arm], statistics.fmean),
                  "server CPU ms": ms(server_cpus[arm], statistics.fmean)} for arm in walls}
    overhead = arms["mcp"]["wall p50 ms"] - arms["python"]["wall p50 ms"]
    cpu = (arms["mcp"]["client CPU ms"] + arms["mcp"]["server CPU ms"]
           - arms["python"]["client CPU ms"])
    return {"calls per arm": calls * rounds, "arms": arms,
            "overhead p50 ms": round(overhead, 3), "overhead CPU ms": round(cpu, 3),
            "overhead CPU ms, lean server": round(
                arms["mcp-lean"]["client CPU ms"] + arms["mcp-lean"]["server CPU ms"]
                - arms["python"]["client CPU ms"], 3),
            "modelplex over the SDK, client CPU ms": round(
                arms["mcp"]["client CPU ms"] - arms["sdk"]["client CPU ms"], 3),
            "target ms": TARGET_MS,
            "first message ms": round(messages[0] * 1000, 1),
            "second message ms": round(messages[1] * 1000, 1),
            "tools/list round trips for two messages": list_calls,
            "load average": [round(x, 2) for x in os.getloadavg()],
            "cpus": os.cpu_count(), "python": sys.version.split()[0]}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="calls per arm and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    before = [round(x, 2) for x in os.getloadavg()]
    results = asyncio.run(main(args.calls, args.rounds))
    results["load average before"] = before
    print(json.dumps(results, indent=2))
    ok = results["overhead p50 ms"] < TARGET_MS
    ok = ok and results["tools/list round trips for two messages"] == 1
    print(f"MCP overhead p50 {results['overhead p50 ms']} ms wall, "
          f"{results['overhead CPU ms']} ms CPU (target < {TARGET_MS} ms), "
          f"tools/list round trips for two messages: "
          f"{results['tools/list round trips for two messages']} -> "
          f"{'ok' if ok else 'MISSED'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
