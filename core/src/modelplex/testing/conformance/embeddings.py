"""The embeddings suite, for providers whose capabilities include embeddings."""

from __future__ import annotations

import pytest

from modelplex.errors import ModelNotFoundError
from modelplex.provider import Provider
from modelplex.testing.conformance.base import ConformanceBase
from modelplex.testing.upstream import FaultyUpstream

__all__ = ["EmbeddingsSuite"]


class EmbeddingsSuite(ConformanceBase):
    """embed() returns one vector per text, all of one length (skipped without embeddings)."""

    def _embedding_subject(self, provider: Provider, wired: Provider | None, model: str
                 ) -> tuple[Provider, str]:
        subject = wired or provider
        if not subject.capabilities.embeddings:
            pytest.skip("the provider declares no embeddings (capabilities.embeddings)")
        if wired is not None:
            return subject, self.upstream_model
        return subject, self.embedding_model or model

    async def test_one_vector_per_text(self, provider: Provider, wired: Provider | None,
                                       model: str) -> None:
        """Vectors come back in order, one per text, of floats, all the same length."""
        subject, name = self._embedding_subject(provider, wired, model)
        texts = ["The capital of France is Paris.", "Bananas are yellow.", "x"]
        vectors = await subject.embed(texts, model=name)
        assert len(vectors) == len(texts)
        assert len({len(v) for v in vectors}) == 1
        assert len(vectors[0]) > 0
        assert all(isinstance(x, float) for v in vectors for x in v)
        assert vectors[0] != vectors[1]

    async def test_unknown_model(self, upstream: FaultyUpstream | None,
                                 wired: Provider | None) -> None:
        """Embedding with a model the server lacks raises ModelNotFoundError."""
        _, provider = self.need_upstream(upstream, wired)
        if not provider.capabilities.embeddings:
            pytest.skip("the provider declares no embeddings (capabilities.embeddings)")
        with pytest.raises(ModelNotFoundError):
            await provider.embed(["x"], model=self.missing_model)
