"""CPU per chunk of each HTTP provider's stream reading, in process, without a network.

    python benchmarks/parsing.py [--chunks 20000] [--rounds 7]

Each provider's ``_stream`` reads a recorded-shape body held in memory, one event per network
read (as a streaming server sends them): the SSE or NDJSON line splitting, the JSON parse,
the checks of :mod:`modelplex.streams` and the provider's own per-chunk code, nothing else.
It complements ``run.py`` (whole requests against a real upstream): on a shared machine this
one is steady enough to compare two versions of the parsing code, e.g. before and after a
change, with the same interpreter (the best of ``--rounds`` runs is reported).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any


def openai_body(n: int) -> list[bytes]:
    def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return b"data: " + json.dumps({
            "id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}).encode() + b"\n\n"

    return [event({"role": "assistant", "content": ""}), *[event({"content": "tok "})] * n,
            event({}, "stop"),
            b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5}}\n\n',
            b"data: [DONE]\n\n"]


def ollama_body(n: int) -> list[bytes]:
    def line(content: str, done: bool = False) -> bytes:
        body: dict[str, Any] = {"model": "m", "created_at": "2025-01-01T00:00:00Z",
                                "message": {"role": "assistant", "content": content},
                                "done": done}
        if done:
            body.update(done_reason="stop", prompt_eval_count=3, eval_count=n)
        return json.dumps(body).encode() + b"\n"

    return [*[line("tok ")] * n, line("", True)]


def anthropic_body(n: int) -> list[bytes]:
    def event(name: str, data: dict[str, Any]) -> bytes:
        return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()

    delta = {"type": "content_block_delta", "index": 0,
             "delta": {"type": "text_delta", "text": "tok "}}
    return [event("message_start", {"type": "message_start", "message": {
                "id": "m", "model": "m", "usage": {"input_tokens": 3, "output_tokens": 1}}}),
            event("content_block_start", {"type": "content_block_start", "index": 0,
                                          "content_block": {"type": "text", "text": ""}}),
            *[event("content_block_delta", delta)] * n,
            event("content_block_stop", {"type": "content_block_stop", "index": 0}),
            event("message_delta", {"type": "message_delta",
                                    "delta": {"stop_reason": "end_turn"},
                                    "usage": {"output_tokens": n}}),
            event("message_stop", {"type": "message_stop"})]


def tgi_body(n: int) -> list[bytes]:
    def event(i: int, text: str, generated: str | None = None,
              details: dict[str, Any] | None = None) -> bytes:
        return b"data:" + json.dumps({
            "index": i, "token": {"id": i, "text": text, "logprob": -0.5, "special": False},
            "generated_text": generated, "details": details}).encode() + b"\n\n"

    return [*[event(i, "tok ") for i in range(n)],
            event(n, "</s>", "x", {"finish_reason": "eos_token", "generated_tokens": n,
                                   "input_length": 3})]


class _Content:
    def __init__(self, parts: list[bytes]) -> None:
        self.parts = parts[::-1]

    async def readany(self) -> bytes:
        return self.parts.pop() if self.parts else b""


class _Response:
    status = 200

    def __init__(self, parts: list[bytes]) -> None:
        self.content = _Content(parts)
        self.headers: dict[str, str] = {}
        # what the servers send: NDJSON for Ollama (whose reader refuses an event stream),
        # events for the others
        self.content_type = ("application/x-ndjson" if parts and parts[0].lstrip()[:1] == b"{"
                             else "text/event-stream")


def _serve(provider: Any, parts: list[bytes]) -> None:
    """Make the provider's client answer every stream with ``parts``."""

    @asynccontextmanager
    async def stream(method: str, path: str, payload: Any = None,
                     headers: Any = None) -> AsyncIterator[_Response]:
        yield _Response(list(parts))

    provider.http.stream = stream


async def _measure(provider: Any, parts: list[bytes], model: str, chunks: int,
                   rounds: int) -> float:
    _serve(provider, parts)
    request = provider.build_request([{"role": "user", "content": "hi"}], model=model)
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        async for _chunk in provider._stream(request):
            pass
        best = min(best, (time.process_time() - start) / chunks * 1e9)
    return best


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    from modelplex import create_provider

    tgi = create_provider("tgi", base_url="http://x")

    async def any_model(model: str) -> str:
        return model

    async def prompt(_request: Any) -> tuple[str, int]:
        return "p", 3

    tgi._check_model = any_model  # no /info, no /chat_tokenize: the stream only
    tgi._prompt = prompt
    arms: list[tuple[str, Any, Callable[[int], list[bytes]], str]] = [
        ("openai", create_provider("openai", base_url="http://x/v1", api_key="k"),
         openai_body, "m"),
        ("ollama", create_provider("ollama", host="http://x:1", max_parallel=0),
         ollama_body, "m"),
        ("anthropic", create_provider("anthropic", base_url="http://x", api_key="k"),
         anthropic_body, "m"),
        ("tgi", tgi, tgi_body, "tgi"),
    ]
    for name, provider, body, model in arms:
        ns = await _measure(provider, body(args.chunks), model, args.chunks, args.rounds)
        print(f"{name:10s} {ns:8.0f} ns CPU per chunk")
        await provider.aclose()


if __name__ == "__main__":
    asyncio.run(main())
