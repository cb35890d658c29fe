"""The official ``ollama`` Python client against the server's Ollama-compatible API
(``/ollama``): tags, show, chat streamed and not, tools, generate, embed, errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import ollama
import pytest

from modelplex.testing.upstream import PIECE, FaultyUpstream
from modelplex_server.app import AppServer

USER = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def oclient(server: AppServer) -> AsyncIterator[ollama.AsyncClient]:
    client = ollama.AsyncClient(host=server.url + "/ollama")
    yield client
    await client._client.aclose()


async def test_tags_and_show(oclient: ollama.AsyncClient) -> None:
    listed = await oclient.list()
    names = [m.model for m in listed.models]
    assert {"fault:fault", "llamacpp:smollm2"} <= set(names)
    smol = next(m for m in listed.models if m.model == "llamacpp:smollm2")
    assert smol.details is not None and smol.details.quantization_level == "Q4_1"
    shown = await oclient.show("llamacpp:smollm2")
    assert shown.modelinfo is not None and shown.modelinfo["llama.context_length"] == 8192
    # in Ollama's words (modelplex's are "chat", "embeddings", "json")
    assert shown.capabilities == ["completion", "embedding"]
    raw = (await oclient._client.get("/api/tags")).json()["models"]  # the client drops them
    assert next(m for m in raw if m["model"] == "llamacpp:smollm2")["capabilities"] == \
        ["completion", "embedding"]
    with pytest.raises(ollama.ResponseError) as info:
        await oclient.show("llamacpp:nope")
    assert info.value.status_code == 404


async def test_chat(oclient: ollama.AsyncClient) -> None:
    reply = await oclient.chat(model="fault:fault", messages=USER)
    assert reply.message.content == PIECE * 5
    assert reply.done and reply.prompt_eval_count == 3 and reply.eval_count == 5
    parts = [part async for part in await oclient.chat(model="fault:fault", messages=USER,
                                                        stream=True)]
    assert "".join(p.message.content or "" for p in parts) == PIECE * 5
    assert parts[-1].done and parts[-1].done_reason == "stop" and parts[-1].eval_count == 5
    assert not any(p.done for p in parts[:-1])


async def test_chat_tools(oclient: ollama.AsyncClient, tool_upstream: Any) -> None:
    tools: Any = [{"type": "function", "function": {
        "name": "GetWeatherArgs", "description": "Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    parts = [p async for p in await oclient.chat(model="tools:gpt-4o", messages=USER,
                                                  tools=tools, stream=True)]
    calls = [c for p in parts for c in p.message.tool_calls or ()]
    assert [(c.function.name, dict(c.function.arguments)) for c in calls] == \
        [("GetWeatherArgs", {"city": "Edinburgh"})]
    assert tool_upstream.bodies[-1]["tools"] == tools


async def test_generate_and_options(oclient: ollama.AsyncClient,
                                    upstream: FaultyUpstream) -> None:
    reply = await oclient.generate(model="fault:fault", prompt="Why?", system="Be brief.",
                                   options={"temperature": 0.1, "num_predict": 9, "top_k": 3})
    assert reply.response == PIECE * 5 and reply.done
    body = upstream.bodies[-1]
    assert body["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "Why?"}]
    assert body["temperature"] == 0.1
    assert 9 in (body.get("max_tokens"), body.get("max_completion_tokens"))
    parts = [p async for p in await oclient.generate(model="fault:fault", prompt="Why?",
                                                      stream=True)]
    assert "".join(p.response for p in parts) == PIECE * 5


async def test_errors(oclient: ollama.AsyncClient, upstream: FaultyUpstream) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        await oclient.chat(model="nope:x", messages=USER)
    assert info.value.status_code == 404 and "unknown provider 'nope'" in info.value.error
    with pytest.raises(ollama.ResponseError) as info:
        await oclient.chat(model="fault:fault", messages=[{"role": "robot", "content": "x"}])
    assert info.value.status_code == 400 and "invalid role 'robot'" in info.value.error
    upstream.faults.append("error_event")
    with pytest.raises(ollama.ResponseError, match="the model crashed"):
        async for _ in await oclient.chat(model="fault:fault", messages=USER, stream=True):
            pass


@pytest.mark.slow
async def test_embed_with_the_real_model(oclient: ollama.AsyncClient) -> None:
    reply = await oclient.embed(model="llamacpp:smollm2", input=["hello", "world"])
    assert len(reply.embeddings) == 2 and len(reply.embeddings[0]) == 576


async def test_an_unexpected_failure_is_logged_with_its_traceback(
        oclient: ollama.AsyncClient, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A defect in an Ollama handler is a 500 in Ollama's shape, and its traceback is logged
    (as the other APIs' errors middleware does), not swallowed."""
    from modelplex_server import ollama_api

    def broken(messages: Any) -> Any:
        raise RuntimeError("a defect in the handler")

    monkeypatch.setattr(ollama_api, "_messages", broken)
    with caplog.at_level("ERROR", logger="modelplex.server"), \
            pytest.raises(ollama.ResponseError) as info:
        await oclient.chat(model="fault:fault", messages=USER)
    assert info.value.status_code == 500
    logged = [r for r in caplog.records if r.getMessage().startswith("unexpected error on POST")]
    assert logged and logged[0].exc_info is not None
    assert "a defect in the handler" in str(logged[0].exc_info[1])
