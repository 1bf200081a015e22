"""Steps 6 and 9 of a turn: escalation policies before and after generation.

An :class:`~mvm_chat.types.Escalation` names a tier, a model or ``"human"``. Within a turn a
move only goes up the ladder; a request for a cheaper tier is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from mvm_chat.chat.components import Components
from mvm_chat.chat.router import Route
from mvm_chat.settings import ModelSettings, Settings
from mvm_chat.types import Escalation, Turn

log = structlog.get_logger(__name__)
HUMAN = "human"


@dataclass(frozen=True, slots=True)
class Move:
    """A routing move, as ``mvm.escalations`` shows it."""

    source: str
    target: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"from": self.source, "to": self.target, "reason": self.reason}


def resolve_target(settings: Settings, target: str) -> ModelSettings | None:
    """The model an escalation target means: a model name, else the cheapest model of the
    named tier or, when that tier has none, of the next tier up that has one."""
    model = settings.model(target)
    if model is not None:
        return model
    tiers = settings.tier_names
    if target not in tiers:
        return None
    for tier in tiers[tiers.index(target) :]:
        for candidate in settings.models:
            if candidate.tier == tier:
                return candidate
    return None


def tier_rank(settings: Settings, tier: str) -> int:
    tiers = settings.tier_names
    return tiers.index(tier) if tier in tiers else len(tiers)


def apply(settings: Settings, route: Route, escalation: Escalation) -> tuple[Route, Move] | None:
    """The route an escalation leads to, or None when it leads nowhere new or downwards."""
    if escalation.target == HUMAN:
        return None
    model = resolve_target(settings, escalation.target)
    if model is None:
        log.warning("escalation.unknown_target", target=escalation.target)
        return None
    if model.name == route.model.name:
        return None
    if tier_rank(settings, model.tier) < tier_rank(settings, route.tier):
        log.info("escalation.ignored_downward", target=escalation.target)
        return None
    return Route(model, escalation.reason), Move(route.tier, model.tier, escalation.reason)


def _describe(turn: Turn, route: Route) -> None:
    turn.metadata["tier"] = route.tier
    turn.metadata["model"] = route.model.name


async def before_generation(
    components: Components, settings: Settings, turn: Turn, route: Route
) -> tuple[Route, list[Move], list[Escalation]]:
    """Run every policy's ``before_generation``; returns the route, the moves made and the
    escalations raised (a ``human`` one included, for the caller to act on)."""
    moves: list[Move] = []
    raised: list[Escalation] = []
    for policy in components.of("escalation_policy"):
        if not hasattr(policy.obj, "before_generation"):
            continue
        _describe(turn, route)
        escalation = await components.call(policy, "before_generation", turn)
        if not isinstance(escalation, Escalation):
            continue
        raised.append(escalation)
        moved = apply(settings, route, escalation)
        if moved is not None:
            route, move = moved
            moves.append(move)
    _describe(turn, route)
    return route, moves, raised


def has_after_policies(components: Components) -> bool:
    """Whether any policy judges answers (then answers are held back until accepted)."""
    return any(hasattr(p.obj, "after_generation") for p in components.of("escalation_policy"))


async def after_generation(
    components: Components, turn: Turn, reply_text: str, confidence: float | None
) -> Escalation | None:
    """The first escalation a policy raises against an answer, if any."""
    for policy in components.of("escalation_policy"):
        if not hasattr(policy.obj, "after_generation"):
            continue
        escalation = await components.call(policy, "after_generation", turn, reply_text, confidence)
        if isinstance(escalation, Escalation):
            return escalation
    return None
