"""``modelplex.masking.mask``: the one function every printer masks secrets with (issue 19 #2)."""

from __future__ import annotations

import json

import pytest
from pydantic import SecretStr

from modelplex.config import parse_config
from modelplex.masking import MASK, is_secret_name, mask, mask_url


@pytest.mark.parametrize("name", [
    "api_key", "apiKey", "auth_token", "token", "password", "passwd", "secret", "client_secret",
    "X-Api-Key", "Authorization", "Proxy-Authorization", "access_token", "accessToken",
    "refresh_token", "hf_token", "sig", "signature", "credentials", "cookie", "keys", "key",
    "X-Deploy-Token", "private_key", "anthropic_api_key",
])
def test_credential_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", [
    "api_key_env", "token_envs", "max_tokens", "prompt_tokens", "time_to_first_token",
    "token_ids", "key_prefix", "min_secret_length", "keywords", "author", "needs_auth",
    "sort_keys", "eos_token", "model", "host", "base_url", "headers", "key_file",
])
def test_names_that_only_describe_a_credential(name: str) -> None:
    assert not is_secret_name(name)


@pytest.mark.parametrize(("url", "masked"), [
    ("https://bob:pw-123@llm.example/v1", "https://***@llm.example/v1"),
    ("redis://:redis-pw@cache:6379/0", "redis://***@cache:6379/0"),
    ("http://gpu:11434/?key=abc&x=1", "http://gpu:11434/?key=***&x=1"),
    ("https://h/v1?api_key=a&access_token=b&sig=c&page=2",
     "https://h/v1?api_key=***&access_token=***&sig=***&page=2"),
    ("https://h/v1?max_tokens=5", "https://h/v1?max_tokens=5"),
])
def test_urls(url: str, masked: str) -> None:
    assert mask_url(url) == masked
    assert mask(url) == masked


def test_structures_keep_their_shape_and_every_other_value() -> None:
    data = {
        "headers": {"Authorization": "Bearer abc", "X-Api-Key": "k", "Content-Type": "a/b"},
        "extra_headers": [["X-Token", "t"]],
        "auth_token": "tok", "api_key_env": "MY_KEY", "max_tokens": 100, "auth_retries": 3,
        "base_url": "https://u:p@h/v1", "typed": SecretStr("s"), "keys": ["k1", "k2"],
        "auth": {"user": "me", "password": "pw"}, "empty_token": "", "nothing": None,
        "deployments": [{"model": "openai:x", "headers": {"X-A": "v"}}],
    }
    assert mask(data) == {
        "headers": {"Authorization": MASK, "X-Api-Key": MASK, "Content-Type": MASK},
        "extra_headers": [["X-Token", MASK]],
        "auth_token": MASK, "api_key_env": "MY_KEY", "max_tokens": 100, "auth_retries": 3,
        "base_url": "https://***@h/v1", "typed": MASK, "keys": [MASK, MASK],
        "auth": {"user": "me", "password": MASK}, "empty_token": "", "nothing": None,
        "deployments": [{"model": "openai:x", "headers": {"X-A": MASK}}],
    }


@pytest.mark.parametrize(("text", "gone"), [
    ("401 with Authorization: Bearer abcdefgh12345", "abcdefgh12345"),
    ("{'X-Api-Key': 'xapikey-value-42', 'a': 1}", "xapikey-value-42"),
    ('{"api_key": "plain-value-42"}', "plain-value-42"),
    ("login failed: password=hunter2-value", "hunter2-value"),
    ("used sk-abcdefghijklmnop", "sk-abcdefghijklmnop"),
    ("GET http://h/x?token=query-token-42 failed", "query-token-42"),
    ("Basic YWxhZGRpbjpvcGVuc2VzYW1l", "YWxhZGRpbjpvcGVuc2VzYW1l"),
])
def test_text(text: str, gone: str) -> None:
    assert gone not in mask(text)


@pytest.mark.parametrize("text", [
    "unknown key 'model' (remove it); max_tokens=100; see https://h/docs?page=2",
    "providers.anthropic.auth_token: Input should be a valid string",  # about it, not it
    "set api_key or api_key_env: no key was found",
])
def test_text_without_secrets_is_unchanged(text: str) -> None:
    assert mask(text) == text


def test_extra_secrets_are_masked_wherever_they_occur() -> None:
    assert mask({"message": "bad one-secret-value"}, "one-secret-value") == {
        "message": "bad ***"}
    assert mask("short key abc", "abc") == "short key abc"  # too short to be a secret


def test_config_masked_is_mask_of_the_config() -> None:
    config = parse_config({"providers": {"anthropic": {"auth_token": "anthropic-tok-42"}},
                           "state": {"backend": "redis", "url": "redis://:pw-42@h:6379"}})
    shown = json.dumps(config.masked())
    assert "anthropic-tok-42" not in shown and "pw-42" not in shown
    assert config.masked()["state"]["url"] == "redis://***@h:6379"
