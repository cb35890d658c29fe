"""Batch runs: one prompt per row over many rows, through the one request path.

::

    from modelplex import batch

    rows = [{"id": "a", "prompt": "2+2?"}, {"id": "b", "prompt": "3+3?"}]
    async for result in batch.run(rows, model="openai:gpt-4o-mini", concurrency=16,
                                  output="answers.jsonl"):
        print(result.id, result.answer or result.error)

Each row is a mapping with an ``id`` (else its line number) and one of ``messages`` (chat
messages), ``prompt`` (one user message) or, with ``template=``, the template's variables;
``options`` (provider options) and ``system`` override the run's for that row. Rows are read
as they are needed (an iterator or async iterator of a million rows stays flat in memory)
and at most ``concurrency`` are asked at once, each as one non-streaming request of a stack
from :func:`modelplex.pipeline.open_model` (``caller="batch"``: named models with their
routers, the cache, recording).

With ``schema=`` (a JSON schema, a parser name or class) each answer is validated and, when
it is not valid, re-asked as :func:`modelplex.structured.get_structured` does; a row whose
last attempt failed is a result with ``error`` and ``error_type``. A row that cannot be
asked (no messages or prompt, a template variable missing) raises :class:`BatchInputError`
naming its line; the rows in flight finish first.

With ``output=`` (a path) each result is appended as one JSON line, flushed as it is written;
:class:`BatchOutput` reads such a file back to resume a run (ids answered are skipped, a torn
last line is cut off, a file written by a different run is refused).

:func:`bounded` runs any coroutine function over items with bounded concurrency.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import io
import json
import os
import string
import time
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
from pydantic import ValidationError

from modelplex.errors import ConfigurationError, ParseError

if TYPE_CHECKING:
    from modelplex.config import Config
    from modelplex.exchange import Turn
    from modelplex.parsers import Parser
    from modelplex.pipeline import Lease
    from modelplex.plugins import Plugins
    from modelplex.pool import ProviderPool
    from modelplex.prompts import PromptTemplate
    from modelplex.types import ChatMessage

__all__ = ["BatchInputError", "BatchOutput", "BatchResult", "Row", "answer_each",
           "batch_model_operation", "bounded", "check_schema",
           "default_concurrency", "estimate_tokens", "fingerprint", "parse_row", "read_rows",
           "run"]

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_CONCURRENCY = 8
_RESERVED = {"id", "messages", "prompt", "options", "system"}


class BatchInputError(ConfigurationError):
    """A row (or the input or output file) that cannot be used: the message names the file,
    the line and the fix."""

    def __init__(self, message: str, *, source: str | None = None,
                 line: int | None = None) -> None:
        where = ":".join(str(p) for p in (source, line) if p is not None)
        super().__init__(f"{where}: {message}" if where else message)
        self.source = source
        self.line = line


# -- rows --------------------------------------------------------------------------------------
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
        return json.dumps(self.id, sort_keys=True)


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
    if not isinstance(value, Mapping):
        raise BatchInputError(f"a row must be a JSON object, not {type(value).__name__}: "
                              'write {"id": ..., "prompt": "..."}', source=source, line=line)
    row_id = value.get("id", line)
    if row_id is None or isinstance(row_id, dict | list | bool):
        raise BatchInputError(f"id must be a string or a number (got {row_id!r})",
                              source=source, line=line)
    options = value.get("options") or {}
    if not isinstance(options, Mapping):
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
    """``(line number, object)`` for each row of a JSONL or CSV file, read as needed.

    Blank JSONL lines are skipped; a line that is not JSON raises :class:`BatchInputError`.
    CSV rows are dicts of their columns (a ``messages`` column holds JSON).
    """
    source = str(path)
    if format not in ("jsonl", "csv"):
        raise ConfigurationError(f"format must be jsonl or csv (got {format!r})")
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


# -- results -----------------------------------------------------------------------------------
@attrs.define
class BatchResult:
    """What became of one row: ``answer`` (and ``value`` when parsed), or ``error``."""

    id: Any
    line: int
    answer: str | None = None
    value: Any = None
    error: str | None = None
    error_type: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency: float = 0.0
    model: str | None = None
    attempts: int = 1
    cost: float | None = None  # in ``currency``; None when the price is unknown
    currency: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the row was answered."""
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """The JSON line written for it."""
        out: dict[str, Any] = {"id": self.id, "line": self.line}
        if self.error is None:
            out["answer"] = self.answer
            if self.value is not None:
                value = self.value
                if hasattr(value, "model_dump"):
                    value = value.model_dump(mode="json")
                out["value"] = value
        else:
            out["error"] = self.error
            out["error_type"] = self.error_type
        out["usage"] = {"prompt_tokens": self.prompt_tokens,
                        "completion_tokens": self.completion_tokens}
        out["cost"] = self.cost
        if self.currency is not None:
            out["currency"] = self.currency
        out["latency"] = round(self.latency, 4)
        out["model"] = self.model
        out["attempts"] = self.attempts
        return out


