"""One benchmark arm in its own process; prints its measurements as one JSON line.

    python benchmarks/arm.py ARM MODE --url http://127.0.0.1:8089 [--streams N --concurrency C]

ARM is one of ``ARMS``; MODE is ``stream`` (N streams, C at a time; client CPU per chunk,
streams/s, TTFT) or ``request`` (N sequential non-streaming requests; latency).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

StreamFn = Callable[[int], AsyncIterator[str]]
RequestFn = Callable[[int], Awaitable[str]]


def _messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"unique prompt {i}"}]


Close = Callable[[], Awaitable[None]]


async def make_raw(url: str, wire: str) -> tuple[StreamFn, RequestFn, Close]:
    """The limit: one aiohttp session, no connection limit, json.loads per line."""
    import aiohttp

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    if wire == "anthropic":
        return _raw_anthropic(session, url)
    if wire == "tgi":
        return _raw_tgi(session, url)
    path = "/v1/chat/completions" if wire == "openai" else "/api/chat"
    urls = url.split(",")  # several: round robin over them (M5's baseline)

    async def stream(i: int) -> AsyncIterator[str]:
        payload = {"model": "bench", "messages": _messages(i), "stream": True}
        async with session.post(urls[i % len(urls)] + path, json=payload) as resp:
            async for line in resp.content:
                if wire == "openai":
                    if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                        continue
                    event = json.loads(line[6:])
                    if event["choices"] and (text := event["choices"][0]["delta"].get("content")):
                        yield text
                else:
                    event = json.loads(line)
                    if text := event["message"]["content"]:
                        yield text

    async def request(i: int) -> str:
        payload = {"model": "bench", "messages": _messages(i), "stream": False}
        async with session.post(url + path, json=payload) as resp:
            body = await resp.json()
        if wire == "openai":
            return str(body["choices"][0]["message"]["content"])
        return str(body["message"]["content"])

    return stream, request, session.close


def _raw_anthropic(session: Any, url: str) -> tuple[StreamFn, RequestFn, Close]:
    """Raw Messages API: ``event:`` lines skipped, ``data:`` lines parsed, text deltas kept."""
    async def stream(i: int) -> AsyncIterator[str]:
        payload = {"model": "bench", "max_tokens": 1024, "messages": _messages(i),
                   "stream": True}
        async with session.post(url + "/v1/messages", json=payload) as resp:
            async for line in resp.content:
                if not line.startswith(b"data: "):
                    continue
                event = json.loads(line[6:])
                if event["type"] == "content_block_delta" and (
                        text := event["delta"].get("text")):
                    yield text
                elif event["type"] == "message_stop":
                    break

    async def request(i: int) -> str:
        payload = {"model": "bench", "max_tokens": 1024, "messages": _messages(i)}
        async with session.post(url + "/v1/messages", json=payload) as resp:
            body = await resp.json()
        return "".join(b["text"] for b in body["content"] if b["type"] == "text")

    return stream, request, session.close


def _raw_tgi(session: Any, url: str) -> tuple[StreamFn, RequestFn, Close]:
    """Raw TGI: ``data:`` lines parsed, non-special token texts kept, until generated_text."""
    async def stream(i: int) -> AsyncIterator[str]:
        payload = {"inputs": f"unique prompt {i}", "parameters": {"details": True}}
        async with session.post(url + "/generate_stream", json=payload) as resp:
            async for line in resp.content:
                if not line.startswith(b"data:"):
                    continue
                event = json.loads(line[5:])
                token = event["token"]
                if not token["special"] and token["text"]:
                    yield token["text"]
                if event["generated_text"] is not None:
                    break

    async def request(i: int) -> str:
        payload = {"inputs": f"unique prompt {i}", "parameters": {"details": True}}
        async with session.post(url + "/generate", json=payload) as resp:
            body = await resp.json()
        return str(body["generated_text"])

    return stream, request, session.close


async def make_modelplex(url: str, wire: str) -> tuple[StreamFn, RequestFn,
                                                       Callable[[], Awaitable[None]]]:
    """modelplex through its openai or ollama plugin, used directly (no ChatManager)."""
    from modelplex import create_provider

    if wire == "openai":
        provider = create_provider("openai", base_url=url + "/v1", api_key="sk-bench")
    elif wire == "anthropic":
        provider = create_provider("anthropic", base_url=url, api_key="sk-ant-bench")
    elif wire == "tgi":  # the prompt as text, as the raw arm sends it (no /chat_tokenize)
        provider = create_provider("tgi", base_url=url, template="none")
    else:
        provider = create_provider("ollama", host=url, max_parallel=100_000)

    async def stream(i: int) -> AsyncIterator[str]:
        async for chunk in provider.chat(_messages(i), model="bench"):
            if chunk.content:
                yield chunk.content

    async def request(i: int) -> str:
        return (await provider.complete(_messages(i), model="bench")).content

    return stream, request, provider.aclose


async def make_router(url: str, wire: str) -> tuple[StreamFn, RequestFn,
                                                   Callable[[], Awaitable[None]]]:
    """A named model over one deployment per URL (comma-separated), through the pipeline."""
    from modelplex.config import parse_config
    from modelplex.pipeline import open_model, release_model

    config = parse_config({"models": {"bench": {
        "deployments": [{"model": "openai:bench", "name": f"bench-{n}", "base_url": u + "/v1",
                         "api_key": "sk-bench"} for n, u in enumerate(url.split(","))],
        "retries": {"attempts": 5}}}})
    router, _ = await open_model("bench", config=config)

    async def stream(i: int) -> AsyncIterator[str]:
        async for chunk in router.chat(_messages(i), model="bench"):
            if chunk.content:
                yield chunk.content

    async def request(i: int) -> str:
        return (await router.complete(_messages(i), model="bench")).content

    async def close() -> None:
        await release_model(router)

    return stream, request, close


async def make_router2(url: str, wire: str) -> tuple[StreamFn, RequestFn,
                                                    Callable[[], Awaitable[None]]]:
    """A named model routed over two deployments of the same upstream (the issue's third
    path: the router's choice, state and statistics on every request)."""
    base = url.split(",")[0]
    return await make_router(f"{base},{base}", wire)


async def make_manager(url: str, wire: str) -> tuple[StreamFn, RequestFn,
                                                    Callable[[], Awaitable[None]]]:
    """The user-facing path: one ChatManager per conversation (providers shared by the pool).

    The arm holds the provider in the process-wide pool for the whole run, as a host app
    serving many conversations does (docs/performance.md, "For applications"): each
    conversation's manager finds it open, so what is measured is the conversation's own
    cost, not a new connection per request.
    """
    from modelplex import ChatManager
    from modelplex.config import parse_config
    from modelplex.pool import get_pool

    config = parse_config({"providers": {"openai": {"base_url": url + "/v1",
                                                    "api_key": "sk-bench"}}})
    held = await get_pool().acquire("openai", dict(config.providers["openai"]))

    async def stream(i: int) -> AsyncIterator[str]:
        async with ChatManager("openai:bench", config=config) as chat:
            async for chunk in chat.send_message(f"unique prompt {i}"):
                if chunk.content:
                    yield chunk.content

    async def request(i: int) -> str:
        async with ChatManager("openai:bench", config=config) as chat:
            return (await chat.get_response_with_meta(f"unique prompt {i}")).content

    async def close() -> None:
        await get_pool().release(held)

    return stream, request, close


async def make_manager_otel(url: str, wire: str) -> tuple[StreamFn, RequestFn,
                                                         Callable[[], Awaitable[None]]]:
    """``make_manager`` with the OpenTelemetry SDK configured (no-op exporters): the
    telemetry layer in every stack (M8)."""
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from telemetry import configure_sdk

    configure_sdk()
    return await make_manager(url, wire)


async def make_openai_sdk(url: str, wire: str) -> tuple[StreamFn, RequestFn,
                                                        Callable[[], Awaitable[None]]]:
    """The official openai SDK (httpx), retries off."""
    import openai

    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="sk-bench", max_retries=0)

    async def stream(i: int) -> AsyncIterator[str]:
        response = await client.chat.completions.create(
            model="bench", messages=_messages(i), stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True})
        async for event in response:
            if event.choices and (text := event.choices[0].delta.content):
                yield text

    async def request(i: int) -> str:
        response = await client.chat.completions.create(model="bench",
                                                        messages=_messages(i))  # type: ignore[arg-type]
        return response.choices[0].message.content or ""

    return stream, request, client.close


