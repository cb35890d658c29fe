"""Slow, silent and surplus connections (issue 19 #6), over raw sockets with short timeouts:
a silent socket, dripped headers, a partial body, an idle keep-alive connection and an
unauthenticated WebSocket are closed; at the connection caps the longest idle connection
gives way, so /health keeps answering, and only when every connection is busy is a new one
refused (503)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from modelplex.testing.upstream import FaultyUpstream
from modelplex_server.app import AppServer
from modelplex_server.connections import CONNECTIONS, default_max_connections
from modelplex_server.settings import KeyConfig, ServerSettings, generate_key, hash_key

FAST = {"header_timeout": 0.5, "body_timeout": 0.5, "idle_timeout": 1.0}


async def opened(server: AppServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> tuple[float, bytes]:
    """Read until the server closes the connection: (seconds it took, what it sent)."""
    start = time.monotonic()
    data = b""
    async with asyncio.timeout(seconds):
        while chunk := await reader.read(65536):
            data += chunk
    return time.monotonic() - start, data


async def health(server: AppServer) -> int:
    async with aiohttp.ClientSession() as session, session.get(
            server.url + "/health", timeout=aiohttp.ClientTimeout(total=5)) as resp:
        return resp.status


def guard_of(server: AppServer) -> Any:
    return server.runner.app[CONNECTIONS]


async def test_a_silent_socket_is_closed(serve: Callable[..., Any]) -> None:
    server = await serve(**FAST)
    reader, writer = await opened(server)
    took, data = await closed_within(reader, 5)
    assert data == b"" and took < 2
    writer.close()


async def test_dripped_headers_are_closed_although_bytes_keep_coming(
        serve: Callable[..., Any]) -> None:
    server = await serve(**FAST)
    reader, writer = await opened(server)
    start = time.monotonic()

    async def drip() -> None:
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        for _ in range(100):
            await asyncio.sleep(0.05)
            writer.write(b"X")  # a header that never ends
            await writer.drain()

    dripping = asyncio.ensure_future(drip())
    try:
        await closed_within(reader, 5)
    finally:
        dripping.cancel()
        writer.close()
    assert time.monotonic() - start < 2


async def test_a_partial_body_is_answered_408_and_closed(serve: Callable[..., Any]) -> None:
    server = await serve(**FAST)
    reader, writer = await opened(server)
    writer.write(b"POST /api/conversations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                 b'{"model": ')
    took, data = await closed_within(reader, 5)
    writer.close()
    assert data.startswith(b"HTTP/1.1 408"), data
    assert b"stalled" in data
    assert took < 2


async def test_an_idle_keep_alive_connection_is_closed(serve: Callable[..., Any]) -> None:
    server = await serve(**FAST)
    reader, writer = await opened(server)
    writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    took, data = await closed_within(reader, 5)
    writer.close()
    assert data.startswith(b"HTTP/1.1 200") and b'"status":"ok"' in data.replace(b" ", b"")
    assert 0.8 < took < 3  # the idle timeout, not the header timeout


async def test_an_unauthenticated_websocket_is_closed(serve: Callable[..., Any]) -> None:
    key = generate_key()
    server = await serve(keys=[KeyConfig(name="a", hash=hash_key(key))], **FAST)
    async with aiohttp.ClientSession() as session, \
            session.ws_connect(server.url + "/ws") as ws:
        start = time.monotonic()
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4408
        assert time.monotonic() - start < 2


async def test_at_the_cap_an_idle_connection_gives_way_to_health(
        serve: Callable[..., Any]) -> None:
    server = await serve(max_connections_per_client=4, header_timeout=30)
    sockets = [await opened(server) for _ in range(40)]  # silent, more than the cap
    await asyncio.sleep(0.1)
    assert len(guard_of(server)) <= 4
    assert await health(server) == 200
    # the oldest were closed to make room; the server holds no more than the cap
    closed = 0
    for reader, _ in sockets:
        try:
            async with asyncio.timeout(0.2):
                closed += await reader.read(1) == b""
        except TimeoutError:
            pass
    assert closed >= 36
    for _, writer in sockets:
        writer.close()


async def test_a_total_cap_holds_across_addresses(serve: Callable[..., Any]) -> None:
    server = await serve(max_connections=6, header_timeout=30)
    for _ in range(30):
        await opened(server)
    await asyncio.sleep(0.1)
    assert len(guard_of(server)) <= 6
    assert await health(server) == 200


async def test_when_every_connection_is_busy_a_new_one_is_refused(
        serve: Callable[..., Any], upstream: FaultyUpstream) -> None:
    server = await serve(max_connections_per_client=2)
    upstream.faults.extend(["hang", "hang"])
    body = b'{"model": "fault:fault", "messages": [{"role": "user", "content": "hi"}]}'
    held = []
    for _ in range(2):
        reader, writer = await opened(server)
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\n\r\n" + body)
        held.append(writer)
    for _ in range(100):
        if upstream.active == 2:
            break
        await asyncio.sleep(0.02)
    assert upstream.active == 2
    reader, writer = await opened(server)
    took, data = await closed_within(reader, 5)
    assert data.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in data
    assert b"too_many_connections" in data and took < 1
    writer.close()
    for writer in held:
        writer.close()
    assert await upstream.wait_idle(5.0)
    assert await health(server) == 200


def test_the_limits_have_sane_defaults() -> None:
    settings = ServerSettings()
    assert (settings.header_timeout, settings.body_timeout, settings.idle_timeout) == \
        (10.0, 30.0, 60.0)
    assert settings.max_connections is None  # half the file limit
    assert default_max_connections() >= 32 and settings.max_connections_per_client == 512


async def test_connections_dripping_bodies_give_way_too(serve: Callable[..., Any]) -> None:
    server = await serve(max_connections_per_client=3, body_timeout=30)
    writers = []
    for _ in range(3):
        reader, writer = await opened(server)
        writer.write(b"POST /api/conversations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
        writers.append((reader, writer))
    await asyncio.sleep(0.2)
    assert len(guard_of(server)) == 3
    assert await health(server) == 200  # the oldest dripping connection made room
    took, _ = await closed_within(writers[0][0], 5)
    assert took < 1
    for _, writer in writers:
        writer.close()


async def test_an_idle_websocket_gives_way_at_the_cap(serve: Callable[..., Any]) -> None:
    server = await serve(max_connections_per_client=2)
    async with aiohttp.ClientSession() as session:
        sockets = [await session.ws_connect(server.url + "/ws") for _ in range(2)]
        for ws in sockets:
            await ws.send_json({"type": "ping"})
            assert (await ws.receive_json(timeout=5))["type"] == "pong"
        assert await health(server) == 200  # the socket idle the longest made room
        assert (await sockets[0].receive(timeout=5)).type in (
            aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.ERROR)
        await sockets[1].send_json({"type": "ping"})
        assert (await sockets[1].receive_json(timeout=5))["type"] == "pong"
        for ws in sockets:
            await ws.close()
