"""The recording layer: one log record and one stored exchange per request, never per chunk.

Streamed requests and whole answers (:meth:`~modelplex.provider.Provider.complete_request`)
are each recorded once.

:class:`RecordingProvider` wraps the provider a :class:`~modelplex.manager.ChatManager` talks
to. When a request ends (complete, failed, or abandoned by the caller) it emits one record on
the ``modelplex.exchange`` logger with structured extras (``provider``, ``model``, ``status``,
``latency``, ``ttft``, ``prompt_tokens``, ``completion_tokens``, ``cache_hit``,
``conversation``) and, with a :class:`~modelplex.store.logs.LogStore`, stores the exchange. Message
text and options go to the store only, never to the log; no key ever reaches either. Storing
that fails logs a warning and never fails the request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator
from typing import Any

from modelplex.chunks import ChatResponse, StreamChunk, Usage
from modelplex.cost import Cost, cost_of
from modelplex.errors import ProviderError, redact
from modelplex.provider import ChatRequest, Provider
from modelplex.store.logs import Exchange, LogStore, _now
from modelplex.types import MessageRole
from modelplex.wrapping import WrappingProvider

__all__ = ["RecordingProvider"]

log = logging.getLogger("modelplex.exchange")


class RecordingProvider(WrappingProvider):
    """Records every chat request of ``inner`` (see the module docs), streamed or not; every
    other operation is the inner provider's (:class:`~modelplex.wrapping.WrappingProvider`).

    Args:
        inner: the provider, cache or router to record.
        store: where exchanges are stored (``None``: the stdlib log record only).
        conversation_id: the conversation the exchanges belong to, when a request does not
            say (``ChatRequest.conversation_id`` wins).
    """

    def __init__(self, inner: Provider, store: LogStore | None = None,
                 conversation_id: str | None = None) -> None:
        super().__init__(inner)
        self.store = store
        self.conversation_id = conversation_id
        self._store_failed = False

    def __repr__(self) -> str:
        return f"<RecordingProvider {self.inner!r}>"

    async def stream_request(self, request: ChatRequest) -> AsyncGenerator[StreamChunk, None]:
        """Stream from the inner provider, then record the exchange once."""
        started_at = _now()
        start = time.perf_counter()
        first: float | None = None
        parts: list[str] = []
        reasoning: list[str] = []
        calls: list[dict[str, Any]] = []
        last: StreamChunk | None = None
        route: Any = None
        error: str | None = None
        status = "incomplete"
        try:
            async for chunk in self.inner.stream_request(request):
                if first is None:
                    first = time.perf_counter() - start
                    route = chunk.route
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
            await self._record(
                request, started_at, start, first, "".join(parts), "".join(reasoning),
                calls, last.usage if last is not None else None,
                last.model if last is not None else None,
                last.finish_reason if last is not None else None, status, error, route)

    async def complete_request(self, request: ChatRequest) -> ChatResponse:
        """Ask the inner provider for the whole answer, then record the exchange once."""
        started_at = _now()
        start = time.perf_counter()
        try:
            response = await self.inner.complete_request(request)
        except Exception as err:  # keeps what the provider sent before it failed
            partial = err.partial_content if isinstance(err, ProviderError) else ""
            await self._record(request, started_at, start, None, partial, "", [], None, None,
                               None, "error", redact(f"{type(err).__name__}: {err}"))
            raise
        except BaseException:
            await self._record(request, started_at, start, None, "", "", [], None, None, None,
                               "incomplete", "incomplete: the caller stopped waiting")
            raise
        await self._record(request, started_at, start, None, response.content,
                           response.reasoning or "",
                           [call.to_dict() for call in response.tool_calls], response.usage,
                           response.model, response.finish_reason, "ok", None,
                           response.route)
        return response

    async def _record(self, request: ChatRequest, started_at: str, start: float,
                      first: float | None, content: str, reasoning: str,
                      calls: list[dict[str, Any]], usage: Usage | None, answered: str | None,
                      finish_reason: str | None, status: str, error: str | None,
                      route: Any = None) -> None:
        latency = time.perf_counter() - start
        model = answered or request.model
        cached = bool(usage and usage.cached)
        conversation = request.conversation_id or self.conversation_id
        if log.isEnabledFor(logging.INFO):
            log.info("%s %s:%s %.3f s", status, self.name, model, latency, extra={
                "provider": self.name, "model": model, "status": status, "latency": latency,
                "ttft": first, "prompt_tokens": usage.prompt_tokens if usage else None,
                "completion_tokens": usage.completion_tokens if usage else None,
                "cache_hit": cached, "conversation": conversation,
                "error": error})
        if self.store is None:
            return
        cost = _cost(self.name, model, answered, route, usage)
        messages = request.messages
        prompt = messages[-1].content if messages else ""
        system = next((m.content for m in messages if m.role is MessageRole.SYSTEM), None)
        exchange = Exchange(
            provider=self.name, model=model, prompt=prompt, response=content,
            conversation_id=conversation, system_prompt=system,
            options=request.options.set_values(),
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            usage_estimated=bool(usage and usage.estimated), latency=latency,
            time_to_first_token=first, finish_reason=finish_reason,
            error=error, cached=cached, reasoning=reasoning or None,
            tool_calls=calls or None, created_at=started_at,
            cost=cost.amount if cost.known else None,
            cost_currency=cost.currency if cost.known else None)
        try:
            await self.store.record(exchange)
        except Exception as err:  # a log that fails never fails the request
            if not self._store_failed:
                self._store_failed = True
                logging.getLogger("modelplex.logs").warning(
                    "could not store the exchange in %s: %s", self.store.path, err)
        else:
            self._store_failed = False


def _cost(provider: str, model: str, answered: str | None, route: Any,
          usage: Usage | None) -> Cost:
    """What the answer cost: through a router, priced as the deployment that answered."""
    if route is not None:
        provider = route.provider
        model = answered or route.provider_model
    return cost_of(provider, model, usage)
