"""The model routes of the Ollama-compatible API (``/ollama``): what Ollama clients call to
list, inspect, load and manage models, answered from modelplex's providers.

``GET|HEAD /ollama/`` and ``/ollama`` (``Ollama is running``: the ollama CLI checks it before
every command), ``GET /ollama/api/tags``, ``POST
/ollama/api/show``, ``GET /ollama/api/ps`` (always empty: modelplex does not keep Ollama's
loaded-model list), ``POST /ollama/api/pull`` (a model the server serves is already there:
``{"status": "success"}``; an unknown one is a 404), and the management routes that change
models, which modelplex does not do (``push``, ``create``, ``copy``, ``delete``,
``blobs/DIGEST``): 501 with ``{"error": ...}`` naming what to do instead. Capabilities are
named as Ollama names them (``completion``, ``embedding``, ``tools``, ``vision``,
``thinking``). Also
:func:`resolve`, the model lookup of every Ollama route, whose unknown model is Ollama's 404
``model "NAME" not found``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from modelplex.errors import ConfigurationError, ModelNotFoundError, UnknownProviderError
from modelplex.http import dumps
from modelplex.provider import Provider
from modelplex.types import ModelInfo
from modelplex_server.errors import ApiError
from modelplex_server.gateway import GATEWAY, KEY
from modelplex_server.schemas import _Body, read_body

__all__ = ["add_model_routes", "not_found", "resolve"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
NDJSON = "application/x-ndjson"


class OllamaShow(_Body):
    """``POST /api/show``."""

    model: str


class OllamaPull(_Body):
    """``POST /api/pull``."""

    model: str
    stream: bool = True


def not_found(model_id: str, reason: str) -> ApiError:
    """Ollama's 404 for a model it does not have (``model "NAME" not found``), with why."""
    return ApiError(404, f'model "{model_id}" not found: {reason} (GET /ollama/api/tags '
                         "lists the models served)", code="model_not_found", param="model")


async def resolve(request: web.Request, model_id: str) -> tuple[Provider, str]:
    """The provider and model name for ``model_id`` (after the key's checks), or Ollama's 404
    when no provider or named model serves it."""
    gateway = request.app[GATEWAY]
    try:
        return await gateway.resolve(request, model_id)
    except (UnknownProviderError, ModelNotFoundError) as err:
        raise not_found(model_id, str(err)) from None
    except ConfigurationError as err:
        if model_id and ":" not in model_id \
                and model_id not in gateway.resolver.named_models:
            raise not_found(model_id, str(err)) from None
        raise


#: modelplex's capability names (providers use several) as Ollama's (``types/model/capability.go``)
_CAPABILITIES = {"chat": "completion", "completion": "completion", "embeddings": "embedding",
                 "embedding": "embedding", "tools": "tools", "vision": "vision",
                 "images": "vision", "reasoning": "thinking", "thinking": "thinking",
                 "insert": "insert", "audio": "audio"}


def capabilities(info: ModelInfo) -> list[str]:
    """The model's capabilities in Ollama's words, each once (those Ollama has no word for,
    such as ``json``, are left out)."""
    named = (_CAPABILITIES.get(c) for c in info.capabilities)
    return list(dict.fromkeys(c for c in named if c))


def _tag(info: ModelInfo) -> dict[str, Any]:
    return {"name": info.id, "model": info.id,
            "modified_at": (info.modified or datetime.fromtimestamp(0, UTC)).isoformat(),
            "size": info.size_bytes or 0, "digest": info.digest or "",
            "details": {"format": "gguf", "family": info.family or "",
                        "families": [info.family] if info.family else None,
                        "parameter_size": info.parameter_size or "",
                        "quantization_level": info.quantization or ""},
            "capabilities": capabilities(info)}


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=dumps(body), status=status, content_type="application/json")


async def tags(request: web.Request) -> web.StreamResponse:
    """``GET /ollama/api/tags``: every model id the caller may use."""
    gateway = request.app[GATEWAY]
    key = request.get(KEY)
    infos = [m.model_copy(update={"id": m.name}) if m.provider == "named" else m
             for m in await gateway.registry.list_models()]  # named models by their name
    return _json({"models": [_tag(m) for m in infos if key is None or key.allows(m.id)]})


async def show(request: web.Request) -> web.StreamResponse:
    """``POST /ollama/api/show``."""
    gateway = request.app[GATEWAY]
    body = await read_body(request, OllamaShow)
    provider, model = await resolve(request, body.model)
    if body.model in gateway.resolver.named_models:
        info = ModelInfo(id=body.model, name=body.model, provider="named",
                         details={"target": gateway.resolver.named_models[body.model]})
    else:
        try:
            info = await gateway.registry.get_model(provider.name, model)
        except ModelNotFoundError as err:
            raise not_found(body.model, str(err)) from None
    tag = _tag(info)
    model_info: dict[str, Any] = {"general.architecture": info.family or ""}
    if info.family and info.context_length:
        model_info[f"{info.family}.context_length"] = info.context_length
    if info.parameter_count:
        model_info["general.parameter_count"] = info.parameter_count
    return _json({"details": tag["details"], "model_info": model_info,
                  "capabilities": tag["capabilities"], "modified_at": tag["modified_at"]})


async def ps(request: web.Request) -> web.StreamResponse:
    """``GET /ollama/api/ps``: no models (modelplex keeps no Ollama loaded-model list)."""
    return _json({"models": []})


async def pull(request: web.Request) -> web.StreamResponse:
    """``POST /ollama/api/pull``: a model the server serves is there already (success); an
    unknown one is the 404 of :func:`resolve` (modelplex downloads nothing)."""
    body = await read_body(request, OllamaPull)
    await resolve(request, body.model)
    done = dumps({"status": "success"})
    if body.stream:
        return web.Response(body=done + b"\n", content_type=NDJSON)
    return web.Response(body=done, content_type="application/json")


def _refusal(what: str) -> Handler:
    async def refuse(request: web.Request) -> web.StreamResponse:
        raise ApiError(501, f"modelplex does not {what}: its models come from its providers "
                            "(run `modelplex models` to see them, configure named models in "
                            "the config file)")

    refuse.__doc__ = f"Refused with a 501: modelplex does not {what}."
    return refuse


async def root(request: web.Request) -> web.StreamResponse:
    """``GET|HEAD /ollama/``: ``Ollama is running`` (what Ollama answers; clients probe it)."""
    return web.Response(text="Ollama is running")


def add_model_routes(app: web.Application, wrap: Callable[[Handler], Handler],
                     prefix: str) -> None:
    """Register the model routes under ``prefix``, each handler wrapped by ``wrap``."""
    r = app.router
    r.add_get(prefix, wrap(root))  # HEAD too: the ollama CLI's heartbeat is HEAD /
    r.add_get(prefix + "/", wrap(root))
    r.add_get(prefix + "/api/tags", wrap(tags))
    r.add_post(prefix + "/api/show", wrap(show))
    r.add_get(prefix + "/api/ps", wrap(ps))
    r.add_post(prefix + "/api/pull", wrap(pull))
    r.add_post(prefix + "/api/push", wrap(_refusal("push models")))
    r.add_post(prefix + "/api/create", wrap(_refusal("create models")))
    r.add_post(prefix + "/api/copy", wrap(_refusal("copy models")))
    r.add_delete(prefix + "/api/delete", wrap(_refusal("delete models")))
    r.add_post(prefix + "/api/blobs/{digest}", wrap(_refusal("store blobs")))
    r.add_head(prefix + "/api/blobs/{digest}", wrap(_refusal("store blobs")))
