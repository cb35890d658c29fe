"""``modelplex config show|path`` and ``modelplex stats``: the configuration and the router.

Heavy modules are imported inside the commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import click

from modelplex.cli.timeouts import provider_configs

if TYPE_CHECKING:
    from modelplex.provider import Provider

__all__ = ["config_group", "configured_providers", "stats_command"]


@contextlib.asynccontextmanager
async def configured_providers() -> AsyncIterator[tuple[Callable[[str], Provider],
                                                         dict[str, str]]]:
    """For the model registry of a command: a ``get_provider(name)`` that builds providers
    with the config's ``[providers.NAME]`` keywords and the command's timeouts (closed on
    exit), and the named models of the config (``name -> provider:model``)."""
    from modelplex.config import get_config
    from modelplex.plugins import get_plugins
    from modelplex.pool import provider_kwargs
    from modelplex.specs import create_provider

    config = get_config()
    timeouts = provider_configs()
    built: dict[str, Provider] = {}

    def get_provider(name: str) -> Provider:
        if name not in built:
            factory = get_plugins().get("providers", name)
            kwargs = {**config.provider_kwargs(name), **timeouts.get(name, {})}
            built[name] = create_provider(name, **provider_kwargs(factory, kwargs))
        return built[name]

    try:
        yield get_provider, {name: model.deployments[0].model
                             for name, model in config.models.items()}
    finally:
        for provider in built.values():
            with contextlib.suppress(Exception):
                await provider.aclose()


@click.group("config")
def config_group() -> None:
    """Show the configuration file: providers, named models and the other tables."""


@config_group.command("path")
def config_path_command() -> None:
    """Print where the config file is read from (MODELPLEX_CONFIG, else the user dir)."""
    from modelplex import env
    from modelplex.config import config_path

    path = config_path()
    click.echo(str(path))
    if env.config_file() and not path.is_file():  # every command fails until it is fixed
        click.echo("(the file does not exist: MODELPLEX_CONFIG names it, so commands fail "
                   "until you create it or unset the variable)", err=True)
    elif not path.exists():
        click.echo("(the file does not exist yet: modelplex uses defaults)", err=True)


@config_group.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the default is TOML).")
def config_show(as_json: bool) -> None:
    """Print the configuration in effect, with every secret masked, in the config file's
    format: the output read back as a config file is the same configuration."""
    from modelplex.config import load_config, to_toml

    config = load_config()
    defaults = {name: field.get_default(call_default_factory=True)
                for name, field in type(config).model_fields.items()}
    missing = object()
    data = {key: value for key, value in config.masked().items()  # the top level's defaults
            if value is not None and value != {} and value != defaults.get(key, missing)}
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    source = str(config.source or "no config file: defaults").replace("\n", " ")
    click.echo(f"# {source}\n{to_toml(data)}".rstrip("\n"))


def _ms(value: float | None) -> str:
    """A percentile in milliseconds, ``-`` when nothing was measured yet."""
    return "-" if value is None else f"{value:.1f} ms"


def _print_stats(stats: list[dict[str, Any]]) -> None:
    for entry in stats:
        lat, ttft = entry["latency_ms"], entry["ttft_ms"]
        click.echo(f"{entry['model']} ({entry['strategy']}): {entry['requests']} requests, "
                   f"error rate {entry['error_rate']:.1%}, latency p50 {_ms(lat['p50'])} "
                   f"p99 {_ms(lat['p99'])}, TTFT p50 {_ms(ttft['p50'])}")
        for label, dep in entry["deployments"].items():
            errors = ", ".join(f"{k} {v}" for k, v in dep["errors"].items()) or "none"
            click.echo(f"  {label}: {dep['requests']} requests, {dep['successes']} ok, "
                       f"errors: {errors}; tokens {dep['prompt_tokens']} in / "
                       f"{dep['completion_tokens']} out; latency p50 "
                       f"{_ms(dep['latency_ms']['p50'])}")


@click.command("stats")
@click.option("-m", "--model", "models", multiple=True,
              help="Model(s) to show: a named model or provider:model (default: every named "
                   "model of the config).")
@click.option("-p", "--prompt", help="Send this prompt through the model(s) first.")
@click.option("-n", "--repeat", default=1, show_default=True, type=click.IntRange(1, 10000),
              help="How many times to send the prompt.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def stats_command(models: tuple[str, ...], prompt: str | None, repeat: int,
                  as_json: bool) -> None:
    """Usage statistics of models (requests, errors, tokens, latency percentiles), named
    models or plain provider:model ones.

    The statistics are those of this process: with --prompt, the command sends the prompt
    N times through each model and reports what happened (a quick check of a config).
    """
    from modelplex.config import get_config
    from modelplex.errors import ConfigurationError, ProviderError, redact
    from modelplex.pipeline import open_model, open_router, release_model

    config = get_config()
    names = list(models) or sorted(config.models)
    if not names:
        raise ConfigurationError(f"no named models are configured: add [models.NAME] tables "
                                 f"to {config.source or 'the config file'} "
                                 "(see `modelplex config path`), or name one with "
                                 "-m provider:model")

    async def one(name: str) -> dict[str, Any]:
        close: Callable[[], Awaitable[None]]
        if name in config.models:
            router: Any = await open_router(name, config=config)
            model = name

            async def close() -> None:
                await release_model(router)
        else:  # a plain provider:model: the router of one its stack stands on
            lease = await open_model(name, config=config, cache=False, caller="cli")
            router, model, close = lease.base, lease.model, lease.release
        try:
            for _ in range(repeat if prompt else 0):
                try:
                    await router.complete([{"role": "user", "content": prompt}], model=model)
                except ProviderError as err:
                    click.echo(f"{name}: {type(err).__name__}: {redact(str(err))}", err=True)
            return {**router.stats(), "model": name}
        finally:
            await close()

    async def run() -> list[dict[str, Any]]:
        return [await one(name) for name in names]

    result = asyncio.run(run())
    if as_json:
        json.dump(result, sys.stdout, indent=2)
        click.echo()
    else:
        _print_stats(result)

