"""Keyword and regular-expression intent rules from ``[plugins.keyword_intents]``.

```toml
[plugins.keyword_intents]
confidence = 0.95                       # what a match reports (default 0.95)
[plugins.keyword_intents.rules]
card_arrival = ["where is my card", "card .*(arrive|come)"]
```
Patterns are case-insensitive regular expressions, tried in the order given.
"""

from __future__ import annotations

import re
from typing import Any

from mvm_chat import IntentPrediction, Turn, hookimpl
from mvm_chat.errors import ConfigError


class KeywordIntents:
    """The first rule whose pattern occurs in the message gives the label."""

    name = "keywords"

    def __init__(self, rules: list[tuple[str, re.Pattern[str]]], confidence: float) -> None:
        self.rules = rules
        self.confidence = confidence

    def classify(self, turn: Turn) -> IntentPrediction | None:
        for label, pattern in self.rules:
            if pattern.search(turn.text):
                return IntentPrediction(label, self.confidence, self.name)
        return None


def compile_rules(raw: Any) -> list[tuple[str, re.Pattern[str]]]:
    """``{label: [pattern, ...]}`` compiled; a bad pattern is a ConfigError naming it."""
    if not isinstance(raw, dict):
        raise ConfigError("plugins.keyword_intents.rules", "must be a table of label = [patterns]")
    rules: list[tuple[str, re.Pattern[str]]] = []
    for label, patterns in raw.items():
        where = f"plugins.keyword_intents.rules.{label}"
        if isinstance(patterns, str):
            patterns = [patterns]
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            raise ConfigError(where, "must be a list of regular expressions")
        for i, pattern in enumerate(patterns):
            try:
                rules.append((label, re.compile(pattern, re.IGNORECASE)))
            except re.error as exc:
                raise ConfigError(
                    f"{where}[{i}]", f"not a valid regular expression: {exc}"
                ) from None
    return rules


@hookimpl(trylast=True)
def register_intent_classifiers(register: Any) -> None:
    config = register.config
    if not config.get("rules"):
        return
    confidence = float(config.get("confidence", 0.95))
    register(KeywordIntents(compile_rules(config["rules"]), confidence))
