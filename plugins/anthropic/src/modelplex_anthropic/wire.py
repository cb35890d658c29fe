"""Translation between modelplex values and Anthropic's Messages API wire format.

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

from modelplex.chunks import ChatResponse, StreamChunk, ToolCall, Usage
from modelplex.errors import ConfigurationError
from modelplex.finish import normalize_finish_reason
from modelplex.parsers import tool_arguments
from modelplex.tokens import estimate_prompt_tokens
from modelplex.types import ChatMessage, MessageRole

__all__ = [
    "THINKING_METADATA_KEY",
    "AnthropicChunk",
    "AnthropicResponse",
    "AnthropicUsage",
    "encode_messages",
    "encode_tool_choice",
    "encode_tools",
    "image_block",
    "parse_arguments",
    "usage_from",
]

#: Key of :attr:`ChatMessage.metadata` holding an assistant turn's thinking blocks (with
#: their signatures), sent back unchanged before its text and tool calls.
THINKING_METADATA_KEY = "anthropic_thinking"

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


@attrs.define(slots=True)
class AnthropicUsage(Usage):
    """:class:`Usage` plus the prompt-cache counts Anthropic reports.

    ``prompt_tokens`` is the whole input: ``input_tokens`` plus the tokens written to and read
    from the cache, which are also given apart here.
    """

    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


@attrs.define(slots=True)
class AnthropicChunk(StreamChunk):
    """The final chunk of an Anthropic stream: :class:`StreamChunk` plus the turn's thinking
    blocks (``{"type": "thinking", "thinking", "signature"}`` or ``redacted_thinking``), to
    send back with the next request (see :data:`THINKING_METADATA_KEY`), and the raw
    ``stop_reason``."""

    thinking_blocks: list[dict[str, Any]] | None = None
    stop_reason: str | None = None


@attrs.define(slots=True)
class AnthropicResponse(ChatResponse):
    """:class:`ChatResponse` plus the thinking blocks and raw ``stop_reason`` of the answer."""

    thinking_blocks: list[dict[str, Any]] = attrs.Factory(list)
    stop_reason: str | None = None


def usage_from(usage: Mapping[str, Any], messages: Sequence[ChatMessage] = (),
               pieces: int = 0) -> AnthropicUsage:
    """Usage from the merged ``message_start`` and ``message_delta`` usage objects.

    A server that reports no ``output_tokens`` gets an estimate (``estimated=True``): one
    token per streamed delta, :func:`modelplex.tokens.estimate_prompt_tokens` for the prompt.
    """
    if "output_tokens" not in usage:
        prompt = usage.get("input_tokens") or estimate_prompt_tokens(messages)
        return AnthropicUsage(prompt_tokens=int(prompt),
                              completion_tokens=pieces, estimated=True)
    created = int(usage.get("cache_creation_input_tokens") or 0)
    read = int(usage.get("cache_read_input_tokens") or 0)
    return AnthropicUsage(prompt_tokens=int(usage.get("input_tokens") or 0) + created + read,
                          completion_tokens=int(usage.get("output_tokens") or 0),
                          cache_creation_input_tokens=created, cache_read_input_tokens=read)


def parse_arguments(name: str, raw: Any, provider: str) -> dict[str, Any]:
    """A tool call's input from its joined ``input_json_delta`` fragments; input that is not
    a JSON object (or nests too deep) is kept as ``{"_raw": text}`` (as the other providers
    do, :func:`modelplex.parsers.tool_arguments`), so the tool loop can tell the model."""
    return tool_arguments(raw)


# -- images -----------------------------------------------------------------------------------
def _sniff(data: bytes) -> str:
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "image/png"


def _base64_source(data: str, mime: str) -> dict[str, Any]:
    return {"type": "image", "source": {"type": "base64", "media_type": mime, "data": data}}


def image_block(image: str | bytes) -> dict[str, Any]:
    """An image content block for an image given as a URL, data URI, file, bytes or base64."""
    if isinstance(image, bytes):
        return _base64_source(base64.b64encode(image).decode("ascii"), _sniff(image))
    text = image.strip()
    if text.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": text}}
    if text.startswith("data:"):
        header, _, data = text.partition(",")
        if not header.endswith(";base64") or not data:
            raise ConfigurationError(f"image data URI {text[:60]!r} must be base64-encoded "
                                     "(data:image/png;base64,...)")
        return _base64_source(data, header[5:].removesuffix(";base64") or "image/png")
    path = Path(text).expanduser()
    try:
        if path.is_file():
            raw = path.read_bytes()
            mime = mimetypes.guess_type(path.name)[0]
            if not mime or not mime.startswith("image/"):
                mime = _sniff(raw)
            return _base64_source(base64.b64encode(raw).decode("ascii"), mime)
    except OSError:  # a long base64 string is not a valid file name
        pass
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError(
            f"image {text[:60]!r} is neither a URL, a data URI, an existing file nor base64"
        ) from None
    return _base64_source(text, _sniff(raw))


# -- messages ---------------------------------------------------------------------------------
def _tool_use(call: Mapping[str, Any], index: int) -> dict[str, Any]:
    if "function" in call:  # OpenAI's shape
        function = call["function"]
        name, arguments = function.get("name", ""), function.get("arguments", {})
    else:
        name, arguments = call.get("name", ""), call.get("arguments", {})
    if isinstance(arguments, str):
        arguments = json.loads(arguments) if arguments.strip() else {}
    return {"type": "tool_use", "id": call.get("id") or f"toolu_{index}", "name": name,
            "input": arguments}


def _blocks(message: ChatMessage) -> list[dict[str, Any]]:
    """The content blocks of one non-system message."""
    role = message.role
    if role is MessageRole.TOOL:
        if not message.tool_call_id:
            raise ConfigurationError("a tool message needs tool_call_id: the id of the "
                                     "tool_use block it answers")
        result: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.tool_call_id,
                                  "content": message.content}
        if message.images:  # a tool that returned images (an MCP tool's image content)
            result["content"] = [*([{"type": "text", "text": message.content}]
                                   if message.content else []),
                                 *(image_block(img) for img in message.images)]
        if message.metadata.get("is_error"):
            result["is_error"] = True
        return [result]
    blocks: list[dict[str, Any]] = []
    if role is MessageRole.ASSISTANT:
        thinking = message.metadata.get(THINKING_METADATA_KEY)
        if thinking:
            blocks.extend(dict(block) for block in thinking)
    if message.content:
        blocks.append({"type": "text", "text": message.content})
    blocks.extend(image_block(img) for img in message.images)
    if role is MessageRole.ASSISTANT:
        blocks.extend(_tool_use(call, i) for i, call in enumerate(message.tool_calls))
    return blocks


def encode_messages(messages: Sequence[ChatMessage]
                    ) -> tuple[list[str], list[dict[str, Any]]]:
    """``(system texts, messages)`` for the Messages API.

    System messages go to the top-level ``system`` field; tool results become ``tool_result``
    blocks of a user turn; consecutive turns of one role are merged so that the roles
    alternate, as the API requires. A plain-text turn stays a string.
    """
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.role is MessageRole.SYSTEM:
            system.append(message.content)
            continue
        role = "assistant" if message.role is MessageRole.ASSISTANT else "user"
        simple = (message.role is not MessageRole.TOOL and not message.images
                  and not message.tool_calls
                  and not message.metadata.get(THINKING_METADATA_KEY))
        if out and out[-1]["role"] == role:
            if message.metadata.get(THINKING_METADATA_KEY):
                raise ConfigurationError(
                    "two assistant messages in a row cannot be merged into one turn when the "
                    "second carries thinking blocks (they must start the turn): put a user "
                    "message between them or drop the first")
            previous = out[-1]
            if isinstance(previous["content"], str):
                previous["content"] = [{"type": "text", "text": previous["content"]}]
            previous["content"].extend(_blocks(message))
        else:
            out.append({"role": role,
                        "content": message.content if simple else _blocks(message)})
    if not out:
        raise ConfigurationError("the Messages API needs at least one user message besides "
                                 "the system prompt")
    return system, out


# -- tools ------------------------------------------------------------------------------------
def encode_tools(tools: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Anthropic tool definitions; OpenAI-style ``{"type": "function", ...}`` ones converted."""
    out = []
    for tool in tools:
        if tool.get("type") == "function" and "function" in tool:
            function = tool["function"]
            converted: dict[str, Any] = {"name": function["name"]}
            if function.get("description"):
                converted["description"] = function["description"]
            converted["input_schema"] = function.get("parameters") or {"type": "object",
                                                                        "properties": {}}
            out.append(converted)
        else:
            out.append(dict(tool))
    return out


