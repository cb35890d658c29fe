"""The Responses API's requests: their bodies, and their input as modelplex messages.

``POST /v1/responses`` bodies (:class:`ResponsesRequest`: ``input`` as a string or items,
``instructions``, function ``tools``, ``tool_choice``, ``text.format``, sampling options) are
validated here; :func:`to_chat_messages` turns the input into modelplex messages (a 400 naming
a bad item), :func:`tools_of`, :func:`response_format_of` and :func:`options_of` the rest
into the request's tools, structured-output request and options. :func:`untag` takes the
union tags pydantic puts into an error's location out of it; :func:`items_of` gives a stored
message back as input items (``GET /v1/responses/{id}/input_items``).
"""

from __future__ import annotations

import base64
import json
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag

from modelplex.provider import Provider
from modelplex.types import ChatMessage, MessageRole
from modelplex_server.errors import ApiError
from modelplex_server.gateway import Gateway
from modelplex_server.images import client_image
from modelplex_server.relay import field_message
from modelplex_server.schemas import MAX_TOOLS, _Body, at_most, unserved

__all__ = ["ResponsesRequest", "ToolChoiceFunction", "items_of", "options_of",
           "refuse_unsupported", "response_format_of", "to_chat_messages", "tools_of", "untag"]

_ROLES = {"user": MessageRole.USER, "assistant": MessageRole.ASSISTANT,
          "system": MessageRole.SYSTEM, "developer": MessageRole.SYSTEM}


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


def untag(err: ApiError) -> ApiError:
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
    tools: Annotated[list[FunctionTool], at_most(MAX_TOOLS, "tools")] | None = None
    tool_choice: Literal["auto", "none", "required"] | ToolChoiceFunction | None = None
    text: TextConfig | None = None
    max_output_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stream: bool = False
    previous_response_id: str | None = None
    store: bool = True
    user: str | None = None
    metadata: dict[Annotated[str, Field(max_length=64)],
                   Annotated[str, Field(max_length=512)]] | None = Field(default=None,
                                                                        max_length=16)
    parallel_tool_calls: bool | None = None
    # refused (not silently ignored): see refuse_unsupported
    conversation: str | dict[str, Any] | None = unserved()
    prompt: dict[str, Any] | None = unserved()
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    include: list[str] | None = None  # "message.output_text.logprobs" refused, others ignored


def refuse_unsupported(body: ResponsesRequest) -> None:
    """A 400 naming a field whose request cannot be honoured here: ``conversation`` (OpenAI's
    Conversations API is not served), ``prompt`` (a stored prompt template), ``top_logprobs``
    above 0 and ``include`` of the log probabilities (providers give none)."""
    if body.conversation is not None:
        raise ApiError(400, "conversation: this server does not serve OpenAI's Conversations "
                            "API; continue a conversation with previous_response_id (stored "
                            "responses are kept)", param="conversation")
    if body.prompt is not None:
        raise ApiError(400, "prompt: stored prompt templates are not served; send the text in "
                            "instructions and input", param="prompt")
    if body.top_logprobs:
        raise ApiError(400, "top_logprobs: modelplex's providers give no log probabilities; "
                            "leave it out", param="top_logprobs")
    if "message.output_text.logprobs" in (body.include or ()):
        raise ApiError(400, "include: message.output_text.logprobs cannot be given: "
                            "modelplex's providers give no log probabilities; leave it out of "
                            "include", param="include")


# -- translation ---------------------------------------------------------------------------------
def _parts(content: str | list[TextPart | ImagePart]) -> tuple[str, tuple[str, ...]]:
    if isinstance(content, str):
        return content, ()
    texts = [p.text for p in content if isinstance(p, TextPart)]
    images = tuple(client_image(p.image_url, f"input.content.{j}.image_url")
                   for j, p in enumerate(content) if isinstance(p, ImagePart))
    return "\n".join(texts), images


def to_chat_messages(body: ResponsesRequest, history: list[ChatMessage]) -> list[ChatMessage]:
    """The new input as modelplex messages (after ``history``, whose tool calls the function
    outputs may answer); a 400 naming a bad item."""
    if isinstance(body.input, str):
        return [field_message("input", role=MessageRole.USER, content=body.input)]
    names = {call.get("id"): call.get("name") for m in history for call in m.tool_calls}
    out: list[ChatMessage] = []
    for i, item in enumerate(body.input):
        field = f"input.{i}"
        if isinstance(item, MessageItem):
            text, images = _parts(item.content)
            out.append(field_message(f"{field}.content", role=_ROLES[item.role], content=text,
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
                out.append(field_message(field, role=MessageRole.ASSISTANT, tool_calls=(call,)))
        elif isinstance(item, FunctionCallOutputItem):
            text, images = _parts(item.output)
            out.append(field_message(f"{field}.output", role=MessageRole.TOOL,
                                content=text or ("(no output)" if not images else ""),
                                images=images, tool_call_id=item.call_id,
                                name=names.get(item.call_id)))
    if not out and not history:
        raise ApiError(400, "input has no messages: give a string or at least one message "
                            "item", param="input")
    return out


def tools_of(body: ResponsesRequest) -> tuple[list[dict[str, Any]] | None, Any]:
    tools = [{"type": "function", "function": t.model_dump(exclude={"type"}, exclude_none=True)}
             for t in body.tools] if body.tools else None
    choice = body.tool_choice
    if isinstance(choice, ToolChoiceFunction):
        return tools, {"type": "function", "function": {"name": choice.name}}
    return tools, choice


def response_format_of(body: ResponsesRequest) -> Any:
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


def options_of(gateway: Gateway, provider: Provider, body: ResponsesRequest) -> dict[str, Any]:
    return gateway.known_options(provider, {
        "max_tokens": body.max_output_tokens, "temperature": body.temperature,
        "top_p": body.top_p, "user": body.user,
        "parallel_tool_calls": body.parallel_tool_calls})


# -- stored messages as items ------------------------------------------------------------------
def _image_url(image: str | bytes) -> str:
    if isinstance(image, bytes):
        return "data:image/png;base64," + base64.b64encode(image).decode()
    if image.startswith(("http://", "https://", "data:")):
        return image
    return "data:image/png;base64," + image  # kept as the base64 of a data URL


def items_of(message: ChatMessage) -> list[dict[str, Any]]:
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
