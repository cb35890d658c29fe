"""Request bodies of the server's endpoints and WebSocket frames, validated once per request.

One schema per route: every handler that takes a body reads it with :func:`read_body` and its
route's pydantic model, and every ``/ws`` frame is parsed with :func:`parse_frame` into one
of the frame models. These models are both the validation and the OpenAPI description
(:mod:`modelplex_server.openapi`). Before any parsing the JSON's nesting depth is bounded
(``max_json_depth``, :func:`check_depth`), so a deeply nested body or frame is a 400, never a
``RecursionError``. Bodies are parsed with ``model_validate_json`` in strict mode, so
``"stream": "yes"`` or ``"temperature": "hot"`` is a 400 naming the field, as with OpenAI;
unknown fields are ignored, as OpenAI-compatible servers do, except where a body changes
stored state (``PATCH /api/conversations/{id}``), where they are an error.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar

from aiohttp import web
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic_core import PydanticCustomError

from modelplex_server.connections import CONNECTIONS
from modelplex_server.errors import ApiError
from modelplex_server.gateway import GATEWAY

T = TypeVar("T", bound=BaseModel)

__all__ = ["MANY_STOP", "MAX_EMBED_INPUTS", "MAX_STOP_CHARS", "MAX_TOOLS", "OPENAI_STOP",
           "AuthFrame", "ChatCompletionRequest", "ConversationCreate", "ConversationUpdate",
           "EmbeddingRequest", "Frame", "PingFrame", "RestChatRequest", "SendMessageFrame",
           "StopFrame", "StopList", "StopSequences", "Text", "at_most", "check_depth",
           "check_numbers", "check_option_stop", "check_tool_choice", "parse_body",
           "parse_frame", "read_body", "unserved", "validation_error"]


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("holds a NUL character (\\u0000), which no store keeps: remove it")
    return value


#: a string the conversation store keeps as it is (a title, a model id, a key's name): no NUL
Text = Annotated[str, AfterValidator(_no_nul)]
#: stop sequences per request: OpenAI's APIs take 4 (OpenAI's own limit); Anthropic's and
#: Ollama's (and the ``options`` of modelplex's extensions) 16, as their APIs document no limit
#: and model files list several stop tokens. Each sequence is at most MAX_STOP_CHARS long.
OPENAI_STOP, MANY_STOP, MAX_STOP_CHARS = 4, 16, 500


def _stop_bound(most: int) -> Any:
    def check(value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) > most:
            raise PydanticCustomError(
                "too_many_stop_sequences", "at most {most} stop sequences are taken (got "
                "{count}): send {most} or fewer", {"most": most, "count": len(value)})
        longest = max(map(len, [value] if isinstance(value, str) else value), default=0)
        if longest > MAX_STOP_CHARS:
            raise PydanticCustomError(
                "stop_sequence_too_long", "each stop sequence is at most {most} characters "
                "(got one of {count}): shorten it", {"most": MAX_STOP_CHARS, "count": longest})
        return value
    return AfterValidator(check)


#: tools a request may give (OpenAI's limit, on every API) and texts one embedding request may
#: give (OpenAI's, on every API)
MAX_TOOLS, MAX_EMBED_INPUTS = 128, 2048


def at_most(most: int, what: str) -> Any:
    """A validator of a list's length: at most ``most`` items (a 400 naming the field, the
    limit and the count)."""
    def check(value: Any) -> Any:
        if isinstance(value, list) and len(value) > most:
            raise PydanticCustomError(
                "too_many", "at most {most} {what} are taken (got {count}): send {most} or "
                "fewer", {"most": most, "what": what, "count": len(value)})
        return value
    return AfterValidator(check)


#: ``stop`` of OpenAI's APIs: one sequence or at most 4 (a count a client cannot blow up)
StopList = Annotated[str | list[str], _stop_bound(OPENAI_STOP)]
#: ``stop_sequences`` (Anthropic's API), ``options.stop`` (Ollama's, modelplex's ``options``)
StopSequences = Annotated[list[str], _stop_bound(MANY_STOP)]
_STOP_OPTION: TypeAdapter[list[str]] = TypeAdapter(StopSequences)


def check_option_stop(options: Mapping[str, Any] | None, param: str = "options") -> None:
    """A 400 naming ``{param}.stop`` when the provider options ``options`` hold a ``stop``
    that is not a list of at most :data:`MANY_STOP` sequences of at most
    :data:`MAX_STOP_CHARS` characters (a single string is one sequence)."""
    stop = (options or {}).get("stop")
    if stop is None:
        return
    try:
        _STOP_OPTION.validate_python([stop] if isinstance(stop, str) else stop, strict=True)
    except ValidationError as err:
        item = err.errors()[0]
        where = ".".join(str(part) for part in (param, "stop", *item["loc"]))
        raise ApiError(400, f"invalid '{where}': {item['msg']}", param=f"{param}.stop") \
            from None


def check_tool_choice(tools: list[dict[str, Any]] | None, choice: Any,
                      param: str = "tool_choice") -> None:
    """A 400 naming ``param`` when the tool choice (OpenAI's shape, as every API's is
    translated) asks for a tool and there are no ``tools``, or names a function that is not
    among them (as OpenAI and Anthropic refuse it; a provider would force a call to nothing)."""
    if choice is None or choice in ("auto", "none"):
        return
    names = [t.get("function", {}).get("name") for t in tools or ()]
    if not names:
        raise ApiError(400, f"{param}: it asks for a tool call but no tools are given: give "
                            "tools, or leave out tool_choice", param=param)
    wanted = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
    if wanted is not None and wanted not in names:
        raise ApiError(400, f"{param}: names the tool {str(wanted)[:64]!r}, which is not among "
                            f"tools ({', '.join(map(str, names))[:200]}): name one of them",
                       param=param)


def unserved() -> Any:
    """A request field that is not served: described so in the OpenAPI description, and a
    400 naming it when given (checked by its route)."""
    return Field(default=None, description="Not served: given, it is a 400 naming it.")


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
    stop: StopList | None = None  # OpenAI's bound: up to 4 sequences
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    n: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    user: str | None = None
    parallel_tool_calls: bool | None = None
    tools: Annotated[list[ToolParam], at_most(MAX_TOOLS, "tools")] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: ResponseFormat | None = None
    options: dict[str, Any] | None = None
    # refused with a 400 naming them (openai_api.refuse_unsupported): not served
    audio: dict[str, Any] | None = unserved()
    modalities: list[str] | None = Field(default=None,
                                         description="Only [\"text\"]: others are a 400.")
    functions: list[Any] | None = unserved()
    function_call: str | dict[str, Any] | None = unserved()
    web_search_options: dict[str, Any] | None = unserved()


class EmbeddingRequest(_Body):
    """``POST /v1/embeddings``: ``input`` is a string, a list of strings, or token ids (a
    list of integers, or a list of such lists)."""

    model: str
    input: Annotated[str | list[str] | list[int] | list[list[int]],
                     at_most(MAX_EMBED_INPUTS, "inputs")]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, gt=0)
    user: str | None = None


class RestChatRequest(_Body):
    """``POST /api/chat``: a message to a conversation, or to a model with a history.

    Give ``conversation_id`` (its model and history are used, and the exchange is added to
    it) or ``model`` with an optional ``history``. ``regenerate`` (with ``conversation_id``,
    without ``message``) answers the conversation's last user message again, replacing the
    answer that followed it.
    """

    message: str | None = Field(default=None, min_length=1)
    regenerate: bool = False
    conversation_id: Text | None = None
    model: Text | None = None
    history: list[ChatMessageParam] = Field(default_factory=list)
    system_prompt: Text | None = None
    options: dict[str, Any] | None = None


class ConversationCreate(_Body):
    """``POST /api/conversations``."""

    model: Text = Field(min_length=1)
    title: Text = Field(default="New conversation", min_length=1, max_length=500)
    system_prompt: Text | None = None


class ConversationUpdate(_Body):
    """``PATCH /api/conversations/{id}``: the fields given are changed (others are an
    error); ``system_prompt`` may be null to remove it."""

    model_config = ConfigDict(extra="forbid")

    title: Text = Field(default="New conversation", min_length=1, max_length=500)
    model: Text = Field(default="", min_length=1)
    system_prompt: Text | None = None

    def changes(self) -> dict[str, Any]:
        """The fields the body gave, and their values."""
        return {name: getattr(self, name) for name in self.model_fields_set}


# -- WebSocket frames ----------------------------------------------------------------------------
class AuthFrame(_Body):
    """``{"type": "auth", "api_key": "..."}``: the first frame when keys are configured and
    the client could send no ``Authorization`` header."""

    type: Literal["auth"]
    api_key: str = ""


class SendMessageFrame(RestChatRequest):
    """``{"type": "send_message", ...}``: the body of ``POST /api/chat``, plus an optional
    ``request_id`` that tags the events of a message without a conversation."""

    type: Literal["send_message"]
    request_id: str | None = None


class StopFrame(_Body):
    """``{"type": "stop", "conversation_id" | "request_id": "..."}``: stop that answer."""

    type: Literal["stop"]
    conversation_id: str | None = None
    request_id: str | None = None


class PingFrame(_Body):
    """``{"type": "ping"}``, answered by ``pong``."""

    type: Literal["ping"]


Frame = Annotated[AuthFrame | SendMessageFrame | StopFrame | PingFrame,
                  Field(discriminator="type")]
_FRAME: TypeAdapter[AuthFrame | SendMessageFrame | StopFrame | PingFrame] = \
    TypeAdapter(Frame)
_FRAME_TYPES = "auth, send_message, stop or ping"


# -- nesting depth -------------------------------------------------------------------------------
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_PAIR = re.compile(rb"[\[{][\]}]")
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))


def check_depth(data: bytes | str, limit: int) -> None:
    """A 400 when the JSON text ``data`` nests arrays and objects deeper than ``limit``,
    found without parsing it (the parsers recurse, so they must never see such a text)."""
    raw = data.encode("utf-8", "replace") if isinstance(data, str) else data
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return
    structure = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    if structure.count(b"[") + structure.count(b"{") <= limit:
        return
    for _ in range(limit):  # each pass removes the innermost level
        reduced = _PAIR.sub(b"", structure)
        if reduced == structure:
            break
        structure = reduced
    if _PAIR.search(structure) or structure.count(b"[") + structure.count(b"{") > limit:
        raise ApiError(400, f"the JSON is nested deeper than {limit} levels")


def validation_error(err: ValidationError) -> ApiError:
    """A 400 naming the first invalid field (``param``) and what is wrong with it. For a
    field that is text or a list of parts (``content``), a list is reported by what is wrong
    inside it, not by "should be a valid string"; union branch labels leave the path."""
    errors = err.errors()
    item = errors[0]
    if item["type"] == "string_type" and item["loc"][-1:] == ("str",) and len(errors) > 1 \
            and errors[1]["loc"][:len(item["loc"]) - 1] == item["loc"][:-1]:
        item = errors[1]
    if item["type"] == "json_invalid":
        return ApiError(400, f"the request body is not valid JSON: {item['msg']}")
    if item["type"] == "model_type" and not item["loc"]:
        return ApiError(400, "the request body must be a JSON object")
    path = ".".join(str(part) for part in item["loc"]
                    if not (isinstance(part, str) and "[" in part))
    msg = item["msg"]
    if item["type"] == "missing":
        return ApiError(400, f"'{path}' is required", param=path)
    if "(got " in msg:  # the message says what it got
        return ApiError(400, f"invalid '{path}': {msg}", param=path)
    return ApiError(400, f"invalid '{path}': {msg} (got {item.get('input')!r:.100})",
                    param=path)


_LONG_NUMBER = re.compile(rb"-?[0-9]{19,}")
INT64 = range(-(2**63), 2**63)


def check_numbers(data: bytes | str) -> None:
    """A 400 when the JSON text ``data`` holds an integer beyond 64 bits (no API takes one,
    and the wire encoders of the providers cannot send it), found without parsing it."""
    raw = data.encode("utf-8", "replace") if isinstance(data, str) else data
    if not _LONG_NUMBER.search(raw):
        return
    text = _STRING.sub(b'""', raw)
    for found in _LONG_NUMBER.finditer(text):
        before, after = text[found.start() - 1:found.start()], text[found.end():found.end() + 1]
        if before in (b".", b"e", b"E", b"+") or after in (b".", b"e", b"E"):
            continue  # digits of a fraction or of a float's exponent
        digits = found.group()
        # a long run of digits is out of range unparsed (int() refuses over 4300 digits)
        if len(digits.lstrip(b"-")) > 20 or int(digits) not in INT64:
            raise ApiError(400, "a number of the JSON is out of range: integers must fit in "
                                "64 bits")


def parse_body(model: type[T], body: bytes, *, max_depth: int = 64) -> T:
    """Validate a JSON body into ``model``; a 400 :class:`ApiError` if it is not one."""
    if not body:
        raise ApiError(400, "the request body is empty: send a JSON object")
    check_depth(body, max_depth)
    check_numbers(body)
    try:
        return model.model_validate_json(body)
    except ValidationError as err:
        raise validation_error(err) from None


async def _read(request: web.Request, limit: int, stall: float) -> bytes:
    """The whole body, each read waiting at most ``stall`` seconds (then 408, and the
    connection is closed), at most ``limit`` bytes (then 413)."""
    parts: list[bytes] = []
    size = 0
    with request.app[CONNECTIONS].receiving(request.transport):
        while True:
            try:
                async with asyncio.timeout(stall):
                    part = await request.content.readany()
            except TimeoutError:
                raise ApiError(408, f"the request body stalled for {stall:g} s: send it "
                                    "whole", code="request_timeout", close=True) from None
            if not part:
                return b"".join(parts)
            size += len(part)
            if size > limit:
                raise ApiError(413, f"the request body is larger than the limit of {limit} "
                                    "bytes", code="request_too_large")
            parts.append(part)


async def read_body(request: web.Request, model: type[T]) -> T:
    """Read the request's body and validate it with its route's schema ``model``: the one
    way a handler gets its body (408 when it stalls, 413 when too large, 400 when too deeply
    nested, not JSON or not valid)."""
    settings = request.app[GATEWAY].settings
    body = await _read(request, settings.max_body_bytes, settings.body_timeout)
    return parse_body(model, body, max_depth=settings.max_json_depth)


def parse_frame(data: str, *, max_depth: int) -> AuthFrame | SendMessageFrame | StopFrame \
        | PingFrame:
    """A ``/ws`` text frame, validated (a 400 :class:`ApiError` naming what is wrong)."""
    check_depth(data, max_depth)
    check_numbers(data)
    try:
        return _FRAME.validate_json(data)
    except ValidationError as err:
        item = err.errors()[0]
        if item["type"] == "union_tag_invalid":
            tag = item.get("ctx", {}).get("tag")
            raise ApiError(400, f"unknown event type {tag!r}: send {_FRAME_TYPES}",
                           param="type") from None
        if item["type"] in ("union_tag_not_found", "model_type", "model_attributes_type",
                            "json_invalid"):
            raise ApiError(400, f"each frame must be a JSON object with a 'type' "
                                f"({_FRAME_TYPES})", param="type") from None
        if item["loc"] and item["loc"][0] in ("auth", "send_message", "stop", "ping"):
            err_loc = item["loc"][1:]
            path = ".".join(str(part) for part in err_loc)
            if item["type"] == "missing":
                raise ApiError(400, f"'{path}' is required", param=path) from None
            raise ApiError(400, f"invalid '{path}': {item['msg']} "
                                f"(got {item.get('input')!r:.100})", param=path) from None
        raise validation_error(err) from None