class BatchOutput:
    """A JSONL results file written one line per row, flushed per line, resumable.

    Opening it reads what an earlier run wrote: a torn last line (the process was killed
    mid-write) is cut off; ``done`` holds the ids answered and ``failed`` the ids whose last
    line is an error. A file written by another model, or with another template, schema,
    system prompt or options (``fingerprint``), is refused. :meth:`compact` keeps only the
    last line of each id (after errors were run again).
    """

    def __init__(self, path: str | os.PathLike[str], *, model: str | None = None,
                 run: str | None = None) -> None:
        self.path = Path(path)
        self.model = model
        self.run = run
        self.done: set[str] = set()
        self.failed: set[str] = set()
        self.lines = 0
        self._repeated = False
        self._read_done = False
        self._handle: io.TextIOWrapper | None = None

    def read(self) -> BatchOutput:
        """Read the file so far (repairing a torn line), without opening it for writing."""
        self.done.clear()
        self.failed.clear()
        try:
            if self.path.exists():
                self._read()
        except IsADirectoryError:
            raise BatchInputError("is a directory: give a file for the output",
                                  source=str(self.path)) from None
        except OSError as err:
            raise BatchInputError(f"cannot use the output ({err.strerror}): choose a "
                                  "readable and writable path", source=str(self.path)
                                  ) from None
        self._read_done = True
        return self

    def open(self) -> BatchOutput:
        """Read the file so far (repairing a torn line), then open it for appending."""
        where = str(self.path)
        if not self._read_done:
            self.read()
        try:
            handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        except IsADirectoryError:
            raise BatchInputError("is a directory: give a file for the output",
                                  source=where) from None
        except OSError as err:
            raise BatchInputError(f"cannot write the output here ({err.strerror}): choose a "
                                  "writable path", source=where) from None
        self._handle = handle
        return self

    def _read(self) -> None:
        where = str(self.path)
        with open(self.path, "rb+") as raw:
            data_end = raw.seek(0, os.SEEK_END)
            if data_end:
                raw.seek(data_end - 1)
                if raw.read(1) != b"\n":  # a torn last line: cut it off
                    raw.seek(0)
                    keep = 0
                    for chunk_line in iter(raw.readline, b""):
                        if chunk_line.endswith(b"\n"):
                            keep += len(chunk_line)
                    raw.truncate(keep)
            raw.seek(0)
            for number, line in enumerate(iter(raw.readline, b""), 1):
                try:
                    record = json.loads(line)
                except ValueError:
                    raise BatchInputError("this line of the output is not JSON: the file was "
                                          "not written by modelplex batch; give another -o",
                                          source=where, line=number) from None
                if not isinstance(record, dict) or "id" not in record:
                    raise BatchInputError("this line of the output has no id: the file was "
                                          "not written by modelplex batch; give another -o",
                                          source=where, line=number) from None
                self._check(record, where, number)
                key = json.dumps(record["id"], sort_keys=True)
                if key in self.done or key in self.failed:
                    self._repeated = True
                if "error" in record:
                    self.failed.add(key)
                    self.done.discard(key)
                else:
                    self.done.add(key)
                    self.failed.discard(key)
                self.lines = number

    def _check(self, record: Mapping[str, Any], where: str, number: int) -> None:
        run = record.get("run")
        if self.run is None or run is None or run == self.run:
            return
        asked = record.get("asked")
        if self.model is not None and asked is not None and asked != self.model:
            raise BatchInputError(
                f"this output was written by a run of model {asked!r}, not {self.model!r}: "
                f"resume with -m {asked}, or write to another -o", source=where, line=number)
        raise BatchInputError(
            "this output was written by a run with another template, schema, system prompt "
            "or options: resume with the same ones, or write to another -o",
            source=where, line=number)

    def write(self, result: BatchResult) -> None:
        """Append ``result`` as one line and flush it."""
        if self._handle is None:
            self.open()
        assert self._handle is not None
        record = result.to_dict()
        if self.model is not None:
            record["asked"] = self.model
        if self.run is not None:
            record["run"] = self.run
        self._handle.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        self._handle.flush()
        key = json.dumps(result.id, sort_keys=True)
        if key in self.done or key in self.failed:
            self._repeated = True
        (self.failed if result.error else self.done).add(key)
        (self.done if result.error else self.failed).discard(key)
        self.lines += 1

    def close(self) -> None:
        """Close the file (a repeated id is compacted away first)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self._repeated:
            self.compact()

    def compact(self) -> None:
        """Keep only the last line written for each id (atomically: a new file renamed over
        the old)."""
        last: dict[str, int] = {}
        with open(self.path, encoding="utf-8") as handle:
            for number, line in enumerate(handle):
                last[json.dumps(json.loads(line)["id"], sort_keys=True)] = number
        keep = set(last.values())
        del last
        tmp = self.path.with_name(self.path.name + ".compact")
        with open(self.path, encoding="utf-8") as src, open(tmp, "w", encoding="utf-8") as dst:
            for number, line in enumerate(src):
                if number in keep:
                    dst.write(line)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, self.path)
        self._repeated = False


# -- running -----------------------------------------------------------------------------------
async def bounded(items: Iterable[T] | AsyncIterable[T], operation: Callable[[T], Awaitable[R]],
                  max_concurrent: int = 3, *, return_exceptions: bool = False) -> list[R]:
    """``operation(item)`` for every item, at most ``max_concurrent`` at once; the results
    in the order of the items (a ``batch_model_operation`` for any coroutine).

    The first exception is raised once the others have finished (or, with
    ``return_exceptions=True``, each is returned in its item's place).
    """
    if not callable(operation):
        raise ConfigurationError(f"operation must be an async function taking one item "
                                 f"(got {operation!r})")
    _check_concurrency(max_concurrent, "max_concurrent")
    if not isinstance(items, Iterable | AsyncIterable) or isinstance(items, str | bytes):
        raise ConfigurationError(f"items must be a list or another iterable (got "
                                 f"{type(items).__name__})")
    results: dict[int, Any] = {}
    gate = asyncio.Semaphore(max_concurrent)

    async def one(index: int, item: T) -> None:
        try:
            value = operation(item)
            if not isinstance(value, Awaitable):
                raise ConfigurationError(f"operation must be an async function: it returned "
                                         f"{type(value).__name__}, not an awaitable")
            results[index] = await value
        except Exception as err:
            results[index] = _Failed(err)
        finally:
            gate.release()

    tasks: set[asyncio.Task[None]] = set()
    count = 0
    try:
        async for item in _aiter(items):
            await gate.acquire()
            task = asyncio.ensure_future(one(count, item))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            count += 1
        if tasks:
            await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
    out: list[Any] = []
    for index in range(count):
        value = results[index]
        if isinstance(value, _Failed):
            if not return_exceptions:
                raise value.error
            value = value.error
        out.append(value)
    return out


@attrs.define
class _Failed:
    error: Exception


async def _aiter(items: Iterable[T] | AsyncIterable[T]) -> AsyncIterator[T]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


def _check_concurrency(value: Any, name: str = "concurrency") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name} must be a whole number >= 1 (got {value!r})")
    return value


def default_concurrency(model: str | None, config: Config | None = None) -> int:
    """The concurrency for ``model``: the sum of its deployments' ``max_concurrency`` when
    each sets one, else at most ``rpm / 6`` (what ``rpm`` allows in 10-second requests),
    else :data:`DEFAULT_CONCURRENCY`."""
    from modelplex.config import get_config

    config = config or get_config()
    named = config.models.get(model) if model else None
    if named is None or not named.deployments:
        return DEFAULT_CONCURRENCY
    caps = [dep.max_concurrency for dep in named.deployments]
    if all(caps):
        return max(1, sum(c for c in caps if c))
    rpms = [dep.rpm for dep in named.deployments]
    if all(rpms):
        return max(1, min(DEFAULT_CONCURRENCY * 8, sum(r for r in rpms if r) // 6))
    return DEFAULT_CONCURRENCY


async def _ask(lease: Lease, row: Row, *, system: str | None, options: Mapping[str, Any],
               parser: Parser | None, max_retries: int, cache: bool | None) -> BatchResult:
    from modelplex import structured
    from modelplex.exchange import Turn
    from modelplex.types import ChatSession

    start = time.perf_counter()
    result = BatchResult(id=row.id, line=row.line)
    try:
        provider = lease.provider
        validated = provider.parse_options({**options, **row.options})
        session = ChatSession(model=lease.model, provider=lease.provider_name,
                              system_prompt=row.system if row.system is not None else system,
                              messages=list(row.messages))
        turn = Turn(provider, session, validated, cache=cache)
        use = row.parser or parser
        if use is None:
            meta = await turn.answer(turn.user_message(row.text))
            result.answer = meta.content
            result.prompt_tokens, result.completion_tokens = (meta.prompt_tokens,
                                                              meta.completion_tokens)
        else:
            done = await structured.get_structured(turn, row.text, use,
                                                   max_retries=max_retries)
            meta = done.meta
            result.answer, result.value = meta.content, done.value
            result.prompt_tokens, result.completion_tokens = (done.prompt_tokens,
                                                              done.completion_tokens)
            result.attempts = done.attempts
        spent = meta.cost
        if use is not None and result.attempts > 1:  # every attempt was paid for
            from modelplex.chunks import Usage
            from modelplex.cost import cost_of

            spent = cost_of(meta.provider, meta.model, Usage(
                prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens))
        if spent is not None and spent.known:
            result.cost, result.currency = spent.amount, spent.currency
        result.model = (meta.deployment or
                        (f"{meta.provider}:{meta.model}" if meta.provider else meta.model))
        if meta.attempts > 1:
            result.attempts = max(result.attempts, meta.attempts)
    except asyncio.CancelledError:
        raise
    except ParseError as err:
        result.error, result.error_type = str(err), type(err).__name__
        result.attempts = len(err.answers) or result.attempts
    except Exception as err:
        result.error, result.error_type = str(err) or type(err).__name__, type(err).__name__
    result.latency = time.perf_counter() - start
    return result


async def run(rows: Iterable[Any] | AsyncIterable[Any], *, model: str | None = None,
              concurrency: int | None = None, output: str | os.PathLike[str] | BatchOutput |
              None = None, ordered: bool = False, template: Any = None, schema: Any = None,
              system: str | None = None, options: Mapping[str, Any] | None = None,
              max_retries: int = 2, skip: Callable[[Row], bool] | None = None,
              source: str = "<rows>", config: Config | None = None,
              pool: ProviderPool | None = None, plugins: Plugins | None = None,
              cache: Any = None, logs: Any = None,
              provider_config: Mapping[str, Mapping[str, Any]] | None = None
              ) -> AsyncIterator[BatchResult]:
    """Ask every row; yields a :class:`BatchResult` per row as each finishes (in the rows'
    order with ``ordered=True``). See the module docs.

    Args:
        rows: mappings (or ``(line, mapping)`` pairs, as :func:`read_rows` gives), an
            iterable or async iterable, read as needed.
        model: ``"provider:model"``, a named model, or ``None`` for the default.
        concurrency: rows asked at once (default :func:`default_concurrency`).
        output: a path (or :class:`BatchOutput`) each result is appended to; ids it already
            answered are skipped.
        template: a prompt template name or class, or text with ``{variable}`` fields.
        schema: the structure of each answer: a JSON schema dict, a parser name, a
            :class:`~modelplex.parsers.Parser` or a pydantic model class.
        max_retries: re-asks of an answer that does not fit ``schema``.
        skip: rows for which it returns true are not asked (nothing is yielded for them).
        source: the name given in errors about rows (the input file).
        cache, logs, config, pool, plugins, provider_config: as for
            :func:`~modelplex.pipeline.open_model`.
    """
    from modelplex.parsers import resolve_output
    from modelplex.pipeline import open_model

    if max_retries is None or isinstance(max_retries, bool) or not isinstance(
            max_retries, int) or max_retries < 0:
        raise ConfigurationError(f"max_retries must be a whole number >= 0 (got {max_retries!r})")
    if not isinstance(rows, Iterable | AsyncIterable) or isinstance(rows, str | bytes | Mapping):
        raise ConfigurationError("rows must be an iterable of row objects, e.g. "
                                 '[{"id": 1, "prompt": "..."}]')
    if options is not None and not isinstance(options, Mapping):
        raise ConfigurationError("options must map option names to values")
    shape = (template if isinstance(template, _Template) or template is None
             else _Template(template, plugins))
    if isinstance(schema, Mapping):
        schema = check_schema(schema)
    parser = resolve_output(schema, plugins) if schema is not None else None
    limit = _check_concurrency(concurrency if concurrency is not None
                               else default_concurrency(model, config))
    writer: BatchOutput | None
    if output is None or isinstance(output, BatchOutput):
        writer = output
    else:
        writer = BatchOutput(output, model=model,
                             run=fingerprint(model, shape and shape.name, schema, system,
                                             options))
    if writer is not None and writer._handle is None:
        writer.open()
    lease = await open_model(model, config=config, pool=pool, plugins=plugins, cache=cache,
                             logs=logs, provider_config=provider_config, caller="batch")
    gate = asyncio.Semaphore(limit)
    finished: asyncio.Queue[tuple[int, BatchResult | BaseException]] = asyncio.Queue()
    tasks: set[asyncio.Task[None]] = set()
    state = _Feed()

    async def ask(seq: int, row: Row) -> None:
        try:
            result = await _ask(lease, row, system=system, options=options or {},
                                parser=parser, max_retries=max_retries, cache=None)
            finished.put_nowait((seq, result))
        except BaseException as err:
            finished.put_nowait((seq, err))
            raise

    async def feed() -> None:
        line = 0
        try:
            async for item in _aiter(rows):
                line += 1
                if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], int):
                    line, item = item
                if isinstance(item, Row):
                    row = item
                else:
                    row = parse_row(item, line, source=source, template=shape)
                if writer is not None and row.key in writer.done:
                    continue
                if skip is not None and skip(row):
                    continue
                await gate.acquire()
                task = asyncio.ensure_future(ask(state.fed, row))
                state.fed += 1
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except Exception as err:
            state.error = err
        finally:
            finished.put_nowait((-1, _FED))

    feeder = asyncio.ensure_future(feed())
    waiting: dict[int, BatchResult] = {}
    next_seq = 0
    fed_all = False
    yielded = 0
    try:
        while not fed_all or yielded < state.fed:
            seq, item = await finished.get()
            if item is _FED:
                fed_all = True
                continue
            if isinstance(item, BaseException):
                raise item
            ready: list[BatchResult] = []
            if ordered:
                waiting[seq] = item
                while next_seq in waiting:
                    ready.append(waiting.pop(next_seq))
                    next_seq += 1
            else:
                ready.append(item)
            for result in ready:
                if writer is not None:
                    writer.write(result)
                yielded += 1
                gate.release()
                yield result
        if state.error is not None:
            raise state.error
    finally:
        feeder.cancel()
        for task in list(tasks):
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(feeder, *tasks, return_exceptions=True)
        await lease.release()
        if writer is not None and not isinstance(output, BatchOutput):
            writer.close()


_FED: Any = object()


@attrs.define
class _Feed:
    fed: int = 0  # rows handed to a task
    error: Exception | None = None  # why the rows stopped

batch_model_operation = bounded  # the name seed 000 gives it


async def answer_each(turn: Turn, messages: Sequence[str], *, max_concurrent: int = 5,
                      return_exceptions: bool = False) -> list[Any]:
    """The whole answer to each of ``messages``, asked independently on ``turn``'s provider,
    system prompt and options (not its history, which is left unchanged), at most
    ``max_concurrent`` at once, in the order of ``messages`` (what
    ``ChatManager.process_message_batch`` runs).
    """
    from modelplex.exchange import Turn as _Turn
    from modelplex.types import ChatSession

    if isinstance(messages, str) or not isinstance(messages, Sequence):
        raise ConfigurationError("messages must be a list of texts (got "
                                 f"{type(messages).__name__})")
    users = []
    for index, text in enumerate(messages):
        if not isinstance(text, str):
            raise ConfigurationError(f"messages[{index}] must be text (got "
                                     f"{type(text).__name__})")
        users.append(turn.user_message(text))
    session = turn.session

    async def one(user: ChatMessage) -> Any:
        alone = ChatSession(model=session.model, provider=session.provider,
                            system_prompt=session.system_prompt)
        single = _Turn(turn.provider, alone, turn.options, cache=turn.cache,
                       conversation_id=turn.conversation_id)
        return await single.answer(user)

    return await bounded(users, one, max_concurrent, return_exceptions=return_exceptions)
