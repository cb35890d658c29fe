"""``OllamaProvider``: chat, completion, embeddings and model management over Ollama's API.

The provider is two parts on one base (:mod:`modelplex_ollama.base`: configuration, the HTTP
client, per-model request slots): :class:`~modelplex_ollama.chat.OllamaChat` talks to models
(``/api/chat``, ``/api/generate``, ``/api/embed``) and
:class:`~modelplex_ollama.management.OllamaModels` manages them (list, show, copy, delete,
pull, version, health).
"""

from __future__ import annotations

from modelplex_ollama.chat import OllamaChat
from modelplex_ollama.management import OllamaModels

__all__ = ["OllamaProvider"]


class OllamaProvider(OllamaChat, OllamaModels):
    """The Ollama provider: ``ollama:MODEL``.

    Args:
        host: the server, as ``OLLAMA_HOST`` takes it (``gpu-box``, ``gpu-box:11434``,
            ``https://ollama.example.com/prefix``). Default: ``OLLAMA_HOST`` (or its other
            name ``OLLAMA_BASE_URL``), else ``http://127.0.0.1:11434``.
        api_key: sent as ``Authorization: Bearer``. Default: ``OLLAMA_API_KEY``. Kept as a
            :class:`~pydantic.SecretStr`; never shown in reprs, errors or logs.
        headers: extra headers for every request (for proxies in front of Ollama).
        timeouts: a number of seconds (the total per request), a mapping of ``connect``,
            ``first_byte``, ``between_chunks`` and ``total`` seconds, or a
            :class:`~modelplex.http.Timeouts` (see :meth:`~modelplex.http.Timeouts.parse`).
        max_parallel: requests in flight at once per model; more wait their turn on the
            client. Default: ``OLLAMA_NUM_PARALLEL`` if set, else 1. 0 means no limit.
        verify_tls: verify the server's certificate (default).
        check_disk_space: before pulling to a server on this machine, refuse when the disk
            cannot hold the announced size (default).
    """
