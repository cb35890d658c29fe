"""OpenAI's Files API for batches: ``/v1/files``.

``POST /v1/files`` takes a multipart form with ``purpose=batch`` and a ``file`` (a batch's
input JSONL, at most ``[server] max_file_bytes``, read as it arrives: 413 beyond, 408 when it
stalls) and keeps it in the server's store; ``GET /v1/files`` lists them (``after``,
``limit``, ``order``, ``purpose``), ``GET /v1/files/{id}`` and ``DELETE /v1/files/{id}`` act
on one, and ``GET /v1/files/{id}/content`` gives its bytes: an upload's, or a batch's output
or error file, written from the batch's stored results in line order. A file belongs to the
API key that uploaded it, like a conversation: other keys get 404 (admin keys see every one).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from modelplex.http import dumps
from modelplex_server.batch_store import FileRecord
from modelplex_server.connections import CONNECTIONS
from modelplex_server.errors import ApiError
from modelplex_server.gateway import GATEWAY, KEY, Gateway
from modelplex_server.settings import KeyConfig

__all__ = ["FILES_PATH", "add_routes", "int_query", "owner_filter", "visible_file"]

FILES_PATH = "/v1/files"
_PURPOSES = ("batch",)


def owner_filter(request: web.Request) -> str | None:
    """Whose files and batches a listing shows: the key's own (None: every one, for an admin
    key or a server without keys)."""
    key: KeyConfig | None = request.get(KEY)
    return None if key is None or key.admin else key.name


def may_see(request: web.Request, owner: str | None) -> bool:
    """Whether the caller's key may see a file or batch of ``owner``."""
    key: KeyConfig | None = request.get(KEY)
    return key is None or key.admin or owner == key.name


async def visible_file(request: web.Request, file_id: str, *,
                       param: str | None = None) -> FileRecord:
    """The file, if the caller may see it; else 404 (whether it exists or not)."""
    record = await request.app[GATEWAY].conversations.get_file(file_id)
    if record is None or not may_see(request, record.owner):
        raise ApiError(404, f"No such File object: {file_id}", code="file_not_found",
                       param=param or "file_id")
    return record


def int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """A whole-number query parameter within ``low..high`` (a 400 naming it otherwise)."""
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ApiError(400, f"{name} must be a whole number from {low} to {high} "
                            f"(got {raw[:40]!r})", param=name)
    return value


async def _read_part(request: web.Request, part: BodyPartReader, limit: int,
                     field: str = "file") -> bytes:
    """A form part's bytes, each read waiting at most ``body_timeout`` (then 408), at most
    ``limit`` bytes (then 413 for the file, 400 naming any other ``field``)."""
    settings = request.app[GATEWAY].settings
    chunks: list[bytes] = []
    size = 0
    with request.app[CONNECTIONS].receiving(request.transport):
        while True:
            try:
                async with asyncio.timeout(settings.body_timeout):
                    chunk = await part.read_chunk(64 * 1024)
            except TimeoutError:
                raise ApiError(408, f"the upload stalled for {settings.body_timeout:g} s: "
                                    "send it whole", code="request_timeout",
                               close=True) from None
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > limit and field != "file":
                raise ApiError(400, f"the form field {field!r} is longer than {limit} bytes: "
                                    f"send {field}=batch", param=field)
            if size > limit:
                raise ApiError(413, f"the file is larger than the limit of {limit} bytes "
                                    "([server] max_file_bytes): split the batch into smaller "
                                    "files", code="file_too_large", param="file", close=True)
            chunks.append(chunk)


async def _read_form(request: web.Request) -> tuple[str | None, bytes | None, str]:
    """The form's ``purpose``, ``file`` and file name; a malformed form (no boundary, no
    starting boundary, a header line over 8 KiB) is a 400 naming the fix, not a 500."""
    try:
        return await _read_fields(request)
    except (ValueError, HttpProcessingError) as err:
        why = ("a header line is longer than 8 KiB" if isinstance(err, HttpProcessingError)
               else str(err)[:120])
        raise ApiError(400, f"the multipart form is malformed ({why}): "
                            "send the fields 'purpose' and 'file' as multipart/form-data "
                            "with a boundary, each header line under 8 KiB (file names "
                            "included)", param="file", close=True) from None


async def _read_fields(request: web.Request) -> tuple[str | None, bytes | None, str]:
    gateway: Gateway = request.app[GATEWAY]
    limit = gateway.settings.max_file_bytes
    purpose: str | None = None
    content: bytes | None = None
    filename = "file.jsonl"
    reader = await request.multipart()
    fields = 0
    while True:
        try:
            async with asyncio.timeout(gateway.settings.body_timeout):
                part = await reader.next()
        except TimeoutError:
            raise ApiError(408, f"the upload stalled for {gateway.settings.body_timeout:g} s: "
                                "send it whole", code="request_timeout", close=True) from None
        if part is None:
            break
        fields += 1
        if fields > 8 or not isinstance(part, BodyPartReader):
            raise ApiError(400, "the form must hold only the fields 'purpose' and 'file'",
                           param="file")
        if part.name == "purpose":
            purpose = (await _read_part(request, part, 64, "purpose")).decode(
                "utf-8", "replace").strip()
        elif part.name == "file":
            if content is not None:
                raise ApiError(400, "the form holds more than one 'file': upload one file "
                                    "per request", param="file", close=True)
            content = await _read_part(request, part, limit)
            filename = (part.filename or filename)[:256]
        else:
            await _read_part(request, part, limit)  # ignored, but bounded
    return purpose, content, filename


