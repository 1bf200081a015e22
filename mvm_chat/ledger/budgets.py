"""Monthly budgets on paid spend: what counts as paid, reservations and their settlement.

A paid call first reserves its worst case (:func:`~mvm_chat.ledger.pricing.max_call_cost`);
the reservation succeeds only while spent + reserved + it stays within the month's budget, so
concurrent calls cannot overspend. After the call the reservation is settled: released, and
the call's real cost added to the month's spend. The counters live in Redis when it is
configured (:mod:`~mvm_chat.ledger.budget_redis`) and in the database otherwise, or whenever
Redis fails (:mod:`~mvm_chat.ledger.budget_store`); the ledger stays the truth they are
initialised from.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

import structlog
from sqlalchemy import select

from mvm_chat.ledger import budget_store as store
from mvm_chat.ledger.budget_redis import CountersUnavailable, RedisBudgetCounters, to_nanos
from mvm_chat.ledger.pricing import max_call_cost
from mvm_chat.settings import ModelSettings, RedisSettings
from mvm_chat.store.db import Database
from mvm_chat.store.models import Budget, BudgetMonth

log = structlog.get_logger(__name__)

FREE_ENGINES = ("skill", "human")
"""Pseudo-engines of answers no model was called for."""
PROMPT_MARGIN = 2
PROMPT_EXTRA_TOKENS = 64
NO_BUDGET_TTL_S = 2.0
"""How long a process trusts that a tenant has no budget before it looks again."""
MAX_REMEMBERED = 10_000


def counts(engine: str, include_self_hosted: bool) -> bool:
    """Whether a call on ``engine`` is paid spend: any API engine; ``sglang`` and
    ``llamacpp`` only when the budget includes self-hosted spend."""
    if engine in FREE_ENGINES:
        return False
    return include_self_hosted or engine not in store.SELF_HOSTED_ENGINES


def generous_prompt_tokens(estimate: int) -> int:
    """The prompt size a reservation assumes: twice the estimate and a chat template's worth
    more, since the estimate (4 characters a token) is only a guess at the real count."""
    return estimate * PROMPT_MARGIN + PROMPT_EXTRA_TOKENS


@dataclass(frozen=True, slots=True)
class TenantBudget:
    """A tenant's budget as a turn sees it, with the month's spend as the turn starts."""

    tenant_id: str
    monthly_usd: Decimal
    include_self_hosted: bool
    month: str
    spent_usd: Decimal

    def is_paid(self, model: ModelSettings) -> bool:
        """Whether calls of ``model`` count against this budget (a model priced at zero
        costs nothing and needs no reservation)."""
        return counts(model.engine, self.include_self_hosted) and max_call_cost(model, 1, 1) > 0

    @property
    def exhausted(self) -> bool:
        return self.spent_usd >= self.monthly_usd


Backend = Literal["redis", "database", "none"]


@dataclass(slots=True)
class Reservation:
    """A paid call's hold on a budget; ``backend`` "none" for a call made without one."""

    budget: TenantBudget
    amount: Decimal
    backend: Backend
    month: str
    settled: bool = field(default=False)


@dataclass(frozen=True, slots=True)
class Crossing:
    """A threshold of a budget crossed for the first time this month."""

    threshold: int
    spent_usd: Decimal
    budget_usd: Decimal


