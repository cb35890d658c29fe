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
conversation, the client's ``request_id`` when it gave one).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import WSMsgType, web
from pydantic import ValidationError

from modelplex_server.chat import chunk_event, start_turn
from modelplex_server.errors import ApiError, error_body, from_exception
from modelplex_server.gateway import GATEWAY, KEY, Gateway
from modelplex_server.schemas import RestChatRequest, validation_error
from modelplex_server.settings import hash_key

__all__ = ["NEEDS_AUTH", "websocket"]

#: Request key set by the auth middleware when the socket must authenticate in its first frame.
NEEDS_AUTH: web.RequestKey[bool] = web.RequestKey("modelplex_ws_needs_auth", bool)


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
        await self.send({"type": "error", **tag, **error_body(from_exception(err))})

    async def send_message(self, frame: dict[str, Any]) -> None:
        tag = {"conversation_id": frame.get("conversation_id"),
               "request_id": frame.get("request_id")}
        tag = {k: v for k, v in tag.items() if v is not None}
        key = str(tag.get("conversation_id") or tag.get("request_id") or "")
        if key in self.running:
            await self.error(ApiError(409, f"an answer for {key!r} is already streaming; send "
                                           "a stop event first", code="busy"), tag)
            return
        try:
            body = RestChatRequest.model_validate_json(json.dumps(
                {k: v for k, v in frame.items() if k not in ("type", "request_id")}))
            turn = await start_turn(self.gateway, self.request, body)
        except ValidationError as err:
            await self.error(validation_error(err), tag)
            return
        except Exception as err:
            await self.error(err, tag)
            return

        async def run() -> None:
            try:
                async for chunk in turn.stream():
                    event = chunk_event(chunk)
                    if event:
                        await self.send({"type": "chunk", **tag, **event})
                await self.send({"type": "done", **tag, **turn.done_event()})
            except asyncio.CancelledError:
                await self.send({"type": "stopped", **tag, "content": "".join(turn.parts)})
                raise
            except Exception as err:
                await self.error(err, tag)
            finally:
                self.running.pop(key, None)

        self.running[key] = asyncio.ensure_future(run())

    async def stop(self, frame: dict[str, Any]) -> None:
        key = str(frame.get("conversation_id") or frame.get("request_id") or "")
        task = self.running.get(key)
        if task is None:
            await self.send({"type": "error", "conversation_id": key, **error_body(ApiError(
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


def _authenticate(gateway: Gateway, request: web.Request, frame: dict[str, Any]) -> bool:
    key = gateway.settings.key_for(hash_key(str(frame.get("api_key") or "")))
    if frame.get("type") != "auth" or key is None:
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
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                frame = json.loads(msg.data)
                if not isinstance(frame, dict):
                    raise ValueError("not an object")
            except ValueError:
                await session.error(ApiError(400, "each frame must be a JSON object with a "
                                                  "'type'"), {})
                continue
            if needs_auth:
                if not _authenticate(gateway, request, frame):
                    await session.error(ApiError(401, "authenticate first: send "
                                                      '{"type": "auth", "api_key": "..."}',
                                                 type="invalid_request_error",
                                                 code="invalid_api_key"), {})
                    await ws.close(code=4401, message=b"unauthorized")
                    break
                needs_auth = False
                await session.send({"type": "authenticated"})
                continue
            kind = frame.get("type")
            if kind == "send_message":
                await session.send_message(frame)
            elif kind == "stop":
                await session.stop(frame)
            elif kind == "ping":
                await session.send({"type": "pong"})
            else:
                await session.error(ApiError(400, f"unknown event type {kind!r}: send "
                                                  "send_message, stop or ping"), {})
    finally:
        await session.close()
    return ws


def add_routes(app: web.Application) -> None:
    """Register ``/ws``."""
    app.router.add_get("/ws", websocket)
