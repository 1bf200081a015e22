"""Choosing the model for a turn: the ladder of tiers, sticky escalation, breakers, capacity."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from mvm_chat.errors import NotFound
from mvm_chat.settings import ModelSettings, Settings

AUTO = "auto"


@dataclass(frozen=True, slots=True)
class Route:
    """The model chosen for a turn, its tier and why."""

    model: ModelSettings
    reason: str

    @property
    def tier(self) -> str:
        return self.model.tier


def choose(settings: Settings, requested: str) -> Route:
    """A named model as asked, or for ``"auto"`` the cheapest model from the default tier up."""
    if requested != AUTO:
        model = settings.model(requested)
        if model is None:
            raise NotFound(f"model {requested!r} is not in the catalog (see GET /v1/models)")
        return Route(model, "requested model")
    tiers = settings.tier_names
    for tier in tiers[tiers.index(settings.routing.default_tier) :]:
        for model in settings.models:
            if model.tier == tier:
                return Route(
                    model,
                    "default tier"
                    if tier == settings.routing.default_tier
                    else "no model on the default tier",
                )
    raise NotFound("no model is configured on the default tier or above it")


@dataclass(slots=True)
class RoutingState:
    """What a conversation remembers between turns: the tier it escalated to (sticky), the
    calm turns since, and the intent that escalated it. Stored in the conversation's metadata."""

    sticky_tier: str | None = None
    calm_turns: int = 0
    intent: str | None = None

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any] | None) -> RoutingState:
        raw = (metadata or {}).get("routing") or {}
        return cls(
            sticky_tier=raw.get("sticky_tier") if isinstance(raw, dict) else None,
            calm_turns=int(raw.get("calm_turns", 0)) if isinstance(raw, dict) else 0,
            intent=raw.get("intent") if isinstance(raw, dict) else None,
        )

    def as_metadata(self) -> dict[str, Any]:
        return {
            "sticky_tier": self.sticky_tier,
            "calm_turns": self.calm_turns,
            "intent": self.intent,
        }

    def after_turn(self, escalated_to: str | None, intent: str | None) -> RoutingState:
        """The state for the next turn: sticky on a policy's escalation, else one calm more."""
        if escalated_to is not None:
            return RoutingState(escalated_to, 0, intent)
        if self.sticky_tier is None:
            return RoutingState()
        return RoutingState(self.sticky_tier, self.calm_turns + 1, self.intent)


@dataclass(frozen=True, slots=True)
class Load:
    """What the router knows of a model's load right now."""

    available: Callable[[ModelSettings], bool]
    """False while the model's circuit breaker is open."""
    queue_depth: Callable[[ModelSettings], int]
    predicted_wait_s: Callable[[ModelSettings], float]


def _tiers_with_models(settings: Settings) -> list[str]:
    return [t for t in settings.tier_names if any(m.tier == t for m in settings.models)]


def _models_of(settings: Settings, tier: str) -> list[ModelSettings]:
    return [m for m in settings.models if m.tier == tier]


def _first_available(settings: Settings, tiers: list[str], load: Load) -> ModelSettings | None:
    for tier in tiers:
        for model in _models_of(settings, tier):
            if load.available(model):
                return model
    return None


def auto_route(
    settings: Settings, state: RoutingState, intent: str | None, load: Load
) -> tuple[Route, list[tuple[str, str, str]], RoutingState]:
    """The route for ``model: "auto"`` before policies: the default tier, or the tier the
    conversation is stuck on (until it calms down or its intent changes), skipping models
    whose breaker is open and bursting one tier up when a queue is over its limits.

    Returns the route, the moves as ``(from_tier, to_tier, reason)``, and the state as it
    stands after any step down.
    """
    tiers = _tiers_with_models(settings)
    if not tiers:
        raise NotFound("no model is configured")
    default = choose(settings, AUTO)
    start = default.tier
    moves: list[tuple[str, str, str]] = []
    sticky = state.sticky_tier
    if sticky is not None and sticky in tiers and tiers.index(sticky) > tiers.index(start):
        limit = settings.routing.calm_turns_to_step_down
        if state.calm_turns >= limit:
            moves.append((sticky, start, f"de-escalation: {limit} calm turns"))
            state = RoutingState()
        elif intent and state.intent and intent != state.intent:
            moves.append((sticky, start, "de-escalation: the intent changed"))
            state = RoutingState()
        else:
            moves.append((start, sticky, "sticky: escalated earlier"))
            start = sticky
    candidates = tiers[tiers.index(start) :]
    model = _first_available(settings, candidates, load)
    if model is None:
        model = _first_available(settings, list(reversed(tiers[: tiers.index(start)])), load)
    if model is None:
        return Route(default.model, "no model is available"), moves, state
    if model.tier != start:
        moves.append((start, model.tier, f"unavailable: {start}"))
    over = _over_capacity(model, load)
    if over:
        above = tiers[tiers.index(model.tier) + 1 :]
        burst = _first_available(settings, above, load)
        if burst is not None:
            moves.append((model.tier, burst.tier, f"capacity: {over}"))
            model = burst
    reason = moves[-1][2] if moves else default.reason
    return Route(model, reason), moves, state


def _over_capacity(model: ModelSettings, load: Load) -> str:
    depth = load.queue_depth(model)
    if depth > model.max_queue:
        return f"queue {depth} > {model.max_queue}"
    wait_ms = load.predicted_wait_s(model) * 1000
    if wait_ms > model.slo_ms:
        return f"predicted wait {wait_ms:.0f} ms > {model.slo_ms} ms"
    return ""


def fallback(settings: Settings, failed: ModelSettings, load: Load) -> ModelSettings | None:
    """Where a turn goes when ``failed`` errs: the next available model tier above it, else
    the nearest available one below; None when no model is available (a person, then)."""
    tiers = _tiers_with_models(settings)
    index = tiers.index(failed.tier)
    others_here = [
        m for m in _models_of(settings, failed.tier) if m.name != failed.name and load.available(m)
    ]
    above = _first_available(settings, tiers[index + 1 :], load)
    if above is not None:
        return above
    if others_here:
        return others_here[0]
    return _first_available(settings, list(reversed(tiers[:index])), load)


def best_free(
    settings: Settings,
    chosen: ModelSettings,
    is_free: Callable[[ModelSettings], bool],
    load: Load,
    exclude: Collection[str] = (),
) -> ModelSettings | None:
    """Where a turn goes when its budget cannot pay for ``chosen``: an available free model
    of the highest tier below it, else the default tier's model (the last resort, free or
    not); None only when that is excluded too. ``exclude``: model names not to use."""
    tiers = _tiers_with_models(settings)
    below = tiers[: tiers.index(chosen.tier)] if chosen.tier in tiers else []
    for tier in reversed(below):
        for model in _models_of(settings, tier):
            if model.name not in exclude and is_free(model) and load.available(model):
                return model
    try:
        default = choose(settings, AUTO).model
    except NotFound:
        return None
    return None if default.name in exclude else default
