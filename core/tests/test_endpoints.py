"""modelplex.endpoints: one reader for every plugin's table of named endpoints."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from modelplex.endpoints import COMMON_SETTINGS, Endpoint, EndpointTable
from modelplex.errors import ConfigurationError


def _kind(name: str, table: Mapping[str, Any]) -> str | None:
    return None if table.get("kind") in ("a", "b") else "kind must be a or b"


TABLE = EndpointTable(plugin="modelplex-demo", filename="demo.toml",
                      config_env="DEMO_CONFIG", endpoints_env="DEMO_ENDPOINTS",
                      settings=("kind",), strings=("kind",), check=_kind,
                      example='{"x": {"kind": "a"}}', such_as="kind")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    monkeypatch.delenv("DEMO_CONFIG", raising=False)
    monkeypatch.delenv("DEMO_ENDPOINTS", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    return monkeypatch


def test_file_then_variable(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert TABLE.load() == []
    path = tmp_path / "modelplex" / "demo.toml"
    path.parent.mkdir()
    path.write_text('[one]\nkind = "a"\nbase_url = "http://f:1"\n[two]\nkind = "b"\n'
                    'timeouts = 30\napi_key = "sk-secret-0123456789"\n')
    assert TABLE.config_path() == path
    env.setenv("DEMO_ENDPOINTS", json.dumps({"one": {"kind": "b", "base_url": "http://e:1"}}))
    found = {e.name: e for e in TABLE.load()}
    assert found["one"].source == "DEMO_ENDPOINTS" and found["one"].settings["kind"] == "b"
    assert found["two"].source == str(path)
    assert found["two"].provider_kwargs(exclude=("kind",)) == {
        "timeouts": 30, "api_key": "sk-secret-0123456789", "name": "two",
        "config_source": str(path)}
    assert "sk-secret" not in repr(found["two"])
    one, two = found["one"], found["two"]
    assert (one.base_url, one.headers, one.verify_tls, one.timeouts) == (
        "http://e:1", {}, True, None)
    assert (two.base_url, two.timeouts, two.api_key, two.get("kind")) == (
        None, 30, "sk-secret-0123456789", "b")
    assert (two.api_key_env, two.default_model, two.get("colour", "red")) == (None, None, "red")


@pytest.mark.parametrize(("table", "problem"), [
    ({"kind": "c"}, "kind must be a or b"),
    ({"kind": "a", "colour": "red"}, "unknown setting(s) colour"),
    ({"kind": 1}, "kind must be a string"),
    ({"kind": "a", "base_url": 1}, "base_url must be a string"),
    ({"kind": "a", "base_url": "host:1"}, "must start with http"),
    ({"kind": "a", "headers": {"a": 1}}, "headers must map"),
    ({"kind": "a", "verify_tls": "no"}, "verify_tls must be true or false"),
    ({"kind": "a", "timeouts": {"first": 1}}, "unknown timeout"),
    ("a", "must be a table of settings such as kind"),
])
def test_a_bad_endpoint_carries_its_error(env: pytest.MonkeyPatch, table: object,
                                          problem: str) -> None:
    env.setenv("DEMO_ENDPOINTS", json.dumps({"bad": table, "good": {"kind": "a"}}))
    bad, good = TABLE.load()
    assert bad.error is not None and bad.error.startswith("endpoint 'bad' in DEMO_ENDPOINTS: ")
    assert problem in bad.error
    assert good == Endpoint(name="good", source="DEMO_ENDPOINTS", settings={"kind": "a"})


def test_names_and_sources(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("DEMO_ENDPOINTS", json.dumps({"a:b": {"kind": "a"}}))
    [endpoint] = TABLE.load()
    assert endpoint.error is not None and "no ':'" in endpoint.error
    for value, problem in (("{bad", "DEMO_ENDPOINTS is not valid JSON"),
                           ("[1]", "must be a JSON object with one table per endpoint name, "
                                   'like {"x": {"kind": "a"}}')):
        env.setenv("DEMO_ENDPOINTS", value)
        with pytest.raises(ConfigurationError, match=problem.replace("[", r"\[")):
            TABLE.load()
    env.delenv("DEMO_ENDPOINTS")
    env.setenv("DEMO_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigurationError, match="cannot read the modelplex-demo config"):
        TABLE.load()
    bad = tmp_path / "bad.json"
    bad.write_text("[1]")
    env.setenv("DEMO_CONFIG", str(bad))
    with pytest.raises(ConfigurationError, match="must hold one table per endpoint name"):
        TABLE.load()


def test_common_settings_are_the_http_provider_keywords() -> None:
    import inspect

    from modelplex.http_provider import HttpProvider

    keywords = set(inspect.signature(HttpProvider.__init__).parameters) - {"self"}
    assert set(COMMON_SETTINGS) == keywords | {"api_key_env"}
