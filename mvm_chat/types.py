"""Plain values passed between the pipeline and plugins (the public plugin API)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class IntentPrediction:
    """What a message is about, as one classifier sees it."""

    label: str
    confidence: float
    source: str = ""


@dataclass(frozen=True, slots=True)
class Passage:
    """A piece of retrieved text that may ground an answer."""

    text: str
    source: str
    score: float


@dataclass(frozen=True, slots=True)
class Escalation:
    """A request to move a turn elsewhere: a tier name, a model name or ``"human"``."""

    target: str
    reason: str


@dataclass(frozen=True, slots=True)
class SkillReply:
    """An answer produced by a skill without a model."""

    text: str


@dataclass(slots=True)
class Turn:
    """One user message on its way through the pipeline."""

    text: str
    conversation_id: str
    tenant: str
    history: list[tuple[str, str]] = field(default_factory=list)
    intent: IntentPrediction | None = None
    passages: list[Passage] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
