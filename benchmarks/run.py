"""Run every benchmark arm against the fake upstream and print one table of ratios to raw.

    python benchmarks/run.py [--rounds 3] [--quick] [--json benchmarks/results/latest.json]
    python benchmarks/run.py --paths   # only the three user paths of issue #18 (M1, M2-32, M3)

Follows docs/performance.md: the upstream in its own process (core 0), each arm in its own
process (core 1), all arms in one run, interleaved, medians over rounds, reported as ratios
against a raw aiohttp client reading the same upstream. Arms whose package is not installed
(the openai SDK, litellm) are skipped and reported as such.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
PEERS = {"openai-sdk": "openai", "litellm": "litellm"}
TARGETS = {
    "M1 CPU per chunk / raw": "<= 1.5",
    "M1 streams/s / raw": ">= 0.7",
    "M2 wall / raw": "<= 1.05",
    "M2 TTFT p99 / raw": "<= 1.2",
    "M3 added p50 (ms)": "<= 0.5",
    "M3 added p99 (ms)": "<= 1.0",
    "M5 streams/s, 10% 429/503 / raw round robin, no faults": ">= 0.8",
    "M5 errors reaching the caller": "0",
    "M4 import time / aiohttp": "<= 1.3",
    "M4 import memory / aiohttp": "<= 1.5",
    "M4 import of ChatManager / aiohttp": "(info)",
    "peak RSS (MB), M1": "",
}
#: The three user paths (issue #18, item 5): the arm of each, and the targets against raw.
PATHS = {"modelplex-openai": "provider (create_provider)",
         "modelplex-manager": "ChatManager per conversation",
         "modelplex-router2": "named model (router, two deployments)"}
PATH_TARGETS: dict[str, float | None] = {"CPU per chunk / raw (M1, 256 streams)": 1.15,
                "TTFT p50 / raw (M2-32, 32 paced streams)": 1.2,
                "TTFT p99 / raw (M2-32, 32 paced streams)": 1.5,
                "non-streaming added p50 (ms) (M3)": 0.3,
                "non-streaming added p99 (ms) (M3)": 0.6,
                "non-streaming CPU per request added (us) (M3, info)": None}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pinned(core: int, argv: list[str]) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(core), *argv]
    return argv


def _start_upstream(delay_ms: float, chunks: int, error_rate: float = 0.0,
                    first_at_once: bool = False) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen(_pinned(0, [sys.executable, str(HERE / "upstream.py"), "--port",
                                        str(port), "--chunks", str(chunks), "--delay-ms",
                                        str(delay_ms), "--error-rate", str(error_rate),
                                        *(["--first-at-once"] if first_at_once else [])]))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the fake upstream did not start")


def _arm(arm: str, mode: str, url: str, streams: int, concurrency: int) -> dict[str, Any]:
    out = subprocess.run(
        _pinned(1, [sys.executable, str(HERE / "arm.py"), arm, mode, "--url", url,
                    "--streams", str(streams), "--concurrency", str(concurrency)]),
        capture_output=True, text=True, timeout=900, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"arm {arm} {mode} failed:\n{out.stderr[-2000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _raw_of(arm: str) -> str:
    """The raw aiohttp arm reading the same wire format as ``arm``."""
    wire = arm.removeprefix("modelplex-")
    return f"raw-{wire}" if wire in ("ollama", "anthropic", "tgi") else "raw-openai"


def _import_cost(module: str, runs: int) -> tuple[float, float]:
    code = ("import time, resource; t = time.perf_counter(); import {m}; "
            "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    times, rss = [], []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", code.format(m=module)], capture_output=True,
                             text=True, check=True)
        seconds, kb = out.stdout.split()
        times.append(float(seconds))
        rss.append(float(kb) / 1024)
    return statistics.median(times), statistics.median(rss)


def _paths_table(med: Any, arms: list[str]) -> dict[str, dict[str, float]]:
    """The three user paths against raw aiohttp: issue #18's table."""
    out: dict[str, dict[str, float]] = {name: {} for name in PATH_TARGETS}
    for arm in arms:
        rows = list(PATH_TARGETS)
        out[rows[0]][arm] = (med(arm, "M1", "cpu_per_chunk_us")
                             / med("raw-openai", "M1", "cpu_per_chunk_us"))
        out[rows[1]][arm] = (med(arm, "M2-32", "ttft_p50_ms")
                             / med("raw-openai", "M2-32", "ttft_p50_ms"))
        out[rows[2]][arm] = (med(arm, "M2-32", "ttft_p99_ms")
                             / med("raw-openai", "M2-32", "ttft_p99_ms"))
        out[rows[3]][arm] = med(arm, "M3", "lat_p50_ms") - med("raw-openai", "M3", "lat_p50_ms")
        out[rows[4]][arm] = med(arm, "M3", "lat_p99_ms") - med("raw-openai", "M3", "lat_p99_ms")
        out[rows[5]][arm] = (med(arm, "M3", "cpu_per_request_us")
                             - med("raw-openai", "M3", "cpu_per_request_us"))
    return out if arms else {}


