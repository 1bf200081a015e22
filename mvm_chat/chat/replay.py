"""Routing replay: a file of messages through classification and routing (and, optionally,
generation), to see where traffic would go and what it would cost against the baseline."""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from mvm_chat.chat import router
from mvm_chat.chat.escalation import before_generation
from mvm_chat.chat.intents import classify
from mvm_chat.chat.pipeline import run_turn
from mvm_chat.chat.prepare import prepare_turn
from mvm_chat.chat.services import Services
from mvm_chat.chat.skills import answer_by_skill
from mvm_chat.chat.turns import TurnRequest, TurnResult
from mvm_chat.engines.base import ChatMessage, Usage, estimate_tokens
from mvm_chat.engines.sglang import SglangEngine
from mvm_chat.ledger.estimates import self_hosted_estimate
from mvm_chat.ledger.ledger import baseline_cost
from mvm_chat.ledger.pricing import token_cost
from mvm_chat.plugins import PluginSet
from mvm_chat.settings import ModelSettings, Settings
from mvm_chat.store.db import upgrade
from mvm_chat.store.keys import authenticate, create_key
from mvm_chat.store.models import new_id
from mvm_chat.types import Turn


@dataclass(slots=True)
class ReplayReport:
    """Where the replayed messages went, why, and what they cost."""

    messages: int = 0
    generated: bool = False
    tiers: Counter[str] = field(default_factory=Counter)
    models: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    intents: Counter[str] = field(default_factory=Counter)
    cost_usd: Decimal = Decimal(0)
    baseline_cost_usd: Decimal = Decimal(0)
    default_tier: str = ""

    def add(self, tier: str, model: str, reasons: list[str], intent: str | None) -> None:
        self.messages += 1
        self.tiers[tier] += 1
        self.models[model] += 1
        self.reasons.update(reasons)
        self.intents[intent or "(none)"] += 1

    def as_dict(self) -> dict[str, Any]:
        n = max(self.messages, 1)
        return {
            "messages": self.messages,
            "generated": self.generated,
            "local_share": round(self.tiers[self.default_tier] / n, 4),
            "tiers": {
                t: {"count": c, "share": round(c / n, 4)} for t, c in self.tiers.most_common()
            },
            "models": dict(self.models.most_common()),
            "escalation_reasons": dict(self.reasons.most_common()),
            "top_intents": dict(self.intents.most_common(10)),
            "cost_usd": str(self.cost_usd),
            "baseline_cost_usd": str(self.baseline_cost_usd),
            "savings_usd": str(self.baseline_cost_usd - self.cost_usd),
        }


def projected_cost(services: Services, model: ModelSettings, usage: Usage) -> Decimal:
    """A call's cost without generating it: API models at their token prices; an ``sglang``
    model whose settings name its ``architecture`` and ``gpu`` at the capacity planner's
    expected cost, at the concurrency its server last reported; other self-hosted models 0
    (they are priced by measured time, which a replay without generation does not have)."""
    if model.engine == "llamacpp":
        return Decimal(0)
    if model.engine == "sglang":
        engine = services.engines.get(model.name)
        running = engine.running_requests() if isinstance(engine, SglangEngine) else 1
        estimate = self_hosted_estimate(
            model, usage.prompt_tokens, usage.completion_tokens, running
        )
        return estimate or Decimal(0)
    return token_cost(model, usage.prompt_tokens, usage.completion_tokens)


async def replay_routing(
    services: Services,
    texts: list[str],
    completion_tokens: int,
    on_message: Callable[[], None] = lambda: None,
) -> ReplayReport:
    """Classify and route each message as ``model: "auto"`` would, without generating; the
    cost is projected with ``completion_tokens`` per answer (see :func:`projected_cost`)."""
    components = services.components
    assert components is not None
    settings = services.settings
    report = ReplayReport(default_tier=settings.routing.default_tier)
    for text in texts:
        turn = Turn(text=text, conversation_id=new_id(), tenant="replay")
        turn.intent = await classify(components, turn, settings.intents.order)
        label = turn.intent.label if turn.intent else None
        usage = Usage(estimate_tokens([ChatMessage("user", text)]), completion_tokens)
        skill = await answer_by_skill(components, turn)
        if skill is not None:
            report.add("skill", f"skill:{skill[0].name}", [], label)
        else:
            route, steps, _ = router.auto_route(
                settings, router.RoutingState(), label, services.load()
            )
            route, moves, raised = await before_generation(components, settings, turn, route)
            reasons = [s[2] for s in steps] + [m.reason for m in moves]
            if any(e.target == "human" for e in raised):
                report.add("human", "human", [*reasons, "user asked for a person"], label)
            else:
                report.add(route.tier, route.model.name, reasons, label)
                report.cost_usd += projected_cost(services, route.model, usage)
        report.baseline_cost_usd += baseline_cost(settings, usage)
        on_message()
    return report


async def replay_generation(
    settings: Settings,
    plugins: PluginSet,
    texts: list[str],
    on_message: Callable[[], None] = lambda: None,
) -> ReplayReport:
    """Run each message through the whole pipeline as a new conversation (generation, answer
    checks, ledger) on a throw-away SQLite database; the costs are the ledger's."""
    with tempfile.TemporaryDirectory(prefix="mvm-replay-") as folder:
        url = f"sqlite+aiosqlite:///{Path(folder) / 'replay.db'}"
        await asyncio.to_thread(upgrade, url)  # Alembic runs its own event loop
        local = msgspec.structs.replace(
            settings,
            database=msgspec.structs.replace(settings.database, url=url),
            redis=msgspec.structs.replace(settings.redis, url=""),
        )
        services = Services.build(local, plugins)
        await services.start()
        try:
            async with services.db.transaction() as session:
                _, plaintext = await create_key(session, "replay", "client", "routing replay")
            async with services.db.session() as session:
                principal = await authenticate(session, plaintext)
            assert principal is not None
            report = ReplayReport(generated=True, default_tier=settings.routing.default_tier)
            for text in texts:
                request = TurnRequest(
                    principal=principal, text=text, request_id=new_id(), use_cache=False
                )
                prepared = await prepare_turn(services, request)
                result: TurnResult | None = None
                async with aclosing(run_turn(services, prepared)) as events:
                    async for event in events:
                        if isinstance(event, TurnResult):
                            result = event
                assert result is not None
                report.add(
                    result.tier,
                    result.model,
                    [e["reason"] for e in result.escalations],
                    result.intent["label"] if result.intent else None,
                )
                report.cost_usd += result.cost_usd
                report.baseline_cost_usd += result.baseline_cost_usd
                on_message()
            return report
        finally:
            await services.close()
