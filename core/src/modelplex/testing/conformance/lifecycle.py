"""The lifecycle suite: closing frees connections; the entry point registers the provider."""

from __future__ import annotations

import pytest

from modelplex.plugins import Plugins
from modelplex.provider import Provider
from modelplex.testing.conformance.base import CONFORMANCE_TIMEOUTS, ConformanceBase, eventually
from modelplex.testing.upstream import FaultyUpstream

__all__ = ["LifecycleSuite"]


class LifecycleSuite(ConformanceBase):
    """aclose() frees what the provider holds; the plugin's entry point finds it."""

    async def test_aclose_twice_is_harmless(self, provider: Provider) -> None:
        """aclose() may be called more than once."""
        await provider.aclose()
        await provider.aclose()

    async def test_aclose_closes_connections(self, upstream: FaultyUpstream | None,
                                             wired: Provider | None) -> None:
        """After ``async with`` the provider holds no connection to the server."""
        server, _ = self.need_upstream(upstream, wired)
        async with self.make_provider(server.url, timeouts=CONFORMANCE_TIMEOUTS,
                                      api_key=None) as provider:
            await provider.complete(self.messages, model=self.upstream_model)
            async for _ in provider.chat(self.messages, model=self.upstream_model):
                pass
        await eventually(lambda: server.open_connections == 0)
        assert server.open_connections == 0, (
            f"{server.open_connections} connection(s) still open after aclose(): close the "
            "HttpClient (or session) in aclose()")

    async def test_registered_through_entry_point(self, provider: Provider) -> None:
        """The installed plugin registers the provider under its name, without errors."""
        if self.plugin is None:
            pytest.skip("not distributed as a plugin (plugin = None)")
        assert self.plugin, (f"{type(self).__name__}: set `plugin` to the name of your "
                             "`modelplex` entry point (or None if the provider is no plugin)")
        plugins = Plugins()
        registry = plugins.registry("providers")
        info = {p.name: p for p in plugins.list_plugins()}
        assert self.plugin in info, (f"no installed plugin named {self.plugin!r}: is the "
                                     "package installed, with the entry point in pyproject.toml?")
        assert info[self.plugin].error is None, info[self.plugin].error
        assert provider.name in registry, f"{self.plugin!r} does not register {provider.name!r}"
        assert registry[provider.name].plugin == self.plugin