def encode_tool_choice(choice: Any) -> dict[str, Any]:
    """Anthropic's ``tool_choice`` for ``"auto"``, ``"any"``/``"required"``, ``"none"``, a
    tool name, OpenAI's ``{"type": "function", ...}`` or Anthropic's own dict."""
    if isinstance(choice, str):
        if choice in ("auto", "none", "any"):
            return {"type": choice}
        if choice == "required":
            return {"type": "any"}
        return {"type": "tool", "name": choice}
    if isinstance(choice, Mapping):
        if choice.get("type") == "function":
            return {"type": "tool", "name": choice["function"]["name"]}
        return dict(choice)
    raise ConfigurationError(f"tool_choice must be 'auto', 'any', 'none', a tool name or a "
                             f"dict (got {choice!r})")


def response_from(data: Mapping[str, Any], *, model: str, provider: str) -> AnthropicResponse:
    """A whole non-streaming ``message`` as an :class:`AnthropicResponse`."""
    text: list[str] = []
    reasoning: list[str] = []
    thinking: list[dict[str, Any]] = []
    calls: list[ToolCall] = []
    for block in data.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            text.append(block.get("text", ""))
        elif kind == "thinking":
            reasoning.append(block.get("thinking", ""))
            thinking.append(dict(block))
        elif kind == "redacted_thinking":
            thinking.append(dict(block))
        elif kind == "tool_use":  # server_tool_use blocks ran on Anthropic's side
            calls.append(ToolCall(name=block.get("name", ""),
                                  arguments=tool_arguments(block.get("input")),
                                  id=block.get("id")))
    stop = data.get("stop_reason")
    return AnthropicResponse(
        content="".join(text), model=data.get("model") or model, provider=provider,
        reasoning="".join(reasoning) or None, tool_calls=calls,
        finish_reason=normalize_finish_reason(stop), usage=usage_from(data.get("usage") or {}),
        thinking_blocks=thinking, stop_reason=stop,
        response_id=data["id"] if isinstance(data.get("id"), str) else None)
