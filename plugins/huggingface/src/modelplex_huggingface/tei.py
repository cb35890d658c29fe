"""Text Embeddings Inference (TEI): embeddings from a self-hosted server's ``POST /embed``."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, ClassVar

from pydantic import SecretStr

from modelplex.chunks import StreamChunk
from modelplex.errors import (
    AuthenticationError,
    OptionsError,
    ProviderConnectionError,
    ProviderError,
    ServerBusyError,
    StreamError,
)
from modelplex.http import Timeouts, error_from_status
from modelplex.http_provider import HttpProvider
from modelplex.provider import Capabilities, ChatRequest
from modelplex.types import ModelInfo
from modelplex_huggingface.__about__ import __version__
from modelplex_huggingface.tgi import noted

__all__ = ["DEFAULT_TEI_URL", "TEIProvider"]

DEFAULT_TEI_URL = "http://127.0.0.1:8080"
_EMBED_OPTIONS = ("batch_size", "normalize", "truncate", "truncation_direction", "prompt_name",
                  "dimensions")

class TEIProvider(HttpProvider):
    """A Text Embeddings Inference server: :meth:`embed` only (no chat).

    Args:
        base_url: the server root; defaults to ``$TEI_URL``, else ``http://127.0.0.1:8080``.
        api_key / api_key_env: when the server runs with ``--api-key``.
        headers, default_model, timeouts, verify_tls, name, config_source: as for ``tgi``.
    """

    name: str = "tei"
    #: "whichever model the server serves" (a TEI server runs one)
    default_model: str | None = "tei"
    capabilities: ClassVar[Capabilities] = Capabilities(streaming=False, embeddings=True)
    default_base_url: ClassVar[str] = DEFAULT_TEI_URL
    user_agent: ClassVar[str | None] = f"modelplex-huggingface/{__version__}"
    connect_hint: ClassVar[str | None] = (
        "No TEI server answers there: start one (text-embeddings-router or its Docker image) "
        "or set TEI_URL (or the endpoint's base_url) to where it runs")
    #: Texts per request when the server's ``/info`` does not say (TEI's default
    #: ``--max-client-batch-size`` is 32).
    embed_batch_size: ClassVar[int] = 32
    #: the most texts per request this client ever sends, whatever ``/info`` says
    max_embed_batch_size: ClassVar[int] = 4096

    def __init__(self, *, name: str | None = None, base_url: str | None = None,
                 api_key: str | SecretStr | None = None, api_key_env: str | None = None,
                 headers: Mapping[str, str] | None = None, default_model: str | None = None,
                 timeouts: Timeouts | Mapping[str, Any] | float | None = None,
                 verify_tls: bool = True, config_source: str | None = None) -> None:
        if name is not None:
            self.name = name
        self.config_source = config_source
        if api_key is None and api_key_env:
            api_key = os.environ.get(api_key_env) or None
        url = base_url or (os.environ.get("TEI_URL") if name in (None, "tei") else None)
        super().__init__(base_url=url, api_key=api_key, headers=headers, timeouts=timeouts,
                         verify_tls=verify_tls, default_model=default_model)
        self._server_batch: int | None = None  # max_client_batch_size from /info, once read
        self._info_lock = asyncio.Lock()

    def _status_error(self, status: int, body: Any,
                      headers: Mapping[str, str]) -> ProviderError | None:
        err = error_from_status(status, body, headers, provider=self.name,
                                secrets=self.http.secrets)
        kind = body.get("error_type") if isinstance(body, dict) else None
        text = noted(str(err), f" ({kind})") if kind else str(err)
        if status == 401:
            return AuthenticationError(f"{text}; the server runs with --api-key: give the key "
                                       "as api_key or api_key_env", status_code=status,
                                       body=body, provider=self.name)
        if status == 429 or kind == "overloaded":
            return ServerBusyError(text, status_code=status, body=body,
                                   retry_after=getattr(err, "retry_after", None),
                                   provider=self.name)
        if status == 413:
            text += ("; send fewer texts per request with the batch_size option (by default "
                     "modelplex sends the server's max_client_batch_size from /info)")
        err.args = (text,)
        return err

    def _stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        raise self._unsupported("chat (Text Embeddings Inference serves embeddings only)")

    async def embed(self, texts: Sequence[str], *, model: str = "",
                    options: Mapping[str, Any] | None = None) -> list[list[float]]:
        """One vector per text, sent in batches of ``batch_size`` (default: the server's
        ``max_client_batch_size`` from ``/info``, read once; 32 when it does not say).

        Options: ``normalize`` (default true on the server), ``truncate``,
        ``truncation_direction`` (``"Left"``/``"Right"``), ``prompt_name``, ``dimensions``
        and ``batch_size``. The server serves one model; ``model`` is not sent.
        """
        opts = dict(options or {})
        unknown = sorted(set(opts) - set(_EMBED_OPTIONS))
        if unknown:
            raise OptionsError(f"unknown embedding option(s) {', '.join(map(repr, unknown))} "
                               f"for provider {self.name!r}; valid options: "
                               f"{', '.join(sorted(_EMBED_OPTIONS))}")
        batch_size = opts.pop("batch_size", None)
        if batch_size is None:
            batch_size = await self.server_batch_size() if len(texts) > 1 else 1
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise OptionsError(f"option 'batch_size' must be > 0 (got {batch_size!r})")
        texts = list(texts)
        vectors: list[list[float]] = []
        for start in range(0, len(texts), batch_size):
            batch = texts[start:start + batch_size]
            data = await self.http.request_json("POST", "/embed", {"inputs": batch, **opts})
            if not isinstance(data, list) or len(data) != len(batch):
                raise StreamError(f"{self.name}: asked for {len(batch)} embeddings, got "
                                  f"{len(data) if isinstance(data, list) else data!r}",
                                  provider=self.name)
            vectors.extend(data)
        return vectors

    async def server_batch_size(self) -> int:
        """The most texts the server takes per request: ``max_client_batch_size`` from its
        ``/info`` (read once per provider), else :attr:`embed_batch_size`; at most
        :attr:`max_embed_batch_size`. A server that cannot be reached raises, as ``/embed``
        would; one whose ``/info`` fails otherwise gets the default."""
        if self._server_batch is not None:
            return self._server_batch
        async with self._info_lock:
            if self._server_batch is None:
                try:
                    info = await self.http.request_json("GET", "/info")
                except ProviderConnectionError:
                    raise
                except ProviderError:
                    info = None
                limit = info.get("max_client_batch_size") if isinstance(info, dict) else None
                if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
                    self._server_batch = min(limit, self.max_embed_batch_size)
                else:
                    self._server_batch = self.embed_batch_size
            return self._server_batch

    async def list_models(self) -> list[ModelInfo]:
        """The one model the server serves, from ``/info``."""
        info = await self.http.request_json("GET", "/info")
        info = info if isinstance(info, dict) else {}
        model_id = str(info.get("model_id") or "tei")
        details = {k: v for k, v in info.items() if k != "model_id" and v is not None}
        return [ModelInfo(id=model_id, name=model_id, provider=self.name,
                          context_length=info.get("max_input_length"),
                          capabilities=["embedding"], details=details)]