def _paths_lines(paths: dict[str, dict[str, float]]) -> list[str]:
    arms = list(next(iter(paths.values())))
    lines = ["| the three user paths | " + " | ".join(PATHS[a] for a in arms) + " | target |",
             "|" + "---|" * (len(arms) + 2)]
    for name, values in paths.items():
        cells = " | ".join(f"{values[a]:.2f}" for a in arms)
        target = PATH_TARGETS[name]
        lines.append(f"| {name} | {cells} | {'' if target is None else f'<= {target}'} |")
    return lines


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streams", type=int, default=1024)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--chunks", type=int, default=100)
    parser.add_argument("--paced-streams", type=int, default=256)
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--paced32-streams", type=int, default=128,
                        help="Streams of the paced run at 32 at a time (M2-32).")
    parser.add_argument("--paths", action="store_true",
                        help="Only the three user paths against raw: M1, M2-32 and M3.")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="A small run to try the harness.")
    parser.add_argument("--json", default="",
                        help="Where to save every sample (default: benchmarks/results/"
                             "latest.json, paths.json with --paths).")
    parser.add_argument("--arms", default="",
                        help="Comma-separated arms to run (their raw arms are added); "
                             "default: all.")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.streams, args.paced_streams, args.requests = 1, 256, 64, 50
        args.paced32_streams = 64
    if args.paths:
        args.arms = ",".join(PATHS)
    args.json = args.json or str(HERE / "results" / ("paths.json" if args.paths
                                                       else "latest.json"))

    arms = ["raw-openai", "raw-ollama", "raw-anthropic", "raw-tgi", "modelplex-openai",
            "modelplex-ollama", "modelplex-router", "modelplex-router2", "modelplex-manager",
            "modelplex-anthropic", "modelplex-tgi"]
    skipped = []
    for arm, module in PEERS.items():
        (arms.append if importlib.util.find_spec(module) else skipped.append)(arm)
    if args.arms:
        wanted = {a.strip() for a in args.arms.split(",") if a.strip()}
        wanted |= {_raw_of(a) for a in wanted}
        arms = [a for a in arms if a in wanted]

    fast, fast_url = _start_upstream(0, args.chunks)
    paced, paced_url = _start_upstream(args.delay_ms, args.chunks)
    # M2-32: the first text at once, then paced, so the time to first token is the round
    # trip plus each client's own work (not hidden behind one pacing interval)
    paced32, paced32_url = _start_upstream(args.delay_ms, args.chunks, first_at_once=True)
    # M5: a router over two upstreams answering 10% of requests 503, against a raw round
    # robin over two upstreams without faults (each pair shares core 0 with the others)
    m5 = [] if args.paths else [_start_upstream(0, args.chunks, rate)
                                for rate in (0.0, 0.0, 0.1, 0.1)]
    clean_urls = ",".join(url for _, url in m5[:2])
    faulty_urls = ",".join(url for _, url in m5[2:])
    samples: dict[tuple[str, str], list[dict[str, Any]]] = {}
    loads: list[float] = [os.getloadavg()[0]]
    try:
        for round_no in range(args.rounds):
            for arm, urls in () if args.paths else (("raw-openai", clean_urls),
                                                    ("modelplex-router", faulty_urls)):
                print(f"round {round_no + 1}/{args.rounds}: M5 {arm}", file=sys.stderr)
                samples.setdefault((arm, "M5"), []).append(
                    _arm(arm, "stream", urls, args.streams, args.concurrency))
            order = arms[round_no % len(arms):] + arms[:round_no % len(arms)]
            for arm in order:
                print(f"round {round_no + 1}/{args.rounds}: {arm} "
                      f"(load {os.getloadavg()[0]:.1f})", file=sys.stderr)
                samples.setdefault((arm, "M1"), []).append(
                    _arm(arm, "stream", fast_url, args.streams, args.concurrency))
                if not args.paths:
                    samples.setdefault((arm, "M2"), []).append(
                        _arm(arm, "stream", paced_url, args.paced_streams, args.concurrency))
                samples.setdefault((arm, "M2-32"), []).append(
                    _arm(arm, "stream", paced32_url, args.paced32_streams, 32))
                samples.setdefault((arm, "M3"), []).append(
                    _arm(arm, "request", fast_url, args.requests, 1))
                loads.append(os.getloadavg()[0])
    finally:
        fast.kill()
        paced.kill()
        paced32.kill()
        for proc, _ in m5:
            proc.kill()

    def med(arm: str, metric: str, key: str) -> float:
        return statistics.median(s[key] for s in samples[(arm, metric)])

    imports = {m: _import_cost(m, 7) for m in ["aiohttp", "modelplex",
                                                "modelplex.manager", *PEERS.values()]
               if importlib.util.find_spec(m.split(".")[0])}
    base_t, base_m = imports["aiohttp"]

    columns = [a for a in arms if not a.startswith("raw-")]
    table: dict[str, dict[str, float | None]] = {}
    lines: list[str] = []
    if not args.paths:
        table.update({name: {} for name in TARGETS})
        for arm in columns:
            raw = _raw_of(arm)
            table["M1 CPU per chunk / raw"][arm] = (med(arm, "M1", "cpu_per_chunk_us")
                                                    / med(raw, "M1", "cpu_per_chunk_us"))
            table["M1 streams/s / raw"][arm] = (med(arm, "M1", "streams_per_s")
                                                / med(raw, "M1", "streams_per_s"))
            table["M2 wall / raw"][arm] = med(arm, "M2", "wall_s") / med(raw, "M2", "wall_s")
            table["M2 TTFT p99 / raw"][arm] = (med(arm, "M2", "ttft_p99_ms")
                                               / med(raw, "M2", "ttft_p99_ms"))
            table["M3 added p50 (ms)"][arm] = med(arm, "M3", "lat_p50_ms") - med(raw, "M3",
                                                                                 "lat_p50_ms")
            table["M3 added p99 (ms)"][arm] = med(arm, "M3", "lat_p99_ms") - med(raw, "M3",
                                                                                 "lat_p99_ms")
            module = "modelplex" if arm.startswith("modelplex") else PEERS[arm]
            t, m = imports[module]
            table["M4 import time / aiohttp"][arm] = t / base_t
            table["M4 import memory / aiohttp"][arm] = m / base_m
            full = "modelplex.manager" if arm.startswith("modelplex") else PEERS[arm]
            table["M4 import of ChatManager / aiohttp"][arm] = imports[full][0] / base_t
            table["peak RSS (MB), M1"][arm] = med(arm, "M1", "peak_rss_mb")
        table["M5 streams/s, 10% 429/503 / raw round robin, no faults"]["modelplex-router"] = (
            med("modelplex-router", "M5", "streams_per_s")
            / med("raw-openai", "M5", "streams_per_s"))
        table["M5 errors reaching the caller"]["modelplex-router"] = max(
            s["errors"] for s in samples[("modelplex-router", "M5")])

        header = ["metric", *columns, "target"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for name, values in table.items():
            cells = [f"{values[a]:.2f}" if values.get(a) is not None else "-" for a in columns]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {TARGETS[name]} |")
    paths = _paths_table(med, [a for a in PATHS if a in columns])
    if paths:
        table["paths"] = paths  # type: ignore[assignment]
        lines += ["", *_paths_lines(paths)]
    raws = ", ".join(f"{med(a, 'M1', 'cpu_per_chunk_us'):.1f} us/chunk "
                     f"({a.removeprefix('raw-')}), {med(a, 'M1', 'streams_per_s'):.0f} streams/s"
                     for a in arms if a.startswith("raw-"))
    raw_line = (f"raw aiohttp: {raws}; "
                f"import aiohttp {base_t * 1e3:.0f} ms / {base_m:.0f} MB; "
                f"import modelplex {imports['modelplex'][0] * 1e3:.1f} ms, "
                f"modelplex.manager {imports['modelplex.manager'][0] * 1e3:.0f} ms")
    print("\n".join(lines))
    print(raw_line)
    print(f"load average (1 min) during the run: {min(loads):.1f}-{max(loads):.1f}, "
          f"median {statistics.median(loads):.1f}; {os.cpu_count()} cores")
    if skipped:
        print(f"skipped (not installed): {', '.join(skipped)}")
    result = {
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count()},
        "load_average": {"min": min(loads), "median": statistics.median(loads),
                         "max": max(loads)},
        "settings": vars(args), "table": table, "raw": raw_line, "skipped": skipped,
        "imports": {k: {"seconds": v[0], "rss_mb": v[1]} for k, v in imports.items()},
        "samples": {f"{a}/{m}": v for (a, m), v in samples.items()},
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
