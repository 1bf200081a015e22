"""``WS /v1/conversations/{id}/ws``: JSON frames both ways (DESIGN section 4)."""

from __future__ import annotations

import asyncio
import json
from contextlib import aclosing, suppress
from typing import Annotated, Any

import structlog
from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect
from litestar.params import Parameter

from mvm_chat.api.auth import CLIENT_ROLES, principal_of, resolve_principal
from mvm_chat.api.protection import IdleClock, protection_of
from mvm_chat.api.turns import error_frame, frames, turn_events
from mvm_chat.cache.pubsub import Subscription
from mvm_chat.chat.handoff import conversation_channel
from mvm_chat.chat.prepare import prepare_turn
from mvm_chat.chat.services import Services
from mvm_chat.chat.turns import TurnRequest
from mvm_chat.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from mvm_chat.store.conversations import get_conversation
from mvm_chat.store.models import new_id

log = structlog.get_logger(__name__)
MAX_FRAME_CHARS = 200_000
PUSHED_EVENTS = ("agent_message", "handoff")
"""Events of the conversation's channel that reach the user's socket as frames."""


def _turn_request(socket: WebSocket[Any, Any, Any], conversation_id: str, raw: str) -> TurnRequest:
    """Validate a client frame; raises :class:`InvalidInput` naming the bad field."""
    if len(raw) > MAX_FRAME_CHARS:
        raise InvalidInput("frame", f"larger than {MAX_FRAME_CHARS} characters")
    try:
        message = json.loads(raw)
    except json.JSONDecodeError:
        raise InvalidInput("frame", "not valid JSON") from None
    if not isinstance(message, dict):
        raise InvalidInput("frame", "must be a JSON object")
    kind = message.get("type")
    if kind != "message":
        raise InvalidInput("type", f"unknown frame type {kind!r} (expected 'message')")
    content = message.get("content")
    if not isinstance(content, str) or not content.strip():
        raise InvalidInput("content", "must be a non-empty string")
    model = message.get("model", "auto")
    if not isinstance(model, str) or not model:
        raise InvalidInput("model", "must be a model name or 'auto'")
    max_tokens = message.get("max_tokens")
    if max_tokens is not None and (
        not isinstance(max_tokens, int)
        or isinstance(max_tokens, bool)
        or not 1 <= max_tokens <= 8192
    ):
        raise InvalidInput("max_tokens", "must be an integer between 1 and 8192")
    return TurnRequest(
        principal=principal_of(socket),
        text=content,
        request_id=new_id(),
        conversation_id=conversation_id,
        model=model,
        max_tokens=max_tokens,
    )


async def _push(
    socket: WebSocket[Any, Any, Any], events: Subscription, sending: asyncio.Lock, idle: IdleClock
) -> None:
    """Forward handoff events to the socket until it closes (or this task is cancelled)."""
    try:
        async for event in events:
            if event.get("type") in PUSHED_EVENTS:
                async with sending:
                    await socket.send_json(event)
                idle.touch()
    except WebSocketDisconnect:
        return
    except Exception as exc:
        log.warning("ws.push_failed", error=type(exc).__name__)


@websocket("/v1/conversations/{conversation_id:str}/ws")
async def conversation_socket(
    socket: WebSocket[Any, Any, Any],
    services: Services,
    conversation_id: Annotated[str, Parameter(max_length=64)],
) -> None:
    """Chat over a WebSocket: send ``{"type": "message", "content": ...}``, receive frames."""
    await socket.accept()
    try:
        principal = await resolve_principal(socket)
    except Unauthorized as exc:
        await socket.send_json(error_frame(exc))
        await socket.close(code=4401, reason="unauthorized")
        return
    if principal.role not in CLIENT_ROLES:
        await socket.send_json(error_frame(Forbidden("this route is not open to this key")))
        await socket.close(code=4403, reason="forbidden")
        return
    socket.scope["user"] = principal
    async with services.db.session() as session:
        found = await get_conversation(session, principal.tenant_id, conversation_id)
    if found is None:
        await socket.send_json(error_frame(NotFound(f"conversation {conversation_id!r} not found")))
        await socket.close(code=4404, reason="conversation not found")
        return
    sending = asyncio.Lock()  # turn frames and pushed events never interleave mid-frame
    idle = IdleClock(services.settings.limits.websocket_idle_s)
    async with services.pubsub.subscribe(conversation_channel(conversation_id)) as events:
        pusher = asyncio.create_task(_push(socket, events, sending, idle))
        try:
            await _serve(socket, services, conversation_id, sending, idle)
        finally:
            pusher.cancel()
            with suppress(asyncio.CancelledError):
                await pusher


async def _serve(
    socket: WebSocket[Any, Any, Any],
    services: Services,
    conversation_id: str,
    sending: asyncio.Lock,
    idle: IdleClock,
) -> None:
    """Answer the client's message frames, one turn at a time, until it goes away or stays
    idle for ``limits.websocket_idle_s``."""
    protection = protection_of(socket)

    async def send(item: dict[str, Any]) -> None:
        async with sending:
            await socket.send_json(item)

    try:
        while True:
            raw = await idle.receive_text(socket)
            if raw is None:
                await send({"type": "error", "code": 408, "detail": "closed: idle too long"})
                await socket.close(code=4408, reason="idle")
                return
            try:
                request = _turn_request(socket, conversation_id, raw)
                structlog.contextvars.bind_contextvars(request_id=request.request_id)
                await protection.count(request.principal)
                prepared = await prepare_turn(services, request)
                protection.take_slot(request.principal)
            except Exception as exc:
                await send(error_frame(exc))
                continue
            try:
                async with aclosing(frames(turn_events(services, prepared))) as stream:
                    async for item in stream:
                        await send(item)
            finally:
                protection.release_slot(request.principal)
            idle.touch()
    except WebSocketDisconnect:
        log.info("ws.closed", conversation_id=conversation_id)
