"""Every method of the official ``ollama`` client (sync ``Client`` and ``AsyncClient``)
against the server's Ollama-compatible API (``/ollama``): the shapes its pydantic models read,
the tool loop as Ollama clients write it, load/unload, the legacy embeddings, the model
routes, and a clear ``ResponseError`` for what modelplex does not do."""

from __future__ import annotations

import asyncio
import base64
import math
from collections.abc import AsyncIterator
from typing import Any

import httpx
import ollama
import pytest

from modelplex.config import parse_config
from modelplex.plugins import Plugins
from modelplex.pool import ProviderPool
from modelplex.testing.upstream import PIECE, FaultyUpstream
from modelplex_server.app import AppServer, create_app, server_registry, start
from modelplex_server.resolve import ModelResolver
from modelplex_server.settings import ServerSettings

USER = [{"role": "user", "content": "hi"}]
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGA"
                       "WjR9awAAAABJRU5ErkJggg==")


@pytest.fixture
async def oclient(server: AppServer) -> AsyncIterator[ollama.AsyncClient]:
    client = ollama.AsyncClient(host=server.url + "/ollama")
    yield client
    await client._client.aclose()


async def test_the_tool_loop_as_ollama_clients_write_it(oclient: ollama.AsyncClient,
                                                        upstream: FaultyUpstream) -> None:
    """The client's tool calls carry no ``id`` and its tool results only ``tool_name`` (was a
    400 "a tool message needs tool_call_id"): each result answers the call of its name."""
    history: Any = [*USER, {"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "weather", "arguments": {"city": "Oslo"}}},
        {"function": {"name": "time", "arguments": {}}}]},
        {"role": "tool", "content": "12:00", "tool_name": "time"},
        {"role": "tool", "content": "rain", "tool_name": "weather"}]
    reply = await oclient.chat(model="fault:fault", messages=history)
    assert reply.message.content == PIECE * 5
    sent = upstream.bodies[-1]["messages"]
    ids = [c["id"] for c in sent[1]["tool_calls"]]
    assert len(set(ids)) == 2
    assert [(m["tool_call_id"], m["content"]) for m in sent[2:]] == \
        [(ids[1], "12:00"), (ids[0], "rain")]
    # a result without a name answers the first call not answered yet
    reply = await oclient.chat(model="fault:fault", messages=[
        *USER, {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "weather", "arguments": {"city": "Oslo"}}}]},
        {"role": "tool", "content": "rain"}])
    assert reply.done
    assert upstream.bodies[-1]["messages"][2]["tool_call_id"] == \
        upstream.bodies[-1]["messages"][1]["tool_calls"][0]["id"]


async def test_load_and_unload_requests(oclient: ollama.AsyncClient) -> None:
    """An empty ``messages`` list or ``prompt`` is Ollama's load request (was a 400): the
    model is found and the answer is ``done`` with ``done_reason`` load (unload with
    ``keep_alive`` 0); an unknown model is still a 404."""
    loaded = await oclient.chat(model="fault:fault", messages=[])
    assert loaded.done and loaded.done_reason == "load" and loaded.message.content == ""
    unloaded = await oclient.generate(model="fault:fault", keep_alive=0)
    assert unloaded.done and unloaded.done_reason == "unload" and unloaded.response == ""
    parts = [p async for p in await oclient.chat(model="fault:fault", messages=[],
                                                  stream=True, keep_alive="0s")]
    assert [p.done_reason for p in parts] == ["unload"]
    with pytest.raises(ollama.ResponseError) as info:
        await oclient.generate(model="fault-none:x")
    assert info.value.status_code == 404


async def test_an_unknown_model_is_ollamas_404(oclient: ollama.AsyncClient) -> None:
    """A model name without a provider (what Ollama users type) was a 400; every route
    answers Ollama's 404 ``model "NAME" not found``, with why and where to look."""
    calls = [oclient.chat(model="llama3.2", messages=USER),
             oclient.generate(model="llama3.2", prompt="x"),
             oclient.embed(model="llama3.2", input="x"), oclient.show("llama3.2"),
             oclient.show("fault:nothere"), oclient.chat(model="nope:x", messages=USER),
             oclient.chat(model="llama3.2", messages=USER, stream=True),
             oclient.generate(model="llama3.2", prompt="x", stream=True)]
    for call in calls:
        with pytest.raises(ollama.ResponseError) as info:
            result = await call
            async for _ in result:  # a stream; a whole answer raised already
                pass
        assert info.value.status_code == 404
        assert info.value.error.startswith('model "') and " not found: " in info.value.error
        assert "/ollama/api/tags" in info.value.error


