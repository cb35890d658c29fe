"""The Messages API's request: its bodies (``POST /v1/messages`` and ``count_tokens``, the
validation and the OpenAPI description) and their translation into modelplex messages and
tools, with the checks Anthropic's API makes (:mod:`modelplex_server.anthropic_api` serves
them):

* a turn of ``messages`` is ``user`` or ``assistant``: a ``system`` turn is refused
  (``messages.N.role``), the system prompt is the top-level ``system``;
* a ``tool_result`` answers a ``tool_use`` of the assistant turn just before it, and each
  ``tool_use`` of a turn is answered in the next one (``messages.N.content.M.tool_use_id``,
  ``messages.N.content``);
* with ``thinking.type`` "enabled", ``budget_tokens`` is an integer of at least 1024 and less
  than ``max_tokens`` (:func:`check_thinking`; the ``interleaved-thinking`` beta lets it
  exceed ``max_tokens``, as Anthropic does).

Each is a 400 whose message starts with the field at fault.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from modelplex.types import ChatMessage, MessageRole
from modelplex_server.errors import ApiError
from modelplex_server.images import client_image
from modelplex_server.relay import field_message
from modelplex_server.schemas import MAX_TOOLS, StopSequences, _Body, at_most, unserved

__all__ = ["MIN_THINKING_BUDGET", "CountTokensRequest", "MessagesBase", "MessagesRequest",
           "check_thinking", "to_chat_messages", "tools_of"]

_ROLES = {"user": MessageRole.USER, "assistant": MessageRole.ASSISTANT}
#: thinking.budget_tokens' least value (Anthropic's).
MIN_THINKING_BUDGET = 1024


# -- bodies ------------------------------------------------------------------------------------
class TextBlock(_Body):
    """``{"type": "text", "text": ...}``."""

    type: Literal["text"]
    text: str


class ImageSource(_Body):
    """A base64 image: ``{"type": "base64", "media_type": "image/png", "data": ...}``."""

    type: Literal["base64"]
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: str = Field(min_length=1)


class ImageBlock(_Body):
    """``{"type": "image", "source": {...}}`` (base64 only: the server fetches no URLs)."""

    type: Literal["image"]
    source: ImageSource


class ToolUseBlock(_Body):
    """A tool call of an assistant turn: ``{"type": "tool_use", "id", "name", "input"}``."""

    type: Literal["tool_use"]
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: dict[str, Any]


class ToolResultBlock(_Body):
    """A tool's answer in a user turn: ``{"type": "tool_result", "tool_use_id", "content"}``."""

    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1)
    content: str | list[Annotated[TextBlock | ImageBlock, Field(discriminator="type")]] = ""
    is_error: bool | None = None


class ThinkingBlock(_Body):
    """A thinking block echoed back in the history (kept out of the prompt)."""

    type: Literal["thinking", "redacted_thinking"]


ContentBlock = Annotated[TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock,
                         Field(discriminator="type")]


class MessageParam(_Body):
    """One turn: ``{"role": "user" | "assistant", "content": str | [blocks]}`` (the system
    prompt is the request's ``system``, as Anthropic's API has it)."""

    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]

    @field_validator("role", mode="before")
    @classmethod
    def _no_system_turns(cls, role: Any) -> Any:
        if role == "system":
            raise PydanticCustomError(
                "system_turn", "a turn of messages is 'user' or 'assistant', never 'system': "
                "give the system prompt as the request's top-level 'system' field")
        return role


class ToolDef(_Body):
    """A tool the model may call: ``{"name", "description", "input_schema"}`` (``type``
    ``custom`` or none: Anthropic's own tool types, such as ``web_search_20250305``, are
    refused by name)."""

    type: Literal["custom"] | None = None
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,128}$")
    description: str | None = None
    input_schema: dict[str, Any]

    @model_validator(mode="before")
    @classmethod
    def _custom_only(cls, value: Any) -> Any:
        kind = value.get("type") if isinstance(value, dict) else None
        if kind not in (None, "custom"):
            raise PydanticCustomError(
                "tool_type", "tool type {kind} is one of Anthropic's own tools, which this "
                "server does not run: give your own tools (name, description, input_schema)",
                {"kind": repr(kind)[:80]})
        return value


