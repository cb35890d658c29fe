"""Discovery with every package of the repository installed: entry points, allow and block lists."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from modelplex.errors import UnknownProviderError
from modelplex.plugins import Plugins

BUILTINS = "modelplex.builtins"
FEATURE_PLUGINS = {"server"}
ROOT = Path(__file__).resolve().parents[1]


def names(plugins: Plugins, **kw: Any) -> list[str]:
    return [info.name for info in plugins.list_plugins(**kw)]


# -- allow and block lists ----------------------------------------------------------------------
def test_allow_list_by_entry_point_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELPLEX_LOAD_PLUGINS", "llamacpp")
    monkeypatch.delenv("MODELPLEX_DISABLE_PLUGINS", raising=False)
    plugins = Plugins()
    assert names(plugins) == ["llamacpp"]
    assert plugins.provider_names() == ["llamacpp"]
    info = plugins.list_plugins()[0]
    assert info.distribution == "modelplex-llamacpp"
    assert info.version
    assert info.hooks == ["register_providers"]
    assert info.error is None


def test_allow_list_by_distribution_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELPLEX_LOAD_PLUGINS", " modelplex-llamacpp , not-installed ")
    monkeypatch.delenv("MODELPLEX_DISABLE_PLUGINS", raising=False)
    assert names(Plugins()) == ["llamacpp"]


def test_empty_allow_list_loads_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELPLEX_LOAD_PLUGINS", "")
    plugins = Plugins()
    assert names(plugins) == []
    assert plugins.provider_names() == []
    assert names(plugins, include_builtins=True) == [BUILTINS]  # built-ins always load


def test_block_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELPLEX_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("MODELPLEX_DISABLE_PLUGINS", raising=False)
    everything = set(names(Plugins()))
    assert "llamacpp" in everything

    monkeypatch.setenv("MODELPLEX_DISABLE_PLUGINS", "other-thing, llamacpp")
    plugins = Plugins()
    assert set(names(plugins)) == everything - {"llamacpp"}
    assert "llamacpp" not in plugins.provider_names()
    with pytest.raises(UnknownProviderError):
        plugins.get("providers", "llamacpp")


def test_block_list_by_distribution_name_wins_over_allow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELPLEX_LOAD_PLUGINS", "llamacpp")
    monkeypatch.setenv("MODELPLEX_DISABLE_PLUGINS", "modelplex-llamacpp")
    assert names(Plugins()) == []


def test_entry_point_plugin_provides_a_working_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELPLEX_LOAD_PLUGINS", "llamacpp")
    plugins = Plugins()
    provider_cls = plugins.get("providers", "llamacpp")
    assert provider_cls.name == "llamacpp"
    assert provider_cls.default_model



@pytest.mark.parametrize("pyproject", sorted(ROOT.glob("plugins/*/pyproject.toml")),
                         ids=lambda p: p.parent.name)
def test_every_plugin_has_one_entry_point_that_registers(pyproject: Path) -> None:
    """Each plugins/<name> is dist modelplex-<name> with entry point <name> = modelplex_<name>."""
    project = tomllib.loads(pyproject.read_text())["project"]
    name = pyproject.parent.name
    assert project["name"] == f"modelplex-{name}"
    assert project["entry-points"]["modelplex"] == {name: f"modelplex_{name}"}
    installed = [ep for ep in metadata.entry_points(group="modelplex")
                 if ep.dist is not None and ep.dist.metadata["Name"] == f"modelplex-{name}"]
    assert [ep.name for ep in installed] == [name]
    plugins = Plugins()
    info = {i.name: i for i in plugins.list_plugins()}[name]
    assert info.error is None
    if name in FEATURE_PLUGINS:  # not providers: they add commands
        assert info.hooks == ["register_commands"]
        return
    if name == "redis":  # a cache and a state backend, no provider
        assert info.hooks == ["register_caches", "register_state_backends"]
        assert name in plugins.registry("caches")
        assert name in plugins.registry("state_backends")
        return
    assert "register_providers" in info.hooks
    assert name in plugins.provider_names()
