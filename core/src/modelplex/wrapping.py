"""``WrappingProvider``: the base of every layer of the request path.

A layer (recording, telemetry, the response cache, a guardrail) is a provider in front of
another provider. It overrides what it changes, usually :meth:`~Provider.stream_request` and
:meth:`~Provider.complete_request`, and everything else reaches the wrapped provider
unchanged, so a provider method added later never has to be threaded through each layer::

    class Shouting(WrappingProvider):
        async def complete_request(self, request):
            response = await self.inner.complete_request(request)
            response.content = response.content.upper()
            return response

A layer factory is called with the provider below and a :class:`LayerContext`, and returns
the layer (or ``None`` to stay out of that stack).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from modelplex.chunks import ChatResponse, StreamChunk
from modelplex.provider import ChatRequest, CommonOptions, Provider
from modelplex.types import HealthStatus, ModelInfo, PullProgress

if TYPE_CHECKING:
    from modelplex.batch.jobs import BatchItem, BatchJob, BatchRequest
    from modelplex.config import Config

__all__ = ["LayerContext", "WrappingProvider"]


@attrs.frozen
class LayerContext:
    """What a layer factory knows about the stack it is asked to join.

    ``spec`` is what the caller asked for (``"ollama:llama3.2"``, a named model, ``None`` for
    the default), ``model`` the model name sent to the provider, ``provider_name`` the name
    shown for it (the provider's, or the named model's), ``caller`` who builds the stack
    (``"chat"``, ``"cli"``, ``"server"``, ``"compat"``, ``"batch"``), ``named`` whether
    ``spec`` is a named model of the config. What the built-in layers use: ``cache`` (the
    open :class:`~modelplex.caching.CacheLayer`, or ``None``), ``log_store`` (the
    :class:`~modelplex.store.logs.LogStore` exchanges are stored in, or ``None``) and
    ``conversation_id`` (the conversation they belong to, unless a request says).
    """

    spec: str | None
    model: str
    provider_name: str
    config: Config | None = None
    caller: str = "chat"
    named: bool = False
    cache: Any = None
    log_store: Any = None
    conversation_id: str | None = None


class WrappingProvider(Provider):
    """A provider in front of ``inner`` that forwards whatever it does not override.

    The name, options model, capabilities and default model are the inner provider's, and so
    are every operation and any other attribute (a router's ``stats()``, say).
    """

    def __init__(self, inner: Provider) -> None:
        self.inner = inner
        self.name = inner.name
        self.Options = inner.Options  # type: ignore[misc]
        self.capabilities = inner.capabilities  # type: ignore[misc]
        self.default_model = inner.default_model

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.inner!r}>"

    def __getattr__(self, name: str) -> Any:
        # only reached for attributes this layer lacks (a router's stats(), chain, ...)
        if name == "inner":  # not set yet (during __init__ or unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def wrapped(self) -> Provider:
        """The provider this layer wraps."""
        return self.inner

    # -- requests -------------------------------------------------------------------------
    def parse_options(self, options: Mapping[str, Any] | CommonOptions | None) -> CommonOptions:
        """The inner provider's option validation."""
        return self.inner.parse_options(options)

    def stream_request(self, request: ChatRequest) -> AsyncGenerator[StreamChunk, None]:
        """The inner provider's stream."""
        return self.inner.stream_request(request)

    async def complete_request(self, request: ChatRequest) -> ChatResponse:
        """The inner provider's whole answer."""
        return await self.inner.complete_request(request)

    def _stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        return self.stream_request(request)

    async def _complete(self, request: ChatRequest) -> ChatResponse:
        return await self.complete_request(request)

    # -- everything else ------------------------------------------------------------------
    async def embed(self, texts: Sequence[str], *, model: str,
                    options: Mapping[str, Any] | None = None) -> list[list[float]]:
        """The inner provider's embeddings."""
        return await self.inner.embed(texts, model=model, options=options)

    async def list_models(self) -> list[ModelInfo]:
        """The inner provider's models."""
        return await self.inner.list_models()

    async def show_model(self, name: str) -> ModelInfo:
        """The inner provider's model details."""
        return await self.inner.show_model(name)

    def pull_model(self, name: str) -> AsyncIterator[PullProgress]:
        """The inner provider's download."""
        return self.inner.pull_model(name)

    async def delete_model(self, name: str) -> None:
        """The inner provider's delete."""
        await self.inner.delete_model(name)

    async def list_loaded_models(self) -> list[ModelInfo]:
        """The inner provider's loaded models."""
        return await self.inner.list_loaded_models()

    async def health(self) -> HealthStatus:
        """The inner provider's health."""
        return await self.inner.health()

    @property
    def has_batch_api(self) -> bool:
        """Whether the inner provider has a Batch API."""
        return self.inner.has_batch_api

    async def submit_batch(self, requests: Sequence[BatchRequest]) -> BatchJob:
        """The inner provider's batch job."""
        return await self.inner.submit_batch(requests)

    async def batch_status(self, job_id: str) -> BatchJob:
        """The inner provider's batch job status."""
        return await self.inner.batch_status(job_id)

    def batch_results(self, job_id: str) -> AsyncIterator[BatchItem]:
        """The inner provider's batch results."""
        return self.inner.batch_results(job_id)

    async def cancel_batch(self, job_id: str) -> BatchJob:
        """The inner provider's batch cancel."""
        return await self.inner.cancel_batch(job_id)

    async def aclose(self) -> None:
        """Close the inner provider."""
        await self.inner.aclose()

    async def close_layer(self) -> None:
        """Free what this layer holds itself, not the inner provider (nothing by default).

        A :class:`~modelplex.pipeline.Lease` calls it for each layer it built when released;
        the providers below belong to the pool.
        """
