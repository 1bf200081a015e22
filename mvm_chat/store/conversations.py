"""Conversations and their messages, always scoped to one tenant."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from mvm_chat.store.models import Conversation, Message, utcnow

T = TypeVar("T")


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


async def touch_conversation(session: AsyncSession, conversation_id: str, **values: Any) -> None:
    """Bump the conversation's ``updated_at`` (and set ``values``).

    Being a write, it also queues concurrent writers of the conversation behind each other
    (a row lock on Postgres, the write lock on SQLite): do it before reading ``next_seq``.
    """
    await session.execute(
        update(Conversation)
        .where(Conversation.id == conversation_id)
        .values(updated_at=utcnow(), **values)
        .execution_options(synchronize_session="fetch")
    )


async def reserve_seq(session: AsyncSession, conversation_id: str) -> int:
    """The next message number of a conversation, read after touching its row, so that
    concurrent writers of one conversation queue up instead of taking the same number."""
    await touch_conversation(session, conversation_id)
    return await next_seq(session, conversation_id)


async def retry_on_conflict(work: Callable[[], Awaitable[T]]) -> T:
    """Run ``work`` (one transaction) again, up to three times, when a unique index refuses it
    (a concurrent writer took its message number, or opened the same handoff first)."""
    for attempt in range(3):
        try:
            return await work()
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")
