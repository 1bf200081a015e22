"""Cost reports over the ledger: summaries, ledger pages and CSV, and rightsizing advice.

Pure functions over an :class:`~sqlalchemy.ext.asyncio.AsyncSession`, shared by the admin API
and the dashboard. Summaries read whole UTC days from the rollup (``store/rollups.py``) and only
the partial days at the edges of a range from ``ledger_entries``, so they cost the same at a
thousand rows as at millions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mvm_chat.errors import InvalidInput
from mvm_chat.ledger.report_ledger import (
    STATUSES,
    LedgerFilters,
    LedgerRow,
    ledger_csv,
    ledger_page,
    tenant_id_of,
)
from mvm_chat.ledger.report_rightsizing import rightsizing
from mvm_chat.ledger.report_rows import CostRow, Tally, estimate_percentile, usd
from mvm_chat.store.models import LedgerEntry, Tenant
from mvm_chat.store.rollups import SUMS, day_of, intent_of, ledger_rollups, ledger_sums

__all__ = [
    "GROUP_BY",
    "STATUSES",
    "CostRow",
    "LedgerFilters",
    "LedgerRow",
    "Summary",
    "estimate_percentile",
    "ledger_csv",
    "ledger_page",
    "rightsizing",
    "summary",
    "tenant_id_of",
    "usd",
]

GROUP_BY = ("day", "model", "tier", "tenant", "intent")
DAY = timedelta(days=1)


@dataclass(frozen=True)
class Summary:
    """Spend in ``[start, end)`` grouped by ``group_by``, with the totals."""

    start: datetime
    end: datetime
    group_by: str
    rows: list[CostRow]
    totals: CostRow

    def as_json(self) -> dict[str, Any]:
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "group_by": self.group_by,
            "rows": [row.as_json() for row in self.rows],
            "totals": self.totals.as_json(with_key=False),
        }


def floor_day(moment: datetime) -> datetime:
    """Midnight (UTC) of the day of ``moment``."""
    return datetime.combine(moment.astimezone(UTC).date(), time(), tzinfo=UTC)


def ceil_day(moment: datetime) -> datetime:
    """``moment`` if it is a UTC midnight, else the next one."""
    floor = floor_day(moment)
    return floor if floor == moment else floor + DAY


def plan(
    start: datetime, end: datetime, now: datetime
) -> tuple[tuple[date, date] | None, list[tuple[datetime, datetime]]]:
    """Split ``[start, end)`` into whole UTC days ``[first, last)`` for the rollup and the
    partial days at its edges for ``ledger_entries``. No row is newer than ``now``, so a range
    that reaches ``now`` covers the rest of its last day, too."""
    if end >= now:
        end = ceil_day(end)
    if start >= end:
        return None, []
    first, last = ceil_day(start), floor_day(end)
    if first >= last:
        return None, [(start, end)]
    partial = []
    if start < first:
        partial.append((start, first))
    if last < end:
        partial.append((last, end))
    return (first.date(), last.date()), partial


def _group_columns(group_by: str, dialect: str) -> tuple[Any, Any]:
    """The grouping expression over the rollup and over ``ledger_entries``."""
    le, r = LedgerEntry.__table__.c, ledger_rollups.c
    if group_by == "day":
        return r.day, day_of(dialect, le.created_at)
    if group_by == "tenant":
        return r.tenant_id, le.tenant_id
    if group_by == "intent":
        return r.intent, intent_of(le.intent)
    if group_by in ("model", "tier"):
        return r[group_by], le[group_by]
    raise InvalidInput("group_by", f"must be one of {', '.join(GROUP_BY)}")


async def _tallies(session: AsyncSession, query: Select[Any], into: dict[Any, Tally]) -> None:
    for row in (await session.execute(query)).mappings():
        key = str(row["k"])[:10] if isinstance(row["k"], date) else row["k"]
        into.setdefault(key, Tally()).add_row(row)


async def summary(
    session: AsyncSession,
    start: datetime,
    end: datetime,
    group_by: str,
    tenant_id: str | None = None,
    now: datetime | None = None,
) -> Summary:
    """Spend in ``[start, end)`` by ``group_by`` (day, model, tier, tenant or intent).

    Rows are keyed by the day (``YYYY-MM-DD``), model, tier, tenant name or intent label (None:
    no intent); days come in order, other groups by cost, highest first. The totals are the
    exact sums of the ledger rows in the range.
    """
    dialect = session.get_bind().dialect.name
    rollup_key, ledger_key = _group_columns(group_by, dialect)
    days, partial = plan(start, end, now or datetime.now(UTC))
    tallies: dict[Any, Tally] = {}
    if days is not None:
        r = ledger_rollups.c
        query = (
            select(rollup_key.label("k"), *(func.sum(r[name]).label(name) for name in SUMS))
            .where(r.day >= days[0], r.day < days[1])
            .group_by(rollup_key)
        )
        if tenant_id is not None:
            query = query.where(r.tenant_id == tenant_id)
        await _tallies(session, query, tallies)
    le = LedgerEntry.__table__.c
    for lo, hi in partial:
        query = (
            select(ledger_key.label("k"), *ledger_sums(dialect))
            .where(le.created_at >= lo, le.created_at < hi)
            .group_by(ledger_key)
        )
        if tenant_id is not None:
            query = query.where(le.tenant_id == tenant_id)
        await _tallies(session, query, tallies)
    names: dict[Any, str] = {}
    if group_by == "tenant" and tallies:
        found = await session.execute(
            select(Tenant.id, Tenant.name).where(Tenant.id.in_(list(tallies)))
        )
        names = {tenant: name for tenant, name in found.tuples()}
    rows = [
        tally.row(names.get(key, key) if group_by == "tenant" else (key or None))
        for key, tally in tallies.items()
    ]
    if group_by == "day":
        rows.sort(key=lambda row: row.key or "")
    else:
        rows.sort(key=lambda row: (-row.cost_usd, -row.requests, row.key or ""))
    totals = Tally()
    for tally in tallies.values():
        totals.add(tally)
    return Summary(start, end, group_by, rows, totals.row(None))
