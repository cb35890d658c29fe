"""The model-management suite: listing models, showing one, health."""

from __future__ import annotations

import pytest

from modelplex.errors import ModelNotFoundError
from modelplex.provider import Provider
from modelplex.testing.conformance.base import CONFORMANCE_TIMEOUTS, ConformanceBase
from modelplex.testing.upstream import FaultyUpstream, closed_port_url
from modelplex.types import HealthStatus, ModelInfo

__all__ = ["ModelManagementSuite"]


def _lists_models(provider: Provider) -> bool:
    return type(provider).list_models is not Provider.list_models


class ModelManagementSuite(ConformanceBase):
    """list_models, show_model and health tell the truth (skipped if there is no listing)."""

    def _listing_subject(self, provider: Provider, wired: Provider | None, model: str
                 ) -> tuple[Provider, str]:
        subject = wired or provider
        if not _lists_models(subject):
            pytest.skip("the provider does not list models (list_models() is not overridden)")
        return subject, self.upstream_model if wired is not None else model

    async def test_list_models_names_the_provider(self, provider: Provider,
                                                  wired: Provider | None, model: str) -> None:
        """Every ModelInfo names this provider; the served model is among them."""
        subject, served = self._listing_subject(provider, wired, model)
        models = await subject.list_models()
        assert all(isinstance(m, ModelInfo) for m in models)
        assert all(m.provider == subject.name for m in models)
        assert any(served in (m.name, m.id) for m in models), \
            f"{served!r} is not in {[m.name for m in models]}"

    async def test_show_model(self, provider: Provider, wired: Provider | None,
                              model: str) -> None:
        """show_model finds a served model and raises ModelNotFoundError for a missing one."""
        subject, served = self._listing_subject(provider, wired, model)
        info = await subject.show_model(served)
        assert served in (info.name, info.id)
        with pytest.raises(ModelNotFoundError):
            await subject.show_model(self.missing_model)

    async def test_health_when_up(self, provider: Provider, wired: Provider | None,
                                  model: str) -> None:
        """health() says healthy when the provider works."""
        subject, _ = self._listing_subject(provider, wired, model)
        status = await subject.health()
        assert isinstance(status, HealthStatus)
        assert status.healthy, status.detail
        assert status.provider == subject.name

    async def test_health_when_down(self, upstream: FaultyUpstream | None,
                                    wired: Provider | None) -> None:
        """health() reports an unreachable server as unhealthy, with a reason; no raise."""
        _, subject = self.need_upstream(upstream, wired)
        if not _lists_models(subject) and type(subject).health is Provider.health:
            pytest.skip("the provider neither lists models nor overrides health(), so its "
                        "health() cannot see the server (override health() to check it)")
        async with self.make_provider(closed_port_url(), timeouts=CONFORMANCE_TIMEOUTS,
                                      api_key=None) as provider:
            status = await provider.health()
        assert not status.healthy
        assert status.detail
