"""MCP servers' tools in the tool loop, with real MCP: a stdio server written in the tests
with the SDK's server API (tests/mcp_fixture_server.py) and the scripted upstream asking for
its tools in the OpenAI and Ollama formats; faults; process hygiene; the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable
from typing import Any

import pytest

from modelplex import ChatManager
from modelplex.config import Config, parse_config
from modelplex.errors import ConfigurationError
from modelplex.mcp import McpError, McpHub, McpToolError
from modelplex.testing import CliResult, FaultyUpstream, Reply

pytest.importorskip("mcp")


# the root conftest's fixtures: mcp_server(*args, **fields), an [mcp.NAME] table running the
# fixture server; mcp_http_server(flag), the fixture server over HTTP; mcp_cli(*args, **env),
# the CLI with [mcp.fx]; children(), the live child processes
Tables = Callable[..., dict[str, Any]]
Configs = Callable[..., Config]
Children = Callable[[], set[int]]
HttpServers = Callable[[str], contextlib.AbstractAsyncContextManager[int]]


@pytest.fixture
def config(mcp_server: Tables) -> Configs:
    """``config(**servers)``: the ``[mcp]`` servers given, else ``fx`` (the fixture server)."""
    return lambda **servers: parse_config({"mcp": servers or {"fx": mcp_server()}})


def openai_chat(upstream: FaultyUpstream, cfg: Config, **kw: Any) -> ChatManager:
    return ChatManager("openai:scripted", config=cfg, provider_config={
        "openai": {"base_url": upstream.url + "/v1", "api_key": "sk-test-0000000000"}}, **kw)


def tool_messages(body: dict[str, Any]) -> dict[str, str]:
    return {m["tool_call_id"]: m["content"] for m in body["messages"] if m["role"] == "tool"}


# -- the tool loop -----------------------------------------------------------------------------
async def test_tool_loop_runs_mcp_tools(upstream: FaultyUpstream, config: Configs) -> None:
    """Two calls in parallel, an image, a failing tool, an invented name and arguments that do
    not match the schema: results and errors go back to the model; the list is fetched once."""
    upstream.replies.extend([
        Reply(tool_calls=[{"id": "a", "name": "add", "arguments": {"a": 2, "b": 3}},
                          {"id": "s", "name": "slow", "arguments": {"seconds": 0.2}},
                          {"id": "i", "name": "image", "arguments": {}},
                          {"id": "f", "name": "fail", "arguments": {"reason": "x"}},
                          {"id": "u", "name": "made_up", "arguments": {}},
                          {"id": "b", "name": "add", "arguments": {"a": "two"}}]),
        Reply("5."), Reply("again")])
    async with openai_chat(upstream, config(), mcp=["fx"]) as chat:
        meta = await chat.get_response_with_meta("2+3?")
        await chat.get_response_with_meta("again?")
        assert chat._mcp is not None
        assert chat._mcp.servers["fx"].list_calls == 1  # cached for the second message
    assert meta.content == "5."
    names = [t["function"]["name"] for t in upstream.bodies[0]["tools"]]
    assert {"add", "slow", "image", "fail", "delete_all"} <= set(names)
    add = next(t for t in upstream.bodies[0]["tools"] if t["function"]["name"] == "add")
    assert add["function"]["parameters"]["required"] == ["a", "b"]
    sent = tool_messages(upstream.bodies[1])
    assert sent["a"] == "5"
    assert sent["s"] == "slept 0.2"
    assert sent["i"] == "[image: image/png, 70 bytes]"
    assert sent["f"].startswith("Error: McpToolError: ") and "failed on purpose: x" in sent["f"]
    assert sent["u"].startswith("Error: LookupError: no tool named 'made_up'")
    assert sent["b"] == ("Error: McpToolError: invalid arguments: arguments: 'b' is a required "
                         "property; a: 'two' is not of type 'integer'")


async def test_per_message_mcp_and_clashing_names(
        upstream: FaultyUpstream, config: Configs, mcp_server: Tables) -> None:
    def local(x: int) -> int:
        """A Python tool beside the MCP ones."""
        return x * 2

    cfg = config(fx=mcp_server(), fy=mcp_server("--name", "other", tools=["add", "secret"],
                                          env={"FIXTURE_SECRET": "s3cr3t"}))
    upstream.replies.extend([
        Reply(tool_calls=[{"id": "1", "name": "fx__add", "arguments": {"a": 1, "b": 1}},
                          {"id": "2", "name": "fy__add", "arguments": {"a": 2, "b": 2}},
                          {"id": "3", "name": "fy__secret", "arguments": {}},
                          {"id": "4", "name": "local", "arguments": {"x": 4}}]),
        Reply("done")])
    async with openai_chat(upstream, cfg) as chat:
        await chat.get_response_with_meta("go", tools=[local], mcp=["fx", "fy"])
    names = sorted(t["function"]["name"] for t in upstream.bodies[0]["tools"])
    assert "fx__add" in names and "fy__add" in names and "add" not in names
    assert "local" in names and "fx__secret" in names and "fy__secret" in names
    assert "fy__fail" not in names and "fail" in names  # fy's allow list: add and secret
    assert tool_messages(upstream.bodies[1]) == {"1": "2", "2": "4", "3": "s3cr3t", "4": "8"}


async def test_destructive_tools_need_confirmation(
        upstream: FaultyUpstream, config: Configs) -> None:
    asked: list[tuple[str, str, dict[str, Any]]] = []

    async def confirm(server: str, tool: str, arguments: dict[str, Any]) -> bool:
        asked.append((server, tool, arguments))
        return arguments["path"] == "/tmp/ok"

    call = {"name": "delete_all"}
    upstream.replies.extend([
        Reply(tool_calls=[{"id": "y", **call, "arguments": {"path": "/tmp/ok"}},
                          {"id": "n", **call, "arguments": {"path": "/"}}]), Reply("ok"),
        Reply(tool_calls=[{"id": "z", **call, "arguments": {"path": "/tmp/ok"}}]), Reply("ok")])
    async with openai_chat(upstream, config(), mcp=["fx"], confirm=confirm) as chat:
        await chat.get_response_with_meta("clean")
    async with openai_chat(upstream, config(), mcp=["fx"]) as chat:  # no confirm: refused
        await chat.get_response_with_meta("clean")
    assert sorted(a[2]["path"] for a in asked) == ["/", "/tmp/ok"]
    assert asked[0][:2] == ("fx", "delete_all")
    first = tool_messages(upstream.bodies[1])
    assert first["y"] == "deleted /tmp/ok"
    assert "destructive and was not confirmed" in first["n"]
    assert "destructive and was not confirmed" in tool_messages(upstream.bodies[3])["z"]


async def test_tool_list_refreshed_when_the_server_says_it_changed(config: Configs) -> None:
    async with McpHub(config()) as hub:
        tools = {t.name: t for t in await hub.tools(["fx"])}
        assert "extra" not in tools
        assert await tools["grow"].call({}) == "grown"
        for _ in range(50):  # the notification arrives beside the answer
            if hub.servers["fx"]._tools is None:
                break
            await asyncio.sleep(0.05)
        again = {t.name: t for t in await hub.tools(["fx"])}
        assert await again["extra"].call({}) == "extra"
        assert hub.servers["fx"].list_calls == 2


async def test_ollama_format(upstream: FaultyUpstream, config: Configs) -> None:
    upstream.replies.extend([
        Reply(tool_calls=[{"name": "add", "arguments": {"a": 40, "b": 2}}]), Reply("42")])
    async with ChatManager("ollama:scripted", config=config(), mcp=["fx"],
                           provider_config={"ollama": {"host": upstream.url}}) as chat:
        meta = await chat.get_response_with_meta("40+2?")
    assert meta.content == "42"
    assert next(m for m in upstream.bodies[1]["messages"] if m["role"] == "tool")["content"] \
        == "42"


async def test_anthropic_format(upstream: FaultyUpstream, config: Configs) -> None:
    pytest.importorskip("modelplex_anthropic")
    upstream.replies.extend([
        Reply(tool_calls=[{"id": "t1", "name": "add", "arguments": {"a": 1, "b": 2}},
                          {"id": "t2", "name": "fail", "arguments": {"reason": "r"}}]),
        Reply("3")])
    async with ChatManager("anthropic:scripted", config=config(), mcp=["fx"], provider_config={
            "anthropic": {"base_url": upstream.url, "api_key": "sk-ant-test-0000"}}) as chat:
        meta = await chat.get_response_with_meta("1+2?")
    assert meta.content == "3"
    tools = {t["name"]: t for t in upstream.bodies[0]["tools"]}
    assert tools["add"]["input_schema"]["required"] == ["a", "b"]
    results = {b["tool_use_id"]: b for m in upstream.bodies[1]["messages"]
               if isinstance(m["content"], list) for b in m["content"]
               if b.get("type") == "tool_result"}
    assert results["t1"]["content"] == "3"
    assert "failed on purpose: r" in str(results["t2"]["content"])


async def test_streamable_http_server(mcp_http_server: HttpServers) -> None:
    async with mcp_http_server("--http") as port:
        os.environ["MCP_TEST_KEY"] = "k-42"
        try:
            cfg = parse_config({"mcp": {"web": {"url": f"http://127.0.0.1:{port}/mcp",
                                                "headers_env": {"X-Key": "MCP_TEST_KEY"},
                                                "timeout": 10}}})
            async with McpHub(cfg) as hub:
                tools = {t.name: t for t in await hub.tools(["web"])}
                assert await tools["add"].call({"a": 20, "b": 22}) == "42"
                assert await tools["whoami"].call({}) == "k-42"
                with pytest.raises(McpToolError, match="failed on purpose"):
                    await tools["fail"].call({"reason": "x"})
        finally:
            os.environ.pop("MCP_TEST_KEY", None)


@pytest.mark.parametrize("transport", ["url", "setting"])
async def test_an_older_sse_server(transport: str, mcp_http_server: HttpServers) -> None:
    """``[mcp.NAME] url`` ending in ``/sse`` (or ``transport = "sse"``): the older HTTP+SSE
    transport, headers sent, tools called."""
    async with mcp_http_server("--sse") as port:
        table: dict[str, object] = {"url": f"http://127.0.0.1:{port}/sse",
                                    "headers": {"X-Key": "k-sse"}, "timeout": 10}
        if transport == "setting":
            table.update(url=f"http://127.0.0.1:{port}/sse/", transport="sse")
        cfg = parse_config({"mcp": {"old": table}})
        assert cfg.mcp["old"].uses_sse
        async with McpHub(cfg) as hub:
            tools = {t.name: t for t in await hub.tools(["old"])}
            assert await tools["add"].call({"a": 40, "b": 2}) == "42"
            assert await tools["whoami"].call({}) == "k-sse"


def test_transport_is_for_url_servers() -> None:
    with pytest.raises(ConfigurationError, match="`transport` is for a server with a `url`"):
        parse_config({"mcp": {"x": {"command": "srv", "transport": "sse"}}})
    assert not parse_config({"mcp": {"x": {"url": "http://h/mcp"}}}).mcp["x"].uses_sse


# -- faults ------------------------------------------------------------------------------------
async def test_a_command_that_does_not_exist(children: Children) -> None:
    before = children()  # a session's servers (redis, PostgreSQL) are children too
    cfg = parse_config({"mcp": {"gone": {"command": "/nonexistent/mcp-server", "timeout": 5}}})
    start = time.monotonic()
    async with McpHub(cfg) as hub:
        with pytest.raises(McpError, match="MCP server 'gone': could not start"):
            await hub.tools(["gone"])
    assert time.monotonic() - start < 5
    assert children() <= before


async def test_an_unknown_server_name(config: Configs) -> None:
    async with McpHub(config()) as hub:
        with pytest.raises(ConfigurationError, match=r"no MCP server named 'nope'.*known: fx"):
            await hub.tools(["nope"])


async def test_a_server_that_never_answers_initialize(
        config: Configs, mcp_server: Tables, children: Children) -> None:
    before = children()  # a session's servers (redis, PostgreSQL) are children too
    cfg = config(hang=mcp_server("--hang", timeout=1.5))
    start = time.monotonic()
    async with McpHub(cfg) as hub:
        with pytest.raises(McpError, match=r"no answer to initialize within 1\.5 s") as err:
            await hub.tools(["hang"])
    assert "hanging before initialize" in str(err.value)  # the stderr tail
    assert time.monotonic() - start < 10
    assert children() <= before


async def test_a_crash_mid_call_and_a_hanging_tool(
        upstream: FaultyUpstream, config: Configs, mcp_server: Tables, children: Children) -> None:
    before = children()  # a session's servers (redis, PostgreSQL) are children too
    upstream.replies.extend([
        Reply(tool_calls=[{"id": "h", "name": "slow", "arguments": {"seconds": 60}}]),
        Reply("gave up"),
        Reply(tool_calls=[{"id": "c", "name": "crash", "arguments": {}}]), Reply("crashed"),
        Reply(tool_calls=[{"id": "a", "name": "add", "arguments": {"a": 1, "b": 1}}]),
        Reply("dead")])
    start = time.monotonic()
    async with openai_chat(upstream, config(fx=mcp_server(timeout=3)), mcp=["fx"]) as chat:
        await chat.get_response_with_meta("wait")
        assert time.monotonic() - start < 20
        await chat.get_response_with_meta("crash")
        await chat.get_response_with_meta("after")
    hung = tool_messages(upstream.bodies[1])["h"]
    assert hung.startswith("Error: McpError: MCP server 'fx': the call of 'slow' got no answer "
                           "within 3 s")
    crashed = tool_messages(upstream.bodies[3])["c"]
    assert crashed.startswith("Error: McpError: MCP server 'fx'")
    assert "about to crash: boom" in crashed  # the stderr tail
    assert "exited during the call of 'crash'" in crashed
    assert tool_messages(upstream.bodies[5])["a"] == "2"  # started again for the next message
    assert children() <= before


async def test_raise_tool_errors_gives_the_typed_error(
        upstream: FaultyUpstream, config: Configs) -> None:
    upstream.replies.extend([Reply(tool_calls=[{"name": "fail", "arguments": {"reason": "r"}}])])
    async with openai_chat(upstream, config(), mcp=["fx"]) as chat:
        chat.enable_function_calling([], raise_tool_errors=True)
        with pytest.raises(McpToolError, match="failed on purpose: r"):
            await chat.get_response_with_meta("fail")


# -- process hygiene ---------------------------------------------------------------------------
async def test_managers_leave_no_child_process(config: Configs, children: Children) -> None:
    before = children()
    cfg = config()
    for _ in range(20):
        chat = ChatManager("openai:unused", config=cfg, mcp=["fx"])
        await chat._mcp.tools(["fx"])  # starts the server as the first message would
        assert children() - before
        await chat.aclose()
        assert children() == before
    fds = len(os.listdir("/proc/self/fd"))
    chat = ChatManager("openai:unused", config=cfg, mcp=["fx"])
    await chat._mcp.tools(["fx"])
    await chat.aclose()
    assert len(os.listdir("/proc/self/fd")) <= fds  # no pipe left open


def test_sync_manager_closes_its_servers(config: Configs, children: Children) -> None:
    before = children()
    with ChatManager(config=config(), mcp=["fx"]) as chat:
        chat._blocking.run(chat._mcp.tools(["fx"]), "tools")
    assert children() == before


# -- config ------------------------------------------------------------------------------------
def test_config_masks_secrets(mcp_server: Tables) -> None:
    cfg = parse_config({"mcp": {"web": {"url": "http://localhost:1/mcp",
                                        "headers": {"Authorization": "Bearer sk-123"},
                                        "headers_env": {"X-Key": "MY_KEY"}},
                                "fx": mcp_server(env={"TOKEN": "t0k3n"})}})
    shown = json.dumps(cfg.masked())
    assert "sk-123" not in shown and "t0k3n" not in shown
    assert "MY_KEY" in shown
    assert "sk-123" not in repr(cfg)
    with pytest.raises(ConfigurationError, match="either `command`"):
        parse_config({"mcp": {"bad": {"command": "x", "url": "http://y"}}})
    with pytest.raises(ConfigurationError, match="either `command`"):
        parse_config({"mcp": {"bad": {}}})


# -- CLI: mcp_cli (the root conftest) runs modelplex with [mcp.fx] -----------------------------
Cli = Callable[..., CliResult]


def test_cli_mcp_list_and_tools(mcp_cli: Cli) -> None:
    listed = mcp_cli("mcp", "list")
    assert listed.returncode == 0, listed.stderr
    assert "fx" in listed.stdout and "stdio" in listed.stdout
    assert "hidden-value" not in listed.stdout
    tools = mcp_cli("mcp", "tools", "fx")
    assert tools.returncode == 0, tools.stderr
    assert "add: Add two integers." in tools.stdout
    assert "delete_all (destructive)" in tools.stdout
    assert '"required": ["a", "b"]' in tools.stdout
    as_json = json.loads(mcp_cli("mcp", "tools", "fx", "--json").stdout)
    assert {t["name"] for t in as_json} >= {"add", "slow", "fail", "image"}
    missing = mcp_cli("mcp", "tools", "nope")
    assert missing.returncode == 1
    assert "no MCP server named 'nope'" in missing.stderr
    shown = mcp_cli("config", "show")
    assert "hidden-value" not in shown.stdout


async def test_cli_chat_with_mcp(mcp_cli: Cli, upstream: FaultyUpstream) -> None:
    upstream.replies.extend([
        Reply(tool_calls=[{"id": "a", "name": "add", "arguments": {"a": 20, "b": 22}},
                          {"id": "d", "name": "delete_all", "arguments": {"path": "/"}}]),
        Reply("It is 42.")])
    proc = await asyncio.to_thread(mcp_cli, "chat", "--no-log", "-m", "openai:scripted",
                                   "--mcp", "fx", "20+22?", OPENAI_API_KEY="sk-test-0000000000",
                                   OPENAI_BASE_URL=upstream.url + "/v1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "It is 42."
    sent = tool_messages(upstream.bodies[1])
    assert sent["a"] == "42"
    assert "not confirmed" in sent["d"]  # no terminal: no y/n, refused
