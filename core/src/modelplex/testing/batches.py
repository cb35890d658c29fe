"""A stand-in for OpenAI's and Anthropic's Batch APIs: a real HTTP server on 127.0.0.1.

::

    async with BatchUpstream(polls=2) as up:
        provider = OpenAIProvider(base_url=up.url + "/v1", api_key=up.api_key)
        job = await provider.submit_batch(requests)

OpenAI's side: ``POST /v1/files`` (multipart, ``purpose=batch``), ``POST /v1/batches``
(``endpoint=/v1/chat/completions``, ``completion_window=24h``; every line of the file is
checked), ``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel`` and ``GET
/v1/files/{id}/content``. Anthropic's: ``POST /v1/messages/batches`` (custom ids checked
against ``[A-Za-z0-9_-]{1,64}``), ``GET /v1/messages/batches/{id}``, ``.../results`` and
``.../cancel``. Each side checks its key header and answers a missing key with a 401 in its
own error shape.

A job takes ``polls`` status requests to end (:meth:`BatchUpstream.finish` ends the waiting
ones at once; ``polls=None`` waits for it). How it ends is the next entry of
:attr:`BatchUpstream.outcomes`, else ``"completed"``: ``"expired"`` and ``"cancelled"``
answer the first half of its requests and leave the rest expired or cancelled (OpenAI: lines
of the error file with ``batch_expired``/``batch_cancelled``; Anthropic: ``expired`` and
``canceled`` results), ``"failed"`` fails the job's validation (OpenAI) with no results. A
request whose last message holds ``FAIL`` gets a 400 error result. The answer to a request
is ``answer: `` and its last message's text; usage counts its words.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import Any

import attrs
from aiohttp import web

from modelplex.testing.serve import serve_app

__all__ = ["BatchUpstream", "StandinJob"]

_CUSTOM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@attrs.define
class StandinJob:
    """A job held by the stand-in: its ``kind`` (``openai`` or ``anthropic``), requests
    (``(custom_id, body)``), status requests seen, outcome and results once ended."""

    id: str
    kind: str
    requests: list[tuple[str, dict[str, Any]]]
    outcome: str
    created: float
    polls: int = 0
    state: str = "in_progress"
    cancel_at: float | None = None
    ended: float | None = None
    output: list[dict[str, Any]] = attrs.Factory(list)
    errors: list[dict[str, Any]] = attrs.Factory(list)


def _text(body: Mapping[str, Any]) -> str:
    messages = body.get("messages") or [{}]
    content = messages[-1].get("content", "")
    if isinstance(content, list):
        content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content)


class BatchUpstream:
    """The stand-in (see the module docs). ``url`` is set once started."""

    def __init__(self, *, api_key: str = "sk-standin-secret-0123456789",
                 polls: int | None = 1) -> None:
        self.api_key = api_key
        self.polls = polls
        self.outcomes: list[str] = []
        self.jobs: dict[str, StandinJob] = {}
        self.files: dict[str, bytes] = {}
        self.received: list[tuple[str, str]] = []  # (method, path)
        self.url = ""
        self._ids = itertools.count(1)
        self._serving = AsyncExitStack()

    async def __aenter__(self) -> BatchUpstream:
        app = web.Application(middlewares=[self._record], client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/files", self._upload)
        app.router.add_get("/v1/files/{id}/content", self._content)
        app.router.add_post("/v1/batches", self._create_openai)
        app.router.add_get("/v1/batches/{id}", self._status_openai)
        app.router.add_post("/v1/batches/{id}/cancel", self._cancel_openai)
        app.router.add_post("/v1/messages/batches", self._create_anthropic)
        app.router.add_get("/v1/messages/batches/{id}", self._status_anthropic)
        app.router.add_get("/v1/messages/batches/{id}/results", self._results_anthropic)
        app.router.add_post("/v1/messages/batches/{id}/cancel", self._cancel_anthropic)
        self.url = await self._serving.enter_async_context(serve_app(app))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._serving.aclose()

    def finish(self) -> None:
        """End every waiting job at its next status request."""
        for job in self.jobs.values():
            job.polls = max(job.polls, 10**9)
        self.polls = 0

    def created(self, kind: str | None = None) -> list[StandinJob]:
        """The jobs created (of one kind)."""
        return [j for j in self.jobs.values() if kind is None or j.kind == kind]

    # -- plumbing -----------------------------------------------------------------------
    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.received.append((request.method, request.path))
        anthropic = request.path.startswith("/v1/messages")
        if anthropic:
            good = request.headers.get("x-api-key") == self.api_key and \
                bool(request.headers.get("anthropic-version"))
        else:
            good = request.headers.get("Authorization") == f"Bearer {self.api_key}"
        if not good:
            if anthropic:
                return web.json_response({"type": "error", "error": {
                    "type": "authentication_error", "message": "invalid x-api-key"}},
                    status=401)
            return web.json_response({"error": {"message": "Incorrect API key provided",
                                                "type": "invalid_request_error",
                                                "code": "invalid_api_key"}}, status=401)
        result: web.StreamResponse = await handler(request)
        return result

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):06d}standin"

    def _job(self, request: web.Request, kind: str) -> StandinJob:
        job = self.jobs.get(request.match_info["id"])
        if job is None or job.kind != kind:
            raise web.HTTPNotFound(text=json.dumps({"error": {
                "message": "No such batch", "type": "invalid_request_error"}}),
                content_type="application/json")
        return job

    def _answer(self, body: Mapping[str, Any]) -> tuple[int, str, int, int]:
        text = _text(body)
        status = 400 if "FAIL" in text else 200
        return status, f"answer: {text}", len(text.split()) + 3, len(text.split()) + 1

    def _advance(self, job: StandinJob) -> None:
        """Move the job on by one status request, ending it as its outcome says."""
        if job.ended is not None:
            return
        job.polls += 1
        if job.cancel_at is not None:
            self._end(job, "cancelled")
        elif self.polls is not None and job.polls > self.polls:
            self._end(job, job.outcome)

    def _end(self, job: StandinJob, outcome: str) -> None:
        job.ended = time.time()
        job.state = outcome
        if outcome == "failed":
            return
        half = len(job.requests) if outcome == "completed" else len(job.requests) // 2
        for number, (cid, body) in enumerate(job.requests):
            if number >= half:
                job.errors.append({"custom_id": cid, "outcome": outcome})
                continue
            status, answer, prompt, completion = self._answer(body)
            job.output.append({"custom_id": cid, "status": status, "answer": answer,
                               "model": body.get("model"), "usage": (prompt, completion)})

    # -- OpenAI -------------------------------------------------------------------------
    async def _upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form.get("file")
        if form.get("purpose") != "batch" or not isinstance(upload, web.FileField):
            return web.json_response({"error": {"message": "purpose must be batch and a file "
                                                "given", "type": "invalid_request_error"}},
                                     status=400)
        data = upload.file.read()
        file_id = self._new_id("file-")
        self.files[file_id] = data
        return web.json_response({"id": file_id, "object": "file", "bytes": len(data),
                                  "purpose": "batch", "filename": upload.filename,
                                  "created_at": int(time.time())})

    async def _create_openai(self, request: web.Request) -> web.Response:
        body = await request.json()
        problems = []
        if body.get("endpoint") != "/v1/chat/completions":
            problems.append("endpoint must be /v1/chat/completions")
        if body.get("completion_window") != "24h":
            problems.append("completion_window must be 24h")
        data = self.files.get(body.get("input_file_id"))
        if data is None:
            problems.append("no such input file")
        if problems:
            return web.json_response({"error": {"message": "; ".join(problems),
                                                "type": "invalid_request_error"}}, status=400)
        assert data is not None
        requests = []
        seen = set()
        for line in data.decode().splitlines():
            item = json.loads(line)
            assert item["method"] == "POST", item
            assert item["url"] == "/v1/chat/completions", item
            assert item["custom_id"] not in seen, "custom_id given twice"
            seen.add(item["custom_id"])
            requests.append((item["custom_id"], item["body"]))
        job = StandinJob(self._new_id("batch_"), "openai", requests,
                         self.outcomes.pop(0) if self.outcomes else "completed", time.time())
        job.state = "validating"
        self.jobs[job.id] = job
        return web.json_response(self._openai(job))

    def _openai(self, job: StandinJob) -> dict[str, Any]:
        ended = job.ended is not None
        done = sum(1 for o in job.output if o["status"] == 200)
        failed = len(job.output) - done + len(job.errors)
        out: dict[str, Any] = {
            "id": job.id, "object": "batch", "endpoint": "/v1/chat/completions",
            "errors": None, "input_file_id": "file-in", "completion_window": "24h",
            "status": job.state, "output_file_id": None, "error_file_id": None,
            "created_at": int(job.created), "expires_at": int(job.created) + 86400,
            "request_counts": {"total": len(job.requests), "completed": done,
                               "failed": failed}}
        if job.state == "failed":
            out["errors"] = {"object": "list", "data": [{
                "code": "invalid_request", "message": "the input file is not valid",
                "line": 1}]}
            out["failed_at"] = int(job.ended or 0)
        elif ended:
            out[f"{job.state}_at"] = int(job.ended or 0)
            if done:
                out["output_file_id"] = f"file-out-{job.id}"
            if failed:
                out["error_file_id"] = f"file-err-{job.id}"
        return out

    async def _status_openai(self, request: web.Request) -> web.Response:
        job = self._job(request, "openai")
        if job.state == "validating":
            job.state = "in_progress"
        self._advance(job)
        return web.json_response(self._openai(job))

    async def _cancel_openai(self, request: web.Request) -> web.Response:
        job = self._job(request, "openai")
        if job.ended is None:
            job.cancel_at = time.time()
            job.state = "cancelling"
        return web.json_response(self._openai(job))

    async def _content(self, request: web.Request) -> web.Response:
        file_id = request.match_info["id"]
        for prefix, errors in (("file-out-", False), ("file-err-", True)):
            if file_id.startswith(prefix):
                job = self.jobs[file_id.removeprefix(prefix)]
                lines = [self._openai_line(job, o) for o in job.output
                         if (o["status"] != 200) == errors]
                if errors:
                    lines += [{"id": f"req_{e['custom_id']}", "custom_id": e["custom_id"],
                               "response": None, "error": {
                                   "code": f"batch_{e['outcome']}",
                                   "message": f"This request could not be executed before "
                                              f"the batch was {e['outcome']}."}}
                              for e in job.errors]
                text = "".join(json.dumps(line) + "\n" for line in lines)
                return web.Response(text=text, content_type="application/octet-stream")
        if file_id in self.files:
            return web.Response(body=self.files[file_id])
        raise web.HTTPNotFound()

    def _openai_line(self, job: StandinJob, o: Mapping[str, Any]) -> dict[str, Any]:
        if o["status"] != 200:
            body: dict[str, Any] = {"error": {"message": "FAIL is not allowed here",
                                              "type": "invalid_request_error"}}
        else:
            body = {"id": f"chatcmpl-{o['custom_id']}", "object": "chat.completion",
                    "model": o["model"], "choices": [{
                        "index": 0, "finish_reason": "stop",
                        "message": {"role": "assistant", "content": o["answer"]}}],
                    "usage": {"prompt_tokens": o["usage"][0],
                              "completion_tokens": o["usage"][1],
                              "total_tokens": sum(o["usage"])}}
        return {"id": f"batch_req_{o['custom_id']}", "custom_id": o["custom_id"],
                "response": {"status_code": o["status"], "request_id": "req", "body": body},
                "error": None}

    # -- Anthropic ----------------------------------------------------------------------
    async def _create_anthropic(self, request: web.Request) -> web.Response:
        body = await request.json()
        items = body.get("requests")
        if not isinstance(items, list) or not items:
            return web.json_response({"type": "error", "error": {
                "type": "invalid_request_error", "message": "requests: a list is required"}},
                status=400)
        seen = set()
        for item in items:
            cid = item.get("custom_id")
            if not isinstance(cid, str) or not _CUSTOM_ID.fullmatch(cid) or cid in seen:
                return web.json_response({"type": "error", "error": {
                    "type": "invalid_request_error",
                    "message": f"requests: custom_id {cid!r} is invalid or repeated"}},
                    status=400)
            seen.add(cid)
            params = item.get("params") or {}
            if not params.get("max_tokens") or not params.get("messages"):
                return web.json_response({"type": "error", "error": {
                    "type": "invalid_request_error",
                    "message": "params: max_tokens and messages are required"}}, status=400)
        job = StandinJob(self._new_id("msgbatch_"), "anthropic",
                         [(i["custom_id"], i["params"]) for i in items],
                         self.outcomes.pop(0) if self.outcomes else "completed", time.time())
        self.jobs[job.id] = job
        return web.json_response(self._anthropic(job))

    def _anthropic(self, job: StandinJob) -> dict[str, Any]:
        def iso(value: float | None) -> str | None:
            if value is None:
                return None
            return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(value)) + ".000000Z"

        ended = job.ended is not None
        succeeded = sum(1 for o in job.output if o["status"] == 200)
        counts = {"processing": 0 if ended else len(job.requests), "succeeded": succeeded,
                  "errored": len(job.output) - succeeded,
                  "canceled": sum(1 for e in job.errors if e["outcome"] == "cancelled"),
                  "expired": sum(1 for e in job.errors if e["outcome"] == "expired")}
        status = "ended" if ended else "canceling" if job.cancel_at else "in_progress"
        return {"id": job.id, "type": "message_batch", "processing_status": status,
                "request_counts": counts, "created_at": iso(job.created),
                "expires_at": iso(job.created + 86400), "ended_at": iso(job.ended),
                "cancel_initiated_at": iso(job.cancel_at), "archived_at": None,
                "results_url": (f"{self.url}/v1/messages/batches/{job.id}/results"
                                if ended else None)}

    async def _status_anthropic(self, request: web.Request) -> web.Response:
        job = self._job(request, "anthropic")
        self._advance(job)
        return web.json_response(self._anthropic(job))

    async def _cancel_anthropic(self, request: web.Request) -> web.Response:
        job = self._job(request, "anthropic")
        if job.ended is None:
            job.cancel_at = time.time()
        return web.json_response(self._anthropic(job))

    async def _results_anthropic(self, request: web.Request) -> web.Response:
        job = self._job(request, "anthropic")
        if job.ended is None:
            return web.json_response({"type": "error", "error": {
                "type": "invalid_request_error",
                "message": "the batch is still processing"}}, status=400)
        lines = []
        for o in job.output:
            if o["status"] == 200:
                result: dict[str, Any] = {"type": "succeeded", "message": {
                    "id": f"msg_{o['custom_id']}", "type": "message", "role": "assistant",
                    "model": o["model"], "content": [{"type": "text", "text": o["answer"]}],
                    "stop_reason": "end_turn", "stop_sequence": None,
                    "usage": {"input_tokens": o["usage"][0], "output_tokens": o["usage"][1]}}}
            else:
                result = {"type": "errored", "error": {"type": "error", "error": {
                    "type": "invalid_request_error", "message": "FAIL is not allowed here"}}}
            lines.append({"custom_id": o["custom_id"], "result": result})
        for e in job.errors:
            kind = "canceled" if e["outcome"] == "cancelled" else e["outcome"]
            lines.append({"custom_id": e["custom_id"], "result": {"type": kind}})
        text = "".join(json.dumps(line) + "\n" for line in lines)
        return web.Response(text=text, content_type="application/binary")
