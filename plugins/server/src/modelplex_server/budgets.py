"""Budgets of API keys: how much a key may spend per day, week or month (UTC).

``budget = "50/month"`` is 50 USD a calendar month, counted from the prices of the answers
(:mod:`modelplex.cost` when the installed modelplex has it: config prices, local models at
0, ``genai-prices``); ``budget = "2000000 tokens/day"`` (or ``"2M tokens/day"``) counts
prompt and completion tokens, which every answer has. Spend is kept per key and period in
the conversation store (:meth:`~modelplex_server.conversations.ConversationStore.add_spend`),
so every worker and replica sharing a store shares it. A key whose spend reached its budget
is refused with 429 ``budget_exceeded`` until the period ends.
"""

from __future__ import annotations

import importlib
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from modelplex.chunks import Usage

__all__ = ["PERIODS", "Budget", "Spend", "cost_of", "period_bounds"]

PERIODS = ("day", "week", "month")

_BUDGET = re.compile(r"^\s*\$?\s*(?P<amount>\d+(?:\.\d+)?)\s*(?P<scale>[kKmM])?\s*"
                     r"(?P<unit>usd|\$|tokens?)?\s*/\s*(?P<period>day|week|month)\s*$",
                     re.IGNORECASE)


@attrs.frozen
class Spend:
    """What a key spent in one period."""

    tokens: int = 0
    cost: float = 0.0
    requests: int = 0


def period_bounds(period: str, now: datetime | None = None) -> tuple[str, datetime, datetime]:
    """The period containing ``now``: its name (``month:2026-12``, ``week:2026-W49``,
    ``day:2026-12-04``), start and end (UTC)."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return f"day:{day:%Y-%m-%d}", day, day + timedelta(days=1)
    if period == "week":
        start = day - timedelta(days=day.weekday())
        year, week, _ = start.isocalendar()
        return f"week:{year}-W{week:02d}", start, start + timedelta(days=7)
    if period == "month":
        start = day.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
        return f"month:{start:%Y-%m}", start, end
    raise ValueError(f"unknown budget period {period!r} (valid: {', '.join(PERIODS)})")


@attrs.frozen
class Budget:
    """A key's budget: ``amount`` of ``unit`` (``usd`` or ``tokens``) per ``period``."""

    amount: float
    unit: str
    period: str

    @classmethod
    def parse(cls, text: str) -> Budget:
        """``"50/month"``, ``"$12.5/week"``, ``"2000000 tokens/day"``, ``"2M tokens/month"``."""
        match = _BUDGET.match(text)
        if match is None:
            raise ValueError(f"budget {text!r} is not AMOUNT/PERIOD: e.g. '50/month' (USD) or "
                             f"'2000000 tokens/day'; periods: {', '.join(PERIODS)}")
        amount = float(match["amount"]) * {"k": 1e3, "m": 1e6}.get(
            (match["scale"] or "").lower(), 1)
        unit = "tokens" if (match["unit"] or "").lower().startswith("token") else "usd"
        if unit == "usd" and match["scale"]:
            raise ValueError(f"budget {text!r}: k/M scale token budgets ('2M tokens/day')")
        if amount <= 0:
            raise ValueError(f"budget {text!r} must be more than 0")
        return cls(amount=amount, unit=unit, period=match["period"].lower())

    def __str__(self) -> str:
        if self.unit == "tokens":
            return f"{int(self.amount)} tokens/{self.period}"
        return f"{self.amount:g} USD/{self.period}"

    def used(self, spend: Spend) -> float:
        """What ``spend`` counts against this budget."""
        return float(spend.tokens) if self.unit == "tokens" else spend.cost

    def describe(self, spend: Spend, now: datetime | None = None) -> dict[str, Any]:
        """The budget, its spend and when it resets, as ``/api/keys/me`` shows it."""
        _, start, end = period_bounds(self.period, now)
        used = self.used(spend)
        return {"amount": self.amount, "unit": self.unit, "period": self.period,
                "spent": used, "remaining": max(0.0, self.amount - used),
                "tokens": spend.tokens, "cost": spend.cost, "requests": spend.requests,
                "period_start": start.isoformat().replace("+00:00", "Z"),
                "resets_at": end.isoformat().replace("+00:00", "Z")}


def cost_of(provider: str, model: str, usage: Usage, config: Any = None) -> float | None:
    """The USD cost of ``usage`` when the installed modelplex prices answers
    (``modelplex.cost``) and knows the model's price; else None."""
    try:
        module: Any = importlib.import_module("modelplex.cost")
    except ImportError:
        return None
    try:
        cost = module.cost_of(provider, model, usage, config=config)
    except Exception:  # a price lookup must not fail the accounting
        return None
    amount = getattr(cost, "amount", None)
    if not getattr(cost, "known", False) or amount is None:
        return None
    if str(getattr(cost, "currency", "USD")).upper() != "USD":
        return None
    return float(amount)
