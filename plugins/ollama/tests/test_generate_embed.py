"""Completion over /api/generate and embeddings over /api/embed (and the legacy fallback)."""

from __future__ import annotations

import json
from types import ModuleType

import pytest
from aioresponses import aioresponses

from modelplex.errors import ModelNotFoundError, OptionsError, StreamError
from modelplex_ollama.provider import OllamaProvider

GENERATE = "http://ollama.test:11434/api/generate"
EMBED = "http://ollama.test:11434/api/embed"
EMBEDDINGS = "http://ollama.test:11434/api/embeddings"


async def test_generate_stream_transcript(provider: OllamaProvider, mock: aioresponses,
                                          wire: ModuleType) -> None:
    mock.post(GENERATE, body=wire.ndjson(*wire.GENERATE_STREAM))
    chunks = [c async for c in provider.generate(
        "Why?", model="gemma4", system="Be brief.", suffix="END", raw=True,
        options={"num_ctx": 4096, "keep_alive": 0})]
    assert "".join(c.content for c in chunks) == "That's a fantastic question!"
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 259
    assert chunks[-1].usage.timings is not None
    assert chunks[-1].usage.timings["eval"] == pytest.approx(4.23271)
    assert all(c.usage is None for c in chunks[:-1])
    assert wire.sent(mock, "POST", "/api/generate") == {
        "model": "gemma4", "prompt": "Why?", "stream": True, "system": "Be brief.",
        "suffix": "END", "raw": True, "keep_alive": 0, "options": {"num_ctx": 4096}}


async def test_generate_final_object_with_metrics_and_empty_response(
        provider: OllamaProvider, mock: aioresponses, wire: ModuleType) -> None:
    mock.post(GENERATE, body=wire.ndjson(
        '{"model":"llama3.2","response":"The sky","done":false}',
        wire.GENERATE_FINAL_WITH_METRICS))
    chunks = [c async for c in provider.generate("Why?", model="llama3.2")]
    assert [c.content for c in chunks] == ["The sky", ""]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == 26
    assert chunks[-1].finish_reason == "stop"  # done without done_reason


async def test_generate_complete_without_metrics_is_estimated(
        provider: OllamaProvider, mock: aioresponses, wire: ModuleType) -> None:
    mock.post(GENERATE, body=wire.GENERATE_NON_STREAM)
    response = await provider.generate_complete("Why?", model="gemma4")
    assert response.content == "That's a fantastic question!"
    assert response.usage.estimated
    assert response.usage.completion_tokens == 7
    assert wire.sent(mock, "POST", "/api/generate")["stream"] is False


async def test_generate_mid_stream_error_keeps_partial(provider: OllamaProvider,
                                                       mock: aioresponses,
                                                       wire: ModuleType) -> None:
    mock.post(GENERATE, body=wire.ndjson(*wire.GENERATE_MID_STREAM_ERROR))
    received = []
    with pytest.raises(StreamError, match="an error was encountered") as info:
        async for chunk in provider.generate("Can you?", model="gemma4"):
            received.append(chunk.content)
    assert received == [" Yes", ".", "I", "can"]
    assert info.value.partial_content == " Yes.Ican"


async def test_generate_validates_before_sending(provider: OllamaProvider,
                                                 mock: aioresponses) -> None:
    with pytest.raises(OptionsError, match="temperature"):
        provider.generate("x", model="gemma4", options={"temperature": -1})
    assert not mock.requests


async def test_embed_batch(provider: OllamaProvider, mock: aioresponses,
                           wire: ModuleType) -> None:
    mock.post(EMBED, body=json.dumps({"model": "all-minilm", "embeddings": [[0.1, 0.2],
                                                                           [0.3, 0.4]],
                                      "total_duration": 14143917, "prompt_eval_count": 8}))
    vectors = await provider.embed(["a", "b"], model="all-minilm", truncate=False,
                                   dimensions=2, options={"keep_alive": "1m", "num_ctx": 512})
    assert vectors == [[0.1, 0.2], [0.3, 0.4]]
    assert wire.sent(mock, "POST", "/api/embed") == {
        "model": "all-minilm", "input": ["a", "b"], "truncate": False, "dimensions": 2,
        "keep_alive": "1m", "options": {"num_ctx": 512}}


async def test_embed_falls_back_to_legacy_endpoint_once(provider: OllamaProvider,
                                                        mock: aioresponses,
                                                        wire: ModuleType) -> None:
    mock.post(EMBED, status=404, body="404 page not found", content_type="text/plain")
    mock.post(EMBEDDINGS, body=json.dumps({"embedding": [0.5, 0.6]}), repeat=True)
    assert await provider.embed(["a", "b"], model="all-minilm") == [[0.5, 0.6], [0.5, 0.6]]
    assert wire.sent(mock, "POST", "/api/embeddings", 0) == {"model": "all-minilm",
                                                              "prompt": "a"}
    assert wire.sent(mock, "POST", "/api/embeddings", 1)["prompt"] == "b"
    # the old server is remembered: /api/embed is not tried again
    assert await provider.embed(["c"], model="all-minilm") == [[0.5, 0.6]]
    assert len(mock.requests[("POST", wire.URL(EMBED))]) == 1


async def test_embed_unknown_model_is_not_a_fallback(provider: OllamaProvider,
                                                     mock: aioresponses,
                                                     wire: ModuleType) -> None:
    mock.post(EMBED, status=404, body=wire.not_found("nomic-embed-text"))
    with pytest.raises(ModelNotFoundError, match="models pull ollama:nomic-embed-text"):
        await provider.embed(["a"], model="nomic-embed-text")
    assert ("POST", wire.URL(EMBEDDINGS)) not in mock.requests


async def test_embed_count_mismatch_and_empty_input(provider: OllamaProvider,
                                                    mock: aioresponses) -> None:
    assert await provider.embed([], model="all-minilm") == []
    assert not mock.requests
    mock.post(EMBED, body=json.dumps({"embeddings": [[0.1]]}))
    with pytest.raises(StreamError, match="1 vectors for 2 texts"):
        await provider.embed(["a", "b"], model="all-minilm")
