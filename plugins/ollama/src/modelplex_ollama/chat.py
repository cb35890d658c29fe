"""Talking to an Ollama model: chat (``/api/chat``), completion (``/api/generate``) and
embeddings (``/api/embed``, or ``/api/embeddings`` on older servers)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from typing import Any

import aiohttp

from modelplex.chunks import ChatResponse, StreamChunk
from modelplex.errors import StreamError
from modelplex.finish import normalize_finish_reason
from modelplex.provider import ChatRequest, CommonOptions, keep_partial, normalize_response_format
from modelplex.streams import ndjson_json
from modelplex.types import ChatMessage
from modelplex_ollama.base import OllamaBase
from modelplex_ollama.connection import NOT_OLLAMA, EndpointNotFoundError
from modelplex_ollama.options import split_options
from modelplex_ollama.wire import (
    chat_payload,
    chunk_from_line,
    common_fields,
    encode_image,
    estimated_usage,
    needs_file_io,
    usage_from_line,
)

__all__ = ["OllamaChat"]

log = logging.getLogger("modelplex.ollama")


def _finish(line: Mapping[str, Any], called: bool) -> str:
    """The finish reason of a final object. Ollama says ``stop`` after tool calls too (its
    OpenAI-compatible API says ``tool_calls`` then, as this does)."""
    reason = normalize_finish_reason(line.get("done_reason"))
    return "tool_calls" if called and reason == "stop" else reason


class OllamaChat(OllamaBase):
    """Chat, completion and embeddings over Ollama's API."""

    async def _read_answer(self, resp: aiohttp.ClientResponse, *, text_key: str,
                           prompt: Sequence[ChatMessage] | str
                           ) -> AsyncGenerator[StreamChunk, None]:
        """Chunks from an NDJSON answer; usage and finish reason on the last one.

        A server that marks lines with ``done`` must end with ``done: true``: a stream that
        stops before it was cut off (:class:`StreamError`). A server that never sends ``done``
        (minimal proxies, test fixtures) ends with an extra chunk with estimated usage.
        """
        if resp.content_type == "text/event-stream":  # llama-server's /api/chat of 2025
            raise EndpointNotFoundError(
                f"ollama: the server answered with an event stream, not Ollama's NDJSON; "
                f"{NOT_OLLAMA}", status_code=resp.status, provider=self.name)
        marks_done = called = False
        parts: list[str] = []
        model: str | None = None
        lines = ndjson_json(resp, provider=self.name, max_line_bytes=self.http.max_line_bytes,
                            require_end=False, error=self._stream_error, objects_only=True)
        async for line in lines:
            chunk = chunk_from_line(line, text_key=text_key)
            model = chunk.model or model
            if "done" in line:
                marks_done = True
            if lines.ended:  # done: true, the last object
                parts.append(chunk.content)
                chunk.finish_reason = _finish(line, called or bool(chunk.tool_calls))
                chunk.usage = usage_from_line(line) or estimated_usage(prompt, "".join(parts))
                yield chunk
                return
            if chunk.content or chunk.reasoning or chunk.tool_calls:
                parts.append(chunk.content)
                called = called or bool(chunk.tool_calls)
                yield chunk
        if marks_done:
            raise StreamError(f"ollama: the stream from {self.host} ended before its final "
                              "`done` object (the connection was closed mid-answer)",
                              provider=self.name)
        yield StreamChunk(finish_reason="tool_calls" if called else "stop", model=model,
                          usage=estimated_usage(prompt, "".join(parts)))

    async def _chat_body(self, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
        self._require_model(request.model)
        if needs_file_io(request.messages):
            return await asyncio.to_thread(chat_payload, request, stream=stream)
        return chat_payload(request, stream=stream)

    # -- chat -------------------------------------------------------------------------------
    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        payload = await self._chat_body(request, stream=True)
        async with self._slot(request.model), \
                self.http.stream("POST", "/api/chat", payload) as resp, \
                contextlib.aclosing(self._read_answer(resp, text_key="message",
                                                      prompt=request.messages)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def _complete(self, request: ChatRequest) -> ChatResponse:
        payload = await self._chat_body(request, stream=False)
        async with self._slot(request.model):
            body = await self.http.request_json("POST", "/api/chat", payload)
        return self._response(body, request.model, request.messages, text_key="message")

    def _response(self, body: Any, model: str, prompt: Sequence[ChatMessage] | str, *,
                  text_key: str) -> ChatResponse:
        if not isinstance(body, dict):
            raise StreamError(f"ollama: unexpected reply {body!r:.200}", provider=self.name)
        if "error" in body:
            raise self._stream_error(body)
        chunk = chunk_from_line(body, text_key=text_key)
        usage = usage_from_line(body) or estimated_usage(prompt, chunk.content)
        return ChatResponse(content=chunk.content, model=chunk.model or model,
                            provider=self.name, reasoning=chunk.reasoning,
                            tool_calls=chunk.tool_calls or [],
                            finish_reason=_finish(body, bool(chunk.tool_calls)),
                            usage=usage)

    # -- completion (/api/generate) ---------------------------------------------------------
    def _generate_body(self, prompt: str, *, model: str,
                       options: Mapping[str, Any] | CommonOptions | None, system: str | None,
                       suffix: str | None, images: Sequence[str | bytes] | None, raw: bool,
                       response_format: Any, stream: bool) -> dict[str, Any]:
        self._require_model(model)
        body: dict[str, Any] = {"model": model, "prompt": prompt, "stream": stream}
        if system is not None:
            body["system"] = system
        if suffix is not None:
            body["suffix"] = suffix
        if images:
            body["images"] = [encode_image(img) for img in images]
        if raw:
            body["raw"] = True
        return common_fields(body, self.parse_options(options),
                             normalize_response_format(response_format))

    def generate(self, prompt: str, *, model: str,
                 options: Mapping[str, Any] | CommonOptions | None = None,
                 system: str | None = None, suffix: str | None = None,
                 images: Sequence[str | bytes] | None = None, raw: bool = False,
                 response_format: Any = None) -> AsyncGenerator[StreamChunk, None]:
        """Stream a completion of ``prompt`` over ``/api/generate``; the last chunk has usage.

        ``system`` overrides the model's system prompt, ``suffix`` asks for fill-in-the-middle,
        ``raw`` skips the prompt template. Inputs are validated before anything is sent.
        """
        body = self._generate_body(prompt, model=model, options=options, system=system,
                                   suffix=suffix, images=images, raw=raw,
                                   response_format=response_format, stream=True)

        async def run() -> AsyncIterator[StreamChunk]:
            async with self._slot(model), \
                    self.http.stream("POST", "/api/generate", body) as resp, \
                    contextlib.aclosing(self._read_answer(resp, text_key="response",
                                                          prompt=prompt)) as chunks:
                async for chunk in chunks:
                    yield chunk

        return keep_partial(run())

    async def generate_complete(self, prompt: str, *, model: str,
                                options: Mapping[str, Any] | CommonOptions | None = None,
                                system: str | None = None, suffix: str | None = None,
                                images: Sequence[str | bytes] | None = None, raw: bool = False,
                                response_format: Any = None) -> ChatResponse:
        """The whole completion of ``prompt`` at once (``stream: false``)."""
        body = self._generate_body(prompt, model=model, options=options, system=system,
                                   suffix=suffix, images=images, raw=raw,
                                   response_format=response_format, stream=False)
        async with self._slot(model):
            reply = await self.http.request_json("POST", "/api/generate", body)
        return self._response(reply, model, prompt, text_key="response")

    # -- embeddings -------------------------------------------------------------------------
    async def embed(self, texts: Sequence[str], *, model: str,
                    options: Mapping[str, Any] | None = None, truncate: bool | None = None,
                    dimensions: int | None = None) -> list[list[float]]:
        """One vector per text, in one ``/api/embed`` request.

        Servers too old for ``/api/embed`` are asked once per text over ``/api/embeddings``
        (then ``truncate`` and ``dimensions`` cannot be honoured).
        """
        self._require_model(model)
        items = [texts] if isinstance(texts, str) else list(texts)
        if not items:
            return []
        top, opts = split_options(self.parse_options(options))
        extra: dict[str, Any] = {"options": opts} if opts else {}
        if "keep_alive" in top:
            extra["keep_alive"] = top["keep_alive"]
        if not self._legacy_embed:
            body: dict[str, Any] = {"model": model, "input": items, **extra}
            if truncate is not None:
                body["truncate"] = truncate
            if dimensions is not None:
                body["dimensions"] = dimensions
            try:
                async with self._slot(model):
                    reply = await self.http.request_json("POST", "/api/embed", body)
            except EndpointNotFoundError:
                log.info("ollama at %s has no /api/embed; using /api/embeddings", self.host)
                self._legacy_embed = True
            else:
                vectors = reply.get("embeddings") if isinstance(reply, dict) else None
                if not isinstance(vectors, list) or len(vectors) != len(items):
                    raise StreamError(f"ollama: /api/embed returned "
                                      f"{len(vectors) if isinstance(vectors, list) else 'no'}"
                                      f" vectors for {len(items)} texts", provider=self.name)
                return vectors
        out: list[list[float]] = []
        for text in items:
            async with self._slot(model):
                reply = await self.http.request_json("POST", "/api/embeddings",
                                         {"model": model, "prompt": text, **extra})
            vector = reply.get("embedding") if isinstance(reply, dict) else None
            if not isinstance(vector, list):
                raise StreamError("ollama: /api/embeddings returned no embedding",
                                  provider=self.name)
            out.append(vector)
        return out
