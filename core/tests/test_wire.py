"""modelplex.testing.Wire: a wire of one's own plugs into the test upstream and the suites."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

import aiohttp
import pytest

from modelplex.chunks import StreamChunk, Usage
from modelplex.http import Timeouts
from modelplex.http_provider import HttpProvider
from modelplex.provider import ChatRequest
from modelplex.streams import sse_json
from modelplex.testing import (
    WIRES,
    Answer,
    FaultyUpstream,
    ProviderConformanceTests,
    Reply,
    Wire,
    get_wire,
)
from modelplex.testing.wires import ANTHROPIC, OLLAMA, OPENAI, TGI


class PathWire(Wire):
    """SSE without an end marker, the model in the path: the event with "end" is the last."""

    name = "path"
    paths: ClassVar[dict[str, bool | None]] = {"/v9/{model}/stream": True,
                                               "/v9/{model}/answer": False}
    models_path = "/v9/models"
    finish_words: ClassVar[dict[str, str]] = {"stop": "DONE", "length": "CUT"}
    stop_field = "config.halt"

    def piece(self, answer: Answer, index: int) -> bytes:
        return self.event({"text": answer.piece_text(index)})

    def end(self, answer: Answer) -> list[bytes]:
        return [self.event(self.whole(answer))]

    def whole(self, answer: Answer) -> Any:
        return {"text": "", "end": self.finish_word(answer), "tokens": [
            answer.prompt_tokens, answer.completion_tokens]}

    def error_body(self, status: int, message: str) -> Any:
        return {"problem": {"status": status, "detail": message}}

    def models(self, names: list[str]) -> Any:
        return {"names": names}


class PathProvider(HttpProvider):
    name = "path"
    stop_key = "halt"

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        options = request.options.set_values()
        if "stop" in options:
            options[self.stop_key] = options.pop("stop")
        async with self.http.stream("POST", f"/v9/{request.model}/stream",
                                    {"config": options}) as resp:
            async for _, obj in sse_json(resp, provider=self.name, done=None,
                                         is_end=lambda obj: "end" in obj):
                if obj["text"]:
                    yield StreamChunk(content=obj["text"])
                if "end" in obj:
                    prompt, completion = obj["tokens"]
                    yield StreamChunk(finish_reason="stop" if obj["end"] == "DONE" else "length",
                                      usage=Usage(prompt_tokens=prompt,
                                                  completion_tokens=completion))


def test_the_built_in_wires_are_wire_instances() -> None:
    assert WIRES == {"openai": OPENAI, "ollama": OLLAMA, "anthropic": ANTHROPIC, "tgi": TGI}
    assert all(isinstance(wire, Wire) for wire in WIRES.values())
    assert get_wire("tgi") is TGI
    wire = PathWire()
    assert get_wire(wire) is wire
    with pytest.raises(ValueError, match=r"no built-in wire named 'gemini'.*Wire instance"):
        get_wire("gemini")


async def test_a_wire_of_ones_own_answers_scripts_faults_and_records() -> None:
    async with FaultyUpstream(models=["m1"], wires=[PathWire()],
                              require_headers={"x-k": "v"}) as upstream, \
            aiohttp.ClientSession(headers={"x-k": "v"}) as http:
        upstream.script("m1", Reply(pieces=["a", "b"], prompt_tokens=4), "429")
        async with http.post(upstream.url + "/v9/m1/stream", json={"config": {}}) as resp:
            assert resp.headers["Content-Type"] == "text/event-stream"
            body = await resp.text()
        assert body.split("\n\n")[:3] == ['data: {"text": "a"}', 'data: {"text": "b"}',
                                          'data: {"text": "", "end": "DONE", "tokens": [4, 2]}']
        async with http.post(upstream.url + "/v9/m1/answer", json={}) as resp:
            assert resp.status == 429 and resp.headers["Retry-After"] == "2"
            assert await resp.json() == {"problem": {"status": 429,
                                                     "detail": "rate limit exceeded"}}
        async with http.post(upstream.url + "/v9/m1/answer", json={"max_tokens": 2}) as resp:
            assert await resp.json() == {"text": "", "end": "CUT", "tokens": [3, 2]}
        async with http.post(upstream.url + "/v9/other/stream", json={}) as resp:
            assert resp.status == 404
            assert (await resp.json())["problem"]["detail"] == "model 'other' not found"
        async with http.get(upstream.url + "/v9/models") as resp:
            assert await resp.json() == {"names": ["m1"]}
        async with aiohttp.ClientSession() as anonymous, \
                anonymous.post(upstream.url + "/v9/m1/stream", json={}) as resp:
            assert resp.status == 401  # the wire's own error shape
            assert "x-k" in (await resp.json())["problem"]["detail"]
        assert [(r.wire, r.model, r.path) for r in upstream.chat_requests()] == [
            ("path", "m1", "/v9/m1/stream"), ("path", "m1", "/v9/m1/answer"),
            ("path", "m1", "/v9/m1/answer"), ("path", "other", "/v9/other/stream"),
            ("path", "m1", "/v9/m1/stream")]


class PathSuite(ProviderConformanceTests):
    """Not collected (no Test prefix): its checks are called one by one below."""

    wire = PathWire()
    plugin = None

    def make_provider(self, base_url: str, *, timeouts: Timeouts,
                      api_key: str | None) -> PathProvider:
        return PathProvider(base_url=base_url, api_key=api_key, timeouts=timeouts)


async def test_the_stop_check_wants_the_wires_own_field() -> None:
    suite = PathSuite()
    for stop_key, passes in (("halt", True), ("stop", False)):
        async with FaultyUpstream(models=[suite.upstream_model], wires=[PathWire()]) as up, \
                PathProvider(base_url=up.url) as provider:
            provider.stop_key = stop_key  # type: ignore[misc]
            if passes:
                await suite.test_options_reach_the_wire(up, provider)
                continue
            with pytest.raises(AssertionError, match=r"in the API's own field 'config\.halt'"):
                await suite.test_options_reach_the_wire(up, provider)


async def test_the_usage_check_says_what_it_expected() -> None:
    suite = PathSuite()

    class Estimating(PathProvider):
        async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
            async for chunk in super()._stream(request):
                yield chunk if chunk.usage is None else StreamChunk(
                    finish_reason=chunk.finish_reason,
                    usage=Usage(prompt_tokens=8, completion_tokens=5, estimated=True))

    async with FaultyUpstream(models=[suite.upstream_model], wires=[PathWire()]) as up:
        async with PathProvider(base_url=up.url) as good:
            await suite.test_usage_only_in_final_chunk(good, suite.upstream_model, up, good)
        async with Estimating(base_url=up.url) as bad:
            with pytest.raises(AssertionError, match=r"expected the usage the server reported"
                               r".*= \(17, 9\) and estimated=False; got \(8, 5\)"):
                await suite.test_usage_only_in_final_chunk(bad, suite.upstream_model, up, bad)
