"""``GET /v1/models`` and ``GET /v1/models/{model}``: the model ids every API takes, in the
shape of the client that asks.

OpenAI's clients get ``{"object": "list", "data": [{"id", "object": "model", "created",
"owned_by"}]}``. Anthropic's (a request carrying the ``anthropic-version`` header, which
the ``anthropic`` SDK and Claude Code always send) get Anthropic's Models API: ``{"data":
[{"type": "model", "id", "display_name", "created_at"}], "has_more", "first_id",
"last_id"}`` paged by ``limit`` (1 to 1000, default 20), ``after_id`` and ``before_id``, and
one model as ``{"type": "model", ...}``. Named models come first, then each provider's models
as ``provider:model``; a key sees only the ids it may use.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from modelplex.http import dumps
from modelplex.types import ModelInfo
from modelplex_server.errors import ApiError
from modelplex_server.gateway import GATEWAY, KEY, Gateway

__all__ = ["add_routes", "get_model", "list_models"]

#: Anthropic's page size without ``limit``, and the largest it allows
ANTHROPIC_PAGE, ANTHROPIC_PAGE_MOST = 20, 1000


def _model_entry(info: ModelInfo) -> dict[str, Any]:
    created = int(info.modified.timestamp()) if info.modified else 0
    return {"id": info.id, "object": "model", "created": created, "owned_by": info.provider}


async def _model_entries(gateway: Gateway, request: web.Request) -> list[dict[str, Any]]:
    key = request.get(KEY)
    entries = [{"id": alias, "object": "model", "created": 0, "owned_by": "modelplex"}
               for alias in gateway.resolver.named_models]
    entries += [_model_entry(info) for info in await gateway.registry.list_models()
                if info.provider != "named"]
    return [e for e in entries if key is None or key.allows(e["id"])]


def _anthropic(request: web.Request) -> bool:
    return "anthropic-version" in request.headers


def _anthropic_model(entry: dict[str, Any]) -> dict[str, Any]:
    created = datetime.fromtimestamp(entry["created"], UTC).isoformat().replace("+00:00", "Z")
    return {"type": "model", "id": entry["id"], "display_name": entry["id"],
            "created_at": created}


def _anthropic_page(entries: list[dict[str, Any]], query: Any) -> dict[str, Any]:
    """Anthropic's page of ``entries``: ``limit`` of them after ``after_id`` (or the last
    ``limit`` before ``before_id``); an unknown id or a bad ``limit`` is a 400 naming it."""
    raw = query.get("limit", str(ANTHROPIC_PAGE))
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= ANTHROPIC_PAGE_MOST:
        raise ApiError(400, f"limit: must be an integer from 1 to {ANTHROPIC_PAGE_MOST} "
                            f"(got {raw[:40]!r})", param="limit")
    ids = [e["id"] for e in entries]
    start, end = 0, len(entries)
    for name in ("after_id", "before_id"):
        value = query.get(name)
        if value is None:
            continue
        if value not in ids:
            raise ApiError(400, f"{name}: {value[:100]!r} is not a model id of this list: "
                                "list again without it", param=name)
        if name == "after_id":
            start = ids.index(value) + 1
        else:
            end = ids.index(value)
    window = entries[start:end]
    page = window[-limit:] if "before_id" in query and "after_id" not in query \
        else window[:limit]
    data = [_anthropic_model(e) for e in page]
    return {"data": data, "has_more": len(window) > limit,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None}


async def list_models(request: web.Request) -> web.Response:
    """``GET /v1/models``: the named models, then every provider's models as provider:model
    (Anthropic's page for Anthropic's clients)."""
    data = await _model_entries(request.app[GATEWAY], request)
    body = _anthropic_page(data, request.query) if _anthropic(request) \
        else {"object": "list", "data": data}
    return web.Response(body=dumps(body), content_type="application/json")


async def get_model(request: web.Request) -> web.Response:
    """``GET /v1/models/{model}`` (Anthropic's model object for Anthropic's clients)."""
    model_id = request.match_info["model"]
    for entry in await _model_entries(request.app[GATEWAY], request):
        if entry["id"] == model_id:
            body = _anthropic_model(entry) if _anthropic(request) else entry
            return web.Response(body=dumps(body), content_type="application/json")
    raise ApiError(404, f"The model `{model_id}` does not exist or you do not have access to "
                        "it.", code="model_not_found", param="model")


def add_routes(app: web.Application) -> None:
    """Register ``/v1/models`` and ``/v1/models/{model}``."""
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", get_model)
