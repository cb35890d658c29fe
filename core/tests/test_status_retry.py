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
