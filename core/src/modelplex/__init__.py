"""modelplex: one async API over every language-model provider, assembled from plugins.

``import modelplex`` is cheap: it imports no plugin, no provider SDK and none of its own
submodules; each public name below is imported on first access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from modelplex.__about__ import __version__

if TYPE_CHECKING:  # `X as X`: explicit re-exports, so `mypy --strict` users can import them
    from modelplex.caches import (
        Cache as Cache,
        MemoryCache as MemoryCache,
    )
    from modelplex.chunks import (
        ChatResponse as ChatResponse,
        StreamChunk as StreamChunk,
        ToolCall as ToolCall,
        Usage as Usage,
    )
    from modelplex.compat import (
        AssistantMessage as AssistantMessage,
        ModelAdapter as ModelAdapter,
        ModelAdapterBase as ModelAdapterBase,
        ModelManager as ModelManager,
        ModelResponse as ModelResponse,
        SystemMessage as SystemMessage,
        UserMessage as UserMessage,
        configure_load_balancer as configure_load_balancer,
        get_embedding_model as get_embedding_model,
        get_model as get_model,
        get_model_manager as get_model_manager,
    )
    from modelplex.config import (
        Config as Config,
        load_config as load_config,
    )
    from modelplex.errors import (
        AuthenticationError as AuthenticationError,
        BadRequestError as BadRequestError,
        ChatBusyError as ChatBusyError,
        ChatError as ChatError,
        ConfigurationError as ConfigurationError,
        ModelDownloadError as ModelDownloadError,
        ModelNotFoundError as ModelNotFoundError,
        ModelplexError as ModelplexError,
        OptionsError as OptionsError,
        ParseError as ParseError,
        PluginError as PluginError,
        ProviderConnectionError as ProviderConnectionError,
        ProviderError as ProviderError,
        ProviderStatusError as ProviderStatusError,
        ProviderTimeoutError as ProviderTimeoutError,
        RateLimitError as RateLimitError,
        ResponseTooLargeError as ResponseTooLargeError,
        RoutingError as RoutingError,
        ServerBusyError as ServerBusyError,
        ServerError as ServerError,
        StorageError as StorageError,
        StreamError as StreamError,
        UnknownProviderError as UnknownProviderError,
        UnsupportedOperationError as UnsupportedOperationError,
    )
    from modelplex.hookspecs import hookimpl as hookimpl
    from modelplex.http_provider import HttpProvider as HttpProvider
    from modelplex.manager import (
        ChainResult as ChainResult,
        ChatManager as ChatManager,
        ChatMode as ChatMode,
        create_provider as create_provider,
        parse_model_spec as parse_model_spec,
    )
    from modelplex.parsers import (
        CodeBlockParser as CodeBlockParser,
        JsonDictParser as JsonDictParser,
        JsonSchemaParser as JsonSchemaParser,
        ListParser as ListParser,
        Parser as Parser,
        ParseResult as ParseResult,
        PydanticParser as PydanticParser,
    )
    from modelplex.pipeline import (
        Lease as Lease,
        open_model as open_model,
        release_model as release_model,
    )
    from modelplex.plugins import (
        Plugins as Plugins,
        get_plugins as get_plugins,
        list_plugins as list_plugins,
    )
    from modelplex.pool import (
        ProviderPool as ProviderPool,
        get_pool as get_pool,
    )
    from modelplex.prompts import (
        ChainOfThoughtPrompt as ChainOfThoughtPrompt,
        ExtractionPrompt as ExtractionPrompt,
        FewShotPrompt as FewShotPrompt,
        PromptTemplate as PromptTemplate,
    )
    from modelplex.provider import (
        Capabilities as Capabilities,
        ChatRequest as ChatRequest,
        CommonOptions as CommonOptions,
        Provider as Provider,
    )
    from modelplex.reply import (
        Reply as Reply,
        ResponseWithMeta as ResponseWithMeta,
    )
    from modelplex.routing import (
        Deployment as Deployment,
        RouteInfo as RouteInfo,
        Router as Router,
    )
    from modelplex.specs import get_available_providers as get_available_providers
    from modelplex.stats import ModelStats as ModelStats
    from modelplex.structured import (
        StructuredResult as StructuredResult,
        StructuredUpdate as StructuredUpdate,
    )
    from modelplex.tools import Tool as Tool
    from modelplex.types import (
        ChatMessage as ChatMessage,
        ChatSession as ChatSession,
        HealthStatus as HealthStatus,
        MessageRole as MessageRole,
        ModelConfig as ModelConfig,
        ModelInfo as ModelInfo,
        ModelSize as ModelSize,
        PullProgress as PullProgress,
        Task as Task,
        TaskStatus as TaskStatus,
    )

_LAZY: dict[str, str] = {
    "hookimpl": "hookspecs",
    "HttpProvider": "http_provider",
    **dict.fromkeys(["ChainResult", "ChatManager", "ChatMode", "create_provider",
                     "parse_model_spec"], "manager"),
    **dict.fromkeys(["Reply", "ResponseWithMeta"], "reply"),
    **dict.fromkeys(["Capabilities", "ChatRequest", "CommonOptions", "Provider"], "provider"),
    **dict.fromkeys(["ChatResponse", "StreamChunk", "ToolCall", "Usage"], "chunks"),
    **dict.fromkeys(["ChatMessage", "ChatSession", "HealthStatus", "MessageRole", "ModelConfig",
                     "ModelInfo", "ModelSize", "PullProgress", "Task", "TaskStatus"], "types"),
    **dict.fromkeys(["Plugins", "get_plugins", "list_plugins"], "plugins"),
    **dict.fromkeys(["CodeBlockParser", "JsonDictParser", "JsonSchemaParser", "ListParser",
                     "ParseResult", "Parser", "PydanticParser"], "parsers"),
    **dict.fromkeys(["ChainOfThoughtPrompt", "ExtractionPrompt", "FewShotPrompt",
                     "PromptTemplate"], "prompts"),
    **dict.fromkeys(["StructuredResult", "StructuredUpdate"], "structured"),
    "Tool": "tools",
    "ModelStats": "stats",
    "get_available_providers": "specs",
    **dict.fromkeys(["Cache", "MemoryCache"], "caches"),
    **dict.fromkeys(["AssistantMessage", "ModelAdapter", "ModelAdapterBase", "ModelManager",
                     "ModelResponse", "SystemMessage", "UserMessage", "configure_load_balancer",
                     "get_embedding_model", "get_model", "get_model_manager"], "compat"),
    **dict.fromkeys(["Config", "load_config"], "config"),
    **dict.fromkeys(["Lease", "open_model", "release_model"], "pipeline"),
    **dict.fromkeys(["ProviderPool", "get_pool"], "pool"),
    **dict.fromkeys(["Deployment", "RouteInfo", "Router"], "routing"),
    **dict.fromkeys(["AuthenticationError", "BadRequestError", "ChatBusyError",
                     "ChatError", "ConfigurationError",
                     "ModelDownloadError", "ModelNotFoundError", "ModelplexError",
                     "OptionsError", "ParseError",
                     "PluginError", "ProviderConnectionError", "ProviderError",
                     "ProviderStatusError", "ProviderTimeoutError", "RateLimitError",
                     "ResponseTooLargeError", "RoutingError", "ServerBusyError", "ServerError",
                     "StorageError", "StreamError",
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
