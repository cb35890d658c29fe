"""Structured-output parsers, registered through ``register_parsers``.

A parser tells the model what to write (:attr:`Parser.format_instruction`), gives the JSON
schema a provider can enforce (:attr:`Parser.json_schema`, ``None`` when it cannot be put as a
schema) and reads the answer (:meth:`Parser.parse`, raising :class:`ParseError` with a message
the model can act on when it is re-asked). :meth:`Parser.partial` reads an unfinished answer
while it streams.

JSON is read tolerantly: with or without a ```json fence, with prose around it, and in the
JSON5 dialect small models often write (single quotes, unquoted keys, comments, trailing
commas; read by the ``json5`` package) or as a Python literal (``True``, ``None``).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import from_json

from modelplex.errors import ConfigurationError, ParseError, PluginError
from modelplex.parsers._schemacheck import check_schema
from modelplex.plugins import Plugins, get_plugins

__all__ = [
    "MAX_JSON_DEPTH",
    "CodeBlockParser",
    "JsonDictParser",
    "JsonSchemaParser",
    "ListParser",
    "ParseResult",
    "Parser",
    "PydanticParser",
    "describe_schema",
    "extract_json",
    "json_nesting",
    "partial_json",
    "resolve_output",
    "tool_arguments",
]


class ParseResult:
    """A parsed answer: ``parsed`` (the structure) and ``raw`` (the text it came from)."""

    __slots__ = ("parsed", "raw")

    def __init__(self, parsed: Any, raw: str) -> None:
        self.parsed = parsed
        self.raw = raw

    def __repr__(self) -> str:
        return f"ParseResult(parsed={self.parsed!r})"


class Parser:
    """Base class of parsers: an instruction to add to the prompt, a schema, and ``parse``.

    Subclasses set ``name`` (the registry name) and implement :meth:`parse`; those whose
    answer is JSON return a JSON schema from :attr:`json_schema` so providers that constrain
    decoding can enforce it (native mode), and inherit :meth:`partial` for streaming.
    """

    name: ClassVar[str]
    #: The name of the schema (OpenAI ``json_schema.name``, the forced tool's name).
    schema_name: str = "response"

    @property
    def format_instruction(self) -> str:
        """Text to append to the prompt so the model answers in the expected form."""
        return ""

    @property
    def json_schema(self) -> dict[str, Any] | None:
        """The JSON schema of the answer, or ``None`` when the answer is not JSON."""
        return None

    def parse(self, response: Any) -> ParseResult:
        """Parse a response (text, or any object with ``.content`` / ``.text``)."""
        raise NotImplementedError

    def partial(self, text: str) -> Any:
        """The value so far of an unfinished answer, or ``None`` (for streaming)."""
        return partial_json(text) if self.json_schema is not None else None


def _text_of(response: Any) -> str:
    if isinstance(response, str):
        return response
    for attr in ("content", "text"):
        value = getattr(response, attr, None)
        if isinstance(value, str):
            return value
    raise ParseError(f"cannot read text from {type(response).__name__}")


_FENCE = re.compile(r"```[\w+-]*[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")


#: The deepest nesting of arrays and objects an answer may have. Deeper answers are refused
#: before any parser sees them (a :class:`ParseError`, so the model is asked again), since the
#: JSON readers recurse once per level and would raise ``RecursionError``.
MAX_JSON_DEPTH = 100

# strings (in double or single quotes, with backslash escapes) and comments: their brackets
# do not nest
_NOT_NESTING = re.compile(r""""(?:[^"\\]|\\.)*"?|'(?:[^'\\]|\\.)*'?|//[^\n]*|/\*.*?(?:\*/|\Z)""",
                          re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}()]+")


def json_nesting(text: str) -> int:
    """The deepest nesting of brackets (``[``, ``{``, ``(``) in ``text``, outside strings (in
    double or single quotes, with backslash escapes) and comments (``//``, ``/* */``).

    It reads ``text`` the way JSON, JSON5 and Python literals do up to their first error, so
    no reader of any part of ``text`` goes deeper than this.
    """
    depth = deepest = 0
    for bracket in _NOT_BRACKETS.sub("", _NOT_NESTING.sub(" ", text)):
        if bracket in "[{(":
            depth += 1
            deepest = max(deepest, depth)
        elif depth:
            depth -= 1
    return deepest


