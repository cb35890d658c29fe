"""MCP prompts as templates (``mcp:SERVER/PROMPT``) and MCP resources as a message's context,
with the stdio server of tests/mcp_fixture_server.py (the SDK's server API); the CLI's
``mcp prompts`` and ``mcp resources``."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from typing import Any

import pytest

from modelplex import ChatManager
from modelplex.config import Config, parse_config
from modelplex.errors import ConfigurationError
from modelplex.mcp import McpError, McpHub
from modelplex.testing import CliResult, FaultyUpstream, Reply

pytest.importorskip("mcp")

Configs = Callable[..., Config]


@pytest.fixture
def config(mcp_server: Callable[..., dict[str, Any]]) -> Configs:
    """``config(**fields)``: just ``[mcp.fx]``, the fixture server (``mcp_server``, the root
    conftest), with ``fields``."""
    return lambda **fields: parse_config({"mcp": {"fx": mcp_server(**fields)}})


def chat(upstream: FaultyUpstream, cfg: Config, model: str = "openai:scripted") -> ChatManager:
    return ChatManager(model, config=cfg, provider_config={
        "openai": {"base_url": upstream.url + "/v1", "api_key": "sk-test-0000000000"}})


# -- prompts -----------------------------------------------------------------------------------
async def test_an_mcp_prompt_is_a_template(upstream: FaultyUpstream, config: Configs) -> None:
    upstream.replies.extend([Reply("Tea is a drink."), Reply("Looks fine.")])
    async with chat(upstream, config()) as manager:
        result = await manager.execute_chain("mcp:fx/summarize", topic="tea", style="long")
        assert result.value == "Tea is a drink."
        await manager.execute_chain("mcp:fx/review", code="x = 1")
        assert manager._mcp is not None and list(manager._mcp.servers) == ["fx"]
    assert upstream.bodies[0]["messages"][-1] == {
        "role": "user", "content": "Summarize tea in a long paragraph."}
    assert upstream.bodies[1]["messages"][-1]["content"] == (
        "Review this code: x = 1\n\n(assistant) I will look at it.")


async def test_prompt_arguments_are_checked(upstream: FaultyUpstream, config: Configs) -> None:
    async with chat(upstream, config()) as manager:
        with pytest.raises(ConfigurationError, match=(
                r"MCP prompt 'mcp:fx/summarize': missing required argument\(s\) topic "
                r"\(its arguments: topic, style\?")):
            await manager.execute_chain("mcp:fx/summarize", style="long")
        with pytest.raises(ConfigurationError, match=r"unknown argument\(s\) colour"):
            await manager.execute_chain("mcp:fx/summarize", topic="t", colour="red")
        with pytest.raises(ConfigurationError, match=r"no prompt 'nope' \(its prompts: "
                                                     r"review, summarize\)"):
            await manager.execute_chain("mcp:fx/nope")
        with pytest.raises(ConfigurationError, match="'mcp:SERVER/PROMPT'"):
            await manager.execute_chain("mcp:fx")
    assert upstream.bodies == []  # nothing was sent


async def test_a_template_without_a_manager_starts_its_server(config: Configs) -> None:
    from modelplex.mcp.prompts import mcp_template

    template = mcp_template("mcp:fx/summarize", {"topic": "rain"})
    with pytest.raises(ConfigurationError, match=r"await template\.arender"):
        template.render()
    async with McpHub(config()) as hub:
        assert await hub.prompt("fx", "summarize", {"topic": "rain"}) == \
            "Summarize rain in a short paragraph."


# -- resources ---------------------------------------------------------------------------------
async def test_resources_as_context(upstream: FaultyUpstream, config: Configs) -> None:
    upstream.replies.extend([Reply("Milk and Ada."), Reply("long"), Reply("a pixel")])
    async with chat(upstream, config(max_result_chars=1000)) as manager:
        meta = await manager.get_response_with_meta("What is on my list?",
                                                    resources=["fx:note://todo"])
        assert meta.content == "Milk and Ada."
        await manager.get_response_with_meta("How long?", resources=["fx:note://big"])
        await manager.get_response_with_meta("What is it?", resources=["fx:image://pixel"])
    first = upstream.bodies[0]["messages"][-1]["content"]
    assert first == ('<resource uri="note://todo" server="fx">\n1. buy milk\n2. call Ada\n'
                     '</resource>\n\nWhat is on my list?')
    cut = upstream.bodies[1]["messages"][-1]["content"]
    assert "x" * 1000 + "\n[... cut: the result had 5000 characters, the limit is 1000]" in cut
    parts = upstream.bodies[2]["messages"][-1]["content"]  # OpenAI takes images
    assert parts[-1]["type"] == "image_url"
    assert parts[-1]["image_url"]["url"].startswith("data:image/png;base64,")


async def test_binary_resources_are_refused(upstream: FaultyUpstream, config: Configs) -> None:
    async with chat(upstream, config()) as manager:
        with pytest.raises(McpError, match=r"resource 'fx:blob://data' is binary "
                                           r"\(application/octet-stream\): only text"):
            await manager.get_response_with_meta("?", resources=["fx:blob://data"])
        with pytest.raises(ConfigurationError, match="write it as 'SERVER:URI'"):
            await manager.get_response_with_meta("?", resources=["note://todo"])
    async with McpHub(config()) as hub:  # a model that does not take images
        with pytest.raises(McpError, match="this model does not take images"):
            await hub.resource("fx:image://pixel", vision=False)
        _, images = await hub.resource("fx:image://pixel", vision=True)
        assert images and base64.b64encode(images[0]).startswith(b"iVBOR")
    assert upstream.bodies == []


# -- tool results with images ------------------------------------------------------------------
async def test_tool_images_go_to_providers_that_take_them(
        upstream: FaultyUpstream, config: Configs) -> None:
    pytest.importorskip("modelplex_anthropic")
    upstream.replies.extend([
        Reply(tool_calls=[{"id": "t1", "name": "image", "arguments": {}}]), Reply("a pixel")])
    async with ChatManager("anthropic:scripted", config=config(), mcp=["fx"], provider_config={
            "anthropic": {"base_url": upstream.url, "api_key": "sk-ant-test-0000"}}) as manager:
        assert (await manager.get_response_with_meta("draw")).content == "a pixel"
    [result] = [b for m in upstream.bodies[1]["messages"] if isinstance(m["content"], list)
                for b in m["content"] if b.get("type") == "tool_result"]
    assert result["content"][0] == {"type": "text", "text": "[image: image/png, 70 bytes]"}
    assert result["content"][1]["type"] == "image"
    assert result["content"][1]["source"]["media_type"] == "image/png"


async def test_tool_images_follow_the_tool_messages_on_openai(
        upstream: FaultyUpstream, config: Configs) -> None:
    upstream.replies.extend([
        Reply(tool_calls=[{"id": "i", "name": "image", "arguments": {}},
                          {"id": "a", "name": "add", "arguments": {"a": 1, "b": 1}}]),
        Reply("a pixel")])
    async with chat(upstream, config()) as manager:
        await manager.get_response_with_meta("draw", mcp=["fx"])
    messages = upstream.bodies[1]["messages"]
    roles = [m["role"] for m in messages]
    assert roles == ["user", "assistant", "tool", "tool", "user"]  # after the run of results
    assert messages[2]["content"] == "[image: image/png, 70 bytes]"
    text, image = messages[4]["content"]
    assert text == {"type": "text", "text": "The images returned by tool image (call i):"}
    assert image["image_url"]["url"].startswith("data:image/png;base64,iVBOR")


# -- CLI: mcp_cli (the root conftest) runs modelplex with [mcp.fx] -----------------------------
Cli = Callable[..., CliResult]


async def test_cli_prompts_and_resources(mcp_cli: Cli) -> None:
    prompts = await asyncio.to_thread(mcp_cli, "mcp", "prompts", "fx")
    assert prompts.returncode == 0, prompts.stderr
    assert "mcp:fx/summarize: Ask for a summary of a topic." in prompts.stdout
    assert "  -p topic" in prompts.stdout and "-p style (optional)" in prompts.stdout
    resources = await asyncio.to_thread(mcp_cli, "mcp", "resources", "fx", "--json")
    assert resources.returncode == 0, resources.stderr
    listed = {r["attach"]: r for r in json.loads(resources.stdout)}
    assert listed["fx:note://todo"]["mime_type"] == "text/plain"
    assert "fx:image://pixel" in listed


async def test_cli_chat_runs_an_mcp_prompt(mcp_cli: Cli, upstream: FaultyUpstream) -> None:
    upstream.replies.append(Reply("Short."))
    proc = await asyncio.to_thread(
        mcp_cli, "chat", "--no-log", "-m", "openai:scripted",
        "-t", "mcp:fx/summarize", "-p", "topic", "snow", OPENAI_API_KEY="sk-test-0000000000",
        OPENAI_BASE_URL=upstream.url + "/v1")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == "Short."
    assert upstream.bodies[0]["messages"][-1]["content"] == "Summarize snow in a short paragraph."


async def test_cli_chat_with_a_resource(mcp_cli: Cli, upstream: FaultyUpstream) -> None:
    upstream.replies.append(Reply("Milk."))
    proc = await asyncio.to_thread(
        mcp_cli, "chat", "--no-log", "-m", "openai:scripted", "--resource",
        "fx:note://todo", "What first?", OPENAI_API_KEY="sk-test-0000000000",
        OPENAI_BASE_URL=upstream.url + "/v1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "Milk."
    assert upstream.bodies[0]["messages"][-1]["content"].startswith(
        '<resource uri="note://todo" server="fx">\n1. buy milk')
    refused = await asyncio.to_thread(mcp_cli, "chat", "--resource", "fx:x://y",
                                      "-t", "mcp:fx/summarize", "-p", "topic", "t")
    assert refused.returncode == 2 and "--resource attaches context to a PROMPT" in \
        refused.stderr
    unknown = await asyncio.to_thread(mcp_cli, "chat", "--resource", "fx:x://y",
                                      "hi", OPENAI_API_KEY="sk-test-0000000000",
                                      OPENAI_BASE_URL=upstream.url + "/v1")
    assert unknown.returncode == 1
    assert "resources/read of 'x://y' failed: McpError: Unknown resource: x://y" in \
        unknown.stderr
    assert len(upstream.bodies) == 1  # nothing sent for it


async def test_prompts_resources_and_a_named_model_over_streamable_http(
        upstream: FaultyUpstream, mcp_http_server: Callable[[str], Any]) -> None:
    from modelplex.pipeline import open_model
    from modelplex.types import ChatMessage

    async with mcp_http_server("--http") as port:
        cfg = parse_config({
            "mcp": {"web": {"url": f"http://127.0.0.1:{port}/mcp", "timeout": 10}},
            "providers": {"openai": {"base_url": upstream.url + "/v1",
                                     "api_key": "sk-test-0000000000"}},
            "models": {"helper": {"model": "openai:scripted", "mcp": ["web"]}}})
        async with McpHub(cfg) as hub:
            assert await hub.prompt("web", "summarize", {"topic": "fog"}) == \
                "Summarize fog in a short paragraph."
            text, _ = await hub.resource("web:note://todo", vision=False)
            assert "1. buy milk" in text
        upstream.replies.extend([
            Reply(tool_calls=[{"id": "a", "name": "add", "arguments": {"a": 3, "b": 4}}]),
            Reply("7")])
        async with await open_model("helper", config=cfg, cache=False) as lease:
            request = lease.provider.build_request([ChatMessage.user("3+4?")],
                                                   model=lease.model)
            chunks = [c async for c in lease.provider.stream_request(request)]
        assert "".join(c.content for c in chunks) == "7"
        [tool] = [m for m in upstream.bodies[1]["messages"] if m["role"] == "tool"]
        assert tool["content"] == "7"
