"""Audit: a misspelt key, option, name or constructor keyword is one error naming the closest
valid one (and the valid ones), never a bare "unknown key" or a TypeError from inside a
provider's constructor."""

from __future__ import annotations

from pathlib import Path

import pytest

import modelplex
from modelplex.caches import CacheConfig
from modelplex.config import parse_config
from modelplex.errors import ConfigurationError, PluginError, did_you_mean
from modelplex.parsers._schemacheck import JSON_TYPES
from modelplex.routing.backends import StateConfig
from modelplex.routing.strategies import make_strategy
from modelplex.store.logs import ConversationsConfig
from modelplex.testing import Cli


def test_did_you_mean_names_the_closest_choice_only_when_close() -> None:
    assert did_you_mean("temprature", ["temperature", "top_p"]) == " (did you mean 'temperature'?)"
    assert did_you_mean("max-tokens", ["max_tokens"]) == " (did you mean 'max_tokens'?)"
    assert did_you_mean("bogus", ["temperature", "top_p"]) == ""
    assert did_you_mean("top_p", ["top_p"]) == ""
    assert did_you_mean("lgo", ["log", "path"]) == " (did you mean 'log'?)"
    assert did_you_mean("int", JSON_TYPES) == " (did you mean 'integer'?)"
    assert did_you_mean("nope", ["ollama", "openai"]) == ""


