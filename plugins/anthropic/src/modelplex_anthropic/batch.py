"""Anthropic's Message Batches API for :class:`~modelplex_anthropic.provider.AnthropicProvider`.

A job is ``POST /v1/messages/batches`` with ``{"requests": [{"custom_id", "params"}]}``, each
``params`` the body of a Messages request; ``GET /v1/messages/batches/{id}`` is its status
(``processing_status`` ``in_progress``, ``canceling`` or ``ended``, and ``request_counts``);
once it has ended, ``GET /v1/messages/batches/{id}/results`` is JSONL of ``{"custom_id",
"result": {"type": "succeeded" | "errored" | "canceled" | "expired", ...}}``. The results are
read from the configured base URL (the documented path), so the key never goes to another
host named by ``results_url``.
"""

from __future__ import annotations

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
from modelplex.http import dumps, iter_lines, loads, loads_body, read_body
from modelplex_anthropic.wire import response_from

if TYPE_CHECKING:
    from modelplex_anthropic.provider import AnthropicProvider

__all__ = ["MAX_BATCH_BYTES", "MAX_BATCH_REQUESTS", "cancel", "job_from", "results", "status",
           "submit"]

MAX_BATCH_REQUESTS = 100_000  # Anthropic's limits on one batch
MAX_BATCH_BYTES = 256 * 1024 * 1024
MAX_RESULT_LINE = 16 * 1024 * 1024
PATH = "/v1/messages/batches"

#: Anthropic's error types -> the modelplex error each means on the chat path
_ERROR_TYPES = {"invalid_request_error": "BadRequestError",
                "authentication_error": "AuthenticationError",
                "permission_error": "AuthenticationError", "billing_error": "AuthenticationError",
                "not_found_error": "ModelNotFoundError", "rate_limit_error": "RateLimitError",
                "overloaded_error": "ServerBusyError", "api_error": "ServerError",
                "timeout_error": "ProviderTimeoutError"}


def job_from(data: Any, provider: str) -> BatchJob:
    """A :class:`BatchJob` from a ``message_batch`` object."""
    if not isinstance(data, Mapping) or not isinstance(data.get("id"), str):
        raise StreamError(f"{provider}: the answer is not a message batch: "
                          f"{str(data)[:200]!r}", provider=provider)
    raw = data.get("request_counts") or {}
    counts = BatchCounts(**{name: int(raw.get(key) or 0) for name, key in (
        ("processing", "processing"), ("succeeded", "succeeded"), ("errored", "errored"),
        ("cancelled", "canceled"), ("expired", "expired"))},
        total=sum(int(v or 0) for v in raw.values() if isinstance(v, int)))
    status = data.get("processing_status")
    if status == "ended":
        state = (JobState.CANCELLED if data.get("cancel_initiated_at") else
                 JobState.EXPIRED if counts.expired else JobState.COMPLETED)
    elif status == "canceling":
        state = JobState.CANCELLING
    else:
        state = JobState.IN_PROGRESS
    return BatchJob(id=data["id"], provider=provider, state=state, counts=counts,
                    created_at=parse_time(data.get("created_at")),
                    ended_at=parse_time(data.get("ended_at")),
                    expires_at=parse_time(data.get("expires_at")), raw=dict(data))


