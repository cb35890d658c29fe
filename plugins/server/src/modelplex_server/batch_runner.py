"""The background runner of ``/v1/batches``: each batch's lines through the server's own path.

One :class:`BatchRunner` per server process (``app[BATCHES]``) looks for batches with work
left (:data:`~modelplex_server.batch_store.OPEN_STATUSES`) when a batch is made or cancelled
and every few seconds, claims each in the store (so the workers and replicas sharing a store
run it once) and runs it:

- **validating**: the input file is read and every line checked (JSON, ``custom_id`` present
  and unique, ``method`` POST, ``url`` the batch's endpoint, a ``body`` with a ``model`` the
  batch's key may use, at most ``max_batch_lines`` lines). Any problem fails the batch with
  OpenAI's ``errors`` list (code, message, line), nothing is run; else ``in_progress``.
- **in_progress**: the lines without a result are answered, ``batch_concurrency`` at once per
  process, each as the request its endpoint answers (:func:`~modelplex_server.openai_api.
  answer_chat`, :func:`~modelplex_server.openai_api.answer_embeddings`,
  :func:`~modelplex_server.completions_api.answer_completion`: the same per-model leases, key
  checks, budgets and metering as ``/v1/chat/completions``). Each result is stored
  as it comes (one row per line, once: :meth:`~modelplex_server.batch_store.BatchStore.
  add_result`), so a server stopped mid-batch resumes with the lines left, none run twice
  and none written twice. A line that fails is an error line in OpenAI's shape
  (``response.status_code`` and the error body); a key over its rate limits waits.
- **finalizing**: the output and error files are made from the stored results; then
  ``completed`` (or ``expired`` past its completion window: the lines left get
  ``batch_expired`` errors). **cancelling**: no new line starts and the lines in flight are
  stopped (a local model may take minutes per answer); then ``cancelled``, with the results
  stored so far in its output and error files.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Iterator
from typing import Any, TypeVar

from aiohttp import web

from modelplex.batch import bounded
from modelplex.errors import ModelplexError
from modelplex.http import dumps
from modelplex_server.batch_store import BatchRecord, FileRecord
from modelplex_server.completions_api import CompletionRequest, answer_completion
from modelplex_server.conversations import StoreUnavailableError
from modelplex_server.errors import ApiError, error_body, from_exception
from modelplex_server.gateway import Gateway
from modelplex_server.limits import Refusal, limited
from modelplex_server.openai_api import answer_chat, answer_embeddings, refuse_unsupported
from modelplex_server.schemas import ChatCompletionRequest, EmbeddingRequest, parse_body
from modelplex_server.settings import KeyConfig

__all__ = ["BATCHES", "ENDPOINTS", "BatchRunner", "read_requests"]

T = TypeVar("T")

log = logging.getLogger("modelplex.server.batches")

#: The endpoints a batch may use.
ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings", "/v1/completions")
#: The most validation errors a failed batch lists.
MAX_ERRORS = 100
#: The longest ``custom_id`` (it is echoed in every result line).
MAX_CUSTOM_ID = 512


class _Request:
    """One checked line: its ``custom_id`` and its raw JSON (parsed again when it runs, so a
    batch in memory is about the size of its file, not of its parsed objects)."""

    __slots__ = ("custom_id", "model", "raw")

    def __init__(self, custom_id: str, raw: bytes, model: str) -> None:
        self.custom_id = custom_id
        self.raw = raw
        self.model = model

    def body(self) -> dict[str, Any]:
        """The request's body (a JSON object: checked when the batch was validated)."""
        body: dict[str, Any] = json.loads(self.raw)["body"]
        return body


def _error(code: str, message: str, line: int | None = None,
           param: str | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}


def _total_usage(lines: list[str], total: dict[str, Any] | None = None) -> dict[str, Any]:
    """``total`` (OpenAI's batch ``usage``) plus the usage of the answers in ``lines``."""
    total = total or {"input_tokens": 0, "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens": 0, "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": 0}
    for data in lines:
        try:
            usage = json.loads(data)["response"]["body"]["usage"]
        except (ValueError, KeyError, TypeError):
            continue
        if not isinstance(usage, dict):
            continue
        prompt, completion = _int(usage.get("prompt_tokens")), _int(usage.get(
            "completion_tokens"))
        total["input_tokens"] += prompt
        total["output_tokens"] += completion
        total["total_tokens"] += prompt + completion
        total["input_tokens_details"]["cached_tokens"] += _detail(
            usage, "prompt_tokens_details", "cached_tokens")
        total["output_tokens_details"]["reasoning_tokens"] += _detail(
            usage, "completion_tokens_details", "reasoning_tokens")
    return total


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def _detail(usage: dict[str, Any], table: str, key: str) -> int:
    details = usage.get(table)
    return _int(details.get(key)) if isinstance(details, dict) else 0


