"""What the dashboard shows, gathered in one place: cost summaries, open handoffs, budgets."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mvm_chat.ledger import budget_reports
from mvm_chat.ledger.budget_reports import BudgetReport
from mvm_chat.ledger.budgets import Budgets
from mvm_chat.ledger.reports import CostRow, summary
from mvm_chat.store.models import Handoff, Tenant

DAYS = 30
TOP_INTENTS = 10
HANDOFF_ROWS = 20


@dataclass(frozen=True, slots=True)
class OpenHandoff:
    """An open handoff as the dashboard lists it."""

    id: str
    tenant: str
    conversation_id: str
    reason: str
    created_at: datetime


@dataclass(slots=True)
class DashboardData:
    """Everything on the dashboard for the window ``[start, end)``."""

    start: datetime
    end: datetime
    days: int
    month: str
    baseline_model: str
    totals: CostRow
    by_day: list[CostRow] = field(default_factory=list)
    tiers: list[CostRow] = field(default_factory=list)
    intents: list[CostRow] = field(default_factory=list)
    handoffs: list[OpenHandoff] = field(default_factory=list)
    open_handoffs: int = 0
    budgets: list[BudgetReport] = field(default_factory=list)

    @property
    def first_day(self) -> date:
        return self.start.date()

    @property
    def last_day(self) -> date:
        return (self.end - timedelta(microseconds=1)).date()

    @property
    def savings_pct(self) -> str | None:
        """Savings as a percentage of the baseline, one decimal place (None without one)."""
        baseline = self.totals.baseline_cost_usd
        if baseline <= 0:
            return None
        return str((self.totals.savings_usd * 100 / baseline).quantize(Decimal("0.1")))


def window(now: datetime, days: int = DAYS) -> tuple[datetime, datetime]:
    """The last ``days`` whole UTC calendar days, today included: ``[start, end)``."""
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days - 1), today + timedelta(days=1)


async def open_handoffs(session: AsyncSession) -> tuple[list[OpenHandoff], int]:
    """The open handoffs of all tenants, longest waiting first (at most HANDOFF_ROWS), and
    how many there are in all."""
    rows = await session.execute(
        select(Handoff, Tenant.name)
        .join(Tenant, Tenant.id == Handoff.tenant_id)
        .where(Handoff.status == "open")
        .order_by(Handoff.created_at, Handoff.id)
        .limit(HANDOFF_ROWS)
    )
    listed = [
        OpenHandoff(h.id, name, h.conversation_id, h.reason, h.created_at) for h, name in rows
    ]
    count = await session.scalar(
        select(func.count()).select_from(Handoff).where(Handoff.status == "open")
    )
    return listed, int(count or 0)


async def gather(
    session: AsyncSession, now: datetime, baseline_model: str, budgets: Budgets | None
) -> DashboardData:
    """The dashboard's data as of ``now``; budgets as ``GET /admin/budgets`` reports them."""
    # Budgets first: they use a session of their own, and ``session`` takes its connection
    # only at its first query, so this request never holds two connections at once.
    budget_rows = await budget_reports.reports(budgets) if budgets is not None else []
    start, end = window(now)
    by_day = await summary(session, start, end, "day", now=now)
    tiers = await summary(session, start, end, "tier", now=now)
    intents = await summary(session, start, end, "intent", now=now)
    handoffs, open_count = await open_handoffs(session)
    month = now.astimezone(UTC).strftime("%Y-%m")
    return DashboardData(
        start=start,
        end=end,
        days=DAYS,
        month=month,
        baseline_model=baseline_model,
        totals=by_day.totals,
        by_day=[r for r in by_day.rows if r.requests > 0],
        tiers=sorted(tiers.rows, key=lambda r: (-r.requests, r.key or "")),
        intents=intents.rows[:TOP_INTENTS],
        handoffs=handoffs,
        open_handoffs=open_count,
        budgets=budget_rows,
    )
