"""Hot-path value types: stream chunks, usage and tool calls.

These are slotted attrs classes built without validation, because a provider creates one per
streamed token. Every provider yields :class:`StreamChunk`; the last chunk of every stream carries
``finish_reason`` and :class:`Usage` (marked ``estimated`` when the provider sent no counts).
"""

from __future__ import annotations

import re
from typing import Any

import attrs

__all__ = ["ChatResponse", "StreamChunk", "ToolCall", "Usage"]

_WORDS = re.compile(r"\S*\s*")  # a word and the spaces after it (as_chunks)


@attrs.define(slots=True)
class Usage:
    """Token counts of one request.

    ``estimated`` is true when the provider did not report counts and modelplex computed them.
    ``timings`` holds provider-reported durations in seconds (``load``, ``prompt_eval``,
    ``eval``, ``total``) when the provider sends them. ``cached`` is true when the answer
    came from a response cache (the counts are those of the original answer).
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False
    timings: dict[str, float] | None = None
    cached: bool = False

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


@attrs.define(slots=True)
class ToolCall:
    """A call to a tool the model asked for; ``arguments`` is already parsed from JSON."""

    name: str
    arguments: dict[str, Any]
    id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A plain dict, for logging or JSON output."""
        return {"id": self.id, "name": self.name, "arguments": self.arguments}


@attrs.define(slots=True)
class StreamChunk:
    """One piece of a streamed answer.

    ``content`` is the new text (possibly empty); ``reasoning`` is thinking text kept apart from
    the answer; ``tool_calls`` are complete calls; ``finish_reason`` and ``usage`` are set on the
    final chunk only. Through a router, the first chunk's ``route`` is a
    :class:`~modelplex.routing.RouteInfo` (which deployment answered, after how many attempts).
    ``response_id`` is the upstream's id of the answer (OpenAI's ``chatcmpl-...``, Anthropic's
    ``msg_...``), on the final chunk, where the provider reports one.
    """

    content: str = ""
    reasoning: str | None = None
    tool_calls: list[ToolCall] | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    model: str | None = None
    route: Any = attrs.field(default=None, eq=False, repr=False)
    response_id: str | None = attrs.field(default=None, eq=False, repr=False)


@attrs.define(slots=True)
class ChatResponse:
    """A whole answer: the stream collected, or a provider's non-streaming reply.

    ``response_id`` is the upstream's id of the answer, where the provider reports one.
    """

    content: str
    model: str
    provider: str
    reasoning: str | None = None
    tool_calls: list[ToolCall] = attrs.Factory(list)
    finish_reason: str | None = None
    usage: Usage = attrs.Factory(Usage)
    route: Any = attrs.field(default=None, eq=False, repr=False)
    response_id: str | None = attrs.field(default=None, eq=False, repr=False)

    @classmethod
    def from_chunks(cls, chunks: list[StreamChunk], *, model: str, provider: str) -> ChatResponse:
        """Join streamed chunks into one response (text concatenated once, at the end)."""
        reasoning = [c.reasoning for c in chunks if c.reasoning]
        calls = [call for c in chunks if c.tool_calls for call in c.tool_calls]
        last = chunks[-1] if chunks else StreamChunk()
        return cls(
            content="".join(c.content for c in chunks),
            model=last.model or model,
            provider=provider,
            reasoning="".join(reasoning) if reasoning else None,
            tool_calls=calls,
            finish_reason=last.finish_reason,
            usage=last.usage or Usage(estimated=True),
            route=chunks[0].route if chunks else None,
            response_id=last.response_id,
        )

    def as_chunks(self) -> list[StreamChunk]:
        """The answer as a stream would have brought it: the reasoning, the text a word at a
        time (each piece with the spaces after it, so the pieces join to the text), then a
        last chunk with the tool calls, finish reason, usage and response id. How the core
        streams a model that only answers whole (``Capabilities(streaming=False)``, see
        :meth:`modelplex.provider.Provider.supports_streaming`); ``from_chunks`` gives this
        answer back.
        """
        chunks = [StreamChunk(reasoning=self.reasoning, model=self.model)] if self.reasoning \
            else []
        chunks += [StreamChunk(content=piece, model=self.model)
                   for piece in _WORDS.findall(self.content) if piece]
        chunks.append(StreamChunk(tool_calls=list(self.tool_calls) or None,
                                  finish_reason=self.finish_reason, usage=self.usage,
                                  model=self.model, response_id=self.response_id))
        chunks[0].route = self.route
        return chunks
