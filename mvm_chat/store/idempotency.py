"""``Idempotency-Key``: one answer per key, whatever the number of retries.

A key is claimed (``running``) before its turn runs; the transaction that stores the answer
records its message id; the finished reply is kept (``done``) to be replayed. A key whose turn
failed before anything was stored is released, so a retry runs again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from mvm_chat.errors import Conflict, InvalidInput
from mvm_chat.store.db import Database
from mvm_chat.store.models import IdempotencyKey, utcnow

HEADER = "Idempotency-Key"
STALE_AFTER = timedelta(minutes=10)
"""A key still ``running`` after this long belongs to a process that died: it may be retaken."""


@dataclass(frozen=True, slots=True)
class Claim:
    """A claimed key (``replay`` None: run the turn) or a finished one to replay."""

    id: int
    replay: dict[str, Any] | None = None
    message_id: str | None = None
    """Set when the answer was stored but its reply was not kept (the client went away)."""


async def claim(db: Database, tenant_id: str, key: str, route: str, body_hash: str) -> Claim:
    """Claim ``key`` for this request, or say what to do instead.

    Raises :class:`InvalidInput` (422) when the key was used for another request, and
    :class:`Conflict` (409) while the first request with it is still running.
    """
    try:
        async with db.transaction() as session:
            row = IdempotencyKey(tenant_id=tenant_id, key=key, route=route, body_hash=body_hash)
            session.add(row)
            await session.flush()
            return Claim(row.id)
    except IntegrityError:
        pass
    async with db.transaction() as session:
        found = await session.scalar(
            select(IdempotencyKey)
            .where(IdempotencyKey.tenant_id == tenant_id, IdempotencyKey.key == key)
            .with_for_update()
        )
        if found is not None:
            return _existing(found, route, body_hash)
    # released meanwhile: claim it again (after this transaction has given its connection back)
    return await claim(db, tenant_id, key, route, body_hash)


def _existing(found: IdempotencyKey, route: str, body_hash: str) -> Claim:
    """What to do about a key claimed before (its row is locked by the caller)."""
    if found.route != route or found.body_hash != body_hash:
        raise InvalidInput(HEADER, "this key was already used for a different request")
    if found.status == "done" and found.response is not None:
        return Claim(found.id, replay=found.response)
    if found.message_id is not None:
        return Claim(found.id, message_id=found.message_id)
    if utcnow() - found.updated_at < STALE_AFTER:
        raise Conflict("a request with this Idempotency-Key is still being answered")
    found.updated_at = utcnow()
    return Claim(found.id)


async def mark_stored(session: AsyncSession, claim_id: int, message_id: str) -> None:
    """Record the stored answer, in the transaction that stores it."""
    await session.execute(
        update(IdempotencyKey)
        .where(IdempotencyKey.id == claim_id)
        .values(message_id=message_id, updated_at=utcnow())
    )


async def complete(db: Database, claim_id: int, response: dict[str, Any]) -> None:
    """Keep the finished reply for replays."""
    async with db.transaction() as session:
        await session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.id == claim_id)
            .values(status="done", response=response, updated_at=utcnow())
        )


async def release(db: Database, claim_id: int) -> None:
    """Forget a claim whose turn stored nothing, so that a retry runs again."""
    async with db.transaction() as session:
        await session.execute(
            delete(IdempotencyKey).where(
                IdempotencyKey.id == claim_id, IdempotencyKey.message_id.is_(None)
            )
        )
