"""Seed 003's REST API: models, search, providers and health, chat over SSE, conversations.

Every answer is JSON (errors in OpenAI's shape, see :mod:`modelplex_server.errors`) except
``POST /api/chat``, which streams Server-Sent Events (``chunk``, then ``done`` or ``error``).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from aiohttp import web

from modelplex.errors import ModelplexError
from modelplex.http import dumps
from modelplex.stats import model_stats
from modelplex.types import ModelInfo
from modelplex_server.__about__ import __version__
from modelplex_server.chat import chunk_event, start_turn
from modelplex_server.conversations import Conversation
from modelplex_server.errors import ApiError, error_body, from_exception
from modelplex_server.files_api import int_query, owner_filter
from modelplex_server.gateway import GATEWAY, KEY, Gateway
from modelplex_server.openai_api import SSE_HEADERS
from modelplex_server.schemas import (
    ConversationCreate,
    ConversationUpdate,
    RestChatRequest,
    read_body,
)

__all__ = ["add_routes", "model_dict"]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=dumps(data), status=status, content_type="application/json")


#: an absolute file path in a text (not the path of a URL): ``/a/b``, ``C:\\a``, ``~/a``
_LOCAL_PATH = re.compile(r"(?<![\w:/.])(?:/|~/|[A-Za-z]:\\)(?:[^\s'\"/\\]+[/\\])+")


def model_dict(info: ModelInfo) -> dict[str, Any]:
    """A model as the REST API shows it (``ModelInfo`` plus the human ``size``); the folders
    of the server's files (a local model's ``details.path``, an error naming it) are left out:
    a client sees the file's name only."""
    data = info.model_dump(mode="json")
    details = data.get("details")
    if isinstance(details, dict):
        data["details"] = {key: _LOCAL_PATH.sub("", value) if isinstance(value, str) else value
                           for key, value in details.items()}
    return data


def _allowed(request: web.Request, infos: list[ModelInfo]) -> list[ModelInfo]:
    key = request.get(KEY)
    return infos if key is None else [m for m in infos if key.allows(m.id)]


def _flag(request: web.Request, name: str) -> bool | None:
    value = request.query.get(name)
    if value is None or value == "":
        return None
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise ApiError(400, f"query parameter {name!r} must be true or false (got {value!r})",
                   param=name)


def _int(request: web.Request, name: str) -> int | None:
    value = request.query.get(name)
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ApiError(400, f"query parameter {name!r} must be an integer (got {value!r})",
                       param=name) from None


# -- models -------------------------------------------------------------------------------------
async def list_models(request: web.Request) -> web.Response:
    """``GET /api/models``: every model, grouped by provider, the providers that failed
    (``errors``) and those not configured, with the variable to set (``not_configured``:
    they were not contacted)."""
    gateway = request.app[GATEWAY]
    listings = await gateway.registry.listings(refresh=_flag(request, "refresh") or False)
    grouped = {name: [model_dict(m) for m in _allowed(request, listing.models)]
               for name, listing in listings.items()}
    errors = {name: listing.error for name, listing in listings.items() if listing.error}
    missing = {name: listing.missing for name, listing in listings.items() if listing.missing}
    return _json({"models": grouped, "total": sum(len(v) for v in grouped.values()),
                  "errors": errors, "not_configured": missing})


async def search_models(request: web.Request) -> web.Response:
    """``GET /api/models/search?q=&provider=&capability=&min_context=&max_size=&local=``."""
    gateway = request.app[GATEWAY]
    query = request.query
    found = await gateway.registry.search(
        query.get("q"), provider=query.getall("provider", []) or None,
        capability=query.getall("capability", []), min_context=_int(request, "min_context"),
        max_size_bytes=_int(request, "max_size"), local=_flag(request, "local"))
    models = [model_dict(m) for m in _allowed(request, found)]
    return _json({"models": models, "total": len(models)})


async def provider_models(request: web.Request) -> web.Response:
    """``GET /api/models/{provider}``: one provider's models."""
    gateway = request.app[GATEWAY]
    name = request.match_info["provider"]
    if name not in gateway.registry.provider_names():
        raise ApiError(404, f"unknown provider {name!r}", code="provider_not_found")
    listing = (await gateway.registry.listings(provider=name))[name]
    return _json({"provider": name, "models": [model_dict(m) for m in
                                               _allowed(request, listing.models)],
                  "error": listing.error})


