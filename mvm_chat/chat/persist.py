"""Step 10 of a turn: the user message, the answer and every call's ledger row, together."""

from __future__ import annotations

from typing import Any

import structlog

from mvm_chat.chat.services import Services
from mvm_chat.chat.turns import PreparedTurn
from mvm_chat.ledger.ledger import CallRecord, ledger_entry
from mvm_chat.settings import ModelSettings
from mvm_chat.store import idempotency
from mvm_chat.store.conversations import reserve_seq, retry_on_conflict
from mvm_chat.store.models import Conversation, Message, utcnow
from mvm_chat.store.rollups import add_to_rollup

log = structlog.get_logger(__name__)


async def store_turn(
    services: Services,
    prepared: PreparedTurn,
    calls: list[CallRecord],
    answer_by: ModelSettings,
    text: str,
    metadata: dict[str, Any],
) -> str:
    """Write the turn in one transaction; returns the answer's message id.

    ``calls`` are all the model calls the turn made (escalated attempts included), each a
    ledger row pointing at the answer.
    """
    return await retry_on_conflict(
        lambda: _store_once(services, prepared, calls, answer_by, text, metadata)
    )


async def _store_once(
    services: Services,
    prepared: PreparedTurn,
    calls: list[CallRecord],
    answer_by: ModelSettings,
    text: str,
    metadata: dict[str, Any],
) -> str:
    request = prepared.request
    intent = prepared.turn.intent.label if prepared.turn.intent else None
    now = utcnow()
    async with services.db.transaction() as session:
        if prepared.is_new_conversation:
            session.add(
                Conversation(
                    id=prepared.conversation_id,
                    tenant_id=request.principal.tenant_id,
                    title=request.text[:80],
                    tier=answer_by.tier,
                    metadata_={"routing": prepared.routing.as_metadata()},
                    created_at=now,
                    updated_at=now,
                )
            )
            await session.flush()
            seq = 0
        else:
            seq = await reserve_seq(session, prepared.conversation_id)
            conversation = await session.get(Conversation, prepared.conversation_id)
            if conversation is not None:
                conversation.tier = answer_by.tier
                conversation.metadata_ = {
                    **(conversation.metadata_ or {}),
                    "routing": prepared.routing.as_metadata(),
                }
        session.add(
            Message(
                conversation_id=prepared.conversation_id,
                seq=seq,
                role="user",
                content=request.text,
                intent=intent,
                created_at=now,
            )
        )
        answer = Message(
            conversation_id=prepared.conversation_id,
            seq=seq + 1,
            role="assistant",
            content=text,
            model=answer_by.name,
            tier=answer_by.tier,
            intent=intent,
            metadata_={"request_id": request.request_id, **metadata},
            created_at=utcnow(),
        )
        session.add(answer)
        await session.flush()
        entries = [ledger_entry(services.settings, call, answer.id) for call in calls]
        session.add_all(entries)
        await add_to_rollup(session, entries)
        if request.idempotency_id is not None:
            await idempotency.mark_stored(session, request.idempotency_id, answer.id)
    return answer.id


async def record_failure(services: Services, call: CallRecord) -> None:
    """A failed call is still a ledger row (no message is stored for it)."""
    try:
        async with services.db.transaction() as session:
            entry = ledger_entry(services.settings, call, None)
            session.add(entry)
            await add_to_rollup(session, [entry])
    except Exception as exc:
        log.error("ledger.write_failed", error=type(exc).__name__)
