"""From the dashboard's data to what its template draws: charts, gauges and totals."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from mvm_chat.ledger.reports import CostRow, usd
from mvm_chat.web.charts import Series, bar_list, gauge, stacked_bar, time_chart
from mvm_chat.web.data import DashboardData

NO_INTENT = "(no intent)"


def rate(value: float) -> str:
    """A rate as the page's ``data-value`` carries it: as the JSON admin API writes it."""
    return repr(value)


def pct(value: float) -> str:
    return f"{value * 100:.1f}%"


def _day(row: CostRow) -> date:
    return date.fromisoformat(str(row.key)[:10])


def charts(d: DashboardData) -> dict[str, Any]:
    """The template context of the dashboard's charts; a chart without data is None."""
    days = d.by_day
    start = d.first_day
    spend = savings = escalation = None
    if days:
        cost = Series("cost", [(_day(r), usd(r.cost_usd), r.cost_usd) for r in days], "spend $")
        baseline = Series(
            "baseline",
            [(_day(r), usd(r.baseline_cost_usd), r.baseline_cost_usd) for r in days],
            "baseline $",
        )
        spend = time_chart(start, d.days, cost, baseline)
        saved = Series(
            "savings", [(_day(r), usd(r.savings_usd), r.savings_usd) for r in days], "saved $"
        )
        savings = time_chart(start, d.days, saved, None)
        rates = Series(
            "escalation_rate",
            [(_day(r), rate(r.escalation_rate), Decimal(repr(r.escalation_rate))) for r in days],
            "escalation rate",
        )
        escalation = time_chart(start, d.days, None, rates, money=False)
    tiers = stacked_bar([(str(r.key), str(r.requests), Decimal(r.requests)) for r in d.tiers])
    intents = (
        bar_list([(str(r.key or NO_INTENT), usd(r.cost_usd), r.cost_usd) for r in d.intents])
        if d.intents
        else None
    )
    gauges = [gauge(b.tenant, b.spent_usd, b.monthly_usd, b.reserved_usd) for b in d.budgets]
    return {
        "spend": spend,
        "savings": savings,
        "escalation": escalation,
        "tiers": tiers,
        "intents": intents,
        "gauges": gauges,
    }
