"""Zero-shot intent classification by a local model, constrained to the configured labels.

```toml
[plugins.llm_intents]
labels = ["card_arrival", "close_account", "exchange_rate"]
model = "smollm2-135m"        # a catalog model whose engine constrains output (llamacpp)
```
The model answers with exactly one label (a llama.cpp grammar); the confidence is the
probability of that answer among the labels the grammar allowed at each step.
"""

from __future__ import annotations

import math
from typing import Any

import structlog

from mvm_chat import IntentPrediction, Turn, hookimpl
from mvm_chat.engines.base import ChatMessage, Engine, GenerationRequest, TokenDelta
from mvm_chat.errors import ConfigError, EngineError
from mvm_chat.settings import Settings

log = structlog.get_logger(__name__)
INSTRUCTION = (
    "You sort customer messages into categories. Reply with exactly one category from this "
    "list, and nothing else:\n"
)


class LlmIntents:
    """Asks a local model for one label out of a fixed set."""

    name = "llm"

    def __init__(self, engine: Engine, labels: list[str], owns_engine: bool) -> None:
        self.engine = engine
        self.labels = tuple(labels)
        self.instruction = INSTRUCTION + "\n".join(f"- {label}" for label in labels)
        self._owns_engine = owns_engine
        self._started = not owns_engine

    async def classify(self, turn: Turn) -> IntentPrediction | None:
        if not self._started:
            await self.engine.start()
            self._started = True
        request = GenerationRequest(
            messages=[ChatMessage("system", self.instruction), ChatMessage("user", turn.text)],
            max_tokens=64,
            temperature=0.0,
            choices=self.labels,
        )
        pieces: list[str] = []
        logprob = 0.0
        try:
            async for event in self.engine.stream(request):
                if isinstance(event, TokenDelta):
                    pieces.append(event.text)
                    logprob += sum(event.logprobs)
        except EngineError as exc:
            log.warning("llm_intents.failed", error=str(exc))
            return None
        label = "".join(pieces)
        if label not in self.labels:
            return None
        return IntentPrediction(label, math.exp(logprob), self.name)


def _engine(register: Any, model_name: str | None) -> tuple[Engine, bool]:
    settings: Settings = register.settings
    if model_name is None:
        model = next((m for m in settings.models if m.engine == "llamacpp"), None)
    else:
        model = settings.model(model_name)
    if model is None:
        raise ConfigError("plugins.llm_intents.model", f"no such model {model_name!r}")
    if register.services is not None:
        return register.services.engines[model.name], False
    from mvm_chat.engines.llamacpp import LlamaCppEngine

    if model.engine != "llamacpp":
        raise ConfigError("plugins.llm_intents.model", "needs a llamacpp model here")
    return LlamaCppEngine(model), True


@hookimpl(trylast=True)
def register_intent_classifiers(register: Any) -> None:
    labels = register.config.get("labels")
    if not labels:
        return
    if not isinstance(labels, list) or not all(isinstance(x, str) and x for x in labels):
        raise ConfigError("plugins.llm_intents.labels", "must be a list of label names")
    engine, owns = _engine(register, register.config.get("model"))
    register(LlmIntents(engine, labels, owns))
