"""M9: the Responses API and Anthropic's Messages API through ``modelplex serve`` against its
chat completions, for the same model (issue 21).

    python benchmarks/gateway_apis.py [--rounds 3] [--quick] [--json FILE]

The fake upstream and the gateway run in their own processes on core 0 (as in
``gateway.py``), the client (raw aiohttp, the same for every API, reading bytes without
parsing) on core 1. Reported, medians over interleaved rounds: the latency each API adds over
chat completions per non-streaming request (p50 of sequential requests), and the gateway's
CPU time per streamed chunk (its process's user + system time over the streams, read from
``/proc``) relative to chat completions'.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from gateway import start_modelplex  # noqa: E402
from run import _start_upstream  # noqa: E402

TARGETS = {"M9 added p50 vs chat (ms)": "<= 0.2", "M9 CPU per chunk / chat": "<= 1.10"}
ASK = "hi"
APIS: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("/v1/chat/completions", {"model": "bench",
                                      "messages": [{"role": "user", "content": ASK}]}),
    "responses": ("/v1/responses", {"model": "bench", "input": ASK, "store": False}),
    "messages": ("/v1/messages", {"model": "bench", "max_tokens": 1000,
                                  "messages": [{"role": "user", "content": ASK}]}),
}


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def latencies(session: aiohttp.ClientSession, url: str, api: str,
                    requests: int) -> list[float]:
    path, body = APIS[api]
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    out = []
    for _ in range(requests):
        start = time.perf_counter()
        async with session.post(url + path, data=data, headers=headers) as resp:
            await resp.read()
            assert resp.status == 200, resp.status
        out.append((time.perf_counter() - start) * 1000)
    return out


async def stream_cpu(session: aiohttp.ClientSession, url: str, api: str, streams: int,
                     concurrency: int, pid: int) -> float:
    path, body = APIS[api]
    data = json.dumps({**body, "stream": True}).encode()
    headers = {"Content-Type": "application/json"}
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate, session.post(url + path, data=data, headers=headers) as resp:
            assert resp.status == 200, resp.status
            async for _ in resp.content.iter_any():
                pass

    before = cpu_seconds(pid)
    await asyncio.gather(*(one() for _ in range(streams)))
    return cpu_seconds(pid) - before


async def measure(url: str, pid: int, args: argparse.Namespace
                  ) -> dict[str, list[dict[str, float]]]:
    samples: dict[str, list[dict[str, float]]] = {api: [] for api in APIS}
    names = list(APIS)
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        for api in names:  # warm up: providers opened, code paths imported
            await latencies(session, url, api, 20)
        for round_no in range(args.rounds):
            for api in names[round_no % len(names):] + names[:round_no % len(names)]:
                print(f"round {round_no + 1}/{args.rounds}: {api}", file=sys.stderr)
                lat = await latencies(session, url, api, args.requests)
                cpu = await stream_cpu(session, url, api, args.streams, args.concurrency, pid)
                samples[api].append({"p50_ms": statistics.median(lat),
                                     "cpu_per_chunk_us": cpu * 1e6
                                     / (args.streams * args.chunks)})
    return samples


def main() -> None:
    """Run M9 and print its table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streams", type=int, default=512)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--chunks", type=int, default=100)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--quick", action="store_true", help="A small run to try it.")
    parser.add_argument("--json", default=str(HERE / "results" / "gateway_apis.json"))
    args, _ = parser.parse_known_args()
    if args.quick:
        args.rounds, args.streams, args.requests = 1, 64, 100
    os.sched_setaffinity(0, {1} if (os.cpu_count() or 1) > 1 else {0})

    upstream, upstream_url = _start_upstream(0, args.chunks)
    procs = [upstream]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            gateway, gateway_url = start_modelplex(upstream_url, Path(tmp))
            procs.append(gateway)
            samples = asyncio.run(measure(gateway_url, gateway.pid, args))
    finally:
        for proc in procs:
            proc.kill()

    def med(api: str, key: str) -> float:
        return statistics.median(s[key] for s in samples[api])

    columns = ["responses", "messages"]
    table: dict[str, dict[str, float]] = {
        "M9 added p50 vs chat (ms)": {c: med(c, "p50_ms") - med("chat", "p50_ms")
                                      for c in columns},
        "M9 CPU per chunk / chat": {c: med(c, "cpu_per_chunk_us")
                                    / med("chat", "cpu_per_chunk_us") for c in columns}}
    header = ["metric", *columns, "target"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, values in table.items():
        lines.append(f"| {name} | " + " | ".join(f"{values[c]:.2f}" for c in columns)
                     + f" | {TARGETS[name]} |")
    chat = (f"chat completions: p50 {med('chat', 'p50_ms'):.2f} ms, "
            f"{med('chat', 'cpu_per_chunk_us'):.1f} us of gateway CPU per streamed chunk")
    print("\n".join(lines))
    print(chat)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count()},
        "settings": vars(args), "table": table, "chat": chat, "samples": samples}, indent=2))


if __name__ == "__main__":
    main()
