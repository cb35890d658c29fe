"""Cost: genai-prices for known models, config overrides, local models free, unknown unknown."""

from __future__ import annotations

import attrs
import pytest

from modelplex.chunks import StreamChunk, Usage
from modelplex.config import parse_config
from modelplex.cost import Cost, PriceBook, cost_of
from modelplex.errors import ConfigurationError
from modelplex.manager import ResponseWithMeta
from modelplex.store.logs import Exchange, LogStore


@attrs.define(slots=True)
class CachingUsage(Usage):
    """Usage with Anthropic's prompt-cache counts (as modelplex-anthropic reports them)."""

    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


def test_a_known_model_is_priced_by_genai_prices() -> None:
    cost = PriceBook().cost("openai", "gpt-4o", Usage(prompt_tokens=1_000_000,
                                                      completion_tokens=100_000))
    assert cost.known and cost.source == "genai-prices" and cost.currency == "USD"
    assert cost.amount == pytest.approx(2.5 + 1.0)  # $2.50 in, $10 out per million


def test_cache_reads_are_cheaper_for_a_known_model() -> None:
    plain = PriceBook().cost("anthropic", "claude-3-5-haiku-latest",
                             Usage(prompt_tokens=10_000, completion_tokens=0))
    cached = PriceBook().cost("anthropic", "claude-3-5-haiku-latest",
                              CachingUsage(prompt_tokens=10_000, completion_tokens=0,
                                           cache_read_input_tokens=9_000))
    assert plain.amount is not None and cached.amount is not None
    assert cached.amount < plain.amount


def test_an_override_from_the_config_wins() -> None:
    config = parse_config({"prices": {
        "openai:gpt-4o": {"input": 1.0, "output": 2.0},
        "vllm:*": {"input": 0.5, "output": 0.5, "cache_read": 0.1, "currency": "eur"}}})
    book = PriceBook.from_config(config)
    cost = book.cost("openai", "gpt-4o", Usage(prompt_tokens=2_000_000,
                                               completion_tokens=1_000_000))
    assert cost == Cost(amount=4.0, currency="USD", known=True, source="config")
    private = book.cost("vllm", "anything", CachingUsage(prompt_tokens=1_000_000,
                                                          completion_tokens=0,
                                                          cache_read_input_tokens=1_000_000))
    assert private.amount == pytest.approx(0.1) and private.currency == "EUR"
    assert PriceBook.from_config(config) is book  # one book per configuration


def test_local_models_cost_nothing_and_a_cache_hit_neither() -> None:
    usage = Usage(prompt_tokens=500, completion_tokens=500)
    for provider in ("llamacpp", "ollama", "lmstudio"):
        assert PriceBook().cost(provider, "llama3.2", usage) == Cost(amount=0.0,
                                                                     source="local")
    hit = PriceBook().cost("openai", "gpt-4o", Usage(prompt_tokens=5, cached=True))
    assert hit == Cost(amount=0.0, source="cache")


def test_unknown_is_unknown_never_zero() -> None:
    usage = Usage(prompt_tokens=10, completion_tokens=10)
    for provider, model in [("openai", "my-finetune-xyz"), ("huggingface", "gpt2"),
                            ("someplugin", "m")]:
        cost = PriceBook().cost(provider, model, usage)
        assert cost == Cost.unknown()
        assert cost.amount is None and not cost.known
    assert PriceBook().cost("openai", "gpt-4o", None) == Cost.unknown()


