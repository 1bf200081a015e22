"""The ledger rollup: per UTC day, tenant, model, engine, tier and intent, the sums that the
admin cost views read instead of scanning ``ledger_entries``.

It is kept up to date incrementally (:func:`add_to_rollup`, in the transaction that writes the
ledger rows) and can be recomputed from the ledger (:func:`rebuild`). Money is stored as whole
nano-dollars (``BigInteger``, 10^-9 USD, the ledger's own precision), so that every sum is exact
on SQLite (which has no exact decimal type) as on Postgres. Latencies go into a fixed histogram of
24 log-spaced upper bounds (25 ms to 60 s) plus an overflow bucket, from which percentiles are
estimated.

Each key has up to :data:`SHARDS` rows (the ``shard`` column, chosen at random per turn):
every turn adds to a rollup row in the transaction that commits its ledger rows, and with one
row per key concurrent turns would queue on that row's lock until each commit's WAL flush.
Readers sum over the shards like over any other key column.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    Date,
    ForeignKey,
    Integer,
    SmallInteger,
    String,
    Table,
    bindparam,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    literal_column,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from mvm_chat.store.models import CACHE_HITS, Base, LedgerEntry

BUCKET_BOUNDS_MS: tuple[int, ...] = (
    25, 35, 49, 69, 97, 136, 190, 267, 375, 526, 737, 1034,
    1451, 2035, 2854, 4003, 5616, 7877, 11049, 15498, 21740, 30494, 42775, 60000,
)  # fmt: skip
"""Upper bounds (exclusive) of the latency buckets: ``round(25 * 2400 ** (i / 23))`` ms."""
BUCKETS = tuple(f"lat_{i:02d}" for i in range(len(BUCKET_BOUNDS_MS) + 1))
"""Histogram columns: ``lat_00`` counts latencies under 25 ms, ``lat_24`` those of 60 s or more."""
DIMENSIONS = ("day", "tenant_id", "model", "engine", "tier", "intent")
"""What the sums are grouped by."""
KEY = (*DIMENSIONS, "shard")
SHARDS = 16
"""Rows per rollup key that concurrent turns spread their increments over."""
SUMS = (
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cost_nusd",
    "baseline_cost_nusd",
    "escalated",
    "errors",
    "cache_hits",
    *BUCKETS,
)
NANO = Decimal("1E9")

ledger_rollups = Table(
    "ledger_rollups",
    Base.metadata,
    Column("day", Date, primary_key=True),
    Column("tenant_id", String(32), ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    Column("model", String(200), primary_key=True),
    Column("engine", String(64), primary_key=True),
    Column("tier", String(64), primary_key=True),
    Column("intent", String(200), primary_key=True),
    Column("shard", SmallInteger, primary_key=True, server_default="0"),
    *(Column(name, BigInteger, nullable=False, default=0) for name in SUMS),
)


def to_nanos(amount: Decimal) -> int:
    """An amount of USD as whole nano-dollars (amounts are stored with 9 places)."""
    return int((amount * NANO).to_integral_value())


def from_nanos(nanos: int) -> Decimal:
    """Whole nano-dollars as USD with 9 decimal places."""
    return (Decimal(nanos) / NANO).quantize(Decimal(1).scaleb(-9))


def bucket_of(latency_ms: int) -> int:
    """The index of the histogram bucket that counts ``latency_ms``."""
    for i, bound in enumerate(BUCKET_BOUNDS_MS):
        if latency_ms < bound:
            return i
    return len(BUCKET_BOUNDS_MS)


def _utc_day(value: datetime) -> date:
    return value.astimezone(UTC).date()


def _values_of(row: Mapping[str, Any], shard: int) -> dict[str, Any]:
    values: dict[str, Any] = dict.fromkeys(SUMS, 0)
    values.update(
        day=_utc_day(row["created_at"]),
        tenant_id=row["tenant_id"],
        model=row["model"],
        engine=row["engine"],
        tier=row["tier"],
        intent=row["intent"] or "",
        shard=shard,
        requests=1,
        prompt_tokens=row["prompt_tokens"] or 0,
        completion_tokens=row["completion_tokens"] or 0,
        cost_nusd=to_nanos(row["cost_usd"] or Decimal(0)),
        baseline_cost_nusd=to_nanos(row["baseline_cost_usd"] or Decimal(0)),
        escalated=int(row["status"] == "escalated"),
        errors=int(row["status"] == "error"),
        cache_hits=int(row["cache"] in CACHE_HITS),
    )
    values[BUCKETS[bucket_of(row["latency_ms"] or 0)]] = 1
    return values


def rollup_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The rollup increments of ledger rows (column values, ``created_at`` included), one
    per rollup key, in key order (so that concurrent writers lock rollup rows in one
    order)."""
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    shard = random.randrange(SHARDS)
    for row in rows:
        values = _values_of(row, shard)
        key = tuple(values[k] for k in KEY)
        if key in merged:
            for name in SUMS:
                merged[key][name] += values[name]
        else:
            merged[key] = values
    return [merged[key] for key in sorted(merged)]


