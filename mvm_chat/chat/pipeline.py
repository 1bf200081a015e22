"""One turn, end to end: context, intent, skills, retrieval, routing, generation, storage."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing
from decimal import Decimal

import structlog

from mvm_chat.chat import router, semantic
from mvm_chat.chat.budget_guard import BUDGET_EXHAUSTED, BudgetGuard
from mvm_chat.chat.components import Components, fire
from mvm_chat.chat.escalation import Move, after_generation, apply, before_generation
from mvm_chat.chat.escalation import has_after_policies as holds_back
from mvm_chat.chat.generation import Attempt, generate, request_for
from mvm_chat.chat.handoff import HUMAN, current_handoff, holding_message, relay_user_message
from mvm_chat.chat.intents import classify
from mvm_chat.chat.persist import record_failure, store_turn
from mvm_chat.chat.results import answer_metadata, call_record, finish
from mvm_chat.chat.retrieval import retrieve, with_passages
from mvm_chat.chat.services import Services
from mvm_chat.chat.skills import answer_by_skill
from mvm_chat.chat.tenant_tiers import tenant_settings
from mvm_chat.chat.turns import PreparedTurn, Routed, TurnEvent, TurnResult
from mvm_chat.engines.base import ChatMessage, TokenDelta, Usage, estimate_tokens
from mvm_chat.errors import EngineError
from mvm_chat.ledger.ledger import CallRecord
from mvm_chat.settings import ModelSettings
from mvm_chat.types import Escalation, Turn

log = structlog.get_logger(__name__)


async def run_turn(services: Services, prepared: PreparedTurn) -> AsyncGenerator[TurnEvent, None]:
    """Answer a prepared turn: a :class:`Routed`, the tokens, then the :class:`TurnResult`."""
    components = _components(services)
    settings, request, turn = services.settings, prepared.request, prepared.turn
    settings = tenant_settings(settings, request.principal.tenant)  # its allowed tiers only
    turn.metadata.update(tenant_id=request.principal.tenant_id, request_id=request.request_id)
    structlog.contextvars.bind_contextvars(conversation_id=prepared.conversation_id)
    guard = await BudgetGuard.open(services, request.principal)
    if prepared.handed_off:
        async for event in _relay_turn(services, prepared, guard.state):
            yield event
        return

    turn.intent = await classify(components, turn, settings.intents.order)
    skill = await answer_by_skill(components, turn)
    if skill is not None:
        component, reply = skill
        async for event in _skill_turn(services, prepared, component.name, reply.text, guard.state):
            yield event
        return

    turn.passages = await retrieve(components, turn, settings.retrieval)
    prompt = with_passages(prepared.prompt, turn.passages)
    route, moves = prepared.route, list[Move]()
    auto = request.model == router.AUTO
    routing = prepared.routing
    escalated_to: str | None = None
    if auto:
        label = turn.intent.label if turn.intent else None
        route, steps, routing = router.auto_route(settings, routing, label, services.load())
        moves += [Move(*step) for step in steps]
        route, policy_moves, raised = await before_generation(components, settings, turn, route)
        moves += policy_moves
        escalated_to = route.tier if policy_moves else None
        for raised_escalation in raised:
            await _escalated(services, turn, raised_escalation)
        person = next((e for e in raised if e.target == HUMAN), None)
        if person is not None:
            moves.append(Move(route.tier, HUMAN, person.reason))
            async for event in _handoff_turn(
                services, prepared, moves, person.reason, budget=guard.state
            ):
                yield event
            return
        if not services.breakers.available(route.model.name):
            target = router.fallback(settings, route.model, services.load())
            if target is not None:
                moves.append(Move(route.tier, target.tier, f"unavailable: {route.tier}"))
                route = router.Route(target, moves[-1].reason)
    prompt_estimate = estimate_tokens(prompt)
    found = await semantic.probe(services, prepared, settings, route, prompt)
    first = found.served if found else None
    if found is not None and found.hit is not None:  # nothing to pay, so nothing to reserve
        answered_by = semantic.served_route(settings, found.hit)
        if answered_by.model.name != route.model.name:
            moves.append(Move(route.tier, answered_by.tier, answered_by.reason))
        route = answered_by
    elif (admitted := await guard.admit(route, prompt_estimate, request.max_tokens)) is not None:
        route, budget_move = admitted
        if budget_move is not None:
            moves.append(budget_move)
    for move in moves:
        log.info("turn.route", source=move.source, target=move.target, reason=move.reason)
    structlog.contextvars.bind_contextvars(model=route.model.name, tier=route.tier)
    yield Routed(prepared.conversation_id, route.model.name, route.tier, route.reason)

    hold = holds_back(components)
    buffer = hold or not request.streams
    calls: list[CallRecord] = []
    reason = moves[-1].reason if moves else None
    failed: set[str] = set()
    while True:
        attempt = Attempt(route.model)
        generation = request_for(
            route.model, prompt, request.max_tokens, request.temperature, stream=not buffer
        )
        served, first = first, None  # what the caches had answers the first call only
        breaker = services.breakers.of(route.model.name)
        breaker.begin()
        streamed = False
        try:
            async with aclosing(
                generate(
                    services,
                    attempt,
                    generation,
                    request.principal.tenant_id,
                    request.use_cache,
                    served,
                )
            ) as stream:
                async for delta in stream:
                    if not buffer:
                        streamed = True
                        yield delta
        except EngineError as exc:
            breaker.failed()
            metrics = services.metrics
            metrics.series(metrics.engine_errors, route.model.name, route.tier).inc()
            calls.append(
                call_record(
                    prepared,
                    attempt,
                    len(calls),
                    "error",
                    reason,
                    prompt_estimate,
                    counts_baseline=False,
                )
            )
            await guard.settle(calls[-1])
            failed.add(route.model.name)
            # Fall back only for "auto", and only while nothing of this answer has been sent.
            target = (
                None
                if streamed or not auto
                else router.fallback(settings, route.model, services.load())
            )
            admitted = (
                None
                if target is None
                else await guard.admit(
                    router.Route(target, "error"), prompt_estimate, request.max_tokens, failed
                )
            )
            if admitted is None and auto and not streamed:
                # no model tier is available: a person takes over
                for call in calls:
                    await record_failure(services, call)
                reason = f"error: {exc.detail}"
                moves.append(Move(route.tier, HUMAN, reason))
                async for event in _handoff_turn(
                    services, prepared, moves, reason, routed=True, budget=guard.state
                ):
                    yield event
                return
            if admitted is None:
                for call in calls:
                    await record_failure(services, call)
                raise
            fallback, budget_move = admitted
            # onto a tier the budget cannot pay for: recorded as that move, then the budget's
            to_tier = budget_move.source if budget_move else fallback.tier
            move = Move(route.tier, to_tier, f"error: {exc.detail}")
            moves.append(move)
            reason = move.reason
            services.metrics.series(services.metrics.escalations, "error").inc()
            log.warning("turn.fallback", source=move.source, target=move.target, reason=move.reason)
            if budget_move is not None:
                moves.append(budget_move)
                reason = budget_move.reason
            route = router.Route(fallback.model, reason)
            continue
        except (GeneratorExit, asyncio.CancelledError):
            # The client went away mid-stream: keep and bill what was generated, once.
            calls.append(
                call_record(
                    prepared, attempt, len(calls), "client_disconnected", reason, prompt_estimate
                )
            )
            guard.settle_later(calls[-1])
            services.spawn(
                store_turn(
                    services,
                    prepared,
                    calls,
                    route.model,
                    attempt.text,
                    answer_metadata(turn, moves, "client_disconnected"),
                )
            )
            raise
        except Exception:
            guard.settle_later()  # an unexpected failure: release what the call reserved
            raise
        breaker.succeeded()
        if attempt.cache == "miss":
            services.observe_latency(route.model.name, attempt.latency_s)
        if hold and len(calls) < settings.routing.max_escalations:
            turn.metadata.update(
                tier=route.tier, model=route.model.name, answer_logprobs=list(attempt.logprobs)
            )
            escalation = await after_generation(components, turn, attempt.text, attempt.confidence)
            moved = apply(settings, route, escalation) if escalation else None
            if escalation is not None and moved is not None:
                escalated = call_record(
                    prepared,
                    attempt,
                    len(calls),
                    "escalated",
                    escalation.reason,
                    prompt_estimate,
                    counts_baseline=False,
                )
                await guard.settle(escalated)
                if await guard.hold(moved[0].model, prompt_estimate, request.max_tokens):
                    calls.append(escalated)
                    route, move = moved
                    moves.append(move)
                    reason = escalation.reason
                    escalated_to = route.tier
                    await _escalated(services, turn, escalation)
                    continue
                # the budget cannot pay for the escalation: this answer stands
                moves += [moved[1], Move(moved[1].target, route.tier, BUDGET_EXHAUSTED)]
        calls.append(call_record(prepared, attempt, len(calls), "ok", reason, prompt_estimate))
        await guard.settle(calls[-1])
        break
    if not any(move.reason == BUDGET_EXHAUSTED for move in moves):
        # an answer that stands only because the budget refused the tier it needed is not
        # one to serve again once the budget allows that tier
        semantic.remember(services, found, route.model, attempt)
    if buffer:
        yield TokenDelta(attempt.text, attempt.tokens)
    finish_reason = attempt.finished.finish_reason if attempt.finished else "stop"
    if auto:
        prepared.routing = routing.after_turn(
            escalated_to, turn.intent.label if turn.intent else None
        )
    yield await finish(
        services,
        prepared,
        calls,
        route.model,
        attempt.text,
        moves,
        finish_reason,
        budget=guard.state,
    )


def _components(services: Services) -> Components:
    if services.components is None:
        raise RuntimeError("the app's components are not built")
    return services.components


async def _escalated(services: Services, turn: Turn, escalation: Escalation) -> None:
    services.metrics.series(services.metrics.escalations, escalation.reason).inc()
    log.info("turn.escalation", target=escalation.target, reason=escalation.reason)
    await fire(services, "on_escalation", turn=turn, escalation=escalation)


async def _skill_turn(
    services: Services, prepared: PreparedTurn, name: str, text: str, budget: str | None
) -> AsyncGenerator[TurnEvent, None]:
    """A skill's answer: no model call, but still a message and a (zero-cost) ledger row."""
    skill = ModelSettings(name=f"skill:{name}", tier="skill", engine="skill")
    reason = (
        f"skill {name} answers intent {prepared.turn.intent.label}"
        if prepared.turn.intent
        else f"skill {name}"
    )
    yield Routed(prepared.conversation_id, skill.name, skill.tier, reason)
    attempt = Attempt(skill)
    attempt.add(TokenDelta(text, estimate_tokens([ChatMessage("assistant", text)])))
    attempt.cache = "skill"
    usage = Usage(estimate_tokens(prepared.prompt), attempt.tokens)
    call = call_record(prepared, attempt, 0, "ok", reason, usage.prompt_tokens)
    yield TokenDelta(text, attempt.tokens)
    yield await finish(services, prepared, [call], skill, text, [], "stop", budget=budget)


