"""Usage reports over the log database: tokens, cost, requests, errors and latency.

::

    from modelplex.usage import usage_report
    rows = usage_report(store, since="7d", by="model")
    for row in rows:
        print(row.key, row.requests, row.cost_text())

A cost is summed per currency over the exchanges whose price was known; the exchanges whose
price was not known are counted apart (``unknown_cost``) and a group made only of them has no
cost at all: an unknown price is never reported as zero.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import attrs

from modelplex.errors import ConfigurationError

if TYPE_CHECKING:
    from modelplex.store.logs import LogStore

__all__ = ["GROUPINGS", "UsageRow", "parse_since", "usage_report"]

GROUPINGS = ("model", "provider", "day")
_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(since: str | datetime | None, *, now: datetime | None = None) -> datetime | None:
    """The start of a period: ``7d``, ``24h``, ``30m``, ``2w``, an ISO date or time, or
    ``None`` (everything)."""
    if since is None or isinstance(since, datetime):
        return since if since is None or since.tzinfo else since.replace(tzinfo=UTC)
    text = since.strip()
    if not text or text.lower() == "all":
        return None
    match = _SPAN.match(text)
    if match:
        seconds = float(match.group(1)) * _UNITS[match.group(2).lower()]
        return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigurationError(f"--since {since!r} is not a period: use 30m, 24h, 7d, 2w, "
                                 "a date such as 2026-12-01, or all") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


@attrs.define
class UsageRow:
    """The usage of one group (a model, a provider or a day)."""

    key: str
    requests: int = 0
    errors: int = 0
    cache_hits: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: dict[str, float] = attrs.Factory(dict)  # by currency, known prices only
    unknown_cost: int = 0  # exchanges whose price is unknown
    latency_p50: float | None = None
    latency_p95: float | None = None
    ttft_p50: float | None = None
    ttft_p95: float | None = None

    def cost_text(self) -> str:
        """``$0.0123``, ``$0.0123 + unknown (2)``, ``unknown`` or ``-`` (no requests)."""
        known = " + ".join(_money(amount, currency)
                           for currency, amount in sorted(self.cost.items()))
        if self.unknown_cost:
            return f"{known} + unknown ({self.unknown_cost})" if known else "unknown"
        return known or ("$0" if self.requests else "-")

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON; ``cost`` is ``null`` when no price was known."""
        data = attrs.asdict(self)
        data["cost"] = dict(self.cost) if self.cost or not self.unknown_cost else None
        return data


def _money(amount: float, currency: str) -> str:
    text = f"{amount:.4f}" if amount < 100 else f"{amount:,.2f}"
    return f"${text}" if currency == "USD" else f"{text} {currency}"


def _key(row: Mapping[str, Any], by: str) -> str:
    if by == "model":
        return f"{row['provider']}:{row['model']}"
    if by == "provider":
        return str(row["provider"])
    return str(row["created_at"])[:10]


def summarize(rows: Iterable[Mapping[str, Any]], by: str) -> list[UsageRow]:
    """Group exchange rows (``provider``, ``model``, ``created_at``, tokens, ``cost``, ...)."""
    groups: dict[str, UsageRow] = {}
    latencies: dict[str, list[float]] = {}
    ttfts: dict[str, list[float]] = {}
    for row in rows:
        key = _key(row, by)
        group = groups.get(key)
        if group is None:
            group = groups[key] = UsageRow(key)
            latencies[key], ttfts[key] = [], []
        group.requests += 1
        error = row["error"]
        failed = error is not None and not str(error).startswith("incomplete")
        if failed:
            group.errors += 1
        if row["cached"]:
            group.cache_hits += 1
        group.input_tokens += row["prompt_tokens"] or 0
        group.output_tokens += row["completion_tokens"] or 0
        if row["cost"] is not None:
            currency = row["cost_currency"] or "USD"
            group.cost[currency] = group.cost.get(currency, 0.0) + float(row["cost"])
        elif not failed or row["prompt_tokens"]:
            group.unknown_cost += 1
        if not failed and row["latency"] is not None:
            latencies[key].append(float(row["latency"]))
        if not failed and row["time_to_first_token"] is not None:
            ttfts[key].append(float(row["time_to_first_token"]))
    for key, group in groups.items():
        group.latency_p50 = _percentile(latencies[key], 0.5)
        group.latency_p95 = _percentile(latencies[key], 0.95)
        group.ttft_p50 = _percentile(ttfts[key], 0.5)
        group.ttft_p95 = _percentile(ttfts[key], 0.95)
    return sorted(groups.values(), key=lambda g: g.key)


def usage_report(store: LogStore, *, since: str | datetime | None = "7d",
                 by: str = "model", now: datetime | None = None) -> list[UsageRow]:
    """The usage in ``store`` since ``since`` (see :func:`parse_since`), grouped ``by``
    ``model``, ``provider`` or ``day`` (UTC)."""
    if by not in GROUPINGS:
        raise ConfigurationError(f"cannot group usage by {by!r}: use {', '.join(GROUPINGS)}")
    start = parse_since(since, now=now)
    where, args = ("WHERE created_at >= ?", [start.astimezone(UTC).isoformat(
        timespec="milliseconds")]) if start is not None else ("", [])
    sql = ("SELECT provider, model, created_at, prompt_tokens, completion_tokens, latency, "
           f"time_to_first_token, error, cached, cost, cost_currency FROM exchanges {where} "
           "ORDER BY id")
    rows = store._read(lambda conn: conn.execute(sql, args).fetchall())
    return summarize(rows, by)
