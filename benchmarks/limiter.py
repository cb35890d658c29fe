"""#22's limiter cost: what a key's limits counted in a real ``redis-server`` on loopback add
to a request through ``modelplex serve``.

    python benchmarks/limiter.py [--rounds 3] [--requests 1000] [--quick]

Two gateways against the fake upstream: one with ``[state] backend = "redis"``, one counting
in memory; each has a key without limits (``free``) and a key with requests and tokens per
minute and requests at once (``limited``, limits never reached). The client (its own process,
pinned to core 1) sends sequential non-streaming requests; the limiter's cost is the added p50
(and p99) of ``limited`` over ``free`` on the same gateway, interleaved over rounds. Also
measured in one process: ``RedisLimiter.admit`` plus the release of its slot, p50.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from run import _pinned, _start_upstream  # noqa: E402
from workers import load, machine, start_gateway, stop_on_sigterm  # noqa: E402

TARGET = "<= 0.5"
KEYS = {"free": "mpx-bench-free-key-0000000000000000", "limited":
        "mpx-bench-limited-key-00000000000000"}


def _keys_table(state: str) -> str:
    from modelplex_server.settings import hash_key

    free, limited = (hash_key(KEYS[name]) for name in ("free", "limited"))
    return (f'[[server.keys]]\nname = "free"\nhash = "{free}"\n'
            f'[[server.keys]]\nname = "limited"\nhash = "{limited}"\n'
            'rate_limit = 1000000000\ntpm = 1000000000000\nconcurrency = 1000000\n'
            f'{state}')


async def _client(url: str, key: str, requests: int) -> dict[str, float]:
    import aiohttp

    body = {"model": "bench", "stream": False,
            "messages": [{"role": "user", "content": "unique prompt"}]}
    headers = {"Authorization": f"Bearer {key}"}
    latencies = []
    async with aiohttp.ClientSession() as session:
        for i in range(requests + 20):
            start = time.perf_counter()
            async with session.post(url + "/v1/chat/completions", json=body,
                                    headers=headers) as resp:
                await resp.read()
                assert resp.status == 200, resp.status
            if i >= 20:  # warm-up: connections, first-call caches
                latencies.append(time.perf_counter() - start)
    ordered = sorted(latencies)
    return {"p50_ms": statistics.median(ordered) * 1e3,
            "p99_ms": ordered[int(0.99 * (len(ordered) - 1))] * 1e3}


async def _micro(url: str, count: int) -> dict[str, float]:
    from modelplex_server.limits import Admission, RedisLimiter
    from modelplex_server.settings import KeyConfig, hash_key

    limiter = RedisLimiter(url)
    key = KeyConfig(name="micro", hash=hash_key("micro"), rate_limit=10**9, tpm=10**12,
                    concurrency=10**6)
    times = []
    try:
        for i in range(count + 50):
            start = time.perf_counter()
            admission = await limiter.admit(key)
            assert isinstance(admission, Admission)
            await admission.release()
            if i >= 50:
                times.append(time.perf_counter() - start)
    finally:
        await limiter.aclose()
    return {"admit_release_p50_ms": statistics.median(times) * 1e3}


def _run_client(url: str, key: str, requests: int) -> dict[str, float]:
    out = subprocess.run(_pinned(1, [sys.executable, __file__, "--client", url, key,
                                     str(requests)]),
                         capture_output=True, text=True, timeout=900, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"client failed:\n{out.stderr[-2000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    """Run the limiter benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default=str(HERE / "results" / "limiter.json"))
    parser.add_argument("--client", nargs=3, metavar=("URL", "KEY", "N"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--micro", nargs=2, metavar=("REDIS_URL", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        url, key, n = args.client
        print(json.dumps(asyncio.run(_client(url, key, int(n)))))
        return
    if args.micro:
        print(json.dumps(asyncio.run(_micro(args.micro[0], int(args.micro[1])))))
        return
    if args.quick:
        args.rounds, args.requests = 1, 200

    from modelplex_redis.testing import RedisServer

    stop_on_sigterm()
    load_before = load()
    procs: list[subprocess.Popen[bytes]] = []
    samples: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "redis").mkdir()
        redis = RedisServer.start_new(Path(tmp) / "redis")
        try:
            upstream, upstream_url = _start_upstream(0, 100)
            procs.append(upstream)
            state = f'[state]\nbackend = "redis"\nurl = "{redis.url}"\n'
            gateways = {}
            for name, table in (("redis", state), ("memory", "")):
                proc, url = start_gateway(upstream_url, Path(tmp) / name, 1,
                                          extra=_keys_table(table),
                                          plugins="openai,server,redis")
                procs.append(proc)
                gateways[name] = url
            arms = [(g, k) for g in gateways for k in KEYS]
            for round_no in range(args.rounds):
                for gateway, key in arms[round_no % len(arms):] + arms[:round_no % len(arms)]:
                    print(f"round {round_no + 1}/{args.rounds}: {gateway} {key} "
                          f"(load {load()})", file=sys.stderr)
                    samples.setdefault(f"{gateway}/{key}", []).append(
                        _run_client(gateways[gateway], KEYS[key], args.requests))
            micro = json.loads(subprocess.run(
                _pinned(1, [sys.executable, __file__, "--micro", redis.url,
                            str(args.requests)]),
                capture_output=True, text=True, check=True).stdout.splitlines()[-1])
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(30)
            redis.stop()

    def med(arm: str, key: str) -> float:
        return statistics.median(s[key] for s in samples[arm])

    table = {f"{g} limiter: added {q} (ms)": med(f"{g}/limited", f"{q}_ms")
             - med(f"{g}/free", f"{q}_ms") for g in ("redis", "memory") for q in ("p50", "p99")}
    table["RedisLimiter admit + release in one process, p50 (ms)"] = \
        micro["admit_release_p50_ms"]
    print("| metric | value | target |\n|---|---|---|")
    for name, value in table.items():
        target = TARGET if name == "redis limiter: added p50 (ms)" else ""
        print(f"| {name} | {value:.3f} | {target} |")
    for arm in samples:
        print(f"{arm}: p50 {med(arm, 'p50_ms'):.3f} ms, p99 {med(arm, 'p99_ms'):.3f} ms")
    print(f"load average before {load_before}, after {load()}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({
        "machine": machine(), "load_before": load_before, "load_after": load(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("client", "micro")},
        "table": table, "samples": samples}, indent=2))


if __name__ == "__main__":
    main()
