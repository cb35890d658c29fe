"""Whether an HTTP error may be retried: the status, and the server's x-should-retry."""

from __future__ import annotations

import pytest

from modelplex import errors
from modelplex.http import error_from_status

BODY = {"error": {"message": "try again", "type": "server_error"}}


@pytest.mark.parametrize(("status", "headers", "retriable"), [
    (408, {}, True),                               # the server timed the request out
    (409, {"x-should-retry": "true"}, True),       # OpenAI/Anthropic: "retry this one"
    (500, {"x-should-retry": "false"}, False),     # ... and "do not"
    (429, {"X-Should-Retry": "false", "Retry-After": "3"}, False),
    (400, {}, False),
    (500, {}, True),
    (503, {"x-should-retry": "maybe"}, True),
])
def test_retriable_from_status_and_x_should_retry(status: int, headers: dict[str, str],
                                                  retriable: bool) -> None:
    err = error_from_status(status, BODY, headers, provider="t")
    assert err.retriable is retriable
    assert isinstance(err, errors.ProviderStatusError)
    if status == 429:
        assert isinstance(err, errors.RateLimitError) and err.retry_after == 3


@pytest.mark.parametrize(("body", "headers", "wait"), [
    # Hugging Face's serverless API and endpoints while the model loads
    ({"error": "Model tiiuae/falcon-7b-instruct is currently loading",
      "estimated_time": 57.375}, {}, 57.375),
    ({"error": "loading", "estimated_time": 20}, {"Retry-After": "3"}, 3.0),  # the header wins
    ({"error": "loading", "estimated_time": 1e9}, {}, 300.0),  # bounded like any wait
    ({"error": "loading", "estimated_time": -4}, {}, None),
    ({"error": "loading", "estimated_time": "soon"}, {}, None),
    ({"error": "loading", "estimated_time": True}, {}, None),
])
def test_estimated_time_is_a_wait(body: dict[str, object], headers: dict[str, str],
                                  wait: float | None) -> None:
    err = error_from_status(503, body, headers, provider="hf")
    assert isinstance(err, errors.ServerBusyError)
    assert err.retry_after == wait
    assert "currently loading" in str(err) or "loading" in str(err)