async def get_model(request: web.Request) -> web.Response:
    """``GET /api/models/{provider}/{model}``: one model's details, with its usage in this
    server process (``stats``: :class:`modelplex.stats.ModelStats`, None before a request)."""
    gateway = request.app[GATEWAY]
    name, model = request.match_info["provider"], request.match_info["model"]
    if name not in gateway.registry.provider_names():
        raise ApiError(404, f"unknown provider {name!r}", code="provider_not_found")
    gateway.check_model(request, f"{name}:{model}")
    data = model_dict(await gateway.registry.get_model(name, model))
    stats = model_stats(f"{name}:{model}")  # seed 000: for every model that served requests
    data["stats"] = dataclasses.asdict(stats) if stats is not None else None
    return _json(data)


async def refresh_models(request: web.Request) -> web.Response:
    """``POST /api/models/refresh[?provider=]``: fetch the model lists now."""
    gateway = request.app[GATEWAY]
    name = request.query.get("provider") or None
    if name is not None and name not in gateway.registry.provider_names():
        raise ApiError(404, f"unknown provider {name!r}", code="provider_not_found")
    listings = await gateway.registry.refresh(name)
    return _json({"providers": {n: listing.to_dict() for n, listing in listings.items()}})


# -- providers ----------------------------------------------------------------------------------
async def _health(gateway: Gateway, name: str | None = None) -> dict[str, Any]:
    known = gateway.registry.last_health()
    names = [name] if name else gateway.registry.provider_names()
    missing = [n for n in names if n not in known]
    if missing:
        for n in missing:
            known.update(await gateway.registry.check_health(n))
    out = {}
    for n in names:
        entry = known[n].to_dict()
        try:
            provider = await gateway.resolver.provider(n)
        except ModelplexError:  # cannot be created: the check said why
            entry.update(default_model=None, supports_streaming=False, supports_embeddings=False)
        else:
            entry.update(default_model=provider.default_model,
                         supports_streaming=provider.capabilities.streaming,
                         supports_embeddings=provider.capabilities.embeddings)
        out[n] = entry
    return out


async def list_providers(request: web.Request) -> web.Response:
    """``GET /api/providers``: each provider, its model count and its health."""
    gateway = request.app[GATEWAY]
    listings = await gateway.registry.listings()
    health = await _health(gateway)
    out = []
    for name in gateway.registry.provider_names():
        entry = {**listings[name].to_dict(), "health": health[name]}
        try:
            provider = await gateway.resolver.provider(name)
        except ModelplexError:  # cannot even be created: its listing says why
            out.append(entry)
            continue
        caps = provider.capabilities
        out.append({**entry, "default_model": provider.default_model,
                    "supports_streaming": caps.streaming,
                    "supports_embeddings": caps.embeddings, "supports_tools": caps.tools,
                    "supports_vision": caps.vision, "supports_json": caps.json_mode})
    return _json({"providers": out})


async def providers_health(request: web.Request) -> web.Response:
    """``GET /api/providers/health[?refresh=true]``: every provider's health."""
    gateway = request.app[GATEWAY]
    if _flag(request, "refresh"):
        await gateway.registry.check_health()
    return _json(await _health(gateway))


async def provider_health(request: web.Request) -> web.Response:
    """``GET /api/providers/{name}/health``: check one provider now."""
    gateway = request.app[GATEWAY]
    name = request.match_info["name"]
    if name not in gateway.registry.provider_names():
        raise ApiError(404, f"unknown provider {name!r}", code="provider_not_found")
    return _json((await gateway.registry.check_health(name))[name].to_dict())


async def server_health(request: web.Request) -> web.Response:
    """``GET /health``: the server is up (no key needed; for load balancers)."""
    gateway = request.app[GATEWAY]
    return _json({"status": "ok", "version": __version__, "in_flight": gateway.in_flight})


