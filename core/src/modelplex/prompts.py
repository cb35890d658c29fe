"""Prompt templates: named, reusable prompts registered through ``register_prompt_templates``.

A template is a pydantic model: its fields are what the user fills in, :meth:`render` makes
the prompt, and :meth:`output_parser` says how the answer is read. A template with a parser
is run like :meth:`ChatManager.get_structured <modelplex.manager.ChatManager.get_structured>`
(native mode where the provider supports it, re-ask on a bad answer); one without is read by
:meth:`parse`.

Built in: ``chain_of_thought`` (reasoning and solution), ``few_shot`` (examples in, the same
format out) and ``extract`` (fields of a text into a pydantic model or JSON schema).
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from modelplex.errors import ParseError
from modelplex.parsers import JsonSchemaParser, Parser, ParseResult, PydanticParser, resolve_output

__all__ = ["ChainOfThought", "ChainOfThoughtParser", "ChainOfThoughtPrompt", "ExtractionPrompt",
           "FewShotExample", "FewShotPrompt", "PromptTemplate", "describe_fields"]


class PromptTemplate(BaseModel):
    """Base class of prompt templates: validated fields in, prompt text out.

    Class attributes:
        name: the registry name (``chat.execute_chain("name", ...)``).
        output: how the answer is read: a parser name, a :class:`~modelplex.parsers.Parser`,
            a pydantic model class or a JSON schema; ``None`` (the default) means
            :meth:`parse` reads the text. Override :meth:`output_parser` when it depends on
            the fields.
        prompt_field: the field the CLI fills with its PROMPT argument.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    name: ClassVar[str]
    output: ClassVar[Any] = None
    prompt_field: ClassVar[str | None] = None

    def render(self) -> str:
        """The prompt text to send."""
        raise NotImplementedError

    async def arender(self, chat: Any = None) -> str:
        """The prompt text, for templates rendered by something else (an MCP server:
        ``mcp:SERVER/PROMPT``); ``chat`` is the conversation running it. By default
        :meth:`render`."""
        return self.render()

    def output_parser(self) -> Parser | None:
        """The parser of the answer, or ``None`` to read it with :meth:`parse`."""
        if self.output is None:
            return None
        return resolve_output(self.output)

    def parse(self, text: str) -> Any:
        """Read the model's answer when there is no output parser; by default the text."""
        return text


class ChainOfThought(BaseModel):
    """The answer of the chain-of-thought template."""

    reasoning: str = Field(description="The step-by-step reasoning.")
    solution: str = Field(description="The final answer alone.")


class ChainOfThoughtParser(PydanticParser):
    """Reads a :class:`ChainOfThought` from JSON, or from text with a ``SOLUTION:`` line."""

    name: ClassVar[str] = "chain_of_thought"

    def __init__(self) -> None:
        super().__init__(ChainOfThought)

    def parse(self, response: Any) -> ParseResult:
        """JSON with ``reasoning`` and ``solution``; else the text split at ``SOLUTION:``."""
        try:
            return super().parse(response)
        except ParseError:
            text = response if isinstance(response, str) else str(response)
            head, sep, tail = text.rpartition("SOLUTION:")
            if not sep or not tail.strip():
                raise
            return ParseResult(ChainOfThought(reasoning=head.strip(), solution=tail.strip()),
                               text)


