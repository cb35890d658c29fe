"""OpenAI's Batch API: ``/v1/batches``, run in the background by the server itself.

``POST /v1/batches`` takes ``input_file_id`` (a file uploaded with ``purpose=batch``, see
:mod:`modelplex_server.files_api`), ``endpoint`` (``/v1/chat/completions``,
``/v1/embeddings`` or ``/v1/completions``), ``completion_window`` (``24h``) and optional
``metadata``, and answers the batch object at status ``validating``; the
:class:`~modelplex_server.batch_runner.BatchRunner` takes it from there.
``GET /v1/batches/{id}`` shows its status and ``request_counts``,
``POST /v1/batches/{id}/cancel`` stops it (``cancelling``, then ``cancelled`` with the
results so far once the requests in flight are stopped), ``GET /v1/batches`` lists them
newest first (``after``, ``limit``). A batch belongs to the API key that made it, and its
lines run with that key's models, limits and budget.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web
from pydantic import Field

from modelplex.http import dumps
from modelplex_server.batch_runner import BATCHES, ENDPOINTS
from modelplex_server.batch_store import BatchRecord
from modelplex_server.errors import ApiError
from modelplex_server.files_api import int_query, may_see, owner_filter, visible_file
from modelplex_server.gateway import GATEWAY
from modelplex_server.schemas import _Body, read_body

__all__ = ["BatchCreate", "add_routes"]

BATCHES_PATH = "/v1/batches"
WINDOWS = {"24h": 24 * 3600}


class BatchCreate(_Body):
    """``POST /v1/batches``."""

    input_file_id: str = Field(min_length=1, max_length=200)
    endpoint: str = Field(min_length=1, max_length=200)
    completion_window: str = "24h"
    metadata: dict[str, str] | None = Field(default=None, max_length=16)


def _json(data: dict[str, Any]) -> web.Response:
    return web.Response(body=dumps(data), content_type="application/json")


async def create_batch(request: web.Request) -> web.Response:
    """``POST /v1/batches``."""
    gateway = request.app[GATEWAY]
    body = await read_body(request, BatchCreate)
    if body.endpoint not in ENDPOINTS:
        raise ApiError(400, f"endpoint {body.endpoint[:80]!r} is not supported in a batch: use "
                            f"{' or '.join(ENDPOINTS)}", param="endpoint",
                       code="unsupported_value")
    if body.completion_window not in WINDOWS:
        raise ApiError(400, f"completion_window {body.completion_window[:20]!r} is not "
                            "supported: use '24h'", param="completion_window",
                       code="unsupported_value")
    for name, value in (body.metadata or {}).items():
        if len(name) > 64 or len(value) > 512:
            raise ApiError(400, "metadata keys are at most 64 characters and values at most "
                                "512", param=f"metadata.{name[:64]}")
    source = await visible_file(request, body.input_file_id, param="input_file_id")
    if source.kind != "upload" or source.purpose != "batch":
        raise ApiError(400, f"file {source.id} is not a batch input: upload the JSONL file "
                            "with purpose=batch", param="input_file_id")
    owner, most = gateway.owner(request), gateway.settings.max_open_batches
    created = int(time.time())
    record = BatchRecord(owner=owner, created_at=created, data={
        "endpoint": body.endpoint, "input_file_id": source.id,
        "completion_window": body.completion_window, "metadata": body.metadata,
        "expires_at": created + WINDOWS[body.completion_window]})
    if not await gateway.conversations.create_batch(record, most=most):
        raise ApiError(400, f"{'the key ' + repr(owner) if owner else 'the server'} has {most} "
                            "batches open already ([server] max_open_batches): wait for one "
                            "to finish or cancel one (POST /v1/batches/{id}/cancel)",
                       code="batches_limit_reached", param="input_file_id")
    request.app[BATCHES].wake()
    return _json(record.public())


async def _visible_batch(request: web.Request) -> BatchRecord:
    batch_id = request.match_info["batch_id"]
    record = await request.app[GATEWAY].conversations.get_batch(batch_id)
    if record is None or not may_see(request, record.owner):
        raise ApiError(404, f"No batch found with id '{batch_id[:100]}'.",
                       code="batch_not_found", param="batch_id")
    return record


async def get_batch(request: web.Request) -> web.Response:
    """``GET /v1/batches/{batch_id}``."""
    return _json((await _visible_batch(request)).public())


async def cancel_batch(request: web.Request) -> web.Response:
    """``POST /v1/batches/{batch_id}/cancel``: ``cancelling`` now, ``cancelled`` once the
    runner stopped its requests in flight; a batch already cancelling is answered as it is."""
    record = await _visible_batch(request)
    if record.status == "cancelling":
        return _json(record.public())
    updated = await request.app[GATEWAY].conversations.update_batch(
        record.id, expect=("validating", "in_progress"), status="cancelling",
        data={"cancelling_at": int(time.time())})
    if updated is None:
        current = await _visible_batch(request)
        if current.status == "cancelling":
            return _json(current.public())
        raise ApiError(409, f"Cannot cancel a batch with status '{current.status}'.",
                       code="batch_not_cancellable", param="batch_id")
    request.app[BATCHES].wake()
    return _json(updated.public())


async def list_batches(request: web.Request) -> web.Response:
    """``GET /v1/batches`` (``after``, ``limit``): newest first."""
    limit = int_query(request, "limit", 20, 1, 100)
    records = await request.app[GATEWAY].conversations.list_batches(
        owner_filter(request), after=request.query.get("after") or None, limit=limit + 1)
    data = [r.public() for r in records[:limit]]
    return _json({"object": "list", "data": data,
                  "first_id": data[0]["id"] if data else None,
                  "last_id": data[-1]["id"] if data else None,
                  "has_more": len(records) > limit})


def add_routes(app: web.Application) -> None:
    """Register ``/v1/batches``."""
    app.router.add_post(BATCHES_PATH, create_batch)
    app.router.add_get(BATCHES_PATH, list_batches)
    app.router.add_get(BATCHES_PATH + "/{batch_id}", get_batch)
    app.router.add_post(BATCHES_PATH + "/{batch_id}/cancel", cancel_batch)
