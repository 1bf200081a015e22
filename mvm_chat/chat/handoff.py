"""Human handoff: a conversation passes to a person (``open`` -> ``claimed`` -> ``resolved``).

While a handoff is active the conversation's status is ``"handoff"``: the user's messages are
stored and relayed to the agents without a model reply, and an agent's replies are stored as
assistant messages (model and tier ``"human"``). Every change is published on the
conversation's channel (:func:`conversation_channel`), whichever process holds its sockets:

- ``{"type": "handoff", "handoff_id", "conversation_id", "status", "reason"?}``
- ``{"type": "agent_message", "handoff_id", "conversation_id", "message_id", "content",
  "created_at"}``
- ``{"type": "user_message", ...}`` (the same fields), for agents.

Access rules: a handoff belongs to one tenant; another tenant's id is :class:`NotFound`.
An agent claims an open handoff (claiming it again is a no-op; one claimed by another agent is
a :class:`Conflict`); replying to an open handoff claims it; any agent of the tenant may
resolve an active handoff; a resolved handoff takes no reply, claim or second resolve.
"""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from mvm_chat.chat.services import Services
from mvm_chat.errors import Conflict, InvalidInput, NotFound
from mvm_chat.store import handoffs as repo
from mvm_chat.store.conversations import get_conversation, reserve_seq, retry_on_conflict
from mvm_chat.store.keys import Principal
from mvm_chat.store.models import Handoff, Message, utcnow

log = structlog.get_logger(__name__)
HUMAN = "human"
"""The model and tier names of an agent's messages (and of the holding message)."""
MAX_CONTENT_CHARS = 100_000


def conversation_channel(conversation_id: str) -> str:
    """The pub/sub channel of a conversation's handoff events."""
    return f"conv:{conversation_id}"


def holding_message(services: Services) -> str:
    """What the user is told when their conversation is handed off (``[handoff]``)."""
    return services.settings.handoff.holding_message


async def open_handoff(
    services: Services, tenant_id: str, conversation_id: str, reason: str
) -> Handoff:
    """Hand a stored conversation to people; returns its active handoff if it has one already.

    Raises :class:`NotFound` when the tenant has no such conversation (store the conversation
    first). A new handoff is announced with a ``handoff`` event of status ``open``.
    """

    async def attempt() -> tuple[Handoff, bool]:
        async with services.db.transaction() as session:
            if await get_conversation(session, tenant_id, conversation_id) is None:
                raise NotFound(f"conversation {conversation_id!r} not found")
            active = await repo.active_handoff(session, tenant_id, conversation_id)
            if active is not None:
                return active, False
            return await repo.create_handoff(session, tenant_id, conversation_id, reason), True

    # A concurrent open of the same conversation trips the one-active-handoff index: retry,
    # and the second attempt finds the winner's handoff.
    handoff, created = await retry_on_conflict(attempt)
    if created:
        log.info("handoff.opened", handoff_id=handoff.id, conversation_id=conversation_id)
        await _publish(services, handoff, _status_event(handoff, reason=handoff.reason))
    return handoff


async def current_handoff(
    services: Services, tenant_id: str, conversation_id: str
) -> Handoff | None:
    """The conversation's open or claimed handoff, or None."""
    async with services.db.session() as session:
        return await repo.active_handoff(session, tenant_id, conversation_id)


async def get_handoff(services: Services, principal: Principal, handoff_id: str) -> Handoff:
    """The principal's tenant's handoff; :class:`NotFound` otherwise."""
    async with services.db.session() as session:
        return await _owned(session, principal, handoff_id)


async def list_handoffs(
    services: Services,
    principal: Principal,
    status: str | None = None,
    limit: int = 50,
    offset: int = 0,
    last_messages: int = 5,
) -> list[tuple[Handoff, list[Message]]]:
    """The tenant's handoffs, newest first, each with its conversation's last messages."""
    if status is not None and status not in repo.STATUSES:
        raise InvalidInput("status", f"must be one of {', '.join(repo.STATUSES)}")
    async with services.db.session() as session:
        rows = await repo.list_handoffs(session, principal.tenant_id, status, limit, offset)
        messages = await repo.recent_messages(
            session, [h.conversation_id for h in rows], last_messages
        )
    return [(h, messages.get(h.conversation_id, [])) for h in rows]


async def recent_messages(services: Services, handoff: Handoff, last: int = 5) -> list[Message]:
    """The last ``last`` messages of the handoff's conversation, oldest first."""
    async with services.db.session() as session:
        found = await repo.recent_messages(session, [handoff.conversation_id], last)
    return found.get(handoff.conversation_id, [])


async def claim(services: Services, principal: Principal, handoff_id: str) -> Handoff:
    """Claim an open handoff for the principal's key (a no-op if it already holds it)."""
    async with services.db.transaction() as session:
        handoff = await _owned(session, principal, handoff_id)
        claimed = not _held_by(handoff, principal) and await _take(session, handoff, principal)
    if claimed:
        await _publish(services, handoff, _status_event(handoff))
    return handoff


