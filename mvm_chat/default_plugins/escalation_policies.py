"""The standard escalation policies, configured under ``[plugins.escalation_policies]``.

- ``human_request``: the user asks for a person ("talk to a human", "real agent", ...).
- ``uncertain_intent``: an ``out_of_scope`` intent, or one below ``low_confidence``
  (default 0.35), goes one tier up.
- ``intent_floor``: ``[routing.intent_floors]`` gives a minimum tier per intent label.

``enabled = ["human_request", "intent_floor"]`` limits which run (default: all three).
"""

from __future__ import annotations

import re
from typing import Any

from mvm_chat import Escalation, Turn, hookimpl
from mvm_chat.settings import Settings

HUMAN_PHRASES = (
    r"\b(talk|speak|chat)\s+(to|with)\s+(a|an|some|your)?\s*"
    r"(human|person|people|agent|someone|somebody|representative|operator)\b",
    r"\b(real|live|actual)\s+(person|human|agent|representative)\b",
    r"\bhuman\s+(agent|being|support)\b",
    r"\b(customer\s+)?(service|support)\s+(agent|representative|rep)\b",
    r"\bget\s+me\s+(a|an)\s+(human|person|agent)\b",
)
OUT_OF_SCOPE = "out_of_scope"


def next_tier_up(settings: Settings, tier: str) -> str | None:
    """The next tier above ``tier`` that has a model (never ``human``)."""
    tiers = settings.tier_names
    start = tiers.index(tier) + 1 if tier in tiers else len(tiers)
    for candidate in tiers[start:]:
        if any(m.tier == candidate for m in settings.models):
            return candidate
    return None


class HumanRequest:
    """Escalates to a person when the message asks for one."""

    name = "human_request"

    def __init__(self, extra_phrases: list[str]) -> None:
        self.patterns = [re.compile(p, re.IGNORECASE) for p in (*HUMAN_PHRASES, *extra_phrases)]

    def before_generation(self, turn: Turn) -> Escalation | None:
        if any(p.search(turn.text) for p in self.patterns):
            return Escalation("human", "user asked for a person")
        return None


class UncertainIntent:
    """An out-of-scope or low-confidence intent goes one tier up."""

    name = "uncertain_intent"

    def __init__(self, settings: Settings, low_confidence: float) -> None:
        self.settings = settings
        self.low_confidence = low_confidence

    def before_generation(self, turn: Turn) -> Escalation | None:
        if turn.intent is None:
            return None
        if turn.intent.label == OUT_OF_SCOPE:
            reason = "out-of-scope message"
        elif turn.intent.confidence < self.low_confidence:
            reason = "low intent confidence"
        else:
            return None
        target = next_tier_up(self.settings, str(turn.metadata.get("tier", "")))
        return Escalation(target, reason) if target else None


class IntentFloor:
    """Raises a turn to the minimum tier configured for its intent."""

    name = "intent_floor"

    def __init__(self, floors: dict[str, str]) -> None:
        self.floors = floors

    def before_generation(self, turn: Turn) -> Escalation | None:
        if turn.intent is None or turn.intent.label not in self.floors:
            return None
        return Escalation(self.floors[turn.intent.label], f"intent floor for {turn.intent.label}")


@hookimpl(trylast=True)
def register_escalation_policies(register: Any) -> None:
    config = register.config
    settings: Settings = register.settings
    enabled = set(config.get("enabled", ["human_request", "uncertain_intent", "intent_floor"]))
    if "human_request" in enabled:
        register(HumanRequest(list(config.get("human_phrases", []))))
    if "uncertain_intent" in enabled:
        register(UncertainIntent(settings, float(config.get("low_confidence", 0.35))))
    if "intent_floor" in enabled and settings.routing.intent_floors:
        register(IntentFloor(dict(settings.routing.intent_floors)))
