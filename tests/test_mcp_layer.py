"""``[models.NAME] mcp = [...]``: the request path's ``mcp`` layer runs a named model's MCP
tools for every caller (here the pipeline's top itself and a ChatManager), streaming and not,
with the per-model allow list; the servers are shared and closed with the last lease."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from modelplex import ChatManager
from modelplex.config import Config, parse_config
from modelplex.errors import ConfigurationError
from modelplex.mcp import layer as mcp_layer
from modelplex.pipeline import PATH, open_model
from modelplex.testing import FaultyUpstream, Reply
from modelplex.types import ChatMessage

pytest.importorskip("mcp")

Configs = Callable[..., Config]
Children = Callable[[], set[int]]


@pytest.fixture
def config(upstream: FaultyUpstream, mcp_models: Configs) -> Configs:
    """``config(**helper)``: the MCP layer tests' named models (``mcp_models``, the root
    conftest) on this test's upstream."""
    return lambda **helper: mcp_models(upstream.url + "/v1", **helper)


def tool_messages(body: dict[str, Any]) -> dict[str, str]:
    return {m["tool_call_id"]: m["content"] for m in body["messages"] if m["role"] == "tool"}


def offered(body: dict[str, Any]) -> set[str]:
    return {t["function"]["name"] for t in body.get("tools") or ()}


def test_the_layer_is_first_on_the_path() -> None:
    assert PATH[0] == "mcp"


def test_config_checks_the_servers_named() -> None:
    with pytest.raises(ConfigurationError, match=r"models\.m\.mcp names 'nope'.*\[mcp\.nope\]"):
        parse_config({"models": {"m": {"model": "openai:x", "mcp": ["nope"]}}})
    cfg = parse_config({"mcp": {"fx": {"command": "x"}}, "models": {"m": {
        "model": "openai:x", "mcp": ["fx", {"server": "fx", "tools": ["add"]}]}}})
    assert [(u.server, u.tools) for u in cfg.models["m"].mcp] == [("fx", ()), ("fx", ("add",))]


async def test_complete_and_stream_run_the_tools(
        upstream: FaultyUpstream, config: Configs, children: Children) -> None:
    before = children()
    upstream.replies.extend([
        Reply(tool_calls=[{"id": "a", "name": "add", "arguments": {"a": 2, "b": 3}},
                          {"id": "f", "name": "fail", "arguments": {"reason": "x"}}]),
        Reply("It is 5."),
        Reply("Let me add.", tool_calls=[{"id": "b", "name": "add",
                                          "arguments": {"a": 1, "b": 1}}]),
        Reply("Two.")])
    cfg = config()
    async with await open_model("helper", config=cfg, cache=False) as lease:
        layer = lease.provider
        assert type(layer).__name__ == "McpToolLayer"
        request = layer.build_request([ChatMessage.user("2+3?")], model=lease.model)
        answer = await layer.complete_request(request)
        assert answer.content == "It is 5." and answer.tool_calls == []
        assert answer.finish_reason == "stop"
        assert answer.usage.prompt_tokens == 6  # both rounds
        request = layer.build_request([ChatMessage.user("1+1?")], model=lease.model)
        chunks = [c async for c in layer.stream_request(request)]
        assert "".join(c.content for c in chunks) == "Let me add.\n\nTwo."
        assert not any(c.tool_calls for c in chunks)
        assert [c.finish_reason for c in chunks if c.finish_reason] == ["stop"]
        assert len(mcp_layer._hubs) == 1
    assert mcp_layer._hubs == {}  # released with the lease: the server stopped
    assert children() <= before
    assert offered(upstream.bodies[0]) >= {"add", "fail", "delete_all"}
    sent = tool_messages(upstream.bodies[1])
    assert sent["a"] == "5" and "failed on purpose: x" in sent["f"]
    assert tool_messages(upstream.bodies[3]) == {"b": "2"}


