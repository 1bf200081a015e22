"""The end of a turn: its ledger records, its stored answer, and the result a client sees."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import structlog

from mvm_chat.chat.components import fire
from mvm_chat.chat.escalation import Move
from mvm_chat.chat.generation import Attempt, usage_of
from mvm_chat.chat.handoff import open_handoff
from mvm_chat.chat.persist import store_turn
from mvm_chat.chat.services import Services
from mvm_chat.chat.turns import PreparedTurn, TurnResult
from mvm_chat.engines.base import Usage
from mvm_chat.ledger.ledger import CallRecord, price
from mvm_chat.logging import report
from mvm_chat.settings import ModelSettings
from mvm_chat.types import Turn

log = structlog.get_logger(__name__)


def call_record(
    prepared: PreparedTurn,
    attempt: Attempt,
    number: int,
    status: str,
    reason: str | None,
    prompt_estimate: int,
    counts_baseline: bool = True,
) -> CallRecord:
    principal = prepared.request.principal
    intent = prepared.turn.intent
    return CallRecord(
        request_id=prepared.request.request_id,
        attempt=number,
        tenant_id=principal.tenant_id,
        api_key_id=principal.key_id,
        conversation_id=prepared.conversation_id,
        model=attempt.model,
        usage=usage_of(attempt, prompt_estimate),
        latency_s=attempt.latency_s,
        ttft_s=attempt.ttft_s,
        cache=attempt.cache,
        status=status,
        intent=intent.label if intent else None,
        escalation_reason=reason,
        counts_baseline=counts_baseline,
        running_requests=attempt.running_requests,
    )


def answer_metadata(turn: Turn, moves: list[Move], status: str) -> dict[str, Any]:
    return {
        "status": status,
        "passages": [{"source": p.source, "score": p.score} for p in turn.passages],
        "escalations": [m.as_dict() for m in moves],
    }


async def finish(
    services: Services,
    prepared: PreparedTurn,
    calls: list[CallRecord],
    answer_by: ModelSettings,
    text: str,
    moves: list[Move],
    finish_reason: str,
    handoff_reason: str | None = None,
    budget: str | None = None,
) -> TurnResult:
    """Store the turn, price it, report it; with ``handoff_reason``, hand it to a person.
    ``budget``: the tenant's budget state for ``mvm`` (None, ``"ok"`` or ``"exhausted"``)."""
    turn = prepared.turn
    message_id = await store_turn(
        services, prepared, calls, answer_by, text, answer_metadata(turn, moves, "ok")
    )
    handoff = (
        await open_handoff(
            services,
            prepared.request.principal.tenant_id,
            prepared.conversation_id,
            handoff_reason,
        )
        if handoff_reason
        else None
    )
    cost = baseline = Decimal(0)
    for call in calls:
        call_cost, call_baseline = price(services.settings, call)
        cost, baseline = cost + call_cost, baseline + call_baseline
        services.metrics.record_turn(
            call.model.name,
            call.model.tier,
            call.usage.prompt_tokens,
            call.usage.completion_tokens,
            call_cost,
            call_baseline,
        )
    final = calls[-1] if calls else None
    usage = final.usage if final else Usage()
    result = TurnResult(
        conversation_id=prepared.conversation_id,
        message_id=message_id,
        model=answer_by.name,
        tier=answer_by.tier,
        text=text,
        usage=usage,
        cache=final.cache if final else "off",
        cost_usd=cost,
        baseline_cost_usd=baseline,
        finish_reason=finish_reason,
        intent=(
            {
                "label": turn.intent.label,
                "confidence": round(turn.intent.confidence, 4),
                "source": turn.intent.source,
            }
            if turn.intent
            else None
        ),
        escalations=[m.as_dict() for m in moves],
        passages=[{"source": p.source, "score": p.score} for p in turn.passages],
        handoff_id=handoff.id if handoff else None,
        budget=budget,
    )
    report(
        log,
        "turn.complete",
        conversation_id=prepared.conversation_id,
        model=answer_by.name,
        tier=answer_by.tier,
        call_latency_ms=round(final.latency_s * 1000) if final else 0,
        ttft_ms=round(final.ttft_s * 1000) if final and final.ttft_s is not None else None,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cache=result.cache,
        handoff_id=result.handoff_id,
        intent=result.intent["label"] if result.intent else None,
        attempts=len(calls),
    )
    await fire(services, "on_turn_complete", turn=turn, result=result)
    return result
