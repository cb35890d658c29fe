"""The configuration file: format, precedence, secrets and the errors of a wrong file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from modelplex.config import config_path, load_config, parse_config
from modelplex.errors import ConfigurationError
from modelplex.pipeline import resolve_spec
from modelplex.pool import config_key, provider_kwargs

TOML = """
default_model = "fast"

[providers.ollama]
host = "http://gpu-box:11434"
api_key = "ollama-secret-0123456789"

[models.fast]
strategy = "weighted"
fallbacks = ["local"]
deployments = [
    { model = "ollama:llama3.2", weight = 3, max_concurrency = 8 },
    { model = "ollama:llama3.2", host = "http://gpu-2:11434", rpm = 600, name = "second" },
]
retries = { attempts = 4, timeout = 10 }

[models.local]
model = "llamacpp:smollm2"

[cache]
backend = "sqlite"

[state]
backend = "memory"
"""


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELPLEX_CONFIG", raising=False)
    monkeypatch.delenv("MODELPLEX_DEFAULT_MODEL", raising=False)


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_complete_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, TOML))
    fast = config.models["fast"]
    assert [d.model for d in fast.deployments] == ["ollama:llama3.2"] * 2
    assert fast.deployments[0].weight == 3 and fast.deployments[0].max_concurrency == 8
    assert fast.deployments[1].provider_kwargs == {"host": "http://gpu-2:11434"}
    assert fast.deployments[1].label == "second"
    assert (fast.strategy, fast.fallbacks, fast.retries.attempts) == ("weighted", ("local",), 4)
    assert config.models["local"].deployments[0].model_name == "smollm2"
    assert config.cache == {"backend": "sqlite"} and config.state == {"backend": "memory"}
    assert isinstance(config.providers["ollama"]["api_key"], SecretStr)


def test_json_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, json.dumps({"models": {"m": {"model": "openai:gpt-4o"}}}),
                 "config.json")
    assert load_config(path).models["m"].deployments[0].provider == "openai"


def test_secrets_never_print(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, TOML))
    assert "ollama-secret" not in repr(config)
    assert "ollama-secret" not in json.dumps(config.masked(), default=str)
    assert config.masked()["providers"]["ollama"]["api_key"] == "***"
    # two different keys are two configurations, without the key in clear in the pool key
    one, two = (config_key({"api_key": SecretStr(k)}) for k in ("key-one-123", "key-two-456"))
    assert one != two and "key-one" not in one


def test_api_key_env_reads_another_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    def factory(host: str | None = None, api_key: SecretStr | None = None) -> None:
        pass

    monkeypatch.setenv("MY_KEY", "secret-from-env-123")
    kwargs = provider_kwargs(factory, {"api_key_env": "MY_KEY"})
    assert kwargs["api_key"].get_secret_value() == "secret-from-env-123"
    monkeypatch.delenv("MY_KEY")
    with pytest.raises(ConfigurationError, match=r"MY_KEY.*not set"):
        provider_kwargs(factory, {"api_key_env": "MY_KEY"})

    def takes_it(api_key_env: str | None = None) -> None:
        pass

    assert provider_kwargs(takes_it, {"api_key_env": "X"}) == {"api_key_env": "X"}


def test_precedence_environment_over_file_over_default(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, TOML)
    monkeypatch.setenv("MODELPLEX_CONFIG", str(path))
    assert config_path() == path
    assert load_config().default_model == "fast"
    assert resolve_spec(None, load_config()) == "fast"
    assert resolve_spec("ollama:x", load_config()) == "ollama:x"  # an argument wins
    monkeypatch.setenv("MODELPLEX_DEFAULT_MODEL", "local")
    assert load_config().default_model == "local"
    assert resolve_spec(None, load_config(apply_env=False)) == "local"
    monkeypatch.delenv("MODELPLEX_CONFIG")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "empty"))
    monkeypatch.delenv("MODELPLEX_DEFAULT_MODEL")
    assert load_config().models == {}  # no file: defaults


@pytest.mark.parametrize(("text", "expected"), [
    ("bogus = 1\n", r"bogus: unknown top-level key; valid keys are default_model, providers"),
    ("source = 'x'\n", r"source: unknown top-level key"),
    ("[models.m]\nmodel = 'llama3'\n", r"models\.m\.model: write it as \"provider:model\""),
    ("[models.m]\nmodel = 'a:b'\nfallbacks = ['x']\n", r"fallbacks names 'x'.*define it"),
    ("[models.m]\nmodel = 'a:b'\nstrategy = 'fastest'\nretries = { tries = 2 }\n",
     r"models\.m\.retries\.tries: unknown key"),
    ("[models.m]\ndeployments = [{ model = 'a:b', weight = 0 }]\n",
     r"models\.m\.deployments\.0\.weight"),
    ("[models.m]\n", r"models\.m: a named model needs `model"),
    ("default_model = [\n", r"is not valid TOML"),
])
def test_a_wrong_file_names_the_file_the_key_and_the_fix(tmp_path: Path, text: str,
                                                         expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigurationError, match=expected) as info:
        load_config(path)
    assert str(info.value).startswith(str(path))


def test_a_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read the modelplex config"):
        load_config(tmp_path / "nope.toml")


async def test_unknown_provider_of_a_deployment_is_named_before_any_request() -> None:
    from modelplex.pipeline import open_model
    from modelplex.plugins import Plugins
    from modelplex.pool import ProviderPool

    config = parse_config({"models": {"m": {"model": "nosuch:model"}}}, source="my.toml")
    with pytest.raises(ConfigurationError,
                       match=r"my\.toml: models\.m\.deployments\.0 \(nosuch:model\): unknown "
                             r"provider 'nosuch'"):
        await open_model("m", config=config, pool=ProviderPool(),
                         plugins=Plugins(load_entrypoints=False))


async def test_state_backend_from_the_config_is_built_and_closed_with_the_router(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    from modelplex.pipeline import open_model, release_model, state_from_config
    from modelplex.pool import ProviderPool
    from modelplex.routing import MemoryState

    built: list[Any] = []

    class TestState(MemoryState):
        def __init__(self, url: str) -> None:
            super().__init__()
            self.url = url
            self.closed = False
            built.append(self)

        async def aclose(self) -> None:
            self.closed = True

    module = types.ModuleType("state_backend_for_tests")
    module.TestState = TestState  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "state_backend_for_tests", module)
    assert state_from_config({}) is state_from_config({"backend": "memory"})
    with pytest.raises(ConfigurationError, match=r"state.backend = 'no_such_backend:State' "
                                                 r"cannot be used: ModuleNotFoundError"):
        state_from_config({"backend": "no_such_backend:State", "url": "redis://localhost"})

    from modelplex.plugins import Plugins
    from modelplex.testing.upstream import FaultyUpstream

    async with FaultyUpstream() as up:
        config = parse_config({"state": {"backend": "state_backend_for_tests:TestState",
                                         "url": "mem://x"},
                               "models": {"m": {"deployments": [{
                                   "model": "openai:fault", "base_url": up.url + "/v1",
                                   "api_key": "sk-x-12345678"}]}}})
        router, _ = await open_model("m", config=config, pool=ProviderPool(),
                                     plugins=Plugins())
        assert router.state is built[0] and built[0].url == "mem://x"  # type: ignore[attr-defined]
        await release_model(router)
        assert built[0].closed


async def test_unknown_strategy_is_named_with_the_file_before_any_request() -> None:
    from modelplex.pipeline import open_model
    from modelplex.plugins import Plugins
    from modelplex.pool import ProviderPool

    config = parse_config({"models": {"m": {"model": "openai:gpt-4o", "strategy": "fastest"}}},
                          source="my.toml")
    pool = ProviderPool()
    with pytest.raises(ConfigurationError, match=r"my\.toml: models\.m: unknown routing "
                                                 r"strategy 'fastest'; use one of latency, "
                                                 r"least_busy, random, round_robin, weighted"):
        await open_model("m", config=config, pool=pool, plugins=Plugins())
    assert pool.shared() == []  # the deployment's provider was given back
