"""Handoffs of conversations to people, always scoped to one tenant.

The status changes are conditional updates (``... WHERE status = 'open'``), so that two agents
or two server processes racing on one handoff cannot both win. Each keeps the conversation's
``status`` in step: ``"handoff"`` while a handoff is active, ``"open"`` again once resolved.
The caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mvm_chat.store.conversations import touch_conversation
from mvm_chat.store.models import Handoff, Message, utcnow

STATUSES = ("open", "claimed", "resolved")
ACTIVE = ("open", "claimed")
CONVERSATION_HANDED_OFF = "handoff"
CONVERSATION_OPEN = "open"


async def create_handoff(
    session: AsyncSession, tenant_id: str, conversation_id: str, reason: str
) -> Handoff:
    """Add an open handoff and mark its conversation handed off.

    A second active handoff of the same conversation fails with ``IntegrityError`` (at the
    flush), which :func:`active_handoff` then finds.
    """
    handoff = Handoff(
        tenant_id=tenant_id, conversation_id=conversation_id, reason=reason[:500], status="open"
    )
    session.add(handoff)
    await session.flush()
    await touch_conversation(session, conversation_id, status=CONVERSATION_HANDED_OFF)
    return handoff


async def get_handoff(session: AsyncSession, tenant_id: str, handoff_id: str) -> Handoff | None:
    """The tenant's handoff, or None (also for another tenant's id)."""
    return await session.scalar(
        select(Handoff).where(Handoff.id == handoff_id, Handoff.tenant_id == tenant_id)
    )


async def active_handoff(
    session: AsyncSession, tenant_id: str, conversation_id: str
) -> Handoff | None:
    """The conversation's open or claimed handoff, if any."""
    return await session.scalar(
        select(Handoff).where(
            Handoff.conversation_id == conversation_id,
            Handoff.tenant_id == tenant_id,
            Handoff.status.in_(ACTIVE),
        )
    )


async def list_handoffs(
    session: AsyncSession,
    tenant_id: str,
    status: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> Sequence[Handoff]:
    """The tenant's handoffs, newest first; with ``status``, only those in it."""
    query = select(Handoff).where(Handoff.tenant_id == tenant_id)
    if status is not None:
        query = query.where(Handoff.status == status)
    query = query.order_by(Handoff.created_at.desc(), Handoff.id).limit(limit).offset(offset)
    return (await session.scalars(query)).all()


async def claim_handoff(session: AsyncSession, handoff_id: str, key_id: str) -> bool:
    """Move an open handoff to ``claimed`` by ``key_id``; False when it was not open."""
    return await _transition(
        session, handoff_id, ("open",), status="claimed", claimed_by=key_id, claimed_at=utcnow()
    )


async def resolve_handoff(session: AsyncSession, handoff: Handoff) -> bool:
    """Move an active handoff to ``resolved`` and reopen its conversation; False when it
    was already resolved."""
    changed = await _transition(
        session, handoff.id, ACTIVE, status="resolved", resolved_at=utcnow()
    )
    if changed:
        await touch_conversation(session, handoff.conversation_id, status=CONVERSATION_OPEN)
    return changed


async def recent_messages(
    session: AsyncSession, conversation_ids: Sequence[str], per_conversation: int
) -> dict[str, list[Message]]:
    """The newest ``per_conversation`` messages of each conversation, oldest first, in one
    query."""
    if not conversation_ids or per_conversation < 1:
        return {}
    rank = (
        func.row_number()
        .over(partition_by=Message.conversation_id, order_by=Message.seq.desc())
        .label("rank")
    )
    ranked = (
        select(Message.id, rank).where(Message.conversation_id.in_(set(conversation_ids)))
    ).subquery()
    rows = await session.scalars(
        select(Message)
        .join(ranked, ranked.c.id == Message.id)
        .where(ranked.c.rank <= per_conversation)
        .order_by(Message.conversation_id, Message.seq)
    )
    found: dict[str, list[Message]] = {}
    for message in rows:
        found.setdefault(message.conversation_id, []).append(message)
    return found


async def _transition(
    session: AsyncSession, handoff_id: str, from_statuses: Sequence[str], **values: Any
) -> bool:
    result = await session.execute(
        update(Handoff)
        .where(Handoff.id == handoff_id, Handoff.status.in_(from_statuses))
        .values(**values)
        .execution_options(synchronize_session="fetch")
    )
    return cast(CursorResult[Any], result).rowcount == 1
