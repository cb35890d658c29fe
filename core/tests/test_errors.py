"""The error tree, retriable flags, secret redaction and partial content."""

from __future__ import annotations

import pytest

from modelplex import errors
from modelplex.chunks import StreamChunk
from modelplex.errors import (
    AuthenticationError,
    BadRequestError,
    ChatBusyError,
    ChatError,
    ConfigurationError,
    ModelDownloadError,
    ModelNotFoundError,
    ModelplexError,
    OptionsError,
    ParseError,
    PluginError,
    ProviderConnectionError,
    ProviderError,
    ProviderStatusError,
    ProviderTimeoutError,
    RateLimitError,
    ResponseTooLargeError,
    RoutingError,
    ServerBusyError,
    ServerError,
    StorageError,
    StreamError,
    UnknownProviderError,
    UnsupportedOperationError,
    mask_url,
    redact,
    redact_json,
)

TREE = {
    ConfigurationError: ModelplexError,
    OptionsError: ConfigurationError,
    UnknownProviderError: ConfigurationError,
    PluginError: ModelplexError,
    ParseError: ModelplexError,
    ChatBusyError: ModelplexError,
    ChatError: ModelplexError,
    UnsupportedOperationError: ModelplexError,
    StorageError: ModelplexError,
    ProviderError: ModelplexError,
    ProviderConnectionError: ProviderError,
    ProviderTimeoutError: ProviderError,
    StreamError: ProviderError,
    ModelDownloadError: StreamError,
    ResponseTooLargeError: ProviderError,
    RoutingError: ProviderError,
    ProviderStatusError: ProviderError,
    BadRequestError: ProviderStatusError,
    AuthenticationError: ProviderStatusError,
    ModelNotFoundError: ProviderStatusError,
    RateLimitError: ProviderStatusError,
    ServerBusyError: RateLimitError,
    ServerError: ProviderStatusError,
}


@pytest.mark.parametrize(("child", "parent"), TREE.items(), ids=lambda c: c.__name__)
def test_tree(child: type[Exception], parent: type[Exception]) -> None:
    assert child.__bases__[0] is parent
    assert issubclass(child, ModelplexError)


def test_every_public_error_is_in_the_tree() -> None:
    public = {getattr(errors, n) for n in errors.__all__ if n.endswith("Error")}
    assert public == {ModelplexError, *TREE}


def test_unknown_provider_is_also_a_key_error() -> None:
    assert issubclass(UnknownProviderError, KeyError)
    with pytest.raises(KeyError):
        raise UnknownProviderError("x", [])


@pytest.mark.parametrize(("error", "retriable"), [
    (ProviderConnectionError("x"), True),
    (ProviderTimeoutError("x", phase="connect", timeout=1.0), True),
    (StreamError("x"), True),
    (RateLimitError("x"), True),
    (ServerBusyError("x", status_code=503), True),
    (ServerError("x", status_code=500), True),
    (ResponseTooLargeError("x"), False),
    (BadRequestError("x", status_code=400), False),
    (AuthenticationError("x", status_code=401), False),
    (ModelNotFoundError("x", status_code=404), False),
    (ProviderStatusError("x", status_code=418), False),
], ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v))
def test_retriable(error: ProviderError, retriable: bool) -> None:
    assert error.retriable is retriable


def test_status_error_attributes() -> None:
    err = RateLimitError("slow down", body={"error": "x"}, retry_after=2.5, provider="openai")
    assert err.status_code == 429
    assert err.retry_after == 2.5
    assert err.body == {"error": "x"}
    assert err.provider == "openai"
    busy = ServerBusyError("busy", status_code=529)
    assert busy.retry_after is None
    timeout = ProviderTimeoutError("late", phase="first_byte", timeout=3.0, provider="ollama")
    assert (timeout.phase, timeout.timeout, timeout.provider) == ("first_byte", 3.0, "ollama")


@pytest.mark.parametrize("secret", [
    "sk-proj-AbCdEf0123456789xyz",
    "sk-ant-api03-AbCdEf0123456789",
    "hf_AbCdEfGh0123456789",
])
def test_redact_key_patterns(secret: str) -> None:
    text = redact(f"Incorrect API key provided: {secret}. Check it.")
    assert secret not in text
    assert secret[:12] not in text
    assert text == "Incorrect API key provided: ***. Check it."


def test_redact_bearer_and_explicit_secrets() -> None:
    text = redact("header was Authorization: Bearer abc.def-ghi_jkl012 ok")
    assert "abc.def-ghi_jkl012" not in text
    assert "Authorization: ***" in text
    assert redact("bearer abcdefghij").strip() == "***"
    plain = "my-company-token-42"
    assert redact(f"token {plain} rejected", plain) == "token *** rejected"
    assert redact("nothing here", None, "") == "nothing here"


def test_redact_leaves_ordinary_text_alone() -> None:
    text = "ask-me about sk-short and hf_ and the bearer of bad news"
    assert redact(text) == text


def test_unknown_provider_message() -> None:
    err = UnknownProviderError("ollama", ["llamacpp", "openai"])
    text = str(err)
    assert text.startswith("unknown provider 'ollama'")
    assert "Installed providers: llamacpp, openai" in text
    assert "pip install modelplex-ollama" in text
    assert "modelplex plugins" in text
    assert err.name == "ollama"
    assert err.installed == ["llamacpp", "openai"]
    assert "Installed providers: none" in str(UnknownProviderError("x", []))


def test_partial_content() -> None:
    err = StreamError("broke off", provider="fake")
    assert err.partial_chunks == []
    assert err.partial_content == ""
    err.partial_chunks = [StreamChunk(content="The capital"), StreamChunk(content=" is"),
                          StreamChunk(reasoning="thinking")]
    assert err.partial_content == "The capital is"


def test_parse_error_keeps_raw() -> None:
    err = ParseError("no JSON", raw="just prose")
    assert err.raw == "just prose"
    assert str(err) == "no JSON"



# -- masking (issue #8, defects 8 and 9) ---------------------------------------------------------
@pytest.mark.parametrize(("url", "shown"), [
    ("http://user:pass@host:8000/v1", "http://***@host:8000/v1"),
    ("https://token@host/v1", "https://***@host/v1"),
    ("http://host/v1?key=abc123&x=1", "http://host/v1?key=***&x=1"),
    ("http://host/v1?api_key=abc&access_token=def", "http://host/v1?api_key=***&access_token=***"),
    ("http://host:11434/api", "http://host:11434/api"),
])
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown
    assert redact(f"cannot connect to {url} (refused)") == f"cannot connect to {shown} (refused)"


def test_short_secrets_are_not_masked() -> None:
    body = '{"error": {"message": "bad"}}'
    assert redact(body, "e") == body
    assert redact("key 12345678 echoed", "12345678") == "key *** echoed"


def test_redact_json_masks_values_never_keys() -> None:
    secret = "my-secret-value-123"
    body = {"error": {"message": f"bad key {secret}", "my-secret-value-123": [secret, 3]}}
    assert redact_json(body, secret) == {
        "error": {"message": "bad key ***", "my-secret-value-123": ["***", 3]}}


def test_rate_limit_message_says_how_long_to_wait() -> None:
    assert str(RateLimitError("openai returned HTTP 429", retry_after=2.0)) == \
        "openai returned HTTP 429 (retry after 2 s)"
    assert str(RateLimitError("x", retry_after=None)) == "x"
