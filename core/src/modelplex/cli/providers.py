"""``modelplex providers`` and ``modelplex plugins``: what is installed, and whether it works."""

from __future__ import annotations

import asyncio
import json

import click

from modelplex.cli._common import provider_names, run, with_provider
from modelplex.errors import ModelplexError
from modelplex.masking import mask

__all__ = ["plugins", "providers"]


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def providers(as_json: bool) -> None:
    """Each installed provider and whether it is healthy (a hosted API without a key is
    "not configured", and is not contacted)."""
    from modelplex.provider import Provider
    from modelplex.types import HealthStatus

    async def probe(provider: Provider) -> HealthStatus:
        missing = provider.missing_setting()
        if missing:
            return HealthStatus(provider=provider.name, healthy=False,
                                detail=f"not configured: set {missing}")
        return await provider.health()

    async def check(name: str) -> HealthStatus:
        try:
            return await asyncio.wait_for(with_provider(name, probe), 30)
        except ModelplexError as err:
            return HealthStatus(provider=name, healthy=False, detail=str(err))
        except TimeoutError:
            return HealthStatus(provider=name, healthy=False, detail="no answer within 30 s")

    async def gather() -> list[HealthStatus]:
        return list(await asyncio.gather(*(check(n) for n in provider_names(None))))

    statuses = run(gather())
    if as_json:
        click.echo(json.dumps(mask([s.model_dump(mode="json") for s in statuses]), indent=2))
        return
    if not statuses:
        click.echo("No providers installed. Install one, e.g. `pip install modelplex-llamacpp`.")
    for s in statuses:
        state = ("ok" if s.healthy else "off" if (s.detail or "").startswith("not configured")
                 else "unavailable")
        extra = [f"{s.model_count} models"] if s.model_count is not None else []
        if s.version:
            extra.append(f"version {s.version}")
        if s.detail:
            extra.append(mask(s.detail))
        click.echo(f"{s.provider:12} {state:12} {'; '.join(extra)}".rstrip())


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--all", "include_builtins", is_flag=True, help="Include the built-ins.")
def plugins(as_json: bool, include_builtins: bool) -> None:
    """Installed plugins: name, version, hooks and load error if any."""
    from modelplex.plugins import list_plugins

    infos = list_plugins(include_builtins=include_builtins)
    if as_json:
        click.echo(json.dumps([i.to_dict() for i in infos], indent=2))
        return
    if not infos:
        click.echo("No plugins installed.")
    for info in infos:
        line = f"{info.name:12} {info.version or '-':10} {', '.join(info.hooks)}"
        click.echo(line + (f"\n    error: {info.error}" if info.error else ""))
