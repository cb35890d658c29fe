"""M6: what caches and conversation logging cost and save, through ``ChatManager``.

    python benchmarks/caches.py [--requests 1000] [--json benchmarks/results/caches.json]

The model is an in-process provider that streams a 100-chunk answer without any I/O, so the
numbers are modelplex's own time. Measured with ``get_response_with_meta`` (the history
cleared before each request), medians and 99th percentiles over ``--requests``:

- hit time: the same question again, answered by the memory, SQLite or Redis cache (Redis only
  when a ``redis-server`` binary is found; a private server is started on a free port);
- miss overhead: unique questions through a manager with a cache minus without one;
- logging overhead: unique questions with ``conversation=True`` (SQLite) minus without.
Arms are interleaved in rounds so that machine noise hits them alike.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from modelplex import ChatManager, hookimpl
from modelplex.chunks import StreamChunk, Usage
from modelplex.plugins import Plugins
from modelplex.provider import ChatRequest, Provider

TARGETS = {
    "hit p50 memory (ms)": 0.2,
    "hit p50 sqlite (ms)": 2.0,
    "hit p50 redis (ms)": 1.0,
    "miss overhead p50 memory (ms)": 0.2,
    "miss overhead p50 sqlite (ms)": 0.2,
    "logging overhead p50 (ms)": 0.5,
}


class Hundred(Provider):
    """Streams 100 chunks and a final one with usage, without I/O."""

    name = "bench"
    default_model = "m"

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        for i in range(100):
            yield StreamChunk(content=f"w{i} ")
        yield StreamChunk(finish_reason="stop", usage=Usage(10, 100))


class Plugin:
    @hookimpl
    def register_providers(self, register: Any) -> None:
        register(Hundred)


def _ms(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def _time(chat: ChatManager, prompt: str) -> float:
    chat.clear_history()
    start = time.perf_counter()
    await chat.get_response_with_meta(prompt)
    return time.perf_counter() - start


async def run(requests: int, folder: Path) -> dict[str, Any]:
    plugins = Plugins(load_entrypoints=False)
    plugins.register(Plugin(), name="bench")
    redis_server = None
    try:
        from modelplex_redis.testing import RedisServer, find_redis_server

        if find_redis_server():
            import modelplex_redis

            plugins.register(modelplex_redis, name="redis")
            redis_server = RedisServer.start_new(folder)
    except ImportError:
        pass
    caches: dict[str, Any] = {"memory": "memory",
                              "sqlite": {"backend": "sqlite", "path": str(folder / "c.db")}}
    if redis_server is not None:
        caches["redis"] = {"backend": "redis", "url": redis_server.url}
    managers = {name: ChatManager("bench:m", plugins=plugins, cache=setting)
                for name, setting in caches.items()}
    managers["plain"] = ChatManager("bench:m", plugins=plugins)
    managers["logged"] = ChatManager("bench:m", plugins=plugins, conversation=True,
                                     logs=folder / "logs.db")
    samples: dict[str, list[float]] = {}
    try:
        for chat in managers.values():
            await chat.initialize_model()
            await chat.get_response_with_meta("warm up")  # stored: later hits
            chat.clear_history()
        gc.collect()
        rounds = 10
        per_round = max(1, requests // rounds)
        counter = 0
        for _ in range(rounds):
            for name, chat in managers.items():
                if name in caches:
                    hits = samples.setdefault(f"hit {name}", [])
                    hits.extend([await _time(chat, "warm up") for _ in range(per_round)])
                misses = samples.setdefault(f"unique {name}", [])
                for _ in range(per_round):
                    counter += 1
                    misses.append(await _time(chat, f"question {counter}"))
    finally:
        for chat in managers.values():
            await chat.aclose()
        if redis_server is not None:
            redis_server.stop()
    plain = statistics.median(samples["unique plain"]) * 1000
    results: dict[str, Any] = {}
    for name in caches:
        results[f"hit p50 {name} (ms)"] = _ms(samples[f"hit {name}"], 0.5)
        results[f"hit p99 {name} (ms)"] = _ms(samples[f"hit {name}"], 0.99)
        results[f"miss overhead p50 {name} (ms)"] = _ms(samples[f"unique {name}"], 0.5) - plain
    results["logging overhead p50 (ms)"] = _ms(samples["unique logged"], 0.5) - plain
    results["no cache p50 (ms)"] = plain
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        results = asyncio.run(run(args.requests, Path(folder)))
    print(f"{'M6':38} {'value':>9}  target")
    for name, value in results.items():
        target = TARGETS.get(name)
        verdict = "" if target is None else ("ok" if value <= target else "MISS")
        print(f"{name:38} {value:9.3f}  {'' if target is None else f'<= {target}'} {verdict}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"python": sys.version, "results": results},
                                        indent=2))


if __name__ == "__main__":
    main()
