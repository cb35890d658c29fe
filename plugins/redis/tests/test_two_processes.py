"""Two real processes with one real Redis share cache hits, cooldowns, in-flight counts and
rate limits. Each process finds ``modelplex-redis`` through its entry point."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import asyncio, json, sys
    from collections.abc import AsyncIterator
    from modelplex import ChatManager, get_plugins, hookimpl
    from modelplex.chunks import StreamChunk, Usage
    from modelplex.provider import ChatRequest, Provider
    from modelplex.routing import open_state

    CALLS = []

    class Counting(Provider):
        name = "counting"
        default_model = "m"

        async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
            CALLS.append(request.model)
            for word in ("The", " capital", " is", " Paris."):
                yield StreamChunk(content=word)
            yield StreamChunk(finish_reason="stop", usage=Usage(7, 4))

    class Plugin:
        @hookimpl
        def register_providers(self, register):
            register(Counting)

    async def main(url: str, role: str) -> None:
        get_plugins().register(Plugin(), name="counting")
        state = open_state({"backend": "redis", "url": url})
        report = {}
        async with ChatManager("counting:m", cache={"backend": "redis", "url": url}) as chat:
            meta = await chat.get_response_with_meta("What is the capital of France?")
            report.update(content=meta.content, cache_hit=meta.cache_hit, calls=len(CALLS))
        if role == "first":
            await state.start_cooldown("deployment-1", 30)
            await state.add_in_flight("deployment-2", 1)
            await state.add_in_flight("deployment-2", 1)
            report["rate"] = [await state.take_rate_slot("deployment-3", 3) for _ in range(2)]
            await asyncio.sleep(0.05)  # in-flight counts are written in the background
            print(json.dumps(report), flush=True)
            sys.stdin.readline()  # stay alive (with requests in flight) until told
        else:
            report["cooldowns"] = await state.cooldowns(["deployment-1", "deployment-2"])
            report["in_flight"] = await state.in_flight(["deployment-2"])
            report["rate"] = [await state.take_rate_slot("deployment-3", 3) for _ in range(2)]
            print(json.dumps(report), flush=True)
        await state.aclose()

    asyncio.run(main(sys.argv[1], sys.argv[2]))
""")


def test_two_processes_share_one_redis(redis_url: str) -> None:
    first = subprocess.Popen([sys.executable, "-c", SCRIPT, redis_url, "first"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert first.stdout is not None and first.stdin is not None
    try:
        report_a = json.loads(first.stdout.readline())
        second = subprocess.run([sys.executable, "-c", SCRIPT, redis_url, "second"],
                                capture_output=True, text=True, timeout=120, check=True)
        report_b = json.loads(second.stdout)
    finally:
        first.stdin.write("\n")
        first.stdin.close()
        first.wait(timeout=60)
    assert report_a["content"] == report_b["content"] == "The capital is Paris."
    assert (report_a["cache_hit"], report_a["calls"]) == (False, 1)
    assert (report_b["cache_hit"], report_b["calls"]) == (True, 0)  # answered by Redis
    assert list(report_b["cooldowns"]) == ["deployment-1"]
    assert 25 < report_b["cooldowns"]["deployment-1"] <= 30
    assert report_b["in_flight"] == {"deployment-2": 2}
    assert report_a["rate"] == [0.0, 0.0]
    assert report_b["rate"][0] == 0.0  # the third slot of three
    assert 55 < report_b["rate"][1] <= 60  # the limit counts both processes
    assert first.returncode == 0
