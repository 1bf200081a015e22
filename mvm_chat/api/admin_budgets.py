"""Tenants' monthly budgets (admin keys only); see ``docs/budgets.md``.

``GET /admin/budgets``, ``GET /admin/budgets/{tenant}``, ``PUT /admin/budgets/{tenant}`` with
``{"monthly_usd": "25.00", "include_self_hosted": false}`` and ``DELETE
/admin/budgets/{tenant}``; ``{tenant}`` is the tenant's name.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from litestar import Controller, delete, get, put
from litestar.params import Parameter

from mvm_chat.chat.services import Services
from mvm_chat.errors import InvalidInput, NotFound
from mvm_chat.ledger import budget_reports as reports
from mvm_chat.ledger.budgets import Budgets

TenantName = Annotated[str, Parameter(max_length=200, description="The tenant's name")]
MAX_BUDGET_USD = Decimal("999999999")
"""The largest monthly budget the ``Numeric(18, 9)`` columns hold comfortably."""


FIELDS = ("monthly_usd", "include_self_hosted")
_JSON_TYPES = {int: "number", float: "number", bool: "boolean", list: "array", dict: "object"}


def parse_budget(data: dict[str, Any]) -> tuple[Decimal, bool]:
    """``monthly_usd`` (a decimal string, required) and ``include_self_hosted`` (a boolean,
    default false) of a ``PUT`` body; :class:`InvalidInput` naming the field otherwise."""
    for name in data:
        if name not in FIELDS:
            raise InvalidInput(name[:80], f"unknown field (expected {', '.join(FIELDS)})")
    if "monthly_usd" not in data:
        raise InvalidInput("monthly_usd", 'required: a decimal string such as "25.00"')
    raw = data["monthly_usd"]
    if not isinstance(raw, str):
        kind = "null" if raw is None else _JSON_TYPES.get(type(raw), type(raw).__name__)
        raise InvalidInput("monthly_usd", f'must be a decimal string such as "25.00", not {kind}')
    include = data.get("include_self_hosted", False)
    if not isinstance(include, bool):
        raise InvalidInput("include_self_hosted", "must be true or false")
    return parse_amount(raw), include


def parse_amount(raw: str) -> Decimal:
    """A budget amount: a plain decimal string >= 0 with at most 9 decimal places."""
    try:
        amount = Decimal(raw.strip())
    except InvalidOperation:
        raise InvalidInput("monthly_usd", f"not a decimal number: {raw[:40]!r}") from None
    if not amount.is_finite():
        raise InvalidInput("monthly_usd", "must be a finite amount")
    if amount < 0:
        raise InvalidInput("monthly_usd", "must be >= 0")
    if amount > MAX_BUDGET_USD:
        raise InvalidInput("monthly_usd", f"must be at most {MAX_BUDGET_USD}")
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -9:
        raise InvalidInput("monthly_usd", "at most 9 decimal places")
    return amount


def _budgets(services: Services) -> Budgets:
    if services.budgets is None:
        raise RuntimeError("the app's budgets are not built")
    return services.budgets


class BudgetController(Controller):
    path = "/admin/budgets"
    tags = ["admin"]

    @get("/", summary="Every tenant with a budget, and this month's spend against it")
    async def list_budgets(self, services: Services) -> list[dict[str, Any]]:
        return [r.as_json() for r in await reports.reports(_budgets(services))]

    @get("/{tenant:str}", summary="A tenant's budget and this month's spend against it")
    async def get_budget(self, services: Services, tenant: TenantName) -> dict[str, Any]:
        budgets = _budgets(services)
        found = await reports.reports(budgets, tenant)
        if found:
            return found[0].as_json()
        if await reports.tenant_exists(budgets, tenant):
            raise NotFound(f"tenant {tenant!r} has no budget")
        raise NotFound(f"tenant {tenant!r} not found")

    @put("/{tenant:str}", summary="Set a tenant's monthly budget")
    async def put_budget(
        self, services: Services, tenant: TenantName, data: dict[str, Any]
    ) -> dict[str, Any]:
        """Body: ``{"monthly_usd": "25.00", "include_self_hosted": false}``."""
        amount, include = parse_budget(data)
        report = await reports.set_budget(_budgets(services), tenant, amount, include)
        if report is None:
            raise NotFound(f"tenant {tenant!r} not found")
        return report.as_json()

    @delete("/{tenant:str}", summary="Remove a tenant's budget")
    async def delete_budget(self, services: Services, tenant: TenantName) -> None:
        if not await reports.delete_budget(_budgets(services), tenant):
            raise NotFound(f"tenant {tenant!r} has no budget")
