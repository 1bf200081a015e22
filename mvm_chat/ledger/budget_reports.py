"""Budgets as the admin routes show and change them."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from mvm_chat.ledger import budget_store as store
from mvm_chat.ledger.budget_redis import from_nanos, to_nanos
from mvm_chat.ledger.budgets import Budgets, TenantBudget
from mvm_chat.ledger.pricing import show
from mvm_chat.store.models import Budget, BudgetMonth, Tenant, utcnow

PERCENT_QUANTUM = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class BudgetReport:
    """A tenant's budget and where this month stands against it."""

    tenant: str
    month: str
    monthly_usd: Decimal
    include_self_hosted: bool
    spent_usd: Decimal
    reserved_usd: Decimal

    @property
    def remaining_usd(self) -> Decimal:
        """What is left to reserve (never below zero)."""
        return max(self.monthly_usd - self.spent_usd - self.reserved_usd, Decimal(0))

    @property
    def percent_used(self) -> Decimal:
        """The spend as a percentage of the budget (100 for a zero budget)."""
        pct = store.percent(self.spent_usd, self.monthly_usd)
        return pct.quantize(PERCENT_QUANTUM, rounding=ROUND_HALF_EVEN)

    def as_json(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "month": self.month,
            "monthly_usd": show(self.monthly_usd),
            "include_self_hosted": self.include_self_hosted,
            "spent_usd": show(self.spent_usd),
            "reserved_usd": show(self.reserved_usd),
            "remaining_usd": show(self.remaining_usd),
            "percent_used": str(self.percent_used),
        }


async def reports(budgets: Budgets, tenant: str | None = None) -> list[BudgetReport]:
    """Every tenant's budget (or the one of ``tenant``, by name), by tenant name."""
    month = store.month_of()
    query = (
        select(Tenant.id, Tenant.name, Budget.monthly_usd, Budget.include_self_hosted, BudgetMonth)
        .join(Budget, Budget.tenant_id == Tenant.id)
        .outerjoin(BudgetMonth, (BudgetMonth.tenant_id == Tenant.id) & (BudgetMonth.month == month))
        .order_by(Tenant.name)
    )
    if tenant is not None:
        query = query.where(Tenant.name == tenant)
    found: list[BudgetReport] = []
    async with budgets.db.session() as session:
        for tenant_id, name, monthly, include, row in (await session.execute(query)).all():
            if row is not None:
                spent, reserved = Decimal(str(row.spent_usd)), Decimal(str(row.reserved_usd))
            else:
                spent = await store.ledger_spent(session, tenant_id, month, bool(include))
                reserved = Decimal(0)
            if budgets.counters is not None:
                in_redis = await budgets.counters.reserved(tenant_id, month)
                reserved += from_nanos(in_redis or 0)
            found.append(
                BudgetReport(name, month, Decimal(str(monthly)), bool(include), spent, reserved)
            )
    return found


async def set_budget(
    budgets: Budgets, tenant: str, monthly_usd: Decimal, include_self_hosted: bool
) -> BudgetReport | None:
    """Create or change a tenant's budget; None when there is no such tenant.

    A new budget, or one whose scope (``include_self_hosted``) changed, recounts the month's
    spend from the ledger; thresholds already reached under the new amount count as announced.
    """
    try:
        tenant_id, recount = await _upsert(budgets, tenant, monthly_usd, include_self_hosted)
    except IntegrityError:  # two first PUTs for one tenant at once: the second updates
        tenant_id, recount = await _upsert(budgets, tenant, monthly_usd, include_self_hosted)
    if tenant_id is None:
        return None
    budgets.forget(tenant_id)
    month = store.month_of()
    budget = TenantBudget(tenant_id, monthly_usd, include_self_hosted, month, Decimal(0))
    await budgets.ensure_month(budget, month)
    async with budgets.db.transaction() as session:
        if recount:
            spent = await store.ledger_spent(session, tenant_id, month, include_self_hosted)
            await store.resync(session, tenant_id, month, spent, monthly_usd)
        else:
            await store.renotify(session, tenant_id, month, monthly_usd)
    if recount and budgets.counters is not None:
        await budgets.counters.set_spent(tenant_id, month, to_nanos(spent))
    found = await reports(budgets, tenant)
    return found[0] if found else None


async def _upsert(
    budgets: Budgets, tenant: str, monthly_usd: Decimal, include_self_hosted: bool
) -> tuple[str | None, bool]:
    async with budgets.db.transaction() as session:
        tenant_id = await session.scalar(select(Tenant.id).where(Tenant.name == tenant))
        if tenant_id is None:
            return None, False
        row = await session.get(Budget, tenant_id)
        if row is None:
            session.add(
                Budget(
                    tenant_id=tenant_id,
                    monthly_usd=monthly_usd,
                    include_self_hosted=include_self_hosted,
                    updated_at=utcnow(),
                )
            )
            return tenant_id, True
        recount = row.include_self_hosted != include_self_hosted
        row.monthly_usd = monthly_usd
        row.include_self_hosted = include_self_hosted
        row.updated_at = utcnow()
        return tenant_id, recount


async def delete_budget(budgets: Budgets, tenant: str) -> bool:
    """Remove a tenant's budget (its months' counters stay); False when it had none."""
    async with budgets.db.transaction() as session:
        tenant_id = await session.scalar(select(Tenant.id).where(Tenant.name == tenant))
        row = await session.get(Budget, tenant_id) if tenant_id is not None else None
        if row is None:
            return False
        await session.delete(row)
    return True


async def tenant_exists(budgets: Budgets, tenant: str) -> bool:
    async with budgets.db.session() as session:
        return await session.scalar(select(Tenant.id).where(Tenant.name == tenant)) is not None
