"""Named endpoints from the environment and the config file, and their registration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import modelplex_openai
from modelplex.errors import ConfigurationError
from modelplex.manager import create_provider, parse_model_spec
from modelplex.plugins import Plugins
from modelplex_openai.config import load_endpoints
from modelplex_openai.provider import OPENAI_BASE_URL, OpenAIProvider


def test_default_openai_reads_the_official_variables(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OPENAI_API_KEY", "sk-env-key-0123456789")
    clean_env.setenv("OPENAI_BASE_URL", "http://proxy.test/v1/")
    clean_env.setenv("OPENAI_ORG_ID", "org-1")
    clean_env.setenv("OPENAI_PROJECT_ID", "proj-1")
    provider = OpenAIProvider()
    assert provider.name == "openai"
    assert provider.base_url == "http://proxy.test/v1"
    headers = provider.http.headers
    assert headers["Authorization"] == "Bearer sk-env-key-0123456789"
    assert headers["OpenAI-Organization"] == "org-1"
    assert headers["OpenAI-Project"] == "proj-1"
    assert "sk-env-key" not in repr(provider)


def test_openai_organization_fallback_and_defaults(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OPENAI_ORGANIZATION", "org-2")
    provider = OpenAIProvider()
    assert provider.base_url == OPENAI_BASE_URL
    assert provider.http.headers["OpenAI-Organization"] == "org-2"
    assert "Authorization" not in provider.http.headers


def test_named_endpoints_do_not_inherit_openai_settings(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OPENAI_API_KEY", "sk-env-key-0123456789")
    clean_env.setenv("OPENAI_ORG_ID", "org-1")
    clean_env.setenv("VLLM_KEY", "vllm-secret")
    provider = OpenAIProvider(name="vllm", base_url="http://gpu:8000/v1", api_key_env="VLLM_KEY",
                              headers={"X-Team": "a"}, default_model="llama3")
    assert provider.name == "vllm"
    assert OpenAIProvider.name == "openai"
    assert provider.default_model == "llama3"
    headers = provider.http.headers
    assert headers["Authorization"] == "Bearer vllm-secret"
    assert headers["X-Team"] == "a"
    assert "OpenAI-Organization" not in headers


def test_endpoints_from_env_and_file(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "openai.toml"
    config.write_text('[vllm]\nbase_url = "http://file:8000/v1"\n\n'
                      '[tgi]\nbase_url = "http://tgi:8080/v1"\nverify_tls = false\n'
                      'headers = { "X-A" = "1" }\n')
    clean_env.setenv("MODELPLEX_OPENAI_CONFIG", str(config))
    clean_env.setenv("MODELPLEX_OPENAI_ENDPOINTS", json.dumps(
        {"vllm": {"base_url": "http://env:8000/v1", "api_key_env": "VLLM_KEY"}}))
    endpoints = {e.name: e for e in load_endpoints()}
    assert endpoints["vllm"].settings["base_url"] == "http://env:8000/v1"  # the variable wins
    assert endpoints["vllm"].source == "MODELPLEX_OPENAI_ENDPOINTS"
    assert endpoints["tgi"].settings["headers"] == {"X-A": "1"}
    assert endpoints["tgi"].settings["verify_tls"] is False
    assert endpoints["tgi"].source == str(config)


def test_json_config_file_and_default_location(clean_env: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    config = tmp_path / "endpoints.json"
    config.write_text(json.dumps({"hf": {"base_url": "https://router.huggingface.co/v1",
                                         "api_key_env": "HF_TOKEN"}}))
    clean_env.setenv("MODELPLEX_OPENAI_CONFIG", str(config))
    assert [e.name for e in load_endpoints()] == ["hf"]
    clean_env.delenv("MODELPLEX_OPENAI_CONFIG")
    default = tmp_path / "config" / "modelplex" / "openai.toml"  # under XDG_CONFIG_HOME
    default.parent.mkdir(parents=True)
    default.write_text('[local]\nbase_url = "http://127.0.0.1:8080/v1"\n')
    assert [e.name for e in load_endpoints()] == ["local"]


@pytest.mark.parametrize(("table", "problem"), [
    ({}, "base_url is required"),
    ({"base_url": "gpu:8000"}, "must start with http"),
    ({"base_url": "http://x/v1", "key": "k"}, "unknown setting"),
    ({"base_url": "http://x/v1", "headers": {"a": 1}}, "headers must map"),
    ("http://x/v1", "must be a table"),
])
def test_bad_endpoint_is_reported_when_used(clean_env: pytest.MonkeyPatch,
                                            modelplex_plugins: Plugins, table: object,
                                            problem: str) -> None:
    clean_env.setenv("MODELPLEX_OPENAI_ENDPOINTS", json.dumps(
        {"broken": table, "good": {"base_url": "http://good:1/v1"}}))
    modelplex_plugins.register(modelplex_openai, name="openai")
    assert {"openai", "broken", "good"} <= set(modelplex_plugins.provider_names())
    with pytest.raises(ConfigurationError, match=problem):
        create_provider("broken", modelplex_plugins)
    assert create_provider("good", modelplex_plugins).name == "good"


def test_bad_name_is_reported(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("MODELPLEX_OPENAI_ENDPOINTS", json.dumps(
        {"a:b": {"base_url": "http://x/v1"}}))
    [endpoint] = load_endpoints()
    assert endpoint.error and "no ':'" in endpoint.error


@pytest.mark.parametrize(("var", "value", "problem"), [
    ("MODELPLEX_OPENAI_ENDPOINTS", "{not json", "not valid JSON"),
    ("MODELPLEX_OPENAI_ENDPOINTS", "[1]", "must be a JSON object"),
    ("MODELPLEX_OPENAI_CONFIG", "/nonexistent/openai.toml", "cannot read"),
])
def test_malformed_source_is_a_clear_error(clean_env: pytest.MonkeyPatch, var: str,
                                           value: str, problem: str) -> None:
    clean_env.setenv(var, value)
    with pytest.raises(ConfigurationError, match=problem):
        load_endpoints()


def test_malformed_toml(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "openai.toml"
    config.write_text("[vllm\n")
    clean_env.setenv("MODELPLEX_OPENAI_CONFIG", str(config))
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        load_endpoints()


def test_each_endpoint_is_a_provider_name(clean_env: pytest.MonkeyPatch,
                                          modelplex_plugins: Plugins) -> None:
    clean_env.setenv("VLLM_KEY", "vllm-secret")
    clean_env.setenv("MODELPLEX_OPENAI_ENDPOINTS", json.dumps({
        "vllm": {"base_url": "http://gpu:8000/v1", "api_key_env": "VLLM_KEY"},
        "llamacpp-server": {"base_url": "http://127.0.0.1:8080/v1", "default_model": "tiny"},
        "openai": {"default_model": "gpt-4o-mini"},
    }))
    modelplex_plugins.register(modelplex_openai, name="openai")
    assert parse_model_spec("vllm:llama3", modelplex_plugins) == ("vllm", "llama3")
    assert parse_model_spec("openai:gpt-4o-mini", modelplex_plugins) == ("openai",
                                                                         "gpt-4o-mini")
    assert parse_model_spec("llamacpp-server:tiny", modelplex_plugins) == (
        "llamacpp-server", "tiny")
    vllm = create_provider("vllm", modelplex_plugins)
    assert isinstance(vllm, OpenAIProvider)
    assert (vllm.name, vllm.base_url) == ("vllm", "http://gpu:8000/v1")
    assert vllm.http.headers["Authorization"] == "Bearer vllm-secret"
    assert create_provider("llamacpp-server", modelplex_plugins).default_model == "tiny"
    openai = create_provider("openai", modelplex_plugins)
    assert (openai.name, openai.default_model) == ("openai", "gpt-4o-mini")
    # keyword configuration (ChatManager's provider_config) overrides the endpoint's
    other = create_provider("vllm", modelplex_plugins, base_url="http://other:1/v1")
    assert isinstance(other, OpenAIProvider)
    assert other.base_url == "http://other:1/v1"


def test_import_does_no_io_and_imports_no_provider() -> None:
    import subprocess
    import sys

    code = ("import sys, modelplex_openai; "
            "print('modelplex_openai.provider' in sys.modules, 'aiohttp' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "False"]
