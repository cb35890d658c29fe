"""Tool calling: Python functions described to the model, and the loop that runs its calls.

A plain function (sync or async) becomes a :class:`Tool` from its type hints and docstring,
through pydantic (``TypeAdapter(func)`` gives the JSON schema of its arguments and validates
and calls it). A tool can also be given as a JSON schema, without a function: its calls are
then returned to the caller instead of run.

:func:`run_tools` is the loop behind ``ChatManager.get_response_with_meta(text, tools=...)``
and ``chat.enable_function_calling([...])``; the manager hands it a
:class:`~modelplex.exchange.Turn` and a :class:`ToolBox`. The model's calls are validated and
run (all the calls of one answer concurrently), their results or errors are sent back, until
the model answers without calling a tool or ``max_steps`` rounds of calls were made.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
from pydantic import BaseModel, TypeAdapter, ValidationError

from modelplex import telemetry
from modelplex.chunks import ToolCall
from modelplex.cost import Cost, total_cost
from modelplex.errors import ConfigurationError, UnsupportedOperationError
from modelplex.types import ChatMessage, MessageRole

if TYPE_CHECKING:
    from modelplex.exchange import Turn
    from modelplex.reply import ResponseWithMeta

__all__ = ["Tool", "ToolBox", "ToolOutput", "ToolResult", "ToolStep", "as_tool", "run_tools"]

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _docstring_parts(func: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """The summary of a docstring and its Google-style ``Args:`` descriptions."""
    doc = inspect.getdoc(func) or ""
    summary_lines: list[str] = []
    params: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    for line in doc.splitlines():
        stripped = line.strip()
        if re.fullmatch(r"(Args|Arguments|Parameters|Params):", stripped):
            section = "args"
            continue
        if re.fullmatch(r"[A-Z][A-Za-z ]*:", stripped) and not line.startswith(" "):
            section = "other"
            continue
        if section is None:
            summary_lines.append(line)
        elif section == "args" and stripped:
            match = re.match(r"^(\*{0,2}\w+)(?:\s*\([^)]*\))?\s*:\s*(.*)$", stripped)
            if match and not line.startswith("        "):
                current = match.group(1).lstrip("*")
                params[current] = match.group(2)
            elif current:
                params[current] += " " + stripped
    summary = "\n".join(summary_lines).strip().split("\n\n")[0].replace("\n", " ")
    return summary, params


@attrs.define
class Tool:
    """A tool the model may call: a name, a description, a JSON schema of its arguments.

    ``function`` runs it (sync functions run in a worker thread); a tool without one is
    described to the model but its calls are handed back to the caller.
    """

    name: str
    description: str
    parameters: dict[str, Any]
    function: Callable[..., Any] | None = None
    _adapter: Any = None

    def __attrs_post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigurationError(f"tool name {self.name!r} must be 1-64 letters, digits, "
                                     "'_' or '-'; name it with Tool.from_function(func, "
                                     "name=...)")

    @classmethod
    def from_function(cls, func: Callable[..., Any], *, name: str | None = None,
                      description: str | None = None) -> Tool:
        """A tool from a function's signature, type hints and docstring."""
        try:
            adapter: TypeAdapter[Any] = TypeAdapter(func)  # type: ignore[arg-type, unused-ignore]
            schema = adapter.json_schema()
        except Exception as err:
            raise ConfigurationError(
                f"function {getattr(func, '__name__', func)!r} cannot be a tool: {err}; give "
                "its parameters type hints pydantic understands") from None
        summary, params = _docstring_parts(func)
        schema.pop("title", None)
        for key, prop in (schema.get("properties") or {}).items():
            prop.pop("title", None)
            if key in params and "description" not in prop:
                prop["description"] = params[key]
        return cls(name=name or func.__name__, description=description or summary,
                   parameters=schema, function=func, adapter=adapter)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any],
                  function: Callable[..., Any] | None = None) -> Tool:
        """A tool from a JSON description: OpenAI's ``{"type": "function", "function": {...}}``
        or just ``{"name", "description", "parameters"}``."""
        inner = spec.get("function", spec)
        if not isinstance(inner, Mapping) or not inner.get("name"):
            raise ConfigurationError(f"tool spec {dict(spec)!r} needs a 'name' (and "
                                     "'parameters', a JSON schema of its arguments)")
        parameters = dict(inner.get("parameters") or {"type": "object", "properties": {}})
        return cls(name=str(inner["name"]), description=str(inner.get("description") or ""),
                   parameters=parameters, function=function)

    def spec(self) -> dict[str, Any]:
        """The tool as providers send it (OpenAI and Ollama share this shape)."""
        return {"type": "function", "function": {"name": self.name,
                                                 "description": self.description,
                                                 "parameters": self.parameters}}

    async def call(self, arguments: Mapping[str, Any]) -> Any:
        """Validate ``arguments`` and run the function."""
        if self.function is None:
            raise UnsupportedOperationError(f"tool {self.name!r} has no function to run")
        if self._adapter is not None:
            if inspect.iscoroutinefunction(self.function):
                return await self._adapter.validate_python(dict(arguments))
            return await asyncio.to_thread(self._adapter.validate_python, dict(arguments))
        if inspect.iscoroutinefunction(self.function):
            return await self.function(**arguments)
        return await asyncio.to_thread(self.function, **arguments)


