"""Translation between modelplex's types and Ollama's JSON: request bodies and replies."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from modelplex.chunks import StreamChunk, ToolCall, Usage
from modelplex.errors import ConfigurationError
from modelplex.parsers import tool_arguments
from modelplex.provider import ChatRequest, CommonOptions
from modelplex.tokens import estimate_prompt_tokens, estimate_tokens
from modelplex.types import ChatMessage
from modelplex_ollama.options import split_options

__all__ = [
    "chat_payload",
    "chunk_from_line",
    "encode_image",
    "estimated_usage",
    "message_to_wire",
    "needs_file_io",
    "tool_calls_from_wire",
    "usage_from_line",
    "wire_format",
]

_NS = 1e9
_TIMINGS = {"load": "load_duration", "prompt_eval": "prompt_eval_duration",
            "eval": "eval_duration", "total": "total_duration"}


# -- requests ---------------------------------------------------------------------------------
def encode_image(image: str | bytes) -> str:
    """An image as the raw base64 Ollama wants (no ``data:`` prefix).

    ``bytes`` are the image itself; a ``str`` is a file path (``~`` allowed), a ``data:`` URL
    or base64 text.
    """
    if isinstance(image, bytes | bytearray):
        return base64.b64encode(bytes(image)).decode("ascii")
    if image.startswith("data:"):
        header, _, data = image.partition(",")
        if header.endswith(";base64") and data:
            return data
        raise ConfigurationError(f"image data URL {image[:40]!r}... is not base64 encoded")
    try:
        path = Path(image).expanduser()
        is_file = path.is_file()
    except (OSError, ValueError):
        is_file = False
    if is_file:
        return base64.b64encode(path.read_bytes()).decode("ascii")
    try:
        base64.b64decode(image, validate=True)
    except (binascii.Error, ValueError):
        shown = image if len(image) <= 60 else image[:57] + "..."
        raise ConfigurationError(
            f"image {shown!r} is neither an existing file nor base64 data: give a path, "
            "the image's bytes, or its base64 text") from None
    return image


def needs_file_io(messages: Iterable[ChatMessage]) -> bool:
    """Whether building the body may read image files (then it is built in a thread)."""
    return any(isinstance(img, str) for m in messages for img in m.images)


def _tool_call_to_wire(call: Mapping[str, Any]) -> dict[str, Any]:
    if "function" in call:  # already in Ollama's shape
        return dict(call)
    wire: dict[str, Any] = {"function": {"name": call.get("name", ""),
                                         "arguments": call.get("arguments") or {}}}
    if call.get("id"):
        wire["id"] = call["id"]
    return wire


def message_to_wire(message: ChatMessage) -> dict[str, Any]:
    """One :class:`ChatMessage` as an Ollama message."""
    wire: dict[str, Any] = {"role": message.role.value, "content": message.content}
    if message.images:
        wire["images"] = [encode_image(img) for img in message.images]
    if message.tool_calls:
        wire["tool_calls"] = [_tool_call_to_wire(c) for c in message.tool_calls]
    if message.tool_call_id:
        wire["tool_call_id"] = message.tool_call_id
    if message.name and message.role.value == "tool":
        wire["tool_name"] = message.name
    return wire


def wire_format(response_format: Mapping[str, Any] | None) -> Any:
    """``ChatRequest.response_format`` as Ollama's ``format``: ``"json"`` or a JSON schema."""
    if not response_format:
        return None
    if response_format.get("type") == "json_schema":
        return response_format.get("schema") or {}
    return "json"


def common_fields(body: dict[str, Any], options: CommonOptions,
                  response_format: Mapping[str, Any] | None) -> dict[str, Any]:
    """Add ``format``, the request-level options and ``options`` (only what was set)."""
    fmt = wire_format(response_format)
    if fmt is not None:
        body["format"] = fmt
    top, opts = split_options(options)
    body.update(top)
    if opts:
        body["options"] = opts
    return body


def chat_payload(request: ChatRequest, *, stream: bool) -> dict[str, Any]:
    """The ``/api/chat`` body of a request."""
    body: dict[str, Any] = {"model": request.model,
                            "messages": [message_to_wire(m) for m in request.messages],
                            "stream": stream}
    if request.tools:
        body["tools"] = request.tools
    return common_fields(body, request.options, request.response_format)


# -- replies ----------------------------------------------------------------------------------
def tool_calls_from_wire(calls: Any) -> list[ToolCall] | None:
    """Ollama tool calls as :class:`ToolCall` objects (``arguments`` always a dict)."""
    if not calls:
        return None
    out = []
    for call in calls:
        fn = call.get("function") or {}
        args = tool_arguments(fn.get("arguments"))  # a dict, else {"_raw": ...}; bounded
        out.append(ToolCall(name=str(fn.get("name", "")), arguments=args, id=call.get("id")))
    return out


def usage_from_line(line: Mapping[str, Any]) -> Usage | None:
    """Usage from a final (``done``) object, or ``None`` when it carries no counts."""
    if "prompt_eval_count" not in line and "eval_count" not in line:
        return None
    timings = {name: line[key] / _NS for name, key in _TIMINGS.items()
               if isinstance(line.get(key), int | float)}
    return Usage(prompt_tokens=int(line.get("prompt_eval_count") or 0),
                 completion_tokens=int(line.get("eval_count") or 0),
                 timings=timings or None)


def estimated_usage(prompt: Sequence[ChatMessage] | str, completion: str) -> Usage:
    """Usage estimated (:mod:`modelplex.tokens`) from the prompt (a generate call's text or
    the messages) and the answer, marked ``estimated``."""
    return Usage(prompt_tokens=estimate_tokens(prompt) if isinstance(prompt, str)
                 else estimate_prompt_tokens(prompt),
                 completion_tokens=estimate_tokens(completion), estimated=True)


def chunk_from_line(line: Mapping[str, Any], *, text_key: str) -> StreamChunk:
    """A chunk from one ``/api/chat`` (``text_key="message"``) or ``/api/generate`` object."""
    if text_key == "message":
        msg = line.get("message") or {}
        content, thinking, calls = msg.get("content"), msg.get("thinking"), msg.get("tool_calls")
    else:
        content, thinking, calls = line.get("response"), line.get("thinking"), \
            line.get("tool_calls")
    return StreamChunk(content=content or "", reasoning=thinking or None,
                       tool_calls=tool_calls_from_wire(calls), model=line.get("model"))
