"""M8: what the telemetry layer costs, through ``ChatManager``.

    python benchmarks/telemetry.py [--requests 400] [--json benchmarks/results/telemetry.json]
    python benchmarks/telemetry.py --http [--rounds 5] [--breakdown]  # HTTP: arm.py, fake upstream

The model is an in-process provider that streams a 100-chunk answer without any I/O, so the
numbers are modelplex's own time, the worst case for a per-chunk overhead. The OpenTelemetry
SDK is configured with no-op exporters (a batch span processor and a metric reader that is
never collected); the arms are the same manager with telemetry off (``MODELPLEX_OTEL=0``: no
layer) and on, interleaved in rounds so that machine noise hits them alike. Reported: CPU
per chunk (on / off) and the time to the first chunk, p50 (on - off).

``--http`` measures the same through HTTP: ``arm.py modelplex-manager`` (telemetry off) and
``modelplex-manager-otel`` (the SDK configured as above) each in its own process against
``upstream.py`` (100-chunk SSE answers, no delay), 2048 streams 64 at a time, interleaved over
the rounds; CPU per chunk is each arm process's ``process_time`` (the SDK's batch span
processor thread included) over the chunks it read, and the garbage collector's share of it
is timed too (``gc.callbacks``). ``--breakdown`` adds arms that each leave one part out, to
say what each costs: traces only, metrics only, metrics with the SDK's default exemplar
filter (``trace_based``: every record keeps an exemplar of its span), a simple span processor,
and telemetry off with the genai-prices data loaded (what pricing answers costs the process).

The SDK set-up is chosen with environment variables (``configure_sdk``): ``BENCH_SIGNALS``
(``traces,metrics``), ``BENCH_SPAN_PROCESSOR`` (``batch``, ``simple``, ``none``) and
``BENCH_EXEMPLARS`` (``off``, the setting docs/telemetry.md gives for the cheapest records;
``on``: the SDK's default filter).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from modelplex import ChatManager, hookimpl
from modelplex.chunks import StreamChunk, Usage
from modelplex.plugins import Plugins
from modelplex.provider import ChatRequest, Provider

TARGETS = {"CPU per chunk, on / off": 1.10, "TTFT p50 added (ms)": 0.1}


class Streamer(Provider):
    """100 chunks, no I/O."""

    name = "openai"

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        for _ in range(99):
            yield StreamChunk(content="x")
        yield StreamChunk(content="x", finish_reason="stop", model="bench",
                          usage=Usage(prompt_tokens=10, completion_tokens=100))


class Plugin:
    @hookimpl
    def register_providers(self, register: Any) -> None:
        register(lambda **kw: Streamer(), name="openai")


def configure_sdk() -> None:
    """The SDK with no-op exporters: spans batched to nowhere, metrics never collected (the
    ``BENCH_*`` variables of the module docs choose the parts)."""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class Nothing(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    signals = os.environ.get("BENCH_SIGNALS", "traces,metrics").split(",")
    if "traces" in signals:
        provider = TracerProvider()
        if os.environ.get("BENCH_SPAN_PROCESSOR") == "simple":
            from opentelemetry.sdk.trace.export import SimpleSpanProcessor

            provider.add_span_processor(SimpleSpanProcessor(Nothing()))
        elif os.environ.get("BENCH_SPAN_PROCESSOR") != "none":
            provider.add_span_processor(BatchSpanProcessor(Nothing()))
        trace.set_tracer_provider(provider)
    if "metrics" in signals:
        exemplars: Any = None  # the SDK's default: trace_based
        if os.environ.get("BENCH_EXEMPLARS") != "on":  # the setting docs/telemetry.md gives
            from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter

            exemplars = AlwaysOffExemplarFilter()
        metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()],
                                                 exemplar_filter=exemplars))


async def _arm(plugins: Plugins, on: bool, requests: int) -> tuple[float, float]:
    """(CPU seconds per chunk, TTFT p50 seconds) of ``requests`` streamed answers."""
    os.environ["MODELPLEX_OTEL"] = "1" if on else "0"
    ttfts = []
    chunks = 0
    async with ChatManager("openai:bench", plugins=plugins) as chat:
        gc.collect()
        cpu = time.process_time()
        for i in range(requests):
            start = time.perf_counter()
            first = None
            async for _ in chat.send_message(f"question {i}"):
                if first is None:
                    first = time.perf_counter() - start
                chunks += 1
            ttfts.append(first or 0.0)
            chat.clear_history()
        cpu = time.process_time() - cpu
    return cpu / chunks, statistics.median(ttfts)


#: the ``--http`` arms: (arm.py arm, environment). "off" first: the others are against it.
HTTP_ARMS: dict[str, tuple[str, dict[str, str]]] = {
    "off": ("modelplex-manager", {}),
    "on": ("modelplex-manager-otel", {}),
}
BREAKDOWN_ARMS: dict[str, tuple[str, dict[str, str]]] = {
    "traces only": ("modelplex-manager-otel", {"BENCH_SIGNALS": "traces"}),
    "metrics only": ("modelplex-manager-otel", {"BENCH_SIGNALS": "metrics"}),
    "on, exemplars (SDK default filter)": ("modelplex-manager-otel", {"BENCH_EXEMPLARS": "on"}),
    "on, simple span processor": ("modelplex-manager-otel", {"BENCH_SPAN_PROCESSOR": "simple"}),
    "off, genai-prices loaded": ("modelplex-manager", {"BENCH_PRELOAD_PRICES": "1"}),
}


def child(arm_name: str, url: str, streams: int) -> None:
    """One ``--http`` arm in this process (``--child``): ``arm.run`` with the garbage
    collector's collections and CPU time counted; prints one JSON line."""
    here = Path(__file__).parent
    sys.path.insert(0, str(here))
    import arm

    if os.environ.get("BENCH_PRELOAD_PRICES"):
        from modelplex.cost import cost_of

        cost_of("openai", "bench", Usage(prompt_tokens=1, completion_tokens=1))
    counts = [0, 0, 0]
    spent = [0.0, 0.0]

    def timed(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            spent[1] = time.process_time()
        else:
            counts[info["generation"]] += 1
            spent[0] += time.process_time() - spent[1]

    class Collector:
        """``arm.run``'s ``gc``: counting starts after its collection that ends the warm-up."""

        def __getattr__(self, name: str) -> Any:
            return getattr(gc, name)

        def collect(self, *args: Any) -> int:
            found = gc.collect(*args)
            if timed not in gc.callbacks:
                gc.callbacks.append(timed)
            return found

    arm.gc = Collector()  # type: ignore[assignment]
    result = asyncio.run(arm.run(arm_name, "stream", url, streams, 64))
    result.update(gc_collections=counts, gc_ms=spent[0] * 1e3)
    print(json.dumps(result))


def run_http(args: argparse.Namespace) -> dict[str, Any]:
    """The arms through HTTP (``--http``); returns what to save."""
    import subprocess

    here = Path(__file__).parent
    sys.path.insert(0, str(here))
    from run import _pinned, _start_upstream

    arms = dict(HTTP_ARMS, **(BREAKDOWN_ARMS if args.breakdown else {}))
    upstream, url = _start_upstream(0, 100)
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in arms}
    loads = [os.getloadavg()[0]]
    names = list(arms)
    try:
        for round_no in range(args.rounds):
            for name in names[round_no % len(names):] + names[:round_no % len(names)]:
                arm_name, env = arms[name]
                out = subprocess.run(
                    _pinned(1, [sys.executable, str(Path(__file__)), "--child", arm_name, url,
                                str(args.streams)]),
                    capture_output=True, text=True, timeout=900, check=False,
                    env={**os.environ, **env})
                if out.returncode != 0:
                    raise RuntimeError(f"arm {name} failed:\n{out.stderr[-2000:]}")
                samples[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
                loads.append(os.getloadavg()[0])
    finally:
        upstream.kill()

    def med(name: str, key: str) -> float:
        return statistics.median(s[key] for s in samples[name])

    def per_answer(name: str, key: str) -> float:  # us per answer (a stream is 100 chunks)
        if key == "cpu_per_chunk_us":
            return med(name, key) * 100
        return float(statistics.median(s[key] * 1e3 / (s["chunks"] / 100)
                                       for s in samples[name]))

    table = {"CPU per chunk, on / off": med("on", "cpu_per_chunk_us")
             / med("off", "cpu_per_chunk_us"),
             "TTFT p50 added (ms)": med("on", "ttft_p50_ms") - med("off", "ttft_p50_ms")}
    print("| metric (HTTP) | value | target |\n|---|---|---|")
    for name, value in table.items():
        print(f"| {name} | {value:.3f} | <= {TARGETS[name]} |")
    print("\n| arm | CPU per answer (us) | added (us) | on / off | of it GC (us) | "
          "GC collections (gen 0/1/2) |\n|---|---|---|---|---|---|")
    off_cpu, off_gc = per_answer("off", "cpu_per_chunk_us"), per_answer("off", "gc_ms")
    for name in arms:
        cpu, gc_us = per_answer(name, "cpu_per_chunk_us"), per_answer(name, "gc_ms")
        collections = "/".join(
            f"{statistics.median(s['gc_collections'][g] for s in samples[name]):.0f}"
            for g in range(3))
        print(f"| {name} | {cpu:.0f} | {cpu - off_cpu:+.0f} | {cpu / off_cpu:.3f} | "
              f"{gc_us:.0f} ({gc_us - off_gc:+.0f}) | {collections} |")
    print("per round on/off: "
          + ", ".join(f"{a['cpu_per_chunk_us'] / b['cpu_per_chunk_us']:.3f}"
                      for a, b in zip(samples["on"], samples["off"], strict=True))
          + f"; {args.streams} streams per arm and round; load average "
          f"{min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores", file=sys.stderr)
    return {"json": args.json, "table": table, "samples": samples,
            "load_average": [min(loads), max(loads)]}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the arms and print the table; returns what to save."""
    configure_sdk()
    plugins = Plugins(load_entrypoints=False)
    plugins.register(Plugin(), name="bench")
    await _arm(plugins, True, 20)  # warm up: imports, first-call caches
    await _arm(plugins, False, 20)
    samples: dict[str, list[tuple[float, float]]] = {"off": [], "on": []}
    for round_no in range(args.rounds):
        order = ("off", "on") if round_no % 2 == 0 else ("on", "off")
        for name in order:
            samples[name].append(await _arm(plugins, name == "on", args.requests))

    def med(name: str, index: int) -> float:
        return statistics.median(s[index] for s in samples[name])

    table = {"CPU per chunk, on / off": med("on", 0) / med("off", 0),
             "TTFT p50 added (ms)": (med("on", 1) - med("off", 1)) * 1e3}
    print("| metric | value | target |\n|---|---|---|")
    for name, value in table.items():
        print(f"| {name} | {value:.3f} | <= {TARGETS[name]} |")
    print(f"off: {med('off', 0) * 1e6:.2f} us/chunk, TTFT p50 {med('off', 1) * 1e3:.3f} ms; "
          f"on: {med('on', 0) * 1e6:.2f} us/chunk, TTFT p50 {med('on', 1) * 1e3:.3f} ms",
          file=sys.stderr)
    return {"json": args.json, "table": table, "samples": samples}


def main() -> None:
    """Run, then save the measurements."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--http", action="store_true",
                        help="Through HTTP: arm.py processes against upstream.py.")
    parser.add_argument("--streams", type=int, default=2048, help="Streams per arm (--http).")
    parser.add_argument("--breakdown", action="store_true",
                        help="With --http: the arms that each leave one part out.")
    parser.add_argument("--child", nargs=3, metavar=("ARM", "URL", "STREAMS"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return
    args.json = args.json or str(Path(__file__).parent / "results" / (
        "telemetry-http.json" if args.http else "telemetry.json"))
    result = run_http(args) if args.http else asyncio.run(run(args))
    path = Path(result.pop("json"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
