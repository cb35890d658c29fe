"""The options suite: ranges from the provider's ``Options``, unknown options, the wire."""

from __future__ import annotations

import re
from typing import Any

import annotated_types
import pytest

from modelplex.errors import OptionsError
from modelplex.provider import Provider, range_text
from modelplex.testing.conformance.base import ConformanceBase
from modelplex.testing.upstream import PIECE, FaultyUpstream

__all__ = ["OptionsSuite", "out_of_range_values"]

#: Values the wire check sends; unusual enough to be found in any request body.
WIRE_OPTIONS: dict[str, Any] = {"temperature": 0.37, "top_p": 0.73, "max_tokens": 37,
                                "stop": ["<conformance-stop>"], "seed": 4242}


def out_of_range_values(options_model: type[Any]) -> dict[str, Any]:
    """For each numeric option with a bound, a value just outside it."""
    values: dict[str, Any] = {}
    for name, field in options_model.model_fields.items():
        for meta in field.metadata:
            bound: Any
            if isinstance(meta, annotated_types.Le | annotated_types.Lt):
                bound = meta.le if isinstance(meta, annotated_types.Le) else meta.lt
                values[name] = bound + 1
                break
            if isinstance(meta, annotated_types.Ge | annotated_types.Gt):
                bound = meta.ge if isinstance(meta, annotated_types.Ge) else meta.gt
                values[name] = bound - 1
        if name in values and field.annotation is not None and "int" in str(
                field.annotation) and "float" not in str(field.annotation):
            values[name] = int(values[name])
    return values


def _contains(body: Any, value: Any) -> bool:
    if isinstance(value, list):
        return all(_contains(body, item) for item in value)
    if body == value and type(body) is type(value):
        return True
    if isinstance(body, float) and isinstance(value, float):
        return abs(body - value) < 1e-9
    if isinstance(body, dict):
        return any(_contains(v, value) for v in body.values())
    if isinstance(body, list):
        return any(_contains(v, value) for v in body)
    return False


class OptionsSuite(ConformanceBase):
    """Options are validated before anything is sent, and the valid ones reach the API."""

    async def test_option_out_of_range_names_field_and_range(self, provider: Provider,
                                                             model: str) -> None:
        """Every option with a range, set just outside it, fails naming option and range."""
        values = out_of_range_values(provider.Options)
        assert values, "the provider's Options has no ranged option"
        for name, value in values.items():
            rng = range_text(provider.Options.model_fields[name])
            assert rng is not None
            with pytest.raises(OptionsError, match=rf"{name}.*{re.escape(rng)}"):
                provider.chat(self.messages, model=model, options={name: value})

    async def test_unknown_option_is_rejected(self, provider: Provider, model: str) -> None:
        """An option the provider does not know is an error listing the valid ones."""
        with pytest.raises(OptionsError, match="no_such_option"):
            provider.chat(self.messages, model=model, options={"no_such_option": 1})

    async def test_max_tokens_limits_the_answer(self, provider: Provider, model: str,
                                                upstream: FaultyUpstream | None) -> None:
        """``max_tokens`` caps the answer; an answer cut by it ends with ``length``."""
        chunks = await self.collect(provider, model, {**self.options, "max_tokens": 2})
        usage = chunks[-1].usage
        assert usage is not None, "the final chunk has no usage: expected completion_tokens <= 2"
        assert usage.completion_tokens <= 2, (
            f"max_tokens was not applied: expected completion_tokens <= 2, got "
            f"{usage.completion_tokens}")
        if upstream is not None:  # the test upstream cuts the answer to 2 pieces
            assert "".join(c.content for c in chunks) == PIECE * 2, \
                "max_tokens did not reach the API"
            assert chunks[-1].finish_reason == "length", (
                f"an answer cut by max_tokens ended with {chunks[-1].finish_reason!r}, "
                "not 'length'")

    async def test_options_reach_the_wire(self, upstream: FaultyUpstream | None,
                                          wired: Provider | None) -> None:
        """temperature, top_p, max_tokens, stop and seed are all in the request sent."""
        server, provider = self.need_upstream(upstream, wired)
        options = {k: v for k, v in WIRE_OPTIONS.items() if k not in self.unsent_options}
        async for _ in provider.chat(self.messages, model=self.upstream_model,
                                     options=options):
            pass
        [sent] = server.chat_requests()
        missing = [k for k, v in options.items() if not _contains(sent.json, v)]
        assert not missing, (f"options {missing} did not reach the request body {sent.json!r}"
                             " (list options the API lacks in `unsent_options`)")
        wire = self.upstream_wire
        if "stop" in options and wire is not None:
            value = wire.stop_value(sent.json)
            stop = options["stop"]
            assert value == stop or (isinstance(value, str) and [value] == stop), (
                f"expected the stop sequences {stop!r} in the API's own field "
                f"{wire.stop_field!r} of the request body; it holds {value!r} (body: "
                f"{sent.json!r})")
