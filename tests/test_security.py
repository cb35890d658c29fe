"""Security checks: keys stay secret, TLS is verified, redirects drop credentials, limits hold."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from modelplex import create_provider
from modelplex.errors import (
    ConfigurationError,
    ProviderConnectionError,
    ProviderError,
    ProviderStatusError,
    ResponseTooLargeError,
)
from modelplex.http import HttpClient
from modelplex.provider import Provider
from modelplex.testing import PIECE, Cli, FaultyUpstream, closed_port_url, serve_app

KEY = "sk-topsecret-0123456789abcdefXYZ"
OLLAMA_KEY = "ollama-key-0123456789-secret"


@pytest.fixture
async def echo_server() -> AsyncIterator[str]:
    """A server whose errors echo the Authorization header back, as careless proxies do."""

    async def echo(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        status = int(request.query.get("status", "401"))
        return web.json_response({"error": {"message": f"bad key {auth}", "type": "auth"}},
                                 status=status)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    async with serve_app(app) as url:
        yield url


async def test_keys_never_in_logs_reprs_or_errors(echo_server: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    providers = [
        create_provider("openai", base_url=echo_server + "/v1", api_key=KEY),
        create_provider("ollama", host=echo_server, api_key=OLLAMA_KEY),
    ]
    seen: list[str] = []
    for provider in providers:
        seen += [repr(provider), str(vars(provider))]
        for call in (provider.list_models(), provider.health(),
                     provider.complete([{"role": "user", "content": "hi"}], model="m")):
            try:
                result = await call
                seen.append(repr(result))
            except ProviderError as err:
                seen += [str(err), repr(err), repr(getattr(err, "body", None))]
        with contextlib.suppress(ProviderError):
            async for _ in provider.chat([{"role": "user", "content": "hi"}], model="m"):
                pass
        await provider.aclose()
    seen.append(caplog.text)
    everything = "\n".join(seen)
    assert "bad key" in everything  # the echoing server was reached
    assert KEY not in everything
    assert OLLAMA_KEY not in everything


async def test_keys_never_in_cli_json_output(echo_server: str) -> None:
    cli = Cli(drop=(), env={"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": echo_server + "/v1",
                            "OLLAMA_HOST": echo_server, "OLLAMA_API_KEY": OLLAMA_KEY})
    outputs = []
    for args in (["providers", "--json"], ["models", "list", "--json"], ["plugins", "--json"],
                 ["--debug", "chat", "-m", "openai:gpt-x", "hi"],
                 ["--debug", "chat", "-m", "ollama:llama3", "hi"]):
        _, out, err = await cli.arun(*args)
        outputs.append(out + err)
    text = "\n".join(outputs)
    assert "openai" in text
    assert "ollama" in text
    json.loads(outputs[0])  # providers --json is JSON
    assert KEY not in text
    assert OLLAMA_KEY not in text


async def test_authorization_not_forwarded_on_redirect_to_another_host() -> None:
    received: list[str | None] = []

    async def target(request: web.Request) -> web.Response:
        received.append(request.headers.get("Authorization"))
        return web.json_response({"object": "list", "data": []})

    target_app = web.Application()
    target_app.router.add_get("/v1/models", target)
    async with serve_app(target_app) as other:
        # Same machine, another host name: a different origin for the client.
        elsewhere = other.replace("127.0.0.1", "localhost") + "/v1/models"

        async def redirect(_: web.Request) -> web.Response:
            raise web.HTTPTemporaryRedirect(elsewhere)

        app = web.Application()
        app.router.add_get("/v1/models", redirect)
        async with serve_app(app) as url:
            provider = create_provider("openai", base_url=url + "/v1", api_key=KEY)
            try:
                await provider.list_models()
            finally:
                await provider.aclose()
    assert received == [None], "the key was forwarded to another host"


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


async def test_tls_verified_by_default_and_opt_out_warns(self_signed: tuple[Path, Path]) -> None:
    cert, key = self_signed
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    async with serve_app(app, ssl_context=context) as url:
        strict = HttpClient(url, provider="t")
        with pytest.raises(ProviderConnectionError, match=r"certificate|SSL|ssl"):
            await strict.request_json("GET", "/v1/models")
        await strict.aclose()
        with pytest.warns(UserWarning, match="TLS certificate verification is turned off"):
            lax = HttpClient(url, provider="t", verify_tls=False)
        assert (await lax.request_json("GET", "/v1/models"))["data"][0]["id"] == "m"
        await lax.aclose()


async def test_oversized_body_is_cut_off() -> None:
    async def huge(_: web.Request) -> web.Response:
        return web.Response(body=b"[" + b"1," * 600_000 + b"1]", content_type="application/json")

    app = web.Application()
    app.router.add_get("/big", huge)
    async with serve_app(app) as url:
        client = HttpClient(url, provider="t", max_body_bytes=1_000_000)
        try:
            with pytest.raises(ResponseTooLargeError, match="limit of 1000000"):
                await client.request_json("GET", "/big")
        finally:
            await client.aclose()


# -- issue #8: redirects, masking, bad configuration ---------------------------------------------
CUSTOM = {"X-Team-Token": "team-token-0123456789", "api-key": "azure-key-0123456789",
          "x-api-key": "anthropic-key-0123456789"}
CREDENTIALS = {"authorization", *(name.lower() for name in CUSTOM)}


def _redirect_provider(name: str, url: str) -> Provider:
    if name == "ollama":
        return create_provider("ollama", host=url, api_key=OLLAMA_KEY, headers=CUSTOM)
    if name == "lmstudio":
        return create_provider("lmstudio", host=url, api_key=KEY, headers=CUSTOM)
    return create_provider("openai", base_url=url + "/v1", api_key=KEY, headers=CUSTOM)


@pytest.mark.parametrize("status", ["307", "308"])
@pytest.mark.parametrize("name", ["openai", "ollama", "lmstudio"])
async def test_cross_host_redirect_drops_every_credential_header(name: str, status: str) -> None:
    async with FaultyUpstream() as first, FaultyUpstream() as second:
        first.redirect_to = second.url.replace("127.0.0.1", "localhost")  # another host
        first.faults.append(f"redirect_{status}")
        provider = _redirect_provider(name, first.url)
        try:
            text = "".join([c.content async for c in provider.chat(
                [{"role": "user", "content": "hi"}], model="fault")])
        finally:
            await provider.aclose()
    assert text == PIECE * 5  # the redirect was followed, with the body (307/308 keep POST)
    sent_first = {k.lower() for k in first.received[0].headers}
    assert sent_first >= CREDENTIALS  # the configured host got them all
    headers, body = second.received[0].headers, second.received[0].json
    assert not CREDENTIALS & {k.lower() for k in headers}, headers
    assert body["messages"][-1]["content"] == "hi"


async def test_same_host_redirect_keeps_the_credentials() -> None:
    async with FaultyUpstream() as upstream:
        upstream.redirect_to = upstream.url
        upstream.faults.append("redirect_307")
        provider = _redirect_provider("openai", upstream.url)
        try:
            [c async for c in provider.chat([{"role": "user", "content": "hi"}], model="fault")]
        finally:
            await provider.aclose()
    assert len(upstream.received) == 2
    assert upstream.received[1].headers["Authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize("status", ["301", "302", "303"])
async def test_post_is_never_silently_turned_into_get(status: str) -> None:
    async with FaultyUpstream() as first, FaultyUpstream() as second:
        first.redirect_to = second.url
        first.faults.append(f"redirect_{status}")
        provider = _redirect_provider("openai", first.url)
        try:
            with pytest.raises(ProviderStatusError) as info:
                [c async for c in provider.chat([{"role": "user", "content": "hi"}],
                                                model="fault")]
        finally:
            await provider.aclose()
    assert f"was redirected (HTTP {status}) to {second.url}/v1/chat/completions" in \
        str(info.value)
    assert "set the provider's address to the new location" in str(info.value)
    assert not second.received


async def test_short_key_does_not_mangle_error_bodies(echo_server: str) -> None:
    """Masking happens after parsing, in values only, and only for secrets of 8+ characters."""
    for key, shown in (("e", "Bearer e"), (KEY, "Bearer ***")):
        provider = create_provider("openai", base_url=echo_server + "/v1", api_key=key)
        try:
            with pytest.raises(ProviderStatusError) as info:
                await provider.list_models()
        finally:
            await provider.aclose()
        assert info.value.body == {"error": {"message": f"bad key {shown}", "type": "auth"}}
        assert f"HTTP 401: bad key {shown}" in str(info.value)


async def test_credentials_in_urls_are_masked() -> None:
    url = closed_port_url().replace("http://", "http://alice:s3cret-pass@") + "/v1?key=k3y-value"
    provider = create_provider("openai", base_url=url, api_key_env="MODELPLEX_TEST_NO_KEY")
    with pytest.raises(ProviderConnectionError) as info:
        await provider.list_models()
    health = await provider.health()
    await provider.aclose()
    for text in (str(info.value), repr(provider), str(health)):
        assert "s3cret-pass" not in text
        assert "k3y-value" not in text
    assert "http://***@127.0.0.1:" in str(info.value)
    with pytest.raises(ConfigurationError, match="HTTP sends only one"):
        create_provider("openai", base_url=url, api_key="x" * 20)


async def test_credentials_in_urls_are_masked_by_the_cli() -> None:
    url = closed_port_url().replace("http://", "http://alice:s3cret-pass@") + "/v1?key=k3y-value"
    cli = Cli(drop=(), env={
        **dict.fromkeys((k for k in os.environ if k.endswith("API_KEY")), None),
        "OPENAI_BASE_URL": url, "OLLAMA_HOST": url.removesuffix("/v1?key=k3y-value"),
        "MODELPLEX_LOAD_PLUGINS": "openai,ollama"})
    outputs = []
    for args in (["providers"], ["providers", "--json"], ["chat", "-m", "openai:x", "hi"]):
        _, out, err = await cli.arun(*args)
        outputs.append(out + err)
    text = "\n".join(outputs)
    assert "***@127.0.0.1" in text
    assert "s3cret-pass" not in text
    assert "k3y-value" not in text


async def test_tls_failure_is_called_a_tls_error(self_signed: tuple[Path, Path]) -> None:
    cert, key = self_signed
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    app = web.Application()
    async with serve_app(app, ssl_context=context) as url:
        provider = create_provider("ollama", host=url)
        try:
            with pytest.raises(ProviderConnectionError) as info:
                await provider.list_models()
        finally:
            await provider.aclose()
    assert "TLS error connecting to https://127.0.0.1" in str(info.value)
    assert "not running" not in str(info.value)


@pytest.mark.parametrize("name", ["openai", "ollama", "lmstudio"])
@pytest.mark.parametrize(("config", "message"), [
    ({"headers": {"X-A": "a\r\nb"}}, "headers: the value of 'X-A' holds a line break"),
    ({"headers": {"X-A": 5}}, "headers: the value of 'X-A' must be a string (got int)"),
    ({"headers": {"bad name": "x"}}, "headers: 'bad name' is not a valid header name"),
    ({"verify_tls": "no"}, "verify_tls must be true or false (got 'no')"),
    ({"timeouts": {"conect": 2}}, "timeouts: unknown timeout(s) 'conect'; valid: connect, "
                                  "first_byte, between_chunks, total"),
    ({"timeouts": -1}, "timeouts must be a number of seconds > 0"),
    ({"timeouts": {"first_byte": "abc"}}, "timeouts.first_byte must be a number of seconds > 0"),
    ({"timeouts": "2"}, "timeouts must be a number of seconds (the total per request) or a "
                        "mapping"),
])
def test_bad_configuration_is_a_configuration_error(name: str, config: dict[str, Any],
                                                    message: str) -> None:
    where = {"ollama": {"host": "127.0.0.1:1"}, "lmstudio": {"host": "127.0.0.1:1"},
             "openai": {"base_url": "http://127.0.0.1:1/v1"}}[name]
    with pytest.raises(ConfigurationError) as info:
        create_provider(name, **where, **config)
    assert message in str(info.value)
    assert str(info.value).startswith(name)


@pytest.mark.parametrize(("name", "config", "message"), [
    ("ollama", {"host": "127.0.0.1:0"}, "OLLAMA_HOST / host '127.0.0.1:0' has an invalid port"),
    ("ollama", {"host": "127.0.0.1:70000"}, "has an invalid port"),
    ("openai", {"base_url": "http://127.0.0.1:0/v1"}, "base URL 'http://127.0.0.1:0/v1' has an "
                                                      "invalid port"),
    ("openai", {"base_url": "ftp://host/v1"}, "must start with http:// or https://"),
])
def test_bad_addresses_are_refused(name: str, config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        create_provider(name, **config)


# -- issue 19 #2: `config show` and every other printer mask by meaning -----------------------
LEAKY_CONFIG = """
[providers.openai]
api_key = "sk-openai-config-secret-0123456789"
base_url = "https://bob:Base-Url-Passw0rd@llm.example/v1"
headers = { Authorization = "Bearer header-bearer-value-42", X-Api-Key = "xapikey-value-42" }

