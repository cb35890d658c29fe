"""OpenAI's Responses API: ``POST /v1/responses``, ``GET`` and ``DELETE /v1/responses/{id}``.

What Codex CLI and the ``openai`` SDK's ``client.responses`` speak. Requests go the way every
route's do (the gateway resolves the model, the provider validates the request, keys and
limits apply); this module translates:

* ``input`` (a string, or items: messages with ``input_text``/``input_image`` parts,
  ``function_call`` and ``function_call_output``; ``reasoning`` items are skipped) and
  ``instructions`` become modelplex messages; function ``tools`` and ``tool_choice`` become
  the request's tools; ``text.format`` (``json_object``, ``json_schema``) becomes its
  structured-output request; ``max_output_tokens``, ``temperature``, ``top_p``, ``user``
  become options.
* The answer is a ``response`` object whose ``output`` holds a ``reasoning`` item (a thinking
  model's reasoning, as ``reasoning_text``), a ``message`` item and one ``function_call``
  item per tool call; with ``stream: true`` it arrives as the typed events
  (``response.created``, ``response.in_progress``, ``response.output_item.added``,
  ``response.content_part.added``, ``response.output_text.delta``/``.done``,
  ``response.function_call_arguments.delta``/``.done``, ``response.output_item.done``,
  ``response.completed`` or ``response.incomplete``), and a failure after the stream began
  is ``response.failed``.
* ``store`` (default true) keeps the response in the server's conversation store: a chain of
  responses (``previous_response_id``) is one conversation, a response id
  (``resp_CONVERSATION_COUNT_NONCE``) names the conversation and how many of its messages the
  response ends at, and the response object rides in the metadata of its last message. A
  follow-up continues from there (from an earlier response of the chain it starts a new
  conversation with that history; of two follow-ups to one response answered at once, the
  one finished second is not kept). ``instructions`` are not carried over, as with OpenAI.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import Discriminator, Field, Tag, ValidationError

from modelplex.chunks import ChatResponse, StreamChunk, ToolCall, Usage
from modelplex.http import dumps
from modelplex.provider import ChatRequest, Provider
from modelplex.types import ChatMessage, MessageRole
from modelplex_server.conversations import Conversation
from modelplex_server.errors import ApiError, from_exception
from modelplex_server.gateway import GATEWAY, KEY, Gateway, first_chunk
from modelplex_server.openai_api import SSE_HEADERS
from modelplex_server.schemas import _Body, read_body

__all__ = ["ResponsesRequest", "add_routes"]

_ROLES = {"user": MessageRole.USER, "assistant": MessageRole.ASSISTANT,
          "system": MessageRole.SYSTEM, "developer": MessageRole.SYSTEM}
log = logging.getLogger("modelplex.server")


# -- request bodies ------------------------------------------------------------------------------
class TextPart(_Body):
    """``{"type": "input_text" | "output_text", "text": ...}``."""

    type: Literal["input_text", "output_text"]
    text: str


class ImagePart(_Body):
    """``{"type": "input_image", "image_url": "data:image/png;base64,..." | "https://..."}``."""

    type: Literal["input_image"]
    image_url: str = Field(min_length=1)
    detail: str | None = None


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


def _content_kind(value: Any) -> str:
    return "text" if isinstance(value, str) else "parts"


Content = Annotated[Annotated[str, Tag("text")] | Annotated[list[ContentPart], Tag("parts")],
                    Discriminator(_content_kind)]


class MessageItem(_Body):
    """A message: ``{"role", "content": str | [parts]}`` (``"type": "message"`` optional)."""

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: Content


class FunctionCallItem(_Body):
    """A tool call the model made: ``{"type": "function_call", "call_id", "name",
    "arguments"}`` (arguments as a JSON string)."""

    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str = ""


class FunctionCallOutputItem(_Body):
    """A tool's answer: ``{"type": "function_call_output", "call_id", "output"}``."""

    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: Content


