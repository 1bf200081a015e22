"""Human handoff at function level, on a migrated SQLite database: states, rules, events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from mvm_chat.cache import create_cache
from mvm_chat.cache.pubsub import LocalPubSub, Subscription
from mvm_chat.chat import handoff
from mvm_chat.chat.services import Services
from mvm_chat.errors import Conflict, InvalidInput, NotFound
from mvm_chat.plugins import load_plugins
from mvm_chat.settings import Settings
from mvm_chat.store.db import Database, upgrade
from mvm_chat.store.keys import Principal, create_key
from mvm_chat.store.models import Conversation, Message


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[Services]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'handoffs.db'}"
    await asyncio.to_thread(upgrade, url)
    services = Services(
        settings=Settings(),
        db=Database(url),
        cache=create_cache(""),
        engines={},
        plugins=load_plugins(only=[]),
        pubsub=LocalPubSub(),
    )
    yield services
    await services.close()


async def _principal(services: Services, tenant: str, role: str) -> Principal:
    async with services.db.transaction() as session:
        key, _ = await create_key(session, tenant, role)
        return Principal(key.tenant_id, tenant, key.id, role)


async def _conversation(services: Services, principal: Principal) -> str:
    async with services.db.transaction() as session:
        conversation = Conversation(tenant_id=principal.tenant_id, title="help")
        session.add(conversation)
        await session.flush()
        session.add(Message(conversation_id=conversation.id, seq=0, role="user", content="hi"))
        return conversation.id


async def _status(services: Services, conversation_id: str) -> str:
    async with services.db.session() as session:
        found = await session.get(Conversation, conversation_id)
        assert found is not None
        return found.status


async def _messages(services: Services, conversation_id: str) -> list[Message]:
    async with services.db.session() as session:
        rows = await session.scalars(
            select(Message).where(Message.conversation_id == conversation_id).order_by(Message.seq)
        )
        return list(rows.all())


async def _drain(events: Subscription) -> list[dict[str, Any]]:
    """Everything published so far (in-process delivery is immediate)."""
    found = []
    while True:
        try:
            found.append(await asyncio.wait_for(events.__anext__(), 0.05))
        except TimeoutError:
            return found


async def test_open_is_idempotent_and_hands_the_conversation_off(services: Services) -> None:
    agent = await _principal(services, "acme", "agent")
    conversation_id = await _conversation(services, agent)
    channel = handoff.conversation_channel(conversation_id)
    async with services.pubsub.subscribe(channel) as events:
        first = await handoff.open_handoff(services, agent.tenant_id, conversation_id, "user asked")
        again = await handoff.open_handoff(services, agent.tenant_id, conversation_id, "again")
        published = await _drain(events)
    assert again.id == first.id and first.status == "open" and first.reason == "user asked"
    assert await _status(services, conversation_id) == "handoff"
    assert published == [
        {
            "type": "handoff",
            "handoff_id": first.id,
            "conversation_id": conversation_id,
            "status": "open",
            "reason": "user asked",
        }
    ]
    current = await handoff.current_handoff(services, agent.tenant_id, conversation_id)
    assert current is not None and current.id == first.id
    assert handoff.holding_message(services) == Settings().handoff.holding_message


async def test_concurrent_opens_make_one_handoff(services: Services) -> None:
    agent = await _principal(services, "acme", "agent")
    conversation_id = await _conversation(services, agent)
    opened = await asyncio.gather(
        *(
            handoff.open_handoff(services, agent.tenant_id, conversation_id, f"reason {i}")
            for i in range(5)
        )
    )
    assert len({h.id for h in opened}) == 1


async def test_open_needs_a_stored_conversation_of_the_tenant(services: Services) -> None:
    acme = await _principal(services, "acme", "agent")
    globex = await _principal(services, "globex", "agent")
    conversation_id = await _conversation(services, acme)
    with pytest.raises(NotFound):
        await handoff.open_handoff(services, globex.tenant_id, conversation_id, "x")
    with pytest.raises(NotFound):
        await handoff.open_handoff(services, acme.tenant_id, "nope", "x")


async def test_claim_reply_resolve_and_invalid_transitions(services: Services) -> None:
    alice = await _principal(services, "acme", "agent")
    bob = await _principal(services, "acme", "agent")
    conversation_id = await _conversation(services, alice)
    opened = await handoff.open_handoff(services, alice.tenant_id, conversation_id, "refund")
    channel = handoff.conversation_channel(conversation_id)
    async with services.pubsub.subscribe(channel) as events:
        claimed = await handoff.claim(services, alice, opened.id)
        assert (claimed.status, claimed.claimed_by) == ("claimed", alice.key_id)
        assert claimed.claimed_at is not None
        assert (await handoff.claim(services, alice, opened.id)).status == "claimed"
        with pytest.raises(Conflict, match="claimed by another agent"):
            await handoff.claim(services, bob, opened.id)
        with pytest.raises(Conflict, match="claimed by another agent"):
            await handoff.agent_reply(services, bob, opened.id, "I'll take it")

        message_id = await handoff.agent_reply(services, alice, opened.id, "Hello, I am Alice.")
        resolved = await handoff.resolve(services, bob, opened.id)
        published = await _drain(events)

    assert resolved.status == "resolved" and resolved.resolved_at is not None
    assert await _status(services, conversation_id) == "open"
    stored = (await _messages(services, conversation_id))[-1]
    assert (stored.id, stored.seq, stored.role, stored.content) == (
        message_id,
        1,
        "assistant",
        "Hello, I am Alice.",
    )
    assert (stored.model, stored.tier) == ("human", "human")
    assert stored.metadata_ == {"agent_key_id": alice.key_id, "handoff_id": opened.id}
    assert [(e["type"], e.get("status")) for e in published] == [
        ("handoff", "claimed"),
        ("agent_message", None),
        ("handoff", "resolved"),
    ]
    agent_message = published[1]
    assert agent_message["message_id"] == message_id
    assert agent_message["content"] == "Hello, I am Alice."
    assert agent_message["handoff_id"] == opened.id and agent_message["created_at"]

    for action in (
        handoff.resolve(services, alice, opened.id),
        handoff.claim(services, alice, opened.id),
        handoff.agent_reply(services, alice, opened.id, "too late"),
    ):
        with pytest.raises(Conflict):
            await action
    reopened = await handoff.open_handoff(services, alice.tenant_id, conversation_id, "again")
    assert reopened.id != opened.id and reopened.status == "open"


async def test_a_reply_claims_an_open_handoff(services: Services) -> None:
    agent = await _principal(services, "acme", "admin")
    conversation_id = await _conversation(services, agent)
    opened = await handoff.open_handoff(services, agent.tenant_id, conversation_id, "x")
    await handoff.agent_reply(services, agent, opened.id, "on it")
    current = await handoff.get_handoff(services, agent, opened.id)
    assert (current.status, current.claimed_by) == ("claimed", agent.key_id)


async def test_another_tenant_sees_nothing(services: Services) -> None:
    acme = await _principal(services, "acme", "agent")
    globex = await _principal(services, "globex", "agent")
    conversation_id = await _conversation(services, acme)
    opened = await handoff.open_handoff(services, acme.tenant_id, conversation_id, "x")
    for action in (
        handoff.get_handoff(services, globex, opened.id),
        handoff.claim(services, globex, opened.id),
        handoff.agent_reply(services, globex, opened.id, "hello"),
        handoff.resolve(services, globex, opened.id),
    ):
        with pytest.raises(NotFound):
            await action
    assert await handoff.list_handoffs(services, globex) == []
    [(listed, messages)] = await handoff.list_handoffs(services, acme, "open")
    assert listed.id == opened.id and [m.content for m in messages] == ["hi"]
    assert await handoff.list_handoffs(services, acme, "resolved") == []
    with pytest.raises(InvalidInput):
        await handoff.list_handoffs(services, acme, "bogus")


async def test_user_messages_are_relayed_without_a_reply(services: Services) -> None:
    agent = await _principal(services, "acme", "agent")
    conversation_id = await _conversation(services, agent)
    with pytest.raises(Conflict, match="not handed off"):
        await handoff.relay_user_message(services, agent.tenant_id, conversation_id, "hello?")
    opened = await handoff.open_handoff(services, agent.tenant_id, conversation_id, "x")
    async with services.pubsub.subscribe(handoff.conversation_channel(conversation_id)) as events:
        message_id = await handoff.relay_user_message(
            services, agent.tenant_id, conversation_id, "Is anyone there?", {"request_id": "r1"}
        )
        [event] = await _drain(events)
    assert event["type"] == "user_message" and event["message_id"] == message_id
    assert event["content"] == "Is anyone there?" and event["handoff_id"] == opened.id
    stored = await _messages(services, conversation_id)
    assert [(m.role, m.content) for m in stored] == [("user", "hi"), ("user", "Is anyone there?")]
    assert stored[-1].metadata_ == {"request_id": "r1", "handoff_id": opened.id}
    with pytest.raises(InvalidInput):
        await handoff.relay_user_message(services, agent.tenant_id, conversation_id, "  ")


async def test_concurrent_writers_get_distinct_sequence_numbers(services: Services) -> None:
    agent = await _principal(services, "acme", "agent")
    conversation_id = await _conversation(services, agent)
    opened = await handoff.open_handoff(services, agent.tenant_id, conversation_id, "x")
    await asyncio.gather(
        *(handoff.agent_reply(services, agent, opened.id, f"agent {i}") for i in range(4)),
        *(
            handoff.relay_user_message(services, agent.tenant_id, conversation_id, f"user {i}")
            for i in range(4)
        ),
    )
    stored = await _messages(services, conversation_id)
    assert [m.seq for m in stored] == list(range(9))
