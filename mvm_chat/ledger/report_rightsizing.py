"""Rightsizing: per intent, the cheapest tier that answers it well enough, from the rollup.

For each intent and tier, over the whole UTC days of the range:

- *calls*: ledger rows (model calls) at that tier; the *tier mix* is each tier's share of them.
- *acceptance*: the share of those calls whose answer was kept, neither escalated to another
  tier (status ``escalated``) nor failed (status ``error``).
- the *recommended tier* is the cheapest configured tier (in the configured order) with at least
  :data:`MIN_CALLS` calls and an acceptance of at least :data:`MIN_ACCEPTANCE`; None when no tier
  has the evidence.
- *projected monthly savings*: (the intent's current cost per call, all tiers together, minus the
  recommended tier's observed cost per call) times the intent's calls per 30 days. Negative
  when the recommendation costs more than today's mix (the cheaper tiers fail too often).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mvm_chat.ledger.report_rows import usd
from mvm_chat.settings import Settings
from mvm_chat.store.rollups import from_nanos, ledger_rollups

MIN_ACCEPTANCE = 0.9
MIN_CALLS = 30
MONTH_DAYS = 30
QUANTUM = Decimal(1).scaleb(-9)


def _per_call(cost: Decimal, calls: int) -> Decimal:
    return (cost / calls).quantize(QUANTUM, ROUND_HALF_EVEN) if calls else Decimal(0)


def _tier_order(settings: Settings, seen: set[str]) -> list[str]:
    configured = [name for name in settings.tier_names if name != "human"]
    return configured + sorted(seen - set(configured))


async def rightsizing(
    session: AsyncSession, settings: Settings, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """Advice per intent (intents with the most calls first) for the UTC days from ``start``'s
    through the one before ``end`` (a partial last day counts whole)."""
    r = ledger_rollups.c
    first = start.astimezone(UTC).date()
    last = (end - timedelta(microseconds=1)).astimezone(UTC).date() + timedelta(days=1)
    query = (
        select(
            r.intent,
            r.tier,
            func.sum(r.requests),
            func.sum(r.escalated),
            func.sum(r.errors),
            func.sum(r.cost_nusd),
        )
        .where(r.day >= first, r.day < last, r.intent != "")
        .group_by(r.intent, r.tier)
    )
    evidence: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for intent, tier, calls, escalated, errors, nanos in (await session.execute(query)).tuples():
        calls, escalated, errors = int(calls), int(escalated), int(errors)
        cost = from_nanos(int(nanos))
        evidence[intent][tier] = {
            "calls": calls,
            "accepted": calls - escalated - errors,
            "escalated": escalated,
            "errors": errors,
            "cost_usd": cost,
        }
    days = max((datetime.combine(last, time(), UTC) - datetime.combine(first, time(), UTC)).days, 1)
    order = _tier_order(settings, {tier for tiers in evidence.values() for tier in tiers})
    advice = [_advise(intent, tiers, order, days) for intent, tiers in evidence.items()]
    advice.sort(key=lambda item: (-item["calls"], item["intent"]))
    return advice


def _advise(
    intent: str, tiers: dict[str, dict[str, Any]], order: list[str], days: int
) -> dict[str, Any]:
    calls = sum(t["calls"] for t in tiers.values())
    escalated = sum(t["escalated"] for t in tiers.values())
    cost = sum((t["cost_usd"] for t in tiers.values()), Decimal(0))
    ranked = [name for name in order if name in tiers]
    recommended = next(
        (
            name
            for name in ranked
            if tiers[name]["calls"] >= MIN_CALLS
            and tiers[name]["accepted"] / tiers[name]["calls"] >= MIN_ACCEPTANCE
        ),
        None,
    )
    current = _per_call(cost, calls)
    monthly_calls = calls * MONTH_DAYS / days
    body: dict[str, Any] = {
        "intent": intent,
        "calls": calls,
        "tier_mix": {name: round(tiers[name]["calls"] / calls, 6) for name in ranked},
        "escalation_rate": round(escalated / calls, 6),
        "acceptance": {
            name: round(tiers[name]["accepted"] / tiers[name]["calls"], 6) for name in ranked
        },
        "recommended_tier": recommended,
        "evidence": {
            name: {
                **{k: v for k, v in tiers[name].items() if k != "cost_usd"},
                "cost_usd": usd(tiers[name]["cost_usd"]),
                "cost_per_call_usd": usd(_per_call(tiers[name]["cost_usd"], tiers[name]["calls"])),
            }
            for name in ranked
        },
        "current_cost_per_call_usd": usd(current),
        "recommended_cost_per_call_usd": None,
        "monthly_calls": round(monthly_calls, 1),
        "projected_monthly_savings_usd": None,
    }
    if recommended is not None:
        target = _per_call(tiers[recommended]["cost_usd"], tiers[recommended]["calls"])
        saving = ((current - target) * Decimal(calls * MONTH_DAYS) / days).quantize(
            QUANTUM, ROUND_HALF_EVEN
        )
        body.update(
            recommended_cost_per_call_usd=usd(target), projected_monthly_savings_usd=usd(saving)
        )
    return body