class ReasoningItem(_Body):
    """A reasoning item sent back by a client (skipped: providers take no reasoning in)."""

    type: Literal["reasoning"]


def _item_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        kind = value.get("type", "message")
        return kind if isinstance(kind, str) else None
    return getattr(value, "type", None)


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")],
    Discriminator(_item_kind)]


class FunctionTool(_Body):
    """``{"type": "function", "name", "description", "parameters", "strict"}``."""

    type: Literal["function"]
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolChoiceFunction(_Body):
    """``{"type": "function", "name": ...}``."""

    type: Literal["function"]
    name: str


class TextFormat(_Body):
    """``{"type": "text" | "json_object" | "json_schema", "name", "schema", "strict"}``."""

    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None
    description: str | None = None


class TextConfig(_Body):
    """``text``: its ``format``."""

    format: TextFormat | None = None


def _input_kind(value: Any) -> str:
    return "text" if isinstance(value, str) else "items"


Input = Annotated[Annotated[str, Tag("text")] | Annotated[list[InputItem], Tag("items")],
                  Discriminator(_input_kind)]
_ITEM_TAGS = {"message", "function_call", "function_call_output", "reasoning"}
_PART_TAGS = {"input_text", "output_text", "input_image"}


def _untag(err: ApiError) -> ApiError:
    """The error with the union tags pydantic puts in a location
    (``input.items.0.message.content.parts.0.input_text.text``) taken out of its ``param``
    and message (``input.0.content.0.text``)."""
    if not err.param or not err.param.startswith("input."):
        return err
    kept: list[str] = []
    parts = err.param.split(".")
    for i, part in enumerate(parts):
        before = parts[i - 1] if i else ""
        if (before == "input" and part in ("text", "items")) \
                or (before.isdigit() and i >= 2 and parts[i - 2] == "items"
                    and part in _ITEM_TAGS) \
                or (before in ("content", "output") and part in ("text", "parts")) \
                or (before.isdigit() and i >= 2 and parts[i - 2] == "parts"
                    and part in _PART_TAGS):
            continue
        kept.append(part)
    param = ".".join(kept)
    return ApiError(err.status, err.message.replace(err.param, param), param=param,
                    type=err.type, code=err.code, headers=err.headers)


class ResponsesRequest(_Body):
    """``POST /v1/responses``."""

    model: str = Field(min_length=1)
    input: Input
    instructions: str | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["auto", "none", "required"] | ToolChoiceFunction | None = None
    text: TextConfig | None = None
    max_output_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stream: bool = False
    previous_response_id: str | None = None
    store: bool = True
    user: str | None = None
    metadata: dict[str, str] | None = None
    parallel_tool_calls: bool | None = None


# -- translation ---------------------------------------------------------------------------------
def _parts(content: str | list[TextPart | ImagePart]) -> tuple[str, tuple[str, ...]]:
    if isinstance(content, str):
        return content, ()
    texts = [p.text for p in content if isinstance(p, TextPart)]
    images = tuple(p.image_url.partition(",")[2] if p.image_url.startswith("data:")
                   else p.image_url for p in content if isinstance(p, ImagePart))
    return "\n".join(texts), images


def _message(field: str, **kwargs: Any) -> ChatMessage:
    try:
        return ChatMessage(**kwargs)
    except ValidationError as err:
        detail = "; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())
        raise ApiError(400, f"{field}: {detail}", param=field) from None