class ChainOfThoughtPrompt(PromptTemplate):
    """Ask for step-by-step reasoning, then the final answer: ``reasoning`` and ``solution``."""

    name: ClassVar[str] = "chain_of_thought"
    output: ClassVar[Any] = ChainOfThought
    prompt_field: ClassVar[str | None] = "task"

    task: str = Field(min_length=1, description="What to solve.")
    steps: list[str] = Field(default_factory=list, description="Steps to follow, in order.")

    @field_validator("steps", mode="before")
    @classmethod
    def _one_step(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    def output_parser(self) -> Parser:
        """A :class:`ChainOfThoughtParser`."""
        return ChainOfThoughtParser()

    def render(self) -> str:
        """The task, the numbered steps and the answer format."""
        lines = [f"Task: {self.task}", "", "Think it through step by step."]
        for number, step in enumerate(self.steps, 1):
            lines.append(f"{number}. {step}")
        lines += ["", "Put your reasoning in 'reasoning' and the final answer alone in "
                  "'solution'."]
        return "\n".join(lines)

    def parse(self, text: str) -> dict[str, str]:
        """Split a plain-text answer at ``SOLUTION:`` into ``reasoning`` and ``solution``."""
        head, sep, tail = text.rpartition("SOLUTION:")
        if not sep:
            return {"reasoning": text.strip(), "solution": ""}
        return {"reasoning": head.strip(), "solution": tail.strip()}


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else "string"


class FewShotExample(BaseModel):
    """One example: an input and the output wanted for it (text or a JSON object)."""

    input: str
    output: str | dict[str, Any] | list[Any]


class FewShotPrompt(PromptTemplate):
    """Show examples, then ask for the output of a new input in the same format.

    When the examples' outputs are JSON objects, the answer is a JSON object with their keys
    (validated, re-asked); when they are text, the answer is the text.
    """

    name: ClassVar[str] = "few_shot"
    prompt_field: ClassVar[str | None] = "input"

    input: str = Field(min_length=1, description="The new input.")
    examples: list[FewShotExample] = Field(min_length=1, description="Input/output pairs.")
    instruction: str | None = Field(default=None, description="What to do, said first.")

    def _is_json(self) -> bool:
        return all(isinstance(e.output, dict) for e in self.examples)

    def render(self) -> str:
        """The instruction, the examples, and the new input."""
        def show(value: Any) -> str:
            return value if isinstance(value, str) else json.dumps(value)

        lines = [self.instruction, ""] if self.instruction else []
        for example in self.examples:
            lines += [f"Input: {example.input}", f"Output: {show(example.output)}", ""]
        lines += [f"Input: {self.input}", "Output:"]
        return "\n".join(lines)

    def output_parser(self) -> Parser | None:
        """A JSON object with the examples' keys and value types, when the examples are
        objects."""
        if not self._is_json():
            return None
        types: dict[str, set[str]] = {}
        for example in self.examples:
            assert isinstance(example.output, dict)
            for key, value in example.output.items():
                types.setdefault(key, set()).add(_json_type(value))
        props = {key: {"type": kinds.pop()} if len(kinds) == 1 else {}
                 for key, kinds in types.items()}
        return JsonSchemaParser({"type": "object", "properties": props,
                                 "required": list(types)}, name="answer")

    def parse(self, text: str) -> str:
        """The text answer, without a leading ``Output:``."""
        return text.strip().removeprefix("Output:").strip()


class ExtractionPrompt(PromptTemplate):
    """Extract the fields of ``schema`` (a pydantic model class or a JSON schema) from a text."""

    name: ClassVar[str] = "extract"
    prompt_field: ClassVar[str | None] = "text"

    text: str = Field(min_length=1, description="The text to read.")
    schema_: Any = Field(alias="schema", description="A pydantic model class or JSON schema.")
    instruction: str | None = Field(default=None, description="Extra guidance.")

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True,
                              populate_by_name=True)

    @field_validator("schema_")
    @classmethod
    def _schema(cls, value: Any) -> Any:
        if isinstance(value, dict) or (isinstance(value, type) and issubclass(value, BaseModel)):
            return value
        raise ValueError("must be a pydantic model class or a JSON schema dict")

    def render(self) -> str:
        """The text and what to extract from it."""
        lines = ["Extract the information from the text below. Use only what the text says."]
        if self.instruction:
            lines.append(self.instruction)
        lines += ["", "Text:", '"""', self.text, '"""']
        return "\n".join(lines)

    def output_parser(self) -> Parser:
        """The schema's parser."""
        if isinstance(self.schema_, type):
            return PydanticParser(self.schema_)
        return resolve_output(self.schema_)


def describe_fields(template: type[PromptTemplate]) -> list[dict[str, Any]]:
    """The fields of a template: name, type, whether required, default and description."""
    out = []
    for name, info in template.model_fields.items():
        annotation = info.annotation
        kind = getattr(annotation, "__name__", None) or str(annotation)
        if "[" in str(annotation) or "|" in str(annotation):
            kind = re.sub(r"\b(?:\w+\.)+(\w+)", r"\1", str(annotation))
        out.append({"name": info.alias or name, "type": kind, "required": info.is_required(),
                    "default": None if info.is_required() else repr(info.get_default(
                        call_default_factory=True)),
                    "description": info.description or ""})
    return out
