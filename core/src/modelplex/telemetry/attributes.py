"""Span attributes in the GenAI conventions: provider names, request option names, the server
address, ``error.type``, and message content as the conventions' JSON (when captured).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

#: modelplex provider names -> the conventions' ``gen_ai.provider.name`` where one exists.
PROVIDER_NAMES: Mapping[str, str] = {"openai": "openai", "anthropic": "anthropic"}
#: providers whose model runs in this process (their spans are INTERNAL, not CLIENT).
IN_PROCESS = frozenset({"llamacpp"})


def provider_name(name: str) -> str:
    """``gen_ai.provider.name`` for a modelplex provider: the conventions' value where one
    exists (``openai``, ``anthropic``), the plugin's name otherwise (``ollama``)."""
    return PROVIDER_NAMES.get(name, name)


# -- content, in the conventions' JSON shape ------------------------------------------------------
def _parts(message: Any) -> list[dict[str, Any]]:
    role = getattr(message.role, "value", message.role)
    parts: list[dict[str, Any]] = []
    if role == "tool":
        return [{"type": "tool_call_response", "id": message.tool_call_id,
                 "response": message.content}]
    if message.content:
        parts.append({"type": "text", "content": message.content})
    for call in message.tool_calls:
        parts.append({"type": "tool_call", "id": call.get("id"), "name": call.get("name"),
                      "arguments": call.get("arguments")})
    if message.images:
        parts.extend({"type": "blob", "modality": "image"} for _ in message.images)
    return parts


def input_messages(messages: Sequence[Any]) -> tuple[str, str | None]:
    """``(gen_ai.input.messages, gen_ai.system_instructions)`` as JSON text."""
    chat = []
    system = []
    for message in messages:
        role = getattr(message.role, "value", message.role)
        if role == "system":
            system.append({"type": "text", "content": message.content})
        else:
            chat.append({"role": role, "parts": _parts(message)})
    return (json.dumps(chat, ensure_ascii=False, default=str),
            json.dumps(system, ensure_ascii=False) if system else None)


def output_messages(content: str, reasoning: str | None, calls: Sequence[Any],
                    finish_reason: str | None) -> str:
    """``gen_ai.output.messages`` as JSON text."""
    parts: list[dict[str, Any]] = []
    if reasoning:
        parts.append({"type": "reasoning", "content": reasoning})
    if content:
        parts.append({"type": "text", "content": content})
    for call in calls:
        parts.append({"type": "tool_call", "id": call.id, "name": call.name,
                      "arguments": call.arguments})
    return json.dumps([{"role": "assistant", "parts": parts,
                        "finish_reason": finish_reason or "stop"}],
                      ensure_ascii=False, default=str)


def tool_definitions(tools: Sequence[Mapping[str, Any]]) -> str:
    """``gen_ai.tool.definitions`` as JSON text."""
    out = []
    for tool in tools:
        fn = tool.get("function", tool)
        out.append({"type": tool.get("type", "function"), "name": fn.get("name"),
                    "description": fn.get("description"), "parameters": fn.get("parameters")})
    return json.dumps(out, ensure_ascii=False, default=str)


#: request options -> their ``gen_ai.request.*`` attribute.
_OPTION_ATTRIBUTES = {
    "max_tokens": "gen_ai.request.max_tokens",
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "top_k": "gen_ai.request.top_k",
    "seed": "gen_ai.request.seed",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
}


def _server_of(provider: Any) -> tuple[str | None, int | None]:
    """``server.address`` and ``server.port`` of the innermost provider, from its URL."""
    for attr in ("base_url", "host", "url"):
        value = getattr(provider, "__dict__", {}).get(attr)
        if isinstance(value, str) and "://" in value:
            parts = urlsplit(value)
            if parts.hostname:
                try:
                    port = parts.port
                except ValueError:
                    port = None
                return parts.hostname, port or (443 if parts.scheme == "https" else 80)
    return None, None


def _innermost(provider: Any) -> Any:
    for _ in range(16):
        inner = getattr(provider, "__dict__", {}).get("inner")
        if inner is None:
            return provider
        provider = inner
    return provider


def base_fallbacks(provider: Any) -> bool:
    """Whether the router under ``provider`` has fallbacks."""
    return bool(getattr(_innermost(provider), "fallbacks", None))


def error_type(err: BaseException) -> str:
    """``error.type``: the exception class (low-cardinality), ``_OTHER`` for no name."""
    return type(err).__name__ or "_OTHER"
