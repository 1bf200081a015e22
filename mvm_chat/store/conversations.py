"""Conversations and their messages, always scoped to one tenant."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mvm_chat.store.models import Conversation, Message


async def get_conversation(
    session: AsyncSession, tenant_id: str, conversation_id: str
) -> Conversation | None:
    """The tenant's conversation, or None (also for another tenant's id)."""
    return await session.scalar(
        select(Conversation).where(
            Conversation.id == conversation_id, Conversation.tenant_id == tenant_id
        )
    )


async def list_conversations(
    session: AsyncSession, tenant_id: str, limit: int = 50, offset: int = 0
) -> Sequence[Conversation]:
    return (
        await session.scalars(
            select(Conversation)
            .where(Conversation.tenant_id == tenant_id)
            .order_by(Conversation.created_at.desc(), Conversation.id)
            .limit(limit)
            .offset(offset)
        )
    ).all()


async def list_messages(
    session: AsyncSession, conversation_id: str, last: int | None = None
) -> list[Message]:
    """Messages oldest first; with ``last``, only the newest ``last`` of them."""
    query = select(Message).where(Message.conversation_id == conversation_id)
    if last is None:
        return list((await session.scalars(query.order_by(Message.seq))).all())
    newest = (await session.scalars(query.order_by(Message.seq.desc()).limit(last))).all()
    return list(reversed(newest))


async def next_seq(session: AsyncSession, conversation_id: str) -> int:
    current = await session.scalar(
        select(func.max(Message.seq)).where(Message.conversation_id == conversation_id)
    )
    return 0 if current is None else int(current) + 1