class ToolChoice(_Body):
    """``{"type": "auto" | "any" | "none"}`` or ``{"type": "tool", "name": ...}``."""

    type: Literal["auto", "any", "none", "tool"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Metadata(_Body):
    """``{"user_id": ...}``."""

    user_id: str | None = None


class OutputFormat(_Body):
    """``{"type": "json_schema", "schema": {...}}``: answers that follow the schema."""

    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(_Body):
    """``output_config``: its ``format`` is structured output (``effort`` is ignored)."""

    format: OutputFormat | None = None


class Thinking(_Body):
    """``{"type": "enabled", "budget_tokens": N}``, ``{"type": "adaptive"}`` or
    ``{"type": "disabled"}``: whether the answer shows the model's reasoning."""

    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = None


class MessagesBase(_Body):
    """What ``/v1/messages`` and ``count_tokens`` both take."""

    model: str = Field(min_length=1)
    messages: list[MessageParam] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: Annotated[list[ToolDef], at_most(MAX_TOOLS, "tools")] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    mcp_servers: list[Any] | None = unserved()  # Anthropic's MCP connector

    @field_validator("mcp_servers")
    @classmethod
    def _no_connector(cls, servers: list[Any] | None) -> list[Any] | None:
        if servers:
            raise PydanticCustomError(
                "mcp_connector", "Anthropic's MCP connector is not served here: give the "
                "tools as tools, or serve a named model whose mcp = [...] lists the MCP "
                "servers (its tools run on this server)")
        return servers


class MessagesRequest(MessagesBase):
    """``POST /v1/messages``. ``max_tokens`` is required, as Anthropic requires it."""

    max_tokens: int = Field(gt=0)
    stop_sequences: StopSequences | None = None  # at most 16, each of at most 500 characters
    stream: bool = False
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, gt=0)
    metadata: Metadata | None = None
    output_config: OutputConfig | None = None

    @property
    def shows_thinking(self) -> bool:
        """Whether the model's reasoning is answered as ``thinking`` blocks."""
        return self.thinking is not None and self.thinking.type != "disabled"

    def response_format(self) -> dict[str, Any] | None:
        """The structured-output request of ``output_config.format``."""
        fmt = self.output_config.format if self.output_config else None
        if fmt is None:
            return None
        return {"type": "json_schema", "json_schema": {"name": "response",
                                                       "schema": fmt.schema_}}


class CountTokensRequest(MessagesBase):
    """``POST /v1/messages/count_tokens``: what ``/v1/messages`` takes, without
    ``max_tokens``."""


def check_thinking(thinking: Thinking | None, max_tokens: int | None, *,
                   interleaved: bool = False) -> None:
    """A 400 naming ``thinking.budget_tokens`` unless, with ``thinking.type`` "enabled", it
    is an integer of at least :data:`MIN_THINKING_BUDGET` and less than ``max_tokens`` (None
    for ``count_tokens``, which has none; ``interleaved``: the ``interleaved-thinking`` beta,
    under which the budget may exceed ``max_tokens``), as Anthropic's API requires."""
    if thinking is None or thinking.type != "enabled":
        return
    field, budget = "thinking.budget_tokens", thinking.budget_tokens
    if budget is None:
        raise ApiError(400, f"{field}: required when thinking.type is 'enabled': give an "
                            f"integer of at least {MIN_THINKING_BUDGET}", param=field)
    if budget < MIN_THINKING_BUDGET:
        raise ApiError(400, f"{field}: must be at least {MIN_THINKING_BUDGET} (got "
                            f"{budget}): raise it, or set thinking.type to 'disabled'",
                       param=field)
    if max_tokens is not None and budget >= max_tokens and not interleaved:
        raise ApiError(400, f"{field}: must be less than max_tokens ({max_tokens}) (got "
                            f"{budget}): raise max_tokens or lower the budget", param=field)


# -- translation ---------------------------------------------------------------------------------
def _system_text(system: str | list[TextBlock] | None) -> str:
    if system is None or isinstance(system, str):
        return system or ""
    return "\n".join(block.text for block in system)


def _result_text(block: ToolResultBlock, field: str) -> tuple[str, tuple[str, ...]]:
    images: tuple[str, ...]
    if isinstance(block.content, str):
        text, images = block.content, ()
    else:
        text = "\n".join(b.text for b in block.content if isinstance(b, TextBlock))
        images = tuple(client_image(b.source.data, f"{field}.content.{k}.source.data",
                                    b.source.media_type)
                       for k, b in enumerate(block.content) if isinstance(b, ImageBlock))
    if block.is_error:
        text = f"Error: {text}"
    return text or ("(no output)" if not images else ""), images


