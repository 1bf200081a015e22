"""One turn, end to end: load context, route, generate (streaming), persist, report."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import replace
from typing import Any

import structlog
from sqlalchemy.exc import IntegrityError

from mvm_chat.cache import responses
from mvm_chat.chat import router
from mvm_chat.chat.services import Services
from mvm_chat.chat.turns import PreparedTurn, Routed, TurnEvent, TurnRequest, TurnResult
from mvm_chat.engines.base import (
    ChatMessage,
    Finished,
    GenerationRequest,
    TokenDelta,
    Usage,
    estimate_tokens,
)
from mvm_chat.errors import EngineError, NotFound
from mvm_chat.ledger.ledger import CallRecord, ledger_entry, price
from mvm_chat.store.conversations import get_conversation, list_messages, next_seq
from mvm_chat.store.models import Conversation, Message, new_id, utcnow
from mvm_chat.types import Turn

log = structlog.get_logger(__name__)


async def prepare_turn(services: Services, request: TurnRequest) -> PreparedTurn:
    """Check the conversation, load its history, choose the model and build the prompt.

    Raises before anything is streamed or stored (unknown conversation or model).
    """
    route = router.choose(services.settings, request.model)
    history: list[ChatMessage] = []
    conversation_id = request.conversation_id
    if conversation_id is not None:
        async with services.db.session() as session:
            conversation = await get_conversation(
                session, request.principal.tenant_id, conversation_id
            )
            if conversation is None:
                raise NotFound(f"conversation {conversation_id!r} not found")
            stored = await list_messages(
                session, conversation_id, last=services.settings.chat.history_messages
            )
        history = [ChatMessage(m.role, m.content) for m in stored if m.role in _ROLES]
    prompt = _build_prompt(services, request, history)
    turn = Turn(
        text=request.text,
        conversation_id=conversation_id or new_id(),
        tenant=request.principal.tenant,
        history=[(m.role, m.content) for m in history],
    )
    return PreparedTurn(
        request=request,
        conversation_id=turn.conversation_id,
        is_new_conversation=conversation_id is None,
        route=route,
        prompt=prompt,
        turn=turn,
    )


_ROLES = ("user", "assistant")


def _build_prompt(
    services: Services, request: TurnRequest, history: list[ChatMessage]
) -> list[ChatMessage]:
    if request.prompt is not None:
        system = [m for m in request.prompt if m.role == "system"]
        others = [m for m in request.prompt if m.role != "system"]
        if history and len(others) == 1:
            return [*system, *history, *others]
        return list(request.prompt)
    system_prompt = services.settings.chat.system_prompt
    system = [ChatMessage("system", system_prompt)] if system_prompt else []
    return [*system, *history, ChatMessage("user", request.text)]


async def run_turn(services: Services, prepared: PreparedTurn) -> AsyncGenerator[TurnEvent, None]:
    """Answer a prepared turn: a :class:`Routed`, the tokens, then the :class:`TurnResult`."""
    request, route = prepared.request, prepared.route
    model = route.model
    structlog.contextvars.bind_contextvars(
        conversation_id=prepared.conversation_id, model=model.name, tier=model.tier
    )
    yield Routed(prepared.conversation_id, model.name, model.tier, route.reason)
    generation = GenerationRequest(
        messages=prepared.prompt,
        max_tokens=request.max_tokens or model.max_tokens,
        temperature=model.temperature if request.temperature is None else request.temperature,
    )
    cache_key = responses.response_key(request.principal.tenant_id, model.name, generation)
    started = time.perf_counter()
    cached = await _cache_lookup(services, cache_key) if request.use_cache else None
    cache_state = "bypass" if not request.use_cache else ("hit" if cached else "miss")
    services.metrics.cache.labels(cache_state).inc()
    if cached is not None:
        yield TokenDelta(cached.text)
        call = _call(prepared, cached.usage, time.perf_counter() - started, None, "hit")
        yield await _finish(services, prepared, call, cached.text, "stop")
        return

    pieces: list[str] = []
    generated = 0
    ttft: float | None = None
    finished = Finished(Usage())
    engine = services.engines[model.name]
    try:
        async with aclosing(engine.stream(generation)) as stream:
            async for event in stream:
                if isinstance(event, TokenDelta):
                    if ttft is None:
                        ttft = time.perf_counter() - started
                    pieces.append(event.text)
                    generated += event.tokens
                    yield event
                else:
                    finished = event
    except EngineError:
        services.metrics.engine_errors.labels(model.name, model.tier).inc()
        call = _call(prepared, finished.usage, time.perf_counter() - started, ttft, cache_state)
        await _record_failure(services, prepared, call, "error")
        raise
    except (GeneratorExit, asyncio.CancelledError):
        # The client went away mid-stream: keep and bill what was generated, once.
        usage = Usage(estimate_tokens(prepared.prompt), generated)
        call = _call(prepared, usage, time.perf_counter() - started, ttft, cache_state)
        services.spawn(
            _store(services, prepared, call, "".join(pieces), status="client_disconnected")
        )
        raise
    text = "".join(pieces)
    call = _call(prepared, finished.usage, time.perf_counter() - started, ttft, cache_state)
    result = await _finish(services, prepared, call, text, finished.finish_reason)
    if request.use_cache and text and finished.finish_reason in ("stop", "length"):
        await services.cache.set(
            cache_key,
            responses.encode(responses.CachedAnswer(text, finished.usage)),
            services.settings.chat.cache_ttl_s,
        )
    yield result


async def _cache_lookup(services: Services, key: str) -> responses.CachedAnswer | None:
    raw = await services.cache.get(key)
    return responses.decode(raw) if raw is not None else None


def _call(
    prepared: PreparedTurn, usage: Usage, latency_s: float, ttft_s: float | None, cache: str
) -> CallRecord:
    principal = prepared.request.principal
    return CallRecord(
        request_id=prepared.request.request_id,
        attempt=0,
        tenant_id=principal.tenant_id,
        api_key_id=principal.key_id,
        conversation_id=prepared.conversation_id,
        model=prepared.route.model,
        usage=usage,
        latency_s=latency_s,
        ttft_s=ttft_s,
        cache=cache,
        intent=prepared.turn.intent.label if prepared.turn.intent else None,
    )


async def _finish(
    services: Services, prepared: PreparedTurn, call: CallRecord, text: str, finish_reason: str
) -> TurnResult:
    message_id = await _store(services, prepared, call, text, status="ok")
    cost, baseline = price(services.settings, call)
    model = call.model
    services.metrics.record_turn(
        model.name,
        model.tier,
        call.usage.prompt_tokens,
        call.usage.completion_tokens,
        cost,
        baseline,
    )
    result = TurnResult(
        conversation_id=prepared.conversation_id,
        message_id=message_id,
        model=model.name,
        tier=model.tier,
        text=text,
        usage=call.usage,
        cache=call.cache,
        cost_usd=cost,
        baseline_cost_usd=baseline,
        finish_reason=finish_reason,
    )
    log.info(
        "turn.complete",
        latency_ms=round(call.latency_s * 1000),
        ttft_ms=None if call.ttft_s is None else round(call.ttft_s * 1000),
        prompt_tokens=call.usage.prompt_tokens,
        completion_tokens=call.usage.completion_tokens,
        cache=call.cache,
    )
    await _fire(services, "on_turn_complete", turn=prepared.turn, result=result)
    return result


async def _store(
    services: Services, prepared: PreparedTurn, call: CallRecord, text: str, status: str
) -> str:
    """Write the user message, the answer and its ledger row in one transaction."""
    for attempt in range(3):
        try:
            return await _store_once(services, prepared, call, text, status)
        except IntegrityError:
            # Another turn of the same conversation took our sequence numbers: retry.
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


async def _store_once(
    services: Services, prepared: PreparedTurn, call: CallRecord, text: str, status: str
) -> str:
    request, model = prepared.request, prepared.route.model
    now = utcnow()
    async with services.db.transaction() as session:
        if prepared.is_new_conversation:
            session.add(
                Conversation(
                    id=prepared.conversation_id,
                    tenant_id=request.principal.tenant_id,
                    title=request.text[:80],
                    tier=model.tier,
                    created_at=now,
                    updated_at=now,
                )
            )
            await session.flush()
            seq = 0
        else:
            seq = await next_seq(session, prepared.conversation_id)
            conversation = await session.get(Conversation, prepared.conversation_id)
            if conversation is not None:
                conversation.updated_at = now
                conversation.tier = model.tier
        session.add(
            Message(
                conversation_id=prepared.conversation_id,
                seq=seq,
                role="user",
                content=request.text,
                created_at=now,
            )
        )
        answer = Message(
            conversation_id=prepared.conversation_id,
            seq=seq + 1,
            role="assistant",
            content=text,
            model=model.name,
            tier=model.tier,
            intent=call.intent,
            metadata_={"status": status, "request_id": request.request_id},
            created_at=utcnow(),
        )
        session.add(answer)
        await session.flush()
        session.add(ledger_entry(services.settings, _with_status(call, status), answer.id))
    return answer.id


async def _record_failure(
    services: Services, prepared: PreparedTurn, call: CallRecord, status: str
) -> None:
    """A failed call is still a ledger row (no message is stored for it)."""
    try:
        async with services.db.transaction() as session:
            session.add(ledger_entry(services.settings, _with_status(call, status), None))
    except Exception as exc:
        log.error("ledger.write_failed", error=type(exc).__name__)


def _with_status(call: CallRecord, status: str) -> CallRecord:
    return call if status == call.status else replace(call, status=status)


async def _fire(services: Services, hook_name: str, **kwargs: Any) -> None:
    """Call an event hook on every plugin; a plugin that raises is logged and counted."""
    hook = getattr(services.plugins.pm.hook, hook_name)
    for impl in hook.get_hookimpls():
        try:
            outcome = impl.function(**{a: kwargs[a] for a in impl.argnames})
            if inspect.isawaitable(outcome):
                await outcome
        except Exception as exc:
            services.metrics.plugin_errors.labels(impl.plugin_name).inc()
            log.error("plugin.error", plugin=impl.plugin_name, hook=hook_name, error=str(exc))