def _lines(content: bytes) -> Iterator[tuple[int, bytes]]:
    """The file's non-blank lines with their line numbers (from 1)."""
    for number, raw in enumerate(content.split(b"\n"), 1):
        if raw.strip():
            yield number, raw


def read_requests(content: bytes, endpoint: str, key: KeyConfig | None, *,
                  max_lines: int) -> tuple[list[_Request], list[dict[str, Any]]]:
    """The requests of a batch's input file, or (at most :data:`MAX_ERRORS`) errors in
    OpenAI's shape naming each bad line and the fix."""
    requests: list[_Request] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()

    def fail(*args: Any, **kwargs: Any) -> None:
        if len(errors) < MAX_ERRORS:
            errors.append(_error(*args, **kwargs))

    for count, (number, raw) in enumerate(_lines(content)):
        if count >= max_lines:
            fail("too_many_requests", f"the file has more than {max_lines} requests "
                 "([server] max_batch_lines): split it into several batches", number)
            break
        try:
            item = json.loads(raw)
        except (ValueError, RecursionError):
            fail("invalid_json_line", "this line is not JSON: each line must be one JSON "
                 "object {custom_id, method, url, body}", number)
            continue
        if not isinstance(item, dict):
            fail("invalid_json_line", "each line must be a JSON object {custom_id, method, "
                 "url, body}", number)
            continue
        custom_id = item.get("custom_id")
        body = item.get("body")
        if not isinstance(custom_id, str) or not custom_id:
            fail("missing_required_parameter", "custom_id is required: a string naming the "
                 "request in the output", number, "custom_id")
        elif len(custom_id) > MAX_CUSTOM_ID:
            fail("invalid_custom_id", f"custom_id is longer than {MAX_CUSTOM_ID} characters: "
                 "use a shorter name", number, "custom_id")
        elif custom_id in seen:
            fail("duplicate_custom_id", f"the custom_id {custom_id[:80]!r} is used by an "
                 "earlier line: each request needs its own", number, "custom_id")
        elif item.get("method") != "POST":
            fail("invalid_method", "method must be 'POST'", number, "method")
        elif item.get("url") != endpoint:
            fail("mismatched_endpoint", f"url {str(item.get('url'))[:80]!r} does not match "
                 f"the batch's endpoint {endpoint!r}: every line must use it", number, "url")
        elif not isinstance(body, dict) or not isinstance(body.get("model"), str):
            fail("invalid_request", "body must be a JSON object with a 'model'", number,
                 "body.model")
        elif key is not None and not key.allows(body["model"]):
            fail("model_not_allowed", f"the key {key.name!r} may not use model "
                 f"{body['model'][:80]!r}", number, "body.model")
        else:
            seen.add(custom_id)
            requests.append(_Request(custom_id, bytes(raw), body["model"]))
    if not requests and not errors:
        fail("empty_file", "the input file has no requests: one JSON object per line")
    return requests, errors


