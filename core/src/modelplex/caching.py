"""The cache layer of the request path: a provider that answers from a cache or passes through.

::

    cache = MemoryCache()
    provider = CachedProvider(create_provider("ollama"), cache)
    async for chunk in provider.chat([{"role": "user", "content": "hi"}], model="llama3.2"):
        ...   # the second identical request is answered from the cache

A hit replays the stored chunks as a stream; its final chunk's usage has ``cached=True``
(``ResponseWithMeta.cache_hit`` in :class:`~modelplex.manager.ChatManager`). A miss streams
from the wrapped provider untouched and stores the answer once it is complete: an answer that
failed or that the caller stopped reading is never stored. The key covers what changes the
answer (provider, model, messages, options, tools, output format) and nothing else.

Requests sampled with ``temperature > 0`` and no ``seed`` are not cached unless the caller asks
(``CacheConfig.nondeterministic`` or ``ChatRequest.cache = True``); ``ChatRequest.cache =
False`` bypasses the cache for one request. A cache that fails (a backend that is down) logs
one warning per outage and the request goes to the provider: a cache makes a request faster,
it never makes it fail. Embeddings are cached one text at a time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, Literal

import attrs

from modelplex.caches import Cache, CacheConfig, open_cache
from modelplex.chunks import ChatResponse, StreamChunk, ToolCall, Usage
from modelplex.provider import ChatRequest, CommonOptions, Provider
from modelplex.types import ChatMessage
from modelplex.wrapping import WrappingProvider

__all__ = ["CacheLayer", "CachedProvider", "cache_key", "embedding_key", "is_deterministic"]

log = logging.getLogger("modelplex.cache")

KEY_VERSION = 1


# -- keys ------------------------------------------------------------------------------------
def _image_key(image: str | bytes) -> str:
    if isinstance(image, bytes):
        return "sha256:" + hashlib.sha256(image).hexdigest()
    return image


def _message_key(message: ChatMessage) -> list[Any]:
    return [message.role.value, message.content, [_image_key(i) for i in message.images],
            list(message.tool_calls), message.tool_call_id, message.name]


def cache_key(provider: str, request: ChatRequest) -> str:
    """The key of a chat request: a hash of everything that changes the answer.

    Message ids, timestamps and metadata are left out, and so is anything not in the request
    (request ids, timing).
    """
    payload = [KEY_VERSION, "chat", provider, request.model,
               [_message_key(m) for m in request.messages], request.options.set_values(),
               request.tools, request.tool_choice, request.response_format]
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return "modelplex:chat:" + hashlib.sha256(text.encode()).hexdigest()


def embedding_key(provider: str, model: str, options: Mapping[str, Any] | None,
                  text: str) -> str:
    """The key of one text's embedding."""
    payload = [KEY_VERSION, "embed", provider, model, dict(options or {}), text]
    data = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return "modelplex:embed:" + hashlib.sha256(data.encode()).hexdigest()


def is_deterministic(options: CommonOptions) -> bool:
    """Whether a request should give the same answer twice: no temperature above 0 without
    a seed (an unset temperature counts as deterministic: the provider's default)."""
    return options.seed is not None or not options.temperature


# -- chunks <-> JSON ----------------------------------------------------------------------------
# A stored answer is {"v": 1, "model": <model of the first chunk>, "chunks": [...]}: a chunk that
# carries only text (and that model) is stored as its string, any other as a list.
def _dump_chunk(chunk: StreamChunk, model: str | None) -> str | list[Any]:
    if (chunk.reasoning is None and chunk.tool_calls is None and chunk.finish_reason is None
            and chunk.usage is None and chunk.model == model):
        return chunk.content
    usage = chunk.usage
    return [chunk.content, chunk.reasoning,
            [call.to_dict() for call in chunk.tool_calls] if chunk.tool_calls else None,
            chunk.finish_reason,
            [usage.prompt_tokens, usage.completion_tokens, usage.estimated, usage.timings]
            if usage is not None else None,
            chunk.model]


