"""Translation between modelplex values and the Chat Completions wire format.

Pure functions, no I/O except reading image files named in messages.
"""

from __future__ import annotations

import base64
import binascii
import json
import mimetypes
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from modelplex.chunks import ChatResponse, ToolCall, Usage
from modelplex.errors import ConfigurationError, StreamError
from modelplex.finish import normalize_finish_reason
from modelplex.parsers import tool_arguments
from modelplex.tokens import estimate_prompt_tokens, estimate_tokens
from modelplex.types import ChatMessage, MessageRole

__all__ = [
    "MAX_TOOL_CALLS",
    "OpenAIUsage",
    "build_tool_calls",
    "content_parts",
    "encode_message",
    "encode_messages",
    "first_choice",
    "image_url",
    "merge_tool_deltas",
    "response_format",
    "response_from",
    "usage_from",
]

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def _sniff(data: bytes) -> str:
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "image/png"


def _data_uri(data: bytes, mime: str | None = None) -> str:
    return f"data:{mime or _sniff(data)};base64,{base64.b64encode(data).decode('ascii')}"


def image_url(image: str | bytes) -> str:
    """An ``image_url`` URL for an image given as a URL, data URI, file path, bytes or base64."""
    if isinstance(image, bytes):
        return _data_uri(image)
    text = image.strip()
    if text.startswith(("http://", "https://", "data:")):
        return text
    path = Path(text).expanduser()
    try:
        if path.is_file():
            mime = mimetypes.guess_type(path.name)[0]
            if not mime or not mime.startswith("image/"):
                mime = None
            return _data_uri(path.read_bytes(), mime)
    except OSError:  # a long base64 string is not a valid file name
        pass
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError(
            f"image {text[:60]!r} is neither a URL, a data URI, an existing file nor base64"
        ) from None
    return f"data:{_sniff(raw)};base64,{text}"


def _tool_call_out(call: Mapping[str, Any], index: int) -> dict[str, Any]:
    if "function" in call:  # already in OpenAI's shape
        return {"type": "function", **call}
    arguments = call.get("arguments", {})
    return {
        "id": call.get("id") or f"call_{index}",
        "type": "function",
        "function": {
            "name": call["name"],
            "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
        },
    }


def encode_message(message: ChatMessage) -> dict[str, Any]:
    """One message in the Chat Completions shape."""
    role = message.role
    if role is MessageRole.TOOL:
        if not message.tool_call_id:
            raise ConfigurationError("a tool message needs tool_call_id: the id of the call "
                                     "it answers")
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    if role is MessageRole.ASSISTANT and message.tool_calls:
        return {"role": "assistant", "content": message.content or None,
                "tool_calls": [_tool_call_out(c, i) for i, c in enumerate(message.tool_calls)]}
    out: dict[str, Any]
    if message.images:
        parts: list[dict[str, Any]] = [{"type": "text", "text": message.content}] \
            if message.content else []
        parts.extend({"type": "image_url", "image_url": {"url": image_url(img)}}
                     for img in message.images)
        out = {"role": role.value, "content": parts}
    else:
        out = {"role": role.value, "content": message.content}
    if message.name:
        out["name"] = message.name
    return out


def encode_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """The messages in the Chat Completions shape. A tool message cannot hold images there, so
    the images tool results carry (an MCP tool's image content) follow the run of tool
    messages as one user message."""
    out: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = []
    for message in messages:
        if pending and message.role is not MessageRole.TOOL:
            out.append({"role": "user", "content": pending})
            pending = []
        out.append(encode_message(message))
        if message.role is MessageRole.TOOL and message.images:
            pending.append({"type": "text", "text": f"The images returned by tool "
                                                    f"{message.name or ''} (call "
                                                    f"{message.tool_call_id}):"})
            pending.extend({"type": "image_url", "image_url": {"url": image_url(img)}}
                           for img in message.images)
    if pending:
        out.append({"role": "user", "content": pending})
    return out