# -- chat ---------------------------------------------------------------------------------------
def _event(name: str, data: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + dumps(data) + b"\n\n"


async def chat(request: web.Request) -> web.StreamResponse:
    """``POST /api/chat``: stream the answer as SSE events ``chunk``, then ``done`` or
    ``error``."""
    gateway = request.app[GATEWAY]
    body = await read_body(request, RestChatRequest)
    turn = await start_turn(gateway, request, body)
    resp = web.StreamResponse(headers=SSE_HEADERS)
    stream = turn.stream()
    try:
        first = await anext(stream, None)
    except Exception:
        await stream.aclose()
        raise
    await resp.prepare(request)
    try:
        if first is not None:
            event = chunk_event(first)
            if event:
                await resp.write(_event("chunk", event))
            async for chunk in stream:
                event = chunk_event(chunk)
                if event:
                    await resp.write(_event("chunk", event))
        await resp.write(_event("done", turn.done_event()))
    except ConnectionResetError:
        raise
    except Exception as err:
        await resp.write(_event("error", error_body(from_exception(err))))
    finally:
        await stream.aclose()
    await resp.write_eof()
    return resp


# -- conversations ------------------------------------------------------------------------------
async def create_conversation(request: web.Request) -> web.Response:
    """``POST /api/conversations``: a new conversation with a model, owned by the caller's
    key."""
    gateway = request.app[GATEWAY]
    body = await read_body(request, ConversationCreate)
    provider, _ = await gateway.resolve(request, body.model)
    owner, most = gateway.owner(request), gateway.settings.max_conversations
    item = await gateway.conversations.create(Conversation(
        title=body.title, model=body.model, provider=provider.name,
        system_prompt=body.system_prompt, owner=owner), most=most)
    if item is None:
        raise ApiError(400, f"{'the key ' + repr(owner) if owner else 'the server'} keeps "
                            f"{most} conversations already ([server] max_conversations): "
                            "delete some (DELETE /api/conversations/{id}) or raise the "
                            "setting", code="conversations_limit_reached")
    return _json(item.model_dump(mode="json"), status=201)


#: ``GET /api/conversations``: the page size without ``limit``, and the largest allowed
PAGE_DEFAULT, PAGE_MOST = 100, 1000


async def list_conversations(request: web.Request) -> web.Response:
    """``GET /api/conversations[?limit=&after=]``: a page of the caller's conversations,
    without messages, most recently updated first; ``has_more`` and ``last_id`` (pass it as
    ``after``) lead to the next page."""
    limit = int_query(request, "limit", PAGE_DEFAULT, 1, PAGE_MOST)
    after = request.query.get("after") or None
    gateway = request.app[GATEWAY]
    page = await gateway.conversations.summaries(owner_filter(request), after=after,
                                                 limit=limit + 1)
    if page is None:
        raise ApiError(400, f"no conversation {str(after)[:64]!r} to list after (it was deleted, "
                            "or is not yours): list again without 'after'", param="after")
    key = request.get(KEY)
    shown = [c.public() for c in page[:limit] if key is None or key.allows(c.model)]
    return _json({"conversations": shown, "has_more": len(page) > limit,
                  "last_id": page[:limit][-1].id if page else None})


async def _conversation(request: web.Request) -> Conversation:
    return await request.app[GATEWAY].conversation(request, request.match_info["id"])


async def get_conversation(request: web.Request) -> web.Response:
    """``GET /api/conversations/{id}``: a conversation with its messages."""
    return _json((await _conversation(request)).model_dump(mode="json"))


async def update_conversation(request: web.Request) -> web.Response:
    """``PATCH /api/conversations/{id}``: change its ``title``, ``model`` or
    ``system_prompt``."""
    gateway = request.app[GATEWAY]
    item = await _conversation(request)
    changes = (await read_body(request, ConversationUpdate)).changes()
    if "model" in changes:
        provider, _ = await gateway.resolve(request, changes["model"])
        changes["provider"] = provider.name
    updated = await gateway.conversations.update(item.id, **changes)
    if updated is None:  # deleted meanwhile
        raise ApiError(404, f"no conversation {item.id!r}", code="conversation_not_found")
    return _json(updated.model_dump(mode="json"))


async def delete_conversation(request: web.Request) -> web.Response:
    """``DELETE /api/conversations/{id}``."""
    item = await _conversation(request)
    if not await request.app[GATEWAY].conversations.delete(item.id):
        raise ApiError(404, f"no conversation {item.id!r}", code="conversation_not_found")
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    """Register the REST routes."""
    r = app.router
    r.add_get("/health", server_health)
    r.add_get("/api/models", list_models)
    r.add_get("/api/models/search", search_models)
    r.add_get("/api/models/providers", list_providers)  # seed 003's paths
    r.add_get("/api/models/providers/health", providers_health)
    r.add_post("/api/models/refresh", refresh_models)
    r.add_get("/api/models/{provider}", provider_models)
    r.add_get("/api/models/{provider}/{model:.+}", get_model)
    r.add_get("/api/providers", list_providers)
    r.add_get("/api/providers/health", providers_health)
    r.add_get("/api/providers/{name}/health", provider_health)
    r.add_post("/api/chat", chat)
    r.add_post("/api/conversations", create_conversation)
    r.add_get("/api/conversations", list_conversations)
    r.add_get("/api/conversations/{id}", get_conversation)
    r.add_patch("/api/conversations/{id}", update_conversation)
    r.add_delete("/api/conversations/{id}", delete_conversation)