class Budgets:
    """Budgets of one app instance: reads, reservations and settlements."""

    def __init__(self, db: Database, redis: RedisSettings | None = None) -> None:
        self.db = db
        self.counters = (
            RedisBudgetCounters(redis.url, redis.key_prefix, redis.timeout_s)
            if redis is not None and redis.url
            else None
        )
        self._without: dict[str, float] = {}
        """Tenants known to have no budget, until a monotonic deadline (saves a query a turn)."""

    def forget(self, tenant_id: str) -> None:
        """The tenant's budget changed: read it again on its next turn (in this process)."""
        self._without.pop(tenant_id, None)

    async def for_tenant(self, tenant_id: str) -> TenantBudget | None:
        """The tenant's budget and this month's spend; None when it has no budget.

        That a tenant has no budget is remembered for :data:`NO_BUDGET_TTL_S`: a budget set
        through this process counts from the next turn (:meth:`forget`), one set through
        another worker process within that time.
        """
        expires = self._without.get(tenant_id)
        if expires is not None and expires > time.monotonic():
            return None
        month = store.month_of()
        query = (
            select(Budget.monthly_usd, Budget.include_self_hosted, BudgetMonth.spent_usd)
            .outerjoin(
                BudgetMonth,
                (BudgetMonth.tenant_id == Budget.tenant_id) & (BudgetMonth.month == month),
            )
            .where(Budget.tenant_id == tenant_id)
        )
        async with self.db.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            if len(self._without) >= MAX_REMEMBERED:
                self._without.clear()
            self._without[tenant_id] = time.monotonic() + NO_BUDGET_TTL_S
            return None
        self._without.pop(tenant_id, None)
        monthly, include, spent = row
        return TenantBudget(
            tenant_id, Decimal(str(monthly)), bool(include), month, Decimal(str(spent or 0))
        )

    def unreserved(self, budget: TenantBudget) -> Reservation:
        """A paid call made without a reservation (the last resort): settled all the same."""
        return Reservation(budget, Decimal(0), "none", budget.month)

    async def reserve(self, budget: TenantBudget, amount: Decimal) -> Reservation | None:
        """Hold ``amount`` of the month's budget, or None when it does not fit."""
        month = store.month_of()
        if amount <= 0:
            return Reservation(budget, Decimal(0), "none", month)
        if self.counters is not None:
            try:
                held = await self._reserve_redis(budget, month, amount)
            except CountersUnavailable:
                held = None
            else:
                return Reservation(budget, amount, "redis", month) if held else None
        if await self._reserve_database(budget, month, amount):
            return Reservation(budget, amount, "database", month)
        return None

    async def _reserve_redis(self, budget: TenantBudget, month: str, amount: Decimal) -> bool:
        assert self.counters is not None
        args = (budget.tenant_id, month, to_nanos(amount, True), to_nanos(budget.monthly_usd))
        held = await self.counters.reserve(*args)
        if held is None:  # no counter this month yet: start it from the database
            spent = await self.ensure_month(budget, month)
            held = await self.counters.reserve(*args, spent=to_nanos(spent))
        return bool(held)

    async def _reserve_database(self, budget: TenantBudget, month: str, amount: Decimal) -> bool:
        for _ in range(2):
            async with self.db.transaction() as session:
                if await store.try_reserve(
                    session, budget.tenant_id, month, amount, budget.monthly_usd
                ):
                    return True
                exists = await store.read_month(session, budget.tenant_id, month) is not None
            if exists:
                return False
            await self.ensure_month(budget, month)
        return False

    async def ensure_month(self, budget: TenantBudget, month: str) -> Decimal:
        """The month's row, created from the ledger if missing; returns its spend."""
        async with self.db.session() as session:
            row = await store.read_month(session, budget.tenant_id, month)
            if row is not None:
                return Decimal(str(row.spent_usd))
            spent = await store.ledger_spent(
                session, budget.tenant_id, month, budget.include_self_hosted
            )
        async with self.db.transaction() as session:
            await store.ensure_month(session, budget.tenant_id, month, spent)
        async with self.db.session() as session:
            row = await store.read_month(session, budget.tenant_id, month)
        return Decimal(str(row.spent_usd)) if row is not None else spent

    async def settle(self, reservation: Reservation, cost: Decimal) -> list[Crossing]:
        """Release the reservation and book ``cost``; returns the thresholds this call is
        the first to cross (for the caller to announce). Settling twice does nothing."""
        if reservation.settled:
            return []
        reservation.settled = True
        budget, month = reservation.budget, reservation.month
        released = reservation.amount if reservation.backend == "database" else Decimal(0)
        if self.counters is not None and (reservation.backend == "redis" or cost > 0):
            held = reservation.amount if reservation.backend == "redis" else Decimal(0)
            await self.counters.settle(
                budget.tenant_id, month, to_nanos(held, True), to_nanos(cost)
            )
        if released <= 0 and cost <= 0:
            return []
        for _ in range(2):
            async with self.db.transaction() as session:
                spent = await store.settle(session, budget.tenant_id, month, released, cost)
                if spent is not None:
                    won = await store.claim_thresholds(
                        session, budget.tenant_id, month, spent, budget.monthly_usd
                    )
                    return [Crossing(t, spent, budget.monthly_usd) for t in won]
            await self.ensure_month(budget, month)
        log.error("budget.settle_failed", tenant_id=budget.tenant_id, month=month)
        return []

    async def close(self) -> None:
        if self.counters is not None:
            await self.counters.close()