HUMAN_MODEL = ModelSettings(name=HUMAN, tier=HUMAN, engine=HUMAN)


async def _handoff_turn(
    services: Services,
    prepared: PreparedTurn,
    moves: list[Move],
    reason: str,
    routed: bool = False,
    budget: str | None = None,
) -> AsyncGenerator[TurnEvent, None]:
    """A person takes over: the holding message is the answer, and a handoff opens."""
    text = holding_message(services)
    if not routed:
        yield Routed(prepared.conversation_id, HUMAN, HUMAN, reason)
    yield TokenDelta(text, 0)
    yield await finish(
        services,
        prepared,
        [],
        HUMAN_MODEL,
        text,
        moves,
        "stop",
        handoff_reason=reason,
        budget=budget,
    )


async def _relay_turn(
    services: Services, prepared: PreparedTurn, budget: str | None
) -> AsyncGenerator[TurnEvent, None]:
    """A handed-off conversation: the message goes to the agents, no model answers."""
    request = prepared.request
    tenant_id = request.principal.tenant_id
    yield Routed(prepared.conversation_id, HUMAN, HUMAN, "the conversation is with a person")
    message_id = await relay_user_message(
        services,
        tenant_id,
        prepared.conversation_id,
        request.text,
        {"request_id": request.request_id},
    )
    handoff = await current_handoff(services, tenant_id, prepared.conversation_id)
    yield TurnResult(
        conversation_id=prepared.conversation_id,
        message_id=message_id,
        model=HUMAN,
        tier=HUMAN,
        text="",
        usage=Usage(),
        cache="off",
        cost_usd=Decimal(0),
        baseline_cost_usd=Decimal(0),
        handoff_id=handoff.id if handoff else None,
        budget=budget,
    )