async def create_file(request: web.Request) -> web.Response:
    """``POST /v1/files`` (multipart: ``purpose``, ``file``)."""
    gateway: Gateway = request.app[GATEWAY]
    if request.content_type != "multipart/form-data":
        raise ApiError(400, "send the file as a multipart form (Content-Type: "
                            "multipart/form-data) with the fields 'purpose' and 'file'",
                       param="file")
    purpose, content, filename = await _read_form(request)
    if purpose is None:
        raise ApiError(400, "the form field 'purpose' is required: send purpose=batch",
                       param="purpose")
    if purpose not in _PURPOSES:
        raise ApiError(400, f"purpose {purpose[:40]!r} is not supported: this server keeps "
                            "files for batches only (purpose=batch)", param="purpose",
                       code="unsupported_value")
    if content is None:
        raise ApiError(400, "the form field 'file' is required: attach the batch's JSONL "
                            "file", param="file")
    owner, most = gateway.owner(request), gateway.settings.max_files
    record = FileRecord(owner=owner, purpose=purpose, filename=filename, bytes=len(content))
    if not await gateway.conversations.create_file(record, content, most=most):
        raise ApiError(400, f"{'the key ' + repr(owner) if owner else 'the server'} keeps "
                            f"{most} files already ([server] max_files): delete some "
                            "(DELETE /v1/files/{id}) first",
                       code="files_limit_reached", param="file")
    return web.Response(body=dumps(record.public()), content_type="application/json")


async def list_files(request: web.Request) -> web.Response:
    """``GET /v1/files`` (``after``, ``limit``, ``order``, ``purpose``)."""
    store = request.app[GATEWAY].conversations
    limit = int_query(request, "limit", 10_000, 1, 10_000)
    order = request.query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise ApiError(400, f"order must be 'asc' or 'desc' (got {order[:20]!r})",
                       param="order")
    records = await store.list_files(owner_filter(request),
                                     purpose=request.query.get("purpose") or None,
                                     after=request.query.get("after") or None,
                                     limit=limit + 1, order=order)
    return _page([r.public() for r in records], limit)


def _page(items: list[dict[str, Any]], limit: int) -> web.Response:
    """OpenAI's cursor page: ``data``, ``first_id``, ``last_id``, ``has_more``."""
    data = items[:limit]
    body = {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": len(items) > limit}
    return web.Response(body=dumps(body), content_type="application/json")


async def get_file(request: web.Request) -> web.Response:
    """``GET /v1/files/{file_id}``."""
    record = await visible_file(request, request.match_info["file_id"])
    return web.Response(body=dumps(record.public()), content_type="application/json")


async def delete_file(request: web.Request) -> web.Response:
    """``DELETE /v1/files/{file_id}``."""
    record = await visible_file(request, request.match_info["file_id"])
    await request.app[GATEWAY].conversations.delete_file(record.id)
    return web.Response(body=dumps({"id": record.id, "object": "file", "deleted": True}),
                        content_type="application/json")


async def file_content(request: web.Request) -> web.StreamResponse:
    """``GET /v1/files/{file_id}/content``: an upload's bytes, or a batch's result lines."""
    store = request.app[GATEWAY].conversations
    record = await visible_file(request, request.match_info["file_id"])
    headers = {"Content-Disposition": f'attachment; filename="{record.id}.jsonl"'}
    if record.kind == "upload":
        content = await store.file_content(record.id)
        return web.Response(body=content or b"", content_type="application/octet-stream",
                            headers=headers)
    resp = web.StreamResponse(headers={**headers, "Content-Type": "application/octet-stream"})
    await resp.prepare(request)
    after = -1
    while record.batch_id is not None:
        page = await store.batch_results(record.batch_id, record.kind == "output",
                                         after=after)
        if not page:
            break
        await resp.write("".join(data + "\n" for _, data in page).encode())
        after = page[-1][0]
    await resp.write_eof()
    return resp


def add_routes(app: web.Application) -> None:
    """Register ``/v1/files``."""
    app.router.add_post(FILES_PATH, create_file)
    app.router.add_get(FILES_PATH, list_files)
    app.router.add_get(FILES_PATH + "/{file_id}", get_file)
    app.router.add_delete(FILES_PATH + "/{file_id}", delete_file)
    app.router.add_get(FILES_PATH + "/{file_id}/content", file_content)
