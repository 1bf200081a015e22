"""Budget arithmetic: worst cases, what counts as paid, and reservations that cannot
overspend, on the database (SQLite, Postgres) and on Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import redis

from mvm_chat.chat.router import Load, best_free
from mvm_chat.ledger import budget_store
from mvm_chat.ledger.budget_redis import RedisBudgetCounters, from_nanos, to_nanos
from mvm_chat.ledger.budgets import Budgets, TenantBudget, counts, generous_prompt_tokens
from mvm_chat.ledger.pricing import max_call_cost
from mvm_chat.settings import ModelSettings, RedisSettings, Settings, TierSettings
from mvm_chat.store.db import Database, upgrade
from mvm_chat.store.models import Budget, LedgerEntry, Tenant, new_id
from tests.support import REDIS_UP_TIMEOUT_S, free_port

API = ModelSettings(
    name="frontier",
    tier="api",
    engine="openai",
    price_input_per_mtok=Decimal("2.50"),
    price_output_per_mtok=Decimal("10.00"),
)
GPU = ModelSettings(
    name="big", tier="gpu", engine="sglang", gpu_hour_usd=Decimal("3.60"), gpus=2, timeout_s=10
)
CPU = ModelSettings(name="small", tier="local", engine="llamacpp", timeout_s=30)


def test_max_call_cost_is_the_worst_case_rounded_up() -> None:
    # 1000 prompt tokens at $2.50/M + 200 completion tokens at $10/M
    assert max_call_cost(API, 1000, 200) == Decimal("0.004500000")
    # one token each: 0.0000125 exactly, no rounding needed
    assert max_call_cost(API, 1, 1) == Decimal("0.000012500")
    odd = ModelSettings(
        name="odd",
        tier="api",
        engine="openai",
        price_input_per_mtok=Decimal("0.001"),
        price_output_per_mtok=Decimal("0"),
    )
    assert max_call_cost(odd, 1, 0) == Decimal("0.000000001")  # 1e-12 rounds up, not to 0
    # sglang: 10 s of 2 GPUs at $3.60/h = $0.02
    assert max_call_cost(GPU, 5000, 5000) == Decimal("0.020000000")
    assert max_call_cost(CPU, 100, 100) == Decimal(0)  # CPU time is free by default
    assert generous_prompt_tokens(100) == 264


def test_what_counts_as_paid() -> None:
    assert counts("openai", False) and counts("openai", True)
    assert not counts("sglang", False) and counts("sglang", True)
    assert not counts("llamacpp", False) and counts("llamacpp", True)
    assert not counts("skill", True) and not counts("human", True)
    budget = TenantBudget("t", Decimal(1), True, "2026-01", Decimal(0))
    assert budget.is_paid(API) and budget.is_paid(GPU)
    assert not budget.is_paid(CPU), "a model priced at zero needs no reservation"
    without = TenantBudget("t", Decimal(1), False, "2026-01", Decimal(0))
    assert without.is_paid(API) and not without.is_paid(GPU)


def test_months_are_utc_calendar_months() -> None:
    assert budget_store.month_of(datetime(2026, 12, 31, 23, 59, tzinfo=UTC)) == "2026-12"
    assert budget_store.month_bounds("2026-12") == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    assert budget_store.month_bounds("2026-02")[1] == datetime(2026, 3, 1, tzinfo=UTC)


def test_nanos() -> None:
    assert to_nanos(Decimal("0.000000001")) == 1
    assert to_nanos(Decimal("1.0000000001"), round_up=True) == 1_000_000_001
    assert from_nanos(1_500_000_000) == Decimal("1.5")


async def _database(url: str) -> Database:
    await asyncio.to_thread(upgrade, url)
    return Database(url)


async def _tenant(db: Database, monthly: str, include: bool = False) -> TenantBudget:
    tenant_id = new_id()
    async with db.transaction() as session:
        session.add(Tenant(id=tenant_id, name=f"t-{tenant_id[:8]}"))
        await session.flush()
        session.add(
            Budget(tenant_id=tenant_id, monthly_usd=Decimal(monthly), include_self_hosted=include)
        )
    month = budget_store.month_of()
    return TenantBudget(tenant_id, Decimal(monthly), include, month, Decimal(0))


async def _ledger(db: Database, tenant_id: str, engine: str, cost: str) -> None:
    async with db.transaction() as session:
        session.add(
            LedgerEntry(
                request_id=new_id(),
                tenant_id=tenant_id,
                model=engine,
                engine=engine,
                tier="x",
                cost_usd=Decimal(cost),
            )
        )


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[Database]:
    db = await _database(f"sqlite+aiosqlite:///{tmp_path / 'budgets.db'}")
    yield db
    await db.dispose()


@pytest.fixture
async def pg_db(pg_url: str) -> AsyncIterator[Database]:
    db = await _database(pg_url)
    yield db
    await db.dispose()


async def _month(budgets: Budgets, budget: TenantBudget) -> tuple[Decimal, Decimal, int]:
    async with budgets.db.session() as session:
        row = await budget_store.read_month(session, budget.tenant_id, budget.month)
    assert row is not None
    return Decimal(str(row.spent_usd)), Decimal(str(row.reserved_usd)), row.notified_pct


async def _check_database_arithmetic(db: Database) -> None:
    budgets = Budgets(db)
    budget = await _tenant(db, "0.300000001")
    # the month's row starts from the ledger's paid rows (self-hosted ones do not count)
    await _ledger(db, budget.tenant_id, "openai", "0.1")
    await _ledger(db, budget.tenant_id, "sglang", "5")
    first = await budgets.reserve(budget, Decimal("0.2"))
    assert first is not None and first.backend == "database"
    assert await _month(budgets, budget) == (Decimal("0.1"), Decimal("0.2"), 0)
    # exactly the rest of the budget fits (0.1 + 0.2 + 1e-9: no float rounding on SQLite)
    last = await budgets.reserve(budget, Decimal("0.000000001"))
    assert last is not None
    assert await budgets.reserve(budget, Decimal("0.000000001")) is None
    # settling releases the reservation and books the real cost; the thresholds reached
    # (0.25 of 0.300000001 is 83%) are announced once
    crossings = await budgets.settle(first, Decimal("0.15"))
    assert [c.threshold for c in crossings] == [50, 80]
    assert crossings[0].spent_usd == Decimal("0.25")
    assert await budgets.settle(first, Decimal("0.15")) == [], "settling twice does nothing"
    assert await _month(budgets, budget) == (Decimal("0.25"), Decimal("0.000000001"), 80)
    assert await budgets.reserve(budget, Decimal("0.05")) is not None
    assert await budgets.reserve(budget, Decimal("0.05")) is None


async def test_database_reservations_on_sqlite(sqlite_db: Database) -> None:
    await _check_database_arithmetic(sqlite_db)


async def test_database_reservations_on_postgres(pg_db: Database) -> None:
    await _check_database_arithmetic(pg_db)


async def _check_concurrency(budgets: Budgets, db: Database) -> None:
    """50 concurrent reservations of 0.07 on a budget of 1: exactly 14 fit, and concurrent
    settlements announce each threshold exactly once."""
    budget = await _tenant(db, "1.00")
    held = await asyncio.gather(*(budgets.reserve(budget, Decimal("0.07")) for _ in range(50)))
    won = [h for h in held if h is not None]
    assert len(won) == 14
    crossings = await asyncio.gather(*(budgets.settle(h, Decimal("0.07")) for h in won))
    announced = sorted(c.threshold for batch in crossings for c in batch)
    assert announced == [50, 80]  # 14 x 0.07 = 0.98: 100% is not reached
    settled = await budgets.reserve(budget, Decimal("0.02"))
    assert settled is not None
    assert [c.threshold for c in await budgets.settle(settled, Decimal("0.02"))] == [100]


async def test_concurrent_reservations_on_sqlite(sqlite_db: Database) -> None:
    await _check_concurrency(Budgets(sqlite_db), sqlite_db)


async def test_concurrent_reservations_on_postgres(pg_db: Database) -> None:
    await _check_concurrency(Budgets(pg_db), pg_db)


async def test_concurrent_reservations_on_redis(
    sqlite_db: Database, redis_url: str, redis_prefix: str
) -> None:
    up = RedisSettings(url=redis_url, key_prefix=redis_prefix, timeout_s=REDIS_UP_TIMEOUT_S)
    budgets = Budgets(sqlite_db, up)
    try:
        await _check_concurrency(budgets, sqlite_db)
    finally:
        await budgets.close()


async def test_redis_counter_starts_from_the_database(
    sqlite_db: Database, redis_url: str, redis_prefix: str
) -> None:
    up = RedisSettings(url=redis_url, key_prefix=redis_prefix, timeout_s=REDIS_UP_TIMEOUT_S)
    budgets = Budgets(sqlite_db, up)
    try:
        budget = await _tenant(sqlite_db, "1.00", include=True)
        await _ledger(sqlite_db, budget.tenant_id, "sglang", "0.4")
        held = await budgets.reserve(budget, Decimal("0.5"))
        assert held is not None and held.backend == "redis"
        key = f"{redis_prefix}budget:{budget.tenant_id}:{budget.month}"
        raw = redis.Redis.from_url(redis_url)
        assert raw.hgetall(key) == {b"spent": b"400000000", b"reserved": b"500000000"}
        assert 0 < raw.ttl(key) <= 3600
        assert await budgets.reserve(budget, Decimal("0.2")) is None
        await budgets.settle(held, Decimal("0.1"))
        assert raw.hgetall(key) == {b"spent": b"500000000", b"reserved": b"0"}
        # the database's counter follows, for the thresholds and the reports
        assert await _month(budgets, budget) == (Decimal("0.5"), Decimal(0), 50)
        raw.close()
    finally:
        await budgets.close()


async def test_unreachable_redis_falls_back_to_the_database(sqlite_db: Database) -> None:
    down = RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2)
    budgets = Budgets(sqlite_db, down)
    try:
        budget = await _tenant(sqlite_db, "0.10")
        held = await budgets.reserve(budget, Decimal("0.06"))
        assert held is not None and held.backend == "database"
        assert await budgets.reserve(budget, Decimal("0.06")) is None, "never 'no limit'"
        await budgets.settle(held, Decimal("0.01"))
        assert await _month(budgets, budget) == (Decimal("0.01"), Decimal(0), 0)
    finally:
        await budgets.close()


async def test_zero_cost_needs_no_reservation(sqlite_db: Database) -> None:
    budgets = Budgets(sqlite_db)
    budget = await _tenant(sqlite_db, "0")
    free = await budgets.reserve(budget, Decimal(0))
    assert free is not None and free.backend == "none"
    assert await budgets.reserve(budget, Decimal("0.000000001")) is None


def test_counters_use_the_prefix() -> None:
    counters = RedisBudgetCounters("redis://127.0.0.1:1/0", "p:", 0.1)
    assert counters.key("t", "2026-01") == "p:budget:t:2026-01"


def test_best_free_model_is_the_highest_free_tier_below() -> None:
    local = ModelSettings(
        name="small", tier="local", engine="llamacpp", cpu_hour_usd=Decimal("1"), timeout_s=5
    )
    settings = Settings(
        tiers=[TierSettings(name=n) for n in ("local", "gpu", "api", "human")],
        models=[local, GPU, API],
    )
    up = Load(available=lambda m: True, queue_depth=lambda m: 0, predicted_wait_s=lambda m: 0.0)
    api_only = TenantBudget("t", Decimal(1), False, "2026-01", Decimal(0))
    everything = TenantBudget("t", Decimal(1), True, "2026-01", Decimal(0))

    def free(budget: TenantBudget) -> Callable[[ModelSettings], bool]:
        return lambda m: not budget.is_paid(m)

    assert best_free(settings, API, free(api_only), up) is GPU
    gpu_down = Load(
        available=lambda m: m is not GPU, queue_depth=lambda m: 0, predicted_wait_s=lambda m: 0.0
    )
    assert best_free(settings, API, free(api_only), gpu_down) is local
    # everything is paid: the default tier's model is the last resort
    assert best_free(settings, API, free(everything), up) is local
    assert best_free(settings, local, free(everything), up) is local
    assert best_free(settings, API, free(everything), up, exclude={"small"}) is None
