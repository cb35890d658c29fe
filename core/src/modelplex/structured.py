"""Structured output: an answer validated into a parser's structure, re-asking on failure.

Used through :meth:`ChatManager.get_structured <modelplex.manager.ChatManager.get_structured>`,
:meth:`~modelplex.manager.ChatManager.stream_structured` and
:meth:`~modelplex.manager.ChatManager.execute_chain`, which hand the functions here a
:class:`~modelplex.exchange.Turn`. Three modes:

``native``    the provider constrains decoding to the JSON schema (Ollama ``format``, OpenAI
              ``response_format``, a llama.cpp grammar): chosen when the provider declares
              ``Capabilities.json_schema`` and the parser has an object schema.
``tool``      the schema is a tool the model is made to call; its arguments are the answer
              (providers with ``Capabilities.tools``).
``prompted``  the parser's format instruction is added to the message and the answer is read
              tolerantly.

Whatever the mode, an answer that does not parse or validate is sent back with the parser's
error, up to ``max_retries`` times; the last failure raises :class:`ParseError` with every
raw answer.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import attrs
from pydantic import ValidationError

from modelplex import telemetry
from modelplex.errors import ConfigurationError, ParseError, did_you_mean
from modelplex.exchange import Turn
from modelplex.parsers import Parser, resolve_output
from modelplex.plugins import get_plugins
from modelplex.prompts import PromptTemplate, describe_fields
from modelplex.reply import ResponseWithMeta
from modelplex.types import ChatMessage

if TYPE_CHECKING:
    from modelplex.chunks import StreamChunk
    from modelplex.plugins import Plugins
    from modelplex.provider import ChatRequest, Provider

__all__ = ["MODES", "StructuredResult", "StructuredUpdate", "chain_result", "choose_mode",
           "get_structured", "resolve_output", "resolve_template", "stream_structured"]

Mode = Literal["native", "tool", "prompted"]
MODES: tuple[str, ...] = ("native", "tool", "prompted")


@attrs.define
class StructuredResult:
    """A validated answer: ``value``, the final response ``meta``, and how it was obtained.

    ``attempts`` counts the requests made (1 when the first answer was good), ``answers``
    holds every raw answer, and the token counts add up every attempt.
    """

    value: Any
    meta: ResponseWithMeta
    mode: str = "prompted"
    attempts: int = 1
    answers: list[str] = attrs.Factory(list)
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def parsed(self) -> Any:
        """The value (alias used by prompt templates)."""
        return self.value

    def _field(self, key: str) -> str | None:
        value = self.value
        found = value.get(key) if isinstance(value, Mapping) else getattr(value, key, None)
        return None if found is None else str(found)

    @property
    def reasoning(self) -> str:
        """The ``reasoning`` field of the value, when it has one (else the whole answer)."""
        found = self._field("reasoning")
        return found if found is not None else self.meta.content

    @property
    def solution(self) -> str:
        """The ``solution`` field of the value, when it has one (else the whole answer)."""
        found = self._field("solution")
        return found if found is not None else self.meta.content


@attrs.define
class StructuredUpdate:
    """One step of :func:`stream_structured`.

    While the answer streams, ``value`` is the JSON parsed so far (a dict or list, unvalidated,
    strings possibly cut) and ``done`` is false; the last update has ``done`` true, the
    validated ``value`` and the ``result``. ``attempt`` counts from 1 and grows on re-ask.
    """

    value: Any
    done: bool = False
    attempt: int = 1
    result: StructuredResult | None = None


def choose_mode(parser: Parser, provider: Provider, mode: str | None = None) -> str:
    """The mode for ``parser`` on ``provider``: ``mode`` if given (and possible), else the best.

    Native needs ``Capabilities.json_schema`` (or ``json_mode`` for a schema-less JSON
    parser) and an object schema; tool needs ``Capabilities.tools`` and an object schema.
    """
    caps = provider.capabilities
    schema = parser.json_schema
    is_object = schema is not None and schema.get("type") == "object"
    if mode is not None:
        if mode not in MODES:
            raise ConfigurationError(f"mode must be one of {', '.join(MODES)} (got {mode!r})")
        if mode != "prompted" and not is_object:
            raise ConfigurationError(f"mode {mode!r} needs a parser whose answer is a JSON "
                                     f"object; {type(parser).__name__} has no object schema: "
                                     "use mode='prompted'")
        if mode == "native" and not (caps.json_schema or caps.json_mode):
            raise ConfigurationError(f"provider {provider.name!r} cannot constrain its answers "
                                     "to JSON (Capabilities.json_schema is false): use "
                                     "mode='tool' or 'prompted'")
        if mode == "tool" and not caps.tools:
            raise ConfigurationError(f"provider {provider.name!r} cannot call tools "
                                     "(Capabilities.tools is false): use mode='native' or "
                                     "'prompted'")
        return mode
    if is_object and caps.json_schema:
        return "native"
    if is_object and caps.tools:
        return "tool"
    return "prompted"


def _reask_text(error: str, parser: Parser) -> str:
    instruction = parser.format_instruction
    return (f"Your answer could not be used: {error.rstrip('.')}. Answer again"
            + (f". {instruction}" if instruction else " in the required format."))


class _Attempts:
    """The state of one structured request across its attempts."""

    def __init__(self, turn: Turn, parser: Parser, mode: str, text: str,
                 images: Sequence[str | bytes] | None) -> None:
        self.turn = turn
        self.parser = parser
        self.mode = mode
        self.text = text
        instruction = parser.format_instruction
        content = f"{text}\n\n{instruction}" if instruction else text
        self.first = turn.user_message(content, images)
        self.sent: list[ChatMessage] = [self.first]
        self.answers: list[str] = []
        self.errors: list[str] = []
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def request(self) -> ChatRequest:
        schema = self.parser.json_schema
        name = self.parser.schema_name
        if self.mode == "native":
            caps = self.turn.provider.capabilities
            fmt: dict[str, Any] = ({"type": "json_schema", "name": name, "schema": schema}
                                   if caps.json_schema else {"type": "json"})
            return self.turn.request(self.sent, response_format=fmt)
        if self.mode == "tool":
            tool = {"type": "function", "function": {
                "name": name, "description": "Give the answer in this structure.",
                "parameters": schema}}
            return self.turn.request(self.sent, tools=[tool], tool_choice={
                "type": "function", "function": {"name": name}})
        return self.turn.request(self.sent)

    def raw_answer(self, meta: ResponseWithMeta) -> str:
        if self.mode == "tool" and meta.tool_calls:
            arguments = meta.tool_calls[0].arguments
            if set(arguments) == {"_raw"}:  # not a JSON object (or too deep): as written
                return str(arguments["_raw"])
            return json.dumps(arguments)
        return meta.content

    def check(self, meta: ResponseWithMeta) -> Any:
        """The parsed value, or ``ParseError`` after noting the failure for the re-ask."""
        raw = self.raw_answer(meta)
        self.answers.append(raw)
        self.prompt_tokens += meta.prompt_tokens
        self.completion_tokens += meta.completion_tokens
        try:
            return self.parser.parse(raw).parsed
        except ParseError as err:
            self.errors.append(str(err))
            self.sent.append(ChatMessage.assistant(raw.strip() or "(no answer)"))
            self.sent.append(ChatMessage.user(_reask_text(str(err), self.parser)))
            raise

    def failure(self) -> ParseError:
        tries = len(self.answers)
        return ParseError(
            f"no valid answer after {tries} attempt{'s' if tries > 1 else ''} "
            f"({self.mode} mode): {self.errors[-1]}",
            raw=self.answers[-1], answers=self.answers, errors=self.errors)

    def finish(self, value: Any, meta: ResponseWithMeta, keep_attempts: bool) -> StructuredResult:
        raw = self.answers[-1]
        answer = ChatMessage.assistant(raw.strip() or "(no answer)")
        if keep_attempts:
            self.turn.add([*self.sent, answer])
        else:
            self.turn.add([self.turn.user_message(self.text, self.first.images), answer])
        return StructuredResult(value=value, meta=meta, mode=self.mode,
                                attempts=len(self.answers), answers=list(self.answers),
                                prompt_tokens=self.prompt_tokens,
                                completion_tokens=self.completion_tokens)


def _check_retries(max_retries: int) -> None:
    if not isinstance(max_retries, int) or max_retries < 0:
        raise ConfigurationError(f"max_retries must be an integer >= 0 (got {max_retries!r})")


def _prepare(turn: Turn, text: str, output: Any, mode: str | None,
             images: Sequence[str | bytes] | None, max_retries: int,
             plugins: Plugins | None) -> _Attempts:
    _check_retries(max_retries)
    parser = resolve_output(output, plugins)
    return _Attempts(turn, parser, choose_mode(parser, turn.provider, mode), text, images)


async def get_structured(turn: Turn, text: str, output: Any, *, mode: str | None = None,
                         max_retries: int = 2, images: Sequence[str | bytes] | None = None,
                         keep_attempts: bool = False,
                         plugins: Plugins | None = None) -> StructuredResult:
    """Ask ``text`` in ``turn`` and return the answer validated by ``output``; see the module
    docs. Each attempt is one non-streaming request; the history gets the exchange when an
    answer is valid."""
    state = _prepare(turn, text, output, mode, images, max_retries, plugins)
    for attempt in range(1, max_retries + 2):
        with telemetry.step_span("modelplex.structured_output", attempt=attempt) as span:
            meta = await turn.complete(state.request())
            try:
                value = state.check(meta)
            except ParseError:
                telemetry.note(span, "modelplex.valid", False)  # a re-ask follows
                continue
            return state.finish(value, meta, keep_attempts)
    raise state.failure()


async def stream_structured(turn: Turn, text: str, output: Any, *, mode: str | None = None,
                            max_retries: int = 2, images: Sequence[str | bytes] | None = None,
                            keep_attempts: bool = False, plugins: Plugins | None = None
                            ) -> AsyncGenerator[StructuredUpdate, None]:
    """Like :func:`get_structured`, yielding the partial value as the JSON grows.

    A partial update is yielded each time the parsed value changes; the last update is the
    validated one (``done=True``). On re-ask the partial values start again with
    ``attempt`` one higher.
    """
    state = _prepare(turn, text, output, mode, images, max_retries, plugins)
    parser = state.parser
    for attempt in range(1, max_retries + 2):
        request = state.request()
        # one span per attempt, as get_structured's; current only while the model call
        # starts (its span nests under it), never across a yield to the reader
        span = telemetry.start_step("modelplex.structured_output", attempt=attempt,
                                    streamed=True)
        err: BaseException | None = None
        try:
            start = time.perf_counter()
            first: float | None = None
            chunks: list[StreamChunk] = []
            parts: list[str] = []
            last: Any = None
            async with contextlib.aclosing(turn.stream(request)) as stream:
                with telemetry.current(span):
                    chunk = await anext(stream, None)
                while chunk is not None:
                    chunks.append(chunk)
                    if chunk.content:
                        if first is None:
                            first = time.perf_counter() - start
                        parts.append(chunk.content)
                        value = parser.partial("".join(parts))
                        if value is not None and value != last:
                            last = value
                            yield StructuredUpdate(value=value, attempt=attempt)
                    chunk = await anext(stream, None)
            meta = turn.meta(chunks, time.perf_counter() - start, first)
            try:
                value = state.check(meta)
            except ParseError:
                telemetry.note(span, "modelplex.valid", False)  # a re-ask follows
                continue
            result = state.finish(value, meta, keep_attempts)
        except Exception as error:
            err = error
            raise
        finally:
            telemetry.end_step(span, err)
        yield StructuredUpdate(value=value, done=True, attempt=attempt, result=result)
        return
    raise state.failure()


def resolve_template(prompt: Any, fields: Mapping[str, Any],
                     plugins: Plugins | None = None) -> PromptTemplate:
    """A template instance from an instance, a template class or a registered name + fields
    (``mcp:SERVER/PROMPT``: an MCP server's prompt, :mod:`modelplex.mcp.prompts`)."""
    if isinstance(prompt, PromptTemplate):
        if fields:
            raise ConfigurationError("give the template's fields either in the instance or "
                                     f"as keywords, not both (got {sorted(fields)})")
        return prompt
    if isinstance(prompt, str) and prompt.startswith("mcp:"):  # an MCP server's prompt
        from modelplex.mcp.prompts import mcp_template

        return mcp_template(prompt, dict(fields))
    if isinstance(prompt, str):
        cls = (plugins or get_plugins()).get("prompt_templates", prompt)
    elif isinstance(prompt, type) and issubclass(prompt, PromptTemplate):
        cls = prompt
    else:
        raise ConfigurationError(f"{prompt!r} is not a prompt template: give a template name "
                                 "(see `modelplex templates`), class or instance")
    try:
        return cls(**fields)  # type: ignore[no-any-return]
    except ValidationError as err:
        name = getattr(cls, "name", cls.__name__)
        problems = "; ".join(
            f"field {'.'.join(map(str, e['loc'])) or '?'!r}: " + (
                f"unknown field{did_you_mean(e['loc'][-1], cls.model_fields)}"
                if e["type"] == "extra_forbidden" and e["loc"] else e["msg"])
            for e in err.errors())
        known = ", ".join(f"{f['name']}{'' if f['required'] else '?'}"
                          for f in describe_fields(cls))
        raise ConfigurationError(f"template {name!r}: {problems} (its fields: {known})"
                                 ) from None


def chain_result(template: PromptTemplate, meta: ResponseWithMeta) -> StructuredResult:
    """The result of a template without a parser: its :meth:`~PromptTemplate.parse` of the
    answer."""
    return StructuredResult(value=template.parse(meta.content), meta=meta, mode="prompted",
                            answers=[meta.content], prompt_tokens=meta.prompt_tokens,
                            completion_tokens=meta.completion_tokens)
