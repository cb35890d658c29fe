"""#22's LiteLLM arm: LiteLLM's proxy (``litellm[proxy]``) beside ``modelplex serve``, one
worker and two, against the same fake upstream, in the same run (``nox -s bench_litellm``, a
session of its own so the main suite never needs litellm).

    python benchmarks/litellm_proxy.py [--rounds 3] [--quick] [--litellm PATH]

The same measurements as ``workers.py`` (raw aiohttp client on core 1, upstream on core 0,
the gateways not pinned; interleaved, medians): streams/s at 256 and 64 concurrent streams,
and time to first token at 32 concurrent streams, each over straight to the upstream. The
proxy runs with ``--num_workers`` 1 and 2 (uvicorn workers), as modelplex with ``--workers``
1 and 2.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from run import _free_port, _start_upstream  # noqa: E402
from workers import load, machine, med, run_rounds, start_gateway, stop_on_sigterm, table_lines  # noqa: E402


def start_litellm(binary: str, upstream: str, folder: Path,
                  workers: int) -> tuple[subprocess.Popen[bytes], str]:
    """LiteLLM's proxy serving the upstream as ``bench`` with ``workers`` uvicorn workers."""
    folder.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    config = folder / "litellm.yaml"
    config.write_text("model_list:\n  - model_name: bench\n    litellm_params:\n"
                      f"      model: openai/bench\n      api_base: {upstream}/v1\n"
                      "      api_key: sk-bench\n"
                      "litellm_settings:\n  telemetry: false\n")
    # on loopback, without keys, as the modelplex arms (the proxy refuses that by default)
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
           "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true"}
    proc = subprocess.Popen([binary, "--config", str(config), "--port", str(port),
                             "--host", "127.0.0.1", "--num_workers", str(workers)],
                            env=env, stdout=subprocess.DEVNULL,
                            stderr=open(folder / "litellm.log", "wb"))  # noqa: SIM115
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"litellm proxy exited with {proc.returncode}: "
                               f"{(folder / 'litellm.log').read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            time.sleep(2.0 * workers)  # every worker up, not only the first
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("litellm proxy did not start")


def main() -> None:
    """Run the LiteLLM arm and print its table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streams", type=int, default=1024)
    parser.add_argument("--chunks", type=int, default=100)
    parser.add_argument("--paced-streams", type=int, default=256)
    parser.add_argument("--paced-chunks", type=int, default=10)
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--litellm", default=shutil.which("litellm") or "litellm")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default=str(HERE / "results" / "litellm_proxy.json"))
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.streams, args.paced_streams = 1, 256, 64
    stop_on_sigterm()
    load_before = load()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        fast, fast_url = _start_upstream(0, args.chunks)
        paced, paced_url = _start_upstream(args.delay_ms, args.paced_chunks)
        procs += [fast, paced]
        with tempfile.TemporaryDirectory() as tmp:
            targets, paced_targets = {"direct": fast_url}, {"direct": paced_url}
            for workers in (1, 2):
                for name, start in (
                        (f"modelplex-{workers}", lambda up, f, w=workers: start_gateway(up, f, w)),
                        (f"litellm-{workers}", lambda up, f, w=workers: start_litellm(
                            args.litellm, up, f, w))):
                    proc, url = start(fast_url, Path(tmp) / name)
                    procs.append(proc)
                    proc_p, url_p = start(paced_url, Path(tmp) / f"{name}-paced")
                    procs.append(proc_p)
                    targets[name], paced_targets[name] = url, url_p
            samples = run_rounds(targets, paced_targets, args.rounds, args.streams,
                                 args.paced_streams)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    arms = [name for name in targets if name != "direct"]
    table: dict[str, dict[str, float]] = {
        "256 concurrent: streams/s / direct": {}, "64 concurrent: streams/s / direct": {},
        "32 concurrent: TTFT added p50 (ms)": {}, "32 concurrent: TTFT added p99 (ms)": {}}
    for name in arms:
        for label in ("256", "64"):
            table[f"{label} concurrent: streams/s / direct"][name] = (
                med(samples, name, label, "streams_per_s")
                / med(samples, "direct", label, "streams_per_s"))
        for q in ("50", "99"):
            table[f"32 concurrent: TTFT added p{q} (ms)"][name] = (
                med(samples, name, "ttft32", f"ttft_p{q}_ms")
                - med(samples, "direct", "ttft32", f"ttft_p{q}_ms"))
    targets_text = {"64 concurrent: streams/s / direct": ">= 0.8",
                    "32 concurrent: TTFT added p50 (ms)": "<= 1",
                    "32 concurrent: TTFT added p99 (ms)": "<= 5"}
    print("\n".join(table_lines(table, targets_text)))
    absolute = {f"{n} {m}": med(samples, n, m, "streams_per_s") for n, m in samples}
    for name, value in absolute.items():
        print(f"{name}: {value:.1f} streams/s")
    print(f"load average before {load_before}, after {load()}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({
        "machine": machine(), "load_before": load_before, "load_after": load(),
        "settings": vars(args), "table": table, "streams_per_s": absolute,
        "samples": {f"{n}/{m}": v for (n, m), v in samples.items()}}, indent=2))


if __name__ == "__main__":
    main()