async def submit(provider: AnthropicProvider, requests: Sequence[BatchRequest]) -> BatchJob:
    """``POST /v1/messages/batches`` with ``requests``."""
    if not requests:
        raise ConfigurationError("a batch job needs at least one request")
    if len(requests) > MAX_BATCH_REQUESTS:
        raise ConfigurationError(f"a message batch holds at most {MAX_BATCH_REQUESTS} "
                                 f"requests (got {len(requests)}): split them into several "
                                 "jobs")
    items = []
    betas: list[str] = []
    seen: set[str] = set()
    for item in requests:
        if item.custom_id in seen:
            raise ConfigurationError(f"custom_id {item.custom_id!r} is given twice: each "
                                     "request of a job needs its own")
        seen.add(item.custom_id)
        body, headers = provider._body(item.request)
        for beta in (headers or {}).get("anthropic-beta", "").split(","):
            if beta and beta not in betas:
                betas.append(beta)
        items.append({"custom_id": item.custom_id, "params": body})
    payload = dumps({"requests": items})
    if len(payload) > MAX_BATCH_BYTES:
        raise ConfigurationError(f"a message batch holds at most {MAX_BATCH_BYTES} bytes "
                                 f"(these requests take {len(payload)}): send fewer per job")
    http = provider.http
    send = {"Content-Type": "application/json"}
    if betas:
        send["anthropic-beta"] = ",".join(betas)
    async with http.stream("POST", PATH, headers=send, body=payload) as resp:
        raw = await read_body(resp, http.max_body_bytes, provider=provider.name)
    data = loads_body(raw, provider=provider.name)
    return job_from(data, provider.name)


async def status(provider: AnthropicProvider, job_id: str) -> BatchJob:
    """``GET /v1/messages/batches/{id}``."""
    data = await provider.http.request_json("GET", f"{PATH}/{check_job_id(job_id)}")
    return job_from(data, provider.name)


async def cancel(provider: AnthropicProvider, job_id: str) -> BatchJob:
    """``POST /v1/messages/batches/{id}/cancel``."""
    data = await provider.http.request_json("POST", f"{PATH}/{check_job_id(job_id)}/cancel")
    return job_from(data, provider.name)


def _item(provider: AnthropicProvider, line: Any) -> BatchItem | None:
    name = provider.name
    if not isinstance(line, Mapping) or not isinstance(line.get("custom_id"), str):
        return None
    cid = line["custom_id"]
    result = line.get("result")
    kind = result.get("type") if isinstance(result, Mapping) else None
    if kind == "succeeded" and isinstance(result, Mapping) and \
            isinstance(result.get("message"), Mapping):
        message = result["message"]
        return BatchItem(cid, response=response_from(message, model=str(message.get("model")
                                                                         or ""), provider=name))
    if kind == "expired":
        return BatchItem(cid, error=f"{name}: the batch expired before this request was "
                                    "processed", error_type="BatchExpiredError")
    if kind == "canceled":
        return BatchItem(cid, error=f"{name}: the batch was cancelled before this request "
                                    "was processed", error_type="BatchCancelledError")
    if kind == "errored" and isinstance(result, Mapping):
        outer = result.get("error")
        info = outer.get("error", outer) if isinstance(outer, Mapping) else None
        etype = str(info.get("type") or "api_error") if isinstance(info, Mapping) else \
            "api_error"
        text = str(info.get("message") or etype) if isinstance(info, Mapping) else etype
        return BatchItem(cid, error=f"{name}: {etype}: "
                                    f"{redact(text, *provider.http.secrets)}",
                         error_type=_ERROR_TYPES.get(etype, "ProviderError"))
    return BatchItem(cid, error=f"{name}: unknown result {str(result)[:200]!r}",
                     error_type="StreamError")


async def results(provider: AnthropicProvider, job_id: str) -> AsyncIterator[BatchItem]:
    """Each line of the ended job's results."""
    job = await status(provider, job_id)
    if not job.state.ended:
        raise BatchNotEndedError(f"job {job_id} is still {job.state} ({job.counts.finished} of "
                                 f"{job.counts.total} done): wait for it to end")
    async with provider.http.stream("GET", f"{PATH}/{job_id}/results") as resp:
        async for raw in iter_lines(resp, MAX_RESULT_LINE, provider=provider.name):
            if not raw.strip():
                continue
            try:
                line = loads(raw)
            except ValueError as err:
                raise StreamError(f"{provider.name}: a line of the results of {job_id} is not "
                                  f"JSON: {raw[:200]!r}", provider=provider.name) from err
            item = _item(provider, line)
            if item is not None:
                yield item
