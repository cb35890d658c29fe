"""pytest fixtures for modelplex plugins (registered through the ``pytest11`` entry point).

``modelplex_plugins``
    A fresh :class:`~modelplex.plugins.Plugins` with no entry points loaded, installed as the
    process-wide one for the duration of the test.

``register_plugin``
    ``register_plugin(obj, name=None)`` registers a plugin (a module or class whose functions
    carry ``@hookimpl``) for one test and unregisters it afterwards::

        def test_my_provider(register_plugin):
            register_plugin(my_plugin_module)
            assert "mine" in modelplex.get_plugins().provider_names()

``modelplex_cli``
    A :class:`~modelplex.testing.cli.Cli`: runs the ``modelplex`` command (in a child
    process, or in this one with ``invoke``) without the developer's ``MODELPLEX_*``
    settings, its configuration, data and cache folders in the test's ``tmp_path``
    (``config``, ``data``, ``cache``)::

        def test_my_command(modelplex_cli):
            result = modelplex_cli.run("mine", "status")
            assert result.returncode == 0, result.stderr

For tests that replay recorded traffic (they need the ``aioresponses`` package):

``mock``
    A :class:`~modelplex.testing.replay.Replay` (aioresponses on every aiohttp 3.x), active
    for the test: ``mock.post(url, body=..., headers=...)`` registers a response.

``transcript``
    ``transcript(name)`` reads a recorded body from the ``data`` folder next to the test
    module.

``sent``
    ``sent(mock, provider=None, *secrets)``: each request the provider sent, as
    ``(method, url, headers, json)`` (:func:`~modelplex.testing.replay.sent_requests`);
    ``sent.bodies(mock)``: the JSON bodies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from modelplex.plugins import Plugins, get_plugins, set_plugins

if TYPE_CHECKING:
    from modelplex.testing.cli import Cli
    from modelplex.testing.replay import Replay, SentRequest


@pytest.fixture
def modelplex_plugins() -> Iterator[Plugins]:
    """A fresh plugin manager (built-ins only) used as the process-wide one for this test."""
    plugins = Plugins(load_entrypoints=False)
    old = set_plugins(plugins)
    try:
        yield plugins
    finally:
        set_plugins(old)


@pytest.fixture
def register_plugin() -> Iterator[Callable[..., str]]:
    """Register plugins into the process-wide plugin manager for one test."""
    registered: list[tuple[Plugins, str]] = []

    def register(plugin: Any, name: str | None = None) -> str:
        plugins = get_plugins()
        plugin_name = plugins.register(plugin, name=name)
        registered.append((plugins, plugin_name))
        return plugin_name

    try:
        yield register
    finally:
        for plugins, plugin_name in reversed(registered):
            plugins.unregister(plugin_name)


@pytest.fixture
def modelplex_cli(tmp_path: Path) -> Cli:
    """``modelplex`` run isolated: no ``MODELPLEX_*`` settings of the developer's, its
    configuration, data and cache folders under ``tmp_path``."""
    from modelplex.testing.cli import Cli

    return Cli(env={"XDG_CONFIG_HOME": str(tmp_path / "config"),
                    "XDG_DATA_HOME": str(tmp_path / "data"),
                    "XDG_CACHE_HOME": str(tmp_path / "cache")})


# -- replayed traffic (imports aioresponses, an optional dependency, only when used) ----------
@pytest.fixture
def mock() -> Iterator[Replay]:
    """Replayed HTTP for one test: register responses with ``mock.post(url, ...)``."""
    from modelplex.testing.replay import Replay

    replay = Replay()
    with replay:
        yield replay


@pytest.fixture
def transcript(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """``transcript(name)``: a recorded body from the ``data`` folder next to the test module."""
    folder = request.path.parent / "data"

    def read(name: str) -> str:
        return (folder / name).read_text(encoding="utf-8")

    return read


class Sent:
    """The ``sent`` fixture: ``sent(mock, provider=None, *secrets)`` and ``sent.bodies(mock)``."""

    def __call__(self, mock: Replay, provider: Any = None, *secrets: str) -> list[SentRequest]:
        from modelplex.testing.replay import sent_requests

        return sent_requests(mock, provider, *secrets)

    def bodies(self, mock: Replay) -> list[Any]:
        """The JSON bodies of the requests sent, in order."""
        from modelplex.testing.replay import sent_bodies

        return sent_bodies(mock)


@pytest.fixture
def sent() -> Sent:
    """What the provider sent through ``mock``: ``sent(mock, provider, *secrets)``."""
    return Sent()
