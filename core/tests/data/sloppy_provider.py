"""A deliberately sloppy provider, as a first-time author might write it from scratch.

Raw aiohttp, an Anthropic-style API (named SSE events on ``/v1/messages``), and every
mistake the conformance suites exist to catch: no status check, no error mapping, the whole
body read before parsing (no line limit, no streaming, no cancellation), no timeouts, the
API's own finish reasons, no prompt count, options dropped, no end-marker check, in-stream
errors ignored, the session never closed, the key in its repr, no entry point.
core/tests/test_conformance_sloppy.py runs the conformance suites against it and checks that
each check the base class cannot guarantee fails.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from modelplex import ChatRequest, Provider, StreamChunk, Usage


class SloppyProvider(Provider):
    name = "sloppy"

    def __init__(self, base_url: str, api_key: str | None = None) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self.session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"SloppyProvider({self.base_url!r}, api_key={self.api_key!r})"

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        if self.session is None:
            self.session = aiohttp.ClientSession()
        payload: dict[str, Any] = {
            "model": request.model, "stream": True,
            "max_tokens": request.options.max_tokens or 1024,
            "messages": [{"role": m.role.value, "content": m.content}
                         for m in request.messages]}
        resp = await self.session.post(self.base_url + "/v1/messages", json=payload,
                                       headers={"x-api-key": self.api_key or ""})
        body = (await resp.read()).decode()
        finish, output_tokens = None, 0
        for block in body.split("\n\n"):
            lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
            if "data" not in lines:
                continue
            data = json.loads(lines["data"])
            event = lines.get("event")
            if event == "content_block_delta":
                yield StreamChunk(content=data["delta"]["text"])
            elif event == "message_delta":
                finish = data["delta"]["stop_reason"]
                output_tokens = data["usage"]["output_tokens"]
        yield StreamChunk(finish_reason=finish or "end_turn",
                          usage=Usage(completion_tokens=max(output_tokens, 1)))