def _load_chunks(stored: Mapping[str, Any]) -> list[StreamChunk]:
    model = stored.get("model")
    chunks = []
    for record in stored["chunks"]:
        if isinstance(record, str):
            chunks.append(StreamChunk(content=record, model=model))
            continue
        content, reasoning, calls, finish, usage, chunk_model = record
        chunks.append(StreamChunk(
            content=content, reasoning=reasoning,
            tool_calls=[ToolCall(name=c["name"], arguments=c["arguments"], id=c.get("id"))
                        for c in calls] if calls else None,
            finish_reason=finish,
            usage=Usage(prompt_tokens=usage[0], completion_tokens=usage[1],
                        estimated=usage[2], timings=usage[3], cached=True)
            if usage is not None else None,
            model=chunk_model))
    return chunks


class CachedProvider(WrappingProvider):
    """A provider that answers from ``cache`` when it can and from ``inner`` otherwise.

    Everything but chat and embeddings is the inner provider's
    (:class:`~modelplex.wrapping.WrappingProvider`).

    Args:
        inner: the provider (or router) behind the cache.
        cache: any :class:`~modelplex.caches.Cache`.
        ttl: seconds an answer is kept (``None``: the cache's default).
        nondeterministic: also cache requests with ``temperature > 0`` and no ``seed``.
        embeddings: also cache embeddings, per text.
    """

    def __init__(self, inner: Provider, cache: Cache, *, ttl: float | None = None,
                 nondeterministic: bool = False, embeddings: bool = True) -> None:
        super().__init__(inner)
        self.cache = cache
        self.ttl = ttl
        self.nondeterministic = nondeterministic
        self.cache_embeddings = embeddings
        self._failing = False

    def __repr__(self) -> str:
        return f"<CachedProvider {self.inner!r} cache={self.cache!r}>"

    # -- failures of the cache are warnings --------------------------------------------------
    def _cache_failed(self, action: str, err: BaseException) -> None:
        if not self._failing:
            self._failing = True
            log.warning("cache %s failed to %s, answering without it until it recovers: %s",
                        self.cache.name, action, f"{type(err).__name__}: {err}",
                        extra={"cache": self.cache.name, "provider": self.name})

    def _cache_ok(self) -> None:
        if self._failing:
            self._failing = False
            log.info("cache %s works again", self.cache.name,
                        extra={"cache": self.cache.name, "provider": self.name})

    async def _get(self, key: str) -> Any | None:
        try:
            value = await self.cache.get(key)
        except Exception as err:  # a cache never fails a request
            self._cache_failed("read", err)
            return None
        self._cache_ok()
        return value

    async def _set(self, key: str, value: Any) -> None:
        try:
            if self.ttl is None:
                await self.cache.set(key, value)
            else:
                await self.cache.set(key, value, ttl=self.ttl)
        except Exception as err:
            self._cache_failed("write", err)
        else:
            self._cache_ok()

    async def _lookup(self, key: str, request: ChatRequest) -> list[StreamChunk] | None:
        """The stored answer's chunks, or ``None`` on a miss."""
        stored = await self._get(key)
        if stored is None:
            return None
        try:
            chunks = _load_chunks(stored)
        except (KeyError, TypeError, ValueError, IndexError):
            return None  # an entry of another version or shape: a miss
        if not chunks:
            return None
        log.debug("cache hit", extra={"provider": self.name, "model": request.model,
                                      "cache": self.cache.name})
        return chunks

    # -- chat ---------------------------------------------------------------------------------
    def _cacheable(self, request: ChatRequest) -> bool:
        wanted: bool | None = request.cache
        if wanted is not None:
            return wanted
        return self.nondeterministic or is_deterministic(request.options)

    def stream_request(self, request: ChatRequest) -> AsyncGenerator[StreamChunk, None]:
        """Answer from the cache, or stream from the inner provider and store the answer."""
        if not self._cacheable(request):
            return self.inner.stream_request(request)
        return self._cached_stream(request)

    async def _cached_stream(self, request: ChatRequest) -> AsyncGenerator[StreamChunk, None]:
        key = cache_key(self.name, request)
        chunks = await self._lookup(key, request)
        if chunks is not None:
            for chunk in chunks:
                yield chunk
            return
        records: list[str | list[Any]] = []
        model: str | None = None
        finished = False
        async with contextlib.aclosing(self.inner.stream_request(request)) as stream:
            async for chunk in stream:
                if not records:
                    model = chunk.model
                records.append(_dump_chunk(chunk, model))
                if chunk.finish_reason is not None:
                    finished = True
                yield chunk
        if finished:  # complete answers only: a failure raised above, a close never gets here
            await self._set(key, {"v": KEY_VERSION, "model": model, "chunks": records})

    async def complete_request(self, request: ChatRequest) -> ChatResponse:
        """Answer from the cache, or ask the inner provider for the whole answer and store it
        (as one chunk: a later streamed request replays it)."""
        if not self._cacheable(request):
            return await self.inner.complete_request(request)
        key = cache_key(self.name, request)
        chunks = await self._lookup(key, request)
        if chunks is not None:
            return ChatResponse.from_chunks(chunks, model=request.model, provider=self.name)
        response = await self.inner.complete_request(request)
        whole = StreamChunk(content=response.content, reasoning=response.reasoning,
                            tool_calls=list(response.tool_calls) or None,
                            finish_reason=response.finish_reason, usage=response.usage,
                            model=response.model)
        await self._set(key, {"v": KEY_VERSION, "model": response.model,
                              "chunks": [_dump_chunk(whole, response.model)]})
        return response

    # -- embeddings -----------------------------------------------------------------------------
    async def embed(self, texts: Sequence[str], *, model: str,
                    options: Mapping[str, Any] | None = None) -> list[list[float]]:
        """Embeddings from the cache per text; only the texts not cached go to the provider."""
        if not self.cache_embeddings:
            return await self.inner.embed(texts, model=model, options=options)
        keys = [embedding_key(self.name, model, options, text) for text in texts]
        found: list[Any | None] = [await self._get(key) for key in keys]
        missing = [i for i, vector in enumerate(found) if vector is None]
        if missing:
            vectors = await self.inner.embed([texts[i] for i in missing], model=model,
                                             options=options)
            for i, vector in zip(missing, vectors, strict=True):
                found[i] = vector
                await self._set(keys[i], list(vector))
        return [list(vector) for vector in found if vector is not None]

    async def aclose(self) -> None:
        """Close the inner provider (the cache belongs to whoever opened it)."""
        await self.inner.aclose()


CacheSetting = CacheConfig | Cache | str | Mapping[str, Any] | Literal[True] | None


@attrs.frozen
class CacheLayer:
    """An open cache with the policy to put it in front of a provider.

    What the request pipeline (:func:`modelplex.pipeline.open_model`) takes as ``cache``;
    whoever opened ``cache`` closes it.
    """

    cache: Cache
    ttl: float | None = None
    nondeterministic: bool = False

    @classmethod
    def open(cls, setting: CacheConfig | Cache | str | Mapping[str, Any] | bool,
             plugins: Any = None) -> tuple[CacheLayer, bool]:
        """The layer a setting describes, and whether its cache was opened here."""
        if isinstance(setting, Cache):
            return cls(setting), False
        config = CacheConfig() if setting is True else CacheConfig.parse(setting)
        return cls(open_cache(config, plugins), nondeterministic=config.nondeterministic), True

    def wrap(self, provider: Provider) -> CachedProvider:
        """``provider`` behind this cache."""
        return CachedProvider(provider, self.cache, ttl=self.ttl,
                              nondeterministic=self.nondeterministic)
