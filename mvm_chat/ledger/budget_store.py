"""Budget counters in the database, the same on SQLite and Postgres.

One ``budget_months`` row per tenant and UTC calendar month holds ``spent_usd`` (initialised
from the ledger, then raised by every settled call), ``reserved_usd`` (calls in flight, when
the reservations are kept here rather than in Redis) and ``notified_pct`` (the highest
threshold announced). Every change is one conditional ``UPDATE``, so concurrent processes
need no lock of their own: the row lock (Postgres) or the write lock (SQLite) orders them.

SQLite keeps ``NUMERIC`` values as binary floats, so the budget check compares amounts
rounded to whole nano-dollars: exact for budgets up to millions of dollars.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, case, func, literal, literal_column, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from mvm_chat.store.models import MONEY, BudgetMonth, LedgerEntry

SELF_HOSTED_ENGINES = ("sglang", "llamacpp")
"""Engines whose cost is our own hardware's time: paid only when a budget includes them."""
THRESHOLDS = (50, 80, 100)
"""Percentages of a budget whose first crossing in a month is announced."""
_NANO: ColumnElement[Any] = literal_column("1000000000")


def month_of(moment: datetime | None = None) -> str:
    """The UTC calendar month of ``moment`` (default: now) as ``YYYY-MM``."""
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m")


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """The first instant of ``month`` and of the month after it (UTC)."""
    start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    year, index = divmod(start.month, 12)
    return start, start.replace(year=start.year + year, month=index + 1)


def _key(tenant_id: str, month: str) -> list[ColumnElement[bool]]:
    return [BudgetMonth.tenant_id == tenant_id, BudgetMonth.month == month]


def _nanos(amount: ColumnElement[Decimal]) -> ColumnElement[Decimal]:
    return func.round(amount * _NANO)


async def ledger_spent(
    session: AsyncSession, tenant_id: str, month: str, include_self_hosted: bool
) -> Decimal:
    """The truth: the sum of the tenant's paid ledger rows in ``month``."""
    start, end = month_bounds(month)
    query = select(func.coalesce(func.sum(LedgerEntry.cost_usd), 0)).where(
        LedgerEntry.tenant_id == tenant_id,
        LedgerEntry.created_at >= start,
        LedgerEntry.created_at < end,
    )
    if not include_self_hosted:
        query = query.where(LedgerEntry.engine.not_in(SELF_HOSTED_ENGINES))
    return Decimal(str(await session.scalar(query) or 0))


async def ensure_month(session: AsyncSession, tenant_id: str, month: str, spent: Decimal) -> bool:
    """Create the month's row with ``spent`` unless it exists; True when this call made it."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        insert(BudgetMonth)
        .values(
            tenant_id=tenant_id,
            month=month,
            spent_usd=spent,
            reserved_usd=Decimal(0),
            notified_pct=0,
        )
        .on_conflict_do_nothing(index_elements=["tenant_id", "month"])
    )
    result = await session.execute(statement)
    return bool(getattr(result, "rowcount", 0))


async def read_month(session: AsyncSession, tenant_id: str, month: str) -> BudgetMonth | None:
    return await session.scalar(select(BudgetMonth).where(*_key(tenant_id, month)))


async def try_reserve(
    session: AsyncSession, tenant_id: str, month: str, amount: Decimal, budget: Decimal
) -> bool:
    """Add ``amount`` to the reservations if spent + reserved + amount <= ``budget``."""
    total = BudgetMonth.spent_usd + BudgetMonth.reserved_usd + amount
    statement = (
        update(BudgetMonth)
        .where(*_key(tenant_id, month), _nanos(total) <= _nanos(literal_money(budget)))
        .values(reserved_usd=BudgetMonth.reserved_usd + amount)
        .execution_options(synchronize_session=False)
    )
    result = await session.execute(statement)
    return bool(getattr(result, "rowcount", 0))


def literal_money(amount: Decimal) -> ColumnElement[Decimal]:
    return literal(amount, MONEY)


async def settle(
    session: AsyncSession, tenant_id: str, month: str, released: Decimal, cost: Decimal
) -> Decimal | None:
    """Release ``released`` of the reservations and add ``cost`` to the spend; returns the
    month's spend after it, or None when the row does not exist."""
    left = BudgetMonth.reserved_usd - released
    statement = (
        update(BudgetMonth)
        .where(*_key(tenant_id, month))
        .values(
            reserved_usd=case((left < 0, Decimal(0)), else_=left),
            spent_usd=BudgetMonth.spent_usd + cost,
        )
        .execution_options(synchronize_session=False)
    )
    result = await session.execute(statement)
    if not getattr(result, "rowcount", 0):
        return None
    spent = await session.scalar(select(BudgetMonth.spent_usd).where(*_key(tenant_id, month)))
    return Decimal(str(spent or 0))


def percent(spent: Decimal, budget: Decimal) -> Decimal:
    """``spent`` as a percentage of ``budget`` (100 for a zero budget)."""
    return Decimal(100) if budget <= 0 else spent * 100 / budget


def reached(spent: Decimal, budget: Decimal) -> int:
    """The highest threshold ``spent`` has reached (0 if none)."""
    pct = percent(spent, budget)
    return max((t for t in THRESHOLDS if pct >= t), default=0)


async def claim_thresholds(
    session: AsyncSession, tenant_id: str, month: str, spent: Decimal, budget: Decimal
) -> list[int]:
    """The thresholds this caller announces: each is claimed by one conditional update, so
    that exactly one process (and one call) wins it."""
    won: list[int] = []
    if budget <= 0:
        return won
    for threshold in (t for t in THRESHOLDS if t <= reached(spent, budget)):
        statement = (
            update(BudgetMonth)
            .where(*_key(tenant_id, month), BudgetMonth.notified_pct < threshold)
            .values(notified_pct=threshold)
            .execution_options(synchronize_session=False)
        )
        if getattr(await session.execute(statement), "rowcount", 0):
            won.append(threshold)
    return won


async def resync(
    session: AsyncSession, tenant_id: str, month: str, spent: Decimal, budget: Decimal
) -> None:
    """Set the month's spend to ``spent`` (the ledger's sum); thresholds it does not reach
    under ``budget`` may be announced again."""
    statement = (
        update(BudgetMonth)
        .where(*_key(tenant_id, month))
        .values(
            spent_usd=spent,
            notified_pct=case(
                (BudgetMonth.notified_pct > reached(spent, budget), reached(spent, budget)),
                else_=BudgetMonth.notified_pct,
            ),
        )
        .execution_options(synchronize_session=False)
    )
    await session.execute(statement)


async def renotify(session: AsyncSession, tenant_id: str, month: str, budget: Decimal) -> None:
    """After a change of the amount: thresholds the spend no longer reaches under the new
    amount may be announced again (a lowered amount announces at the next settlement)."""
    row = await read_month(session, tenant_id, month)
    if row is not None:
        row.notified_pct = min(row.notified_pct, reached(Decimal(str(row.spent_usd)), budget))