async def add_to_rollup(session: AsyncSession, ledger: Iterable[Mapping[str, Any]]) -> None:
    """Count ledger rows that ``session`` is writing into the rollup (same transaction)."""
    rows = rollup_rows(ledger)
    if not rows:
        return
    upsert = rollup_upsert(session.get_bind().dialect.name)
    await session.execute(upsert, rows[0] if len(rows) == 1 else rows)


_UPSERTS: dict[tuple[str, int], Any] = {}


def rollup_upsert(dialect: str, rows: int = 0) -> Any:
    """The rollup's upsert for ``dialect``, built once (so it compiles once, not per turn);
    with ``rows``, for that many rows of bound parameters ``r{i}_{column}`` in one VALUES."""
    found = _UPSERTS.get((dialect, rows))
    if found is None:
        stmt = (pg_insert if dialect == "postgresql" else sqlite_insert)(ledger_rollups)
        if rows:
            names = (*KEY, *SUMS)
            stmt = stmt.values(
                [
                    {n: bindparam(f"r{i}_{n}", type_=ledger_rollups.c[n].type) for n in names}
                    for i in range(rows)
                ]
            )
        update = {name: ledger_rollups.c[name] + stmt.excluded[name] for name in SUMS}
        found = _UPSERTS[dialect, rows] = stmt.on_conflict_do_update(
            index_elements=list(KEY), set_=update
        )
    return found


def day_of(dialect: str, column: Any) -> ColumnElement[Any]:
    """SQL for the UTC day of a timestamp column."""
    if dialect == "postgresql":
        # A literal, not a bound parameter, so that GROUP BY matches the selected expression.
        return cast(func.timezone(literal_column("'UTC'"), column), Date)
    return func.date(column)


def intent_of(column: Any) -> ColumnElement[Any]:
    """SQL for the rollup's intent key of a ledger row: its label, or '' for none."""
    return func.coalesce(column, literal_column("''"))


def nanos_of(dialect: str, column: Any) -> ColumnElement[Any]:
    """SQL for a stored money column as whole nano-dollars (SQLite keeps it as a float)."""
    if dialect == "postgresql":
        return cast(column * 1_000_000_000, BigInteger)
    return cast(func.round(column * 1_000_000_000), Integer)


def ledger_sums(dialect: str) -> list[ColumnElement[Any]]:
    """Aggregates over ``ledger_entries`` that match the rollup's sum columns, labelled alike."""
    le = LedgerEntry.__table__.c
    one, zero = literal(1), literal(0)
    sums: list[ColumnElement[Any]] = [
        func.count().label("requests"),
        func.coalesce(func.sum(le.prompt_tokens), 0).label("prompt_tokens"),
        func.coalesce(func.sum(le.completion_tokens), 0).label("completion_tokens"),
        func.coalesce(func.sum(nanos_of(dialect, le.cost_usd)), 0).label("cost_nusd"),
        func.coalesce(func.sum(nanos_of(dialect, le.baseline_cost_usd)), 0).label(
            "baseline_cost_nusd"
        ),
        func.coalesce(func.sum(case((le.status == "escalated", one), else_=zero)), 0).label(
            "escalated"
        ),
        func.coalesce(func.sum(case((le.status == "error", one), else_=zero)), 0).label("errors"),
        func.coalesce(func.sum(case((le.cache.in_(CACHE_HITS), one), else_=zero)), 0).label(
            "cache_hits"
        ),
    ]
    for i, name in enumerate(BUCKETS):
        if i == 0:
            inside = le.latency_ms < BUCKET_BOUNDS_MS[0]
        elif i == len(BUCKET_BOUNDS_MS):
            inside = le.latency_ms >= BUCKET_BOUNDS_MS[-1]
        else:
            inside = (le.latency_ms >= BUCKET_BOUNDS_MS[i - 1]) & (
                le.latency_ms < BUCKET_BOUNDS_MS[i]
            )
        sums.append(func.coalesce(func.sum(case((inside, one), else_=zero)), 0).label(name))
    return sums


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


async def rebuild(session: AsyncSession, start: date | None = None, end: date | None = None) -> int:
    """Recompute the rollup from ``ledger_entries`` for the days in ``[start, end)`` (every day
    when both are None); returns the number of rollup rows written."""
    dialect = session.get_bind().dialect.name
    le = LedgerEntry.__table__.c
    removal = delete(ledger_rollups)
    source = (
        LedgerEntry.__table__.select()
        .with_only_columns(
            day_of(dialect, le.created_at).label("day"),
            le.tenant_id,
            le.model,
            le.engine,
            le.tier,
            intent_of(le.intent).label("intent"),
            *ledger_sums(dialect),
        )
        .group_by(
            day_of(dialect, le.created_at),
            le.tenant_id,
            le.model,
            le.engine,
            le.tier,
            intent_of(le.intent),
        )
    )
    if start is not None:
        removal = removal.where(ledger_rollups.c.day >= start)
        source = source.where(le.created_at >= _midnight(start))
    if end is not None:
        removal = removal.where(ledger_rollups.c.day < end)
        source = source.where(le.created_at < _midnight(end))
    await session.execute(removal)
    # one row per key (shard 0, the column's default)
    result = await session.execute(insert(ledger_rollups).from_select([*DIMENSIONS, *SUMS], source))
    return int(getattr(result, "rowcount", 0) or 0)