async def make_litellm(url: str, wire: str) -> tuple[StreamFn, RequestFn,
                                                     Callable[[], Awaitable[None]]]:
    """The litellm SDK against the same OpenAI-style upstream."""
    import litellm

    litellm.telemetry = False
    kwargs = {"model": "openai/bench", "api_base": url + "/v1", "api_key": "sk-bench",
              "num_retries": 0}

    async def stream(i: int) -> AsyncIterator[str]:
        response = await litellm.acompletion(messages=_messages(i), stream=True, **kwargs)
        async for event in response:
            if event.choices and (text := event.choices[0].delta.content):
                yield text

    async def request(i: int) -> str:
        response = await litellm.acompletion(messages=_messages(i), **kwargs)
        return str(response.choices[0].message.content)

    async def close() -> None:
        return None

    return stream, request, close


ARMS: dict[str, tuple[Callable[..., Any], str]] = {
    "raw-openai": (make_raw, "openai"),
    "raw-ollama": (make_raw, "ollama"),
    "modelplex-openai": (make_modelplex, "openai"),
    "modelplex-ollama": (make_modelplex, "ollama"),
    "modelplex-router": (make_router, "openai"),
    "modelplex-router2": (make_router2, "openai"),
    "modelplex-manager": (make_manager, "openai"),
    "modelplex-manager-otel": (make_manager_otel, "openai"),
    "raw-anthropic": (make_raw, "anthropic"),
    "raw-tgi": (make_raw, "tgi"),
    "modelplex-anthropic": (make_modelplex, "anthropic"),
    "modelplex-tgi": (make_modelplex, "tgi"),
    "openai-sdk": (make_openai_sdk, "openai"),
    "litellm": (make_litellm, "openai"),
}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(arm: str, mode: str, url: str, streams: int, concurrency: int) -> dict[str, Any]:
    """Run the arm and return its measurements."""
    factory, wire = ARMS[arm]
    stream, request, close = await factory(url, wire)
    # Warm up: connections, imports, first-call caches; then one full garbage collection,
    # so the first full collection after the imports (a one-off pause of tens of ms in every
    # process, longer the more was imported) does not land inside the measurement.
    async for _ in stream(-1):
        pass
    gc.collect()
    result: dict[str, Any] = {"arm": arm, "mode": mode}
    if mode == "stream":
        semaphore = asyncio.Semaphore(concurrency)
        ttfts: list[float] = []
        counts: list[int] = []
        errors: list[str] = []

        async def one(i: int) -> None:
            async with semaphore:
                start = time.perf_counter()
                first = None
                n = 0
                try:
                    async for _ in stream(i):
                        if first is None:
                            first = time.perf_counter() - start
                        n += 1
                except Exception as err:  # counted: an error that reached the caller
                    errors.append(type(err).__name__)
                    return
                ttfts.append(first or 0.0)
                counts.append(n)

        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(streams)))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        chunks = sum(counts)
        result.update(errors=len(errors), chunks=chunks, cpu_per_chunk_us=cpu / chunks * 1e6,
                      wall_s=wall,
                      streams_per_s=streams / wall, ttft_p50_ms=_pct(ttfts, 0.5) * 1e3,
                      ttft_p99_ms=_pct(ttfts, 0.99) * 1e3)
    else:
        latencies = []
        cpu0 = time.process_time()
        for i in range(streams):
            start = time.perf_counter()
            await request(i)
            latencies.append(time.perf_counter() - start)
        cpu = time.process_time() - cpu0
        result.update(lat_p50_ms=statistics.median(latencies) * 1e3,
                      lat_p99_ms=_pct(latencies, 0.99) * 1e3,
                      cpu_per_request_us=cpu / streams * 1e6)
    await close()
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def main() -> None:
    """Parse arguments, run, print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("arm", choices=sorted(ARMS))
    parser.add_argument("mode", choices=["stream", "request"])
    parser.add_argument("--url", default="http://127.0.0.1:8089")
    parser.add_argument("--streams", type=int, default=1024)
    parser.add_argument("--concurrency", type=int, default=256)
    args = parser.parse_args()
    result = asyncio.run(run(args.arm, args.mode, args.url, args.streams, args.concurrency))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