async def _unless(event: asyncio.Event, work: Awaitable[T]) -> T | None:
    """``work``'s result, or None (and ``work`` cancelled) once ``event`` is set."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait((task, waiter), return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return task.result() if not task.cancelled() else None


#: The app key of the server's runner.
BATCHES: web.AppKey[BatchRunner] = web.AppKey("modelplex_batches")


class BatchRunner:
    """Runs the store's batches in the background (see the module docs)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.settings = gateway.settings
        self.store = gateway.conversations
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.interval = min(5.0, self.settings.batch_claim_timeout / 6)
        self._gate = asyncio.Semaphore(self.settings.batch_concurrency)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._cancel: dict[str, asyncio.Event] = {}
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None

    # -- the loop ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Start looking for work (at server start-up)."""
        if self._loop is None:
            self._loop = asyncio.create_task(self._watch(), name="modelplex batches")

    def wake(self) -> None:
        """Look for work now (a batch was made or cancelled)."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop every batch (its lines in flight are dropped, to be run again on resume)
        and give up the claims, so another server may resume them at once."""
        tasks = [t for t in (self._loop, *self._tasks.values()) if t is not None]
        self._loop = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

    async def _watch(self) -> None:
        while True:
            try:
                await self._tick()
            except (StoreUnavailableError, sqlite3.OperationalError) as err:
                log.warning("batches wait for the store: %s", err)
            except Exception:
                log.exception("the batch runner failed to look for work; retrying")
            with contextlib.suppress(TimeoutError):  # (no task per wait, unlike wait_for)
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            self._wake.clear()

    async def _tick(self) -> None:
        stale = self.settings.batch_claim_timeout
        for batch_id in await self.store.open_batches():
            if batch_id in self._tasks:  # running here: renew the claim, notice a cancel
                if not await self.store.claim_batch(batch_id, self.id, stale=stale):
                    # another server took it over (this one did not renew in time): its
                    # runner goes on from the stored results; stop here
                    log.warning("batch %s was taken over by another server", batch_id)
                    task = self._tasks.get(batch_id)
                    if task is not None:
                        task.cancel()
                    continue
                record = await self.store.get_batch(batch_id)
                cancel = self._cancel.get(batch_id)
                if record is not None and record.status == "cancelling" and cancel:
                    cancel.set()
            elif await self.store.claim_batch(batch_id, self.id, stale=stale):
                self._cancel[batch_id] = asyncio.Event()
                self._tasks[batch_id] = asyncio.create_task(self._run(batch_id),
                                                            name=f"batch {batch_id}")

    # -- one batch ----------------------------------------------------------------------------
    async def _run(self, batch_id: str) -> None:
        try:
            record = await self.store.get_batch(batch_id)
            if record is not None:
                await self._advance(record)
        except asyncio.CancelledError:
            raise
        except (StoreUnavailableError, sqlite3.OperationalError) as err:
            # the store is down or busy (locked): released below, tried again on a later look
            log.warning("batch %s waits for the store: %s", batch_id, err)
        except Exception as err:
            log.exception("batch %s failed", batch_id)
            with contextlib.suppress(Exception):
                await self.store.update_batch(
                    batch_id, expect=("validating", "in_progress", "finalizing", "cancelling"),
                    status="failed", data={"failed_at": int(time.time()), "errors": {
                        "object": "list", "data": [_error(
                            "server_error", f"the server failed to run the batch "
                            f"({type(err).__name__}); see its log")]}})
        finally:
            self._tasks.pop(batch_id, None)
            self._cancel.pop(batch_id, None)
            with contextlib.suppress(BaseException):
                await asyncio.shield(self.store.release_batch(batch_id, self.id))

    async def _advance(self, record: BatchRecord) -> None:
        requests: list[_Request] = []
        key = await self._key(record.owner)
        if record.status in ("validating", "in_progress"):
            # a resumed batch was validated: its lines meet the key's models at run time
            checked = key if record.status == "validating" else None
            requests, errors = await self._requests(record, checked)
            if errors:
                await self.store.update_batch(record.id, expect=("validating", "in_progress"),
                                              status="failed", data={
                                                  "failed_at": int(time.time()),
                                                  "errors": {"object": "list", "data": errors}})
                return
        if record.status == "validating":
            models = {r.model for r in requests}  # the batch object's model: one, or none
            updated = await self.store.update_batch(record.id, expect=("validating",),
                                                    status="in_progress", total=len(requests),
                                                    data={"in_progress_at": int(time.time()),
                                                          "model": models.pop()
                                                          if len(models) == 1 else None})
            record = updated or await self._reload(record)
        expired = False
        if record.status == "in_progress":
            expired = await self._answer(record, requests, key)
            record = await self._reload(record)
        await self._finish(record, expired)

    async def _reload(self, record: BatchRecord) -> BatchRecord:
        return await self.store.get_batch(record.id) or record

    async def _key(self, owner: str | None) -> KeyConfig | None:
        """The key a batch runs for (None: no keys; an unknown or revoked one: a key that
        may use no model, so each line is refused)."""
        if owner is None:
            return None
        for key in self.settings.keys:
            if key.name == owner:
                return key
        for stored in await self.store.list_keys():
            if stored.key.name == owner and stored.revoked_at is None:
                return stored.key
        return KeyConfig(name=owner, hash="sha256:" + "0" * 64, models=[])

    async def _requests(self, record: BatchRecord, key: KeyConfig | None
                        ) -> tuple[list[_Request], list[dict[str, Any]]]:
        content = await self.store.file_content(record.data["input_file_id"])
        if content is None:
            return [], [_error("file_not_found", f"the input file "
                               f"{record.data['input_file_id']} was deleted",
                               param="input_file_id")]
        return await asyncio.to_thread(read_requests, content, record.data["endpoint"], key,
                                       max_lines=self.settings.max_batch_lines)

    async def _answer(self, record: BatchRecord, requests: list[_Request],
                      key: KeyConfig | None) -> bool:
        """Answer the lines without a result; true when the window expired first."""
        done = await self.store.done_lines(record.id)
        cancel = self._cancel.setdefault(record.id, asyncio.Event())
        expires = record.data.get("expires_at") or float("inf")
        endpoint = record.data["endpoint"]
        expired = False

        async def one(line: int) -> None:
            nonlocal expired
            if cancel.is_set():
                return
            async with self._gate:
                if cancel.is_set():
                    return
                request = requests[line]
                if time.time() > expires:
                    expired = True
                    result: dict[str, Any] = {
                              "id": f"batch_req_{uuid.uuid4().hex}",
                              "custom_id": request.custom_id, "response": None,
                              "error": {"code": "batch_expired", "message": "This request "
                                        "could not be executed before the completion window "
                                        "expired."}}
                    await self.store.add_result(record.id, line, False, dumps(result).decode())
                    return
                answer = await _unless(cancel, self._execute(key, endpoint, request.body()))
            if answer is None:  # cancelled in flight: no result, as if never started
                return
            status, body = answer
            result = {"id": f"batch_req_{uuid.uuid4().hex}", "custom_id": request.custom_id,
                      "response": {"status_code": status,
                                   "request_id": f"req_{uuid.uuid4().hex}", "body": body},
                      "error": None}
            await self.store.add_result(record.id, line, status == 200,
                                        dumps(result).decode())

        todo = (line for line in range(len(requests)) if line not in done)
        outcomes = await bounded(todo, one, self.settings.batch_concurrency,
                                 return_exceptions=True)
        for outcome in outcomes:  # a store failure: the line is run again on resume
            if isinstance(outcome, Exception):
                raise outcome
        return expired

    async def _execute(self, key: KeyConfig | None, endpoint: str,
                       body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """One line's answer as ``(status code, body)``, errors in OpenAI's shape."""
        settings = self.settings
        admission = None
        try:
            if key is not None:
                admission = await self._admit(key)
            data = dumps(body)
            if endpoint == "/v1/completions":
                text = parse_body(CompletionRequest, data, max_depth=settings.max_json_depth)
                if text.stream:
                    raise ApiError(400, "stream is not supported in a batch: leave it unset",
                                   param="stream", code="unsupported_value")
                return 200, await answer_completion(self.gateway, key, text)
            if endpoint == "/v1/embeddings":
                embed = parse_body(EmbeddingRequest, data, max_depth=settings.max_json_depth)
                return 200, await answer_embeddings(self.gateway, key, embed)
            chat = parse_body(ChatCompletionRequest, data, max_depth=settings.max_json_depth)
            if chat.stream:
                raise ApiError(400, "stream is not supported in a batch: leave it unset",
                               param="stream", code="unsupported_value")
            refuse_unsupported(chat)
            return 200, await answer_chat(self.gateway, key, chat)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            api = from_exception(err)
            if not isinstance(err, ApiError | ModelplexError):
                log.exception("a batch request failed")
            return api.status, error_body(api)
        finally:
            if admission is not None:
                with contextlib.suppress(Exception):
                    await admission.release()

    async def _admit(self, key: KeyConfig) -> Any:
        """Wait until ``key``'s limits admit one request (its budget spent: a 429 error)."""
        if key.budget:
            await self.gateway.check_budget(key)
        if not limited(key):
            return None
        while True:
            result = await self.gateway.limits.admit(key)
            if not isinstance(result, Refusal):
                return result
            await asyncio.sleep(max(0.05, min(result.wait, 60.0)))

    async def _finish(self, record: BatchRecord, expired: bool) -> None:
        """Make the result files and close the batch (``completed``, ``expired`` or
        ``cancelled``)."""
        now = int(time.time())
        if record.status == "in_progress":
            record = await self.store.update_batch(
                record.id, expect=("in_progress",), status="finalizing",
                data={"finalizing_at": now}) or await self._reload(record)
        if record.status not in ("finalizing", "cancelling"):
            return
        files = await self._result_files(record)
        if record.status == "cancelling":
            await self.store.update_batch(record.id, expect=("cancelling",),
                                          status="cancelled", data={"cancelled_at": now, **files})
            return
        status = "expired" if expired else "completed"
        updated = await self.store.update_batch(record.id, expect=("finalizing",),
                                                status=status,
                                                data={f"{status}_at": now, **files})
        if updated is None:  # cancelled meanwhile
            await self._finish(await self._reload(record), expired)

    async def _result_files(self, record: BatchRecord) -> dict[str, Any]:
        """The output and error files of a batch (made once: their ids come from its id)
        and the ``usage`` its answered lines add up to."""
        out: dict[str, Any] = {"usage": _total_usage([])}
        for ok, kind in ((True, "output"), (False, "error")):
            size, lines, after = 0, 0, -1
            while page := await self.store.batch_results(record.id, ok, after=after):
                if ok:
                    out["usage"] = _total_usage([data for _, data in page], out["usage"])
                size += sum(len(data.encode()) + 1 for _, data in page)
                lines += len(page)
                after = page[-1][0]
            if not lines:
                continue
            file_id = "file-" + record.id.removeprefix("batch_") + kind[:3]
            if await self.store.get_file(file_id) is None:  # (made by another runner: kept)
                await self.store.create_file(FileRecord(
                    id=file_id, owner=record.owner, purpose=f"batch_{kind}",
                    filename=f"{record.id}_{kind}.jsonl", bytes=size, kind=kind,
                    batch_id=record.id))
            out[f"{kind}_file_id"] = file_id
        return out
