"""M10: ``modelplex.batch.run`` against a raw aiohttp semaphore loop doing the same requests.

    python benchmarks/batch.py [--rows 10000] [--big 100000] [--concurrency 64] [--rounds 2]
                               [--json benchmarks/results/batch.json]

The fake upstream (``benchmarks/upstream.py``, non-streaming ``/v1/chat/completions``
answers of 20 tokens) runs in its own process. Each arm runs in a fresh child process that
reads a JSONL file of rows as a stream and appends one JSON line per answer to an output file,
at most ``--concurrency`` requests in flight:

- ``raw``: ``aiohttp`` with an ``asyncio.Semaphore``, ``json.loads`` of each answer, the
  answer and usage written per row (the loop a user writes by hand, without resume or retries);
- ``modelplex``: ``modelplex.batch.run(read_rows(...), model="openai:bench", output=...)``
  (the one request path: the router, resume bookkeeping, cost, a flushed line per row).

Measured per child: wall time, CPU time of the client process (``time.process_time``) per
row, and its peak resident memory (``ru_maxrss``), at ``--rows`` and at ``--big`` rows. What
a process does once before its first row (imports, and for modelplex finding the installed
plugins and loading genai-prices' price data, about 30 ms) is not in those: it is reported
on its own as ``startup cpu s``. The arms alternate in rounds so that the noise of a shared
machine hits both alike; the medians are reported with the load average before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TARGETS = {"wall ratio": 1.2, "cpu per row ratio": 1.3, "peak MB": 150.0}


# -- the children --------------------------------------------------------------------------------
async def raw_arm(url: str, source: Path, out: Path, concurrency: int) -> int:
    import aiohttp

    gate = asyncio.Semaphore(concurrency)
    done = 0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        with source.open(encoding="utf-8") as rows, out.open("a", encoding="utf-8") as sink:
            tasks: set[asyncio.Task[None]] = set()

            async def one(row: dict[str, Any]) -> None:
                nonlocal done
                try:
                    body = {"model": "bench",
                            "messages": [{"role": "user", "content": row["prompt"]}]}
                    async with session.post(url + "/v1/chat/completions", json=body) as resp:
                        data = json.loads(await resp.read())
                    sink.write(json.dumps({
                        "id": row["id"], "answer": data["choices"][0]["message"]["content"],
                        "usage": data["usage"]}) + "\n")
                    sink.flush()
                    done += 1
                finally:
                    gate.release()

            for line in rows:
                await gate.acquire()
                task = asyncio.ensure_future(one(json.loads(line)))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.gather(*tasks)
    return done


async def modelplex_arm(url: str, source: Path, out: Path, concurrency: int) -> int:
    from modelplex import batch
    from modelplex.config import parse_config

    config = parse_config({"providers": {"openai": {"base_url": url + "/v1",
                                                    "api_key": "sk-bench"}}}, source="bench")
    done = 0
    async for result in batch.run(batch.read_rows(source), model="openai:bench",
                                  concurrency=concurrency, output=out, config=config):
        done += result.ok
    return done


def child(arm: str, url: str, source: Path, out: Path, concurrency: int) -> None:
    startup = time.process_time()
    import aiohttp  # noqa: F401 - imports are not what is measured

    if arm == "modelplex":  # once per process: the installed plugins, the price data
        import modelplex.batch  # noqa: F401
        import modelplex_openai.provider  # noqa: F401
        from modelplex.chunks import Usage
        from modelplex.cost import cost_of
        from modelplex.plugins import get_plugins

        get_plugins().provider_names()
        cost_of("openai", "bench", Usage(1, 1))
    startup = time.process_time() - startup
    run = raw_arm if arm == "raw" else modelplex_arm
    start, cpu = time.perf_counter(), time.process_time()
    done = asyncio.run(run(url, source, out, concurrency))
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"done": done, "wall": wall, "cpu": cpu, "peak_mb": peak_kb / 1024,
                      "startup cpu": startup}))


# -- the parent ----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def write_rows(path: Path, count: int) -> None:
    with path.open("w", encoding="utf-8") as f:
        for i in range(count):
            f.write(json.dumps({"id": f"r{i}", "prompt": f"Classify row {i}: fine or not?"})
                    + "\n")


def wait_for(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the fake upstream did not start")


def one_run(arm: str, url: str, source: Path, folder: Path, concurrency: int,
            rows: int) -> dict[str, Any]:
    out = folder / f"{arm}-{time.monotonic_ns()}.jsonl"
    proc = subprocess.run([sys.executable, __file__, "--child", arm, "--url", url,
                           "--input", str(source), "--output", str(out),
                           "--concurrency", str(concurrency)],
                          capture_output=True, text=True, timeout=3600, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{arm} failed: {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["done"] != rows:
        raise SystemExit(f"{arm}: {result['done']} of {rows} rows answered")
    out.unlink()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--big", type=int, default=100_000,
                        help="the second size, for peak memory (0: skip)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the results here too")
    parser.add_argument("--child", choices=["raw", "modelplex"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.url, args.input, args.output, args.concurrency)
        return
    port = free_port()
    upstream = subprocess.Popen([sys.executable, str(HERE / "upstream.py"), "--port", str(port),
                                 "--chunks", "20"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    load_before = os.getloadavg()
    results: dict[str, Any] = {"rows": args.rows, "big": args.big,
                               "concurrency": args.concurrency, "rounds": args.rounds,
                               "cpus": os.cpu_count()}
    try:
        wait_for(port)
        url = f"http://127.0.0.1:{port}"
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            sizes = [args.rows] + ([args.big] if args.big else [])
            for size in sizes:
                source = folder / f"rows-{size}.jsonl"
                write_rows(source, size)
                rounds = args.rounds if size == args.rows else 1
                runs: dict[str, list[dict[str, Any]]] = {"raw": [], "modelplex": []}
                for number in range(rounds):
                    order = ["raw", "modelplex"] if number % 2 == 0 else ["modelplex", "raw"]
                    for arm in order:
                        runs[arm].append(one_run(arm, url, source, folder, args.concurrency,
                                                 size))
                        print(f"{size} rows, {arm}: {runs[arm][-1]}", flush=True)
                for arm, items in runs.items():
                    results[f"{arm} {size}"] = {
                        "wall s": statistics.median(r["wall"] for r in items),
                        "cpu ms per row": statistics.median(r["cpu"] for r in items)
                        / size * 1000,
                        "peak MB": max(r["peak_mb"] for r in items),
                        "startup cpu s": statistics.median(r["startup cpu"] for r in items)}
    finally:
        upstream.terminate()
        upstream.wait(10)
    raw, ours = results[f"raw {args.rows}"], results[f"modelplex {args.rows}"]
    results["wall ratio"] = ours["wall s"] / raw["wall s"]
    results["cpu per row ratio"] = ours["cpu ms per row"] / raw["cpu ms per row"]
    results["load before"] = load_before
    results["load after"] = os.getloadavg()
    print(json.dumps(results, indent=2))
    for key, limit in TARGETS.items():
        if key == "peak MB":
            value = max(v["peak MB"] for k, v in results.items() if k.startswith("modelplex "))
        else:
            value = results[key]
        print(f"{key}: {value:.3f} (target <= {limit})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
