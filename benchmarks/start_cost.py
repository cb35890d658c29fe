"""What a stream costs before its request leaves: loop turns and CPU, per arm, against raw.

    python benchmarks/start_cost.py [--arms raw-openai,modelplex-openai,...] [--rounds 3]

The time to first token of 32 streams started together (M2-32) is mostly what the one
client core does before each request is written: every stream's own CPU before its send,
and every turn of the event loop a stream waits through before it sends (an ``await`` that
really suspends: a lock, a future, ``sleep(0)``, a new task...), during which the other
streams' start-up runs. Both are deterministic enough to compare on a busy machine, unlike
the wall-clock ratios. Each arm (``benchmarks/arm.py``'s factories) runs in its own process
against the fake upstream (``upstream.py --first-at-once``), with its connections warm:

* ``seq_turns``: loop iterations from a stream's start to its request bytes being written,
  one stream at a time (raw aiohttp on Python < 3.12: 1, its body-writer task);
* ``seq_cpu_send_us`` / ``seq_cpu_first_us``: the process's CPU time (``process_time``) from
  a stream's start to its request being written / to its first text, one stream at a time
  (median of ``--seq`` streams);
* ``burst_turns_max``: the most loop iterations any of 32 streams started together waited
  before its request was written;
* ``burst_cpu_sent_us``: CPU from the burst's start until the last of its 32 requests was
  written; ``burst_cpu_first_p50_us`` / ``_max_us``: CPU from the burst's start until the
  16th / 32nd first text (the CPU-time shape of M2-32's TTFT p50 / p99). Medians of
  ``--bursts`` bursts.

The request is recognised on the socket by its prompt (``unique prompt N``), so the probe
needs no hook inside modelplex. Prints one table; ``--json`` prints the raw figures.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
ARMS = ("raw-openai", "modelplex-openai", "modelplex-manager", "modelplex-router2")
_PROMPT = re.compile(rb"unique prompt (-?\d+)")


class _Probe:
    """Loop iterations and the socket writes that carry a prompt, with their CPU time."""

    def __init__(self) -> None:
        self.turns = 0
        self.sent: dict[int, tuple[int, float]] = {}
        self.counting = False  # bytecodes: counted from a stream's start to its send
        self.ops = 0

    def install(self) -> None:
        import asyncio.base_events as base
        import asyncio.selector_events as sel

        probe = self
        run_once = base.BaseEventLoop._run_once
        write = sel._SelectorSocketTransport.write

        def counted(loop: Any) -> None:
            probe.turns += 1
            run_once(loop)

        def watched(transport: Any, data: Any) -> None:
            found = _PROMPT.search(bytes(data)) if len(data) < 65536 else None
            if found:
                probe.counting = False
                probe.sent.setdefault(int(found.group(1)), (probe.turns, time.process_time()))
            write(transport, data)

        base.BaseEventLoop._run_once = counted  # type: ignore[method-assign]
        sel._SelectorSocketTransport.write = watched  # type: ignore[method-assign]

    def trace(self, frame: Any, event: str, arg: Any) -> Any:
        """A ``sys.settrace`` function counting the bytecodes run while ``counting``."""
        frame.f_trace_opcodes = True
        return self._op

    def _op(self, frame: Any, event: str, arg: Any) -> Any:
        if event == "opcode" and self.counting:
            self.ops += 1
        return self._op


async def _measure(arm: str, url: str, seq: int, bursts: int, width: int) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    from arm import ARMS as FACTORIES

    probe = _Probe()
    probe.install()
    factory, wire = FACTORIES[arm]
    stream, _request, close = await factory(url, wire)
    next_id = iter(range(10**9))

    async def one(i: int, marks: dict[int, tuple[int, float, float]]) -> None:
        start_turn, start_cpu = probe.turns, time.process_time()
        async for _ in stream(i):
            marks[i] = (start_turn, start_cpu, time.process_time())
            break  # leaving early: the connection is closed, as a caller's break does

    async def full(i: int) -> None:
        async for _ in stream(i):
            pass

    # warm: imports, caches, and `width` pooled connections (a finished stream returns its
    # connection; one left early is closed)
    await asyncio.gather(*(full(next(next_id)) for _ in range(width)))
    gc.collect()
    seq_turns, seq_send, seq_first = [], [], []
    for _ in range(seq):
        i = next(next_id)
        marks: dict[int, tuple[int, float, float]] = {}
        await one(i, marks)
        start_turn, start_cpu, first_cpu = marks[i]
        sent_turn, sent_cpu = probe.sent[i]
        seq_turns.append(sent_turn - start_turn)
        seq_send.append((sent_cpu - start_cpu) * 1e6)
        seq_first.append((first_cpu - start_cpu) * 1e6)
        await full(next(next_id))  # put a connection back for the next one
    ops = []
    for _ in range(20):  # Python bytecodes run before the send (deterministic; not timed)
        i = next(next_id)
        probe.ops, probe.counting = 0, True
        sys.settrace(probe.trace)
        await full(i)
        sys.settrace(None)
        ops.append(probe.ops)
    b_turns, b_sent, b_p50, b_max, b_gc = [], [], [], [], []
    gc_time = [0.0, 0.0]  # total, start of the running collection

    def timed(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_time[1] = time.process_time()
        else:
            gc_time[0] += time.process_time() - gc_time[1]

    gc.callbacks.append(timed)
    for _ in range(bursts):
        await asyncio.gather(*(full(next(next_id)) for _ in range(width)))  # refill the pool
        gc.collect()
        ids = [next(next_id) for _ in range(width)]
        marks = {}
        gc_time[0] = 0.0
        cpu0 = time.process_time()
        await asyncio.gather(*(one(i, marks) for i in ids))
        b_gc.append(gc_time[0] * 1e6)
        firsts = sorted(marks[i][2] - cpu0 for i in ids)
        b_turns.append(max(probe.sent[i][0] - marks[i][0] for i in ids))
        b_sent.append((max(probe.sent[i][1] for i in ids) - cpu0) * 1e6)
        b_p50.append(firsts[len(firsts) // 2] * 1e6)
        b_max.append(firsts[-1] * 1e6)
    await close()
    med = statistics.median
    return {"arm": arm, "seq_turns": med(seq_turns), "py_ops_send": med(ops),
            "seq_cpu_send_us": med(seq_send),
            "seq_cpu_first_us": med(seq_first), "burst_turns_max": max(b_turns),
            "burst_cpu_sent_us": med(b_sent), "burst_cpu_first_p50_us": med(b_p50),
            "burst_cpu_first_max_us": med(b_max), "burst_gc_us": med(b_gc)}


def _start_upstream() -> tuple[subprocess.Popen[bytes], str]:
    sys.path.insert(0, str(HERE))
    from run import _start_upstream as start

    return start(0, 3, first_at_once=True)


def main() -> None:
    """Run each arm in its own process (``--arm``) or all of them and print the table."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--rounds", type=int, default=3, help="processes per arm, interleaved")
    parser.add_argument("--seq", type=int, default=200)
    parser.add_argument("--bursts", type=int, default=20)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--base", help="a checkout of another version (e.g. `git worktree` "
                        "of main): its arms run too, interleaved, as ARM@base")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--arm", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:
        result = asyncio.run(_measure(args.arm, args.url, args.seq, args.bursts, args.width))
        sys.stdout.write(json.dumps(result) + "\n")
        return
    upstream, url = _start_upstream()
    results: dict[str, list[dict[str, Any]]] = {}
    try:
        trees = [("", None)]
        if args.base:  # the other version's sources first on the path (plugins included)
            base = Path(args.base).resolve()
            paths = [base / "core" / "src", *sorted((base / "plugins").glob("*/src"))]
            trees.append(("@base", os.pathsep.join(map(str, paths))))
        for _ in range(args.rounds):
            for arm in args.arms.split(","):
                for label, path in trees:
                    env = dict(os.environ, **({"PYTHONPATH": path} if path else {}))
                    out = subprocess.run(
                        [sys.executable, __file__, "--arm", arm, "--url", url, "--seq",
                         str(args.seq), "--bursts", str(args.bursts), "--width",
                         str(args.width)], check=True, capture_output=True, text=True,
                        env=env)
                    results.setdefault(arm + label, []).append(
                        json.loads(out.stdout.splitlines()[-1]))
    finally:
        upstream.kill()
        upstream.wait()
    if args.json:
        sys.stdout.write(json.dumps(results) + "\n")
    keys = [k for k in next(iter(results.values()))[0] if k != "arm"]
    print(f"load average {os.getloadavg()[0]:.1f}; medians of {args.rounds} processes per arm")
    print(f"{'arm':24}" + "".join(f"{k:>24}" for k in keys))
    for arm, runs in results.items():
        print(f"{arm:24}" + "".join(f"{statistics.median(r[k] for r in runs):24.1f}"
                                   for k in keys))


if __name__ == "__main__":
    main()
