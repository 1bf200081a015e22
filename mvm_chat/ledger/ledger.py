"""Building ledger rows: one per model call, priced against the baseline model."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from mvm_chat.engines.base import Usage
from mvm_chat.ledger.pricing import call_cost, token_cost
from mvm_chat.settings import ModelSettings, Settings
from mvm_chat.store.models import CACHE_HITS, utcnow


@dataclass(frozen=True, slots=True)
class CallRecord:
    """What one model call did, before it is priced and stored."""

    request_id: str
    attempt: int
    tenant_id: str
    api_key_id: str | None
    conversation_id: str
    model: ModelSettings
    usage: Usage
    latency_s: float
    ttft_s: float | None
    cache: str = "miss"
    status: str = "ok"
    intent: str | None = None
    escalation_reason: str | None = None
    counts_baseline: bool = True
    """False for an attempt that was escalated: the turn's baseline is booked once."""
    running_requests: float = 1.0
    """Requests the model's server ran during the call (shares its GPU time)."""


def baseline_cost(settings: Settings, usage: Usage) -> Decimal:
    """What the configured baseline model would have charged for the same tokens."""
    baseline = settings.model(settings.routing.baseline_model)
    if baseline is None:
        return Decimal(0)
    return token_cost(baseline, usage.prompt_tokens, usage.completion_tokens)


def price(settings: Settings, call: CallRecord) -> tuple[Decimal, Decimal]:
    """``(cost_usd, baseline_cost_usd)`` of a call; a cache hit, a skill and a failed call
    cost nothing."""
    cost = (
        Decimal(0)
        if call.cache in CACHE_HITS or call.cache == "skill" or call.status == "error"
        else call_cost(
            call.model,
            call.usage.prompt_tokens,
            call.usage.completion_tokens,
            call.latency_s,
            call.running_requests,
        )
    )
    baseline = baseline_cost(settings, call.usage) if call.counts_baseline else Decimal(0)
    return cost, baseline


def ledger_row(settings: Settings, call: CallRecord, message_id: str | None) -> dict[str, Any]:
    """The ledger row of a call: the values of every column but ``id``, for a Core insert
    (a plain dict: an ORM object per call cost more than the rest of the row's work)."""
    cost, baseline = price(settings, call)
    return dict(
        request_id=call.request_id,
        attempt=call.attempt,
        tenant_id=call.tenant_id,
        api_key_id=call.api_key_id,
        conversation_id=call.conversation_id,
        message_id=message_id,
        model=call.model.name,
        engine=call.model.engine,
        tier=call.model.tier,
        intent=call.intent,
        prompt_tokens=call.usage.prompt_tokens,
        completion_tokens=call.usage.completion_tokens,
        latency_ms=round(call.latency_s * 1000),
        ttft_ms=None if call.ttft_s is None else round(call.ttft_s * 1000),
        cache=call.cache,
        status=call.status,
        cost_usd=cost,
        baseline_cost_usd=baseline,
        escalation_reason=call.escalation_reason,
        created_at=utcnow(),
    )
