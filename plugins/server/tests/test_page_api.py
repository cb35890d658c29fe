"""The web page's server side over real sockets: its files and headers, public with keys,
and ``regenerate`` on ``POST /api/chat`` (the browser itself: test_web_page.py)."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hatchling.builders.wheel import WheelBuilder

from modelplex.testing.upstream import PIECE, FaultyUpstream
from modelplex_server.app import AppServer
from modelplex_server.page import CSP, static_files
from modelplex_server.settings import KeyConfig, generate_key, hash_key


async def test_page_files_and_headers(server: AppServer) -> None:
    async with aiohttp.ClientSession(base_url=server.url) as session:
        async with session.get("/") as resp:
            assert resp.status == 200 and resp.content_type == "text/html"
            assert resp.headers["Content-Security-Policy"] == CSP
            assert "script-src 'self';" in CSP and "unsafe-inline" not in CSP
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            html = await resp.text()
            etag = resp.headers["ETag"]
        assert '<script type="module" src="/ui/app.js">' in html
        async with session.get("/", headers={"If-None-Match": etag}) as resp:
            assert resp.status == 304
        for name, kind in (("app.js", "text/javascript"), ("markdown.js", "text/javascript"),
                           ("style.css", "text/css")):
            async with session.get("/ui/" + name) as resp:
                assert resp.status == 200 and resp.content_type == kind, name
        for bad in ("/ui/nope.js", "/ui/..%2Fpage.py", "/ui/%2e%2e%2fapp.py"):
            async with session.get(bad) as resp:
                assert resp.status == 404, bad
                assert (await resp.json())["error"]["code"] == "not_found"


def test_page_never_inserts_html() -> None:
    """The page builds DOM nodes: no script of it parses strings as HTML."""
    files = static_files()
    assert {"index.html", "app.js", "api.js", "markdown.js", "selector.js", "style.css"} <= \
        set(files)
    for name, (data, _, _) in files.items():
        if name.endswith(".js"):
            text = data.decode()
            for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write",
                         "eval(", "new Function"):
                assert sink not in text, (name, sink)
        if name == "index.html":  # no inline script or style (the CSP forbids them)
            assert b"<script>" not in data and b"style=" not in data


async def test_page_is_public_but_the_api_needs_a_key(serve: Callable[..., Any]) -> None:
    key = generate_key()
    server = await serve(keys=[KeyConfig(name="alice", hash=hash_key(key))])
    async with aiohttp.ClientSession(base_url=server.url) as session:
        for path in ("/", "/ui/app.js"):
            async with session.get(path) as resp:
                assert resp.status == 200, path
        async with session.get("/api/models") as resp:
            assert resp.status == 401
        async with session.get("/api/conversations",
                               headers={"Authorization": "Bearer " + key}) as resp:
            assert resp.status == 200


async def _chat(server: AppServer, body: dict[str, Any]) -> tuple[int, list[tuple[str, Any]]]:
    events: list[tuple[str, Any]] = []
    async with aiohttp.ClientSession() as session, session.post(
            server.url + "/api/chat", json=body) as resp:
        if resp.status != 200:
            return resp.status, [("error", await resp.json())]
        name = "message"
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
    return 200, events


async def test_regenerate_replaces_the_last_answer(server: AppServer,
                                                   upstream: FaultyUpstream) -> None:
    async with aiohttp.ClientSession(base_url=server.url) as session:
        async with session.post("/api/conversations", json={"model": "fault:fault"}) as resp:
            conv = await resp.json()
        cid = conv["id"]
        assert (await _chat(server, {"conversation_id": cid, "message": "one"}))[0] == 200
        assert (await _chat(server, {"conversation_id": cid, "message": "two"}))[0] == 200
        upstream.chunks = 2
        status, events = await _chat(server, {"conversation_id": cid, "regenerate": True})
        assert status == 200 and events[-1][0] == "done"
        async with session.get(f"/api/conversations/{cid}") as resp:
            messages = (await resp.json())["messages"]
        assert [(m["role"], m["content"]) for m in messages] == [
            ("user", "one"), ("assistant", (PIECE * 5).strip()),
            ("user", "two"), ("assistant", (PIECE * 2).strip())]
        upstream.faults.append("500")  # a failed regenerate keeps the user's message
        status, _ = await _chat(server, {"conversation_id": cid, "regenerate": True})
        assert status == 502
        async with session.get(f"/api/conversations/{cid}") as resp:
            messages = (await resp.json())["messages"]
        assert [m["content"] for m in messages][-1] == "two"

        status, body = await _chat(server, {"model": "fault:fault", "regenerate": True})
        assert status == 400 and body[0][1]["error"]["param"] == "regenerate"
        async with session.post("/api/conversations", json={"model": "fault:fault"}) as resp:
            empty = await resp.json()
        status, body = await _chat(server, {"conversation_id": empty["id"], "regenerate": True})
        assert status == 400 and "no message" in body[0][1]["error"]["message"]
        status, body = await _chat(server, {"conversation_id": cid})
        assert status == 400 and body[0][1]["error"]["param"] == "message"


async def test_an_answer_longer_than_the_input_limit_is_kept(
        server: AppServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 19 #12: MODELPLEX_MAX_MESSAGE_LENGTH limits what the user sends; an answer longer
    than it was dropped after it streamed, and the user's message with it."""
    monkeypatch.setenv("MODELPLEX_MAX_MESSAGE_LENGTH", "5")
    async with aiohttp.ClientSession(base_url=server.url) as session:
        async with session.post("/api/conversations", json={"model": "fault:fault"}) as resp:
            cid = (await resp.json())["id"]
        status, events = await _chat(server, {"conversation_id": cid, "message": "hi"})
        assert status == 200 and events[-1][0] == "done"
        async with session.get(f"/api/conversations/{cid}") as resp:
            messages = (await resp.json())["messages"]
        assert [(m["role"], m["content"]) for m in messages] == [
            ("user", "hi"), ("assistant", (PIECE * 5).strip())]  # 19 characters
        status, _ = await _chat(server, {"conversation_id": cid, "message": "too long"})
        assert status == 400  # the limit still holds for what the user sends


def test_the_wheel_ships_the_page(tmp_path: Path) -> None:
    """``pip install modelplex-server`` gets the page: its files are in the wheel."""
    root = Path(__file__).resolve().parents[1]
    wheel = next(WheelBuilder(str(root)).build(directory=str(tmp_path), versions=["standard"]))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"modelplex_server/static/{name}" for name in static_files()} <= names
