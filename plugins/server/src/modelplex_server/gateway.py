"""What every endpoint shares: settings, the model resolver, the registry, conversations, the
key checks and the concurrency limit. One :class:`Gateway` per application
(``app[GATEWAY]``)."""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from modelplex.chunks import StreamChunk, Usage
from modelplex.provider import Provider
from modelplex.registry import ModelRegistry
from modelplex.routing import MemoryState, RouterState
from modelplex_server.budgets import Budget, cost_of, period_bounds
from modelplex_server.conversations import (
    Conversation,
    ConversationStore,
    MemoryConversationStore,
)
from modelplex_server.errors import ApiError
from modelplex_server.keycache import KeyLookup
from modelplex_server.limits import (
    Admission,
    Limiter,
    MemoryLimiter,
    MeteredProvider,
    Refusal,
    limited,
)
from modelplex_server.resolve import ModelResolver
from modelplex_server.settings import KeyConfig, ServerSettings

__all__ = ["ADMISSIONS", "GATEWAY", "KEY", "Gateway", "admissions", "first_chunk"]

#: The app key under which the :class:`Gateway` is stored.
GATEWAY: web.AppKey[Gateway] = web.AppKey("modelplex_gateway")
#: The request key under which the caller's :class:`KeyConfig` is stored (absent: no keys).
KEY: web.RequestKey[KeyConfig] = web.RequestKey("modelplex_key", KeyConfig)
#: The admissions of the request being handled (released when its handler ends, see
#: :func:`admissions`).
ADMISSIONS: contextvars.ContextVar[list[Admission] | None] = contextvars.ContextVar(
    "modelplex_admissions", default=None)


@contextlib.asynccontextmanager
async def admissions() -> AsyncIterator[None]:
    """The scope of one model request's per-key limit slots: what :meth:`Gateway.check_rate`
    admits inside is released when the scope ends. An HTTP request is one scope (its handler,
    streams included: :func:`modelplex_server.app.limits_middleware`); on ``/ws`` each
    ``send_message`` is one, so a socket holds a slot only while an answer streams."""
    held: list[Admission] = []
    token = ADMISSIONS.set(held)
    try:
        yield
    finally:
        ADMISSIONS.reset(token)
        for admission in held:
            with contextlib.suppress(Exception):
                await admission.release()


