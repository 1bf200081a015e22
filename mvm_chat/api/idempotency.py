"""The ``Idempotency-Key`` header of the chat routes: claim, replay, or refuse (422 / 409)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncGenerator
from decimal import Decimal
from typing import Any

from litestar import Request
from sqlalchemy import func, select

from mvm_chat.chat.services import Services
from mvm_chat.chat.turns import Routed, TurnEvent, TurnResult
from mvm_chat.engines.base import TokenDelta, Usage
from mvm_chat.errors import InvalidInput
from mvm_chat.ledger.pricing import store
from mvm_chat.store.idempotency import HEADER, Claim, claim
from mvm_chat.store.models import LedgerEntry, Message

MAX_KEY_CHARS = 255


def _body_hash(route: str, body: bytes) -> str:
    """The request's fingerprint: its route and its JSON body, keys sorted."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        canonical = body
    return hashlib.sha256(route.encode() + b"\n" + canonical).hexdigest()


async def claim_for(
    request: Request[Any, Any, Any], services: Services, tenant_id: str
) -> Claim | None:
    """Claim the request's ``Idempotency-Key``; None when it has none."""
    key = request.headers.get(HEADER.lower())
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_KEY_CHARS or not key.isprintable() or not key.isascii():
        raise InvalidInput(HEADER, f"must be 1 to {MAX_KEY_CHARS} printable ASCII characters")
    route = f"{request.method} {request.url.path}"
    return await claim(services.db, tenant_id, key, route, _body_hash(route, await request.body()))


async def replay_of(services: Services, found: Claim) -> TurnResult:
    """The reply to send again: the one kept, or one rebuilt from the stored answer when the
    first client went away before its reply was complete."""
    if found.replay is not None:
        return TurnResult.from_record(found.replay)
    async with services.db.session() as session:
        message = await session.get(Message, found.message_id)
        totals = (
            await session.execute(
                select(
                    func.coalesce(func.sum(LedgerEntry.cost_usd), 0),
                    func.coalesce(func.sum(LedgerEntry.baseline_cost_usd), 0),
                    func.coalesce(func.sum(LedgerEntry.prompt_tokens), 0),
                    func.coalesce(func.sum(LedgerEntry.completion_tokens), 0),
                ).where(LedgerEntry.message_id == found.message_id)
            )
        ).one()
    if message is None:
        raise InvalidInput(HEADER, "the answer stored for this key no longer exists")
    metadata = message.metadata_ or {}
    return TurnResult(
        conversation_id=message.conversation_id,
        message_id=message.id,
        model=message.model or "",
        tier=message.tier or "",
        text=message.content,
        usage=Usage(int(totals[2]), int(totals[3])),
        cache="off",
        cost_usd=store(Decimal(str(totals[0]))),
        baseline_cost_usd=store(Decimal(str(totals[1]))),
        finish_reason=str(metadata.get("status", "stop")),
        escalations=list(metadata.get("escalations") or []),
        passages=list(metadata.get("passages") or []),
    )


async def replayed(result: TurnResult) -> AsyncGenerator[TurnEvent, None]:
    """A kept reply as the events of a turn, for the streaming routes."""
    yield Routed(result.conversation_id, result.model, result.tier, "replayed (Idempotency-Key)")
    yield TokenDelta(result.text, result.usage.completion_tokens)
    yield result
