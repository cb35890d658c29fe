"""``modelplex serve --workers N`` as users run it: workers share the port, a worker killed
with SIGKILL under load is restarted while the clients of the others see no error, and
SIGTERM drains every worker (requests in flight finish) within the graceful timeout."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from modelplex.errors import ConfigurationError
from modelplex.testing.upstream import FaultyUpstream, Reply
from modelplex_server.testing import ServeProcess
from modelplex_server.workers import READY, WORKER_ENV, Supervisor, reserve_port, worker_ready

pytestmark = pytest.mark.slow

BODY = {"model": "fault:fault", "messages": [{"role": "user", "content": "Hi"}]}


def serve_env(upstream: FaultyUpstream, tmp_path: Path) -> dict[str, str]:
    (tmp_path / "openai.toml").write_text("")
    return {"MODELPLEX_OPENAI_ENDPOINTS": json.dumps({"fault": {"base_url":
                                                                upstream.url + "/v1"}}),
            "MODELPLEX_OPENAI_CONFIG": str(tmp_path / "openai.toml"),
            "MODELPLEX_LOAD_PLUGINS": "openai,server",
            "MODELPLEX_DATA_DIR": str(tmp_path / "data")}


def start_workers(upstream: FaultyUpstream, tmp_path: Path, count: int) -> ServeProcess:
    config = tmp_path / "server.toml"
    config.write_text('[server]\naccess_log = false\nhealth_interval = 3600\n'
                      f'conversations = "{tmp_path / "conversations.db"}"\n')
    return ServeProcess("--config", str(config), "--port", "0", "--workers", str(count),
                        "--graceful-timeout", "10", env=serve_env(upstream, tmp_path))


async def pid_of(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url + "/healthz") as resp:
        return int((await resp.json())["pid"])


async def wait_for(condition: Any, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def sessions_on_both(server: ServeProcess
                           ) -> tuple[list[aiohttp.ClientSession], list[int]]:
    """Sessions of one kept connection each (so each talks to one worker), until both
    workers have some (60 connections in a row to one worker is a failure: the kernel picks
    each connection's worker by a hash of its addresses among the sockets that listen)."""
    sessions: list[aiohttp.ClientSession] = []
    pids: list[int] = []
    while len(set(pids)) < 2 or len(pids) < 6:
        if len(pids) >= 60:
            for session in sessions:
                await session.close()
            raise AssertionError(f"one worker took 60 connections in a row ({set(pids)}); "
                                 f"the server's log:\n{server.text}")
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
        sessions.append(session)
        pids.append(await pid_of(session, server.url))
    return sessions, pids


async def test_a_killed_worker_is_restarted(upstream: FaultyUpstream, tmp_path: Path) -> None:
    # every worker listens in the port's SO_REUSEPORT group before the parent says it serves
    server = await asyncio.to_thread(start_workers, upstream, tmp_path, 2)
    sessions: list[aiohttp.ClientSession] = []
    try:
        sessions, pids = await sessions_on_both(server)
        victim = pids[0]
        survivors = [s for s, pid in zip(sessions, pids, strict=True) if pid != victim]
        workers = set(pids)

        upstream.tail_delay = 0.02

        async def load(session: aiohttp.ClientSession) -> list[int]:
            statuses = []
            async with session.post(server.url + "/api/conversations",
                                    json={"model": "fault:fault"}) as resp:
                conversation = (await resp.json())["id"]
            conversations.append(conversation)
            for i in range(12):
                if i % 2:  # the gateway, and a stored conversation (one SQLite file)
                    async with session.post(server.url + "/v1/chat/completions",
                                            json={**BODY, "stream": True}) as resp:
                        text = await resp.text()
                        statuses.append(resp.status if "[DONE]" in text else -1)
                else:
                    async with session.post(server.url + "/api/chat", json={
                            "conversation_id": conversation, "message": f"m{i}"}) as resp:
                        text = await resp.text()
                        statuses.append(resp.status if "event: done" in text else -1)
            return statuses

        conversations: list[str] = []

        running = [asyncio.ensure_future(load(s)) for s in survivors]
        await asyncio.sleep(0.3)
        os.kill(victim, signal.SIGKILL)  # under load
        results = await asyncio.gather(*running)
        assert all(status == 200 for statuses in results for status in statuses), results
        async with aiohttp.ClientSession() as fresh:  # no stored exchange is lost
            for conversation in conversations:
                async with fresh.get(f"{server.url}/api/conversations/{conversation}") as resp:
                    messages = (await resp.json())["messages"]
                assert [m["content"] for m in messages[::2]] == [f"m{i}" for i in range(0, 12, 2)]
                assert len(messages) == 12

        # the parent noticed and started a new worker, which serves
        await wait_for(lambda: "is serving again" in server.text)
        assert f"(pid {victim}) exited with code -9; starting a new one" in server.text
        seen: set[int] = set()
        for _ in range(60):
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(
                    force_close=True)) as fresh:
                seen.add(await pid_of(fresh, server.url))
            if seen - workers:
                break
        assert seen - workers, "the new worker never answered"
        assert victim not in seen
    finally:
        for session in sessions:
            await session.close()
        code = await asyncio.to_thread(server.stop)
    assert code == 0, server.text