def _object_depth(value: Any, limit: int) -> int:
    """The nesting of dicts and lists in ``value``, counted level by level (no recursion) up
    to ``limit + 1``."""
    deepest = 0
    level: list[Any] = [value]
    while deepest <= limit:
        containers = [node for node in level if isinstance(node, dict | list)]
        if not containers:
            break
        deepest += 1
        level = [item for node in containers
                 for item in (node.values() if isinstance(node, dict) else node)]
    return deepest


def tool_arguments(raw: Any) -> dict[str, Any]:
    """A tool call's arguments from what a provider received: a JSON object (text or already
    parsed) as a dict; anything else as ``{"_raw": text}``, which the tool loop reports to
    the model and structured output re-asks, never raises. Arguments nested more than
    :data:`MAX_JSON_DEPTH` levels are refused before they are parsed (or used)."""
    if raw is None:
        return {}
    if isinstance(raw, dict):
        if _object_depth(raw, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
            return {"_raw": f"(arguments nested more than {MAX_JSON_DEPTH} levels deep)"}
        return raw
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if not isinstance(raw, str):
        return {"_raw": raw}
    if not raw.strip():
        return {}
    if sum(map(raw.count, "[{")) > MAX_JSON_DEPTH and json_nesting(raw) > MAX_JSON_DEPTH:
        return {"_raw": raw}
    try:
        value = json.loads(raw)
    except ValueError:
        return {"_raw": raw}
    return value if isinstance(value, dict) else {"_raw": raw}


class _TooDeep(ValueError):
    """A candidate nested deeper than :data:`MAX_JSON_DEPTH`."""


def _loads(candidate: str) -> Any:
    """Strict JSON, then JSON5, then a Python literal; ``ValueError`` if none reads it
    (:class:`_TooDeep` if it nests too deep to be read safely)."""
    if sum(map(candidate.count, "[{(")) > MAX_JSON_DEPTH and (  # else it cannot be deeper
            json_nesting(candidate) > MAX_JSON_DEPTH):
        raise _TooDeep(f"the answer is nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        return json.loads(candidate)
    except ValueError:
        pass
    try:
        return json.loads(_TRAILING_COMMA.sub(r"\1", candidate))
    except ValueError:
        pass
    import json5  # imported here: only answers that are not plain JSON need it

    try:
        return json5.loads(candidate)
    except ValueError:
        pass
    try:
        value = ast.literal_eval(candidate)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise ValueError("not JSON") from None
    if isinstance(value, dict | list):
        return value
    raise ValueError("not JSON")


def _span(text: str, opener: str, closer: str) -> str | None:
    start, end = text.find(opener), text.rfind(closer)
    return text[start:end + 1] if start != -1 and end > start else None


def extract_json(response: Any, kind: type | tuple[type, ...] | None = dict) -> Any:
    """The first JSON value of ``kind`` in an answer (fenced or not, prose around it).

    Raises :class:`ParseError` naming what was found instead.
    """
    text = _text_of(response)
    candidates = [m.group(1).strip() for m in _FENCE.finditer(text)]
    for opener, closer in (("{", "}"), ("[", "]")):
        span = _span(text, opener, closer)
        if span is not None:
            candidates.append(span)
    candidates.append(text.strip())
    found: list[Any] = []
    too_deep: _TooDeep | None = None
    for candidate in candidates:
        if not candidate:
            continue
        try:
            value = _loads(candidate)
        except _TooDeep as err:
            too_deep = err
            continue
        except ValueError:
            continue
        if kind is None or isinstance(value, kind):
            return value
        found.append(value)
    what = "JSON object" if kind is dict else "JSON array" if kind is list else "JSON value"
    if found:
        got = type(found[0]).__name__
        raise ParseError(f"expected a {what}, but the answer holds a {got}", raw=text)
    if not text.strip():
        raise ParseError(f"the answer is empty; expected a {what}", raw=text)
    if too_deep is not None:
        raise ParseError(f"{too_deep}; expected a {what} nested at most {MAX_JSON_DEPTH} "
                         "levels", raw=text)
    raise ParseError(f"no {what} found in the answer", raw=text)


def partial_json(text: str) -> Any:
    """Parse the JSON that has streamed so far (unclosed strings, lists and objects allowed).

    Returns ``None`` until an object or array has started.
    """
    starts = [i for i in (text.find("{"), text.find("[")) if i != -1]
    if not starts:
        return None
    start = min(starts)
    body = text[start:]
    fence = body.find("```")
    if fence != -1:
        body = body[:fence]
    try:
        return from_json(body, allow_partial="trailing-strings")
    except ValueError:
        return None


_TYPE_NAMES = {"string": "string", "integer": "integer", "number": "number",
               "boolean": "true or false", "array": "list", "object": "object"}


def describe_schema(schema: Mapping[str, Any]) -> str:
    """A short description of a JSON schema for a prompt: keys and types when it is flat."""
    props = schema.get("properties")
    if schema.get("type") == "object" and isinstance(props, Mapping) and props and all(
            isinstance(p, Mapping) and p.get("type") in _TYPE_NAMES for p in props.values()):
        required = set(schema.get("required") or [])
        parts = []
        for key, prop in props.items():
            kind = _TYPE_NAMES[prop["type"]]
            if prop["type"] == "array" and isinstance(prop.get("items"), Mapping):
                kind = f"list of {_TYPE_NAMES.get(prop['items'].get('type'), 'values')}"
            if prop.get("enum"):
                kind = " or ".join(json.dumps(v) for v in prop["enum"])
            optional = "" if key in required else ", optional"
            parts.append(f'"{key}" ({kind}{optional})')
        return "a JSON object with the keys " + ", ".join(parts)
    return "JSON matching this schema: " + json.dumps(schema, separators=(",", ":"))


class JsonDictParser(Parser):
    """Parse a JSON object from a model's answer and check its required keys.

    Tolerates a ```json fence or none, prose around the object, trailing commas, JSON5
    (single quotes, unquoted keys, comments) and Python literals.
    """

    name: ClassVar[str] = "json_dict"

    def __init__(self, required_keys: list[str] | None = None) -> None:
        if isinstance(required_keys, str | bytes) or not all(
                isinstance(k, str) for k in required_keys or []):
            raise ConfigurationError("JsonDictParser: required_keys must be a list of key "
                                     f"names, e.g. ['name'] (got {required_keys!r})")
        self.required_keys = list(required_keys or [])

    @property
    def format_instruction(self) -> str:
        """Ask for a JSON object with the required keys."""
        keys = ", ".join(repr(k) for k in self.required_keys)
        text = "Respond with a JSON object only"
        return text + (f", with the keys {keys}." if keys else ".")

    @property
    def json_schema(self) -> dict[str, Any]:
        """An object with the required keys (of any type)."""
        schema: dict[str, Any] = {"type": "object"}
        if self.required_keys:
            schema["properties"] = {key: {} for key in self.required_keys}
            schema["required"] = list(self.required_keys)
        return schema

    def parse(self, response: Any) -> ParseResult:
        """The first JSON object in the answer; :class:`ParseError` if none or keys missing."""
        text = _text_of(response)
        value = extract_json(text, dict)
        missing = [k for k in self.required_keys if k not in value]
        if missing:
            raise ParseError(f"the JSON object lacks required keys: {missing}", raw=text)
        return ParseResult(value, text)


def _validation_message(err: Any) -> str:
    lines = []
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"]) or "the value"
        lines.append(f"{where}: {item['msg']}")
    return "; ".join(lines)


class PydanticParser(Parser):
    """Parse the answer into a pydantic model (or any type pydantic can validate).

    ``PydanticParser(Person)`` asks for JSON matching ``Person``'s schema and returns a
    ``Person``; validation errors name the field and are sent back to the model on re-ask.
    """

    name: ClassVar[str] = "pydantic"

    def __init__(self, model: Any, *, name: str | None = None) -> None:
        self.model = model
        try:
            self.adapter: TypeAdapter[Any] = TypeAdapter(model)
        except Exception:  # pydantic's error is pages long and names no argument
            raise ConfigurationError(
                f"PydanticParser: model must be a pydantic model class or a type pydantic can "
                f"validate (list[int], a dataclass, a TypedDict); got {model!r}") from None
        self.schema_name = name or getattr(model, "__name__", None) or "response"
        self._schema: dict[str, Any] = self.adapter.json_schema()

    @property
    def json_schema(self) -> dict[str, Any]:
        """The model's JSON schema."""
        return self._schema

    @property
    def format_instruction(self) -> str:
        """Ask for JSON matching the schema."""
        return f"Respond with {describe_schema(self._schema)}, and nothing else."

    def parse(self, response: Any) -> ParseResult:
        """Validate the answer's JSON; :class:`ParseError` lists what is wrong."""
        text = _text_of(response)
        kind = dict if self._schema.get("type") == "object" else None
        value = extract_json(text, kind)
        try:
            return ParseResult(self.adapter.validate_python(value), text)
        except ValidationError as err:
            raise ParseError(f"the JSON does not match the schema: {_validation_message(err)}",
                             raw=text) from None


def _schema_errors(value: Any, schema: Mapping[str, Any], where: str = "") -> list[str]:
    """The errors of a JSON-schema subset: type, required, properties, items, enum."""
    label = where or "the value"
    types = schema.get("type")
    checks = {"object": dict, "array": list, "string": str, "boolean": bool,
              "null": type(None), "integer": int, "number": (int, float)}
    if types is not None:
        names = types if isinstance(types, list) else [types]
        ok = any(isinstance(value, checks[t]) and not (  # type: ignore[arg-type]
            t in ("integer", "number") and isinstance(value, bool)) for t in names if t in checks)
        if not ok:
            return [f"{label}: expected {' or '.join(names)}, got {json.dumps(value)[:60]}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{label}: must be one of {json.dumps(schema['enum'])}"]
    errors: list[str] = []
    if isinstance(value, dict):
        for key in schema.get("required") or []:
            if key not in value:
                errors.append(f"{where + '.' if where else ''}{key}: required key missing")
        props = schema.get("properties") or {}
        for key, sub in props.items():
            if key in value and isinstance(sub, Mapping):
                errors += _schema_errors(value[key], sub, f"{where + '.' if where else ''}{key}")
        if schema.get("additionalProperties") is False:
            extra = sorted(set(value) - set(props))
            if extra:
                errors.append(f"{label}: unexpected keys {extra}")
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for i, item in enumerate(value):
            errors += _schema_errors(item, schema["items"], f"{where}[{i}]")
    return errors


class JsonSchemaParser(Parser):
    """Parse the answer as JSON and check it against a JSON schema given as a dict.

    The common subset of JSON Schema is checked: ``type``, ``required``, ``properties``,
    ``items``, ``enum`` and ``additionalProperties: false`` (a provider in native mode
    enforces the whole schema while decoding). For richer validation give a pydantic model.
    """

    name: ClassVar[str] = "json_schema"

    def __init__(self, schema: Mapping[str, Any], *, name: str | None = None) -> None:
        check_schema(schema)  # a misspelt type would make every answer fail
        self.schema = dict(schema)
        self.schema_name = name or str(self.schema.get("title") or "response")

    @property
    def json_schema(self) -> dict[str, Any]:
        """The schema as given."""
        return self.schema

    @property
    def format_instruction(self) -> str:
        """Ask for JSON matching the schema."""
        return f"Respond with {describe_schema(self.schema)}, and nothing else."

    def parse(self, response: Any) -> ParseResult:
        """The answer's JSON, checked against the schema."""
        text = _text_of(response)
        kind = {"object": dict, "array": list}.get(self.schema.get("type"))  # type: ignore[arg-type]
        value = extract_json(text, kind)
        errors = _schema_errors(value, self.schema)
        if errors:
            raise ParseError("the JSON does not match the schema: " + "; ".join(errors),
                             raw=text)
        return ParseResult(value, text)


_BULLET = re.compile(r"^\s*(?:[-*•+]|\d+[.)])\s+(.*\S)\s*$")


class ListParser(Parser):
    """Parse a list: a JSON array, or the bulleted or numbered lines of the answer."""

    name: ClassVar[str] = "list"

    def __init__(self, min_items: int = 1) -> None:
        if isinstance(min_items, bool) or not isinstance(min_items, int) or min_items < 0:
            raise ConfigurationError(f"ListParser: min_items must be a whole number >= 0 "
                                     f"(got {min_items!r})")
        self.min_items = min_items

    @property
    def format_instruction(self) -> str:
        """Ask for a JSON array."""
        return "Respond with a JSON array of strings only, one item per entry."

    @property
    def json_schema(self) -> dict[str, Any]:
        """An array of strings."""
        return {"type": "array", "items": {"type": "string"}, "minItems": self.min_items}

    def parse(self, response: Any) -> ParseResult:
        """A JSON array if there is one, else the list items of the text."""
        text = _text_of(response)
        try:
            items: list[Any] = extract_json(text, list)
        except ParseError:
            items = [m.group(1) for line in text.splitlines() if (m := _BULLET.match(line))]
        if isinstance(items, list) and len(items) == 1 and isinstance(items[0], dict):
            items = next((v for v in items[0].values() if isinstance(v, list)), items)
        if len(items) < self.min_items:
            raise ParseError(f"expected a list of at least {self.min_items} item(s), "
                             "as a JSON array or one '- item' per line", raw=text)
        return ParseResult(items, text)

    def partial(self, text: str) -> Any:
        """The array so far."""
        value = partial_json(text)
        return value if isinstance(value, list) else None


class CodeBlockParser(Parser):
    """Extract the code of a fenced block (of ``language``, if given) from the answer."""

    name: ClassVar[str] = "code_block"

    def __init__(self, language: str | None = None) -> None:
        if language is not None and not isinstance(language, str):
            raise ConfigurationError(f"CodeBlockParser: language must be text such as "
                                     f"'python', or None for any (got {language!r})")
        self.language = language

    @property
    def format_instruction(self) -> str:
        """Ask for one fenced block."""
        return f"Put the code in one fenced block: ```{self.language or ''} ... ```."

    def parse(self, response: Any) -> ParseResult:
        """The first matching block's code; :class:`ParseError` if there is none."""
        text = _text_of(response)
        for match in re.finditer(r"```([\w+-]*)[ \t]*\n(.*?)```", text, re.DOTALL):
            lang = match.group(1).lower()
            if self.language is None or lang in ("", self.language.lower()):
                return ParseResult(match.group(2).rstrip("\n"), text)
        fence = f"```{self.language or ''}"
        raise ParseError(f"no {fence} fenced code block found in the answer", raw=text)


def resolve_output(output: Any, plugins: Plugins | None = None) -> Parser:
    """A :class:`Parser` from a parser instance, registered name, pydantic type or schema dict."""
    if isinstance(output, Parser):
        return output
    if isinstance(output, str):
        factory = (plugins or get_plugins()).get("parsers", output)
        try:
            parser = factory()
        except TypeError as err:
            raise ConfigurationError(
                f"parser {output!r} needs arguments ({err}); pass an instance instead, "
                f"e.g. output={getattr(factory, '__name__', output)}(...)") from None
        if not isinstance(parser, Parser):
            raise PluginError(f"parser {output!r} is not a modelplex.parsers.Parser")
        return parser
    if isinstance(output, Mapping):
        return JsonSchemaParser(output)
    if isinstance(output, type) and issubclass(output, BaseModel):
        return PydanticParser(output)
    if output is None:
        raise ConfigurationError("output is required: a parser name (e.g. 'json_dict'), a "
                                 "Parser, a pydantic model class or a JSON schema dict")
    try:
        return PydanticParser(output)  # list[int], TypedDicts, dataclasses ...
    except Exception:
        raise ConfigurationError(
            f"output {output!r} is not a parser name, a Parser, a pydantic model class or a "
            "JSON schema dict") from None
