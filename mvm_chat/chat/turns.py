"""The values a turn is made of: its request, the prepared turn, its events and result."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from mvm_chat.chat.router import Route, RoutingState
from mvm_chat.engines.base import ChatMessage, TokenDelta, Usage
from mvm_chat.ledger.pricing import show
from mvm_chat.store.keys import Principal
from mvm_chat.types import Turn


@dataclass(slots=True)
class TurnRequest:
    """A user message to answer, as the API layer hands it over."""

    principal: Principal
    text: str
    request_id: str
    conversation_id: str | None = None
    model: str = "auto"
    prompt: list[ChatMessage] | None = None
    """OpenAI-compatible requests: the request's own messages are the prompt."""
    max_tokens: int | None = None
    temperature: float | None = None
    use_cache: bool = True
    idempotency_id: int | None = None
    """The claimed ``Idempotency-Key``: the stored answer is recorded against it."""
    streams: bool = True
    """The caller sends text as it comes; False: it waits for the whole answer, so a call that
    fails part-way can still fall back."""


@dataclass(slots=True)
class PreparedTurn:
    """A turn whose conversation, prompt and route are known; nothing stored yet."""

    request: TurnRequest
    conversation_id: str
    is_new_conversation: bool
    route: Route
    prompt: list[ChatMessage]
    turn: Turn
    routing: RoutingState = field(default_factory=RoutingState)
    handed_off: bool = False
    """The conversation is with a person: messages go to the agents, no model answers."""
    """The conversation's routing memory; updated by the turn, stored with it."""


@dataclass(frozen=True, slots=True)
class Routed:
    """First event of a turn: where it will be answered."""

    conversation_id: str
    model: str
    tier: str
    reason: str


@dataclass(slots=True)
class TurnResult:
    """Last event of a turn: the stored answer and what it cost."""

    conversation_id: str
    message_id: str
    model: str
    tier: str
    text: str
    usage: Usage
    cache: str
    cost_usd: Decimal
    baseline_cost_usd: Decimal
    finish_reason: str = "stop"
    intent: dict[str, Any] | None = None
    escalations: list[dict[str, str]] = field(default_factory=list)
    handoff_id: str | None = None
    passages: list[dict[str, Any]] = field(default_factory=list)
    budget: str | None = None
    """The tenant's budget: None without one, else ``"ok"`` or ``"exhausted"``."""

    @property
    def savings_usd(self) -> Decimal:
        return self.baseline_cost_usd - self.cost_usd

    def mvm(self) -> dict[str, Any]:
        """The ``mvm`` object every reply carries (DESIGN section 4)."""
        return {
            "conversation_id": self.conversation_id,
            "message_id": self.message_id,
            "model": self.model,
            "tier": self.tier,
            "intent": self.intent,
            "escalations": self.escalations,
            "handoff_id": self.handoff_id,
            "passages": self.passages,
            "cache": self.cache,
            "usage": {
                "prompt_tokens": self.usage.prompt_tokens,
                "completion_tokens": self.usage.completion_tokens,
            },
            "cost_usd": show(self.cost_usd),
            "baseline_cost_usd": show(self.baseline_cost_usd),
            "savings_usd": show(self.savings_usd),
            "budget": self.budget,
        }

    def record(self) -> dict[str, Any]:
        """What is kept to replay this reply (``from_record`` reads it back)."""
        return {"text": self.text, "finish_reason": self.finish_reason, "mvm": self.mvm()}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> TurnResult:
        """A reply kept by ``record``, to send again as it was."""
        mvm = record["mvm"]
        usage = mvm.get("usage") or {}
        return cls(
            conversation_id=mvm["conversation_id"],
            message_id=mvm["message_id"],
            model=mvm["model"],
            tier=mvm["tier"],
            text=record["text"],
            usage=Usage(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)),
            cache=mvm.get("cache", "off"),
            cost_usd=Decimal(mvm["cost_usd"]),
            baseline_cost_usd=Decimal(mvm["baseline_cost_usd"]),
            finish_reason=record.get("finish_reason", "stop"),
            intent=mvm.get("intent"),
            escalations=list(mvm.get("escalations") or []),
            handoff_id=mvm.get("handoff_id"),
            passages=list(mvm.get("passages") or []),
            budget=mvm.get("budget"),
        )


TurnEvent = Routed | TokenDelta | TurnResult
