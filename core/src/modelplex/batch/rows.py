"""The rows of a batch run: parsing a row (messages, a prompt or a template's variables), reading
rows from a JSONL or CSV file, checking a schema, and the run's fingerprint.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import string
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from pydantic import ValidationError

from modelplex.batch.problems import BatchInputError as BatchInputError
from modelplex.errors import ConfigurationError

if TYPE_CHECKING:
    from modelplex.parsers import Parser
    from modelplex.plugins import Plugins
    from modelplex.prompts import PromptTemplate
    from modelplex.types import ChatMessage


_RESERVED = {"id", "messages", "prompt", "options", "system"}


# -- rows --------------------------------------------------------------------------------------
#: ``json.dumps(value, sort_keys=True)`` with one encoder made once (the call makes one each
#: time for a non-default argument, a few microseconds per row).
_key_encoder = json.JSONEncoder(sort_keys=True)


def id_key(value: Any) -> str:
    """A row id as compared when resuming: its JSON text (``1`` and ``"1"`` differ)."""
    return _key_encoder.encode(value)


@attrs.define
class Row:
    """One row to ask: its ``id``, the ``line`` it came from, and what to send.

    ``messages`` are the chat messages before the question, ``text`` the question (the last
    user message, the prompt, or the rendered template), ``system`` the system prompt,
    ``options`` the row's provider options, ``parser`` the template's parser if it has one.
    """

    id: Any
    line: int
    text: str
    messages: list[ChatMessage] = attrs.Factory(list)
    system: str | None = None
    options: dict[str, Any] = attrs.Factory(dict)
    parser: Parser | None = None

    @property
    def key(self) -> str:
        """The id as compared when resuming (``1`` and ``"1"`` differ)."""
        return id_key(self.id)


def _message(value: Any, where: str, line: int, index: int) -> ChatMessage:
    from modelplex.types import ChatMessage

    try:
        return ChatMessage.model_validate(value)
    except ValidationError as err:
        problems = "; ".join(e["msg"] for e in err.errors())
        raise BatchInputError(f"messages[{index}] is not a chat message ({problems}): write "
                              'it as {"role": "user", "content": "..."}',
                              source=where, line=line) from None


class _Template:
    """A ``-t`` template: a registered prompt template, or text with ``{variable}`` fields."""

    def __init__(self, template: Any, plugins: Plugins | None = None) -> None:
        from modelplex.prompts import PromptTemplate

        self.cls: type[PromptTemplate] | None = None
        self.text: str | None = None
        if isinstance(template, type) and issubclass(template, PromptTemplate):
            self.cls = template
        elif isinstance(template, str):
            from modelplex.plugins import get_plugins

            registry = (plugins or get_plugins()).registry("prompt_templates")
            if template in registry:
                self.cls = registry[template].obj
            elif "{" in template:
                self.text = template
            elif Path(template).is_file():
                self.text = Path(template).read_text(encoding="utf-8")
            else:
                known = ", ".join(sorted(registry)) or "none installed"
                raise ConfigurationError(
                    f"template {template!r} is neither a registered template ({known}), nor a "
                    "file, nor text with {variable} fields: give one of those")
        else:
            raise ConfigurationError(f"template must be a template name, class or text with "
                                     f"{{variable}} fields (got {template!r})")
        self.fields: list[str] = []
        if self.text is not None:
            try:
                self.fields = [name for _, name, _, _ in string.Formatter().parse(self.text)
                               if name is not None]
            except ValueError as err:
                raise ConfigurationError(f"template: {err} (write a literal brace as {{{{ or "
                                         "}})") from None
            for name in self.fields:
                if not name.isidentifier():
                    raise ConfigurationError(f"template field {{{name}}} is not a variable "
                                             "name: use {name} fields only")
        self.name = (getattr(self.cls, "name", None) or getattr(self.cls, "__name__", "")
                     if self.cls is not None else (self.text or ""))

    def render(self, variables: Mapping[str, Any], where: str, line: int
               ) -> tuple[str, Parser | None]:
        if self.text is not None:
            missing = [name for name in self.fields if name not in variables]
            if missing:
                have = ", ".join(sorted(variables)) or "none"
                raise BatchInputError(
                    f"template variable {missing[0]!r} is not in this row (its fields: "
                    f"{have}): add it to the row or fix the template", source=where, line=line)
            return self.text.format(**{k: variables[k] for k in self.fields}), None
        assert self.cls is not None
        try:
            instance: PromptTemplate = self.cls(**variables)
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '?'}: {e['msg']}"
                                 for e in err.errors())
            raise BatchInputError(f"template {self.name!r}: {problems}: give the row the "
                                  "template's fields", source=where, line=line) from None
        return instance.render(), instance.output_parser()


def parse_row(value: Any, line: int, *, source: str = "<rows>",
              template: _Template | None = None) -> Row:
    """The :class:`Row` of one input object (``line`` is its line number, its id if it has
    none); a :class:`BatchInputError` naming ``source`` and ``line`` if it cannot be asked."""
    if type(value) is not dict and not isinstance(value, Mapping):  # a dict: no ABC check
        raise BatchInputError(f"a row must be a JSON object, not {type(value).__name__}: "
                              'write {"id": ..., "prompt": "..."}', source=source, line=line)
    row_id = value.get("id", line)
    if row_id is None or isinstance(row_id, dict | list | bool):
        raise BatchInputError(f"id must be a string or a number (got {row_id!r})",
                              source=source, line=line)
    options = value.get("options") or {}
    if type(options) is not dict and not isinstance(options, Mapping):
        raise BatchInputError('options must be an object, e.g. {"temperature": 0}',
                              source=source, line=line)
    system = value.get("system")
    if system is not None and not isinstance(system, str):
        raise BatchInputError("system must be text", source=source, line=line)
    parser = None
    history: list[ChatMessage] = []
    if "messages" in value:
        raw = value["messages"]
        if isinstance(raw, str):  # a CSV column holds them as JSON
            with contextlib.suppress(ValueError):
                raw = json.loads(raw)
        if not isinstance(raw, list) or not raw:
            raise BatchInputError("messages must be a non-empty list of chat messages",
                                  source=source, line=line)
        messages = [_message(m, source, line, i) for i, m in enumerate(raw)]
        if messages[0].role.value == "system":
            system = system if system is not None else messages[0].content
            messages = messages[1:]
        if not messages or messages[-1].role.value != "user":
            raise BatchInputError("the last message must be the user's (the question to ask)",
                                  source=source, line=line)
        history, text = messages[:-1], messages[-1].content
    elif "prompt" in value:
        text = value["prompt"]
        if not isinstance(text, str) or not text.strip():
            raise BatchInputError("prompt must be non-empty text", source=source, line=line)
    elif template is not None:
        variables = {k: v for k, v in value.items() if k not in _RESERVED}
        text, parser = template.render(variables, source, line)
    else:
        raise BatchInputError('the row has no "messages" or "prompt": give one, or run with '
                              "a template (-t) whose variables the rows hold",
                              source=source, line=line)
    return Row(id=row_id, line=line, text=text, messages=history, system=system,
               options=dict(options), parser=parser)


def read_rows(path: str | os.PathLike[str], *, format: str = "jsonl"
              ) -> Iterator[tuple[int, Any]]:
    """``(line number, object)`` for each row of a JSONL, CSV or Parquet file, read as needed.

    Blank JSONL lines are skipped; a line that is not JSON raises :class:`BatchInputError`.
    CSV rows are dicts of their columns (a ``messages`` column holds JSON); Parquet rows too,
    numbered from 1 (:mod:`modelplex.batch.parquet`, with ``pyarrow``).
    """
    source = str(path)
    if format not in ("jsonl", "csv", "parquet"):
        raise ConfigurationError(f"format must be jsonl, csv or parquet (got {format!r})")
    if format == "parquet":
        from modelplex.batch.parquet import read_parquet

        yield from read_parquet(path)
        return
    try:
        handle = open(path, encoding="utf-8", newline="" if format == "csv" else None)  # noqa: SIM115
    except FileNotFoundError:
        raise BatchInputError("no such file: check the path", source=source) from None
    except OSError as err:
        raise BatchInputError(f"cannot read it: {err.strerror}", source=source) from None
    with handle:
        if format == "csv":
            reader = csv.DictReader(handle)
            try:
                for record in reader:
                    yield reader.line_num, {k: v for k, v in record.items() if k is not None}
            except csv.Error as err:
                raise BatchInputError(f"not valid CSV ({err})", source=source,
                                      line=reader.line_num) from None
            return
        number = 0
        try:
            for number, text in enumerate(handle, 1):
                if not text.strip():
                    continue
                try:
                    yield number, json.loads(text)
                except ValueError as err:
                    raise BatchInputError(f"not JSON ({err}): each line must be one JSON "
                                          "object", source=source, line=number) from None
                except RecursionError:
                    raise BatchInputError("nested too deeply to be read: a row needs only a "
                                          "few levels", source=source, line=number) from None
        except UnicodeDecodeError:
            raise BatchInputError("not UTF-8 text: save the file as UTF-8", source=source,
                                  line=number + 1) from None


def check_schema(schema: Any, source: str = "schema") -> dict[str, Any]:
    """``schema`` if it is a usable JSON schema (checked with ``jsonschema`` when it is
    installed), else a :class:`ConfigurationError` naming ``source``."""
    if not isinstance(schema, Mapping):
        raise ConfigurationError(f"{source}: a JSON schema must be an object, e.g. "
                                 '{"type": "object", "properties": {...}}')
    checked: dict[str, Any] = dict(schema)
    schema = checked
    try:
        import jsonschema  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        kinds = {"object", "array", "string", "number", "integer", "boolean", "null"}
        kind = schema.get("type")
        names = kind if isinstance(kind, list) else [kind] if kind is not None else []
        bad = [k for k in names if k not in kinds]
        if bad:
            raise ConfigurationError(f"{source}: not a valid JSON schema: type {bad[0]!r} is "
                                     f"not one of {', '.join(sorted(kinds))}") from None
        return checked
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as err:
        path = "/".join(map(str, err.path)) or "(top)"
        raise ConfigurationError(f"{source}: not a valid JSON schema at {path}: "
                                 f"{err.message}") from None
    return checked


def estimate_tokens(row: Row) -> int:
    """A rough count of the prompt tokens of ``row`` (4 characters a token)."""
    chars = len(row.text) + len(row.system or "") + sum(len(m.content) for m in row.messages)
    return max(1, chars // 4) + 4 * (len(row.messages) + 1)


def fingerprint(model: str | None, template: Any = None, schema: Any = None,
                system: str | None = None, options: Mapping[str, Any] | None = None) -> str:
    """A short hash of what makes a run's answers comparable (resuming checks it)."""
    key = json.dumps([model, None if template is None else str(template), schema, system,
                      dict(options or {})], sort_keys=True, default=str)
    return hashlib.sha256(key.encode()).hexdigest()[:12]
