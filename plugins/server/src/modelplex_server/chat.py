"""A message to a conversation (or to a model with a history), for ``POST /api/chat`` and
the WebSocket: validation, streaming through the provider, and keeping the exchange.

The exchange is added to the conversation when the answer is complete; when the caller goes
away or stops it, what was received is kept, marked ``partial``; when the provider fails, the
user's message is kept so nothing they typed is lost. When the store cannot keep a complete
exchange (its database is down), the stream ends with an error instead of ``done``.

A conversation holds at most ``[server] max_conversation_messages`` messages: a message that
would pass it (with its answer) is a 400 ``conversation_too_long`` before the model is asked,
and the store counts again where it adds the exchange (:func:`too_long`), so two messages at
once cannot pass it either: the one refused there stores nothing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator
from typing import Any

import attrs
from aiohttp import web

from modelplex.chunks import StreamChunk, Usage
from modelplex.errors import ProviderError
from modelplex.provider import ChatRequest, Provider
from modelplex.types import ChatMessage, MessageRole
from modelplex_server.conversations import (
    Conversation,
    ConversationFullError,
    answer_metadata,
)
from modelplex_server.errors import ApiError
from modelplex_server.gateway import KEY, Gateway
from modelplex_server.images import ANTHROPIC_IMAGES, check_image_count
from modelplex_server.openai_api import to_chat_messages
from modelplex_server.schemas import RestChatRequest, check_option_stop

__all__ = ["ChatTurn", "chunk_event", "start_turn", "too_long"]

log = logging.getLogger("modelplex.server")


@attrs.define
class ChatTurn:
    """One message and its answer in progress."""

    gateway: Gateway
    provider: Provider
    request: ChatRequest
    user: ChatMessage
    model_id: str
    conversation: Conversation | None = None
    replace: tuple[int, int] | None = None  # regenerate: these messages are replaced
    parts: list[str] = attrs.Factory(list)
    usage: Usage | None = None
    finish_reason: str | None = None
    route: Any = None  # who answered (a router's RouteInfo, on the first chunk)

    async def stream(self) -> AsyncGenerator[StreamChunk, None]:
        """The answer's chunks; the exchange is kept however the stream ends."""
        finished = failed = False
        try:
            with self.gateway.slot():
                stream = self.provider.stream_request(self.request)
                async with contextlib.aclosing(stream):
                    async for chunk in stream:
                        if chunk.route is not None:
                            self.route = chunk.route
                        if chunk.content:
                            self.parts.append(chunk.content)
                        if chunk.usage is not None:
                            self.usage = chunk.usage
                            self.finish_reason = chunk.finish_reason
                        yield chunk
            finished = True
        except ProviderError:
            failed = True
            raise
        finally:
            await self._keep(finished, failed)

    async def _keep(self, finished: bool, failed: bool) -> None:
        if self.conversation is None:
            return
        added = [self.user]
        content = "".join(self.parts)
        if content and not failed:
            added.append(ChatMessage(role=MessageRole.ASSISTANT, content=content,
                                     metadata=self.answer_metadata(finished)))
        store, most = self.gateway.conversations, self.gateway.settings.max_conversation_messages
        try:
            if self.replace is not None:  # what was added meanwhile stays, after it
                await store.replace(self.conversation.id, *self.replace, added)
            else:
                await store.append(self.conversation.id, added, most=most)
        except ConversationFullError as err:  # others were added meanwhile: nothing stored
            log.warning("the exchange of conversation %s was not stored: %s",
                        self.conversation.id, err)
            if finished:
                raise too_long(self.conversation.id, err.held, most) from None
        except Exception as err:
            log.warning("the exchange of conversation %s was not stored: %s",
                        self.conversation.id, err)
            if finished:  # the answer was sent, but it is not kept: say so, not "done"
                raise

    def answer_metadata(self, finished: bool) -> dict[str, Any]:
        """Who wrote the answer (the deployment that served it, else the model asked for)
        and its usage, kept with the message (``partial`` when the stream was cut)."""
        route = self.route
        model, provider = self.model_id, route.provider if route else self.provider.name
        if route is not None and route.model != route.provider:  # a named model's deployment
            model = f"{route.provider}:{route.provider_model}"
        return answer_metadata(model, provider, self.usage,
                               **({} if finished else {"partial": True}))

    def done_event(self) -> dict[str, Any]:
        """What the last event tells: finish reason, usage, cost and the conversation."""
        usage = self.usage
        return {"finish_reason": self.finish_reason or "stop", "model": self.model_id,
                "conversation_id": self.conversation.id if self.conversation else None,
                "usage": {"prompt_tokens": usage.prompt_tokens,
                          "completion_tokens": usage.completion_tokens,
                          "estimated": usage.estimated} if usage else None,
                "cost": self._cost()}

    def _cost(self) -> dict[str, Any] | None:
        """What the answer cost (modelplex.cost), priced with the server's config."""
        if self.usage is None:
            return None
        from modelplex.cost import cost_of

        route = self.route
        provider = route.provider if route is not None else self.provider.name
        model = route.provider_model if route is not None else self.request.model
        return cost_of(provider, model, self.usage,
                       config=self.gateway.resolver.config).to_dict()


