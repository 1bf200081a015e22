"""Answer-based escalation: judge the answer, not only the question (off until configured).

```toml
[plugins.answer_checks]
min_mean_logprob = -1.2     # the answer's mean token log-probability must reach this
min_token_logprob = -7.0    # and no token may fall below this
self_check = true           # ask the small model "does this answer the question?" (yes/no)
self_check_model = "smollm2-135m"
self_check_min_yes = 0.5    # probability of "yes" needed to accept
```
A rejected answer is regenerated one tier up. While these checks are on, answers are held back
and only the accepted one is sent (no token-by-token streaming).
"""

from __future__ import annotations

import math
from typing import Any

import structlog

from mvm_chat import Escalation, Turn, hookimpl
from mvm_chat.default_plugins.escalation_policies import next_tier_up
from mvm_chat.engines.base import ChatMessage, Engine, GenerationRequest, TokenDelta
from mvm_chat.errors import ConfigError, EngineError
from mvm_chat.settings import Settings

log = structlog.get_logger(__name__)
SELF_CHECK = (
    "You check a customer-service assistant's reply. Does the reply answer the customer's "
    "question? Reply yes or no."
)


class LogprobCheck:
    """Rejects an answer the model was unsure of (mean or minimum token log-probability)."""

    name = "answer_logprobs"

    def __init__(self, settings: Settings, min_mean: float | None, min_token: float | None):
        self.settings = settings
        self.min_mean = min_mean
        self.min_token = min_token

    def after_generation(
        self, turn: Turn, reply_text: str, confidence: float | None
    ) -> Escalation | None:
        logprobs = [float(x) for x in turn.metadata.get("answer_logprobs", [])]
        if not logprobs:
            return None
        mean, lowest = sum(logprobs) / len(logprobs), min(logprobs)
        if self.min_mean is not None and mean < self.min_mean:
            reason = "low answer confidence (mean token logprob)"
        elif self.min_token is not None and lowest < self.min_token:
            reason = "low answer confidence (a token's logprob)"
        else:
            return None
        log.info("answer_logprobs.rejected", mean=round(mean, 3), lowest=round(lowest, 3))
        target = next_tier_up(self.settings, str(turn.metadata.get("tier", "")))
        return Escalation(target, reason) if target else None


class SelfCheck:
    """Asks a small model, constrained to yes/no, whether the answer answers the question."""

    name = "answer_self_check"

    def __init__(self, settings: Settings, engine: Engine, min_yes: float) -> None:
        self.settings = settings
        self.engine = engine
        self.min_yes = min_yes

    async def after_generation(
        self, turn: Turn, reply_text: str, confidence: float | None
    ) -> Escalation | None:
        request = GenerationRequest(
            messages=[
                ChatMessage("system", SELF_CHECK),
                ChatMessage("user", f"Customer: {turn.text}\n\nReply: {reply_text}"),
            ],
            max_tokens=4,
            temperature=0.0,
            choices=("yes", "no"),
        )
        verdict, logprob = "", 0.0
        try:
            async for event in self.engine.stream(request):
                if isinstance(event, TokenDelta):
                    verdict += event.text
                    logprob += sum(event.logprobs)
        except EngineError as exc:
            log.warning("answer_self_check.failed", error=str(exc))
            return None
        yes = math.exp(logprob) if verdict == "yes" else 1 - math.exp(logprob)
        if yes >= self.min_yes:
            return None
        target = next_tier_up(self.settings, str(turn.metadata.get("tier", "")))
        log.info("answer_self_check.rejected", p_yes=round(yes, 3))
        reason = "self-check: the answer may not answer the question"
        return Escalation(target, reason) if target else None


def _optional_float(config: dict[str, Any], key: str) -> float | None:
    value = config.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"plugins.answer_checks.{key}", "must be a number")
    return float(value)


@hookimpl(trylast=True)
def register_escalation_policies(register: Any) -> None:
    config: dict[str, Any] = register.config
    settings: Settings = register.settings
    min_mean = _optional_float(config, "min_mean_logprob")
    min_token = _optional_float(config, "min_token_logprob")
    if min_mean is not None or min_token is not None:
        register(LogprobCheck(settings, min_mean, min_token))
    if config.get("self_check") and register.services is not None:
        name = config.get("self_check_model") or next(
            (m.name for m in settings.models if m.engine == "llamacpp"), None
        )
        if name not in register.services.engines:
            raise ConfigError("plugins.answer_checks.self_check_model", f"unknown model {name!r}")
        min_yes = _optional_float(config, "self_check_min_yes")
        register(
            SelfCheck(
                settings, register.services.engines[name], 0.5 if min_yes is None else min_yes
            )
        )
