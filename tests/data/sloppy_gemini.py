"""A sloppy provider for a Gemini-style API, as a hurried author might write it.

Raw aiohttp and every mistake of the issue's target: no error mapping (no status check, no
timeouts, no in-stream error check), the API's own finish reasons, usage dropped, stop
sequences ignored (and the other options but ``maxOutputTokens``), the session never
closed. tests/test_template.py runs the conformance suites against it, with and without the
test upstream configured.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from modelplex import ChatRequest, Provider, StreamChunk


class SloppyGeminiProvider(Provider):
    name = "gemini"

    def __init__(self, base_url: str = "https://generativelanguage.googleapis.com/v1beta",
                 api_key: str | None = None) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self.session: aiohttp.ClientSession | None = None

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        if self.session is None:
            self.session = aiohttp.ClientSession()
        config: dict[str, Any] = {}
        if request.options.max_tokens:
            config["maxOutputTokens"] = request.options.max_tokens
        body = {"generationConfig": config, "contents": [
            {"role": "user", "parts": [{"text": m.content}]} for m in request.messages]}
        url = f"{self.base_url}/models/{request.model}:streamGenerateContent?alt=sse"
        finish = None
        async with self.session.post(url, json=body,
                                     headers={"x-goog-api-key": self.api_key or ""}) as resp:
            async for line in resp.content:
                if not line.startswith(b"data: "):
                    continue
                obj = json.loads(line[6:])
                for candidate in obj.get("candidates", []):
                    for part in candidate["content"]["parts"]:
                        if part.get("text"):
                            yield StreamChunk(content=part["text"])
                    finish = candidate.get("finishReason") or finish
        yield StreamChunk(finish_reason=finish or "STOP")