def response_format(fmt: Mapping[str, Any], style: str = "json_schema") -> dict[str, Any]:
    """OpenAI's ``response_format`` for a normalised modelplex one.

    ``style="json_object"`` sends a schema as ``{"type": "json_object", "schema": ...}``, the
    form llama-cpp-python's server accepts (llama.cpp's own server accepts both).
    """
    if fmt.get("type") == "json":
        return {"type": "json_object"}
    if style == "json_object":
        return {"type": "json_object", "schema": fmt.get("schema", {})}
    return {"type": "json_schema",
            "json_schema": {"name": fmt.get("name") or "response", "schema": fmt.get("schema", {})}}


#: The most tool calls one answer may hold (a bound on what a server can make us keep).
MAX_TOOL_CALLS = 256


def merge_tool_deltas(calls: dict[int, list[Any]], deltas: Sequence[Mapping[str, Any]], *,
                      provider: str = "openai") -> None:
    """Fold streamed tool-call fragments into ``calls`` (in the order the calls opened:
    ``[id, name, argument parts, index]``).

    A fragment names its call by ``index``; a fragment with another ``id`` than the call at
    its index opens a new call (gateways that number every call 0). Some servers leave the
    index out (Gemini's OpenAI-compatible API, several proxies): then a fragment with a new
    ``id`` opens the next call and one without continues the call opened last, so parallel
    calls stay apart. ``arguments`` sent as an object rather than a JSON string are
    serialised. More than :data:`MAX_TOOL_CALLS` calls raise :class:`StreamError`.
    """
    for delta in deltas:
        index = delta.get("index")
        call_id = delta.get("id")
        entry = None
        if isinstance(index, int):
            for opened in reversed(calls.values()):  # the latest call at this index
                if opened[3] == index:
                    entry = opened
                    break
        elif calls:
            entry = calls[next(reversed(calls))]
        if entry is None or (call_id and entry[0] and entry[0] != call_id):
            if len(calls) >= MAX_TOOL_CALLS:
                raise StreamError(f"{provider}: the answer holds more than {MAX_TOOL_CALLS} "
                                  "tool calls", provider=provider)
            entry = calls[len(calls)] = [None, "", [], index]
        if call_id:
            entry[0] = call_id
        function = delta.get("function")
        if function:
            if function.get("name"):
                entry[1] = function["name"]
            arguments = function.get("arguments")
            if arguments:
                entry[2].append(arguments if isinstance(arguments, str)
                                else json.dumps(arguments))


def content_parts(parts: Sequence[Any]) -> tuple[str, str]:
    """``(text, thinking)`` of content sent as a list of parts instead of a string: text
    parts, and the thinking parts of Mistral's reasoning models (``{"type": "thinking",
    "thinking": [{"type": "text", "text": ...}]}``), in streamed deltas and whole answers."""
    text: list[str] = []
    thinking: list[str] = []
    for part in parts:
        if isinstance(part, str):
            text.append(part)
        elif isinstance(part, dict):
            if part.get("type") == "thinking":
                inner = part.get("thinking")
                if isinstance(inner, str):
                    thinking.append(inner)
                elif isinstance(inner, list):
                    thinking.extend(str(p.get("text") or "") for p in inner
                                    if isinstance(p, dict))
            elif isinstance(part.get("text"), str):
                text.append(part["text"])
    return "".join(text), "".join(thinking)


def _arguments(name: str, raw: Any, provider: str) -> dict[str, Any]:
    """The arguments as a dict; arguments that are not a JSON object (or nest too deep) are
    kept as ``{"_raw": text}`` (:func:`modelplex.parsers.tool_arguments`), so the tool loop
    can tell the model."""
    return tool_arguments(raw)


def build_tool_calls(calls: dict[int, list[Any]] | list[Mapping[str, Any]],
                     provider: str) -> list[ToolCall]:
    """Whole :class:`ToolCall` objects, from joined stream fragments or a message's list."""
    if isinstance(calls, dict):  # by index, else in the order they opened
        ordered = sorted(calls.items(), key=lambda item: (
            item[1][3] if isinstance(item[1][3], int) else item[0], item[0]))
        return [ToolCall(name=name, arguments=_arguments(name, "".join(parts), provider),
                         id=call_id)
                for _, (call_id, name, parts, _index) in ordered]
    out = []
    for call in calls:
        function = call.get("function") or {}
        name = function.get("name", "")
        out.append(ToolCall(name=name, arguments=_arguments(name, function.get("arguments"),
                                                            provider), id=call.get("id")))
    return out


