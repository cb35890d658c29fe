"""#22's speed section: ``modelplex serve --workers N`` against the fake upstream.

    python benchmarks/workers.py [--rounds 3] [--quick] [--json benchmarks/results/workers.json]

Measured with the raw aiohttp client arm (``arm.py raw-openai``, pinned to core 1), the fake
upstream pinned to core 0, and the gateway not pinned (its workers go where the kernel puts
them): all arms in one run, interleaved, medians over rounds.

- streams/s at 256 concurrent streams through ``--workers 1`` and ``--workers 2``;
- streams/s at 64 concurrent streams through the gateway over straight to the upstream;
- time to first token at 32 concurrent streams (upstream pacing its chunks), added p50 and
  p99 over straight to the upstream.

The issue's ``--workers 4`` on 4 cores cannot run on a 2-core machine: there, two workers
share the two cores with the upstream and the client, which is what this measures. The load
average before and after is recorded with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from run import _arm, _free_port, _start_upstream  # noqa: E402

TARGETS = {"256 concurrent: streams/s, workers 2 / workers 1": ">= 3 (4 workers on 4 cores)",
           "64 concurrent: gateway streams/s / direct": ">= 0.8",
           "32 concurrent: TTFT added p50 (ms)": "<= 1",
           "32 concurrent: TTFT added p99 (ms)": "<= 5"}


def stop_on_sigterm() -> None:
    """SIGTERM (``timeout``, Ctrl-C of a nox session) ends the run through its ``finally``
    blocks, so the servers it started are stopped too."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def load() -> str:
    """The load average (1, 5, 15 minutes)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = ""
    with open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "cpu": model}


def wait_ready(url: str, proc: subprocess.Popen[bytes], what: str) -> None:
    """Wait until ``url``/healthz answers (the parent of workers answers once all listen)."""
    import urllib.request

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{what} did not start")


def start_gateway(upstream: str, folder: Path, workers: int, *, extra: str = "",
                  plugins: str = "openai,server") -> tuple[subprocess.Popen[bytes], str]:
    """``modelplex serve --workers N``: the upstream is the endpoint ``up``, ``bench`` names
    it; ``extra`` is appended to the config (keys, ``[state]``)."""
    port = _free_port()
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "server.toml"
    config.write_text('[server]\naccess_log = false\nhealth_interval = 3600\n'
                      f'max_concurrency = 4096\n{extra}\n[models.bench]\nmodel = "up:bench"\n')
    (folder / "openai.toml").write_text("")
    env = {**os.environ, "MODELPLEX_LOAD_PLUGINS": plugins,
           "MODELPLEX_OPENAI_CONFIG": str(folder / "openai.toml"),
           "MODELPLEX_DATA_DIR": str(folder / "data"),
           "MODELPLEX_OPENAI_ENDPOINTS": json.dumps({"up": {"base_url": upstream + "/v1",
                                                           "api_key": "sk-bench"}})}
    proc = subprocess.Popen([sys.executable, "-m", "modelplex", "serve", "--port", str(port),
                             "--config", str(config), "--conversations", "memory",
                             "--workers", str(workers)],
                            env=env, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc, f"modelplex serve --workers {workers}")
    return proc, url


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of process ``pid`` and its children (a parent's workers),
    from ``/proc``: what the machine's load disturbs far less than wall time."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == pid or int(fields[1]) == pid:  # fields[1]: the parent's pid
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def run_rounds(targets: dict[str, str], paced: dict[str, str], rounds: int, streams: int,
               paced_streams: int, pids: dict[str, int] | None = None
               ) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Every target at 256 and 64 concurrent streams, and paced at 32, interleaved; with the
    gateway's ``pids``, its CPU time per stream too."""
    samples: dict[tuple[str, str], list[dict[str, Any]]] = {}
    names = list(targets)
    for round_no in range(rounds):
        for name in names[round_no % len(names):] + names[:round_no % len(names)]:
            print(f"round {round_no + 1}/{rounds}: {name} (load {load()})", file=sys.stderr)
            for label, concurrency in (("256", 256), ("64", 64)):
                pid = (pids or {}).get(name)
                before = cpu_seconds(pid) if pid else 0.0
                sample = _arm("raw-openai", "stream", targets[name], streams, concurrency)
                if pid:
                    sample["gateway_cpu_ms_per_stream"] = (
                        (cpu_seconds(pid) - before) / streams * 1e3)
                samples.setdefault((name, label), []).append(sample)
            samples.setdefault((name, "ttft32"), []).append(
                _arm("raw-openai", "stream", paced[name], paced_streams, 32))
    return samples


