"""The recording layer: one log record and one stored exchange per request, never per chunk.

:class:`RecordingProvider` wraps the provider a :class:`~modelplex.manager.ChatManager` talks
to. When a request ends (complete, failed, or abandoned by the caller) it emits one record on
the ``modelplex.exchange`` logger with structured extras (``provider``, ``model``, ``status``,
``latency``, ``ttft``, ``prompt_tokens``, ``completion_tokens``, ``cache_hit``,
``conversation``) and, with a :class:`~modelplex.logs.LogStore`, stores the exchange. Message
text and options go to the store only, never to the log; no key ever reaches either. Storing
that fails logs a warning and never fails the request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

from modelplex.chunks import StreamChunk
from modelplex.errors import redact
from modelplex.logs import Exchange, LogStore, _now
from modelplex.provider import ChatRequest, CommonOptions, Provider
from modelplex.types import MessageRole

__all__ = ["RecordingProvider"]

log = logging.getLogger("modelplex.exchange")


class RecordingProvider(Provider):
    """Records every chat request of ``inner`` (see the module docs).

    Args:
        inner: the provider, cache or router to record.
        store: where exchanges are stored (``None``: the stdlib log record only).
        conversation_id: the conversation the exchanges belong to.
    """

    def __init__(self, inner: Provider, store: LogStore | None = None,
                 conversation_id: str | None = None) -> None:
        self.inner = inner
        self.store = store
        self.conversation_id = conversation_id
        self.name = inner.name
        self.Options = inner.Options  # type: ignore[misc]
        self.capabilities = inner.capabilities  # type: ignore[misc]
        self.default_model = inner.default_model
        self._store_failed = False

    def __repr__(self) -> str:
        return f"<RecordingProvider {self.inner!r}>"

    @property
    def wrapped(self) -> Provider:
        """The provider this layer wraps."""
        return self.inner

    def parse_options(self, options: Mapping[str, Any] | CommonOptions | None) -> CommonOptions:
        """The inner provider's option validation."""
        return self.inner.parse_options(options)

    def _stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        return self.stream_request(request)

    async def aclose(self) -> None:
        """Close the inner provider."""
        await self.inner.aclose()

    async def stream_request(self, request: ChatRequest) -> AsyncGenerator[StreamChunk, None]:
        """Stream from the inner provider, then record the exchange once."""
        started_at = _now()
        start = time.perf_counter()
        first: float | None = None
        parts: list[str] = []
        reasoning: list[str] = []
        calls: list[dict[str, Any]] = []
        last: StreamChunk | None = None
        error: str | None = None
        status = "incomplete"
        try:
            async for chunk in self.inner.stream_request(request):
                if first is None:
                    first = time.perf_counter() - start
                parts.append(chunk.content)
                if chunk.reasoning:
                    reasoning.append(chunk.reasoning)
                if chunk.tool_calls:
                    calls.extend(call.to_dict() for call in chunk.tool_calls)
                last = chunk
                yield chunk
            status = "ok"
        except Exception as err:
            status, error = "error", redact(f"{type(err).__name__}: {err}")
            raise
        finally:
            if status == "incomplete":
                error = "incomplete: the caller stopped reading"
            await self._record(request, started_at, start, first, parts, reasoning, calls,
                               last, status, error)

    async def _record(self, request: ChatRequest, started_at: str, start: float,
                      first: float | None,
                      parts: list[str], reasoning: list[str], calls: list[dict[str, Any]],
                      last: StreamChunk | None, status: str, error: str | None) -> None:
        latency = time.perf_counter() - start
        usage = last.usage if last is not None else None
        model = (last.model if last is not None else None) or request.model
        cached = bool(usage and usage.cached)
        if log.isEnabledFor(logging.INFO):
            log.info("%s %s:%s %.3f s", status, self.name, model, latency, extra={
                "provider": self.name, "model": model, "status": status, "latency": latency,
                "ttft": first, "prompt_tokens": usage.prompt_tokens if usage else None,
                "completion_tokens": usage.completion_tokens if usage else None,
                "cache_hit": cached, "conversation": self.conversation_id,
                "error": error})
        if self.store is None:
            return
        messages = request.messages
        prompt = messages[-1].content if messages else ""
        system = next((m.content for m in messages if m.role is MessageRole.SYSTEM), None)
        exchange = Exchange(
            provider=self.name, model=model, prompt=prompt, response="".join(parts),
            conversation_id=self.conversation_id, system_prompt=system,
            options=request.options.set_values(),
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            usage_estimated=bool(usage and usage.estimated), latency=latency,
            time_to_first_token=first,
            finish_reason=last.finish_reason if last is not None else None,
            error=error, cached=cached, reasoning="".join(reasoning) or None,
            tool_calls=calls or None, created_at=started_at)
        try:
            await self.store.record(exchange)
        except Exception as err:  # a log that fails never fails the request
            if not self._store_failed:
                self._store_failed = True
                logging.getLogger("modelplex.logs").warning(
                    "could not store the exchange in %s: %s", self.store.path, err)
        else:
            self._store_failed = False