def too_long(conversation_id: str, held: int, most: int) -> ApiError:
    """The 400 of a message to a conversation that has no room for it and its answer."""
    return ApiError(400, f"conversation {conversation_id!r} holds {held} messages and a message "
                         "adds 2 (it and its answer), more than the server keeps in one "
                         f"conversation ([server] max_conversation_messages = {most}): start "
                         "a new conversation (POST /api/conversations) and send it there",
                    code="conversation_too_long", param="conversation_id")


def chunk_event(chunk: StreamChunk) -> dict[str, Any] | None:
    """A chunk as an event payload (None when it carries nothing to show)."""
    event: dict[str, Any] = {}
    if chunk.content:
        event["content"] = chunk.content
    if chunk.reasoning:
        event["reasoning"] = chunk.reasoning
    if chunk.tool_calls:
        event["tool_calls"] = [call.to_dict() for call in chunk.tool_calls]
    return event or None


async def start_turn(gateway: Gateway, request: web.Request, body: RestChatRequest) -> ChatTurn:
    """Validate a chat message and prepare its turn (every input error is raised here)."""
    conversation = None
    history: list[ChatMessage] = []
    system = body.system_prompt
    if body.conversation_id:
        conversation = await gateway.conversation(request, body.conversation_id,
                                                  param="conversation_id")
        model_id = body.model or conversation.model
        history = list(conversation.messages)
        system = system or conversation.system_prompt
    elif body.model:
        model_id = body.model
        history = to_chat_messages(body.history, field="history")
    else:
        raise ApiError(400, "give conversation_id or model", param="model")
    replace = None
    if body.regenerate:
        if conversation is None:
            raise ApiError(400, "regenerate needs a conversation_id", param="regenerate")
        users = [i for i, m in enumerate(history) if m.role == MessageRole.USER]
        if not users:
            raise ApiError(400, "the conversation has no message to answer again",
                           param="regenerate")
        replace = (users[-1], len(history))
        user, history = history[users[-1]], history[:users[-1]]
    elif body.message is None:
        raise ApiError(400, "'message' is required", param="message")
    elif conversation is not None:
        most = gateway.settings.max_conversation_messages
        if len(history) + 2 > most:
            raise too_long(conversation.id, len(history), most)
    await gateway.check_rate(request.get(KEY))
    provider, model = await gateway.resolve(request, model_id)
    if not body.regenerate:
        try:
            user = ChatMessage.user(body.message or "")
        except ValueError as err:
            raise ApiError(400, f"message: {err}", param="message") from None
    messages = ([ChatMessage.system(system)] if system else []) + history + [user]
    check_option_stop(body.options)
    check_image_count(messages, ANTHROPIC_IMAGES, "history")
    options = dict(body.options or {})
    chat = provider.build_request(messages, model=model, options=options)
    chat.conversation_id = conversation.id if conversation is not None else None  # recording
    return ChatTurn(gateway=gateway, provider=provider, request=chat, user=user,
                    model_id=model_id, conversation=conversation, replace=replace)