async def test_sigterm_drains_every_worker(upstream: FaultyUpstream, tmp_path: Path) -> None:
    server = await asyncio.to_thread(start_workers, upstream, tmp_path, 2)
    upstream.script("fault", *[Reply(pieces=["slow ", "but ", "complete"], delay=0.5)] * 4)
    try:
        async with aiohttp.ClientSession() as session:
            async def ask() -> tuple[int, str]:
                async with session.post(server.url + "/v1/chat/completions",
                                        json={**BODY, "stream": True}) as resp:
                    events = [json.loads(line[6:]) for line in (await resp.text()).splitlines()
                              if line.startswith("data: {")]
                    return resp.status, "".join(e["choices"][0]["delta"].get("content") or ""
                                                for e in events if e["choices"])

            asks = [asyncio.ensure_future(ask()) for _ in range(4)]
            await wait_for(lambda: upstream.active == 4, within=30)
            started = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            answers = await asyncio.gather(*asks)
        assert answers == [(200, "slow but complete")] * 4  # in flight: finished
        code = await asyncio.to_thread(server.proc.wait, 30)
        assert code == 0 and time.monotonic() - started < 15
    finally:
        await asyncio.to_thread(server.stop)
    assert server.text.count("shutting down") == 2  # each worker drained


def fake_worker(code: str) -> list[str]:
    """A worker command running ``code`` with ``fd``, its ready pipe."""
    return [sys.executable, "-c", "import os, sys, time\n"
            f"fd = int(os.environ[{WORKER_ENV!r}].partition(':')[2])\n{code}"]


@pytest.mark.parametrize(("code", "error"), [
    ("os.close(fd); time.sleep(60)", "worker 1 closed its ready pipe before it listened"),
    ("sys.exit(3)", "worker 1 exited with code 3 before it listened"),
])
def test_only_a_worker_that_listens_is_ready(code: str, error: str) -> None:
    # an end of file on the ready pipe was taken for readiness: the parent said it served
    # while a worker was gone (or going), and every connection went to the others
    supervisor = Supervisor(fake_worker(code), 1, graceful_timeout=1)
    with pytest.raises(ConfigurationError, match=error):
        supervisor.start()
    assert all(w.proc.poll() is not None for w in supervisor.workers.values())

    ready = Supervisor(fake_worker(f"os.write(fd, {READY!r}); time.sleep(60)"), 2,
                       graceful_timeout=1)
    ready.start()
    try:
        assert all(w.ready_fd is None and w.proc.poll() is None for w in ready.workers.values())
    finally:
        ready.stop()


def test_a_worker_says_it_is_ready_only_once_its_socket_listens(
        monkeypatch: pytest.MonkeyPatch) -> None:
    read_fd, write_fd = os.pipe()
    monkeypatch.setenv(WORKER_ENV, f"1:{write_fd}")
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", 0))
        with pytest.raises(RuntimeError, match="is not listening with SO_REUSEPORT"):
            worker_ready([sock])  # bound, not yet in the port's group
        sock.listen()
        worker_ready([sock])
    assert os.read(read_fd, 1) == READY
    os.close(read_fd)


def test_workers_never_join_another_server() -> None:
    held = reserve_port("127.0.0.1", 0)
    port = held.getsockname()[1]
    other = socket.socket()  # another server sharing its port
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    other.bind(("127.0.0.1", port))
    other.listen()
    try:
        with pytest.raises(OSError):
            reserve_port("127.0.0.1", port)
    finally:
        other.close()
        held.close()
    reserve_port("127.0.0.1", port).close()  # free again
