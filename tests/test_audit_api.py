"""Audit: bad arguments to the Python API are one ConfigurationError naming the argument and
the fix (``provider_config`` of the wrong shape was an AttributeError or pydantic-free
``ValueError: dictionary update sequence element``)."""

from __future__ import annotations

import pytest

import modelplex
from modelplex import ChatManager, ConfigurationError


@pytest.mark.parametrize(("value", "message"), [
    (5, "provider_config must map provider names to their constructor keywords, e.g. "
        "provider_config={'ollama': {'host': 'http://gpu-box:11434'}} (got int)"),
    ({"api_key": "sk-not-shown-1234567"},
     "provider_config['api_key'] must be a dict of constructor keywords (got str): "
     "provider_config maps provider names to their keywords, so nest it as "
     "provider_config={'PROVIDER': {'api_key': ...}}"),
])
def test_provider_config_of_the_wrong_shape_says_how_to_write_it(value: object,
                                                                   message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        ChatManager("llamacpp:smollm2", provider_config=value)  # type: ignore[arg-type]
    assert str(info.value).startswith(message)
    assert "sk-not-shown" not in str(info.value)


async def test_open_model_checks_provider_config_too() -> None:
    with pytest.raises(ConfigurationError, match=r"provider_config\['n_ctx'\] must be a dict"):
        await modelplex.open_model("llamacpp:smollm2", provider_config={"n_ctx": 512})  # type: ignore[dict-item]


@pytest.mark.parametrize(("name", "variable"), [("openai", "OPENAI_API_KEY"),
                                                 ("anthropic", "ANTHROPIC_API_KEY")])
async def test_a_hosted_api_without_a_key_names_the_key_when_it_cannot_connect(
        name: str, variable: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline, "cannot connect to https://api.openai.com" hid that no key was set."""
    monkeypatch.delenv(variable, raising=False)
    monkeypatch.delenv(f"{name.upper()}_BASE_URL", raising=False)
    provider = modelplex.create_provider(name)
    try:
        assert f"No API key is set either: set {variable}" in (provider.http.connect_hint or "")
    finally:
        await provider.aclose()
    keyed = modelplex.create_provider(name, api_key="k-1234567890")
    try:
        assert "API key" not in (keyed.http.connect_hint or "")
    finally:
        await keyed.aclose()


@pytest.mark.parametrize(("name", "header", "prefix"), [("openai", "Authorization", "Bearer "),
                                                        ("anthropic", "x-api-key", "")])
async def test_a_key_with_a_trailing_line_break_is_trimmed(name: str, header: str,
                                                           prefix: str) -> None:
    """OPENAI_API_KEY=$(cat key.txt) with the file's line break made every request fail:
    "headers: the value of 'Authorization' holds a line break"."""
    provider = modelplex.create_provider(name, api_key="k-1234567890\r\n",
                                         base_url="http://127.0.0.1:9")
    try:
        assert provider.http.headers[header] == f"{prefix}k-1234567890"
    finally:
        await provider.aclose()


@pytest.mark.parametrize(("name", "kwargs"), [
    ("lmstudio", {}),  # its default: a server on this machine
    ("openai", {"base_url": "http://127.0.0.1:9/v1", "api_key": "k-1234567890"}),
])
async def test_a_refused_connection_to_a_users_server_says_what_to_do(name: str,
                                                                      kwargs: dict) -> None:
    """lmstudio (and any OpenAI-compatible base_url) said only "cannot connect to URL"."""
    provider = modelplex.create_provider(name, **kwargs)
    try:
        assert (provider.http.connect_hint or "").startswith(
            f"Nothing answers at {provider.base_url}: start the server there, or fix its "
            f"address ([providers.{name}] in the config file)")
    finally:
        await provider.aclose()


async def test_a_hosted_api_with_a_key_gets_no_server_hint(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    provider = modelplex.create_provider("openai", api_key="k-1234567890")
    try:
        assert provider.http.connect_hint is None
    finally:
        await provider.aclose()


async def test_attempts_that_failed_alike_are_listed_once() -> None:
    """A named model whose one server is down described the same failure three times."""
    from modelplex.config import parse_config
    from modelplex.errors import RoutingError

    config = parse_config({"models": {"fast": {
        "deployments": [{"model": "openai:m", "base_url": "http://127.0.0.1:9/v1",
                         "api_key": "k-1234567890"}],
        "retries": {"attempts": 3, "backoff": 0, "cooldown": 0}}}})
    lease = await modelplex.open_model("fast", config=config)
    try:
        with pytest.raises(RoutingError) as info:
            await lease.provider.complete([{"role": "user", "content": "hi"}], model="fast")
    finally:
        await lease.release()
    text = str(info.value)
    assert text.startswith("model 'fast': all 3 attempts failed: 1-3. openai:m: "
                           "ProviderConnectionError: openai: cannot connect to "), text
    assert text.count("cannot connect") == 1