def to_chat_messages(body: ResponsesRequest, history: list[ChatMessage]) -> list[ChatMessage]:
    """The new input as modelplex messages (after ``history``, whose tool calls the function
    outputs may answer); a 400 naming a bad item."""
    if isinstance(body.input, str):
        return [_message("input", role=MessageRole.USER, content=body.input)]
    names = {call.get("id"): call.get("name") for m in history for call in m.tool_calls}
    out: list[ChatMessage] = []
    for i, item in enumerate(body.input):
        field = f"input.{i}"
        if isinstance(item, MessageItem):
            text, images = _parts(item.content)
            out.append(_message(f"{field}.content", role=_ROLES[item.role], content=text,
                                images=images))
        elif isinstance(item, FunctionCallItem):
            try:
                arguments = json.loads(item.arguments or "{}")
            except (ValueError, RecursionError):
                arguments = None
            if not isinstance(arguments, dict):
                raise ApiError(400, "function_call arguments must be a JSON object encoded as "
                                    "a string", param=f"{field}.arguments")
            call = {"id": item.call_id, "name": item.name, "arguments": arguments}
            names[item.call_id] = item.name
            last = out[-1] if out else None
            if last is not None and last.role is MessageRole.ASSISTANT:  # calls of one turn
                out[-1] = last.model_copy(update={"tool_calls": (*last.tool_calls, call)})
            else:
                out.append(_message(field, role=MessageRole.ASSISTANT, tool_calls=(call,)))
        elif isinstance(item, FunctionCallOutputItem):
            text, images = _parts(item.output)
            out.append(_message(f"{field}.output", role=MessageRole.TOOL,
                                content=text or ("(no output)" if not images else ""),
                                images=images, tool_call_id=item.call_id,
                                name=names.get(item.call_id)))
    if not out and not history:
        raise ApiError(400, "input has no messages: give a string or at least one message "
                            "item", param="input")
    return out


def _tools(body: ResponsesRequest) -> tuple[list[dict[str, Any]] | None, Any]:
    tools = [{"type": "function", "function": t.model_dump(exclude={"type"}, exclude_none=True)}
             for t in body.tools] if body.tools else None
    choice = body.tool_choice
    if isinstance(choice, ToolChoiceFunction):
        return tools, {"type": "function", "function": {"name": choice.name}}
    return tools, choice


def _response_format(body: ResponsesRequest) -> Any:
    fmt = body.text.format if body.text else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return "json"
    if fmt.schema_ is None:
        raise ApiError(400, "text.format of type json_schema needs a schema (an object)",
                       param="text.format.schema")
    return {"type": "json_schema", "json_schema": {"name": fmt.name or "response",
                                                   "schema": fmt.schema_}}


def _options(gateway: Gateway, provider: Provider, body: ResponsesRequest) -> dict[str, Any]:
    return gateway.known_options(provider, {
        "max_tokens": body.max_output_tokens, "temperature": body.temperature,
        "top_p": body.top_p, "user": body.user,
        "parallel_tool_calls": body.parallel_tool_calls})


# -- the response object -------------------------------------------------------------------------
def _usage(usage: Usage | None) -> dict[str, Any]:
    prompt, completion = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": 0},
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


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class _Answer:
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
        call_id = call.id or _new_id("call")
        arguments = json.dumps(call.arguments)
        self.calls.append({"id": call_id, "name": call.name, "arguments": call.arguments})
        return _new_id("fc"), call_id, arguments

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
            self.output.append(_reasoning_item(_new_id("rs"), reply.reasoning))
        if reply.content:
            self.texts.append(reply.content)
            self.output.append(_text_item(_new_id("msg"), reply.content))
        for call in reply.tool_calls:
            item_id, call_id, arguments = self.add_call(call)
            self.output.append(_call_item(item_id, call, call_id, arguments))
        self.finish = reply.finish_reason
        self.usage = reply.usage


# -- the store -----------------------------------------------------------------------------------
def _split_id(response_id: str) -> tuple[str, int] | None:
    """The conversation id and message count a stored response's id names
    (``resp_CONVERSATION_COUNT_NONCE``)."""
    parts = response_id.split("_")
    if len(parts) != 4 or parts[0] != "resp" or not parts[1] or not parts[2].isdigit():
        return None
    return parts[1], int(parts[2])


