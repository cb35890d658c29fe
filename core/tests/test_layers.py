"""Layers of the request path: every layer is a WrappingProvider that forwards what it does
not override, and answers whole requests (``complete_request``) as well as streams."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from modelplex.caches import MemoryCache
from modelplex.caching import CachedProvider
from modelplex.chunks import ChatResponse, Usage
from modelplex.logs import LogStore
from modelplex.provider import ChatRequest
from modelplex.recording import RecordingProvider
from modelplex.wrapping import WrappingProvider


def _embedding_provider(fake_cls: Any) -> Any:
    class Embedding(fake_cls):  # type: ignore[misc, valid-type]
        embedded: list[list[str]]

        async def embed(self, texts: Sequence[str], *, model: str,
                        options: Mapping[str, Any] | None = None) -> list[list[float]]:
            self.embedded = [*getattr(self, "embedded", []), list(texts)]
            return [[float(len(t)), 1.0] for t in texts]

        async def _complete(self, request: ChatRequest) -> ChatResponse:
            self.completes = getattr(self, "completes", 0) + 1
            return ChatResponse(content="whole", model=request.model, provider=self.name,
                                finish_reason="stop",
                                usage=Usage(prompt_tokens=3, completion_tokens=1))

    return Embedding()


def test_layers_are_wrapping_providers(fake_cls: Any) -> None:
    inner = fake_cls()
    assert isinstance(CachedProvider(inner, MemoryCache()), WrappingProvider)
    assert isinstance(RecordingProvider(inner), WrappingProvider)
    assert RecordingProvider(inner).wrapped is inner


async def test_embed_through_every_layer(fake_cls: Any, tmp_path: Path) -> None:
    inner = _embedding_provider(fake_cls)
    store = LogStore(tmp_path / "logs.db")
    stack = RecordingProvider(CachedProvider(inner, MemoryCache()), store, "c")
    assert await stack.embed(["ab", "abc"], model="e") == [[2.0, 1.0], [3.0, 1.0]]
    assert await stack.embed(["ab"], model="e") == [[2.0, 1.0]]  # from the cache
    assert inner.embedded == [["ab", "abc"]]
    assert (await stack.list_models())[0].name == "echo"  # forwarded too
    store.close()


async def test_whole_answers_are_cached_and_recorded_once(fake_cls: Any,
                                                          tmp_path: Path) -> None:
    inner = _embedding_provider(fake_cls)
    store = LogStore(tmp_path / "logs.db")
    stack = RecordingProvider(CachedProvider(inner, MemoryCache()), store, "c")
    messages = [{"role": "user", "content": "hi"}]
    first = await stack.complete(messages, model="echo")
    again = await stack.complete(messages, model="echo")
    assert first.content == again.content == "whole"
    assert inner.completes == 1 and inner.streams_started == 0  # never streamed
    assert not first.usage.cached and again.usage.cached
    streamed = [c async for c in stack.chat(messages, model="echo")]  # the same entry
    assert "".join(c.content for c in streamed) == "whole" and inner.streams_started == 0
    stored = store.exchanges("c")
    assert [(e.response, e.cached) for e in stored] == [("whole", False), ("whole", True),
                                                        ("whole", True)]
    assert stored[0].completion_tokens == 1 and stored[0].finish_reason == "stop"
    store.close()


async def test_request_conversation_id_wins(fake_cls: Any, tmp_path: Path) -> None:
    store = LogStore(tmp_path / "logs.db")
    stack = RecordingProvider(fake_cls(), store, "manager")
    request = stack.build_request([{"role": "user", "content": "hi"}], model="echo")
    request.conversation_id = "server-conv"
    await stack.complete_request(request)
    assert [e.prompt for e in store.exchanges("server-conv")] == ["hi"]
    assert store.exchanges("manager") == []
    store.close()