def med(samples: dict[tuple[str, str], list[dict[str, Any]]], name: str, mode: str,
        key: str) -> float:
    """The median of ``key`` over the rounds."""
    return statistics.median(s[key] for s in samples[(name, mode)])


def table_lines(table: dict[str, dict[str, float]], targets: dict[str, str]) -> list[str]:
    """A Markdown table: one row per metric, one column per arm."""
    columns = sorted({c for row in table.values() for c in row})
    lines = ["| metric | " + " | ".join(columns) + " | target |",
             "|" + "---|" * (len(columns) + 2)]
    for name, row in table.items():
        cells = [f"{row[c]:.2f}" if c in row else "" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {targets.get(name, '')} |")
    return lines


def main() -> None:
    """Run the workers benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streams", type=int, default=1024)
    parser.add_argument("--chunks", type=int, default=100)
    parser.add_argument("--paced-streams", type=int, default=256)
    parser.add_argument("--paced-chunks", type=int, default=10)
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--quick", action="store_true", help="A small run to try it.")
    parser.add_argument("--json", default=str(HERE / "results" / "workers.json"))
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.streams, args.paced_streams = 1, 256, 64
    stop_on_sigterm()
    load_before = load()
    fast, fast_url = _start_upstream(0, args.chunks)
    paced, paced_url = _start_upstream(args.delay_ms, args.paced_chunks)
    procs = [fast, paced]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            targets, paced_targets = {"direct": fast_url}, {"direct": paced_url}
            pids: dict[str, int] = {}
            for workers in (1, 2):
                name = f"workers-{workers}"
                gw, url = start_gateway(fast_url, Path(tmp) / name, workers)
                gw_paced, url_paced = start_gateway(paced_url, Path(tmp) / f"{name}-p",
                                                    workers)
                procs += [gw, gw_paced]
                targets[name], paced_targets[name] = url, url_paced
                pids[name] = gw.pid
            samples = run_rounds(targets, paced_targets, args.rounds, args.streams,
                                 args.paced_streams, pids)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
    table: dict[str, dict[str, float]] = {name: {} for name in TARGETS}
    table["256 concurrent: streams/s, workers 2 / workers 1"]["modelplex"] = (
        med(samples, "workers-2", "256", "streams_per_s")
        / med(samples, "workers-1", "256", "streams_per_s"))
    for name in ("workers-1", "workers-2"):
        table["64 concurrent: gateway streams/s / direct"][name] = (
            med(samples, name, "64", "streams_per_s") / med(samples, "direct", "64",
                                                            "streams_per_s"))
        for q in ("50", "99"):
            table[f"32 concurrent: TTFT added p{q} (ms)"][name] = (
                med(samples, name, "ttft32", f"ttft_p{q}_ms")
                - med(samples, "direct", "ttft32", f"ttft_p{q}_ms"))
    cpu = {f"{name} {mode}": med(samples, name, mode, "gateway_cpu_ms_per_stream")
           for name, mode in samples if name != "direct" and mode != "ttft32"}
    absolute = {f"{name} {mode}": {"streams_per_s": med(samples, name, mode, "streams_per_s"),
                                   "ttft_p50_ms": med(samples, name, mode, "ttft_p50_ms"),
                                   "ttft_p99_ms": med(samples, name, mode, "ttft_p99_ms")}
                for name, mode in samples}
    lines = table_lines(table, TARGETS)
    print("\n".join(lines))
    for name, values in absolute.items():
        print(f"{name}: " + ", ".join(f"{k} {v:.1f}" for k, v in values.items()))
    for name, value in cpu.items():
        print(f"{name}: gateway CPU {value:.2f} ms per stream (all its processes)")
    print(f"load average before {load_before}, after {load()}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({
        "machine": machine(), "load_before": load_before, "load_after": load(),
        "settings": vars(args), "table": table, "absolute": absolute, "gateway_cpu": cpu,
        "samples": {f"{n}/{m}": v for (n, m), v in samples.items()}}, indent=2))


if __name__ == "__main__":
    main()