async def _stored(request: web.Request, response_id: str, *,
                  param: str | None = None) -> tuple[Conversation, int, dict[str, Any]]:
    """The conversation, message count and response object of a stored response; 404
    (OpenAI's shape) when there is none the caller may see."""
    gateway = request.app[GATEWAY]
    missing = ApiError(404, f"No response found with id {response_id!r}.",
                       code="response_not_found", param=param)
    split = _split_id(response_id)
    if split is None:
        raise missing
    try:
        conversation = await gateway.conversation(request, split[0])
    except ApiError:
        raise missing from None
    count = split[1]
    if not 0 < count <= len(conversation.messages):
        raise missing
    stored = conversation.messages[count - 1].metadata.get("response")
    if not isinstance(stored, dict) or stored.get("id") != response_id:
        raise missing
    return conversation, count, stored


async def _history(request: web.Request, body: ResponsesRequest
                   ) -> tuple[list[ChatMessage], tuple[Conversation, int] | None]:
    if body.previous_response_id is None:
        return [], None
    conversation, count, _ = await _stored(request, body.previous_response_id,
                                           param="previous_response_id")
    return list(conversation.messages[:count]), (conversation, count)


def _plan_id(body: ResponsesRequest, new_count: int,
             chain: tuple[Conversation, int] | None) -> tuple[str, bool]:
    """The id of the response about to be made, naming where it will be stored, and whether
    it will be appended to ``chain``'s conversation (it continues its last response) rather
    than start one."""
    if not body.store:
        return _new_id("resp"), False
    nonce = uuid.uuid4().hex[:8]  # two follow-ups to one response get different ids
    if chain is not None and chain[1] == len(chain[0].messages):
        return f"resp_{chain[0].id}_{chain[1] + new_count}_{nonce}", True
    start = chain[1] if chain is not None else 0
    return f"resp_{uuid.uuid4().hex}_{start + new_count}_{nonce}", False


async def _keep(request: web.Request, answer: _Answer, new: list[ChatMessage],
                chain: tuple[Conversation, int] | None, append: bool, provider: str) -> None:
    """Store a finished response where its id (:func:`_plan_id`) says it is."""
    gateway = request.app[GATEWAY]
    store = gateway.conversations
    conversation_id = answer.id.split("_")[1]
    if append and chain is not None:
        current = await store.get(conversation_id)
        if current is None or len(current.messages) != chain[1]:
            # another follow-up to the same response was stored meanwhile: this one's id
            # names a place that is taken, so it is not kept (GET gives 404)
            log.warning("response %s not stored: %s was continued meanwhile", answer.id,
                        answer.body.previous_response_id)
            return
        await store.append(conversation_id, new)
        return
    history = list(chain[0].messages[:chain[1]]) if chain is not None else []
    first = next((m.content for m in [*history, *new] if m.role is MessageRole.USER
                  and m.content), "")
    await store.create(Conversation(
        id=conversation_id, title=f"Responses API: {first[:60]}" if first else "Responses API",
        model=answer.body.model, provider=provider, owner=gateway.owner(request),
        messages=[*history, *new]))


def _answer_message(answer: _Answer, stored: dict[str, Any]) -> ChatMessage:
    text = "".join(answer.texts)
    return ChatMessage(role=MessageRole.ASSISTANT, content=text or ("" if answer.calls
                                                                    else "(no answer)"),
                       tool_calls=tuple(answer.calls), metadata={"response": stored})


# -- streaming -----------------------------------------------------------------------------------
class _EventWriter:
    """The typed events, numbered; a text delta is formatted by concatenation."""

    def __init__(self, resp: web.StreamResponse, answer: _Answer) -> None:
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
            self.text_id = _new_id("msg")
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
            self.reasoning_id = _new_id("rs")
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

    async def chunk(self, chunk: StreamChunk) -> None:
        if chunk.reasoning:
            await self.reasoning(chunk.reasoning)
        if chunk.content:
            await self.text(chunk.content)
        for call in chunk.tool_calls or ():
            await self.tool(call)

    def end(self) -> bytes:
        out = self._close_reasoning() + self._close_text()
        status = self.answer.status()
        kind = "response.completed" if status == "completed" else "response.incomplete"
        return out + self.event(kind, {"response": self.answer.object()})


