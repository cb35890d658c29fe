"""Plugin discovery, registration, isolation of broken plugins, allow and block lists."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import click
import pytest

import modelplex
from modelplex import hookimpl
from modelplex.errors import PluginError, UnknownProviderError
from modelplex.manager import create_provider
from modelplex.plugins import Plugins, get_plugins

BUILTINS = "modelplex.builtins"


class RaisingPlugin:
    """Registers one provider, then raises: nothing it staged may be kept."""

    def __init__(self, fake_cls: type) -> None:
        self.fake_cls = fake_cls

    @hookimpl
    def register_providers(self, register: Any) -> None:
        register(self.fake_cls, name="half-registered")
        raise RuntimeError("cannot register: token sk-abcdefghijklmnop leaked")


def names(plugins: Plugins, **kw: Any) -> list[str]:
    return [info.name for info in plugins.list_plugins(**kw)]


# -- built-ins ----------------------------------------------------------------------------------
def test_builtins_are_registered_through_the_hooks() -> None:
    plugins = Plugins(load_entrypoints=False)
    parsers = plugins.registry("parsers")
    templates = plugins.registry("prompt_templates")
    caches = plugins.registry("caches")
    assert parsers["json_dict"].obj is modelplex.JsonDictParser
    assert templates["chain_of_thought"].obj is modelplex.ChainOfThoughtPrompt
    assert caches["memory"].obj is modelplex.MemoryCache
    assert {r.plugin for r in (parsers["json_dict"], templates["chain_of_thought"],
                               caches["memory"])} == {BUILTINS}
    assert plugins.provider_names() == []

    infos = {i.name: i for i in plugins.list_plugins(include_builtins=True)}
    assert infos[BUILTINS].builtin is True
    assert infos[BUILTINS].hooks == ["register_caches", "register_layers", "register_parsers",
                                     "register_prompt_templates", "register_state_backends"]
    assert BUILTINS not in names(plugins)


def test_get_unknown_parser_lists_available() -> None:
    plugins = Plugins(load_entrypoints=False)
    with pytest.raises(PluginError, match=r"no parser named 'yaml'; available: "
                                          r"chain_of_thought, code_block, json_dict, "):
        plugins.get("parsers", "yaml")


def test_get_unknown_provider_is_unknown_provider_error(fake_plugins: Plugins) -> None:
    with pytest.raises(UnknownProviderError) as info:
        fake_plugins.get("providers", "nope")
    assert info.value.installed == ["fake"]
    assert "pip install modelplex-nope" in str(info.value)


def test_loading_is_lazy_and_happens_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib import metadata

    calls: list[Any] = []
    real = metadata.entry_points

    def counting(**kw: Any) -> Any:
        calls.append(kw)
        return real(**kw)

    monkeypatch.setattr(metadata, "entry_points", counting)
    plugins = Plugins()
    assert calls == []  # nothing loaded at construction
    plugins.provider_names()
    plugins.list_plugins()
    plugins.registry("parsers")
    assert calls == [{"group": "modelplex"}]


# -- register / unregister ----------------------------------------------------------------------
def test_register_and_unregister(fake_plugin: Any) -> None:
    plugins = Plugins(load_entrypoints=False)
    assert plugins.register(fake_plugin, name="mine") == "mine"
    assert plugins.provider_names() == ["fake"]
    info = {i.name: i for i in plugins.list_plugins()}["mine"]
    assert info.hooks == ["register_providers"]
    assert info.error is None
    provider = create_provider("fake", plugins, reply="hello")
    assert provider.reply == "hello"  # type: ignore[attr-defined]

    plugins.unregister("mine")
    assert plugins.provider_names() == []
    assert "mine" not in names(plugins)
    with pytest.raises(UnknownProviderError):
        plugins.get("providers", "fake")


def test_register_defaults_to_the_module_name() -> None:
    import types

    module = types.ModuleType("my_plugin_module")

    @hookimpl
    def register_parsers(register: Any) -> None:
        register(dict, name="dictparser")

    module.register_parsers = register_parsers  # type: ignore[attr-defined]
    plugins = Plugins(load_entrypoints=False)
    assert plugins.register(module) == "my_plugin_module"
    assert plugins.registry("parsers")["dictparser"].plugin == "my_plugin_module"


def test_modelplex_plugins_fixture_is_process_wide_and_fresh(modelplex_plugins: Plugins) -> None:
    assert get_plugins() is modelplex_plugins
    assert modelplex.get_plugins() is modelplex_plugins
    # no entry points: only the built-ins
    assert names(modelplex_plugins, include_builtins=True) == [BUILTINS]


def test_register_plugin_fixture(modelplex_plugins: Plugins, register_plugin: Any,
                                 fake_plugin: Any) -> None:
    name = register_plugin(fake_plugin, name="fixture-fake")
    assert name == "fixture-fake"
    assert get_plugins().provider_names() == ["fake"]
    assert "fixture-fake" in names(modelplex_plugins)


def test_fixtures_come_from_the_pytest11_entry_point(tmp_path: Path) -> None:
    """In a project with no conftest, the fixtures exist and register_plugin cleans up."""
    (tmp_path / "test_uses_fixtures.py").write_text(textwrap.dedent("""
        from modelplex import hookimpl
        from modelplex.plugins import get_plugins

        class Plugin:
            @hookimpl
            def register_parsers(self, register):
                register(dict, name="tmp-parser")

        def test_a_register(modelplex_plugins, register_plugin):
            register_plugin(Plugin(), name="tmp-plugin")
            assert "tmp-parser" in get_plugins().registry("parsers")
            # keep the same Plugins for the next test to inspect
            import builtins
            builtins._modelplex_test_plugins = modelplex_plugins

        def test_b_unregistered_after():
            import builtins
            plugins = builtins._modelplex_test_plugins
            assert "tmp-parser" not in plugins.registry("parsers")
            assert "tmp-plugin" not in [i.name for i in plugins.list_plugins()]
            assert get_plugins() is not plugins   # the process-wide one was restored
    """))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         "--rootdir", str(tmp_path), str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout


# -- isolation ----------------------------------------------------------------------------------
def test_plugin_whose_register_hook_raises_is_reported(fake_plugin: Any, fake_cls: type) -> None:
    plugins = Plugins(load_entrypoints=False)
    plugins.register(RaisingPlugin(fake_cls), name="raising")
    plugins.register(fake_plugin, name="good")

    infos = {i.name: i for i in plugins.list_plugins()}
    error = infos["raising"].error
    assert error is not None
    assert error.startswith("registration failed in register_providers: RuntimeError")
    assert "cannot register" in error
    assert "sk-abcdefghijklmnop" not in error  # secrets are redacted from reports
    assert infos["good"].error is None

    # what the failing plugin staged before raising is dropped; the good provider works
    assert plugins.provider_names() == ["fake"]
    provider = create_provider("fake", plugins)
    assert provider.name == "fake"


def test_registration_error_survives_a_rebuild(fake_plugin: Any, fake_cls: type) -> None:
    plugins = Plugins(load_entrypoints=False)
    plugins.register(RaisingPlugin(fake_cls), name="raising")
    plugins.list_plugins()
    plugins.register(fake_plugin, name="later")  # invalidates the registries
    infos = {i.name: i for i in plugins.list_plugins()}
    assert infos["raising"].error is not None
    assert infos["later"].error is None


def test_same_provider_name_from_two_plugins_names_both(make_plugin: Any) -> None:
    plugins = Plugins(load_entrypoints=False)
    plugins.register(make_plugin(provider_name="dup"), name="first-plugin")
    plugins.register(make_plugin(provider_name="dup"), name="second-plugin")
    plugins.register(make_plugin(provider_name="unique"), name="third-plugin")

    with pytest.raises(PluginError) as info:
        plugins.get("providers", "dup")
    message = str(info.value)
    assert "'dup'" in message
    assert "first-plugin" in message
    assert "second-plugin" in message
    assert "MODELPLEX_DISABLE_PLUGINS" in message

    infos = {i.name: i for i in plugins.list_plugins()}
    assert infos["first-plugin"].error == message
    assert infos["second-plugin"].error == message
    assert infos["third-plugin"].error is None
    assert plugins.get("providers", "unique") is not None

    plugins.unregister("second-plugin")  # the clash is gone with one of them
    assert plugins.get("providers", "dup") is not None
    infos = {i.name: i for i in plugins.list_plugins()}
    assert infos["first-plugin"].error is None


def test_plugin_registering_an_object_without_a_name(fake_plugin: Any) -> None:
    class Nameless:
        pass

    class Plugin:
        @hookimpl
        def register_parsers(self, register: Any) -> None:
            register(Nameless)

    class NamedLater:
        @hookimpl
        def register_parsers(self, register: Any) -> None:
            register(Nameless, name="nameless")

    plugins = Plugins(load_entrypoints=False)
    plugins.register(Plugin(), name="no-name")
    plugins.register(NamedLater(), name="named")
    plugins.register(fake_plugin, name="fake-plugin")
    infos = {i.name: i for i in plugins.list_plugins()}
    error = infos["no-name"].error
    assert error is not None
    assert "has no name" in error
    assert "name=" in error
    assert plugins.registry("parsers")["nameless"].obj is Nameless
    assert plugins.provider_names() == ["fake"]


# -- hooks with fewer arguments -----------------------------------------------------------------
def test_hooks_may_take_fewer_arguments() -> None:
    called: list[str] = []

    class Lazy:
        @hookimpl
        def register_providers(self) -> None:
            called.append("providers")

        @hookimpl
        def register_commands(self) -> None:
            called.append("commands")

    plugins = Plugins(load_entrypoints=False)
    plugins.register(Lazy(), name="lazy")
    assert plugins.provider_names() == []
    plugins.add_commands(click.Group())
    assert called == ["providers", "commands"]
    info = {i.name: i for i in plugins.list_plugins()}["lazy"]
    assert info.hooks == ["register_commands", "register_providers"]
    assert info.error is None


def test_hook_with_more_arguments_than_the_spec_is_rejected() -> None:
    import pluggy

    class Greedy:
        @hookimpl
        def register_providers(self, register: Any, extra: Any) -> None:
            raise AssertionError("never called")

    plugins = Plugins(load_entrypoints=False)
    with pytest.raises(pluggy.PluginValidationError, match="extra"):
        plugins.register(Greedy(), name="greedy")
    assert "greedy" not in names(plugins)


def test_register_commands_adds_and_isolates() -> None:
    class Adds:
        @hookimpl
        def register_commands(self, cli: click.Group) -> None:
            @cli.command("hello")
            def hello() -> None:
                click.echo("hi")

    class Breaks:
        @hookimpl
        def register_commands(self, cli: click.Group) -> None:
            raise ValueError("bad command")

    group = click.Group()
    plugins = Plugins(load_entrypoints=False)
    plugins.register(Breaks(), name="breaks")
    plugins.register(Adds(), name="adds")
    plugins.add_commands(group)
    assert "hello" in group.commands
    # the failure stays reported after the registries are built (as `modelplex plugins` does)
    infos = {i.name: i for i in plugins.list_plugins()}
    error = infos["breaks"].error
    assert error is not None
    assert "register_commands" in error
    assert "bad command" in error
    assert infos["adds"].error is None


def test_provider_of_a_failed_plugin_is_not_called_uninstalled(fake_cls: type) -> None:
    """Issue #8: a plugin whose registration failed is installed: say so, not `pip install`."""
    plugins = Plugins(load_entrypoints=False)
    plugins.register(RaisingPlugin(fake_cls), name="raising")
    with pytest.raises(PluginError) as info:
        plugins.get("providers", "raising")
    message = str(info.value)
    assert message.startswith("provider 'raising' is unavailable: its plugin 'raising' is "
                              "installed but registration failed in register_providers")
    assert "pip install" not in message


def test_provider_name_with_a_colon_is_refused_and_reported(make_plugin: Any) -> None:
    plugins = Plugins(load_entrypoints=False)
    plugins.register(make_plugin(provider_name="a:b"), name="colon")
    plugins.register(make_plugin(provider_name="fine"), name="fine")
    assert plugins.provider_names() == ["fine"]
    infos = {i.name: i for i in plugins.list_plugins()}
    assert infos["colon"].error == ("provider name 'a:b' is not valid: use letters, digits, '.', "
                                    "'_' and '-' (no ':' or spaces)")