def as_tool(obj: Any) -> Tool:
    """A :class:`Tool` from a Tool, a function, or a JSON spec dict."""
    if isinstance(obj, Tool):
        return obj
    if isinstance(obj, Mapping):
        return Tool.from_spec(obj)
    if callable(obj):
        return Tool.from_function(obj)
    raise ConfigurationError(f"{obj!r} is not a tool: give a function, a modelplex.tools.Tool "
                             "or a JSON spec {'name', 'description', 'parameters'}")


@attrs.frozen
class ToolOutput:
    """A tool's result with images (an MCP tool's image content): ``text`` is what the model
    reads; ``images`` (raw bytes) go with the tool's message to a provider that takes images
    (``Capabilities.vision``), and are left out for one that does not."""

    text: str
    images: tuple[bytes, ...] = ()


@attrs.define
class ToolResult:
    """What one call returned (``output``, sent to the model as ``content``, with ``images``
    when the tool gave a :class:`ToolOutput`) or ``error``."""

    call: ToolCall
    content: str
    output: Any = None
    error: str | None = None
    images: tuple[bytes, ...] = ()

    def message(self, vision: bool) -> ChatMessage:
        """The tool message answering the call (images only for a provider that takes them)."""
        return ChatMessage(role=MessageRole.TOOL, content=self.content,
                           tool_call_id=self.call.id, name=self.call.name,
                           images=self.images if vision else ())


@attrs.define
class ToolStep:
    """One round of the loop: the model's answer, its calls and their results."""

    response: ResponseWithMeta
    results: list[ToolResult] = attrs.Factory(list)


def _content(output: Any) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, ToolOutput):
        return output.text
    if isinstance(output, BaseModel):
        return output.model_dump_json()
    try:
        return json.dumps(output, default=str)
    except (TypeError, ValueError):
        return str(output)


def _error_text(err: BaseException) -> str:
    if isinstance(err, ValidationError):
        details = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}"
                            for e in err.errors())
        return f"invalid arguments: {details}"
    return f"{type(err).__name__}: {err}"