async def _stream(request: web.Request, stream: AsyncIterator[StreamChunk],
                  first: StreamChunk | None, answer: _Answer,
                  keep: Callable[[], Awaitable[None]]) -> web.StreamResponse:
    resp = web.StreamResponse(headers=SSE_HEADERS)
    await resp.prepare(request)
    writer = _EventWriter(resp, answer)
    start = answer.object("in_progress")
    await resp.write(writer.event("response.created", {"response": start})
                     + writer.event("response.in_progress", {"response": start}))
    last = first
    try:
        if first is not None:
            await writer.chunk(first)
            async for chunk in stream:
                last = chunk
                if chunk.tool_calls is None and chunk.reasoning is None:
                    if chunk.content:
                        await writer.text(chunk.content)
                else:
                    await writer.chunk(chunk)
    except ConnectionResetError:
        raise
    except Exception as err:  # after the headers: the response failed
        api = from_exception(err)
        error = {"code": api.code or api.type, "message": api.message}
        await resp.write(writer.event("response.failed",
                                      {"response": answer.object("failed", error=error)}))
        await resp.write_eof()
        return resp
    if last is not None:
        answer.finish, answer.usage = last.finish_reason, last.usage
    end = writer.end()
    await keep()  # stored before the client can read the end and ask a follow-up
    await resp.write(end)
    await resp.write_eof()
    return resp


# -- handlers ------------------------------------------------------------------------------------
async def create_response(request: web.Request) -> web.StreamResponse:
    """``POST /v1/responses``."""
    gateway = request.app[GATEWAY]
    try:
        body = await read_body(request, ResponsesRequest)
    except ApiError as err:
        raise _untag(err) from None
    await gateway.check_rate(request.get(KEY))
    history, chain = await _history(request, body)
    new = to_chat_messages(body, history)
    tools, tool_choice = _tools(body)
    provider, model = await gateway.resolve(request, body.model)
    system = [_message("instructions", role=MessageRole.SYSTEM, content=body.instructions)] \
        if body.instructions and body.instructions.strip() else []
    chat: ChatRequest = provider.build_request(
        [*system, *history, *new], model=model, options=_options(gateway, provider, body),
        tools=tools, tool_choice=tool_choice, response_format=_response_format(body))
    fmt = body.text.format if body.text else None
    if fmt is not None and fmt.strict is not None and chat.response_format is not None:
        chat.response_format["strict"] = fmt.strict  # as chat completions keep it
    response_id, append = _plan_id(body, len(new) + 1, chain)
    answer = _Answer(response_id, body)
    if body.store:  # recording files the exchange under the chain's conversation
        chat.conversation_id = response_id.split("_")[1]

    async def keep() -> None:
        if body.store:
            await _keep(request, answer, [*new, _answer_message(answer, answer.object())],
                        chain, append, provider.name)

    if not body.stream:
        with gateway.slot():
            reply = await provider.complete_request(chat)
        answer.from_reply(reply)
        await keep()
        return web.Response(body=dumps(answer.object()), content_type="application/json")
    with gateway.slot():
        stream = provider.stream_request(chat)
        first, rest = await first_chunk(stream)
        gateway.streams_open += 1
        try:
            async with contextlib.aclosing(stream):
                return await _stream(request, rest, first, answer, keep)
        finally:
            gateway.streams_open -= 1


async def get_response(request: web.Request) -> web.Response:
    """``GET /v1/responses/{id}``: a stored response."""
    _, _, stored = await _stored(request, request.match_info["id"])
    return web.Response(body=dumps(stored), content_type="application/json")


