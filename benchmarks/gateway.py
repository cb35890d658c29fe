"""M7: the official openai client through ``modelplex serve`` against the same client straight
to the fake upstream (and through LiteLLM's proxy when ``litellm[proxy]`` is installed).

    python benchmarks/gateway.py [--rounds 3] [--quick] [--json benchmarks/results/gateway.json]

Same rules as ``run.py``: the fake upstream in its own process, the client arm in its own
process (core 1), medians over interleaved rounds. The gateway runs in its own process on core
0 with the upstream (a two-core machine has no third core; the gateway's CPU then competes
with the upstream's, which only makes the gateway look slower). Reported: the latency the
gateway adds per non-streaming request (p50, p99; 1000 sequential requests) and streams/s at
256 concurrent streams through the gateway over streams/s straight to the upstream.
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
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from run import _arm, _free_port, _pinned, _start_upstream  # noqa: E402

TARGETS = {"M7 added p50 (ms)": "<= 1.0", "M7 added p99 (ms)": "<= 3.0",
           "M7 streams/s / direct": ">= 0.7"}


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{what} did not start")


def start_modelplex(upstream: str, folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``modelplex serve`` with the upstream as the endpoint ``up`` and ``bench`` naming it."""
    port = _free_port()
    config = folder / "server.toml"
    config.write_text('[server]\naccess_log = false\nhealth_interval = 3600\n'
                      '[server.models]\nbench = "up:bench"\n')
    env = {**os.environ, "MODELPLEX_LOAD_PLUGINS": "openai,server",
           "MODELPLEX_OPENAI_CONFIG": str(folder / "openai.toml"),
           "MODELPLEX_OPENAI_ENDPOINTS": json.dumps({"up": {"base_url": upstream + "/v1",
                                                           "api_key": "sk-bench"}})}
    (folder / "openai.toml").write_text("")
    proc = subprocess.Popen(_pinned(0, [sys.executable, "-m", "modelplex", "serve", "--port",
                                        str(port), "--config", str(config),
                                        "--conversations", "memory"]),
                            env=env, stderr=subprocess.DEVNULL)
    _wait_port(port, proc, "modelplex serve")
    return proc, f"http://127.0.0.1:{port}"


def start_litellm(upstream: str, folder: Path) -> tuple[subprocess.Popen[bytes], str] | None:
    """LiteLLM's proxy with the same upstream as ``bench``, if it is installed."""
    if not shutil.which("litellm") or importlib.util.find_spec("fastapi") is None:
        return None
    port = _free_port()
    config = folder / "litellm.yaml"
    config.write_text("model_list:\n  - model_name: bench\n    litellm_params:\n"
                      f"      model: openai/bench\n      api_base: {upstream}/v1\n"
                      "      api_key: sk-bench\n")
    proc = subprocess.Popen(_pinned(0, ["litellm", "--config", str(config), "--port", str(port),
                                        "--num_workers", "1"]),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_port(port, proc, "litellm proxy")
    return proc, f"http://127.0.0.1:{port}"


def main() -> None:
    """Run M7 and print its table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streams", type=int, default=1024)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--chunks", type=int, default=100)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="A small run to try it.")
    parser.add_argument("--json", default=str(HERE / "results" / "gateway.json"))
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.streams, args.requests = 1, 256, 100

    upstream, upstream_url = _start_upstream(0, args.chunks)
    procs = [upstream]
    samples: dict[tuple[str, str], list[dict[str, Any]]] = {}
    skipped = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            gateway, gateway_url = start_modelplex(upstream_url, Path(tmp))
            procs.append(gateway)
            targets = {"direct": upstream_url, "modelplex": gateway_url}
            litellm = start_litellm(upstream_url, Path(tmp))
            if litellm is None:
                skipped.append("litellm proxy (pip install 'litellm[proxy]')")
            else:
                procs.append(litellm[0])
                targets["litellm-proxy"] = litellm[1]
            names = list(targets)
            for round_no in range(args.rounds):
                for name in names[round_no % len(names):] + names[:round_no % len(names)]:
                    print(f"round {round_no + 1}/{args.rounds}: {name}", file=sys.stderr)
                    url = targets[name]
                    samples.setdefault((name, "stream"), []).append(
                        _arm("openai-sdk", "stream", url, args.streams, args.concurrency))
                    samples.setdefault((name, "request"), []).append(
                        _arm("openai-sdk", "request", url, args.requests, 1))
    finally:
        for proc in procs:
            proc.kill()

    def med(name: str, mode: str, key: str) -> float:
        return statistics.median(s[key] for s in samples[(name, mode)])

    columns = [n for n in ("modelplex", "litellm-proxy") if (n, "stream") in samples]
    table: dict[str, dict[str, float]] = {name: {} for name in TARGETS}
    for col in columns:
        table["M7 added p50 (ms)"][col] = (med(col, "request", "lat_p50_ms")
                                           - med("direct", "request", "lat_p50_ms"))
        table["M7 added p99 (ms)"][col] = (med(col, "request", "lat_p99_ms")
                                           - med("direct", "request", "lat_p99_ms"))
        table["M7 streams/s / direct"][col] = (med(col, "stream", "streams_per_s")
                                               / med("direct", "stream", "streams_per_s"))
    header = ["metric", *columns, "target"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, values in table.items():
        lines.append(f"| {name} | " + " | ".join(f"{values[c]:.2f}" for c in columns)
                     + f" | {TARGETS[name]} |")
    direct = (f"direct (openai SDK to the upstream): p50 "
              f"{med('direct', 'request', 'lat_p50_ms'):.2f} ms, p99 "
              f"{med('direct', 'request', 'lat_p99_ms'):.2f} ms, "
              f"{med('direct', 'stream', 'streams_per_s'):.0f} streams/s")
    print("\n".join(lines))
    print(direct)
    if skipped:
        print(f"skipped (not installed): {', '.join(skipped)}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count()},
        "settings": vars(args), "table": table, "direct": direct, "skipped": skipped,
        "samples": {f"{n}/{m}": v for (n, m), v in samples.items()}}, indent=2))


if __name__ == "__main__":
    main()
