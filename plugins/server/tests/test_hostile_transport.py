"""A hostile user against the transport of ``modelplex serve``: compressed bodies (a gzip
bomb, a garbled one), odd ``Authorization`` headers, HTTP the parser refuses, multipart
uploads to ``/v1/files`` and ``/ws`` frames; each answered with a 4xx in its API's own error
shape (or a 2xx where acceptable), never a 5xx, a traceback, a server-local path or a hang,
and the server still answers a good request afterwards (the ``probe`` fixture, conftest.py;
the bodies of every route: test_hostile_inputs.py).
"""

from __future__ import annotations

import asyncio
import gzip
import json
from typing import Any

import aiohttp
import pytest
from yarl import URL

from modelplex_server.connections import CONNECTIONS

USER = [{"role": "user", "content": "hi"}]
MODEL = "fault:fault"
LIMIT = 64 * 1024  # the probes' servers' max_body_bytes (conftest's HOSTILE_LIMIT)
DEEP = b'{"a": ' * 5000 + b"1" + b"}" * 5000


def _chat(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": USER, **fields}


async def test_hostile_encodings_and_headers(probe: Any) -> None:
    """A gzip bomb (small on the wire, far over the limit unpacked), a body of an unknown
    encoding, an oversized or garbled ``Authorization``, a lying ``Content-Length``."""
    bomb = gzip.compress(b'{"model": "' + b"a" * (LIMIT * 64) + b'"}')
    assert len(bomb) < LIMIT
    for path in ("/v1/chat/completions", "/v1/messages", "/ollama/api/chat", "/api/chat"):
        status = await probe.send("gzip bomb", "POST", path, data=bomb,
                                  headers={"Content-Encoding": "gzip"})
        if status != 413:
            probe.problems.append(f"gzip bomb on {path}: {status}, not 413")
        await probe.send("garbled gzip", "POST", path, data=b"\x1f\x8bnot gzip at all",
                         headers={"Content-Encoding": "gzip"})
        await probe.send("unknown encoding", "POST", path, data=b"{}",
                         headers={"Content-Encoding": "x-rot13"})
        await probe.send("garbled Authorization", "POST", path,
                         data=json.dumps(_chat()).encode(),
                         headers={"Authorization": "Bearer \u00e9\u00e9 " + "k" * 4000})
        await probe.send("unknown scheme", "POST", path, data=json.dumps(_chat()).encode(),
                         headers={"Authorization": "Basic Zm9vOmJhcg=="})
    await probe.still_answers("the encodings")
    probe.check()


RAW = [("a header line over 8190 bytes", b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\n"
         b"X-Big: " + b"a" * 20000 + b"\r\n\r\n"),
       ("a garbled Content-Length", b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Length: abc\r\n\r\n"),
       ("a garbled chunk size", b"POST /ollama/api/chat HTTP/1.1\r\nHost: localhost\r\n"
        b"Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\nzz\r\n{}"
        b"\r\n0\r\n\r\n"),
       ("two Content-Lengths", b"POST /v1/messages HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}")]


async def test_malformed_http(probe: Any, caplog: pytest.LogCaptureFixture) -> None:
    """What aiohttp's parser refuses is a 400 in OpenAI's shape (the parser gives up before
    the path is known), logged in one line (no traceback in the log: any client can send
    one)."""
    url = URL(probe.server.url)
    for case, raw in RAW:
        reader, writer = await asyncio.open_connection(url.host, url.port)
        writer.write(raw)
        head, _, body = (await asyncio.wait_for(reader.read(), 30)).partition(b"\r\n\r\n")
        writer.close()
        status = int(head.split(b" ", 2)[1])
        problem = probe.shape_problem("openai", json.loads(body))
        if status != 400 or problem:
            probe.problems.append(f"{case}: {status} {problem} {head!r:.200}")
    tracebacks = [r.getMessage() for r in caplog.records if r.exc_info]
    if tracebacks:
        probe.problems.append(f"tracebacks logged: {tracebacks}")
    await probe.still_answers("malformed HTTP")
    probe.check()


async def test_hostile_uploads(probe: Any) -> None:
    """``/v1/files``: not multipart, no file, a traversing file name, a wrong purpose."""
    await probe.send("JSON body", "POST", "/v1/files", data=b'{"purpose": "batch"}')
    await probe.send("not multipart", "POST", "/v1/files", data=b"hello",
                     content_type="multipart/form-data; boundary=x")
    await probe.send("no boundary", "POST", "/v1/files", data=b"--x\r\n",
                     content_type="multipart/form-data")
    for case, purpose, name, content in [
            ("no purpose", None, "a.jsonl", b"{}\n"),
            ("unknown purpose", "root", "a.jsonl", b"{}\n"),
            ("traversing file name", "batch", "../../etc/passwd", b"{}\n"),
            ("NUL in the file name", "batch", "a\x00.jsonl", b"{}\n"),
            ("not JSON lines", "batch", "a.jsonl", b"\xff\xfe not json\n"),
            ("deep JSON line", "batch", "a.jsonl", DEEP + b"\n"),
            ("empty file", "batch", "a.jsonl", b"")]:
        parts = [] if purpose is None else [
            b'--b0undary\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n'
            + purpose.encode() + b"\r\n"]
        parts.append(b'--b0undary\r\nContent-Disposition: form-data; name="file"; '
                     b'filename="' + name.encode() + b'"\r\n'
                     b"Content-Type: application/jsonl\r\n\r\n" + content + b"\r\n")
        await probe.send(case, "POST", "/v1/files", data=b"".join([*parts, b"--b0undary--\r\n"]),
                         content_type="multipart/form-data; boundary=b0undary")
    await probe.still_answers("the uploads")
    probe.check()


async def test_hostile_websocket_frames(probe: Any) -> None:
    """``/ws``: each bad frame is an error frame naming what is wrong; the socket stays up."""
    frames: list[str | bytes] = [
        "not json", "[]", "null", "42", '"s"', "{}", '{"type": "nuke"}',
        '{"type": "send_message"}', '{"type": "send_message", "message": 5}',
        '{"type": "send_message", "message": "hi", "model": "\\ud800"}',
        '{"type": "send_message", "message": "hi", "conversation_id": "../../etc/passwd"}',
        '{"type": "stop", "conversation_id": {"a": 1}}', '{"type": NaN}',
        '{"type": "ping", "n": 1e309}', '{"a": ' * 3000 + "1" + "}" * 3000,
        '{"type": "ping", "n": 1' + "0" * 400 + "}", b"\x00\x01binary"]
    async with probe.session.ws_connect(probe.server.url + "/ws") as ws:
        for frame in frames:
            probe.sent += 1
            if isinstance(frame, bytes):
                await ws.send_bytes(frame)
            else:
                await ws.send_str(frame)
            try:
                async with asyncio.timeout(30):
                    msg = await ws.receive()
            except TimeoutError:
                probe.problems.append(f"/ws {frame[:40]!r}: no answer in 30 s")
                break
            if msg.type != aiohttp.WSMsgType.TEXT:
                probe.problems.append(f"/ws {frame[:40]!r}: {msg.type} {msg.data!r:.200}")
                break
            text = msg.data
            data = json.loads(text)
            if "Traceback" in text or any(local in text for local in probe.local_paths):
                probe.problems.append(f"/ws {frame[:40]!r}: {text[:300]}")
            if data.get("type") == "error" and not (isinstance(data.get("error"), dict) and
                                                    data["error"].get("message")):
                probe.problems.append(f"/ws {frame[:40]!r}: an error without a message: "
                                      f"{text[:300]}")
            if data.get("type") == "error" and data["error"].get("status", 400) >= 500:
                probe.problems.append(f"/ws {frame[:40]!r}: {text[:300]}")
        # valid frames with hostile fields: answered (chunks then done) or refused, each
        for fields in [{"options": {"temperature": "hot"}}, {"options": {"max_tokens": 2**62}},
                       {"message": "a\x00b"}, {"history": [{"role": "hacker", "content": 1}]},
                       {"options": [1, 2]}, {"request_id": "r" * 5000},
                       {"conversation_id": "a\x00b"}, {"model": "../../etc/passwd"},
                       {"options": {"stop": ["x"] * 5000}}]:
            frame = json.dumps({"type": "send_message", "model": MODEL, "message": "hi",
                                **fields})
            await ws.send_str(frame)
            while True:
                probe.sent += 1
                msg = await ws.receive(timeout=30)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    probe.problems.append(f"/ws {fields!r:.60}: {msg.type} {msg.data!r:.200}")
                    break
                data = json.loads(msg.data)
                if (data.get("type") == "error" and data.get("status", 400) >= 500) or \
                        "Traceback" in msg.data:
                    probe.problems.append(f"/ws {fields!r:.60}: {msg.data[:300]}")
                if data.get("type") in ("done", "error", "stopped"):
                    break
        await ws.send_str('{"type": "ping"}')
        msg = await ws.receive(timeout=30)
        if msg.type != aiohttp.WSMsgType.TEXT or json.loads(msg.data).get("type") != "pong":
            probe.problems.append(f"/ws: no pong after the bad frames: {msg.data!r:.200}")
    await probe.still_answers("the /ws frames")
    probe.check()


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/ollama/api/chat"])
async def test_a_client_that_stops_reading_is_cut_off(serve: Any, upstream: Any,
                                                      gateway: Any, path: str) -> None:
    """A client that asks for a long stream and then reads nothing held its request, its
    concurrency slot and the upstream request for ever (writing waited on full buffers with
    no time limit): after ``body_timeout`` seconds without reading it is cut off, and the
    slot and the upstream connection are freed."""
    from modelplex.testing import Reply

    server = await serve(body_timeout=1)
    upstream.replies.append(Reply(pieces=["x" * 65536] * 400))  # 26 MB: more than buffers hold
    host, port = URL(server.url).host, URL(server.url).port
    assert host is not None and port is not None
    reader, writer = await asyncio.open_connection(host, port)
    body = json.dumps(_chat(stream=True)).encode()
    writer.write(f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json"
                 f"\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    await writer.drain()
    assert (await reader.readline()).startswith(b"HTTP/1.1 200")  # then it reads no more
    async with asyncio.timeout(120):  # a guard against a hang, not a speed check
        while gateway(server).in_flight or upstream.open_connections:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    assert server.runner.app[CONNECTIONS].stalled == 1
    writer.close()