def _image_url(image: str | bytes) -> str:
    if isinstance(image, bytes):
        return "data:image/png;base64," + base64.b64encode(image).decode()
    if image.startswith(("http://", "https://", "data:")):
        return image
    return "data:image/png;base64," + image  # kept as the base64 of a data URL


def _items_of(message: ChatMessage) -> list[dict[str, Any]]:
    """A stored message as Responses API items (ids made from the message's id)."""
    key = message.id.hex
    if message.role is MessageRole.TOOL:
        return [{"type": "function_call_output", "id": f"fco_{key}",
                 "call_id": message.tool_call_id, "output": message.content,
                 "status": "completed"}]
    items: list[dict[str, Any]] = []
    if message.content or message.images or not message.tool_calls:
        assistant = message.role is MessageRole.ASSISTANT
        parts: list[dict[str, Any]] = [{
            "type": "output_text" if assistant else "input_text", "text": message.content,
            **({"annotations": []} if assistant else {})}]
        parts += [{"type": "input_image", "detail": "auto", "image_url": _image_url(image)}
                  for image in message.images]
        items.append({"type": "message", "id": f"msg_{key}", "status": "completed",
                      "role": {MessageRole.SYSTEM: "system", MessageRole.USER: "user"}.get(
                          message.role, "assistant"), "content": parts})
    items += [{"type": "function_call", "id": f"fc_{key}_{i}", "call_id": call.get("id"),
               "name": call.get("name"), "arguments": json.dumps(call.get("arguments", {})),
               "status": "completed"} for i, call in enumerate(message.tool_calls)]
    return items


async def list_input_items(request: web.Request) -> web.Response:
    """``GET /v1/responses/{id}/input_items``: the items a stored response was asked with
    (its own input, not the earlier responses' of its chain); ``order`` (``desc`` by
    default), ``after`` (an item id) and ``limit`` (1 to 100, default 20) page them."""
    conversation, count, _ = await _stored(request, request.match_info["id"])
    start = max((i + 1 for i, m in enumerate(conversation.messages[:count - 1])
                 if "response" in m.metadata), default=0)
    items = [item for m in conversation.messages[start:count - 1] for item in _items_of(m)]
    query = request.query
    if query.get("order", "desc") == "desc":
        items.reverse()
    after = query.get("after")
    if after is not None:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    try:
        limit = int(query.get("limit", "20"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100:
        raise ApiError(400, "limit must be an integer from 1 to 100", param="limit")
    page = items[:limit]
    return web.Response(body=dumps({
        "object": "list", "data": page, "has_more": len(items) > limit,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None}), content_type="application/json")


async def delete_response(request: web.Request) -> web.Response:
    """``DELETE /v1/responses/{id}``: forget a stored response (the conversation it ends keeps
    its messages for the responses after it; without any, the conversation goes too)."""
    response_id = request.match_info["id"]
    conversation, count, _ = await _stored(request, response_id)
    store = request.app[GATEWAY].conversations
    if count == len(conversation.messages) and not any(
            "response" in m.metadata for m in conversation.messages[:count - 1]):
        await store.delete(conversation.id)
    else:
        message = conversation.messages[count - 1]
        await store.replace(conversation.id, count - 1, count, [message.model_copy(
            update={"metadata": {k: v for k, v in message.metadata.items()
                                 if k != "response"}})])
    return web.Response(body=dumps({"id": response_id, "object": "response.deleted",
                                    "deleted": True}), content_type="application/json")


def add_routes(app: web.Application) -> None:
    """Register ``/v1/responses``, ``/v1/responses/{id}`` and its ``input_items``."""
    app.router.add_post("/v1/responses", create_response)
    app.router.add_get("/v1/responses/{id}", get_response)
    app.router.add_delete("/v1/responses/{id}", delete_response)
    app.router.add_get("/v1/responses/{id}/input_items", list_input_items)
