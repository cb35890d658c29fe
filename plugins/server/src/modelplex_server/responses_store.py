"""Stored responses of the Responses API, in the server's conversation store.

A chain of responses (``previous_response_id``) is one conversation. A response id
(``resp_CONVERSATION_COUNT_NONCE``, :func:`plan_id`) names the conversation and how many of
its messages the response ends at, and the response object rides in the metadata of its last
message (:func:`answer_message`). :func:`stored_response` finds one (404 in OpenAI's shape
otherwise), :func:`history_of` gives a follow-up its history, :func:`keep` stores a finished
response where its id says: appended to the chain's conversation when it continues its last
response, else in a new conversation with that history (of two follow-ups to one response
answered at once, the one finished second is not kept: the store checks that the chain was
not continued and appends in one step,
:meth:`modelplex_server.conversations.ConversationStore.append_at`).

A response that starts a conversation counts toward ``[server] max_conversations``: before
the model is asked, :func:`reserve` makes the conversation with the input, counted and stored
in one store step (a 400 ``conversations_limit_reached`` in OpenAI's shape at the cap), and
:func:`keep` appends the answer to it; :func:`release` removes it when no answer is kept.

A stored response's conversation holds at most ``[server] max_conversation_messages``
messages: :func:`check_length` refuses one that would pass it (a 400
``conversation_too_long`` naming ``previous_response_id``) before anything is stored or the
model is asked; the store step of :func:`keep` adds at the count the id names and counts
again, so the length checked is the length stored.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable
from typing import Any

from aiohttp import web

from modelplex.types import ChatMessage, MessageRole
from modelplex_server.conversations import Conversation, ConversationFullError
from modelplex_server.errors import ApiError
from modelplex_server.gateway import GATEWAY
from modelplex_server.responses_events import Answer, new_id
from modelplex_server.responses_items import ResponsesRequest

__all__ = ["answer_message", "check_length", "history_of", "keep", "plan_id", "release", "reserve",
           "stored_response"]

log = logging.getLogger("modelplex.server")


# -- the store -----------------------------------------------------------------------------------
def _split_id(response_id: str) -> tuple[str, int] | None:
    """The conversation id and message count a stored response's id names
    (``resp_CONVERSATION_COUNT_NONCE``)."""
    parts = response_id.split("_")
    if len(parts) != 4 or parts[0] != "resp" or not parts[1] or not parts[2].isdigit():
        return None
    return parts[1], int(parts[2])


async def stored_response(request: web.Request, response_id: str, *,
                  param: str | None = None) -> tuple[Conversation, int, dict[str, Any]]:
    """The conversation, message count and response object of a stored response; 404
    (OpenAI's shape) when there is none the caller may see."""
    gateway = request.app[GATEWAY]
    missing = ApiError(404, f"No response found with id {response_id!r}.",
                       code="response_not_found", param=param)
    split = _split_id(response_id)
    if split is None:
        raise missing
    try:
        conversation = await gateway.conversation(request, split[0])
    except ApiError:
        raise missing from None
    count = split[1]
    if not 0 < count <= len(conversation.messages):
        raise missing
    stored = conversation.messages[count - 1].metadata.get("response")
    if not isinstance(stored, dict) or stored.get("id") != response_id:
        raise missing
    return conversation, count, stored


async def history_of(request: web.Request, body: ResponsesRequest
                   ) -> tuple[list[ChatMessage], tuple[Conversation, int] | None]:
    if body.previous_response_id is None:
        return [], None
    conversation, count, _ = await stored_response(request, body.previous_response_id,
                                           param="previous_response_id")
    return list(conversation.messages[:count]), (conversation, count)


def check_length(request: web.Request, body: ResponsesRequest, new: list[ChatMessage],
                 chain: tuple[Conversation, int] | None) -> None:
    """A 400 in OpenAI's shape when a stored response (its chain's history, ``new`` input and
    the answer) would hold more than ``[server] max_conversation_messages`` messages."""
    most = request.app[GATEWAY].settings.max_conversation_messages
    held = chain[1] if chain is not None else 0
    if body.store and held + len(new) + 1 > most:
        raise ApiError(400, f"this response would make its conversation hold "
                            f"{held + len(new) + 1} messages (the chain's {held}, the input's "
                            f"{len(new)} and the answer), more than the server keeps in one "
                            f"([server] max_conversation_messages = {most}): start a new "
                            "conversation (send no previous_response_id, with a summary of "
                            "the chain as input if needed), or send store=false",
                       code="conversation_too_long",
                       param="previous_response_id" if chain is not None else "input")


def plan_id(body: ResponsesRequest, new_count: int,
             chain: tuple[Conversation, int] | None) -> tuple[str, bool]:
    """The id of the response about to be made, naming where it will be stored, and whether
    it will be appended to ``chain``'s conversation (it continues its last response) rather
    than start one."""
    if not body.store:
        return new_id("resp"), False
    nonce = uuid.uuid4().hex[:8]  # two follow-ups to one response get different ids
    if chain is not None and chain[1] == len(chain[0].messages):
        return f"resp_{chain[0].id}_{chain[1] + new_count}_{nonce}", True
    start = chain[1] if chain is not None else 0
    return f"resp_{uuid.uuid4().hex}_{start + new_count}_{nonce}", False


def _title(messages: list[ChatMessage]) -> str:
    first = next((m.content for m in messages if m.role is MessageRole.USER and m.content), "")
    return f"Responses API: {first[:60]}" if first else "Responses API"


async def reserve(request: web.Request, answer: Answer, new: list[ChatMessage],
                  chain: tuple[Conversation, int] | None, append: bool, provider: str) -> bool:
    """Make now the conversation a stored response that starts one will be kept in (its
    history and ``new`` input, without the answer), counted against the key's
    ``max_conversations`` in one store step; true if made (a response not stored, or
    continuing its chain's conversation, makes none). At the cap: a 400 naming ``store``."""
    if not answer.body.store or append:
        return False
    gateway = request.app[GATEWAY]
    history = list(chain[0].messages[:chain[1]]) if chain is not None else []
    owner, most = gateway.owner(request), gateway.settings.max_conversations
    made = await gateway.conversations.create(Conversation(
        id=answer.id.split("_")[1], title=_title([*history, *new]), model=answer.body.model,
        provider=provider, owner=owner, messages=[*history, *new]), most=most)
    if made is None:
        raise ApiError(400, f"{'the key ' + repr(owner) if owner else 'the server'} keeps "
                            f"{most} conversations already ([server] max_conversations), and "
                            "a stored response that does not continue the last response of "
                            "its chain starts one: send store=false, or delete some "
                            "(DELETE /v1/responses/{id}, DELETE /api/conversations/{id}), or "
                            "raise the setting", code="conversations_limit_reached",
                       param="store")
    return True


async def release(request: web.Request, answer: Answer) -> None:
    """Remove the conversation :func:`reserve` made for a response whose answer was not kept
    (the model failed, the client left)."""
    store = request.app[GATEWAY].conversations
    try:
        await asyncio.shield(store.delete(answer.id.split("_")[1]))
    except Exception:  # the store is down: the conversation stays, with the input only
        log.warning("the conversation of response %s could not be removed", answer.id,
                    exc_info=True)


async def keep(request: web.Request, answer: Answer, new: list[ChatMessage],
               chain: tuple[Conversation, int] | None, append: bool) -> None:
    """Store a finished response where its id (:func:`plan_id`) says it is: after ``new``
    (its input) in the chain's conversation when it continues it, else in the conversation
    :func:`reserve` made."""
    gateway = request.app[GATEWAY]
    store, most = gateway.conversations, gateway.settings.max_conversation_messages
    conversation_id = answer.id.split("_")[1]
    reply = answer_message(answer, answer.object())
    if append and chain is not None:
        if not await _add(store.append_at(conversation_id, chain[1], [*new, reply], most=most)):
            # another follow-up to the same response was stored meanwhile: this one's id
            # names a place that is taken, so it is not kept (GET gives 404)
            log.warning("response %s not stored: %s was continued meanwhile", answer.id,
                        answer.body.previous_response_id)
        return
    count = (chain[1] if chain is not None else 0) + len(new)
    if not await _add(store.append_at(conversation_id, count, [reply], most=most)):
        log.warning("response %s not stored: its conversation was changed or deleted while "
                    "it was answered", answer.id)


async def _add(adding: Awaitable[bool]) -> bool:
    """The store's answer; false also at ``max_conversation_messages`` (which
    :func:`check_length` refused before, at the same count)."""
    try:
        return await adding
    except ConversationFullError:
        return False


def answer_message(answer: Answer, stored: dict[str, Any]) -> ChatMessage:
    text = "".join(answer.texts)
    return ChatMessage(role=MessageRole.ASSISTANT, content=text or ("" if answer.calls
                                                                    else "(no answer)"),
                       tool_calls=tuple(answer.calls), metadata={"response": stored})
