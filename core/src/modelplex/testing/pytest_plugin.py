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
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from modelplex.plugins import Plugins, get_plugins, set_plugins


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
