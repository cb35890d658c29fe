"""OpenAI's Responses API: ``POST /v1/responses``, ``GET`` and ``DELETE /v1/responses/{id}``.

What Codex CLI and the ``openai`` SDK's ``client.responses`` speak. Requests go the way every
route's do (the gateway resolves the model, the provider validates the request, keys and
limits apply); this module translates:

* ``input`` (a string, or items: messages with ``input_text``/``input_image`` parts,
  ``function_call`` and ``function_call_output``; ``reasoning`` items are skipped) and
  ``instructions`` become modelplex messages; function ``tools`` and ``tool_choice`` become
  the request's tools; ``text.format`` (``json_object``, ``json_schema``) becomes its
  structured-output request; ``max_output_tokens``, ``temperature``, ``top_p``, ``user``
  become options.
* The answer is a ``response`` object whose ``output`` holds a ``reasoning`` item (a thinking
  model's reasoning, as ``reasoning_text``), a ``message`` item and one ``function_call``
  item per tool call; with ``stream: true`` it arrives as the typed events
  (``response.created``, ``response.in_progress``, ``response.output_item.added``,
  ``response.content_part.added``, ``response.output_text.delta``/``.done``,
  ``response.function_call_arguments.delta``/``.done``, ``response.output_item.done``,
  ``response.completed`` or ``response.incomplete``), and a failure after the stream began
  is ``response.failed``.
* ``store`` (default true) keeps the response in the server's conversation store: a chain of
  responses (``previous_response_id``) is one conversation, a response id
  (``resp_CONVERSATION_COUNT_NONCE``) names the conversation and how many of its messages the
  response ends at, and the response object rides in the metadata of its last message. A
  follow-up continues from there (from an earlier response of the chain it starts a new
  conversation with that history; of two follow-ups to one response answered at once, the
  one finished second is not kept). ``instructions`` are not carried over, as with OpenAI.

The modules: :mod:`~modelplex_server.responses_items` (request bodies, input to messages),
:mod:`~modelplex_server.responses_events` (the response object and its stream events),
:mod:`~modelplex_server.responses_store` (stored responses); this one has the handlers.
"""

from __future__ import annotations

from aiohttp import web

from modelplex.http import dumps
from modelplex.provider import ChatRequest
from modelplex.types import MessageRole
from modelplex_server.errors import ApiError
from modelplex_server.gateway import GATEWAY, KEY
from modelplex_server.images import OPENAI_IMAGES, check_image_count
from modelplex_server.relay import answer_streamed, answer_whole, field_message
from modelplex_server.responses_events import Answer, stream_events
from modelplex_server.responses_items import (
    ResponsesRequest,
    items_of,
    options_of,
    refuse_unsupported,
    response_format_of,
    to_chat_messages,
    tools_of,
    untag,
)
from modelplex_server.responses_store import (
    check_length,
    history_of,
    keep,
    plan_id,
    release,
    reserve,
    stored_response,
)
from modelplex_server.schemas import check_tool_choice, read_body

__all__ = ["add_routes", "create_response", "delete_response", "get_response",
           "list_input_items"]


