"""The WebSocket chat of seed 003 (``GET /ws``).

Every frame is a JSON object with a ``type``. The client sends:

``{"type": "auth", "api_key": "..."}``
    first, when keys are configured and the client could not send an ``Authorization``
    header (browsers cannot);
``{"type": "send_message", "conversation_id": "...", "message": "..."}``
    a message to a conversation (or ``"model"`` and optional ``"history"`` instead of a
    conversation, and optional ``"options"``), answered by ``chunk`` events and then
    ``done`` (or ``error``);
``{"type": "stop", "conversation_id": "..."}``
    stops that answer: the upstream request is cancelled, what was received is kept in the
    conversation marked partial, and a ``stopped`` event follows;
``{"type": "ping"}``
    answered by ``pong``.

Every event the server sends carries the ``conversation_id`` (or, for a message without a
conversation, the client's ``request_id`` when it gave one). Each ``send_message`` is admitted
like an HTTP request, by the same :meth:`~modelplex_server.gateway.Gateway.check_rate` in its
own :func:`~modelplex_server.gateway.admissions` scope: the key's budget, requests and tokens
per minute, and requests at once (a slot held while its answer streams, not while the socket
is open). A refusal is an ``error`` event with ``status`` (429), ``retry_after`` (seconds) and
the error naming the limit; the socket stays open. At most :data:`MAX_ANSWERS` answers
stream at once on one socket (another is refused the same way). Every frame is validated by its
type's schema (:func:`modelplex_server.schemas.parse_frame`; nesting depth bounded before
parsing, also before authentication); a socket that must authenticate and sends nothing for
``header_timeout`` seconds is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import WSMsgType, web

from modelplex_server.chat import ChatTurn, chunk_event, start_turn
from modelplex_server.connections import CONNECTIONS
from modelplex_server.errors import ApiError, error_body, from_exception
from modelplex_server.gateway import GATEWAY, KEY, Gateway, admissions
from modelplex_server.schemas import (
    AuthFrame,
    PingFrame,
    SendMessageFrame,
    StopFrame,
    parse_frame,
)
from modelplex_server.settings import hash_key

__all__ = ["MAX_ANSWERS", "NEEDS_AUTH", "error_frame", "websocket"]

#: Most answers one socket streams at once (more are a 429 ``error`` event): a socket is one
#: connection, and must not open more upstream requests than a busy client's connections would.
MAX_ANSWERS = 16

#: Request key set by the auth middleware when the socket must authenticate in its first frame.
NEEDS_AUTH: web.RequestKey[bool] = web.RequestKey("modelplex_ws_needs_auth", bool)


def error_frame(err: ApiError) -> dict[str, Any]:
    """An ``error`` event's payload: the HTTP API's error body, its ``status`` and, when the
    HTTP answer would carry ``Retry-After``, ``retry_after`` (seconds)."""
    frame: dict[str, Any] = {"status": err.status, **error_body(err)}
    wait = err.headers.get("Retry-After", "")
    if wait.isdigit():
        frame["retry_after"] = int(wait)
    return frame


class _Session:
    def __init__(self, gateway: Gateway, request: web.Request,
                 ws: web.WebSocketResponse) -> None:
        self.gateway = gateway
        self.request = request
        self.ws = ws
        self.running: dict[str, asyncio.Task[None]] = {}

    async def send(self, data: dict[str, Any]) -> None:
        if not self.ws.closed:
            with contextlib.suppress(ConnectionResetError):
                await self.ws.send_str(json.dumps(data))

    async def error(self, err: BaseException, tag: dict[str, Any]) -> None:
        await self.send({"type": "error", **tag, **error_frame(from_exception(err))})

    async def send_message(self, frame: SendMessageFrame) -> None:
        tag = {"conversation_id": frame.conversation_id, "request_id": frame.request_id}
        tag = {k: v for k, v in tag.items() if v is not None}
        key = str(tag.get("conversation_id") or tag.get("request_id") or "")
        if key in self.running:
            await self.error(ApiError(409, f"an answer for {key!r} is already streaming; send "
                                           "a stop event first", code="busy"), tag)
            return
        if len(self.running) >= MAX_ANSWERS:
            await self.error(ApiError(429, f"{MAX_ANSWERS} answers are streaming on this "
                                           "socket already: wait for one to end or stop one "
                                           "(each answer is one request of the key's limits)",
                                      type="rate_limit_error", code="too_many_answers",
                                      headers={"Retry-After": "1"}), tag)
            return
        self.running[key] = asyncio.ensure_future(self._answer(frame, tag, key))

    async def _answer(self, frame: SendMessageFrame, tag: dict[str, Any], key: str) -> None:
        """One message: admitted by the key's limits and budget like an HTTP request (its
        slot is held until its answer ends), validated, then streamed."""
        turn: ChatTurn | None = None
        try:
            async with admissions():
                turn = await start_turn(self.gateway, self.request, frame)
                async for chunk in turn.stream():
                    event = chunk_event(chunk)
                    if event:
                        await self.send({"type": "chunk", **tag, **event})
                await self.send({"type": "done", **tag, **turn.done_event()})
        except asyncio.CancelledError:
            content = "".join(turn.parts) if turn is not None else ""
            await self.send({"type": "stopped", **tag, "content": content})
            raise
        except Exception as err:
            await self.error(err, tag)
        finally:
            self.running.pop(key, None)

    async def stop(self, frame: StopFrame) -> None:
        key = frame.conversation_id or frame.request_id or ""
        task = self.running.get(key)
        if task is None:
            await self.send({"type": "error", "conversation_id": key, **error_frame(ApiError(
                404, f"nothing is streaming for {key!r}", code="not_streaming"))})
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def close(self) -> None:
        tasks = list(self.running.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def _authenticate(gateway: Gateway, request: web.Request, frame: Any) -> bool:
    if not isinstance(frame, AuthFrame):
        return False
    key = await gateway.find_key(hash_key(frame.api_key))
    if key is None:
        return False
    request[KEY] = key
    return True


async def websocket(request: web.Request) -> web.WebSocketResponse:
    """``GET /ws``: the chat WebSocket."""
    gateway = request.app[GATEWAY]
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=gateway.settings.max_body_bytes)
    await ws.prepare(request)
    session = _Session(gateway, request, ws)
    needs_auth = bool(request.get(NEEDS_AUTH))
    settings = gateway.settings
    guard = request.app[CONNECTIONS]
    try:
        while not ws.closed:
            try:  # a socket that must authenticate gets the header timeout to do it
                # waiting for a frame with no answer streaming, the socket is as idle as a
                # keep-alive connection: at a connection cap it may give way
                idle = guard.receiving(request.transport) if not session.running \
                    else contextlib.nullcontext()
                with idle:
                    msg = await ws.receive(
                        timeout=settings.header_timeout if needs_auth else None)
            except TimeoutError:
                await ws.close(code=4408, message=b"authentication timeout")
                break
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED,
                            WSMsgType.ERROR):
                break
            if msg.type != WSMsgType.TEXT:  # binary: answered, not silently dropped
                await session.error(ApiError(400, "a binary frame is not an event: send each "
                                                  "event as a JSON text frame"), {})
                continue
            try:
                frame = parse_frame(msg.data, max_depth=settings.max_json_depth)
            except ApiError as err:
                await session.error(err, {})
                continue
            if needs_auth:
                if not await _authenticate(gateway, request, frame):
                    await session.error(ApiError(401, "authenticate first: send "
                                                      '{"type": "auth", "api_key": "..."}',
                                                 type="invalid_request_error",
                                                 code="invalid_api_key"), {})
                    await ws.close(code=4401, message=b"unauthorized")
                    break
                needs_auth = False
                await session.send({"type": "authenticated"})
                continue
            if isinstance(frame, SendMessageFrame):
                await session.send_message(frame)
            elif isinstance(frame, StopFrame):
                await session.stop(frame)
            elif isinstance(frame, PingFrame):
                await session.send({"type": "pong"})
            else:
                await session.error(ApiError(400, "this socket needs no authentication",
                                             param="type"), {})
    finally:
        await session.close()
    return ws


def add_routes(app: web.Application) -> None:
    """Register ``/ws``."""
    app.router.add_get("/ws", websocket)