[providers.anthropic]
auth_token = "anthropic-auth-token-value-42"

[providers.ollama]
host = "http://gpu-box:11434/?key=host-query-key-value-42"

[models.fast]
deployments = [
    { model = "openai:gpt-4o-mini", headers = { "X-Deploy-Token" = "deploy-header-value-42" } },
    { model = "openai:gpt-4o", base_url = "https://llm.example/v1?sig=deploy-sig-value-42" },
]

[cache]
backend = "redis"
url = "redis://:redis-url-password-42@cache-box:6379/0"

[state]
backend = "redis"
url = "rediss://default:state-redis-password-42@cache-box:6380/1"

[server]
keys = []
"""
LEAKED_SECRETS = ("sk-openai-config-secret", "Base-Url-Passw0rd", "header-bearer-value",
                  "xapikey-value", "anthropic-auth-token-value", "host-query-key-value",
                  "deploy-header-value", "deploy-sig-value", "redis-url-password",
                  "state-redis-password")


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_config_show_masks_every_secret(tmp_path: Path, as_json: bool) -> None:
    config = tmp_path / "config.toml"
    config.write_text(LEAKY_CONFIG)
    proc = Cli(config).run("config", "show", *(["--json"] if as_json else []))
    assert proc.returncode == 0, proc.stderr
    for secret in LEAKED_SECRETS:
        assert secret not in proc.stdout + proc.stderr, secret
    # what is configured still shows: names, hosts, the non-secret parts of URLs
    for kept in ("Authorization", "X-Api-Key", "auth_token", "llm.example", "gpu-box:11434",
                 "cache-box:6379", "X-Deploy-Token", "gpt-4o-mini"):
        assert kept in proc.stdout, kept
    if as_json:
        data = json.loads(proc.stdout)
        openai = data["providers"]["openai"]
        assert openai["headers"] == {"Authorization": "***", "X-Api-Key": "***"}
        assert openai["base_url"] == "https://***@llm.example/v1"
        assert data["providers"]["anthropic"]["auth_token"] == "***"
        assert data["providers"]["ollama"]["host"] == "http://gpu-box:11434/?key=***"
        assert data["cache"]["url"] == "redis://***@cache-box:6379/0"
        deployments = data["models"]["fast"]["deployments"]
        assert deployments[0]["headers"] == {"X-Deploy-Token": "***"}
        assert deployments[1]["base_url"] == "https://llm.example/v1?sig=***"


def test_the_printers_share_one_masking_function(caplog: pytest.LogCaptureFixture) -> None:
    from pydantic import SecretStr

    from modelplex.errors import redact
    from modelplex.masking import mask
    from modelplex.registry import ProviderHealth
    from modelplex.types import HealthStatus

    url = "redis://:redis-url-password-42@cache-box:6379/0"
    # errors
    assert "redis-url-password" not in redact(f"cannot reach {url}")
    # logs of every modelplex* logger, whatever handler prints them
    with caplog.at_level(logging.INFO):
        logging.getLogger("modelplex_redis.test").warning("Redis at %s is down", url)
        logging.getLogger("modelplex.routing").info("headers {'X-Api-Key': 'xapikey-value-42'}")
    assert "redis-url-password" not in caplog.text and "xapikey-value" not in caplog.text
    assert "cache-box:6379" in caplog.text
    # the server's /api/providers health answers
    health = ProviderHealth(HealthStatus(provider="redis", healthy=False,
                                         detail=f"cannot connect to {url}"), 1.0)
    assert "redis-url-password" not in json.dumps(health.to_dict())
    # anything typed SecretStr, and header lines in text
    assert mask({"anything": SecretStr("typed-secret-value")}) == {"anything": "***"}
    assert mask("Authorization: Bearer abcdefghijkl") == "Authorization: ***"
