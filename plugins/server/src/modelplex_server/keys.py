"""API keys kept in the store, and the routes about keys.

Keys come from two places: ``[[server.keys]]`` in the config file (hashes; typically the
admin key that bootstraps a deployment) and the conversation store, where ``modelplex keys
create`` (or ``POST /api/keys`` with an admin key) puts them, so every worker and replica
sharing the store knows them. Only the SHA-256 of a key is kept; the key is shown once, when
it is made. A store key is looked up once per
:data:`modelplex_server.keycache.CACHE_SECONDS` per process (a revoked key stops working
within that time everywhere, at once on the replica that revoked it).

Routes:

- ``GET /api/keys/me``: the caller's key: its models, limits, budget and spend this period.
- ``GET /api/keys``, ``POST /api/keys``, ``DELETE /api/keys/{name}``: list, make and revoke
  keys; they need an admin key (``admin = true``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator

from modelplex.http import dumps
from modelplex_server.budgets import Budget, period_bounds
from modelplex_server.conversations import (
    ConversationStore,
    KeyExistsError,
    MemoryConversationStore,
    StoredKey,
)
from modelplex_server.errors import ApiError
from modelplex_server.gateway import GATEWAY, KEY
from modelplex_server.schemas import Text, read_body
from modelplex_server.settings import KeyConfig, generate_key, hash_key

__all__ = ["KeyCreate", "add_routes", "describe_key", "make_key"]

class KeyCreate(BaseModel):
    """``POST /api/keys`` (and ``modelplex keys create``): a new key's name and limits."""

    model_config = ConfigDict(extra="forbid")

    name: Text = Field(min_length=1, max_length=200)
    models: list[Text] | None = None
    rate_limit: int | None = Field(default=None, gt=0, description="Requests per minute.")
    tpm: int | None = Field(default=None, gt=0, description="Tokens per minute.")
    concurrency: int | None = Field(default=None, gt=0, description="Requests at once.")
    budget: str | None = Field(default=None, description="'50/month', '2M tokens/day'.")
    admin: bool = False

    @field_validator("budget")
    @classmethod
    def _budget(cls, value: str | None) -> str | None:
        if value is not None:
            Budget.parse(value)
        return value


async def make_key(store: ConversationStore, spec: KeyCreate) -> tuple[str, StoredKey]:
    """Make a key: the key itself (to show once) and what the store keeps."""
    if isinstance(store, MemoryConversationStore):
        raise ApiError(400, "keys need a persistent store: set server.store (a SQLite file or "
                            "a postgresql:// URL)", code="store_required")
    secret = generate_key()
    key = KeyConfig(hash=hash_key(secret), **spec.model_dump())
    stored = StoredKey(key=key)
    await store.create_key(stored)
    return secret, stored


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=dumps(data), status=status, content_type="application/json")


def _admin(request: web.Request) -> KeyConfig:
    key: KeyConfig | None = request.get(KEY)
    if key is None or not key.admin:
        raise ApiError(403, "this needs an admin key (a key with admin = true)",
                       type="permission_error", code="admin_required")
    return key


async def describe_key(request: web.Request, key: KeyConfig) -> dict[str, Any]:
    """A key's settings, limits, budget and spend this period (no hash)."""
    gateway = request.app[GATEWAY]
    data: dict[str, Any] = key.model_dump(mode="json", exclude={"hash", "budget"})
    data["source"] = "config" if gateway.settings.key_for(key.hash) is not None else "store"
    data["budget"] = None
    if key.budget:
        budget = Budget.parse(key.budget)
        period, _, _ = period_bounds(budget.period)
        spend = await gateway.conversations.get_spend(key.name, period)
        data["budget"] = budget.describe(spend)
    return data


async def me(request: web.Request) -> web.Response:
    """``GET /api/keys/me``: the caller's key, its limits and spend."""
    key: KeyConfig | None = request.get(KEY)
    if key is None:
        raise ApiError(404, "this server has no API keys: requests are not limited per key",
                       code="no_keys")
    return _json(await describe_key(request, key))


async def list_keys(request: web.Request) -> web.Response:
    """``GET /api/keys`` (admin): the config's keys and the store's (revoked included)."""
    _admin(request)
    gateway = request.app[GATEWAY]
    out = [await describe_key(request, key) for key in gateway.settings.keys]
    for stored in await gateway.conversations.list_keys():
        entry = await describe_key(request, stored.key)
        entry.update(created_at=stored.created_at.isoformat(),
                     revoked_at=stored.revoked_at.isoformat() if stored.revoked_at else None)
        out.append(entry)
    return _json({"keys": out})


async def create_key(request: web.Request) -> web.Response:
    """``POST /api/keys`` (admin): a new key, shown once."""
    _admin(request)
    gateway = request.app[GATEWAY]
    spec = await read_body(request, KeyCreate)
    if any(k.name == spec.name for k in gateway.settings.keys):
        raise ApiError(409, f"a key named {spec.name!r} is in the config file",
                       code="key_exists", param="name")
    try:
        secret, stored = await make_key(gateway.conversations, spec)
    except KeyExistsError as err:
        raise ApiError(409, str(err), code="key_exists", param="name") from None
    return _json({"key": secret, **stored.public()}, status=201)


async def revoke_key(request: web.Request) -> web.Response:
    """``DELETE /api/keys/{name}`` (admin): revoke a store key."""
    _admin(request)
    gateway = request.app[GATEWAY]
    name = request.match_info["name"]
    if any(k.name == name for k in gateway.settings.keys):
        raise ApiError(400, f"the key {name!r} is in the config file: remove it there",
                       code="key_in_config")
    if not await gateway.conversations.revoke_key(name):
        raise ApiError(404, f"no key {name!r} to revoke", code="key_not_found")
    gateway.key_lookup.forget(name)
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    """Register the key routes."""
    r = app.router
    r.add_get("/api/keys/me", me)
    r.add_get("/api/keys", list_keys)
    r.add_post("/api/keys", create_key)
    r.add_delete("/api/keys/{name}", revoke_key)