# -- handlers ------------------------------------------------------------------------------------
async def create_response(request: web.Request) -> web.StreamResponse:
    """``POST /v1/responses``."""
    gateway = request.app[GATEWAY]
    try:
        body = await read_body(request, ResponsesRequest)
    except ApiError as err:
        raise untag(err) from None
    refuse_unsupported(body)
    await gateway.check_rate(request.get(KEY))
    history, chain = await history_of(request, body)
    new = to_chat_messages(body, history)
    check_length(request, body, new, chain)
    check_image_count(new, OPENAI_IMAGES, "input")
    tools, tool_choice = tools_of(body)
    check_tool_choice(tools, tool_choice)
    provider, model = await gateway.resolve(request, body.model)
    system = [field_message("instructions", role=MessageRole.SYSTEM, content=body.instructions)] \
        if body.instructions and body.instructions.strip() else []
    chat: ChatRequest = provider.build_request(
        [*system, *history, *new], model=model, options=options_of(gateway, provider, body),
        tools=tools, tool_choice=tool_choice, response_format=response_format_of(body))
    fmt = body.text.format if body.text else None
    if fmt is not None and fmt.strict is not None and chat.response_format is not None:
        chat.response_format["strict"] = fmt.strict  # as chat completions keep it
    response_id, append = plan_id(body, len(new) + 1, chain)
    answer = Answer(response_id, body)
    if body.store:  # recording files the exchange under the chain's conversation
        chat.conversation_id = response_id.split("_")[1]

    kept = False

    async def store() -> None:
        nonlocal kept
        if body.store:
            await keep(request, answer, new, chain, append)
        kept = True

    reserved = await reserve(request, answer, new, chain, append, provider.name)
    try:
        if not body.stream:
            answer.from_reply(await answer_whole(gateway, provider, chat))
            await store()
            return web.Response(body=dumps(answer.object()), content_type="application/json")
        return await answer_streamed(gateway, provider, chat, lambda rest, first: stream_events(
            request, rest, first, answer, store))
    finally:
        if reserved and not kept:
            await release(request, answer)


async def get_response(request: web.Request) -> web.Response:
    """``GET /v1/responses/{id}``: a stored response (``stream=true``, a replay of a
    background response's events, is a 400: stored responses are finished)."""
    _, _, stored = await stored_response(request, request.match_info["id"])
    if request.query.get("stream", "false").lower() not in ("false", "0", ""):
        raise ApiError(400, "stream: a stored response is not replayed as events (it is "
                            "finished): retrieve it without stream", param="stream")
    return web.Response(body=dumps(stored), content_type="application/json")


async def list_input_items(request: web.Request) -> web.Response:
    """``GET /v1/responses/{id}/input_items``: the items a stored response was asked with
    (its own input, not the earlier responses' of its chain); ``order`` (``desc`` by
    default), ``after`` (an item id) and ``limit`` (1 to 100, default 20) page them."""
    conversation, count, _ = await stored_response(request, request.match_info["id"])
    start = max((i + 1 for i, m in enumerate(conversation.messages[:count - 1])
                 if "response" in m.metadata), default=0)
    items = [item for m in conversation.messages[start:count - 1] for item in items_of(m)]
    query = request.query
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise ApiError(400, f"order must be asc or desc (got {order[:40]!r})", param="order")
    if order == "desc":
        items.reverse()
    after = query.get("after")
    if after is not None:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    try:
        limit = int(query.get("limit", "20"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100:
        raise ApiError(400, "limit must be an integer from 1 to 100 (got "
                            f"{query.get('limit', '')[:40]!r})", param="limit")
    page = items[:limit]
    return web.Response(body=dumps({
        "object": "list", "data": page, "has_more": len(items) > limit,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None}), content_type="application/json")


async def delete_response(request: web.Request) -> web.Response:
    """``DELETE /v1/responses/{id}``: forget a stored response (the conversation it ends keeps
    its messages for the responses after it; without any, the conversation goes too)."""
    response_id = request.match_info["id"]
    conversation, count, _ = await stored_response(request, response_id)
    store = request.app[GATEWAY].conversations
    deleted = web.Response(body=dumps({"id": response_id, "object": "response.deleted",
                                       "deleted": True}), content_type="application/json")
    alone = count == len(conversation.messages) and not any(
        "response" in m.metadata for m in conversation.messages[:count - 1])
    # its conversation goes with it, unless a follow-up was added meanwhile (one store step)
    if alone and await store.delete_at(conversation.id, count):
        return deleted
    message = conversation.messages[count - 1]
    await store.replace(conversation.id, count - 1, count, [message.model_copy(
        update={"metadata": {k: v for k, v in message.metadata.items() if k != "response"}})])
    return deleted


def add_routes(app: web.Application) -> None:
    """Register ``/v1/responses``, ``/v1/responses/{id}`` and its ``input_items``."""
    app.router.add_post("/v1/responses", create_response)
    app.router.add_get("/v1/responses/{id}", get_response)
    app.router.add_delete("/v1/responses/{id}", delete_response)
    app.router.add_get("/v1/responses/{id}/input_items", list_input_items)