async def test_allow_list_destructive_tools_and_the_callers_tools(
        upstream: FaultyUpstream, config: Configs) -> None:
    cfg = config(mcp=[{"server": "fx", "tools": ["add", "delete_all"]}])
    upstream.replies.extend([
        Reply(tool_calls=[{"id": "d", "name": "delete_all", "arguments": {"path": "/tmp/x"}}]),
        Reply("deleted"),
        # the caller's own tool: the answer goes back with just that call
        Reply(tool_calls=[{"id": "l", "name": "local", "arguments": {"x": 1}},
                          {"id": "a", "name": "add", "arguments": {"a": 1, "b": 2}}]),
        Reply("8")])

    def local(x: int) -> int:
        """Double x."""
        return x * 2

    async with ChatManager("helper", config=cfg) as chat:
        meta = await chat.get_response_with_meta("clean")
        assert meta.content == "deleted"
        meta = await chat.get_response_with_meta("double 4", tools=[local])
        assert meta.content == "8"
    assert offered(upstream.bodies[0]) == {"add", "delete_all"}  # the model's allow list
    assert tool_messages(upstream.bodies[1]) == {"d": "deleted /tmp/x"}  # named: it runs
    assert offered(upstream.bodies[2]) == {"add", "delete_all", "local"}
    # the caller ran its tool; the MCP call of that answer was not run
    assert tool_messages(upstream.bodies[3]) == {"l": "2"}


async def test_unnamed_destructive_tools_are_refused_and_plain_models_untouched(
        upstream: FaultyUpstream, config: Configs) -> None:
    cfg = config()
    upstream.replies.extend([
        Reply(tool_calls=[{"id": "d", "name": "delete_all", "arguments": {"path": "/"}}]),
        Reply("refused"), Reply("plain")])
    async with ChatManager("helper", config=cfg) as chat:
        await chat.get_response_with_meta("clean")
    async with ChatManager("plain", config=cfg) as chat:
        await chat.get_response_with_meta("hi")
    assert "destructive and was not confirmed" in tool_messages(upstream.bodies[1])["d"]
    assert "tools" not in upstream.bodies[2]


async def test_a_stream_that_calls_the_callers_tool_ends_there(
        upstream: FaultyUpstream, config: Configs) -> None:
    upstream.replies.append(Reply(tool_calls=[
        {"id": "l", "name": "local", "arguments": {"x": 1}},
        {"id": "a", "name": "add", "arguments": {"a": 1, "b": 2}}]))
    local = {"type": "function", "function": {"name": "local", "description": "Double x.",
                                              "parameters": {"type": "object"}}}
    async with await open_model("helper", config=config(), cache=False) as lease:
        request = lease.provider.build_request([ChatMessage.user("go")], model=lease.model,
                                               tools=[local])
        chunks = [c async for c in lease.provider.stream_request(request)]
    calls = [call.name for c in chunks for call in c.tool_calls or ()]
    assert calls == ["local"]  # the MCP call of that answer is not run nor passed on
    assert chunks[-1].finish_reason == "tool_calls"
    assert len(upstream.bodies) == 1


async def test_tool_choice_none_passes_through(upstream: FaultyUpstream, config: Configs) -> None:
    upstream.replies.append(Reply("no tools"))
    async with await open_model("helper", config=config(), cache=False) as lease:
        request = lease.provider.build_request([ChatMessage.user("hi")], model=lease.model,
                                               tool_choice="none")
        assert (await lease.provider.complete_request(request)).content == "no tools"
    assert "tools" not in upstream.bodies[0]


def test_a_model_whose_provider_cannot_call_tools(
        upstream: FaultyUpstream, config: Configs) -> None:
    from modelplex.provider import Capabilities
    from modelplex.wrapping import LayerContext

    class NoTools:
        name = "plain"
        capabilities = Capabilities(tools=False)

    cfg = config()
    ctx = LayerContext(spec="helper", model="scripted", provider_name="helper", config=cfg,
                       named=True)
    with pytest.raises(ConfigurationError,
                       match=r"models\.helper\.mcp: .*cannot call tools") as err:
        mcp_layer.mcp_layer(NoTools(), ctx)  # type: ignore[arg-type]
    # it names the model's deployment (what to change), not the router named after the model
    assert "'openai:scripted'" in str(err.value) and "'helper' cannot" not in str(err.value)


async def test_managers_on_a_named_model_leave_no_process(
        upstream: FaultyUpstream, config: Configs, children: Children) -> None:
    before = children()
    cfg = config()
    fds = None
    for _ in range(5):
        upstream.replies.append(Reply("hi"))
        async with ChatManager("helper", config=cfg) as chat:
            await chat.get_response_with_meta("hello")  # starts the MCP server
            assert children() - before
        assert children() <= before and mcp_layer._hubs == {}
        fds = fds or len(os.listdir("/proc/self/fd"))
    assert len(os.listdir("/proc/self/fd")) <= fds  # no pipe left open
