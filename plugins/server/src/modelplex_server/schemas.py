"""Request bodies of the server's endpoints, validated once per request.

These pydantic models are both the validation and the OpenAPI description
(:mod:`modelplex_server.openapi`). Bodies are parsed with ``model_validate_json`` in strict
mode, so ``"stream": "yes"`` or ``"temperature": "hot"`` is a 400 naming the field, as with
OpenAI; unknown fields are ignored, as OpenAI-compatible servers do.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelplex_server.errors import ApiError

T = TypeVar("T", bound=BaseModel)

__all__ = ["ChatCompletionRequest", "ConversationCreate", "EmbeddingRequest", "RestChatRequest",
           "parse_body", "validation_error"]


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", protected_namespaces=())


class ToolCallFunction(_Body):
    """The function a tool call names, with its arguments as a JSON string."""

    name: str
    arguments: str = ""


class ToolCallParam(_Body):
    """A tool call in an assistant message of the history."""

    id: str
    type: Literal["function"] = "function"
    function: ToolCallFunction


class ChatMessageParam(_Body):
    """One message of ``messages``: text or content parts (``text``, ``image_url``)."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCallParam] | None = None
    tool_call_id: str | None = None


class FunctionDef(_Body):
    """A function the model may call."""

    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolParam(_Body):
    """A tool: ``{"type": "function", "function": {...}}``."""

    type: Literal["function"]
    function: FunctionDef


class StreamOptions(_Body):
    """``include_usage``: send a last chunk with the usage and empty ``choices``."""

    include_usage: bool = False


class ResponseFormat(_Body):
    """``{"type": "text" | "json_object" | "json_schema", "json_schema": {...}}``."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


class ChatCompletionRequest(_Body):
    """``POST /v1/chat/completions``. ``options`` (modelplex extension) passes provider
    options such as Ollama's ``num_ctx``; they are validated by the provider."""

    model: str
    messages: list[ChatMessageParam] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, gt=0)
    max_completion_tokens: int | None = Field(default=None, gt=0)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    n: int | None = Field(default=None, ge=1, le=1)
    tools: list[ToolParam] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: ResponseFormat | None = None
    options: dict[str, Any] | None = None


class EmbeddingRequest(_Body):
    """``POST /v1/embeddings``: ``input`` is a string or a list of strings."""

    model: str
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, gt=0)


class RestChatRequest(_Body):
    """``POST /api/chat``: a message to a conversation, or to a model with a history.

    Give ``conversation_id`` (its model and history are used, and the exchange is added to
    it) or ``model`` with an optional ``history``. ``regenerate`` (with ``conversation_id``,
    without ``message``) answers the conversation's last user message again, replacing the
    answer that followed it.
    """

    message: str | None = Field(default=None, min_length=1)
    regenerate: bool = False
    conversation_id: str | None = None
    model: str | None = None
    history: list[ChatMessageParam] = Field(default_factory=list)
    system_prompt: str | None = None
    options: dict[str, Any] | None = None


class ConversationCreate(_Body):
    """``POST /api/conversations``."""

    model: str
    title: str = "New conversation"
    system_prompt: str | None = None


def validation_error(err: ValidationError) -> ApiError:
    """A 400 naming the first invalid field (``param``) and what is wrong with it."""
    item = err.errors()[0]
    if item["type"] == "json_invalid":
        return ApiError(400, f"the request body is not valid JSON: {item['msg']}")
    if item["type"] == "model_type" and not item["loc"]:
        return ApiError(400, "the request body must be a JSON object")
    path = ".".join(str(part) for part in item["loc"])
    msg = item["msg"]
    if item["type"] == "missing":
        return ApiError(400, f"'{path}' is required", param=path)
    return ApiError(400, f"invalid '{path}': {msg} (got {item.get('input')!r:.100})",
                    param=path)


def parse_body(model: type[T], body: bytes) -> T:
    """Validate a JSON body into ``model``; a 400 :class:`ApiError` if it is not one."""
    if not body:
        raise ApiError(400, "the request body is empty: send a JSON object")
    try:
        return model.model_validate_json(body)
    except ValidationError as err:
        raise validation_error(err) from None
