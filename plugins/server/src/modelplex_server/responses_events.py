"""The Responses API's answers: the ``response`` object and its typed stream events.

:class:`Answer` is what one response is made of (its output items: a ``reasoning`` item, a
``message`` item, one ``function_call`` item per tool call; its usage and status), filled
from a whole reply or chunk by chunk; :meth:`Answer.object` is the ``response`` object.
:func:`stream_events` writes a stream as the typed events (``response.created``,
``response.in_progress``, ``response.output_item.added``, ``response.content_part.added``,
``response.output_text.delta``/``.done``, ``response.reasoning_text.delta``/``.done``,
``response.function_call_arguments.delta``/``.done``, ``response.output_item.done``,
``response.completed`` or ``response.incomplete``), numbered, and a failure after the
stream began as ``response.failed``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from modelplex.chunks import ChatResponse, StreamChunk, ToolCall, Usage
from modelplex.http import dumps
from modelplex_server import usage_fields
from modelplex_server.errors import ApiError
from modelplex_server.openai_api import SSE_HEADERS
from modelplex_server.relay import relay
from modelplex_server.responses_items import ResponsesRequest, ToolChoiceFunction

__all__ = ["Answer", "new_id", "stream_events"]


# -- the response object -------------------------------------------------------------------------
def _usage(usage: Usage | None) -> dict[str, Any]:
    prompt, completion = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
    return {"input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": usage_fields.cache_read(usage)},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": usage_fields.reasoning(usage)},
            "total_tokens": prompt + completion}


def _text_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] \
        if status == "completed" else []
    return {"type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": content}


def _reasoning_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = [{"type": "reasoning_text", "text": text}] if status == "completed" else []
    return {"type": "reasoning", "id": item_id, "summary": [], "content": content,
            "status": status}


def _call_item(item_id: str, call: ToolCall, call_id: str, arguments: str,
               status: str = "completed") -> dict[str, Any]:
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": call.name,
            "arguments": arguments, "status": status}


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class Answer:
    """What one response is made of, filled whole or chunk by chunk."""

    def __init__(self, response_id: str, body: ResponsesRequest) -> None:
        self.id = response_id
        self.body = body
        self.created_at = int(time.time())
        self.output: list[dict[str, Any]] = []
        self.texts: list[str] = []
        self.calls: list[dict[str, Any]] = []  # {"id", "name", "arguments"} for the history
        self.finish: str | None = None
        self.usage: Usage | None = None

    def add_call(self, call: ToolCall) -> tuple[str, str, str]:
        call_id = call.id or new_id("call")
        arguments = json.dumps(call.arguments)
        self.calls.append({"id": call_id, "name": call.name, "arguments": call.arguments})
        return new_id("fc"), call_id, arguments

    def status(self) -> str:
        return "incomplete" if self.finish == "length" and not self.calls else "completed"

    def object(self, status: str | None = None, *,
               error: dict[str, Any] | None = None) -> dict[str, Any]:
        """The ``response`` object (``status``: as it stands, or given)."""
        body = self.body
        status = status or self.status()
        fmt = body.text.format.model_dump(by_alias=True, exclude_none=True) \
            if body.text and body.text.format else {"type": "text"}
        done = status in ("completed", "incomplete")
        return {
            "id": self.id, "object": "response", "created_at": self.created_at,
            "status": status, "error": error,
            "incomplete_details": {"reason": "max_output_tokens"}
            if status == "incomplete" else None,
            "instructions": body.instructions, "max_output_tokens": body.max_output_tokens,
            "model": body.model, "output": self.output if status != "in_progress" else [],
            "parallel_tool_calls": body.parallel_tool_calls is not False,
            "previous_response_id": body.previous_response_id,
            "reasoning": {"effort": None, "summary": None}, "store": body.store,
            "temperature": body.temperature, "top_p": body.top_p,
            "text": {"format": fmt},
            "tool_choice": body.tool_choice.model_dump()
            if isinstance(body.tool_choice, ToolChoiceFunction) else body.tool_choice or "auto",
            "tools": [t.model_dump(exclude_none=True) for t in body.tools or ()],
            "truncation": "disabled", "usage": _usage(self.usage) if done else None,
            "user": body.user, "metadata": body.metadata or {}}

    def from_reply(self, reply: ChatResponse) -> None:
        if reply.reasoning:
            self.output.append(_reasoning_item(new_id("rs"), reply.reasoning))
        if reply.content:
            self.texts.append(reply.content)
            self.output.append(_text_item(new_id("msg"), reply.content))
        for call in reply.tool_calls:
            item_id, call_id, arguments = self.add_call(call)
            self.output.append(_call_item(item_id, call, call_id, arguments))
        self.finish = reply.finish_reason
        self.usage = reply.usage


# -- streaming -----------------------------------------------------------------------------------
class _EventWriter:
    """The typed events, numbered; a text delta is formatted by concatenation."""

    def __init__(self, resp: web.StreamResponse, answer: Answer) -> None:
        self.resp = resp
        self.answer = answer
        self.seq = 0
        self.text_id: str | None = None
        self._text_start = 0  # where the open text item's pieces start in answer.texts
        self._delta_head = b""
        self.reasoning_id: str | None = None
        self._reasoning: list[str] = []

    def event(self, kind: str, data: dict[str, Any]) -> bytes:
        data = {"type": kind, **data, "sequence_number": self.seq}
        self.seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + dumps(data) + b"\n\n"

    async def text(self, text: str) -> None:
        out = b""
        if self.text_id is None:
            out = self._close_reasoning()
            self.text_id = new_id("msg")
            self._text_start = len(self.answer.texts)
            index = len(self.answer.output)
            self.answer.output.append(_text_item(self.text_id, "", "in_progress"))
            out += self.event("response.output_item.added", {
                "output_index": index, "item": _text_item(self.text_id, "", "in_progress")})
            out += self.event("response.content_part.added", {
                "item_id": self.text_id, "output_index": index, "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}})
            self._delta_head = (b'event: response.output_text.delta\ndata: {"type":'
                                b'"response.output_text.delta","item_id":"'
                                + self.text_id.encode() + b'","output_index":'
                                + str(index).encode() + b',"content_index":0,"delta":')
        self.answer.texts.append(text)
        await self.resp.write(out + self._delta_head + dumps(text) + b',"logprobs":[],'
                              b'"sequence_number":' + str(self.seq).encode() + b"}\n\n")
        self.seq += 1

    def _close_text(self) -> bytes:
        if self.text_id is None:
            return b""
        index = next(i for i, item in enumerate(self.answer.output)
                     if item["id"] == self.text_id)
        text = "".join(self.answer.texts[self._text_start:])
        item = self.answer.output[index] = _text_item(self.text_id, text)
        part = item["content"][0]
        out = self.event("response.output_text.done", {
            "item_id": self.text_id, "output_index": index, "content_index": 0, "text": text,
            "logprobs": []})
        out += self.event("response.content_part.done", {
            "item_id": self.text_id, "output_index": index, "content_index": 0, "part": part})
        out += self.event("response.output_item.done", {"output_index": index, "item": item})
        self.text_id = None
        return out

    async def reasoning(self, text: str) -> None:
        out = b""
        if self.reasoning_id is None:
            out = self._close_text()
            self.reasoning_id = new_id("rs")
            self._reasoning = []
            self.answer.output.append(_reasoning_item(self.reasoning_id, "", "in_progress"))
            out += self.event("response.output_item.added", {
                "output_index": len(self.answer.output) - 1,
                "item": _reasoning_item(self.reasoning_id, "", "in_progress")})
        self._reasoning.append(text)
        await self.resp.write(out + self.event("response.reasoning_text.delta", {
            "item_id": self.reasoning_id, "output_index": len(self.answer.output) - 1,
            "content_index": 0, "delta": text}))

    def _close_reasoning(self) -> bytes:
        if self.reasoning_id is None:
            return b""
        index = next(i for i, item in enumerate(self.answer.output)
                     if item["id"] == self.reasoning_id)
        text = "".join(self._reasoning)
        item = self.answer.output[index] = _reasoning_item(self.reasoning_id, text)
        out = self.event("response.reasoning_text.done", {
            "item_id": self.reasoning_id, "output_index": index, "content_index": 0,
            "text": text})
        out += self.event("response.output_item.done", {"output_index": index, "item": item})
        self.reasoning_id = None
        return out

    async def tool(self, call: ToolCall) -> None:
        out = self._close_reasoning() + self._close_text()
        item_id, call_id, arguments = self.answer.add_call(call)
        index = len(self.answer.output)
        item = _call_item(item_id, call, call_id, arguments)
        self.answer.output.append(item)
        out += self.event("response.output_item.added", {
            "output_index": index, "item": _call_item(item_id, call, call_id, "",
                                                      "in_progress")})
        out += self.event("response.function_call_arguments.delta", {
            "item_id": item_id, "output_index": index, "delta": arguments})
        out += self.event("response.function_call_arguments.done", {
            "item_id": item_id, "output_index": index, "name": call.name,
            "arguments": arguments})
        out += self.event("response.output_item.done", {"output_index": index, "item": item})
        await self.resp.write(out)

    def end(self) -> bytes:
        out = self._close_reasoning() + self._close_text()
        status = self.answer.status()
        kind = "response.completed" if status == "completed" else "response.incomplete"
        return out + self.event(kind, {"response": self.answer.object()})


async def stream_events(request: web.Request, stream: AsyncIterator[StreamChunk],
                        first: StreamChunk | None, answer: Answer,
                        keep: Callable[[], Awaitable[None]]) -> web.StreamResponse:
    """Answer ``request`` with ``first`` and the rest of ``stream`` as typed events, filling
    ``answer``; ``keep()`` (storing it) runs before the last event is written."""
    resp = web.StreamResponse(headers=SSE_HEADERS)
    await resp.prepare(request)
    writer = _EventWriter(resp, answer)
    start = answer.object("in_progress")
    await resp.write(writer.event("response.created", {"response": start})
                     + writer.event("response.in_progress", {"response": start}))

    def failed(api: ApiError) -> bytes:
        error = {"code": api.code or api.type, "message": api.message}
        return writer.event("response.failed", {"response": answer.object("failed",
                                                                          error=error)})

    ended, last = await relay(resp, stream, first, writer, failed)
    if not ended:
        return resp
    if last is not None:
        answer.finish, answer.usage = last.finish_reason, last.usage
    end = writer.end()
    await keep()  # stored before the client can read the end and ask a follow-up
    await resp.write(end)
    await resp.write_eof()
    return resp
