"""``OllamaProvider``: chat, completion, embeddings and model management over Ollama's API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import aiohttp
from pydantic import SecretStr

from modelplex import errors
from modelplex.chunks import ChatResponse, StreamChunk
from modelplex.errors import (
    ConfigurationError,
    ModelNotFoundError,
    ProviderConnectionError,
    ProviderError,
    ProviderStatusError,
    ProviderTimeoutError,
    StreamError,
    mask_url,
)
from modelplex.finish import normalize_finish_reason
from modelplex.http import Timeouts, iter_ndjson
from modelplex.http_provider import HttpProvider
from modelplex.provider import Capabilities, ChatRequest, CommonOptions, keep_partial
from modelplex.streams import ndjson_json
from modelplex.types import (
    ChatMessage,
    HealthStatus,
    ModelInfo,
    PullProgress,
    Task,
    TaskStatus,
    human_size,
)
from modelplex_ollama.__about__ import __version__
from modelplex_ollama.connection import (
    DEFAULT_HOST,
    EndpointNotFoundError,
    InsufficientDiskSpaceError,
    free_disk_bytes,
    is_local_host,
    model_not_found_message,
    models_dir,
    parse_host,
    status_error,
)
from modelplex_ollama.models import loaded_model_info, show_info, tag_model_info
from modelplex_ollama.options import OllamaOptions, split_options
from modelplex_ollama.wire import (
    chat_payload,
    chunk_from_line,
    common_fields,
    encode_image,
    estimated_usage,
    needs_file_io,
    usage_from_line,
)

__all__ = ["OllamaProvider"]

log = logging.getLogger("modelplex.ollama")

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


def _server_message(line: Mapping[str, Any]) -> str:
    err = line.get("error")
    return str(err.get("message", err) if isinstance(err, dict) else err)


def _is_missing_manifest(message: str) -> bool:
    text = message.lower()
    return "manifest" in text and ("does not exist" in text or "not found" in text)


_NO_LIMIT = contextlib.nullcontext()


class OllamaProvider(HttpProvider):
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

    def __init__(self, host: str | None = None, api_key: str | SecretStr | None = None,
                 headers: Mapping[str, str] | None = None,
                 timeouts: Timeouts | Mapping[str, Any] | float | None = None,
                 max_parallel: int | None = None, *, verify_tls: bool = True,
                 check_disk_space: bool = True) -> None:
        if host is None:  # OLLAMA_BASE_URL is another name for it (seed 003)
            host = os.environ.get("OLLAMA_HOST") or os.environ.get("OLLAMA_BASE_URL")
        if api_key is None:
            api_key = os.environ.get("OLLAMA_API_KEY") or None
        self.max_parallel = _max_parallel(max_parallel)
        self.check_disk_space = check_disk_space
        super().__init__(base_url=parse_host(host), api_key=api_key, headers=headers,
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

    def _lines(self, resp: aiohttp.ClientResponse) -> AsyncIterator[Any]:
        return iter_ndjson(resp, self.http.max_line_bytes, provider=self.name)

    def _stream_error(self, line: Mapping[str, Any]) -> StreamError:
        message = errors.redact(_server_message(line), *self.http.secrets)
        return StreamError(f"ollama reported an error mid-stream: {message}",
                           provider=self.name)

    @staticmethod
    def _require_model(model: str) -> None:
        if not model:
            raise ConfigurationError("ollama: no model given: name one as 'ollama:MODEL' "
                                     "(`modelplex models list -p ollama` shows yours)")

    async def _read_answer(self, resp: aiohttp.ClientResponse, *, text_key: str,
                           prompt: Sequence[ChatMessage] | str
                           ) -> AsyncGenerator[StreamChunk, None]:
        """Chunks from an NDJSON answer; usage and finish reason on the last one.

        A server that marks lines with ``done`` must end with ``done: true``: a stream that
        stops before it was cut off (:class:`StreamError`). A server that never sends ``done``
        (minimal proxies, test fixtures) ends with an extra chunk with estimated usage.
        """
        marks_done = False
        parts: list[str] = []
        model: str | None = None
        lines = ndjson_json(resp, provider=self.name, max_line_bytes=self.http.max_line_bytes,
                            require_end=False, error=self._stream_error, objects_only=True)
        async for line in lines:
            chunk = chunk_from_line(line, text_key=text_key)
            model = chunk.model or model
            if "done" in line:
                marks_done = True
            if lines.ended:  # done: true, the last object
                parts.append(chunk.content)
                chunk.finish_reason = normalize_finish_reason(line.get("done_reason"))
                chunk.usage = usage_from_line(line) or estimated_usage(prompt, "".join(parts))
                yield chunk
                return
            if chunk.content or chunk.reasoning or chunk.tool_calls:
                parts.append(chunk.content)
                yield chunk
        if marks_done:
            raise StreamError(f"ollama: the stream from {self.host} ended before its final "
                              "`done` object (the connection was closed mid-answer)",
                              provider=self.name)
        yield StreamChunk(finish_reason="stop", model=model,
                          usage=estimated_usage(prompt, "".join(parts)))

    async def _chat_body(self, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
        self._require_model(request.model)
        if needs_file_io(request.messages):
            return await asyncio.to_thread(chat_payload, request, stream=stream)
        return chat_payload(request, stream=stream)

    # -- chat -------------------------------------------------------------------------------
    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        payload = await self._chat_body(request, stream=True)
        async with self._slot(request.model), \
                self.http.stream("POST", "/api/chat", payload) as resp, \
                contextlib.aclosing(self._read_answer(resp, text_key="message",
                                                      prompt=request.messages)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def _complete(self, request: ChatRequest) -> ChatResponse:
        payload = await self._chat_body(request, stream=False)
        async with self._slot(request.model):
            body = await self.http.request_json("POST", "/api/chat", payload)
        return self._response(body, request.model, request.messages, text_key="message")

    def _response(self, body: Any, model: str, prompt: Sequence[ChatMessage] | str, *,
                  text_key: str) -> ChatResponse:
        if not isinstance(body, dict):
            raise StreamError(f"ollama: unexpected reply {body!r:.200}", provider=self.name)
        if "error" in body:
            raise self._stream_error(body)
        chunk = chunk_from_line(body, text_key=text_key)
        usage = usage_from_line(body) or estimated_usage(prompt, chunk.content)
        return ChatResponse(content=chunk.content, model=chunk.model or model,
                            provider=self.name, reasoning=chunk.reasoning,
                            tool_calls=chunk.tool_calls or [],
                            finish_reason=normalize_finish_reason(body.get("done_reason")),
                            usage=usage)

    # -- completion (/api/generate) ---------------------------------------------------------
    def _generate_body(self, prompt: str, *, model: str,
                       options: Mapping[str, Any] | CommonOptions | None, system: str | None,
                       suffix: str | None, images: Sequence[str | bytes] | None, raw: bool,
                       response_format: Any, stream: bool) -> dict[str, Any]:
        from modelplex.provider import normalize_response_format

        self._require_model(model)
        body: dict[str, Any] = {"model": model, "prompt": prompt, "stream": stream}
        if system is not None:
            body["system"] = system
        if suffix is not None:
            body["suffix"] = suffix
        if images:
            body["images"] = [encode_image(img) for img in images]
        if raw:
            body["raw"] = True
        return common_fields(body, self.parse_options(options),
                             normalize_response_format(response_format))

    def generate(self, prompt: str, *, model: str,
                 options: Mapping[str, Any] | CommonOptions | None = None,
                 system: str | None = None, suffix: str | None = None,
                 images: Sequence[str | bytes] | None = None, raw: bool = False,
                 response_format: Any = None) -> AsyncGenerator[StreamChunk, None]:
        """Stream a completion of ``prompt`` over ``/api/generate``; the last chunk has usage.

        ``system`` overrides the model's system prompt, ``suffix`` asks for fill-in-the-middle,
        ``raw`` skips the prompt template. Inputs are validated before anything is sent.
        """
        body = self._generate_body(prompt, model=model, options=options, system=system,
                                   suffix=suffix, images=images, raw=raw,
                                   response_format=response_format, stream=True)

        async def run() -> AsyncIterator[StreamChunk]:
            async with self._slot(model), \
                    self.http.stream("POST", "/api/generate", body) as resp, \
                    contextlib.aclosing(self._read_answer(resp, text_key="response",
                                                          prompt=prompt)) as chunks:
                async for chunk in chunks:
                    yield chunk

        return keep_partial(run())

    async def generate_complete(self, prompt: str, *, model: str,
                                options: Mapping[str, Any] | CommonOptions | None = None,
                                system: str | None = None, suffix: str | None = None,
                                images: Sequence[str | bytes] | None = None, raw: bool = False,
                                response_format: Any = None) -> ChatResponse:
        """The whole completion of ``prompt`` at once (``stream: false``)."""
        body = self._generate_body(prompt, model=model, options=options, system=system,
                                   suffix=suffix, images=images, raw=raw,
                                   response_format=response_format, stream=False)
        async with self._slot(model):
            reply = await self.http.request_json("POST", "/api/generate", body)
        return self._response(reply, model, prompt, text_key="response")

    # -- embeddings -------------------------------------------------------------------------
    async def embed(self, texts: Sequence[str], *, model: str,
                    options: Mapping[str, Any] | None = None, truncate: bool | None = None,
                    dimensions: int | None = None) -> list[list[float]]:
        """One vector per text, in one ``/api/embed`` request.

        Servers too old for ``/api/embed`` are asked once per text over ``/api/embeddings``
        (then ``truncate`` and ``dimensions`` cannot be honoured).
        """
        self._require_model(model)
        items = [texts] if isinstance(texts, str) else list(texts)
        if not items:
            return []
        top, opts = split_options(self.parse_options(options))
        extra: dict[str, Any] = {"options": opts} if opts else {}
        if "keep_alive" in top:
            extra["keep_alive"] = top["keep_alive"]
        if not self._legacy_embed:
            body: dict[str, Any] = {"model": model, "input": items, **extra}
            if truncate is not None:
                body["truncate"] = truncate
            if dimensions is not None:
                body["dimensions"] = dimensions
            try:
                async with self._slot(model):
                    reply = await self.http.request_json("POST", "/api/embed", body)
            except EndpointNotFoundError:
                log.info("ollama at %s has no /api/embed; using /api/embeddings", self.host)
                self._legacy_embed = True
            else:
                vectors = reply.get("embeddings") if isinstance(reply, dict) else None
                if not isinstance(vectors, list) or len(vectors) != len(items):
                    raise StreamError(f"ollama: /api/embed returned "
                                      f"{len(vectors) if isinstance(vectors, list) else 'no'}"
                                      f" vectors for {len(items)} texts", provider=self.name)
                return vectors
        out: list[list[float]] = []
        for text in items:
            async with self._slot(model):
                reply = await self.http.request_json("POST", "/api/embeddings",
                                         {"model": model, "prompt": text, **extra})
            vector = reply.get("embedding") if isinstance(reply, dict) else None
            if not isinstance(vector, list):
                raise StreamError("ollama: /api/embeddings returned no embedding",
                                  provider=self.name)
            out.append(vector)
        return out

    # -- models -----------------------------------------------------------------------------
    async def list_models(self) -> list[ModelInfo]:
        """The models on the server (``/api/tags``), each completed from ``/api/show`` with its
        context length and capabilities when the server describes it."""
        body = await self.http.request_json("GET", "/api/tags")
        infos = [tag_model_info(m) for m in (body or {}).get("models") or []]
        return list(await asyncio.gather(*(self._described(i) for i in infos)))

    async def _described(self, info: ModelInfo) -> ModelInfo:
        if info.capabilities and info.context_length:
            return info
        try:
            async with self._describing:
                shown = show_info(info.name, await self.http.request_json(
                    "POST", "/api/show", {"model": info.name}) or {})
        except ProviderError:  # the listing stands without the details
            return info
        return info.model_copy(update={
            "context_length": shown.context_length or info.context_length,
            "capabilities": shown.capabilities or info.capabilities,
            "parameter_count": shown.parameter_count or info.parameter_count})

    async def show_model(self, name: str) -> ModelInfo:
        """Details of one model (``/api/show``): family, size, quantization, context length,
        capabilities, and in ``details`` the template and parameters."""
        self._require_model(name)
        try:
            body = await self.http.request_json("POST", "/api/show", {"model": name})
        except ModelNotFoundError as err:
            raise self._with_name(err, name) from err
        return show_info(name, body or {})

    async def list_loaded_models(self) -> list[ModelInfo]:
        """The models loaded in memory now (``/api/ps``)."""
        body = await self.http.request_json("GET", "/api/ps")
        return [loaded_model_info(m) for m in (body or {}).get("models") or []]

    def _with_name(self, err: ModelNotFoundError, name: str) -> ModelNotFoundError:
        message = errors.redact(str((err.body or {}).get("error", ""))
                                if isinstance(err.body, dict) else "", *self.http.secrets)
        return ModelNotFoundError(model_not_found_message(name, message or "HTTP 404"),
                                  status_code=err.status_code, body=err.body,
                                  provider=self.name)

    async def delete_model(self, name: str) -> None:
        """Delete a model from the server (``/api/delete``)."""
        self._require_model(name)
        try:
            await self.http.request_json("DELETE", "/api/delete", {"model": name})
        except ModelNotFoundError as err:
            raise ModelNotFoundError(
                f"ollama: cannot delete {name!r}: there is no such model "
                "(`modelplex models list -p ollama` shows yours)", status_code=err.status_code,
                body=err.body, provider=self.name) from err

    async def copy_model(self, source: str, destination: str) -> None:
        """Copy a model under a new name (``/api/copy``)."""
        self._require_model(source)
        self._require_model(destination)
        try:
            await self.http.request_json("POST", "/api/copy", {"source": source,
                                                   "destination": destination})
        except ModelNotFoundError as err:
            raise ModelNotFoundError(
                f"ollama: cannot copy {source!r}: there is no such model "
                "(`modelplex models list -p ollama` shows yours)", status_code=err.status_code,
                body=err.body, provider=self.name) from err

    async def version(self) -> str:
        """The server's version (``/api/version``)."""
        body = await self.http.request_json("GET", "/api/version")
        version = body.get("version") if isinstance(body, dict) else None
        if not isinstance(version, str):
            raise StreamError(f"ollama: /api/version returned {body!r:.200}",
                              provider=self.name)
        return version

    # -- pulling ----------------------------------------------------------------------------
    def _pull_error(self, name: str, message: str) -> ProviderError:
        message = errors.redact(message, *self.http.secrets)
        if _is_missing_manifest(message):
            return ModelNotFoundError(
                f"ollama: there is no model {name!r} in the registry ({message}); check the "
                "name and tag at https://ollama.com/library", status_code=404,
                body={"error": message}, provider=self.name)
        return StreamError(f"ollama: pulling {name!r} failed: {message}", provider=self.name)

    def _check_disk(self, name: str, layers: Mapping[str, tuple[int, int]]) -> None:
        needed = sum(max(0, total - done) for done, total in layers.values())
        free, where = free_disk_bytes(models_dir())
        if needed > free:
            raise InsufficientDiskSpaceError(
                f"ollama: not enough disk space to pull {name!r}: it needs "
                f"{human_size(needed)} more but {where} has {human_size(free)} free. Free some "
                "space (e.g. `modelplex models rm ollama:OLD-MODEL`) or point OLLAMA_MODELS "
                "at a larger disk and restart Ollama", needed=needed, free=free, path=where)

    async def pull_model(self, name: str) -> AsyncIterator[PullProgress]:
        """Download a model, yielding its progress events as they arrive (``/api/pull``).

        When the server runs on this machine, each newly announced layer is checked against
        the free disk space of the models directory; a pull that cannot fit raises
        :class:`~modelplex_ollama.connection.InsufficientDiskSpaceError` and stops the download.
        """
        self._require_model(name)
        check_disk = self.check_disk_space and is_local_host(self.host)
        layers: dict[str, tuple[int, int]] = {}
        succeeded = False
        async with self.http.stream("POST", "/api/pull", {"model": name, "stream": True}) as resp:
            async for line in self._lines(resp):
                if not isinstance(line, dict):
                    continue
                if "error" in line:
                    raise self._pull_error(name, _server_message(line))
                event = PullProgress(status=str(line.get("status", "")),
                                     digest=line.get("digest") or None,
                                     completed=line.get("completed"), total=line.get("total"))
                if event.digest and event.total:
                    announced = event.digest not in layers
                    layers[event.digest] = (event.completed or 0, event.total)
                    if announced and check_disk:
                        self._check_disk(name, layers)
                succeeded = event.status == "success"
                yield event
        if not succeeded:
            raise StreamError(f"ollama: the pull of {name!r} ended before it succeeded "
                              "(the connection was closed)", provider=self.name)

    async def pull(self, name: str) -> None:
        """Download a model in one request without progress (``stream: false``).

        No disk check is possible here (the size is never announced); prefer
        :meth:`pull_model` or :meth:`pull_task`.
        """
        self._require_model(name)
        try:
            await self.http.request_json("POST", "/api/pull", {"model": name, "stream": False})
        except ProviderStatusError as err:
            body = err.body if isinstance(err.body, dict) else {}
            message = str(body.get("error") or err)
            if _is_missing_manifest(message):
                raise self._pull_error(name, message) from err
            raise

    def pull_task(self, name: str) -> Task:
        """Start pulling ``name`` in the background and return a :class:`Task` tracking it.

        The task's ``status`` goes pending, running, then completed, failed (``error`` says
        why) or cancelled; ``completed``/``total`` are the bytes of all layers so far and
        ``message`` the latest status line. Await it with :meth:`wait_task`; stop it with
        :meth:`cancel_task`. Must be called inside a running event loop.
        """
        task = Task(name=f"pull ollama:{name}", description=f"Download {name} into Ollama")
        runner = asyncio.get_running_loop().create_task(self._run_pull(name, task))
        self._tasks[task.id] = runner
        runner.add_done_callback(lambda _: self._tasks.pop(task.id, None))
        return task

    async def _run_pull(self, name: str, task: Task) -> None:
        task.status = TaskStatus.RUNNING
        layers: dict[str, tuple[int, int]] = {}
        try:
            async for event in self.pull_model(name):
                if event.digest and event.total:
                    layers[event.digest] = (event.completed or 0, event.total)
                    task.completed = sum(done for done, _ in layers.values())
                    task.total = sum(total for _, total in layers.values())
                task.message = event.status
                task.updated_at = datetime.now(UTC)
        except asyncio.CancelledError:
            task.status = TaskStatus.CANCELLED
            task.updated_at = datetime.now(UTC)
            raise
        except errors.ModelplexError as err:
            task.status = TaskStatus.FAILED
            task.error = str(err)
        else:
            task.status = TaskStatus.COMPLETED
        task.updated_at = datetime.now(UTC)

    async def wait_task(self, task: Task) -> Task:
        """Wait until a task from :meth:`pull_task` has finished; return it."""
        runner = self._tasks.get(task.id)
        if runner is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(runner)
        return task

    async def cancel_task(self, task: Task) -> None:
        """Stop a pull started with :meth:`pull_task` (its connection is closed)."""
        runner = self._tasks.get(task.id)
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner

    # -- health and lifecycle ---------------------------------------------------------------
    async def health(self) -> HealthStatus:
        """Reachable or not, with the version and model count, or the reason it is not."""
        start = time.perf_counter()
        try:
            version = await self.version()
            models = await self.list_models()
        except ProviderConnectionError as err:
            detail = str(err)
            if "not running" not in detail:
                detail += (f". Is Ollama running at {mask_url(self.host)}? Start it with "
                           "`ollama serve`")
            return HealthStatus(provider=self.name, healthy=False, detail=detail)
        except ProviderTimeoutError as err:
            return HealthStatus(provider=self.name, healthy=False,
                                detail=f"{err} (is {mask_url(self.host)} the Ollama server?)")
        except ProviderError as err:
            return HealthStatus(provider=self.name, healthy=False, detail=str(err))
        return HealthStatus(provider=self.name, healthy=True, version=version,
                            model_count=len(models), detail=mask_url(self.host),
                            latency_ms=(time.perf_counter() - start) * 1000)

    async def aclose(self) -> None:
        """Stop background pulls and close every connection."""
        runners = list(self._tasks.values())
        for runner in runners:
            runner.cancel()
        for runner in runners:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await runner
        await super().aclose()
