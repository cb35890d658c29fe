"""``modelplex models list|show|pull|rm|ps|verify``: the models of every provider, managing
them, and checking a local model file against its known sha256."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from modelplex.cli._common import print_table, provider_names, run, with_provider
from modelplex.cli.config import configured_providers
from modelplex.errors import ModelplexError, redact

if TYPE_CHECKING:
    from modelplex.provider import Provider
    from modelplex.types import ModelInfo

__all__ = ["models"]


@click.group()
def models() -> None:
    """List, inspect and manage models."""


def _model_rows(infos: list[ModelInfo]) -> list[list[str]]:
    return [[i.id, i.family or "", i.parameter_size or "", i.quantization or "", i.size or "",
             str(i.context_length or "")] for i in infos]


@models.command("list")
@click.option("-p", "--provider", multiple=True, help="Only this provider (repeatable).")
@click.option("-s", "--search", "query", help="Words the model's name or family must contain.")
@click.option("-c", "--capability", multiple=True,
              help="Required capability, e.g. tools, vision, embeddings, json (repeatable).")
@click.option("--min-context", type=int, help="Smallest context length in tokens.")
@click.option("--local/--remote", "local", default=None,
              help="Only in-process or loopback providers / only remote ones.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models_list(provider: tuple[str, ...], query: str | None, capability: tuple[str, ...],
                min_context: int | None, local: bool | None, as_json: bool) -> None:
    """List the models of every provider, fetched concurrently (a provider that is down is
    reported, not fatal), optionally searched and filtered."""
    from modelplex.registry import ModelRegistry

    names = [n for p in provider for n in provider_names(p)] or None

    async def gather() -> tuple[list[ModelInfo], dict[str, str], list[str]]:
        async with configured_providers() as (get_provider, named), ModelRegistry(
                providers=names, get_provider=get_provider, named_models=named) as registry:
            found = await registry.search(query, capability=list(capability),
                                          min_context=min_context, local=local)
            missing = [f"{name}: not configured: set {listing.missing}"
                       for name, listing in (await registry.listings()).items()
                       if listing.missing]
            if capability and not found:  # a misspelt capability matched nothing, silently
                missing += _unknown_capabilities(capability, await registry.search(None))
            return found, await registry.errors(), missing

    found, failed, missing = run(gather())
    if as_json:
        click.echo(json.dumps({"models": [m.model_dump(mode="json") for m in found],
                               "errors": failed}, indent=2))
    else:
        print_table(["MODEL", "FAMILY", "PARAMS", "QUANT", "SIZE", "CONTEXT", "CAPABILITIES"],
                     [[*row, ",".join(m.capabilities)]
                      for row, m in zip(_model_rows(found), found, strict=True)])
        for name, err in failed.items():
            click.echo(f"{name}: unavailable: {redact(str(err))}", err=True)
        for line in missing:  # not contacted: no key and no base URL of the user's
            click.echo(line, err=True)
    if failed and not found and len(failed) == len(names or provider_names(None)):
        sys.exit(1)


def _unknown_capabilities(asked: Sequence[str], listed: Sequence[ModelInfo]) -> list[str]:
    """A line for each capability no listed model has (with the closest one that some has)."""
    from modelplex.errors import did_you_mean
    from modelplex.registry import normalize_capabilities

    known = sorted({c for m in listed for c in m.capabilities})
    vocabulary = {*known, "chat", "completion", "embeddings", "tools", "vision", "json",
                  "thinking"}
    return [f"no model lists the capability {name!r}{did_you_mean(name, vocabulary)}; the models "
            f"listed have: {', '.join(known) or 'none'}"
            for name in normalize_capabilities(asked) if name not in known]


@models.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models_show(name: str, as_json: bool) -> None:
    """Show one model, named provider:model."""
    from modelplex.specs import parse_model_spec

    provider_name, model = parse_model_spec(name)

    async def show(p: Provider) -> ModelInfo:
        return await p.show_model(model or p.default_model or "")

    info = run(with_provider(provider_name, show))
    data = info.model_dump(mode="json")
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for key, value in data.items():
        if value not in (None, [], {}):
            click.echo(f"{key:15} {value}")


@models.command("pull")
@click.argument("name")
def models_pull(name: str) -> None:
    """Download a model, named provider:model, with a progress bar."""
    from modelplex.specs import parse_model_spec

    provider_name, model = parse_model_spec(name)
    if not model:
        raise click.UsageError("name the model to pull as provider:model")

    async def pull(p: Provider) -> None:
        from modelplex.cli._progress import ProgressBar

        bar = ProgressBar(sys.stderr)
        async for event in p.pull_model(model):
            bar.update(event)
        bar.finish()

    run(with_provider(provider_name, pull))


@models.command("rm")
@click.argument("name")
def models_rm(name: str) -> None:
    """Delete a model, named provider:model."""
    from modelplex.specs import parse_model_spec

    provider_name, model = parse_model_spec(name)
    if not model:
        raise click.UsageError("name the model to delete as provider:model")
    run(with_provider(provider_name, lambda p: p.delete_model(model)))
    click.echo(f"deleted {name}")


@models.command("ps")
@click.option("-p", "--provider", help="Only this provider.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models_ps(provider: str | None, as_json: bool) -> None:
    """List the models loaded in memory now."""
    from modelplex.errors import UnsupportedOperationError

    async def gather() -> list[ModelInfo]:
        found: list[ModelInfo] = []
        for name in provider_names(provider):
            try:
                found += await with_provider(name, lambda p: p.list_loaded_models())
            except UnsupportedOperationError:
                continue
            except ModelplexError as err:
                click.echo(f"{name}: unavailable: {redact(str(err))}", err=True)
        return found

    found = run(gather())
    if as_json:
        click.echo(json.dumps([m.model_dump(mode="json") for m in found], indent=2))
    else:
        print_table(["MODEL", "SIZE", "CONTEXT"],
                     [[m.id, m.size or "", str(m.context_length or "")] for m in found])


@models.command("verify")
@click.argument("model_or_path")
@click.option("--sha256", "expected", metavar="HEX",
              help="The expected sha256 (default: the provider's listing, else FILE.sha256).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models_verify(model_or_path: str, expected: str | None, as_json: bool) -> None:
    """Check a local GGUF file's sha256 against its known hash.

    MODEL_OR_PATH is a file, or a model a provider lists with its file (llamacpp:smollm2).
    Exit status: 0 the hashes match, 1 they differ (or the file cannot be checked), 2 no
    hash is known to compare with (the file's hash is printed: pass it with --sha256).
    """
    from modelplex.integrity import verify_file

    path, known, source = Path(model_or_path).expanduser(), None, None
    try:
        missing = not path.exists()
    except OSError:  # a name too long to be a model: verify_file says what is wrong
        missing = False
    if missing and not model_or_path.endswith(".gguf"):
        path, known, source = run(_model_file(model_or_path))
    result = verify_file(path, expected if expected is not None else known,
                         source="--sha256" if expected is not None else source)
    status = {True: "OK", False: "MISMATCH", None: "UNKNOWN"}[result.ok]
    if as_json:
        click.echo(json.dumps({"path": str(result.path), "sha256": result.actual,
                               "expected": result.expected, "source": result.source,
                               "size": result.size, "status": status.lower()}, indent=2))
    elif result.ok is None:
        click.echo(f"{result.path}: sha256 {result.actual}\n"
                   "no known hash to compare with: pass --sha256 HEX (or put it in "
                   f"{result.path.name}.sha256)")
    elif result.ok:
        click.echo(f"{result.path}: OK (sha256 {result.actual}, from {result.source})")
    else:
        click.echo(f"{result.path}: MISMATCH: sha256 is {result.actual}, expected "
                   f"{result.expected} (from {result.source}): the file is damaged or not "
                   "the one expected", err=True)
    if not result.ok:
        sys.exit(2 if result.ok is None else 1)


async def _model_file(name: str) -> tuple[Path, str | None, str | None]:
    """The local file of a listed model, and the sha256 its listing gives (with where from)."""
    from modelplex.errors import ConfigurationError
    from modelplex.specs import parse_model_spec

    provider_name, model = parse_model_spec(name)

    async def show(p: Provider) -> ModelInfo:
        return await p.show_model(model or p.default_model or "")

    info = await with_provider(provider_name, show)
    where = info.details.get("path")
    if not where:
        raise ConfigurationError(f"{info.id} has no local file to verify (its provider keeps "
                                 "it elsewhere): give the path of a GGUF file")
    sha = info.details.get("sha256")
    return Path(str(where)), str(sha) if sha else None, f"the {provider_name} listing"