async def resolve(services: Services, principal: Principal, handoff_id: str) -> Handoff:
    """Resolve an active handoff: the conversation is answered by models again."""
    async with services.db.transaction() as session:
        handoff = await _owned(session, principal, handoff_id)
        if not await repo.resolve_handoff(session, handoff):
            raise Conflict(f"handoff {handoff_id!r} is already resolved")
        await session.refresh(handoff)
    log.info("handoff.resolved", handoff_id=handoff_id, conversation_id=handoff.conversation_id)
    await _publish(services, handoff, _status_event(handoff))
    return handoff


async def agent_reply(
    services: Services, principal: Principal, handoff_id: str, content: str
) -> str:
    """Store an agent's reply in the conversation and push it to the user; returns its
    message id. Replying to an open handoff claims it for the principal."""
    _check_content(content)

    async def attempt() -> tuple[Handoff, bool, Message]:
        async with services.db.transaction() as session:
            handoff = await _owned(session, principal, handoff_id)
            claimed = not _held_by(handoff, principal) and await _take(session, handoff, principal)
            message = await _append(
                session,
                handoff.conversation_id,
                role="assistant",
                content=content,
                model=HUMAN,
                tier=HUMAN,
                metadata_={"agent_key_id": principal.key_id, "handoff_id": handoff_id},
            )
            return handoff, claimed, message

    handoff, claimed, message = await retry_on_conflict(attempt)
    if claimed:
        await _publish(services, handoff, _status_event(handoff))
    await _publish(services, handoff, _message_event("agent_message", handoff, message))
    return message.id


async def relay_user_message(
    services: Services,
    tenant_id: str,
    conversation_id: str,
    text: str,
    metadata: dict[str, Any] | None = None,
) -> str:
    """Store a user's message in a handed-off conversation, with no model reply, and relay it
    to the agents (a ``user_message`` event); returns its message id.

    Raises :class:`Conflict` when the conversation has no active handoff.
    """
    _check_content(text)

    async def attempt() -> tuple[Handoff, Message]:
        async with services.db.transaction() as session:
            handoff = await repo.active_handoff(session, tenant_id, conversation_id)
            if handoff is None:
                raise Conflict(f"conversation {conversation_id!r} is not handed off")
            meta = {**(metadata or {}), "handoff_id": handoff.id}
            message = await _append(
                session, conversation_id, role="user", content=text, metadata_=meta
            )
            return handoff, message

    handoff, message = await retry_on_conflict(attempt)
    await _publish(services, handoff, _message_event("user_message", handoff, message))
    return message.id


async def _owned(session: AsyncSession, principal: Principal, handoff_id: str) -> Handoff:
    handoff = await repo.get_handoff(session, principal.tenant_id, handoff_id)
    if handoff is None:
        raise NotFound(f"handoff {handoff_id!r} not found")
    return handoff


def _held_by(handoff: Handoff, principal: Principal) -> bool:
    return handoff.status == "claimed" and handoff.claimed_by == principal.key_id


async def _take(session: AsyncSession, handoff: Handoff, principal: Principal) -> bool:
    """Claim ``handoff`` for the principal; True if this call claimed it, False if the
    principal held it already. Raises :class:`Conflict` saying why it cannot."""
    taken = await repo.claim_handoff(session, handoff.id, principal.key_id)
    await session.refresh(handoff)
    if taken or _held_by(handoff, principal):  # the principal's own concurrent claim won
        return taken
    if handoff.status == "resolved":
        raise Conflict(f"handoff {handoff.id!r} is resolved")
    raise Conflict(f"handoff {handoff.id!r} is claimed by another agent")


async def _append(
    session: AsyncSession, conversation_id: str, *, role: str, content: str, **fields: Any
) -> Message:
    """Add a message after the conversation's last one (the caller retries on a taken seq)."""
    message = Message(
        conversation_id=conversation_id,
        seq=await reserve_seq(session, conversation_id),
        role=role,
        content=content,
        created_at=utcnow(),
        **fields,
    )
    session.add(message)
    await session.flush()
    return message


def _check_content(content: str) -> None:
    if not content.strip():
        raise InvalidInput("content", "must be a non-empty string")
    if len(content) > MAX_CONTENT_CHARS:
        raise InvalidInput("content", f"longer than {MAX_CONTENT_CHARS} characters")


def _status_event(handoff: Handoff, **extra: Any) -> dict[str, Any]:
    return {
        "type": "handoff",
        "handoff_id": handoff.id,
        "conversation_id": handoff.conversation_id,
        "status": handoff.status,
        **extra,
    }


def _message_event(kind: str, handoff: Handoff, message: Message) -> dict[str, Any]:
    return {
        "type": kind,
        "handoff_id": handoff.id,
        "conversation_id": handoff.conversation_id,
        "message_id": message.id,
        "content": message.content,
        "created_at": message.created_at.isoformat(),
    }


async def _publish(services: Services, handoff: Handoff, event: dict[str, Any]) -> None:
    """Announce ``event``; a failure to notify never undoes what was stored."""
    try:
        await services.pubsub.publish(conversation_channel(handoff.conversation_id), event)
    except Exception as exc:
        log.error("handoff.publish_failed", event=event["type"], error=type(exc).__name__)
