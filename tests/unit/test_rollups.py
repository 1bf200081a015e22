"""The ledger rollup: incremental upserts agree with a rebuild from the ledger, on SQLite and
Postgres; percentile estimates from its histogram."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from mvm_chat.ledger.report_rows import estimate_percentile
from mvm_chat.store.db import Database, upgrade
from mvm_chat.store.keys import get_or_create_tenant
from mvm_chat.store.models import LedgerEntry
from mvm_chat.store.rollups import (
    BUCKET_BOUNDS_MS,
    BUCKETS,
    DIMENSIONS,
    SUMS,
    add_to_rollup,
    bucket_of,
    from_nanos,
    ledger_rollups,
    rebuild,
    to_nanos,
)


def test_buckets_are_log_spaced_from_25_ms_to_60_s() -> None:
    assert BUCKET_BOUNDS_MS[0] == 25 and BUCKET_BOUNDS_MS[-1] == 60_000
    assert len(BUCKETS) == len(BUCKET_BOUNDS_MS) + 1 == 25
    assert bucket_of(0) == 0 and bucket_of(24) == 0 and bucket_of(25) == 1
    assert bucket_of(59_999) == 23 and bucket_of(60_000) == 24 and bucket_of(10**9) == 24


def test_percentile_interpolates_inside_the_bucket() -> None:
    histogram = [0] * len(BUCKETS)
    histogram[bucket_of(30)] = 50  # [25, 35)
    histogram[bucket_of(100)] = 50  # [97, 136)
    assert estimate_percentile(histogram, 0.5) == 35.0
    assert estimate_percentile(histogram, 0.95) == pytest.approx(97 + 39 * 0.9)
    assert estimate_percentile([0] * len(BUCKETS), 0.5) is None
    overflow = [0] * len(BUCKETS)
    overflow[-1] = 3
    assert estimate_percentile(overflow, 0.5) == 60_000.0


def test_money_round_trips_through_nano_dollars() -> None:
    assert to_nanos(Decimal("0.000272500")) == 272_500
    assert from_nanos(272_500) == Decimal("0.000272500")
    assert from_nanos(0) == 0


def _entries(tenant_id: str, count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    base = datetime(2026, 11, 1, tzinfo=UTC)
    entries = []
    for i in range(count):
        entries.append(
            dict(
                request_id=f"r{seed}-{i}",
                attempt=0,
                tenant_id=tenant_id,
                model=rng.choice(["small", "frontier"]),
                engine="llamacpp",
                tier=rng.choice(["local", "api"]),
                intent=rng.choice([None, "card_arrival", "exchange_rate"]),
                prompt_tokens=rng.randint(1, 900),
                completion_tokens=rng.randint(0, 300),
                latency_ms=rng.choice([3, 25, 120, 999, 59_999, 60_000, 250_000]),
                cache=rng.choice(["hit", "miss", "off"]),
                status=rng.choice(["ok", "ok", "escalated", "error"]),
                cost_usd=Decimal(rng.randint(0, 10**7)).scaleb(-9),
                baseline_cost_usd=Decimal(rng.randint(0, 10**7)).scaleb(-9),
                # around midnight, so that rows fall on both sides of a day boundary
                created_at=base + timedelta(days=i % 3, seconds=rng.randint(-5, 5)),
            )
        )
    return entries


async def _snapshot(db: Database) -> list[tuple[Any, ...]]:
    """The rollup summed over its shards, by key."""
    r = ledger_rollups.c
    dimensions = [r[name] for name in DIMENSIONS]
    async with db.session() as session:
        query = (
            select(*dimensions, *(func.sum(r[name]) for name in SUMS))
            .group_by(*dimensions)
            .order_by(*dimensions)
        )
        return [tuple(row) for row in (await session.execute(query)).all()]


async def _check_upsert_matches_rebuild(url: str) -> None:
    await asyncio.to_thread(upgrade, url)
    db = Database(url)
    try:
        async with db.transaction() as session:
            tenant_id = (await get_or_create_tenant(session, "acme")).id
        for seed in range(4):  # several transactions, hitting the same rollup keys again
            async with db.transaction() as session:
                entries = _entries(tenant_id, 40, seed)
                await session.execute(insert(LedgerEntry), entries)
                await add_to_rollup(session, entries)
        incremental = await _snapshot(db)
        async with db.transaction() as session:
            await rebuild(session)
        assert await _snapshot(db) == incremental
        totals = [sum(row[i] for row in incremental) for i in range(6, len(incremental[0]))]
        assert totals[0] == 160  # requests
        assert sum(totals[-len(BUCKETS) :]) == 160  # every call is in one latency bucket
        async with db.session() as session:
            cost = sum((await session.scalars(select(LedgerEntry.cost_usd))).all(), Decimal(0))
        assert from_nanos(totals[3]) == cost
    finally:
        await db.dispose()


async def test_upserts_match_a_rebuild_on_sqlite(tmp_path: Path) -> None:
    await _check_upsert_matches_rebuild(f"sqlite+aiosqlite:///{tmp_path / 'rollups.db'}")


@pytest.mark.postgres
async def test_upserts_match_a_rebuild_on_postgres(pg_url: str) -> None:
    await _check_upsert_matches_rebuild(pg_url)
