"""CLI support for structured output: ``modelplex templates`` and ``chat -t/-p/--schema/--json``.

``modelplex chat -t chain_of_thought -p task "What is 17 * 3?"`` runs a template and prints
its parsed answer as JSON; ``modelplex chat --schema person.json "..."`` and ``--json`` ask for
structured output and print the validated JSON.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from modelplex.cli._common import check_text, parse_option_value
from modelplex.errors import ConfigurationError

if TYPE_CHECKING:
    from modelplex.manager import ChatManager

__all__ = ["run_structured_chat", "template_fields", "templates"]


def template_fields(pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """``-p KEY VALUE`` pairs as fields: JSON values when they parse; a repeated key is a list."""
    fields: dict[str, Any] = {}
    for key, raw in pairs:
        value = parse_option_value(check_text(raw, f"field {key!r}"))
        name = key.replace("-", "_")
        if name in fields:
            previous = fields[name]
            fields[name] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            fields[name] = value
    return fields


def _load_schema(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigurationError(f"--schema {path}: cannot read it: {err.strerror}") from None
    try:
        schema = json.loads(text)
    except ValueError as err:
        raise ConfigurationError(f"--schema {path}: not JSON ({err})") from None
    except RecursionError:
        raise ConfigurationError(f"--schema {path}: nested too deeply to be read") from None
    if not isinstance(schema, dict):
        raise ConfigurationError(f"--schema {path}: a JSON schema must be an object")
    from modelplex.parsers._schemacheck import check_schema

    check_schema(schema, f"--schema {path}: schema")
    return schema


def _dump(value: Any) -> str:
    from pydantic import BaseModel

    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


async def run_structured_chat(manager: ChatManager, model: str | None, prompt: str | None, *,
                              template: str | None, pairs: Sequence[tuple[str, str]],
                              schema: str | None, as_json: bool, show_usage: bool) -> None:
    """One structured exchange for ``modelplex chat``; prints the value as JSON."""
    fields = template_fields(pairs)
    if prompt is not None and not prompt.strip():
        prompt = None  # an empty stdin
    if template is None and pairs:
        raise click.UsageError("-p/--param fills a template's fields: use it with -t TEMPLATE")
    if schema is not None and as_json:
        raise click.UsageError("--schema asks for JSON matching a schema and --json for any "
                               "JSON object: give one of them")
    if template is not None and (schema is not None or as_json):
        raise click.UsageError("-t runs a template with its own output format: give -t, or "
                               "--schema/--json, not both")
    output: Any = None
    if schema is not None:
        output = _load_schema(schema)
    elif as_json:
        output = "json_dict"
    async with manager as chat:
        await chat.initialize_model(model)
        if template is not None:
            target = None  # an MCP prompt (mcp:SERVER/PROMPT) takes -p arguments only
            if not template.startswith("mcp:"):
                cls = chat.plugins.get("prompt_templates", template)
                target = getattr(cls, "prompt_field", None)
            if prompt is not None:
                if not target or target in fields:
                    raise click.UsageError(f"template {template!r} takes its fields from -p; "
                                           "drop the PROMPT argument")
                fields[target] = prompt
            result = await chat.execute_chain(template, **fields)
        else:
            if prompt is None:
                raise click.UsageError("--schema and --json need a PROMPT")
            result = await chat.get_structured(prompt, output)
    click.echo(_dump(result.value))
    if show_usage:
        click.echo(f"[{result.meta.provider}:{result.meta.model}] {result.mode} mode, "
                   f"{result.attempts} attempt(s), prompt {result.prompt_tokens}, completion "
                   f"{result.completion_tokens} tokens", err=True)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def templates(as_json: bool) -> None:
    """The prompt templates: name, what they return, and their fields (-p KEY VALUE)."""
    from modelplex.plugins import get_plugins
    from modelplex.prompts import describe_fields

    rows: list[dict[str, Any]] = []
    for name, reg in sorted(get_plugins().registry("prompt_templates").items()):
        cls = reg.obj
        doc = (cls.__doc__ or "").strip().splitlines()
        output = getattr(cls, "output", None)
        rows.append({"name": name, "description": doc[0].replace("``", "") if doc else "",
                     "output": getattr(output, "__name__", None) or (
                         None if output is None else str(output)),
                     "fields": describe_fields(cls), "plugin": reg.distribution or reg.plugin})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(f"{row['name']}: {row['description']}")
        for f in row["fields"]:
            need = "required" if f["required"] else f"default {f['default']}"
            text = f"  -p {f['name']} ({f['type']}, {need})"
            click.echo(text + (f": {f['description']}" if f["description"] else ""))
    if not rows:
        click.echo("No templates installed.", file=sys.stderr)
