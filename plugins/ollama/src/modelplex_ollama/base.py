"""What every part of the Ollama provider shares: its configuration, the HTTP client, the
per-model limit on requests in flight, error messages and closing.

:class:`OllamaBase` is the base of :class:`~modelplex_ollama.chat.OllamaChat` (chat,
completion, embeddings) and :class:`~modelplex_ollama.management.OllamaModels` (listing,
showing, pulling and deleting models); :class:`~modelplex_ollama.provider.OllamaProvider` is
both.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import SecretStr

from modelplex import errors
from modelplex.errors import ConfigurationError, ProviderError, StreamError
from modelplex.http import Timeouts
from modelplex.http_provider import HttpProvider
from modelplex.provider import Capabilities, CommonOptions
from modelplex_ollama.__about__ import __version__
from modelplex_ollama.connection import DEFAULT_HOST, parse_host, status_error
from modelplex_ollama.options import OllamaOptions

__all__ = ["OllamaBase", "server_message"]


def _max_parallel(value: int | None) -> int:
    if value is None:
        env = os.environ.get("OLLAMA_NUM_PARALLEL", "").strip()
        if not env:
            return 1
        try:
            value = int(env)
        except ValueError:
            raise ConfigurationError(f"OLLAMA_NUM_PARALLEL={env!r} is not a whole number") \
                from None
    if value < 0:
        raise ConfigurationError(f"ollama: max_parallel must be >= 0 (0 = no limit), "
                                 f"got {value}")
    return value


def _model_key(model: str) -> str:
    """``llama3.2`` and ``llama3.2:latest`` are the same model."""
    return model if ":" in model.rsplit("/", 1)[-1] else f"{model}:latest"


def server_message(line: Mapping[str, Any]) -> str:
    """The message of an ``{"error": ...}`` object."""
    err = line.get("error")
    return str(err.get("message", err) if isinstance(err, dict) else err)


_NO_LIMIT = contextlib.nullcontext()


class OllamaBase(HttpProvider):
    """What the Ollama provider's parts share: configuration, the client, per-model slots.

    Its keyword arguments are documented once, on :class:`~modelplex_ollama.OllamaProvider`
    (the class users build).
    """

    name: str = "ollama"
    Options: ClassVar[type[CommonOptions]] = OllamaOptions
    capabilities: ClassVar[Capabilities] = Capabilities(
        streaming=True, embeddings=True, tools=True, vision=True, json_mode=True,
        model_management=True, json_schema=True)
    default_base_url: ClassVar[str] = DEFAULT_HOST
    user_agent: ClassVar[str | None] = f"modelplex-ollama/{__version__}"
    connect_hint: ClassVar[str | None] = (
        "Ollama is not running at {url}: start it with `ollama serve`, or set OLLAMA_HOST to "
        "the address where it runs")

    def __init__(self, host: str | Mapping[str, Any] | None = None,
                 api_key: str | SecretStr | None = None,
                 headers: Mapping[str, str] | None = None,
                 timeouts: Timeouts | Mapping[str, Any] | float | None = None,
                 max_parallel: int | None = None, *, verify_tls: bool = True,
                 check_disk_space: bool = True) -> None:
        if isinstance(host, Mapping):  # OllamaProvider(OllamaConfig(...).to_dict()) (seed 004)
            settings = dict(host)
            address: str | None = settings.pop("host", None)
            api_key = settings.pop("api_key", api_key)
            headers = settings.pop("headers", headers)
            timeouts = settings.pop("timeouts", timeouts)
            max_parallel = settings.pop("max_parallel", max_parallel)
            verify_tls = settings.pop("verify_tls", verify_tls)
            check_disk_space = settings.pop("check_disk_space", check_disk_space)
            if settings:
                raise ConfigurationError(f"ollama: unknown settings {sorted(settings)}")
        else:
            address = host
        if address is None:  # OLLAMA_BASE_URL is another name for it (seed 003)
            address = os.environ.get("OLLAMA_HOST") or os.environ.get("OLLAMA_BASE_URL")
        if api_key is None:
            api_key = os.environ.get("OLLAMA_API_KEY") or None
        self.max_parallel = _max_parallel(max_parallel)
        self.check_disk_space = check_disk_space
        super().__init__(base_url=parse_host(address), api_key=api_key, headers=headers,
                         timeouts=timeouts, verify_tls=verify_tls)
        #: the server's base URL (``base_url``), as ``OLLAMA_HOST`` resolves
        self.host = self.base_url
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._tasks: dict[Any, asyncio.Task[None]] = {}
        self._describing = asyncio.Semaphore(8)  # /api/show requests at once when listing
        self._legacy_embed = False

    def _status_error(self, status: int, body: Any,
                      headers: Mapping[str, str]) -> ProviderError | None:
        return status_error(status, body, headers, self.http.secrets)

    # -- plumbing ---------------------------------------------------------------------------
    def _slot(self, model: str) -> contextlib.AbstractAsyncContextManager[Any]:
        """The per-(host, model) limit on requests in flight; waiting requests queue here."""
        if self.max_parallel == 0:
            return _NO_LIMIT
        key = _model_key(model)
        sem = self._slots.get(key)
        if sem is None:
            sem = self._slots[key] = asyncio.Semaphore(self.max_parallel)
        return sem

    def in_flight(self, model: str) -> int:
        """Requests to ``model`` holding a slot now (for monitoring and tests)."""
        sem = self._slots.get(_model_key(model))
        if sem is None:
            return 0
        return self.max_parallel - sem._value

    def _stream_error(self, line: Mapping[str, Any]) -> StreamError:
        message = errors.redact(server_message(line), *self.http.secrets)
        return StreamError(f"ollama reported an error mid-stream: {message}",
                           provider=self.name)

    @staticmethod
    def _require_model(model: str) -> None:
        if not model:
            raise ConfigurationError("ollama: no model given: name one as 'ollama:MODEL' "
                                     "(`modelplex models list -p ollama` shows yours)")

    async def aclose(self) -> None:
        """Stop background pulls and close every connection."""
        runners = list(self._tasks.values())
        for runner in runners:
            runner.cancel()
        for runner in runners:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await runner
        await super().aclose()
