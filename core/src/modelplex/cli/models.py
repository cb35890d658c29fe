"""``modelplex models list|show|pull|rm|ps``: the models of every provider, and managing them."""

from __future__ import annotations

import json
import sys
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

    async def gather() -> tuple[list[ModelInfo], dict[str, str]]:
        async with configured_providers() as (get_provider, named), ModelRegistry(
                providers=names, get_provider=get_provider, named_models=named) as registry:
            found = await registry.search(query, capability=list(capability),
                                          min_context=min_context, local=local)
            return found, await registry.errors()

    found, failed = run(gather())
    if as_json:
        click.echo(json.dumps({"models": [m.model_dump(mode="json") for m in found],
                               "errors": failed}, indent=2))
    else:
        print_table(["MODEL", "FAMILY", "PARAMS", "QUANT", "SIZE", "CONTEXT", "CAPABILITIES"],
                     [[*row, ",".join(m.capabilities)]
                      for row, m in zip(_model_rows(found), found, strict=True)])
        for name, err in failed.items():
            click.echo(f"{name}: unavailable: {redact(str(err))}", err=True)
    if failed and not found and len(failed) == len(names or provider_names(None)):
        sys.exit(1)


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