class Gateway:
    """The server's shared parts; endpoints reach models only through :meth:`open_chat`."""

    def __init__(self, settings: ServerSettings, *, resolver: ModelResolver,
                 registry: ModelRegistry, conversations: ConversationStore | None = None,
                 state: RouterState | None = None, limits: Limiter | None = None) -> None:
        self.settings = settings
        self.resolver = resolver
        self.registry = registry
        self.conversations = conversations or MemoryConversationStore()
        self.state = state or MemoryState()
        self.limits = limits or MemoryLimiter()
        self.key_lookup = KeyLookup(self.conversations)
        self.in_flight = 0
        self.streams_open = 0

    # -- limits and keys ------------------------------------------------------------------
    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Count one model request in flight; 503 when ``max_concurrency`` are already."""
        if self.in_flight >= self.settings.max_concurrency:
            raise ApiError(503, f"the server is at its limit of "
                                f"{self.settings.max_concurrency} requests at once; retry "
                                "shortly", type="server_error", code="server_overloaded",
                           headers={"Retry-After": "1"})
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    async def find_key(self, hashed: str) -> KeyConfig | None:
        """The key whose hash is ``hashed``: from the config, else from the store (cached)."""
        return self.settings.key_for(hashed) or await self.key_lookup.find(hashed)

    async def check_rate(self, key: KeyConfig | None) -> None:
        """Admit one model request for ``key``: 429 ``budget_exceeded`` when the key spent its
        budget this period; 429 with ``Retry-After`` when it used up its requests or tokens
        per minute or has its ``concurrency`` requests open
        (:mod:`modelplex_server.limits`); the request's slot is freed when its handler ends."""
        if key is None:
            return
        if key.budget:
            await self.check_budget(key)
        if not limited(key):
            return
        result = await self.limits.admit(key)
        if isinstance(result, Refusal):
            raise self._refused(key, result)
        held = ADMISSIONS.get()
        if held is not None:
            held.append(result)
        else:  # not inside an admissions() scope (a direct call): nothing would release it
            await result.release()

    async def check_budget(self, key: KeyConfig) -> None:
        """429 ``budget_exceeded`` (naming when it resets) when ``key`` spent its budget."""
        assert key.budget is not None
        budget = Budget.parse(key.budget)
        period, _, end = period_bounds(budget.period)
        spend = await self.conversations.get_spend(key.name, period)
        used = budget.used(spend)
        if used < budget.amount:
            return
        resets = end.isoformat().replace("+00:00", "Z")
        wait = max(1, math.ceil((end - datetime.now(UTC)).total_seconds()))
        spent = f"{int(used)} tokens" if budget.unit == "tokens" else f"{used:.2f} USD"
        raise ApiError(429, f"budget exceeded: key {key.name!r} spent {spent} of its budget "
                            f"of {budget}; it resets at {resets}", type="budget",
                       code="budget_exceeded", headers={"Retry-After": str(wait)})

    async def record_spend(self, key: KeyConfig, provider: str, model: str,
                           usage: Usage) -> None:
        """Count an answer's tokens against ``key``'s tokens per minute and its spend."""
        if key.tpm:
            await self.limits.add_tokens(key, usage.total_tokens)
        if key.budget:
            budget = Budget.parse(key.budget)
            period, _, _ = period_bounds(budget.period)
            cost = cost_of(provider, model, usage, self.resolver.config) or 0.0
            await self.conversations.add_spend(key.name, period, usage.total_tokens, cost)

    @staticmethod
    def _refused(key: KeyConfig, refusal: Refusal) -> ApiError:
        wait = max(1, round(refusal.wait + 0.499))
        if refusal.reason == "tokens":
            what = f"token limit of {key.tpm} tokens per minute"
        elif refusal.reason == "concurrency":
            what = f"limit of {key.concurrency} requests at once"
        else:
            what = f"rate limit of {key.rate_limit} requests per minute"
        return ApiError(429, f"{what} reached for key {key.name!r}; retry in {wait} s",
                        type=refusal.reason, code="rate_limit_exceeded",
                        headers={"Retry-After": str(wait)})

    @staticmethod
    def check_model(request: web.Request | KeyConfig | None, model_id: str) -> None:
        """403 when the caller's key (a request's, or the key itself) may not use
        ``model_id``."""
        key = request.get(KEY) if isinstance(request, web.Request) else request
        if key is not None and not key.allows(model_id):
            raise ApiError(403, f"the key {key.name!r} may not use model {model_id!r}",
                           type="permission_error", code="model_not_allowed", param="model")

    # -- conversations ----------------------------------------------------------------------
    @staticmethod
    def owner(request: web.Request) -> str | None:
        """Who a conversation made by this request belongs to: the key's name (None without
        keys)."""
        key: KeyConfig | None = request.get(KEY)
        return key.name if key is not None else None

    @staticmethod
    def may_see(request: web.Request, conversation: Conversation) -> bool:
        """Whether the caller's key may see ``conversation``: its own (every key's for an
        admin key), and only on a model the key may use. Without keys: every one."""
        key: KeyConfig | None = request.get(KEY)
        if key is None:
            return True
        return (key.admin or conversation.owner == key.name) and key.allows(conversation.model)

    async def conversation(self, request: web.Request, conversation_id: str, *,
                           param: str | None = None) -> Conversation:
        """The conversation, if the caller may see it; else 404 (whether it exists or not)."""
        item = await self.conversations.get(conversation_id)
        if item is None or not self.may_see(request, item):
            raise ApiError(404, f"no conversation {conversation_id!r}",
                           code="conversation_not_found", param=param)
        return item

    # -- models -----------------------------------------------------------------------------
    async def resolve(self, request: web.Request | KeyConfig | None,
                      model_id: str) -> tuple[Provider, str]:
        """The provider and model name for ``model_id``, after the key's model check (the
        key of a request, or the key itself: a batch line runs for its batch's key)."""
        key = request.get(KEY) if isinstance(request, web.Request) else request
        self.check_model(key, model_id)
        provider, model = await self.resolver.resolve_model(model_id)
        if key is not None and (key.tpm or key.budget):  # count its tokens (and cost)
            name = provider.name

            async def record(usage: Usage, key: KeyConfig = key) -> None:
                await self.record_spend(key, name, model, usage)

            provider = MeteredProvider(provider, record)
        return provider, model

    def known_options(self, provider: Provider, values: Mapping[str, Any]) -> dict[str, Any]:
        """The options of ``values`` that ``provider`` understands (OpenAI clients send knobs
        such as ``presence_penalty`` that not every provider has)."""
        # the options class the provider validates with (a router's is its deployments')
        fields = type(provider.parse_options(None)).model_fields
        return {k: v for k, v in values.items() if v is not None and k in fields}


async def first_chunk(stream: AsyncGenerator[StreamChunk, None]
                      ) -> tuple[StreamChunk | None, AsyncIterator[StreamChunk]]:
    """Wait for a stream's first chunk (so errors before it become a proper HTTP status).

    Returns the chunk (None for an empty stream) and the stream to continue with.
    """
    try:
        chunk = await anext(stream)
    except StopAsyncIteration:
        return None, stream
    except BaseException:
        await stream.aclose()
        raise
    return chunk, stream
