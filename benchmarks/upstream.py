"""A fake model server for benchmarks: canned OpenAI SSE, Ollama NDJSON, Anthropic and TGI SSE.

    python benchmarks/upstream.py --port 8089 --chunks 100 --delay-ms 0 --error-rate 0

Routes: ``POST /v1/chat/completions`` (SSE when ``stream`` is true, else one JSON body),
``POST /api/chat`` (NDJSON when ``stream`` is not false), ``GET /v1/models``, ``GET /api/tags``,
``GET /api/version``; ``POST /v1/messages`` (Anthropic SSE when ``stream`` is true, else one
JSON message); ``POST /generate_stream`` and ``POST /generate`` (TGI's native API), ``GET /info``.
``--error-rate`` answers that fraction of requests with HTTP 503. ``--first-at-once`` sends a
paced stream's first events up to and including its first text at once (OpenAI's role-only
chunk with the first content chunk), pacing the rest: the time to the first token is then the
round trip and the client's own work, not one pacing interval.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random

from aiohttp import web

TOKEN = "tok "


def openai_chunks(n: int) -> list[bytes]:
    """The SSE events of one streamed answer of ``n`` content chunks, usage and [DONE]."""
    head = '{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1,"model":"bench",'
    events = [f'data: {head}"choices":[{{"index":0,"delta":{{"role":"assistant","content":""}},'
              '"finish_reason":null}]}\n\n']
    events += [f'data: {head}"choices":[{{"index":0,"delta":{{"content":"{TOKEN}"}},'
               '"finish_reason":null}]}\n\n'] * n
    events.append(f'data: {head}"choices":[{{"index":0,"delta":{{}},'
                  '"finish_reason":"stop"}]}\n\n')
    events.append(f'data: {head}"choices":[],"usage":{{"prompt_tokens":10,'
                  f'"completion_tokens":{n},"total_tokens":{n + 10}}}}}\n\n')
    events.append("data: [DONE]\n\n")
    return [e.encode() for e in events]


def ollama_lines(n: int) -> list[bytes]:
    """The NDJSON lines of one streamed Ollama chat answer of ``n`` content chunks."""
    line = ('{"model":"bench","created_at":"2025-01-01T00:00:00Z","message":'
            f'{{"role":"assistant","content":"{TOKEN}"}},"done":false}}\n')
    final = ('{"model":"bench","created_at":"2025-01-01T00:00:00Z","message":{"role":"assistant",'
             '"content":""},"done_reason":"stop","done":true,"total_duration":1000,'
             f'"load_duration":10,"prompt_eval_count":10,"prompt_eval_duration":100,'
             f'"eval_count":{n},"eval_duration":900}}\n')
    return [line.encode()] * n + [final.encode()]


def anthropic_events(n: int) -> list[bytes]:
    """The SSE events of one streamed Messages API answer of ``n`` text deltas."""
    def event(name: str, data: str) -> bytes:
        return f"event: {name}\ndata: {data}\n\n".encode()

    delta = event("content_block_delta", '{"type":"content_block_delta","index":0,"delta":'
                                         f'{{"type":"text_delta","text":"{TOKEN}"}}}}')
    return [event("message_start", '{"type":"message_start","message":{"id":"msg_bench",'
                                   '"type":"message","role":"assistant","content":[],'
                                   '"model":"bench","stop_reason":null,"stop_sequence":null,'
                                   '"usage":{"input_tokens":10,"output_tokens":1}}}'),
            event("content_block_start", '{"type":"content_block_start","index":0,'
                                         '"content_block":{"type":"text","text":""}}'),
            event("ping", '{"type": "ping"}'),
            *[delta] * n,
            event("content_block_stop", '{"type":"content_block_stop","index":0}'),
            event("message_delta", '{"type":"message_delta","delta":{"stop_reason":"end_turn",'
                                   f'"stop_sequence":null}},"usage":{{"output_tokens":{n}}}}}'),
            event("message_stop", '{"type":"message_stop"}')]


def tgi_events(n: int) -> list[bytes]:
    """The SSE events of one TGI ``/generate_stream`` answer of ``n`` tokens and EOS."""
    def event(index: int, token: dict[str, object], generated: str | None,
              details: dict[str, object] | None) -> bytes:
        body = {"index": index, "token": token, "generated_text": generated, "details": details}
        return b"data:" + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"

    events = [event(i, {"id": 100 + i, "text": TOKEN, "logprob": -0.5, "special": False},
                    None, None) for i in range(n)]
    events.append(event(n, {"id": 2, "text": "</s>", "logprob": -0.1, "special": True},
                        TOKEN * n, {"finish_reason": "eos_token", "generated_tokens": n + 1,
                                    "seed": None, "input_length": 10}))
    return events


def make_app(chunks: int, delay: float, error_rate: float, group: int = 16,
             first_at_once: bool = False) -> web.Application:
    """The fake server: ``chunks`` per answer, ``delay`` seconds between chunks."""
    sse = openai_chunks(chunks)
    ndjson = ollama_lines(chunks)
    anthropic_sse = anthropic_events(chunks)
    tgi_sse = tgi_events(chunks)
    anthropic_body = json.dumps({
        "id": "msg_bench", "type": "message", "role": "assistant", "model": "bench",
        "content": [{"type": "text", "text": TOKEN * chunks}], "stop_reason": "end_turn",
        "stop_sequence": None, "usage": {"input_tokens": 10, "output_tokens": chunks}}).encode()
    tgi_body = json.dumps({"generated_text": TOKEN * chunks, "details": {
        "finish_reason": "eos_token", "generated_tokens": chunks + 1, "seed": None,
        "prefill": [], "tokens": [{"id": 100 + i, "text": TOKEN, "logprob": -0.5,
                                   "special": False} for i in range(chunks)]}}).encode()
    openai_body = json.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 1, "model": "bench",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": TOKEN * chunks},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": chunks,
                  "total_tokens": chunks + 10}}).encode()
    ollama_body = json.dumps({
        "model": "bench", "created_at": "2025-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": TOKEN * chunks}, "done": True,
        "done_reason": "stop", "prompt_eval_count": 10, "eval_count": chunks}).encode()

    async def stream(request: web.Request, parts: list[bytes], ctype: str) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": ctype})
        await resp.prepare(request)
        if delay:
            head = 0
            if first_at_once:  # everything up to the first text in one write
                head = next((i for i, p in enumerate(parts) if TOKEN.encode() in p), 0)
                await resp.write(b"".join(parts[:head + 1]))
                await asyncio.sleep(delay)
                head += 1
            for part in parts[head:]:
                await resp.write(part)
                await asyncio.sleep(delay)
        else:
            for start in range(0, len(parts), group):
                await resp.write(b"".join(parts[start:start + group]))
        await resp.write_eof()
        return resp

    def busy() -> web.Response | None:
        if error_rate and random.random() < error_rate:
            return web.json_response({"error": {"message": "busy", "type": "server_error"}},
                                     status=503, headers={"Retry-After": "0"})
        return None

    async def chat_completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if (err := busy()) is not None:
            return err
        if body.get("stream"):
            return await stream(request, sse, "text/event-stream")
        return web.Response(body=openai_body, content_type="application/json")

    async def ollama_chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if (err := busy()) is not None:
            return err
        if body.get("stream", True):
            return await stream(request, ndjson, "application/x-ndjson")
        return web.Response(body=ollama_body, content_type="application/json")

    async def anthropic_messages(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if (err := busy()) is not None:
            return err
        if body.get("stream"):
            return await stream(request, anthropic_sse, "text/event-stream")
        return web.Response(body=anthropic_body, content_type="application/json")

    async def tgi_generate_stream(request: web.Request) -> web.StreamResponse:
        await request.json()
        if (err := busy()) is not None:
            return err
        return await stream(request, tgi_sse, "text/event-stream")

    async def tgi_generate(request: web.Request) -> web.StreamResponse:
        await request.json()
        if (err := busy()) is not None:
            return err
        return web.Response(body=tgi_body, content_type="application/json")

    async def info(_: web.Request) -> web.Response:
        return web.json_response({"model_id": "bench", "max_total_tokens": 4096})

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "bench", "object": "model"}]})

    async def tags(_: web.Request) -> web.Response:
        return web.json_response({"models": [{"name": "bench", "model": "bench", "size": 1}]})

    async def version(_: web.Request) -> web.Response:
        return web.json_response({"version": "0.0.0-bench"})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/api/chat", ollama_chat)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/api/tags", tags)
    app.router.add_get("/api/version", version)
    app.router.add_post("/v1/messages", anthropic_messages)
    app.router.add_post("/generate_stream", tgi_generate_stream)
    app.router.add_post("/generate", tgi_generate)
    app.router.add_get("/info", info)
    return app


def main() -> None:
    """Serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--chunks", type=int, default=100)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--first-at-once", action="store_true",
                        help="Send a paced stream's events up to its first text at once.")
    args = parser.parse_args()
    web.run_app(make_app(args.chunks, args.delay_ms / 1000, args.error_rate,
                         first_at_once=args.first_at_once), host=args.host,
                port=args.port, print=None, access_log=None, backlog=4096)


if __name__ == "__main__":
    main()
