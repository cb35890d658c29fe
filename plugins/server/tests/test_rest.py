"""Seed 003's REST API, the WebSocket chat and the OpenAPI description, over real sockets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from modelplex.testing.upstream import PIECE, FaultyUpstream
from modelplex_server.app import AppServer
from modelplex_server.gateway import Gateway
from modelplex_server.openapi import build_openapi


@pytest.fixture
async def http(server: AppServer) -> AsyncIterator[Callable[..., Any]]:
    """``await http("GET", "/api/models")`` -> (status, JSON body)."""
    async with aiohttp.ClientSession(base_url=server.url) as session:

        async def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
            async with session.request(method, path, json=body) as resp:
                text = await resp.text()
                return resp.status, json.loads(text) if text else None

        yield call


async def sse_events(server: AppServer, body: dict[str, Any]) -> list[tuple[str, Any]]:
    """POST /api/chat and parse its Server-Sent Events."""
    events = []
    async with aiohttp.ClientSession() as session, session.post(
            server.url + "/api/chat", json=body) as resp:
        if resp.status != 200:
            return [("status", (resp.status, await resp.json()))]
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        name = None
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name or "message", json.loads(line[6:])))
    return events


async def test_models_grouped_by_provider(http: Callable[..., Any]) -> None:
    status, body = await http("GET", "/api/models")
    assert status == 200
    assert set(body["models"]) == {"fault", "tools", "down", "broken", "llamacpp"}
    assert [m["id"] for m in body["models"]["llamacpp"]] == ["llamacpp:smollm2"]
    smol = body["models"]["llamacpp"][0]
    assert smol["context_length"] == 8192 and smol["size"].endswith("MB")
    assert {"description", "max_tokens"} <= smol.keys()  # seed 003's model object
    assert "embeddings" in smol["capabilities"]
    assert body["models"]["down"] == []
    assert "cannot connect" in body["errors"]["down"]  # down is reported, the others list
    # the tools replay has no /v1/models; broken cannot be created
    assert set(body["errors"]) == {"down", "tools", "broken"}
    assert "ftp://nowhere" in body["errors"]["broken"]
    assert body["total"] == 2
    status, one = await http("GET", "/api/models/llamacpp")
    assert [m["name"] for m in one["models"]] == ["smollm2"] and one["error"] is None


async def test_search(http: Callable[..., Any]) -> None:
    status, body = await http("GET", "/api/models/search?q=smol&capability=embeddings")
    assert status == 200 and [m["id"] for m in body["models"]] == ["llamacpp:smollm2"]
    _, body = await http("GET", "/api/models/search?capability=embeddings")
    assert [m["id"] for m in body["models"]] == ["llamacpp:smollm2"]
    _, body = await http("GET", "/api/models/search?capability=audio")
    assert body["models"] == []
    _, body = await http("GET", "/api/models/search?provider=fault&local=true")
    assert [m["id"] for m in body["models"]] == ["fault:fault"]
    status, body = await http("GET", "/api/models/search?min_context=lots")
    assert status == 400 and body["error"]["param"] == "min_context"


async def test_model_details(http: Callable[..., Any]) -> None:
    status, body = await http("GET", "/api/models/llamacpp/smollm2")
    assert status == 200
    assert body["id"] == "llamacpp:smollm2" and body["quantization"] == "Q4_1"
    status, body = await http("GET", "/api/models/llamacpp/nope")
    assert status == 404 and body["error"]["code"] == "model_not_found"
    status, body = await http("GET", "/api/models/nope/x")
    assert status == 404 and body["error"]["code"] == "provider_not_found"


async def test_providers_and_health(http: Callable[..., Any]) -> None:
    status, body = await http("GET", "/api/providers")
    assert status == 200
    by_name = {p["provider"]: p for p in body["providers"]}
    assert by_name["llamacpp"]["available"] and by_name["llamacpp"]["health"]["available"]
    assert by_name["llamacpp"]["supports_embeddings"] is True
    assert by_name["down"]["health"]["status"] == "unhealthy"
    assert by_name["down"]["health"]["error"]
    assert by_name["broken"]["available"] is False and "supports_tools" not in by_name["broken"]
    status, one = await http("GET", "/api/providers/fault/health")
    assert status == 200 and one["status"] == "healthy" and one["latency_ms"] > 0
    assert one["checked_at"]
    _, every = await http("GET", "/api/providers/health?refresh=true")
    assert every["down"]["available"] is False and every["fault"]["available"] is True
    status, _ = await http("GET", "/api/providers/nope/health")
    assert status == 404


async def test_refresh(http: Callable[..., Any], server: AppServer,
                       gateway: Callable[[AppServer], Gateway]) -> None:
    await http("GET", "/api/models")
    before = gateway(server).registry._listings["fault"].fetched_at
    status, body = await http("POST", "/api/models/refresh?provider=fault")
    assert status == 200 and list(body["providers"]) == ["fault"]
    assert gateway(server).registry._listings["fault"].fetched_at > before
    status, body = await http("POST", "/api/models/refresh")
    assert set(body["providers"]) == {"fault", "tools", "down", "broken", "llamacpp"}


async def test_conversations_and_chat(http: Callable[..., Any], server: AppServer,
                                      upstream: FaultyUpstream) -> None:
    status, conv = await http("POST", "/api/conversations",
                              {"model": "fault:fault", "title": "Test",
                               "system_prompt": "Be brief."})
    assert status == 201 and conv["provider"] == "fault" and conv["messages"] == []
    events = await sse_events(server, {"conversation_id": conv["id"], "message": "Hello"})
    assert [n for n, _ in events] == ["chunk"] * 5 + ["done"]
    assert "".join(d["content"] for n, d in events if n == "chunk") == PIECE * 5
    done = events[-1][1]
    assert done["conversation_id"] == conv["id"] and done["finish_reason"] == "stop"
    assert done["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "estimated": False}
    await sse_events(server, {"conversation_id": conv["id"], "message": "Again"})
    assert [m["content"] for m in upstream.bodies[-1]["messages"]] == [
        "Be brief.", "Hello", PIECE.strip() + (" " + PIECE.strip()) * 4, "Again"]
    _, full = await http("GET", f"/api/conversations/{conv['id']}")
    assert [m["role"] for m in full["messages"]] == ["user", "assistant"] * 2
    _, details = await http("GET", "/api/models/fault/fault")  # seed 000: ModelStats
    assert details["stats"]["requests"] >= 2 and details["stats"]["total_tokens"] >= 16
    _, listing = await http("GET", "/api/conversations")
    assert listing["conversations"][0]["message_count"] == 4
    assert "messages" not in listing["conversations"][0]
    status, patched = await http("PATCH", f"/api/conversations/{conv['id']}",
                                 {"model": "llamacpp:smollm2", "title": "Renamed"})
    assert status == 200 and patched["provider"] == "llamacpp" and patched["title"] == "Renamed"
    status, bad = await http("PATCH", f"/api/conversations/{conv['id']}", {"messages": []})
    assert status == 400 and bad["error"]["param"] == "messages"
    status, _ = await http("DELETE", f"/api/conversations/{conv['id']}")
    assert status == 204
    status, _ = await http("GET", f"/api/conversations/{conv['id']}")
    assert status == 404
    status, body = await http("POST", "/api/conversations", {"model": "nope:x"})
    assert status == 404 and body["error"]["code"] == "model_not_found"


async def test_chat_with_a_history_and_errors(server: AppServer, upstream: FaultyUpstream,
                                              http: Callable[..., Any]) -> None:
    events = await sse_events(server, {"model": "fault:fault", "message": "And now?",
                                       "history": [{"role": "user", "content": "Hi"},
                                                   {"role": "assistant", "content": "Hello"}]})
    assert events[-1][0] == "done" and events[-1][1]["conversation_id"] is None
    [(kind, (status, body))] = await sse_events(server, {"model": "nope:x", "message": "hi"})
    assert kind == "status" and status == 404
    [(kind, (status, body))] = await sse_events(server, {"message": "hi"})
    assert status == 400 and body["error"]["param"] == "model"
    # the provider fails mid-answer: an error event; the user's message is kept
    _, conv = await http("POST", "/api/conversations", {"model": "fault:fault"})
    upstream.faults.append("error_event")
    events = await sse_events(server, {"conversation_id": conv["id"], "message": "Keep me"})
    assert [n for n, _ in events] == ["chunk", "chunk", "error"]
    assert "the model crashed" in events[-1][1]["error"]["message"]
    _, full = await http("GET", f"/api/conversations/{conv['id']}")
    assert [(m["role"], m["content"]) for m in full["messages"]] == [("user", "Keep me")]


async def test_websocket_chat_and_stop(server: AppServer, upstream: FaultyUpstream,
                                       http: Callable[..., Any]) -> None:
    _, conv = await http("POST", "/api/conversations", {"model": "fault:fault"})
    cid = conv["id"]
    async with aiohttp.ClientSession() as session, session.ws_connect(
            server.url + "/ws") as ws:
        await ws.send_json({"type": "ping"})
        assert (await ws.receive_json())["type"] == "pong"
        await ws.send_json({"type": "send_message", "conversation_id": cid, "message": "Hi"})
        events = []
        while not events or events[-1]["type"] not in ("done", "error"):
            events.append(await ws.receive_json(timeout=5))
        assert [e["type"] for e in events] == ["chunk"] * 5 + ["done"]
        assert all(e["conversation_id"] == cid for e in events)

        upstream.faults.append("stall_mid")  # two chunks, then silence: stop it
        await ws.send_json({"type": "send_message", "conversation_id": cid, "message": "More"})
        chunks = [await ws.receive_json(timeout=5) for _ in range(2)]
        assert [c["type"] for c in chunks] == ["chunk", "chunk"]
        await ws.send_json({"type": "send_message", "conversation_id": cid, "message": "x"})
        busy = await ws.receive_json(timeout=5)
        assert busy["type"] == "error" and busy["error"]["code"] == "busy"
        await ws.send_json({"type": "stop", "conversation_id": cid})
        stopped = await ws.receive_json(timeout=5)
        assert stopped["type"] == "stopped" and stopped["content"] == PIECE * 2
        assert await upstream.wait_idle(5.0)
        assert upstream.disconnects == 1  # the upstream request was cancelled

        await ws.send_json({"type": "dance"})
        assert (await ws.receive_json())["error"]["message"].startswith("unknown event type")
        await ws.send_str("not json")
        assert (await ws.receive_json())["type"] == "error"
    _, full = await http("GET", f"/api/conversations/{cid}")
    last = full["messages"][-1]
    assert (last["role"], last["content"], last["metadata"]) == \
        ("assistant", PIECE.strip() + " " + PIECE.strip(),
         {"partial": True, "model": "fault:fault", "provider": "fault", "usage": None})


async def test_websocket_auth_frame(serve: Callable[..., Any]) -> None:
    from modelplex_server.settings import KeyConfig, generate_key, hash_key

    key = generate_key()
    server = await serve(keys=[KeyConfig(name="web", hash=hash_key(key))])
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(server.url + "/ws") as ws:
            await ws.send_json({"type": "send_message", "model": "fault:fault",
                                "message": "hi"})
            refused = await ws.receive_json()
            assert refused["error"]["code"] == "invalid_api_key"
            await ws.receive()  # closed
            assert ws.closed and ws.close_code == 4401
        async with session.ws_connect(server.url + "/ws") as ws:
            await ws.send_json({"type": "auth", "api_key": key})
            assert (await ws.receive_json())["type"] == "authenticated"
            await ws.send_json({"type": "send_message", "model": "fault:fault",
                                "message": "hi", "request_id": "r1"})
            events = []
            while not events or events[-1]["type"] not in ("done", "error"):
                events.append(await ws.receive_json(timeout=5))
            assert events[-1]["type"] == "done" and events[-1]["request_id"] == "r1"


async def test_openapi_describes_every_route(server: AppServer, http: Callable[..., Any],
                                             gateway: Callable[[AppServer], Gateway]) -> None:
    status, doc = await http("GET", "/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.1")
    served = {(r.method.lower(), r.resource.canonical.replace("{model:.+}", "{model}"))
              for r in server.runner.app.router.routes()
              if r.method != "HEAD" and r.resource is not None}
    described = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert served == described
    chat = doc["paths"]["/v1/chat/completions"]["post"]
    ref = chat["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert {"model", "messages"} <= set(schema["required"])
    assert build_openapi() == doc


async def test_cors(serve: Callable[..., Any]) -> None:
    server = await serve(cors_origins=["http://ui.example"])
    async with aiohttp.ClientSession() as session:
        async with session.options(server.url + "/api/models", headers={
                "Origin": "http://ui.example",
                "Access-Control-Request-Method": "GET"}) as resp:
            assert resp.status == 204
            assert resp.headers["Access-Control-Allow-Origin"] == "http://ui.example"
        async with session.get(server.url + "/health",
                               headers={"Origin": "http://evil.example"}) as resp:
            assert "Access-Control-Allow-Origin" not in resp.headers
    await asyncio.sleep(0)


async def test_seed_003_provider_paths_and_health_fields(http: Callable[..., Any]) -> None:
    status, body = await http("GET", "/api/models/providers")
    assert status == 200
    _, today = await http("GET", "/api/providers")
    assert [p["provider"] for p in body["providers"]] == [p["provider"] for p in
                                                           today["providers"]]
    status, health = await http("GET", "/api/models/providers/health?refresh=true")
    assert status == 200
    llamacpp = health["llamacpp"]
    assert llamacpp["status"] == "healthy"
    assert llamacpp["supports_streaming"] is True and llamacpp["supports_embeddings"] is True
    assert llamacpp["default_model"]
    assert health["down"]["status"] == "unhealthy"
    assert health["broken"]["status"] == "error"  # the check raised: it cannot be created
    assert health["broken"]["default_model"] is None
    _, same = await http("GET", "/api/providers/health")
    assert same["broken"]["status"] == "error" and "supports_streaming" in same["fault"]
