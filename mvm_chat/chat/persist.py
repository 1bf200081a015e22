"""Step 10 of a turn: the user message, the answer and every call's ledger row, together."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

import structlog
from sqlalchemy import Table, insert, select, update

from mvm_chat.chat import persist_pg
from mvm_chat.chat.services import Services
from mvm_chat.chat.turns import PreparedTurn
from mvm_chat.ledger.ledger import CallRecord, ledger_row
from mvm_chat.settings import ModelSettings
from mvm_chat.store import idempotency
from mvm_chat.store.conversations import reserve_seq, retry_on_conflict
from mvm_chat.store.models import Conversation, LedgerEntry, Message, new_id, utcnow
from mvm_chat.store.rollups import add_to_rollup, rollup_rows, rollup_upsert

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


_CONVERSATIONS = cast(Table, Conversation.__table__)
_MESSAGES = cast(Table, Message.__table__)
_LEDGER = cast(Table, LedgerEntry.__table__)


def _message_row(
    conversation_id: str,
    seq: int,
    role: str,
    content: str,
    intent: str | None,
    created_at: datetime | None = None,
) -> dict[str, Any]:
    return {
        "id": new_id(),
        "conversation_id": conversation_id,
        "seq": seq,
        "role": role,
        "content": content,
        "model": None,
        "tier": None,
        "intent": intent,
        "metadata": {},
        "created_at": created_at or utcnow(),
    }


async def _store_once(
    services: Services,
    prepared: PreparedTurn,
    calls: list[CallRecord],
    answer_by: ModelSettings,
    text: str,
    metadata: dict[str, Any],
) -> str:
    # Core inserts, not the ORM's unit of work; on Postgres a new conversation's turn is
    # a single statement (persist_pg), otherwise a handful of statements, one transaction.
    request = prepared.request
    intent = prepared.turn.intent.label if prepared.turn.intent else None
    now = utcnow()
    routing = {"routing": prepared.routing.as_metadata()}
    answer_id = new_id()

    def messages(seq: int) -> list[dict[str, Any]]:
        question = _message_row(prepared.conversation_id, seq, "user", request.text, intent, now)
        answer = _message_row(prepared.conversation_id, seq + 1, "assistant", text, intent)
        answer.update(
            id=answer_id,
            model=answer_by.name,
            tier=answer_by.tier,
            metadata={"request_id": request.request_id, **metadata},
        )
        return [question, answer]

    conversation = {
        "id": prepared.conversation_id,
        "tenant_id": request.principal.tenant_id,
        "title": request.text[:80],
        "status": "open",
        "tier": answer_by.tier,
        "metadata": routing,
        "created_at": now,
        "updated_at": now,
    }
    ledger = [ledger_row(services.settings, call, answer_id) for call in calls]
    rollups = rollup_rows(ledger)
    if (
        prepared.is_new_conversation
        and request.idempotency_id is None
        and services.db.is_postgres
        and persist_pg.fits(len(ledger), len(rollups))
    ):
        await persist_pg.write_new_conversation(
            services.db, conversation, messages(0), ledger, rollups
        )
        return answer_id
    async with services.db.transaction() as session:
        if prepared.is_new_conversation:
            await session.execute(insert(_CONVERSATIONS), conversation)
            seq = 0
        else:
            seq = await reserve_seq(session, prepared.conversation_id)
            stored = await session.scalar(
                select(Conversation.metadata_).where(Conversation.id == prepared.conversation_id)
            )
            await session.execute(
                update(_CONVERSATIONS)
                .where(_CONVERSATIONS.c.id == prepared.conversation_id)
                .values(tier=answer_by.tier, metadata={**(stored or {}), **routing})
            )
        await session.execute(insert(_MESSAGES), messages(seq))
        if ledger:
            await session.execute(insert(_LEDGER), ledger)
            upsert = rollup_upsert(services.db.engine.dialect.name)
            await session.execute(upsert, rollups[0] if len(rollups) == 1 else rollups)
        if request.idempotency_id is not None:
            await idempotency.mark_stored(session, request.idempotency_id, answer_id)
    return answer_id


async def record_failure(services: Services, call: CallRecord) -> None:
    """A failed call is still a ledger row (no message is stored for it)."""
    try:
        async with services.db.transaction() as session:
            row = ledger_row(services.settings, call, None)
            await session.execute(insert(_LEDGER), row)
            await add_to_rollup(session, [row])
    except Exception as exc:
        log.error("ledger.write_failed", error=type(exc).__name__)