async def test_final_objects_carry_ollamas_durations(oclient: ollama.AsyncClient) -> None:
    """The last object has every metric Ollama's has (clients compute tokens per second as
    ``eval_count / eval_duration``): durations in nanoseconds, integers."""
    whole = await oclient.chat(model="fault:fault", messages=USER)
    parts = [p async for p in await oclient.generate(model="fault:fault", prompt="x",
                                                      stream=True)]
    for last in (whole, parts[-1]):
        assert last.created_at and last.done_reason == "stop"
        for field in ("total_duration", "load_duration", "prompt_eval_duration",
                      "eval_duration", "prompt_eval_count", "eval_count"):
            assert isinstance(last[field], int), field
        assert last.eval_duration and last.total_duration
        assert last.prompt_eval_duration + last.eval_duration <= last.total_duration
    assert all(p.total_duration is None for p in parts[:-1])


async def test_embeddings_legacy_and_dimensions(oclient: ollama.AsyncClient) -> None:
    """``embeddings`` (the legacy route) was a 404 "no such endpoint"; ``embed`` honours
    ``dimensions`` as Ollama does (the first N values, scaled to length 1)."""
    legacy = await oclient.embeddings(model="fault:fault", prompt="hello")
    full = await oclient.embed(model="fault:fault", input="hello")
    assert list(legacy.embedding) == list(full.embeddings[0]) and len(legacy.embedding) > 4
    assert (await oclient.embeddings(model="fault:fault", prompt="")).embedding == []
    short = await oclient.embed(model="fault:fault", input=["hello", "world"], dimensions=4,
                                truncate=True)
    assert [len(v) for v in short.embeddings] == [4, 4]
    assert math.isclose(math.hypot(*short.embeddings[0]), 1.0)
    assert isinstance(short.total_duration, int)
    with pytest.raises(ollama.ResponseError) as info:
        await oclient.embed(model="fault:fault", input="x", dimensions=0)
    assert info.value.status_code == 400 and "dimensions" in info.value.error


async def test_model_routes(oclient: ollama.AsyncClient, server: AppServer) -> None:
    """``ps`` and ``pull`` were 404 "no such endpoint". ``ps`` lists nothing; pulling a
    served model succeeds (it is there), an unknown one is a 404; the routes that change
    models are a 501 saying why, streamed or not, and ``GET /`` answers as Ollama does
    (the ollama CLI sends ``HEAD /`` before every command: it was a 404)."""
    assert (await oclient.ps()).models == []
    assert (await oclient.pull("fault:fault")).status == "success"
    assert [p.status async for p in await oclient.pull("fault:fault", stream=True)] == \
        ["success"]
    with pytest.raises(ollama.ResponseError) as info:
        await oclient.pull("llama3.2")
    assert info.value.status_code == 404
    refused = [oclient.push("fault:fault"), oclient.push("fault:fault", stream=True),
               oclient.create(model="mine", from_="fault:fault"),
               oclient.create(model="mine", from_="fault:fault", stream=True),
               oclient.copy("fault:fault", "mine"), oclient.delete("fault:fault")]
    for call in refused:
        with pytest.raises(ollama.ResponseError) as info:
            result = await call
            if not isinstance(result, ollama.ProgressResponse | ollama.StatusResponse):
                async for _ in result:
                    pass
        assert info.value.status_code == 501 and "modelplex does not" in info.value.error
    async with httpx.AsyncClient() as http:
        version = (await http.get(server.url + "/ollama/api/version")).json()["version"]
        assert isinstance(version, str) and version.startswith("0.0.0-modelplex-")
        for url in (server.url + "/ollama/", server.url + "/ollama"):
            root = await http.get(url)
            assert root.status_code == 200 and root.text == "Ollama is running"
            assert (await http.head(url)).status_code == 200  # the ollama CLI's heartbeat


async def test_generate_with_suffix_is_refused(oclient: ollama.AsyncClient) -> None:
    """``suffix`` (fill in the middle) was silently dropped; it is Ollama's 400 for a model
    without insert."""
    with pytest.raises(ollama.ResponseError) as info:
        await oclient.generate(model="fault:fault", prompt="def f(", suffix="return 1")
    assert info.value.status_code == 400 and "does not support insert" in info.value.error