def _timings(t: Mapping[str, Any]) -> dict[str, float]:
    prompt = float(t.get("prompt_ms") or 0) / 1000
    predicted = float(t.get("predicted_ms") or 0) / 1000
    return {"prompt_eval": prompt, "eval": predicted, "total": prompt + predicted}


@attrs.define(slots=True)
class OpenAIUsage(Usage):
    """:class:`Usage` plus the details OpenAI reports: ``cache_read_tokens`` (the prompt
    tokens read from the prompt cache, ``usage.prompt_tokens_details.cached_tokens``) and
    ``reasoning_tokens`` (``usage.completion_tokens_details.reasoning_tokens``). Both are
    parts of ``prompt_tokens`` and ``completion_tokens``, not additions to them."""

    cache_read_tokens: int = 0
    reasoning_tokens: int = 0


def _detail(usage: Mapping[str, Any], table: str, key: str) -> int:
    details = usage.get(table)
    if not details:  # most servers send no details
        return 0
    value = details.get(key) if isinstance(details, Mapping) else None
    return value if isinstance(value, int) and value > 0 else 0


def usage_from(usage: Mapping[str, Any] | None, timings: Mapping[str, Any] | None,
               messages: Sequence[ChatMessage], completion_estimate: int) -> Usage:
    """Usage from the server's ``usage`` (an :class:`OpenAIUsage` when it details cached or
    reasoning tokens), else llama.cpp ``timings``, else an estimate."""
    if usage:
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        times = _timings(timings) if timings else None
        read = _detail(usage, "prompt_tokens_details", "cached_tokens")
        reasoning = _detail(usage, "completion_tokens_details", "reasoning_tokens")
        if read or reasoning:
            return OpenAIUsage(prompt_tokens=prompt, completion_tokens=completion,
                               timings=times, cache_read_tokens=read,
                               reasoning_tokens=reasoning)
        return Usage(prompt_tokens=prompt, completion_tokens=completion, timings=times)
    if timings and "predicted_n" in timings:
        return Usage(prompt_tokens=int(timings.get("prompt_n") or 0)
                     + int(timings.get("cache_n") or 0),
                     completion_tokens=int(timings.get("predicted_n") or 0),
                     timings=_timings(timings))
    return Usage(prompt_tokens=estimate_prompt_tokens(messages),
                 completion_tokens=completion_estimate, estimated=True)


def first_choice(choices: Sequence[Any]) -> Any:
    """The choice of index 0 (the one answer modelplex returns), or ``{}`` when there is none.

    Choices without an ``index`` count as 0; a server that sends several (``n`` > 1 passed
    through somehow, or interleaved in a stream) gets the others ignored, not merged in.
    """
    for choice in choices:
        if isinstance(choice, dict) and not choice.get("index"):
            return choice
    return {}


def response_from(data: Mapping[str, Any], *, model: str, provider: str,
                  messages: Sequence[ChatMessage] = ()) -> ChatResponse:
    """A whole non-streaming chat completion (``POST /chat/completions``, or a line of a
    batch's output file) as a :class:`ChatResponse`."""
    choice = first_choice(data.get("choices") or [{}])
    message = choice.get("message") or {}
    content = message.get("content") or ""
    thought = ""
    if isinstance(content, list):  # content parts (Mistral's, with thinking parts)
        content, thought = content_parts(content)
    refusal = message.get("refusal")
    if refusal:
        content += refusal
    finish = normalize_finish_reason(choice.get("finish_reason"))
    tool_calls = message.get("tool_calls")
    if refusal and finish == "stop":
        finish = "refusal"
    elif tool_calls and finish == "stop":  # Gemini ends its tool calls with "stop"
        finish = "tool_calls"
    reasoning = message.get("reasoning_content") or message.get("reasoning") or thought or None
    return ChatResponse(
        content=content,
        model=data.get("model") or model,
        provider=provider,
        reasoning=reasoning,
        tool_calls=build_tool_calls(tool_calls, provider) if tool_calls else [],
        finish_reason=finish,
        usage=usage_from(data.get("usage"), data.get("timings"), messages,
                         estimate_tokens(content)),
        response_id=data["id"] if isinstance(data.get("id"), str) else None,
    )
