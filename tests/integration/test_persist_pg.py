"""The first turn of a conversation in one statement (``chat/persist_pg.py``) against a real
PostgreSQL: every column of every row lands where it belongs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from mvm_chat.chat import persist_pg
from mvm_chat.store.db import Database, upgrade
from mvm_chat.store.models import Conversation, LedgerEntry, Message, Tenant, new_id, utcnow
from mvm_chat.store.rollups import KEY, SUMS, ledger_rollups, rollup_rows

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def migrated(pg_url: str) -> str:
    upgrade(pg_url)
    return pg_url


@pytest.fixture
async def db(migrated: str) -> AsyncIterator[Database]:
    database = Database(migrated)
    yield database
    await database.dispose()


def _turn(tenant_id: str, models: list[str]) -> dict[str, Any]:
    now = utcnow()
    conversation_id, answer_id = new_id(), new_id()
    conversation = {
        "id": conversation_id,
        "tenant_id": tenant_id,
        "title": "Où est ma carte ?",
        "status": "open",
        "tier": "api",
        "metadata": {"routing": {"turns": 1, "tiers": ["local", "api"], "seuil": 0.75}},
        "created_at": now,
        "updated_at": now + timedelta(microseconds=1),
    }
    messages = [
        {
            "id": id_,
            "conversation_id": conversation_id,
            "seq": seq,
            "role": role,
            "content": content,
            "model": model,
            "tier": tier,
            "intent": "card_arrival",
            "metadata": metadata,
            "created_at": now + timedelta(milliseconds=seq),
        }
        for id_, seq, role, content, model, tier, metadata in (
            (new_id(), 0, "user", "Où est ma carte ? 🙂", None, "local", {}),
            (answer_id, 1, "assistant", 'It "ships" in 3 days.', models[-1], "api", {"n": "ü"}),
        )
    ]
    ledger = [
        {
            "request_id": new_id(),
            "attempt": attempt,
            "tenant_id": tenant_id,
            "api_key_id": new_id(),
            "conversation_id": conversation_id,
            "message_id": answer_id,
            "model": model,
            "engine": "openai",
            "tier": "api",
            "intent": "card_arrival",
            "prompt_tokens": 11 + attempt,
            "completion_tokens": 7 + attempt,
            "latency_ms": 40 * (attempt + 1),
            "ttft_ms": None if attempt == 1 else 9 + attempt,
            "cache": "miss",
            "status": "escalated" if attempt < len(models) - 1 else "ok",
            "cost_usd": Decimal("0.000123456"),
            "baseline_cost_usd": Decimal("0.002"),
            "escalation_reason": f"low confidence {attempt}" if attempt != 1 else None,
            "created_at": now,
        }
        for attempt, model in enumerate(models)
    ]
    # the rollup increments as rollup_rows makes them, each sum then set apart from the others
    rollups = rollup_rows(ledger)
    for r, row in enumerate(rollups):
        row.update({name: 1000 * r + i + 1 for i, name in enumerate(SUMS)})
    return {
        "conversation": conversation,
        "messages": messages,
        "ledger": ledger,
        "rollups": rollups,
    }


@pytest.mark.parametrize(
    "models",
    [["frontier"], ["small", "frontier"], ["frontier", "frontier", "frontier"]],
    ids=["one call", "two models", "three calls, one rollup row"],
)
async def test_every_column_is_written(db: Database, models: list[str]) -> None:
    async with db.transaction() as session:
        tenant = Tenant(name=f"persist-{new_id()}")
        session.add(tenant)
    turn = _turn(tenant.id, models)
    assert persist_pg.fits(len(turn["ledger"]), len(turn["rollups"]))

    await persist_pg.write_new_conversation(db, **turn)

    async with db.session() as session:
        conversation = await session.get(Conversation, turn["conversation"]["id"])
        messages = (
            await session.scalars(
                select(Message)
                .where(Message.conversation_id == turn["conversation"]["id"])
                .order_by(Message.seq)
            )
        ).all()
        ledger = (
            await session.scalars(
                select(LedgerEntry)
                .where(LedgerEntry.conversation_id == turn["conversation"]["id"])
                .order_by(LedgerEntry.attempt)
            )
        ).all()
        rollups = (
            await session.execute(
                select(ledger_rollups)
                .where(ledger_rollups.c.tenant_id == tenant.id)
                .order_by(ledger_rollups.c.model)
            )
        ).all()
    assert conversation is not None
    assert _columns(conversation) == turn["conversation"]
    assert [_columns(m) for m in messages] == turn["messages"]
    assert [_columns(e, skip="id") for e in ledger] == turn["ledger"]
    assert [dict(r._mapping) for r in rollups] == turn["rollups"]
    assert set(rollups[0]._mapping) == {*KEY, *SUMS}


def _columns(row: Any, skip: str = "") -> dict[str, Any]:
    """An ORM row as {column name: value} (``metadata`` under its column name)."""
    return {
        attribute.columns[0].name: getattr(row, attribute.key)
        for attribute in row.__mapper__.column_attrs
        if attribute.columns[0].name != skip
    }
