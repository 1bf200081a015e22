"""Running a turn from a handler: prepare first (errors before any byte), then stream frames."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import structlog

from mvm_chat.api.errors import problem_for
from mvm_chat.chat.pipeline import run_turn
from mvm_chat.chat.services import Services
from mvm_chat.chat.turns import PreparedTurn, Routed, TurnResult
from mvm_chat.engines.base import TokenDelta

log = structlog.get_logger(__name__)


async def answer(services: Services, prepared: PreparedTurn) -> TurnResult:
    """Run a turn to the end and return its result (non-streaming routes)."""
    result: TurnResult | None = None
    async with aclosing(run_turn(services, prepared)) as events:
        async for event in events:
            if isinstance(event, TurnResult):
                result = event
    if result is None:
        raise RuntimeError("turn ended without a result")
    return result


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


async def frames(
    services: Services, prepared: PreparedTurn
) -> AsyncGenerator[dict[str, Any], None]:
    """A turn's frames; a failure mid-turn becomes a final ``error`` frame."""
    try:
        async with aclosing(run_turn(services, prepared)) as events:
            async for event in events:
                yield frame(event)
    except Exception as exc:
        yield error_frame(exc)


def sse(data: dict[str, Any] | str) -> bytes:
    """One server-sent event carrying ``data`` (JSON unless already a string)."""
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {payload}\n\n".encode()
