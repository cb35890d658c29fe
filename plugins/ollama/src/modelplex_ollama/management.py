"""Managing the models of an Ollama server: list (``/api/tags``, ``/api/ps``), show, copy,
delete, pull (with progress, a disk-space check and background tasks), version and health."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

from modelplex import errors
from modelplex.errors import (
    ModelNotFoundError,
    ProviderConnectionError,
    ProviderError,
    ProviderStatusError,
    ProviderTimeoutError,
    StreamError,
    mask_url,
)
from modelplex.streams import ndjson_json
from modelplex.types import HealthStatus, ModelInfo, PullProgress, Task, TaskStatus, human_size
from modelplex_ollama.base import OllamaBase, server_message
from modelplex_ollama.connection import (
    NOT_OLLAMA,
    InsufficientDiskSpaceError,
    free_disk_bytes,
    is_local_host,
    model_not_found_message,
    models_dir,
)
from modelplex_ollama.models import loaded_model_info, show_info, tag_model_info

__all__ = ["OllamaModels"]


def _is_missing_manifest(message: str) -> bool:
    text = message.lower()
    return "manifest" in text and ("does not exist" in text or "not found" in text)


class OllamaModels(OllamaBase):
    """Listing, showing, copying, deleting and pulling models; the server's version and health."""

    # -- models -----------------------------------------------------------------------------
    async def list_models(self) -> list[ModelInfo]:
        """The models on the server (``/api/tags``), each completed from ``/api/show`` with its
        context length and capabilities when the server describes it."""
        body = self._listing(await self.http.request_json("GET", "/api/tags"), "/api/tags")
        infos = [tag_model_info(m) for m in body.get("models") or []]
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
        body = self._listing(await self.http.request_json("GET", "/api/ps"), "/api/ps")
        return [loaded_model_info(m) for m in body.get("models") or []]

    def _listing(self, body: Any, path: str) -> dict[str, Any]:
        """A listing's body; an error in it (LM Studio answers unknown routes with HTTP 200
        and ``{"error": "Unexpected endpoint or method..."}``) is raised, not read as no
        models."""
        if body is None:
            return {}
        if not isinstance(body, dict) or ("models" not in body and body.get("error")):
            detail = server_message(body) if isinstance(body, dict) else repr(body)[:200]
            detail = errors.redact(detail, *self.http.secrets)
            raise StreamError(f"ollama: {path} answered {detail!r} instead of a list of "
                              f"models; if this server is not Ollama, {NOT_OLLAMA}",
                              provider=self.name)
        return body

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
        return errors.ModelDownloadError(name, message, {"error": message}, provider=self.name,
                                         message=f"ollama: pulling {name!r} failed: {message}")

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
            # progress lines have no "done"; the end is "success", checked below
            lines = ndjson_json(resp, provider=self.name,
                                max_line_bytes=self.http.max_line_bytes, done_key=None,
                                error=lambda line: self._pull_error(name, server_message(line)))
            async for line in lines:
                if not isinstance(line, dict):
                    continue
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
