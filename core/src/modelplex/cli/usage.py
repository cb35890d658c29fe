"""``modelplex usage`` (also ``modelplex logs stats``): tokens, cost, requests, errors and
latency from the log database, by model, provider or day."""

from __future__ import annotations

import json

import click

__all__ = ["usage"]


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


@click.command("usage")
@click.option("--since", default="7d", show_default=True,
              help="The period: 30m, 24h, 7d, 2w, a date (2026-12-01), or all.")
@click.option("--by", "by", type=click.Choice(["model", "provider", "day"]), default="model",
              show_default=True, help="Group by model, provider or day (UTC).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--database", type=click.Path(dir_okay=False),
              help="The log database (default: the user's data dir).")
def usage(since: str, by: str, as_json: bool, database: str | None) -> None:
    """Tokens, cost, requests, errors, latency and time to first token per model, provider
    or day, from the exchanges in the log database. A price that is not known is reported
    as unknown, never as zero."""
    from modelplex.cli.logs import _store
    from modelplex.usage import parse_since, usage_report

    start = parse_since(since)
    store = _store(database)
    try:
        rows = usage_report(store, since=start, by=by)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps({"since": start.isoformat() if start else None, "by": by,
                               "rows": [row.to_dict() for row in rows]}, indent=2))
        return
    period = f"since {start:%Y-%m-%d %H:%M} UTC" if start else "in all the logs"
    if not rows:
        click.echo(f"No requests {period}.")
        return
    header = (by, "requests", "errors", "cached", "input tok", "output tok", "cost",
              "p50 s", "p95 s", "ttft p50 s")
    table = [header] + [
        (row.key, str(row.requests), str(row.errors), str(row.cache_hits),
         str(row.input_tokens), str(row.output_tokens), row.cost_text(),
         _seconds(row.latency_p50), _seconds(row.latency_p95), _seconds(row.ttft_p50))
        for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    click.echo(f"Usage {period}, by {by}:")
    for line in table:
        cells = [line[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in
                                              zip(line[1:], widths[1:], strict=True)]
        click.echo("  ".join(cells).rstrip())