async def test_thinking_reaches_ollama_clients(thinker: str) -> None:
    """A model's reasoning is ``message.thinking`` in whole answers too (it was dropped), and
    ``think=False`` leaves it out, streamed or not."""
    client = ollama.AsyncClient(host=thinker + "/ollama")
    try:
        whole = await client.chat(model="thinker", messages=USER)
        assert (whole.message.thinking, whole.message.content) == ("6 times 7", "42")
        said = await client.generate(model="thinker", prompt="6*7?")
        assert (said.thinking, said.response) == ("6 times 7", "42")
        hidden = await client.chat(model="thinker", messages=USER, think=False)
        assert hidden.message.thinking is None and hidden.message.content == "42"
        parts = [p async for p in await client.chat(model="thinker", messages=USER,
                                                     think=False, stream=True)]
        assert not any(p.message.thinking for p in parts)
        assert "".join(p.message.content or "" for p in parts) == "42"
    finally:
        await client._client.aclose()


def _every_sync_method(host: str) -> dict[str, Any]:
    """The sync client's methods, each called once (in a thread: the server shares the test's
    event loop)."""
    with ollama.Client(host=host, timeout=60) as client:
        out: dict[str, Any] = {
            "list": client.list(), "show": client.show("fault:fault"), "ps": client.ps(),
            "chat": client.chat(model="fault:fault", messages=USER, format="json",
                                options={"temperature": 0, "num_ctx": 2048, "seed": 1},
                                keep_alive="5m", think=True),
            "chat_stream": list(client.chat(model="fault:fault", messages=USER, stream=True,
                                            format={"type": "object"})),
            "image": client.chat(model="fault:fault", messages=[
                {"role": "user", "content": "what is it?", "images": [PNG]}]),
            "generate_stream": list(client.generate(model="fault:fault", prompt="x",
                                                    stream=True)),
            "embed": client.embed(model="fault:fault", input="x", truncate=True),
            "embeddings": client.embeddings(model="fault:fault", prompt="x"),
        }
        out["generate"] = client.generate(model="fault:fault", prompt="y", system="s",
                                          context=out["generate_stream"][-1].context,
                                          images=[PNG])
        try:
            client.generate(model="fault:fault", prompt="x", template="{{ .Prompt }}",
                            raw=True)
        except ollama.ResponseError as err:
            out["raw"] = err
        try:
            client.delete("fault:fault")
        except ollama.ResponseError as err:
            out["delete"] = err
        try:
            client.show("llama3.2")
        except ollama.ResponseError as err:
            out["missing"] = err
        return out


async def test_the_sync_client(server: AppServer, upstream: FaultyUpstream) -> None:
    out = await asyncio.to_thread(_every_sync_method, server.url + "/ollama")
    assert "fault:fault" in [m.model for m in out["list"].models]
    assert all(m.modified_at is not None and isinstance(m.size, int) and m.details
               for m in out["list"].models)
    assert out["show"].details.format == "gguf" and out["show"].modified_at is not None
    assert out["ps"].models == []
    assert out["chat"].message.content == PIECE * 5 and out["chat"].eval_count == 5
    assert "".join(p.message.content for p in out["chat_stream"]) == PIECE * 5
    assert out["image"].done and out["generate"].response == PIECE * 5
    assert "".join(p.response for p in out["generate_stream"]) == PIECE * 5
    assert list(out["embed"].embeddings[0]) == list(out["embeddings"].embedding)
    assert out["delete"].status_code == 501 and out["missing"].status_code == 404
    assert out["raw"].status_code == 400 and out["raw"].error.startswith("raw: ")
    assert [(m["role"], m["content"].strip()) for m in upstream.bodies[-1]["messages"][:3]] \
        == [("system", "s"), ("user", "x"), ("assistant", (PIECE * 5).strip())]  # context
    images = [m for body in upstream.bodies for m in body["messages"]
              if isinstance(m["content"], list)]
    assert len(images) == 2  # the chat's and the generate's image reached the upstream