@attrs.define
class ToolBox:
    """The tools enabled on a conversation and how their loop runs."""

    tools: dict[str, Tool] = attrs.Factory(dict)
    max_steps: int = 5
    raise_errors: bool = False

    def add(self, tools: Iterable[Any]) -> None:
        """Add tools (a later tool replaces an earlier one of the same name)."""
        for obj in tools:
            tool = as_tool(obj)
            self.tools[tool.name] = tool

    def enable(self, tools: Iterable[Any], *, max_steps: int, raise_errors: bool) -> None:
        """Add ``tools`` and set how the loop runs (``ChatManager.enable_function_calling``)."""
        self.add(tools)
        self.max_steps = max_steps
        self.raise_errors = raise_errors

    def for_message(self, tools: Sequence[Any] | None) -> ToolBox | None:
        """The box for one message: these tools and ``tools``; ``None`` when there are none
        (the message is a plain exchange)."""
        return self.with_tools(tools) if tools or self.tools else None

    def with_tools(self, tools: Iterable[Any] | None) -> ToolBox:
        """A new box with these tools and ``tools`` (for one message), same settings."""
        box = ToolBox(tools=dict(self.tools), max_steps=self.max_steps,
                      raise_errors=self.raise_errors)
        box.add(tools or ())
        return box

    async def run_call(self, call: ToolCall) -> ToolResult:
        """Run one call; errors become the result the model sees unless ``raise_errors``."""
        tool = self.tools.get(call.name)
        try:
            if tool is None:
                raise LookupError(f"no tool named {call.name!r}; the tools are "
                                  f"{', '.join(sorted(self.tools))}")
            if set(call.arguments) == {"_raw"}:  # unreadable arguments, as providers keep them
                raise ValueError("the arguments are not a JSON object: "
                                 f"{str(call.arguments['_raw'])[:200]}")
            with telemetry.tool_span(call.name, call.id, tool.description, call.arguments):
                output = await tool.call(call.arguments)
        except Exception as err:
            if self.raise_errors:
                raise
            text = f"Error: {_error_text(err)}"
            return ToolResult(call=call, content=text, error=text)
        images = output.images if isinstance(output, ToolOutput) else ()
        return ToolResult(call=call, content=_content(output) or "(no output)", output=output,
                          images=images)


def _with_ids(calls: Sequence[ToolCall], step: int) -> list[ToolCall]:
    return [call if call.id else ToolCall(name=call.name, arguments=call.arguments,
                                          id=f"call_{step}_{i}")
            for i, call in enumerate(calls)]


async def run_tools(turn: Turn, text: str, box: ToolBox, *,
                    images: Sequence[str | bytes] | None = None) -> ResponseWithMeta:
    """Ask ``text`` in ``turn`` with ``box``'s tools and run the model's calls until it answers.

    Returns the final answer's :class:`~modelplex.reply.ResponseWithMeta`; its ``steps`` are
    the rounds of calls, its token counts and latency cover every request. Each round is one
    non-streaming request. Every message of the loop is added to the history. After
    ``box.max_steps`` rounds of calls the model is asked once more without tools, so it
    answers with what it has. ``finish_reason`` is ``"tool_calls"`` when it called a tool that
    has no function: the calls are in ``tool_calls`` for the caller.
    """
    if not turn.provider.capabilities.tools:
        raise UnsupportedOperationError(
            f"provider {turn.provider.name!r} cannot call tools (Capabilities.tools is false); "
            "use a provider that can, such as ollama or openai")
    specs = [tool.spec() for tool in box.tools.values()]
    sent: list[ChatMessage] = [turn.user_message(text, images)]
    steps: list[ToolStep] = []
    prompt_tokens = completion_tokens = 0
    latency = 0.0
    costs: list[Cost | None] = []
    meta: ResponseWithMeta | None = None
    for step in range(box.max_steps + 1):
        tools = specs if step < box.max_steps else None
        meta = await turn.complete(turn.request(sent, tools=tools or None))
        prompt_tokens += meta.prompt_tokens
        completion_tokens += meta.completion_tokens
        latency += meta.latency
        costs.append(meta.cost)
        calls = _with_ids(meta.tool_calls, step) if tools else []
        if not calls:
            if meta.content.strip():
                sent.append(ChatMessage.assistant(meta.content))
            break
        meta.tool_calls = calls
        sent.append(ChatMessage(role=MessageRole.ASSISTANT, content=meta.content,
                                tool_calls=tuple(c.to_dict() for c in calls)))
        if any(box.tools.get(c.name) is not None and box.tools[c.name].function is None
               for c in calls):
            meta.finish_reason = "tool_calls"
            break
        results = list(await asyncio.gather(*(box.run_call(c) for c in calls)))
        steps.append(ToolStep(response=meta, results=results))
        vision = turn.provider.capabilities.vision
        sent.extend(r.message(vision) for r in results)
    assert meta is not None
    turn.add(sent)
    meta.steps = steps
    meta.prompt_tokens = prompt_tokens
    meta.completion_tokens = completion_tokens
    meta.latency = latency
    meta.cost = total_cost(costs)  # every request of the loop
    return meta