def test_an_unknown_model_is_looked_up_once_per_price_snapshot(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A model genai-prices does not know is looked up in its snapshot once (the answer is
    kept, so pricing every row of a batch costs a dict lookup); a new snapshot (the package
    updated its prices) is asked again, and then knows the model."""
    from genai_prices import data_snapshot

    bundled = data_snapshot.get_snapshot()
    asked: list[str] = []

    class Counting:
        def __init__(self, inner: object, knows: bool) -> None:
            self.inner, self.knows = inner, knows

        def find_provider_model(self, model: str, *args: object) -> object:
            asked.append(model)
            if not self.knows:
                raise LookupError(model)
            return bundled.find_provider_model("gpt-4o", *args)

    usage = Usage(prompt_tokens=1_000_000, completion_tokens=100_000)
    monkeypatch.setattr(data_snapshot, "_custom_snapshot", Counting(bundled, knows=False))
    for _ in range(3):
        assert PriceBook().cost("openai", "not-a-model-xyz", usage) == Cost.unknown()
    assert asked == ["not-a-model-xyz"]
    monkeypatch.setattr(data_snapshot, "_custom_snapshot", Counting(bundled, knows=True))
    cost = PriceBook().cost("openai", "not-a-model-xyz", usage)
    assert cost.known and cost.amount == pytest.approx(2.5 + 1.0)
    assert asked == ["not-a-model-xyz", "not-a-model-xyz"]


def test_estimated_usage_is_flagged() -> None:
    cost = PriceBook().cost("openai", "gpt-4o", Usage(prompt_tokens=10, estimated=True))
    assert cost.known and cost.estimated


@pytest.mark.parametrize(("prices", "message"), [
    ({"gpt-4o": {"input": 1, "output": 1}}, r"prices.gpt-4o: name a provider and a model"),
    ({"openai:x": {"input": -1, "output": 1}}, r"greater than or equal to 0"),
    ({"openai:x": {"input": 1}}, r"output: Field required"),
    ({"openai:x": {"input": 1, "output": 1, "colour": 2}}, r"colour: unknown key"),
])
def test_bad_prices_fail_when_the_config_is_read(prices: dict[str, object],
                                                 message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_config({"prices": prices})


def test_response_with_meta_carries_the_cost() -> None:
    chunks = [StreamChunk(content="Hi", finish_reason="stop",
                          usage=Usage(prompt_tokens=1_000_000, completion_tokens=0))]
    meta = ResponseWithMeta.from_chunks(chunks, latency=0.1, time_to_first_token=0.05,
                                        model="gpt-4o-mini", provider="openai")
    assert meta.cost is not None and meta.cost.known
    assert meta.cost.amount == pytest.approx(0.15)
    local = ResponseWithMeta.from_chunks(chunks, latency=0.1, time_to_first_token=0.05,
                                         model="smollm2", provider="llamacpp")
    assert local.cost == Cost(amount=0.0, source="local")
    assert cost_of("nobody", "m", chunks[0].usage).known is False


async def test_the_log_store_keeps_the_cost(tmp_path: object) -> None:
    store = LogStore(f"{tmp_path}/logs.db")
    try:
        known = await store.record(Exchange(provider="openai", model="gpt-4o", prompt="p",
                                            cost=0.25, cost_currency="USD"))
        unknown = await store.record(Exchange(provider="x", model="y", prompt="p"))
        assert store.version == 4
        got = store.get(known)
        assert got is not None and got.cost == 0.25 and got.cost_currency == "USD"
        missing = store.get(unknown)
        assert missing is not None and missing.cost is None
    finally:
        store.close()


async def test_recording_stores_the_cost_of_the_deployment_that_answered(
        tmp_path: object) -> None:
    from collections.abc import AsyncIterator

    from modelplex.provider import ChatRequest, CommonOptions, Provider
    from modelplex.recording import RecordingProvider
    from modelplex.routing import Deployment, Router
    from modelplex.types import ChatMessage

    class Answers(Provider):
        def __init__(self, name: str) -> None:
            self.name = name

        async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
            yield StreamChunk(content="ok", finish_reason="stop",
                              usage=Usage(prompt_tokens=1_000_000, completion_tokens=0))

    store = LogStore(f"{tmp_path}/logs.db")
    try:
        request = ChatRequest(model="fast", messages=[ChatMessage.user("hi")],
                              options=CommonOptions())
        router = Router("fast", [Deployment(Answers("openai"), "gpt-4o-mini")])
        _ = [c async for c in RecordingProvider(router, store).stream_request(request)]
        local = RecordingProvider(Answers("ollama"), store)
        _ = [c async for c in local.stream_request(request)]
        unknown = RecordingProvider(Answers("mystery"), store)
        _ = [c async for c in unknown.stream_request(request)]
        third, second, first = store.recent(limit=3)
        assert first.cost == pytest.approx(0.15) and first.cost_currency == "USD"
        assert second.cost == 0.0
        assert third.cost is None and third.cost_currency is None
    finally:
        store.close()


@pytest.mark.parametrize(("provider", "model"), [
    ("openai", "gpt-4o-mini"), ("openai", "gpt-4o"), ("anthropic", "claude-3-5-haiku-latest"),
    ("anthropic", "claude-sonnet-4-5"),  # tiered prices: the package's own calculation
])
def test_the_fast_price_equals_the_packages(provider: str, model: str) -> None:
    import genai_prices

    for prompt, completion in [(12_345, 678), (250_000, 1_000), (0, 0)]:
        ours = PriceBook().cost(provider, model, Usage(prompt_tokens=prompt,
                                                       completion_tokens=completion))
        theirs = genai_prices.calc_price(
            genai_prices.Usage(input_tokens=prompt, output_tokens=completion), model,
            provider_id=provider)
        assert ours.amount == pytest.approx(float(theirs.total_price), rel=1e-9, abs=1e-12)
