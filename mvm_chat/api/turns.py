"""Running a turn from a handler: prepare first (errors before any byte), then stream frames."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

import structlog
from litestar import Request
from litestar.enums import MediaType
from litestar.response import Stream
from litestar.response.base import ASGIResponse
from litestar.serialization import encode_json
from litestar.types import ASGIApp

from mvm_chat.api.errors import problem_for
from mvm_chat.api.idempotency import claim_for, replay_of, replayed
from mvm_chat.chat.pipeline import run_turn
from mvm_chat.chat.prepare import prepare_turn
from mvm_chat.chat.services import Services
from mvm_chat.chat.turns import PreparedTurn, Routed, TurnEvent, TurnRequest, TurnResult
from mvm_chat.engines.base import TokenDelta
from mvm_chat.store import idempotency

log = structlog.get_logger(__name__)


async def turn_events(
    services: Services, prepared: PreparedTurn
) -> AsyncGenerator[TurnEvent, None]:
    """Run a turn; with an ``Idempotency-Key``, keep its reply for replays, or release the
    key when the turn fails before anything is stored."""
    claim_id = prepared.request.idempotency_id
    try:
        async with aclosing(run_turn(services, prepared)) as events:
            async for event in events:
                if isinstance(event, TurnResult) and claim_id is not None:
                    await idempotency.complete(services.db, claim_id, event.record())
                yield event
    except Exception:
        if claim_id is not None:
            await idempotency.release(services.db, claim_id)
        raise
    except BaseException:
        # The client went away: the pipeline stores what was generated in the background;
        # then the key is released only if nothing was stored.
        if claim_id is not None:
            services.spawn(_release_after(services, claim_id, set(services.background)))
        raise


async def _release_after(
    services: Services, claim_id: int, pending: set[asyncio.Task[Any]]
) -> None:
    await asyncio.gather(*pending, return_exceptions=True)
    await idempotency.release(services.db, claim_id)


async def begin_turn(
    request: Request[Any, Any, Any], services: Services, turn: TurnRequest
) -> tuple[AsyncGenerator[TurnEvent, None], str]:
    """The events of a turn and its conversation id: a replay when the request's
    ``Idempotency-Key`` was answered before; raises before anything is streamed."""
    found = await claim_for(request, services, turn.principal.tenant_id)
    if found is not None and (found.replay is not None or found.message_id is not None):
        result = await replay_of(services, found)
        return replayed(result), result.conversation_id
    if found is not None:
        turn.idempotency_id = found.id
    try:
        prepared = await prepare_turn(services, turn)
    except Exception:
        if found is not None:
            await idempotency.release(services.db, found.id)
        raise
    return turn_events(services, prepared), prepared.conversation_id


async def answer(events: AsyncGenerator[TurnEvent, None]) -> TurnResult:
    """Run a turn's events to the end and return its result (non-streaming routes)."""
    result: TurnResult | None = None
    async with aclosing(events) as stream:
        async for event in stream:
            if isinstance(event, TurnResult):
                result = event
    if result is None:
        raise RuntimeError("turn ended without a result")
    return result


def json_reply(content: Any, headers: dict[str, str] | None = None) -> ASGIApp:
    """A turn's JSON reply (status 200) as the ASGI app Litestar makes of a ``Response``, for a
    route annotated ``-> ASGIApp``.

    Litestar passes an ASGI app a handler returns straight through, where a ``Response`` is
    resolved against the route's layers (headers, cookies, type encoders, hooks) on every
    request; that resolution showed in the hot path's profile. So the layers' response
    settings (``response_headers``, ``response_cookies``, ``type_encoders``, ``after_request``)
    do not apply to the turn routes: the app sets none."""
    return ASGIResponse(body=encode_json(content), headers=headers, media_type=MediaType.JSON)


def event_stream(
    request: Request[Any, Any, Any], chunks: AsyncIterator[bytes], headers: dict[str, str]
) -> ASGIApp:
    """A turn's server-sent events, as the ASGI app Litestar makes of a ``Stream`` (it
    watches for the client going away and stops the stream)."""
    stream = Stream(
        chunks, media_type="text/event-stream", headers={**headers, "Cache-Control": "no-cache"}
    )
    return stream.to_asgi_response(app=None, request=request)


def frame(event: Routed | TokenDelta | TurnResult) -> dict[str, Any]:
    """The JSON frame of a turn event (WebSocket frames and native SSE data)."""
    if isinstance(event, Routed):
        return {
            "type": "routing",
            "conversation_id": event.conversation_id,
            "model": event.model,
            "tier": event.tier,
            "reason": event.reason,
        }
    if isinstance(event, TokenDelta):
        return {"type": "token", "text": event.text}
    return {
        "type": "done",
        "message_id": event.message_id,
        "content": event.text,
        "mvm": event.mvm(),
    }


def error_frame(exc: BaseException) -> dict[str, Any]:
    status, detail, _ = problem_for(exc)
    if status >= 500:
        log.error("turn.failed", error=type(exc).__name__, detail=detail)
    return {"type": "error", "code": status, "detail": detail}


async def frames(events: AsyncGenerator[TurnEvent, None]) -> AsyncGenerator[dict[str, Any], None]:
    """A turn's frames; a failure mid-turn becomes a final ``error`` frame."""
    try:
        async with aclosing(events) as stream:
            async for event in stream:
                yield frame(event)
    except Exception as exc:
        yield error_frame(exc)


def sse(data: dict[str, Any] | str) -> bytes:
    """One server-sent event carrying ``data`` (JSON unless already a string)."""
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {payload}\n\n".encode()