def _check_has_a_call(block: ToolResultBlock, calls: dict[str, str], field: str,
                   turn: int) -> None:
    """A 400 naming ``field`` when the tool_result answers no tool_use of the turn before."""
    if block.tool_use_id in calls:
        return
    if calls:
        detail = f"none of the tool_use ids of messages.{turn - 1} ({', '.join(calls)[:200]})"
    elif turn:
        detail = f"no tool_use: messages.{turn - 1} calls no tool"
    else:
        detail = "no tool_use: it is in the first turn"
    raise ApiError(400, f"{field}: {block.tool_use_id[:100]!r} matches {detail}; each "
                        "tool_result must answer a tool_use block of the assistant "
                        "turn just before it", param=field)


def _check_calls_answered(calls: dict[str, str], turn: MessageParam, field: str) -> None:
    """A 400 naming ``field`` when ``turn`` leaves a tool_use of the turn before (``calls``)
    without its tool_result."""
    answered = {b.tool_use_id for b in turn.content if isinstance(b, ToolResultBlock)} \
        if isinstance(turn.content, list) else set()
    if missing := [c for c in calls if c not in answered]:
        raise ApiError(400, f"{field}: tool_use ids of the turn before have no tool_result "
                            f"here: {', '.join(missing)[:200]}; each tool_use block needs its "
                            "tool_result block in the next (user) turn", param=field)


def to_chat_messages(body: MessagesBase) -> list[ChatMessage]:
    """The request's system prompt and turns as modelplex messages (a 400 naming a bad one)."""
    out: list[ChatMessage] = []
    system = _system_text(body.system)
    if system.strip():
        out.append(field_message("system", role=MessageRole.SYSTEM, content=system))
    names: dict[str, str] = {}  # the previous turn's tool_use ids -> tool names
    for i, turn in enumerate(body.messages):
        field = f"messages.{i}.content"
        role = _ROLES[turn.role]
        if isinstance(turn.content, str):
            _check_calls_answered(names, turn, field)
            out.append(field_message(field, role=role, content=turn.content))
            names = {}
            continue
        texts: list[str] = []
        images: list[str] = []
        calls: list[dict[str, Any]] = []
        for j, block in enumerate(turn.content):
            if isinstance(block, TextBlock):
                texts.append(block.text)
            elif isinstance(block, ImageBlock):
                images.append(client_image(block.source.data, f"{field}.{j}.source.data",
                                           block.source.media_type))
            elif isinstance(block, ToolUseBlock):
                if role is not MessageRole.ASSISTANT:
                    raise ApiError(400, "tool_use blocks belong in assistant turns",
                                   param=f"{field}.{j}")
                calls.append({"id": block.id, "name": block.name, "arguments": block.input})
            elif isinstance(block, ToolResultBlock):
                if role is not MessageRole.USER:
                    raise ApiError(400, "tool_result blocks belong in user turns",
                                   param=f"{field}.{j}")
                _check_has_a_call(block, names, f"{field}.{j}.tool_use_id", i)
                text, result_images = _result_text(block, f"{field}.{j}")
                out.append(field_message(field, role=MessageRole.TOOL, content=text,
                                    images=result_images, tool_call_id=block.tool_use_id,
                                    name=names.get(block.tool_use_id)))
        _check_calls_answered(names, turn, field)  # after the tool_results answering no tool_use
        names = {c["id"]: c["name"] for c in calls}
        text = "\n".join(texts)
        if text.strip() or images or calls:
            out.append(field_message(field, role=role, content=text, images=tuple(images),
                                tool_calls=tuple(calls)))
    if len(out) == (1 if system.strip() else 0):
        raise ApiError(400, "messages have no content: give at least one text, image or "
                            "tool_result block", param="messages")
    return out


def tools_of(body: MessagesBase) -> tuple[list[dict[str, Any]] | None, Any]:
    """The request's ``tools`` as function tools and its ``tool_choice`` as OpenAI's."""
    tools = [{"type": "function", "function": {
        "name": t.name, "parameters": t.input_schema,
        **({"description": t.description} if t.description else {})}}
        for t in body.tools] if body.tools else None
    choice = body.tool_choice
    if choice is None:
        return tools, None
    if choice.type == "tool":
        if not choice.name:
            raise ApiError(400, "tool_choice of type 'tool' needs the tool's name",
                           param="tool_choice.name")
        return tools, {"type": "function", "function": {"name": choice.name}}
    return tools, {"auto": "auto", "any": "required", "none": "none"}[choice.type]
