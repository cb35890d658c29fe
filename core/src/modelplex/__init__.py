"""modelplex: one async API over every language-model provider, assembled from plugins.

``import modelplex`` is cheap: it imports no plugin, no provider SDK and none of its own
submodules; each public name below is imported on first access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from modelplex.__about__ import __version__

if TYPE_CHECKING:
    from modelplex.caches import Cache, MemoryCache
    from modelplex.chunks import ChatResponse, StreamChunk, ToolCall, Usage
    from modelplex.errors import (
        AuthenticationError,
        BadRequestError,
        ChatBusyError,
        ConfigurationError,
        ModelNotFoundError,
        ModelplexError,
        OptionsError,
        ParseError,
        PluginError,
        ProviderConnectionError,
        ProviderError,
        ProviderStatusError,
        ProviderTimeoutError,
        RateLimitError,
        ResponseTooLargeError,
        ServerBusyError,
        ServerError,
        StreamError,
        UnknownProviderError,
        UnsupportedOperationError,
    )
    from modelplex.hookspecs import hookimpl
    from modelplex.manager import (
        ChainResult,
        ChatManager,
        ChatMode,
        Reply,
        ResponseWithMeta,
        create_provider,
        parse_model_spec,
    )
    from modelplex.parsers import (
        CodeBlockParser,
        JsonDictParser,
        JsonSchemaParser,
        ListParser,
        Parser,
        ParseResult,
        PydanticParser,
    )
    from modelplex.plugins import Plugins, get_plugins, list_plugins
    from modelplex.prompts import (
        ChainOfThoughtPrompt,
        ExtractionPrompt,
        FewShotPrompt,
        PromptTemplate,
    )
    from modelplex.provider import Capabilities, ChatRequest, CommonOptions, Provider
    from modelplex.structured import StructuredResult, StructuredUpdate
    from modelplex.tools import Tool
    from modelplex.types import (
        ChatMessage,
        ChatSession,
        HealthStatus,
        MessageRole,
        ModelInfo,
        PullProgress,
        Task,
        TaskStatus,
    )

_LAZY: dict[str, str] = {
    "hookimpl": "hookspecs",
    **dict.fromkeys(["ChainResult", "ChatManager", "ChatMode", "Reply", "ResponseWithMeta",
                     "create_provider", "parse_model_spec"], "manager"),
    **dict.fromkeys(["Capabilities", "ChatRequest", "CommonOptions", "Provider"], "provider"),
    **dict.fromkeys(["ChatResponse", "StreamChunk", "ToolCall", "Usage"], "chunks"),
    **dict.fromkeys(["ChatMessage", "ChatSession", "HealthStatus", "MessageRole", "ModelInfo",
                     "PullProgress", "Task", "TaskStatus"], "types"),
    **dict.fromkeys(["Plugins", "get_plugins", "list_plugins"], "plugins"),
    **dict.fromkeys(["CodeBlockParser", "JsonDictParser", "JsonSchemaParser", "ListParser",
                     "ParseResult", "Parser", "PydanticParser"], "parsers"),
    **dict.fromkeys(["ChainOfThoughtPrompt", "ExtractionPrompt", "FewShotPrompt",
                     "PromptTemplate"], "prompts"),
    **dict.fromkeys(["StructuredResult", "StructuredUpdate"], "structured"),
    "Tool": "tools",
    **dict.fromkeys(["Cache", "MemoryCache"], "caches"),
    **dict.fromkeys(["AuthenticationError", "BadRequestError", "ChatBusyError",
                     "ConfigurationError",
                     "ModelNotFoundError", "ModelplexError", "OptionsError", "ParseError",
                     "PluginError", "ProviderConnectionError", "ProviderError",
                     "ProviderStatusError", "ProviderTimeoutError", "RateLimitError",
                     "ResponseTooLargeError", "ServerBusyError", "ServerError", "StreamError",
                     "UnknownProviderError", "UnsupportedOperationError"], "errors"),
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'modelplex' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"modelplex.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