@pytest.fixture
async def via_ollama(monkeypatch: pytest.MonkeyPatch, upstream: FaultyUpstream,
                     plugins: Any) -> AsyncIterator[ollama.AsyncClient]:
    """The ollama client against a server whose ``ollama`` provider is the upstream (it
    speaks Ollama's wire), so what reaches an Ollama server can be read."""
    monkeypatch.setenv("MODELPLEX_LOAD_PLUGINS", "openai,ollama,server")
    config = parse_config({"providers": {"ollama": {"host": upstream.url}}}, source="t.toml")
    resolver = ModelResolver(config=config, plugins=Plugins(), pool=ProviderPool())
    server = await start(create_app(ServerSettings(port=0, health_interval=None),
                                    resolver=resolver,
                                    registry=server_registry(resolver, providers=[])))
    client = ollama.AsyncClient(host=server.url + "/ollama")
    try:
        yield client
    finally:
        await client._client.aclose()
        await server.stop()


async def test_generate_context_raw_template_logprobs_truncate(
        oclient: ollama.AsyncClient, via_ollama: ollama.AsyncClient,
        upstream: FaultyUpstream) -> None:
    """Generate's fields were ignored silently: ``context`` now comes back with every answer
    (streamed or not) and, sent back, is the history of the next prompt; ``raw: true``, a
    ``template`` and ``logprobs: true`` (chat too) are a 400 naming the field, their
    defaults pass; a context this server did not make is a 400 naming ``context``;
    ``truncate``, ``shift`` and ``think`` reach an Ollama provider; ``truncate``/``shift``
    false for a provider without them (it may truncate anyway), and embed's ``truncate``
    false, are a 400 naming the field."""
    first = await oclient.generate(model="fault:fault", prompt="My name is Ann.", system="s")
    assert first.context and all(0 <= n <= 255 for n in first.context)
    parts = [p async for p in await oclient.generate(
        model="fault:fault", prompt="What is my name?", context=first.context, stream=True)]
    assert parts[-1].done and parts[-1].context and not any(p.context for p in parts[:-1])
    sent = [(m["role"], m["content"].strip()) for m in upstream.bodies[-1]["messages"]]
    assert sent == [("system", "s"), ("user", "My name is Ann."),
                    ("assistant", (PIECE * 5).strip()), ("user", "What is my name?")]
    third = await oclient.generate(model="fault:fault", prompt="And now?", system="t",
                                   context=parts[-1].context, raw=False, template="",
                                   logprobs=False)
    assert third.response == PIECE * 5
    assert [m["content"] for m in upstream.bodies[-1]["messages"] if m["role"] != "assistant"] \
        == ["t", "My name is Ann.", "What is my name?", "And now?"]  # "t" replaced "s"

    calls: list[tuple[Any, str]] = [
        (oclient.generate(model="fault:fault", prompt="x", raw=True), "raw"),
        (oclient.generate(model="fault:fault", prompt="x", template="{{ .Prompt }}"),
         "template"),
        (oclient.generate(model="fault:fault", prompt="x", logprobs=True), "logprobs"),
        (oclient.chat(model="fault:fault", messages=USER, logprobs=True, top_logprobs=3),
         "logprobs"),
        (oclient.generate(model="fault:fault", prompt="x", context=[1, 2, 3]), "context"),
        (oclient.generate(model="fault:fault", prompt="x", context=[1, 300]), "context"),
        (oclient.generate(model="fault:fault", prompt="x",
                          context=list(b"mpx1[[\"user\", 5]]")), "context"),
        (oclient.chat(model="fault:fault", messages=USER, top_logprobs=21), "top_logprobs"),
        (oclient.embed(model="fault:fault", input="x", truncate=False), "truncate")]
    for call, field in calls:
        with pytest.raises(ollama.ResponseError) as err:
            await call
        assert err.value.status_code == 400 and field in err.value.error, err.value.error

    resp = await via_ollama._client.post("/api/chat", json={  # the client has no truncate
        "model": "ollama:m", "messages": USER, "truncate": False, "shift": False,
        "stream": False})
    assert resp.status_code == 200, resp.text
    assert (upstream.bodies[-1]["truncate"], upstream.bodies[-1]["shift"]) == (False, False)
    await via_ollama.chat(model="ollama:m", messages=USER, think="high")
    assert upstream.bodies[-1]["think"] == "high"  # was only whether thinking is shown
    await via_ollama.embed(model="ollama:m", input="x", truncate=True)
    with pytest.raises(ollama.ResponseError) as err:  # no provider promises it: refused
        await via_ollama.embed(model="ollama:m", input="x", truncate=False)
    assert err.value.status_code == 400 and err.value.error.startswith("truncate: ")
