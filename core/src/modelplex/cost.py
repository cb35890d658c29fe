"""What an answer cost: prices per million tokens, from ``genai-prices`` or the config file.

::

    book = PriceBook.from_config(get_config())
    cost = book.cost("openai", "gpt-4o-mini", usage)  # Cost(amount=0.00021, known=True)

Where a price comes from, first match wins:

1. the config file's ``[prices."provider:model"]`` tables (``input``, ``output``,
   ``cache_read``, ``cache_write`` per million tokens, ``currency``; ``"provider:*"`` prices
   every model of a provider), for private deployments and negotiated prices;
2. models run on this machine (``llamacpp``, ``ollama``, ``lmstudio``) cost nothing;
3. the `genai-prices <https://pypi.org/project/genai-prices/>`_ package, kept up to date by
   its maintainers, for known provider/model pairs (``openai``, ``anthropic``, ...).

A request sent through a provider's Batch API (``batch=True``) is priced with genai-prices'
batch prices where it has them; otherwise OpenAI's and Anthropic's Batch APIs cost half the
standard price (both document a 50% discount), and so do config prices for those providers.

Anything else is *unknown*: ``Cost.known`` is false and ``Cost.amount`` is ``None``, never 0,
so a sum of costs never silently undercounts. An answer served from the response cache cost
nothing. ``genai-prices`` is imported the first time a remote model is priced.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import attrs

from modelplex.config import Config, PriceConfig, get_config, parse_config

if TYPE_CHECKING:
    from modelplex.chunks import Usage

__all__ = ["LOCAL_PROVIDERS", "Cost", "PriceBook", "cost_of", "default_price_book",
           "token_details", "total_cost"]

#: Providers that run the model on this machine: their answers cost nothing.
LOCAL_PROVIDERS = frozenset({"llamacpp", "ollama", "lmstudio"})

#: Providers whose Batch API costs half the standard price (their documented discount).
BATCH_DISCOUNT: Mapping[str, float] = {"openai": 0.5, "anthropic": 0.5}

#: modelplex provider names -> genai-prices provider ids (where they differ).
_GENAI_PROVIDERS: Mapping[str, str] = {"openai": "openai", "anthropic": "anthropic"}

@attrs.frozen
class Cost:
    """The cost of one answer.

    ``amount`` is in ``currency`` (``None`` when the price is unknown: ``known`` is then
    false); ``source`` says where the price came from (``"config"``, ``"local"``,
    ``"genai-prices"``, ``"cache"``); ``estimated`` is true when the token counts were
    estimated, not reported by the provider.
    """

    amount: float | None
    currency: str = "USD"
    known: bool = True
    source: str | None = None
    estimated: bool = False

    @classmethod
    def unknown(cls) -> Cost:
        """A cost nobody knows (one shared instance: it is frozen)."""
        if cls is Cost:
            return _UNKNOWN
        return cls(amount=None, known=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return attrs.asdict(self)


_UNKNOWN = Cost(amount=None, known=False)


def _amount(price: PriceConfig, usage: Usage) -> float:
    """What ``usage`` costs at ``price`` (per million tokens)."""
    read, write, _ = token_details(usage)
    plain = max(0, usage.prompt_tokens - read - write)
    cache_read = price.input if price.cache_read is None else price.cache_read
    cache_write = price.input if price.cache_write is None else price.cache_write
    total = (plain * price.input + read * cache_read + write * cache_write
             + usage.completion_tokens * price.output)
    return total / 1_000_000


def total_cost(costs: Iterable[Cost | None]) -> Cost | None:
    """The cost of several answers (a tool loop's requests): unknown when any is unknown or
    the currencies differ; ``None`` for no answers."""
    items = list(costs)
    if not items:
        return None
    if any(c is None or not c.known or c.amount is None for c in items):
        return Cost.unknown()
    known = [c for c in items if c is not None]
    if len({c.currency for c in known}) > 1:
        return Cost.unknown()
    sources = {c.source for c in known}
    return Cost(amount=sum(c.amount or 0.0 for c in known), currency=known[0].currency,
                source=sources.pop() if len(sources) == 1 else "mixed",
                estimated=any(c.estimated for c in known))


def token_details(usage: Usage) -> tuple[int, int, int]:
    """``(cache read, cache write, reasoning)`` tokens where the provider reported them
    (Anthropic's ``cache_read_input_tokens``, say); 0 otherwise. They are parts of the prompt
    and completion counts, not additions to them."""
    read = getattr(usage, "cache_read_input_tokens", None) or getattr(
        usage, "cache_read_tokens", None) or 0
    write = getattr(usage, "cache_creation_input_tokens", None) or getattr(
        usage, "cache_write_tokens", None) or 0
    reasoning = getattr(usage, "reasoning_tokens", None) or 0
    return int(read), int(write), int(reasoning)


class PriceBook:
    """Prices for provider/model pairs (see the module docs for the order of sources).

    Args:
        overrides: ``{"provider:model": {"input": ..., "output": ...}}`` (the config file's
            ``prices`` table), ``"provider:*"`` for every model of a provider.
        use_genai_prices: look prices up in the ``genai-prices`` package.
    """

    def __init__(self, overrides: Mapping[str, PriceConfig | Mapping[str, Any]] | None = None,
                 *, use_genai_prices: bool = True) -> None:
        config = parse_config({"prices": dict(overrides or {})}, source="prices")
        self.overrides: dict[str, PriceConfig] = dict(config.prices)
        self.use_genai_prices = use_genai_prices

    @classmethod
    def from_config(cls, config: Config | None) -> PriceBook:
        """The price book of a configuration (its ``prices`` table)."""
        if config is None:
            return cls()
        return _book_for(config)

    def cost(self, provider: str, model: str, usage: Usage | None, *,
             cached: bool | None = None, batch: bool = False) -> Cost:
        """What ``usage`` on ``provider:model`` cost; unknown without usage or price.

        ``batch``: the request went through the provider's Batch API (see the module docs).
        """
        if usage is None:
            return Cost.unknown()
        if cached if cached is not None else usage.cached:
            return Cost(amount=0.0, source="cache")
        estimated = bool(usage.estimated)
        price = self.overrides.get(f"{provider}:{model}") or self.overrides.get(f"{provider}:*")
        discount = BATCH_DISCOUNT.get(provider, 1.0) if batch else 1.0
        if price is not None:
            return Cost(amount=_amount(price, usage) * discount,
                        currency=price.currency.upper(), source="config", estimated=estimated)
        if provider in LOCAL_PROVIDERS:
            return Cost(amount=0.0, source="local", estimated=estimated)
        if self.use_genai_prices:
            amount = None
            if batch:
                amount = _genai_batch_price(provider, model, usage)
            if amount is None:
                amount = _genai_price(provider, model, usage)
                if amount is not None and batch:
                    if provider not in BATCH_DISCOUNT:
                        return Cost.unknown()  # no known batch price
                    amount *= discount
            if amount is not None:
                return Cost(amount=amount, source="genai-prices", estimated=estimated)
        return Cost.unknown()


_books: dict[int, tuple[Config, PriceBook]] = {}


def _book_for(config: Config) -> PriceBook:
    found = _books.get(id(config))
    if found is not None and found[0] is config:
        return found[1]
    book = PriceBook()
    book.overrides = dict(config.prices)
    if len(_books) > 32:
        _books.clear()
    _books[id(config)] = (config, book)
    return book


def default_price_book() -> PriceBook:
    """The price book of the process-wide configuration."""
    return PriceBook.from_config(get_config())


def cost_of(provider: str, model: str, usage: Usage | None, *,
            config: Config | None = None, batch: bool = False) -> Cost:
    """What ``usage`` on ``provider:model`` cost, with the prices of ``config`` (default:
    the process-wide configuration); ``batch``: sent through the provider's Batch API."""
    book = PriceBook.from_config(config) if config is not None else default_price_book()
    return book.cost(provider, model, usage, batch=batch)


def _genai_batch_price(provider: str, model: str, usage: Usage) -> float | None:
    """The genai-prices batch price of ``usage`` (its ``processing: batch`` variant) when the
    package has flat batch prices for the model; ``None`` otherwise."""
    provider_id = _GENAI_PROVIDERS.get(provider)
    if provider_id is None or not model:
        return None
    try:
        from genai_prices import data_snapshot

        snapshot = data_snapshot.get_snapshot()
        found = snapshot.find_provider_model(model, None, provider_id, None)
        info = found[1]
        now = datetime.now(UTC)
        standard = info.get_prices(now)
        price = info.get_prices(now, {"processing": "batch"})
    except (ImportError, LookupError, AttributeError, TypeError, ValueError):
        return None  # another genai-prices version, or an unknown model
    if price == standard:
        return None  # no batch variant
    from decimal import Decimal

    values = [getattr(price, name, None) for name in ("input_mtok", "output_mtok",
                                                      "cache_read_mtok", "cache_write_mtok")]
    if any(v is not None and not isinstance(v, Decimal | int | float) for v in values):
        return None  # tiered
    rin, rout, rread, rwrite = (None if v is None else float(v) for v in values)
    read, write, _ = token_details(usage)
    plain = max(0, usage.prompt_tokens - read - write)
    base = rin or 0.0
    return (plain * base + read * (base if rread is None else rread)
            + write * (base if rwrite is None else rwrite)
            + usage.completion_tokens * (rout or 0.0)) / 1_000_000


_found: dict[tuple[int, str, str], Any] = {}  # (snapshot, provider, model) -> match or None
_rates: dict[tuple[int, str, str], tuple[float, Any]] = {}  # -> (until, flat rates or None)
_snapshots: dict[int, Any] = {}  # the snapshot the keys' ids are of (an id can be reused)


def _flat_rates(model: Any) -> tuple[float, float, float | None, float | None] | None:
    """The model's prices now per million tokens (input, output, cache read, cache write),
    or ``None`` when one of them is tiered (then the package computes the price)."""
    from decimal import Decimal

    price = model.get_prices(datetime.now(UTC))
    values = [getattr(price, name, None) for name in ("input_mtok", "output_mtok",
                                                      "cache_read_mtok", "cache_write_mtok")]
    if any(v is not None and not isinstance(v, Decimal | int | float) for v in values):
        return None
    rin, rout, read, write = (None if v is None else float(v) for v in values)
    return (rin or 0.0, rout or 0.0, read, write)


def _genai_price(provider: str, model: str, usage: Usage) -> float | None:
    """The genai-prices price of ``usage``. The model lookup (a scan of every model) is done
    once per provider and model, and its flat prices are kept for a minute, so pricing an
    answer costs microseconds; tiered prices go through the package's own calculation."""
    provider_id = _GENAI_PROVIDERS.get(provider)
    if provider_id is None or not model:
        return None
    if _snapshots:  # a model it does not know is known after one dict lookup
        current = sys.modules["genai_prices.data_snapshot"].get_snapshot()
        if _snapshots.get(id(current)) is current and \
                _found.get((id(current), provider_id, model), 0) is None:
            return None
    try:
        import genai_prices
        from genai_prices import data_snapshot
    except ImportError:  # pragma: no cover - a dependency of modelplex
        return None
    read, write, _ = token_details(usage)
    try:
        snapshot = data_snapshot.get_snapshot()
        key = (id(snapshot), provider_id, model)
        if key not in _found or _snapshots.get(id(snapshot)) is not snapshot:
            if len(_found) > 1024 or _snapshots.get(id(snapshot)) is not snapshot:
                _found.clear()
                _rates.clear()
                _snapshots.clear()
                _snapshots[id(snapshot)] = snapshot
            try:
                _found[key] = snapshot.find_provider_model(model, None, provider_id, None)
            except LookupError:
                _found[key] = None
        match = _found[key]
        if match is None:
            return None
        now = time.monotonic()
        cached = _rates.get(key)
        if cached is None or cached[0] < now:
            cached = _rates[key] = (now + 60.0, _flat_rates(match[1]))
        rates = cached[1]
        if rates is not None:
            rin, rout, rread, rwrite = rates
            plain = max(0, usage.prompt_tokens - read - write)
            return (plain * rin + read * (rin if rread is None else rread)
                    + write * (rin if rwrite is None else rwrite)
                    + usage.completion_tokens * rout) / 1_000_000
        counts = genai_prices.Usage(input_tokens=usage.prompt_tokens,
                                    output_tokens=usage.completion_tokens,
                                    cache_read_tokens=read or None,
                                    cache_write_tokens=write or None)
        calc = match[1].calc_price(counts, match[0], genai_request_timestamp=datetime.now(UTC),
                                   auto_update_timestamp=None)
    except (AttributeError, TypeError):  # another genai-prices version: its public call
        try:
            calc = genai_prices.calc_price(
                genai_prices.Usage(input_tokens=usage.prompt_tokens,
                                   output_tokens=usage.completion_tokens,
                                   cache_read_tokens=read or None,
                                   cache_write_tokens=write or None),
                model, provider_id=provider_id)
        except (LookupError, ValueError):
            return None
    except ValueError:
        return None
    return float(calc.total_price)