@pytest.mark.parametrize(("data", "expected"), [
    ({"defualt_model": "x"},
     "defualt_model: unknown top-level key (did you mean 'default_model'?)"),
    ({"models": {"fast": {"modle": "ollama:x"}}},
     "models.fast.modle: unknown key (did you mean 'model'?); valid keys are deployments, model,"),
    ({"models": {"fast": {"model": "ollama:x", "retries": {"attemps": 3}}}},
     "models.fast.retries.attemps: unknown key (did you mean 'attempts'?); valid keys are "
     "attempts, timeout"),
    ({"models": {"f": {"deployments": [{"model": "a:b"}], "mcp": [{"server": "x", "tols": []}]}},
      "mcp": {"x": {"command": "x"}}},
     "models.f.mcp.0.tols: unknown key (did you mean 'tools'?); valid keys are server, tools"),
    ({"mcp": {"x": {"comand": "x"}}}, "mcp.x.comand: unknown key (did you mean 'command'?)"),
    ({"retries": {"atempts": 1}}, "retries.atempts: unknown key (did you mean 'attempts'?)"),
])
def test_an_unknown_config_key_names_the_closest_valid_one(data: dict, expected: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_config(data, source="c.toml")
    assert str(info.value).startswith(f"c.toml: {expected}")


@pytest.mark.parametrize(("parse", "value", "expected"), [
    (CacheConfig.parse, {"backnd": "sqlite"},
     "cache.backnd: unknown key (did you mean 'backend'?); valid keys are backend, ttl"),
    (ConversationsConfig.parse, {"lgo": False},
     "conversations.lgo: unknown key (did you mean 'log'?); valid keys are log, path"),
])
def test_feature_tables_name_their_valid_keys(parse, value: dict, expected: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse(value)
    assert str(info.value).startswith(expected)
    assert "Extra inputs are not permitted" not in str(info.value)


def test_state_table_keeps_backend_keywords() -> None:
    assert StateConfig.parse({"backend": "redis", "url": "redis://x"}).backend_kwargs() == {
        "url": "redis://x"}


def test_misspelt_names_suggest_the_registered_one() -> None:
    with pytest.raises(ConfigurationError, match=r"'randm' \(did you mean 'random'\?\)"):
        make_strategy("randm")
    with pytest.raises(PluginError, match=r"no cache named 'sqlit' \(did you mean 'sqlite'\?\)"):
        modelplex.get_plugins().get("caches", "sqlit")
    with pytest.raises(ConfigurationError, match=r"unknown provider 'olama' \(did you mean "
                                                 r"'ollama'\?\)"):
        modelplex.create_provider("olama")


def test_an_empty_provider_name_says_how_to_write_a_model() -> None:
    with pytest.raises(ConfigurationError, match=r"^no provider named: write the model as "
                                                 r"'provider:model'"):
        modelplex.create_provider("")


def test_unknown_option_suggests_the_valid_one() -> None:
    provider = modelplex.create_provider("llamacpp")
    with pytest.raises(ConfigurationError, match=r"unknown option 'temprature' for provider "
                                                 r"'llamacpp' \(did you mean 'temperature'\?\)"):
        provider.parse_options({"temprature": 0.2})


@pytest.mark.parametrize(("name", "kwargs", "expected"), [
    ("ollama", {"hots": "x"}, "ollama: unknown setting 'hots' (did you mean 'host'?); "
                              "it takes api_key, "),
    ("llamacpp", {"thredas": 2}, "llamacpp: unknown setting 'thredas' (did you mean "
                                 "'threads'?)"),
    ("ollama", {"host": 5}, "ollama: host must be text or a table (got 5)"),
    ("openai", {"api_key": 5}, "openai: api_key must be text (got int)"),
    ("llamacpp", {"n_ctx": "big"}, "llamacpp: n_ctx must be a whole number (got 'big')"),
])
def test_provider_keywords_are_checked_before_the_constructor(name: str, kwargs: dict,
                                                                expected: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        modelplex.create_provider(name, **kwargs)
    assert str(info.value).startswith(expected)
    assert f"[providers.{name}]" in str(info.value)


def test_provider_keywords_that_fit_still_build_it() -> None:
    provider = modelplex.create_provider("ollama", host="http://h:1", timeouts={"connect": 3},
                                         headers={"X": "y"}, verify_tls=True)
    assert provider.name == "ollama"


def test_a_misspelt_provider_setting_in_the_config_file_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[providers.llamacpp]\nthredas = 2\n")
    proc = Cli(config, timeout=120).run("chat", "hi")
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: llamacpp: unknown setting 'thredas' "
                                  "(did you mean 'threads'?)")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_misspelt_template_field_names_the_right_one() -> None:
    from modelplex.structured import resolve_template

    with pytest.raises(ConfigurationError, match=r"template 'chain_of_thought': .*field 'tsak': "
                                                 r"unknown field \(did you mean 'task'\?\)"):
        resolve_template("chain_of_thought", {"tsak": "x"})


def test_a_config_file_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    from modelplex.config import load_config

    path = tmp_path / "c.toml"
    path.write_bytes(b'\xef\xbb\xbfdefault_model = "llamacpp:smollm2"\n')
    assert load_config(path, apply_env=False).default_model == "llamacpp:smollm2"


def test_a_config_file_that_is_not_utf8_says_so(tmp_path: Path) -> None:
    from modelplex.config import load_config

    path = tmp_path / "c.toml"
    path.write_bytes(b'default_model = "caf\xe9"\n')
    with pytest.raises(ConfigurationError, match=r"c\.toml is not UTF-8 text \(byte 0xe9 at "
                                                 r"offset 20\): save it as UTF-8$"):
        load_config(path, apply_env=False)


def test_a_yaml_error_is_one_line(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    from modelplex.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("a: b: c\n")
    with pytest.raises(ConfigurationError) as info:
        load_config(path, apply_env=False)
    assert str(info.value) == (f"{path} is not valid YAML: mapping values are not allowed here "
                               "(at line 1, column 5)")


def test_a_misspelt_deployment_key_is_not_sent_to_the_provider() -> None:
    """`weigth = 3` reached ollama as an unknown constructor keyword."""
    with pytest.raises(ConfigurationError, match=r"models\.fast\.deployments\.0: weigth: unknown "
                                                 r"key \(did you mean 'weight'\?\)"):
        parse_config({"models": {"fast": {"deployments": [{"model": "ollama:x", "weigth": 3}]}}})
    config = parse_config({"models": {"fast": {"deployments": [
        {"model": "ollama:x", "host": "http://h:1", "names": "n", "models_dir": "d"}]}}})
    assert config.models["fast"].deployments[0].provider_kwargs == {
        "host": "http://h:1", "names": "n", "models_dir": "d"}


def test_a_misspelt_named_model_names_the_configured_one(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[models.fast]\nmodel = "llamacpp:smollm2"\n')
    proc = Cli(config, env={"MODELPLEX_LOAD_PLUGINS": "llamacpp"}, timeout=120).run(
        "chat", "-m", "fsat", "hi")
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: model 'fsat' (did you mean 'fast'?) does not name a "
                                  "provider")
