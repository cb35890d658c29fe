"""Structured-output parsers, registered through ``register_parsers``."""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar

from modelplex.errors import ParseError

__all__ = ["JsonDictParser", "ParseResult", "Parser"]


class ParseResult:
    """A parsed answer: ``parsed`` (the structure) and ``raw`` (the text it came from)."""

    __slots__ = ("parsed", "raw")

    def __init__(self, parsed: Any, raw: str) -> None:
        self.parsed = parsed
        self.raw = raw

    def __repr__(self) -> str:
        return f"ParseResult(parsed={self.parsed!r})"


class Parser:
    """Base class of parsers: an instruction to add to the prompt, and ``parse``."""

    name: ClassVar[str]

    @property
    def format_instruction(self) -> str:
        """Text to append to the prompt so the model answers in the expected form."""
        return ""

    def parse(self, response: Any) -> ParseResult:
        """Parse a response (text, or any object with ``.content`` / ``.text``)."""
        raise NotImplementedError


def _text_of(response: Any) -> str:
    if isinstance(response, str):
        return response
    for attr in ("content", "text"):
        value = getattr(response, attr, None)
        if isinstance(value, str):
            return value
    raise ParseError(f"cannot read text from {type(response).__name__}")


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")


class JsonDictParser(Parser):
    """Parse a JSON object from a model's answer and check its required keys.

    Tolerates a ```json fence or none, prose around the object, and trailing commas.
    """

    name: ClassVar[str] = "json_dict"

    def __init__(self, required_keys: list[str] | None = None) -> None:
        self.required_keys = list(required_keys or [])

    @property
    def format_instruction(self) -> str:
        """Ask for a JSON object with the required keys."""
        keys = ", ".join(repr(k) for k in self.required_keys)
        text = "Respond with a JSON object only"
        return text + (f", with the keys {keys}." if keys else ".")

    def parse(self, response: Any) -> ParseResult:
        """The first JSON object in the answer; :class:`ParseError` if none or keys missing."""
        text = _text_of(response)
        candidates = [m.group(1) for m in _FENCE.finditer(text)]
        start, end = text.find("{"), text.rfind("}")
        if start != -1 and end > start:
            candidates.append(text[start:end + 1])
        for candidate in candidates:
            for attempt in (candidate, _TRAILING_COMMA.sub(r"\1", candidate)):
                try:
                    value = json.loads(attempt)
                except ValueError:
                    continue
                if isinstance(value, dict):
                    missing = [k for k in self.required_keys if k not in value]
                    if missing:
                        raise ParseError(f"the JSON object lacks required keys: {missing}",
                                         raw=text)
                    return ParseResult(value, text)
        raise ParseError("no JSON object found in the answer", raw=text)
