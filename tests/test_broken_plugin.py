"""A real installed distribution whose entry point raises on import.

The distribution is a ``*.dist-info`` folder plus a module in a temporary directory put on
``sys.path`` (in process) or ``PYTHONPATH`` (for the ``modelplex`` command), so
importlib-metadata finds it exactly like a pip-installed plugin.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

from modelplex.errors import PluginError
from modelplex.manager import create_provider
from modelplex.plugins import Plugins
from modelplex.testing import Cli

SECRET = "sk-brokenpluginsecret1234"


def write_distribution(site: Path, dist: str, version: str, entry_points: str,
                       modules: dict[str, str]) -> None:
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(entry_points)
    for name, source in modules.items():
        (site / f"{name}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def broken_site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    write_distribution(
        site, "broken-plugin", "0.3.1", "[modelplex]\nbroken = broken_plugin_mod\n",
        {"broken_plugin_mod": f"""
            raise RuntimeError("broken plugin exploded on import (key {SECRET})")
        """})
    return site


def cli_with(site: Path) -> Cli:
    """``modelplex`` with ``site`` on PYTHONPATH and no plugin settings of the developer's."""
    return Cli(drop=(), env={
        "PYTHONPATH": os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])]),
        **dict.fromkeys(("MODELPLEX_LOAD_PLUGINS", "MODELPLEX_DISABLE_PLUGINS", "MODELPLEX_DEBUG",
                         "MODELPLEX_DEFAULT_MODEL"), None)})


async def test_in_process_broken_plugin_is_reported_and_llamacpp_works(
        broken_site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(broken_site))
    monkeypatch.delenv("MODELPLEX_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("MODELPLEX_DISABLE_PLUGINS", raising=False)
    plugins = Plugins()
    infos = {i.name: i for i in plugins.list_plugins()}

    broken = infos["broken"]
    assert broken.distribution == "broken-plugin"
    assert broken.version == "0.3.1"
    assert broken.hooks == []
    assert broken.error is not None
    assert broken.error.startswith("failed to load: RuntimeError: broken plugin exploded")
    assert SECRET not in broken.error
    assert "broken_plugin_mod" not in sys.modules

    assert infos["llamacpp"].error is None
    assert "llamacpp" in plugins.provider_names()
    provider = create_provider("llamacpp", plugins)
    try:
        models = await provider.list_models()
    finally:
        await provider.aclose()
    assert any(m.name == "smollm2" for m in models)


def test_two_distributions_with_the_same_provider_name(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    plugin_source = """
        from modelplex import hookimpl

        class Dummy:
            name = "twin"

        @hookimpl
        def register_providers(register):
            register(Dummy)
    """
    site = tmp_path / "site"
    write_distribution(site, "twin-one", "1.0", "[modelplex]\ntwin_one = twin_one_mod\n",
                       {"twin_one_mod": plugin_source})
    write_distribution(site, "twin-two", "2.0", "[modelplex]\ntwin_two = twin_two_mod\n",
                       {"twin_two_mod": plugin_source})
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("MODELPLEX_LOAD_PLUGINS", "twin_one,twin_two,llamacpp")
    plugins = Plugins()
    with pytest.raises(PluginError) as info:
        plugins.get("providers", "twin")
    assert "twin-one" in str(info.value)
    assert "twin-two" in str(info.value)
    assert plugins.get("providers", "llamacpp").name == "llamacpp"

    monkeypatch.setenv("MODELPLEX_DISABLE_PLUGINS", "twin-two")  # the fix the message gives
    assert Plugins().get("providers", "twin").__module__ == "twin_one_mod"


def test_cli_plugins_lists_the_broken_plugin(broken_site: Path) -> None:
    proc = cli_with(broken_site).run("plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    infos = {i["name"]: i for i in json.loads(proc.stdout)}
    assert infos["broken"]["version"] == "0.3.1"
    assert "RuntimeError: broken plugin exploded on import" in infos["broken"]["error"]
    assert SECRET not in proc.stdout + proc.stderr
    llamacpp = infos["llamacpp"]
    assert llamacpp["error"] is None
    assert llamacpp["version"]
    assert llamacpp["distribution"] == "modelplex-llamacpp"
    assert "register_providers" in llamacpp["hooks"]


def test_cli_plugins_text_shows_the_error(broken_site: Path) -> None:
    proc = cli_with(broken_site).run("plugins")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("broken"))
    assert "error: failed to load: RuntimeError" in lines[at + 1]


@pytest.mark.slow
def test_cli_chat_still_works_with_a_broken_plugin(broken_site: Path) -> None:
    proc = cli_with(broken_site).run("chat", "What is the capital of France?")
    assert proc.returncode == 0, proc.stderr
    assert "Paris" in proc.stdout
    assert "Traceback" not in proc.stderr
