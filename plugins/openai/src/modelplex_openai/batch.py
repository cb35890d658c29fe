"""OpenAI's Batch API for :class:`~modelplex_openai.provider.OpenAIProvider`.

A job is one JSONL file of ``{"custom_id", "method": "POST", "url": "/v1/chat/completions",
"body"}`` lines uploaded to ``POST /files`` (``purpose=batch``), then ``POST /batches`` with
that file, ``endpoint=/v1/chat/completions`` and ``completion_window=24h``. ``GET
/batches/{id}`` is its status (``validating``, ``in_progress``, ``finalizing``, ``completed``,
``failed``, ``expired``, ``cancelling``, ``cancelled``); once it has ended, its output file
(answers) and error file (requests that failed, expired or were cancelled) are read line by
line from ``GET /files/{id}/content``: ``{"id", "custom_id", "response": {"status_code",
"body"}, "error"}``. Status codes and error bodies are mapped as the chat path maps them, with
the key masked.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from modelplex.batch.jobs import (
    BatchCounts,
    BatchItem,
    BatchJob,
    BatchNotEndedError,
    BatchRequest,
    JobState,
    check_job_id,
    parse_time,
)
from modelplex.errors import ConfigurationError, StreamError, redact
from modelplex.http import dumps, error_from_status, iter_lines, loads, loads_body, read_body
from modelplex_openai.wire import response_from

if TYPE_CHECKING:
    from modelplex_openai.provider import OpenAIProvider

__all__ = ["BATCH_ENDPOINT", "MAX_BATCH_BYTES", "MAX_BATCH_REQUESTS", "cancel", "job_from",
           "results", "status", "submit"]

BATCH_ENDPOINT = "/v1/chat/completions"
MAX_BATCH_REQUESTS = 50_000  # OpenAI's limits on one input file
MAX_BATCH_BYTES = 200 * 1024 * 1024
MAX_RESULT_LINE = 16 * 1024 * 1024

_STATES = {state.value: state for state in JobState}
_ITEM_ERRORS = {"batch_expired": "BatchExpiredError", "batch_cancelled": "BatchCancelledError"}


def job_from(data: Any, provider: str) -> BatchJob:
    """A :class:`BatchJob` from a ``batch`` object."""
    if not isinstance(data, Mapping) or not isinstance(data.get("id"), str):
        raise StreamError(f"{provider}: the answer is not a batch object: {str(data)[:200]!r}",
                          provider=provider)
    state = _STATES.get(str(data.get("status")), JobState.IN_PROGRESS)
    counts = data.get("request_counts") or {}
    total, done, failed = (int(counts.get(k) or 0) for k in ("total", "completed", "failed"))
    left = max(0, total - done - failed)
    detail = None
    errors = data.get("errors")
    if isinstance(errors, Mapping) and errors.get("data"):
        detail = "; ".join(
            (f"line {e.get('line')}: " if e.get("line") is not None else "")
            + str(e.get("message") or e.get("code")) for e in errors["data"][:5]
            if isinstance(e, Mapping))
    ended = next((parse_time(data.get(k)) for k in ("completed_at", "failed_at", "expired_at",
                                                    "cancelled_at") if data.get(k)), None)
    return BatchJob(
        id=data["id"], provider=provider, state=state,
        counts=BatchCounts(total=total, succeeded=done, errored=failed,
                           processing=0 if state.ended else left,
                           expired=left if state is JobState.EXPIRED else 0,
                           cancelled=left if state is JobState.CANCELLED else 0),
        created_at=parse_time(data.get("created_at")), ended_at=ended,
        expires_at=parse_time(data.get("expires_at")), detail=detail, raw=dict(data))


def _multipart(fields: Mapping[str, str], name: str, filename: str, content: bytes
               ) -> tuple[bytes, str]:
    boundary = f"modelplex-{uuid.uuid4().hex}"
    parts: list[bytes] = []
    for key, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n'
                     f"{value}\r\n".encode())
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                 f'filename="{filename}"\r\nContent-Type: application/jsonl\r\n\r\n'.encode())
    parts.append(content)
    parts.append(f"\r\n--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


async def submit(provider: OpenAIProvider, requests: Sequence[BatchRequest]) -> BatchJob:
    """Upload ``requests`` as a JSONL file and create a job of it."""
    if not requests:
        raise ConfigurationError("a batch job needs at least one request")
    if len(requests) > MAX_BATCH_REQUESTS:
        raise ConfigurationError(f"a batch job holds at most {MAX_BATCH_REQUESTS} requests "
                                 f"(got {len(requests)}): split them into several jobs")
    lines = []
    seen: set[str] = set()
    for item in requests:
        if item.custom_id in seen:
            raise ConfigurationError(f"custom_id {item.custom_id!r} is given twice: each "
                                     "request of a job needs its own")
        seen.add(item.custom_id)
        lines.append(dumps({"custom_id": item.custom_id, "method": "POST",
                            "url": BATCH_ENDPOINT, "body": provider._body(item.request)}))
    content = b"\n".join(lines) + b"\n"
    if len(content) > MAX_BATCH_BYTES:
        raise ConfigurationError(f"a batch input file holds at most {MAX_BATCH_BYTES} bytes "
                                 f"(these requests take {len(content)}): send fewer per job")
    body, content_type = _multipart({"purpose": "batch"}, "file", "modelplex-batch.jsonl",
                                    content)
    http = provider.http
    async with http.stream("POST", "/files", headers={"Content-Type": content_type},
                           body=body) as resp:
        raw = await read_body(resp, http.max_body_bytes, provider=provider.name)
    uploaded = loads_body(raw, provider=provider.name)
    file_id = uploaded.get("id") if isinstance(uploaded, Mapping) else None
    if not isinstance(file_id, str):
        raise StreamError(f"{provider.name}: the file upload answered without a file id: "
                          f"{str(uploaded)[:200]!r}", provider=provider.name)
    created = await http.request_json("POST", "/batches", {
        "input_file_id": file_id, "endpoint": BATCH_ENDPOINT, "completion_window": "24h"})
    return job_from(created, provider.name)


async def status(provider: OpenAIProvider, job_id: str) -> BatchJob:
    """``GET /batches/{id}``."""
    data = await provider.http.request_json("GET", f"/batches/{check_job_id(job_id)}")
    return job_from(data, provider.name)


async def cancel(provider: OpenAIProvider, job_id: str) -> BatchJob:
    """``POST /batches/{id}/cancel``."""
    data = await provider.http.request_json("POST", f"/batches/{check_job_id(job_id)}/cancel")
    return job_from(data, provider.name)


def _item(provider: OpenAIProvider, line: Any) -> BatchItem | None:
    name = provider.name
    if not isinstance(line, Mapping) or not isinstance(line.get("custom_id"), str):
        return None
    cid = line["custom_id"]
    error = line.get("error")
    if isinstance(error, Mapping) and (error.get("code") or error.get("message")):
        code = str(error.get("code") or "error")
        message = redact(str(error.get("message") or code), *provider.http.secrets)
        return BatchItem(cid, error=f"{name}: {message}",
                         error_type=_ITEM_ERRORS.get(code, "ProviderError"))
    response = line.get("response")
    if not isinstance(response, Mapping):
        return BatchItem(cid, error=f"{name}: the result has no response",
                         error_type="StreamError")
    status_code = response.get("status_code")
    body = response.get("body")
    if not isinstance(status_code, int) or status_code >= 400 or not isinstance(body, Mapping):
        status_code = status_code if isinstance(status_code, int) else 500
        err = provider._status_error(status_code, body, {}) or error_from_status(
            status_code, body, {}, provider=name, secrets=provider.http.secrets)
        return BatchItem(cid, error=str(err), error_type=type(err).__name__)
    return BatchItem(cid, response=response_from(body, model=str(body.get("model") or ""),
                                                 provider=name))


async def results(provider: OpenAIProvider, job_id: str) -> AsyncIterator[BatchItem]:
    """Each line of the ended job's output file, then of its error file."""
    data = await provider.http.request_json("GET", f"/batches/{check_job_id(job_id)}")
    job = job_from(data, provider.name)
    if not job.state.ended:
        raise BatchNotEndedError(f"job {job_id} is still {job.state} ({job.counts.finished} of "
                                 f"{job.counts.total} done): wait for it to end")
    http = provider.http
    for key in ("output_file_id", "error_file_id"):
        file_id = data.get(key)
        if not file_id:
            continue
        async with http.stream("GET", f"/files/{check_job_id(file_id)}/content") as resp:
            async for raw in iter_lines(resp, MAX_RESULT_LINE, provider=provider.name):
                if not raw.strip():
                    continue
                try:
                    line = loads(raw)
                except ValueError as err:
                    raise StreamError(f"{provider.name}: a line of {key} {file_id} is not "
                                      f"JSON: {raw[:200]!r}", provider=provider.name) from err
                item = _item(provider, line)
                if item is not None:
                    yield item
