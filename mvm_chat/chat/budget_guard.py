"""A turn's budget: reserve before each paid call, settle after it, stay free when spent.

An exhausted budget never refuses a turn: a call the budget cannot pay for goes to the best
free model instead (:func:`~mvm_chat.chat.router.best_free`), recorded as a move with the
reason :data:`BUDGET_EXHAUSTED`.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from decimal import Decimal

import structlog

from mvm_chat.chat import router
from mvm_chat.chat.components import fire
from mvm_chat.chat.escalation import Move
from mvm_chat.chat.services import Services
from mvm_chat.chat.tenant_tiers import tenant_settings
from mvm_chat.ledger.budgets import Reservation, TenantBudget, generous_prompt_tokens
from mvm_chat.ledger.ledger import CallRecord, price
from mvm_chat.ledger.pricing import max_call_cost
from mvm_chat.settings import ModelSettings
from mvm_chat.store.keys import Principal

log = structlog.get_logger(__name__)
BUDGET_EXHAUSTED = "budget exhausted"


@dataclass(slots=True)
class BudgetGuard:
    """The budget of one turn's tenant and the reservation of the call in flight."""

    services: Services
    tenant: str
    budget: TenantBudget | None
    refused: bool = False
    held: Reservation | None = None

    @classmethod
    async def open(cls, services: Services, principal: Principal) -> BudgetGuard:
        budgets = services.budgets
        budget = await budgets.for_tenant(principal.tenant_id) if budgets is not None else None
        return cls(services, principal.tenant, budget)

    @property
    def state(self) -> str | None:
        """What ``mvm.budget`` says: None without a budget, else "ok" or "exhausted"."""
        if self.budget is None:
            return None
        return "exhausted" if self.refused or self.budget.exhausted else "ok"

    def is_free(self, model: ModelSettings) -> bool:
        return self.budget is None or not self.budget.is_paid(model)

    async def hold(self, model: ModelSettings, prompt_tokens: int, max_tokens: int | None) -> bool:
        """Reserve the worst case of a call of ``model``; False when the budget cannot."""
        budgets, budget = self.services.budgets, self.budget
        if budgets is None or budget is None or not budget.is_paid(model):
            return True
        worst = max_call_cost(
            model, generous_prompt_tokens(prompt_tokens), max_tokens or model.max_tokens
        )
        self.held = await budgets.reserve(budget, worst)
        if self.held is None:
            self.refused = True
            log.info("budget.refused", model=model.name, worst_usd=str(worst))
            return False
        return True

    async def admit(
        self,
        route: router.Route,
        prompt_tokens: int,
        max_tokens: int | None,
        failed: Collection[str] = (),
    ) -> tuple[router.Route, Move | None] | None:
        """The route to take for ``route``: itself when the budget holds its call, else the
        best free model and the move there; None when no model is left (all ``failed``)."""
        if await self.hold(route.model, prompt_tokens, max_tokens):
            return route, None
        services = self.services
        settings = tenant_settings(services.settings, self.tenant)  # its allowed tiers only
        target = router.best_free(settings, route.model, self.is_free, services.load(), failed)
        if target is None:
            return None
        if not self.is_free(target) and self.services.budgets and self.budget:
            # the last resort: the default tier answers even when it is paid, unreserved
            self.held = self.services.budgets.unreserved(self.budget)
        move = Move(route.tier, target.tier, BUDGET_EXHAUSTED)
        return router.Route(target, BUDGET_EXHAUSTED), move

    async def settle(self, call: CallRecord) -> None:
        """Settle the call in flight with its real cost; announce thresholds it crossed."""
        held, budgets = self.held, self.services.budgets
        self.held = None
        if held is None or budgets is None:
            return
        cost, _ = price(self.services.settings, call)
        for crossing in await budgets.settle(held, cost):
            log.info(
                "budget.threshold",
                threshold=crossing.threshold,
                spent_usd=str(crossing.spent_usd),
                budget_usd=str(crossing.budget_usd),
            )
            await fire(
                self.services,
                "on_budget_threshold",
                tenant=self.tenant,
                spent_usd=crossing.spent_usd,
                budget_usd=crossing.budget_usd,
            )

    def settle_later(self, call: CallRecord | None = None) -> None:
        """Settle outside the request (its client went away, or it failed unexpectedly)."""
        if self.held is None:
            return
        if call is None:
            held, budgets = self.held, self.services.budgets
            self.held = None
            if budgets is not None:
                self.services.spawn(budgets.settle(held, Decimal(0)))
            return
        self.services.spawn(self.settle(call))
